"""SIGTERM under load: requests in flight are answered, nothing accepted is lost, nothing is
sent twice to the provider, device channel connections are closed with "going away"."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest
from e2e_support import (
    NO_THROTTLE,
    add_app,
    client_for,
    new_account,
    register_device,
    ws_connect,
    ws_until_ready,
)
from websockets.exceptions import ConnectionClosed

from pushgate.testing.fake_fcm import FakeFcm
from pushgate.testing.server import ServerProcess

DEVICES = 4
CLIENTS = 8


@pytest.fixture
def fcm() -> Iterator[FakeFcm]:
    fake = FakeFcm()
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()


def env(fcm: FakeFcm) -> dict[str, str]:
    return {
        **NO_THROTTLE,
        "PUSHGATE_FCM_URL": fcm.url,
        "PUSHGATE_PROVIDER_CA_FILE": str(fcm.ca_file),
        "PUSHGATE_EGRESS_ALLOW": "127.0.0.0/8",
        "PUSHGATE_FCM_TOKEN_HOSTS": "127.0.0.1",
        "PUSHGATE_SHUTDOWN_TIMEOUT_SECONDS": "20",
    }


async def load(
    http: httpx2.AsyncClient, body: dict[str, object], headers: dict[str, str]
) -> tuple[list[int], list[str]]:
    """Post until the server stops answering: the ids accepted, and requests that were cut
    off after they were sent (which a graceful stop must not do)."""
    accepted: list[int] = []
    cut: list[str] = []
    while True:
        try:
            resp = await http.post("/api/v1/notifications", json=body, headers=headers)
        except httpx2.ConnectError:
            return accepted, cut
        except (httpx2.ReadError, httpx2.RemoteProtocolError, httpx2.WriteError) as exc:
            # A keep-alive connection the server closed between requests is not a request
            # cut off; the next attempt tells (connection refused once the server is gone).
            cut.append(repr(exc))
            continue
        if resp.status_code == 201:
            accepted.append(resp.json()["id"])
        elif resp.status_code != 503:
            cut.append(f"{resp.status_code} {resp.text}")


async def test_sigterm_under_load_loses_nothing_and_sends_nothing_twice(
    fcm: FakeFcm, tmp_path: Path
) -> None:
    server = ServerProcess(tmp_path / "data", env(fcm)).start()
    try:
        async with client_for(server) as http:
            tenant = new_account(server.data_dir)
            await add_app(http, tenant)
            resp = await http.put(
                f"/api/v1/apps/{tenant.app_id}/credentials/android",
                headers=tenant.bearer,
                json=fcm.credentials(),
            )
            assert resp.status_code == 201, resp.text
            tokens = [f"shutdown-token-{i}-" + "x" * 140 for i in range(DEVICES)]
            for token in tokens:
                resp = await http.post(
                    "/api/v1/devices",
                    headers=tenant.bearer,
                    json={"platform": "android", "app_id": tenant.app_id, "token": token},
                )
                assert resp.status_code == 201, resp.text
            channel = await register_device(http, tenant)
            body = {"app_id": tenant.app_id, "message": "stop test"}
            async with ws_connect(server, channel["device_token"]) as ws:
                await ws_until_ready(ws)
                clients = [client_for(server) for _ in range(CLIENTS)]
                loads = [
                    asyncio.create_task(load(client, body, tenant.bearer)) for client in clients
                ]
                await asyncio.sleep(1.5)
                assert server.pid is not None
                stopped_at = time.monotonic()
                os.kill(server.pid, signal.SIGTERM)
                results = await asyncio.gather(*loads)
                for client in clients:
                    await client.aclose()
                # The device channel is closed with "going away".
                with pytest.raises(ConnectionClosed) as closed:
                    while True:
                        await asyncio.wait_for(ws.recv(), 20)
                assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
        code = server.stop()
        took = time.monotonic() - stopped_at
        # uvicorn ends by raising the signal it caught again, once everything is stopped.
        assert code in (0, -signal.SIGTERM), server.output()[-3000:]
        assert "Application shutdown complete" in server.output()
        assert took < 20, took
        accepted = [i for ids, _ in results for i in ids]
        cut = [c for _, c in results for c in c]
        assert len(accepted) > 20, "the load did not get going"
        # The only failures allowed are kept-alive connections closed between requests.
        assert all("RemoteProtocolError" in c or "ReadError" in c for c in cut), cut
        # Restart on the same data: every accepted notification reaches every device once.
        server.start()
        expected = {(str(i), t) for i in accepted for t in tokens}
        deadline = time.monotonic() + 60
        while True:
            sent = Counter(
                (m.message["data"]["pushgate_notification_id"], m.token) for m in fcm.messages
            )
            if expected <= set(sent) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        missing = expected - set(sent)
        assert not missing, f"{len(missing)} deliveries never sent, e.g. {sorted(missing)[:3]}"
        twice = {key: n for key, n in sent.items() if n > 1}
        assert not twice, f"sent more than once: {list(twice.items())[:5]}"
    finally:
        server.stop()
