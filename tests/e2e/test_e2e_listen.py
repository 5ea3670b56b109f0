"""`pushgate listen` as a real subprocess: prints notifications as JSON lines and survives a
server restart by reconnecting on its own."""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import httpx2
import pytest
from e2e_support import ServerFactory, Tenant, make_tenant_sync

from pushgate.testing.server import ServerProcess, cli_env

_EOF = object()


class Listener:
    """`python -m pushgate listen ... --json`; stdout lines are read by a thread into a queue."""

    def __init__(self, server_url: str, user_token: str, data_dir: Path, log_path: Path) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_path
        self._stderr: IO[bytes] = open(log_path, "ab")  # noqa: SIM115
        env = cli_env(data_dir)
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pushgate",
                "listen",
                "--server",
                server_url,
                "--user-token",
                user_token,
                "--json",
            ],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
        )
        self.lines: queue.Queue[object] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self.lines.put(raw.decode("utf-8", "replace"))
        self.lines.put(_EOF)

    def stderr_text(self) -> str:
        return self.log_path.read_text("utf-8", "replace")

    def next_notification(self, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            try:
                line = self.lines.get(timeout=max(0.01, remaining))
            except queue.Empty:
                pytest.fail(
                    f"listen printed nothing within {timeout} s; its stderr:\n{self.stderr_text()}"
                )
            if line is _EOF:
                pytest.fail(
                    f"listen exited with {self.proc.poll()}; its stderr:\n{self.stderr_text()}"
                )
            assert isinstance(line, str)
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except ValueError:
                pytest.fail(f"listen --json printed a non-JSON line: {line!r}")
            assert isinstance(item, dict), line
            return item

    def expect_nothing(self, seconds: float) -> None:
        try:
            line = self.lines.get(timeout=seconds)
        except queue.Empty:
            return
        if line is not _EOF and isinstance(line, str) and line.strip():
            pytest.fail(f"listen printed an unexpected line: {line!r}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._stderr.close()


@pytest.fixture
def listeners() -> Iterator[list[Listener]]:
    started: list[Listener] = []
    yield started
    for listener in started:
        listener.stop()


def start_listener(
    started: list[Listener], server: ServerProcess, tenant: Tenant, data_dir: Path
) -> Listener:
    listener = Listener(
        server.url, tenant.user_token, data_dir, data_dir.parent / f"listen-{len(started)}.log"
    )
    started.append(listener)
    return listener


def post(server: ServerProcess, tenant: Tenant, n: int) -> str:
    trackers = {"email": f"user{n}@example.com", "country": "NL"}
    resp = httpx2.post(
        f"{server.url}/v1/post",
        headers=tenant.app_headers,
        json={"event": "signups", "trackers": trackers},
        timeout=10.0,
        trust_env=False,
    )
    assert resp.status_code == 201, resp.text
    return f"user{n}@example.com has signed up from NL"


def channel_devices(server: ServerProcess, tenant: Tenant) -> list[dict[str, Any]]:
    resp = httpx2.get(
        f"{server.url}/api/v1/devices", headers=tenant.bearer, timeout=10.0, trust_env=False
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    devices = body["devices"] if isinstance(body, dict) else body
    assert isinstance(devices, list)
    return [device for device in devices if device.get("platform") == "channel"]


def wait_for_device(server: ServerProcess, tenant: Tenant, listener: Listener) -> None:
    """The listener registers its channel device first; after that nothing posted is lost."""
    deadline = time.monotonic() + 20
    while not channel_devices(server, tenant):
        if listener.proc.poll() is not None:
            pytest.fail(f"listen exited with {listener.proc.returncode}:\n{listener.stderr_text()}")
        if time.monotonic() > deadline:
            pytest.fail(f"listen registered no device in 20 s:\n{listener.stderr_text()}")
        time.sleep(0.1)


def test_listen_prints_json_and_survives_server_restart(
    make_server: ServerFactory, tmp_path: Path, listeners: list[Listener]
) -> None:
    server = make_server(tmp_path / "server-data")
    tenant = make_tenant_sync(server)
    listener = start_listener(listeners, server, tenant, tmp_path / "listen-data")
    wait_for_device(server, tenant, listener)

    first = post(server, tenant, 1)
    item = listener.next_notification(10)
    assert item["message"] == first

    # the server goes away; the listener keeps running and retries
    server.stop()
    time.sleep(1.0)
    assert listener.proc.poll() is None, listener.stderr_text()
    server.restart()

    # posted right after the restart, most likely before the listener is back
    second = post(server, tenant, 2)
    item = listener.next_notification(30)
    assert item["message"] == second

    third = post(server, tenant, 3)
    item = listener.next_notification(5)
    assert item["message"] == third

    # nothing twice (what was printed was acknowledged), one device only
    listener.expect_nothing(0.5)
    assert len(channel_devices(server, tenant)) == 1


def test_listen_reuses_its_saved_device(
    make_server: ServerFactory, tmp_path: Path, listeners: list[Listener]
) -> None:
    server = make_server(tmp_path / "server-data")
    tenant = make_tenant_sync(server)
    listen_dir = tmp_path / "listen-data"
    listener = start_listener(listeners, server, tenant, listen_dir)
    wait_for_device(server, tenant, listener)
    first = post(server, tenant, 1)
    assert listener.next_notification(10)["message"] == first
    listener.stop()

    # posted while no listener runs: it arrives when the same device connects again
    missed = post(server, tenant, 2)
    listener = start_listener(listeners, server, tenant, listen_dir)
    assert listener.next_notification(15)["message"] == missed
    listener.expect_nothing(0.5)
    assert len(channel_devices(server, tenant)) == 1


def test_listen_with_the_server_data_dir(
    make_server: ServerFactory, tmp_path: Path, listeners: list[Listener]
) -> None:
    server = make_server(tmp_path / "shared-data")
    tenant = make_tenant_sync(server)
    listener = start_listener(listeners, server, tenant, server.data_dir)
    wait_for_device(server, tenant, listener)
    message = post(server, tenant, 1)
    assert listener.next_notification(10)["message"] == message
