"""WebSocket clients that ask for batch=1 get what is queued in one frame."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx2
import pytest
from e2e_support import (
    Tenant,
    make_tenant,
    post_ok,
    register_device,
    wait_delivery_status,
    wait_fanned_out,
    ws_recv,
)
from websockets.asyncio.client import connect

from pushgate.testing.server import ServerProcess


def batch_ws(server: ServerProcess, device: dict[str, Any]) -> connect:
    """A WebSocket device connection that asks for batched frames."""
    base = server.url.replace("http://", "ws://", 1)
    url = f"{base}/api/v1/channel/ws?token={device['device_token']}&batch=1"
    return connect(url, compression=None)


@pytest.fixture
async def tenant_device(
    server: ServerProcess, http: httpx2.AsyncClient
) -> tuple[Tenant, dict[str, Any]]:
    """A fresh account with the signups event and one registered channel device."""
    tenant = await make_tenant(http, server.data_dir)
    return tenant, await register_device(http, tenant)


async def test_backlog_arrives_as_one_batch_and_live_ones_follow(
    server: ServerProcess,
    http: httpx2.AsyncClient,
    tenant_device: tuple[Tenant, dict[str, Any]],
) -> None:
    tenant, device = tenant_device
    posted = [
        await post_ok(http, tenant, {"email": f"u{n}@example.com", "country": "NL"})
        for n in range(3)
    ]
    await wait_fanned_out(http, tenant, posted)
    async with batch_ws(server, device) as ws:
        first = await ws_recv(ws)
        assert first["type"] == "batch"
        messages = [item["message"] for item in first["notifications"]]
        assert messages == [f"u{n}@example.com has signed up from NL" for n in range(3)]
        ready = await ws_recv(ws)
        assert ready == {"type": "ready", "device_id": device["id"], "backlog": 3}
        ids = [item["id"] for item in first["notifications"]]
        await ws.send(json.dumps({"type": "ack", "ids": ids}))
        await post_ok(http, tenant, {"email": "live@example.com", "country": "NL"})
        live = await ws_recv(ws)
        # a single queued notification is sent as a plain notification frame
        assert live["type"] == "notification"
        assert live["message"] == "live@example.com has signed up from NL"
    for notification_id in ids:
        await wait_delivery_status(http, tenant, notification_id, "delivered")


async def test_a_burst_is_received_completely(
    server: ServerProcess,
    http: httpx2.AsyncClient,
    tenant_device: tuple[Tenant, dict[str, Any]],
) -> None:
    tenant, device = tenant_device
    async with batch_ws(server, device) as ws:
        assert (await ws_recv(ws))["type"] == "ready"
        await asyncio.gather(
            *(post_ok(http, tenant, {"email": f"b{n}", "country": "NL"}) for n in range(50))
        )
        received: list[str] = []
        while len(received) < 50:
            frame = await ws_recv(ws)
            items = frame["notifications"] if frame["type"] == "batch" else [frame]
            received += [item["message"] for item in items]
    assert sorted(received) == sorted(f"b{n} has signed up from NL" for n in range(50))


async def test_binary_ack_frames_and_garbage_are_handled(
    server: ServerProcess,
    http: httpx2.AsyncClient,
    tenant_device: tuple[Tenant, dict[str, Any]],
) -> None:
    tenant, device = tenant_device
    async with batch_ws(server, device) as ws:
        assert (await ws_recv(ws))["type"] == "ready"
        await post_ok(http, tenant)
        notification = await ws_recv(ws)
        await ws.send(b"not json")
        error = await ws_recv(ws)
        assert error["type"] == "error" and error["message"]
        await ws.send(json.dumps({"type": "ack", "ids": [notification["id"]]}).encode())
        await wait_delivery_status(http, tenant, notification["id"], "delivered")


async def test_an_acknowledged_notification_is_not_resent_on_a_quick_reconnect(
    server: ServerProcess,
    http: httpx2.AsyncClient,
    tenant_device: tuple[Tenant, dict[str, Any]],
) -> None:
    """Status changes reach storage in batches; a reconnect right after an ack must not
    be offered what was acknowledged."""
    tenant, device = tenant_device
    for _ in range(5):
        async with batch_ws(server, device) as ws:
            assert (await ws_recv(ws))["type"] == "ready"
            await post_ok(http, tenant)
            notification = await ws_recv(ws)
            await ws.send(json.dumps({"type": "ack", "ids": [notification["id"]]}))
        async with batch_ws(server, device) as ws:
            first = await ws_recv(ws)
            assert first["type"] == "ready" and first["backlog"] == 0, first
