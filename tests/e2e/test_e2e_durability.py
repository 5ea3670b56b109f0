"""Nothing answered 201 is lost: SIGKILL the server in the middle of a burst of posts,
restart it, and every accepted notification reaches every device."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx2
from e2e_support import (
    ServerFactory,
    Tenant,
    add_app,
    add_event,
    client_for,
    register_device,
)

from pushgate.testing.server import create_account

BURST = 600
KILL_AFTER_ACCEPTED = 150


async def test_sigkill_mid_burst_loses_nothing_accepted(
    make_server: ServerFactory, database_url: str
) -> None:
    """On both engines (``database_url`` is parametrized over SQLite and PostgreSQL)."""
    env = {"PUSHGATE_DATABASE_URL": database_url}
    server = make_server(env=env)
    account = create_account(server.data_dir, "crash", env)
    tenant = Tenant(data_dir=server.data_dir, user_token=account["user_token"])
    async with client_for(server) as http:
        await add_app(http, tenant)
        assert (await add_event(http, tenant)).status_code == 201
        devices = [await register_device(http, tenant, f"crash-{i}") for i in range(2)]

    accepted: dict[int, str] = {}  # notification id -> the sequence number it carried
    killed = asyncio.Event()
    limits = httpx2.Limits(max_connections=32)

    async def post(client: httpx2.AsyncClient, seq: int) -> None:
        trackers = {"email": f"user{seq}@example.com", "country": str(seq)}
        try:
            response = await client.post(
                "/v1/post",
                headers=tenant.app_headers,
                json={"event": "signups", "trackers": trackers},
            )
        except httpx2.TransportError:
            return  # never answered: the client may not count on it
        assert response.status_code == 201, response.text
        accepted[int(response.headers["X-Pushgate-Notification-Id"])] = str(seq)
        if len(accepted) >= KILL_AFTER_ACCEPTED and not killed.is_set():
            killed.set()
            server.kill()

    async with httpx2.AsyncClient(
        base_url=server.url, timeout=10.0, trust_env=False, limits=limits
    ) as client:
        await asyncio.gather(*(post(client, seq) for seq in range(BURST)))
    assert killed.is_set(), "the burst ended before the kill"
    assert len(accepted) < BURST, "the kill came too late to interrupt anything"

    server.restart()
    async with client_for(server) as http:
        for device in devices:
            # After the restart the fan-out catches up on what was accepted: poll until
            # everything accepted is there (bounded).
            received: dict[int, dict[str, Any]] = {}
            deadline = asyncio.get_running_loop().time() + 30
            while set(accepted) - set(received):
                if asyncio.get_running_loop().time() > deadline:
                    break
                # since=0: everything kept for the device (fan-outs may finish out of id order)
                response = await http.get(
                    "/api/v1/channel/poll",
                    params={"since": 0, "limit": 1000},
                    headers={"Authorization": f"Bearer {device['device_token']}"},
                )
                assert response.status_code == 200, response.text
                page = response.json()["notifications"]
                received.update({item["id"]: item for item in page})
                await asyncio.sleep(0.1)
            missing = set(accepted) - set(received)
            assert not missing, f"{len(missing)} accepted notifications lost"
            for notification_id, seq in accepted.items():
                item = received[notification_id]
                assert item["message"] == f"user{seq}@example.com has signed up from {seq}"
