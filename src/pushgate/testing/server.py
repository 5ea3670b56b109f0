"""Run a real Pushgate server process for tests (ours and our users').

``ServerProcess`` starts ``python -m pushgate serve`` on a free loopback port with its own
data directory, waits until ``GET /api/v1/health`` answers 200 and stops it again::

    with ServerProcess(tmp_path) as server:
        account = create_account(server.data_dir, "acme")
        httpx2.get(f"{server.url}/v1/apps/list",
                   headers={"x-instapush-token": account["user_token"]})

The server's stdout and stderr go to ``<data_dir>/server.log`` (appended on every start), so
a chatty server can never block on a full pipe; the log is quoted when startup fails.
Inherited ``PUSHGATE_*`` variables are dropped: pass settings explicitly in ``env``.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import httpx2

__all__ = [
    "ServerProcess",
    "WorkerProcess",
    "ServerStartError",
    "cli_env",
    "create_account",
    "free_port",
    "run_cli",
]

HOST = "127.0.0.1"
HEALTH_PATH = "/api/v1/health"
LOG_NAME = "server.log"


def _end(proc: subprocess.Popen[bytes] | None, grace: float | None) -> int | None:
    """Stop a child process: SIGTERM and up to ``grace`` seconds, or SIGKILL at once when
    ``grace`` is None (or the grace runs out). Returns its exit code."""
    if proc is None:
        return None
    if proc.poll() is None:
        if grace is None:
            proc.kill()
        else:
            proc.terminate()
            try:
                return proc.wait(grace)
            except subprocess.TimeoutExpired:
                proc.kill()
    return proc.wait()


class ServerStartError(RuntimeError):
    """The server process died or did not become healthy in time."""


def free_port(host: str = HOST) -> int:
    """A TCP port on ``host`` that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def cli_env(
    data_dir: str | os.PathLike[str], env: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Environment for a ``pushgate`` subprocess: this process's environment without its
    PUSHGATE_* settings (a server under test must not pick up e.g. the caller's
    PUSHGATE_DATABASE_URL), plus ``PUSHGATE_DATA_DIR=data_dir`` and ``env``."""
    merged = {key: value for key, value in os.environ.items() if not key.startswith("PUSHGATE_")}
    merged["PUSHGATE_DATA_DIR"] = os.fspath(data_dir)
    merged["PYTHONUNBUFFERED"] = "1"
    if env:
        merged.update(env)
    return merged


class ServerProcess:
    """A ``pushgate serve`` subprocess on 127.0.0.1; a (sync) context manager."""

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        env: Mapping[str, str] | None = None,
        *,
        port: int | None = None,
        startup_timeout: float = 30.0,
        stop_timeout: float = 10.0,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.env = cli_env(self.data_dir, env)
        self.port = port if port is not None else free_port()
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.log_path = self.data_dir / LOG_NAME
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._log_offset = 0

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self) -> ServerProcess:
        """Start the process and wait until it is healthy."""
        if self.running:
            raise RuntimeError("server already running")
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in _reap()
        self._log_offset = self._log.tell()
        command = [sys.executable, "-m", "pushgate", "serve", "--host", HOST]
        command += ["--port", str(self.port)]
        self._proc = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
            command,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        try:
            self._wait_healthy()
        except BaseException:
            self.kill()
            raise
        return self

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        with httpx2.Client(timeout=2.0, trust_env=False) as client:
            while True:
                assert self._proc is not None
                code = self._proc.poll()
                if code is not None:
                    raise ServerStartError(
                        f"pushgate serve exited with code {code} during startup:\n{self.output()}"
                    )
                try:
                    if client.get(self.url + HEALTH_PATH).status_code == 200:
                        return
                except httpx2.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise ServerStartError(
                        f"pushgate serve not healthy after {self.startup_timeout:.0f} s:\n"
                        f"{self.output()}"
                    )
                time.sleep(0.05)

    def output(self) -> str:
        """What the current (or last) process has written so far."""
        try:
            with open(self.log_path, "rb") as log:
                log.seek(self._log_offset)
                return log.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def stop(self) -> int | None:
        """SIGTERM, wait; SIGKILL after ``stop_timeout``. Returns the exit code."""
        _end(self._proc, self.stop_timeout)
        return self._reap()

    def kill(self) -> int | None:
        """SIGKILL at once. Returns the exit code."""
        _end(self._proc, None)
        return self._reap()

    def restart(self) -> ServerProcess:
        """Stop (if running) and start again on the same port and data dir."""
        self.stop()
        return self.start()

    def _reap(self) -> int | None:
        code = None
        if self._proc is not None:
            code = self._proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None
        return code

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"ServerProcess(url={self.url!r}, data_dir={str(self.data_dir)!r})"


class WorkerProcess:
    """A ``pushgate worker`` subprocess (needs PUSHGATE_QUEUE_URL in ``env``); its output goes
    to ``<data_dir>/<name>.log``. ``start`` waits until it says it is running."""

    READY_LINE = "Pushgate worker running"

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        env: Mapping[str, str] | None = None,
        name: str = "worker",
        startup_timeout: float = 30.0,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.env = cli_env(self.data_dir, env)
        self.log_path = self.data_dir / f"{name}.log"
        self.startup_timeout = startup_timeout
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            offset = log.tell()
            self._proc = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
                [sys.executable, "-m", "pushgate", "worker"],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + self.startup_timeout
        while True:
            text = self.log_path.read_bytes()[offset:].decode("utf-8", "replace")
            if self.READY_LINE in text:
                return self
            code = self._proc.poll()
            if code is not None or time.monotonic() > deadline:
                self.kill()
                raise ServerStartError(f"pushgate worker did not start (exit {code}):\n{text}")
            time.sleep(0.05)

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM, wait; SIGKILL after ``timeout``. Returns the exit code."""
        return _end(self._proc, timeout)

    def kill(self) -> int | None:
        """SIGKILL at once. Returns the exit code."""
        return _end(self._proc, None)

    def __enter__(self) -> WorkerProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def run_cli(
    args: Sequence[str],
    data_dir: str | os.PathLike[str],
    env: Mapping[str, str] | None = None,
    *,
    timeout: float = 60.0,
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m pushgate <args>`` with ``PUSHGATE_DATA_DIR=data_dir``; never raises on
    a non-zero exit (check ``returncode``)."""
    return subprocess.run(  # noqa: S603 - fixed argv, no shell
        [sys.executable, "-m", "pushgate", *args],
        env=cli_env(data_dir, env),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def create_account(
    data_dir: str | os.PathLike[str], name: str, env: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """``pushgate account create NAME --json``; the parsed answer (has ``user_token``)."""
    result = run_cli(["account", "create", name, "--json"], data_dir, env)
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    if result.returncode != 0 or not lines:
        raise RuntimeError(
            f"account create exited with {result.returncode}\n"
            f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
        )
    account = json.loads(lines[-1])
    if not isinstance(account, dict) or "user_token" not in account:
        raise RuntimeError(f"unexpected account create output: {result.stdout!r}")
    return account
