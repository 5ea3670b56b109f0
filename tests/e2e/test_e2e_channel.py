"""The device channel end to end: SSE and WebSocket devices, offline backlog, acks, `since`,
delivery states and TTL expiry (docs/channel.md)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

import httpx2
import pytest
from e2e_support import (
    SIGNUP_MESSAGE,
    SIGNUP_TRACKERS,
    ServerFactory,
    Tenant,
    client_for,
    deliveries,
    latest_notification_id,
    make_tenant,
    post_ok,
    register_device,
    wait_delivery_status,
    wait_fanned_out,
    with_timeout,
    ws_connect,
    ws_expect_silence,
    ws_recv,
    ws_until_ready,
)
from httpx2 import ServerSentEvent

from pushgate.testing.server import ServerProcess

SSE_TIMEOUT = httpx2.Timeout(10.0, read=30.0)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def next_event(
    events: AsyncIterator[ServerSentEvent], timeout: float = 5.0
) -> ServerSentEvent:
    event: ServerSentEvent = await with_timeout(anext(events), timeout, "a server-sent event")
    return event


def signup(n: int) -> dict[str, str]:
    return {"email": f"user{n}@example.com", "country": "NL"}


def signup_message(n: int) -> str:
    return f"user{n}@example.com has signed up from NL"


async def ack(http: httpx2.AsyncClient, device_token: str, ids: list[int]) -> httpx2.Response:
    return await http.post("/api/v1/channel/ack", headers=bearer(device_token), json={"ids": ids})


async def poll(
    http: httpx2.AsyncClient, device_token: str, since: int | None = None
) -> list[dict[str, Any]]:
    params = {} if since is None else {"since": since}
    resp = await http.get("/api/v1/channel/poll", headers=bearer(device_token), params=params)
    assert resp.status_code == 200, resp.text
    items: list[dict[str, Any]] = resp.json()["notifications"]
    return items


# --------------------------------------------------------------------------- SSE


async def test_sse_device_receives_and_acknowledges(
    server: ServerProcess, http: httpx2.AsyncClient
) -> None:
    tenant = await make_tenant(http, server.data_dir)
    device = await register_device(http, tenant, "sse")
    token = device["device_token"]

    async with http.sse(
        "/api/v1/channel/sse", headers=bearer(token), timeout=SSE_TIMEOUT
    ) as source:
        assert source.response.status_code == 200
        async with aclosing(source.__aiter__()) as events:
            ready = await next_event(events)
            assert ready.event == "ready"
            assert ready.json() == {"type": "ready", "device_id": device["id"], "backlog": 0}

            await post_ok(http, tenant)
            event = await next_event(events, 2.0)

    assert event.event == "notification"
    notification = event.json()
    assert isinstance(notification, dict)
    assert notification["type"] == "notification"
    assert notification["message"] == SIGNUP_MESSAGE
    assert notification["data"] == SIGNUP_TRACKERS
    assert notification["app_id"] == tenant.app_id
    assert event.id == str(notification["id"])
    notification_id = notification["id"]
    assert notification_id == await latest_notification_id(http, tenant)

    rows = await wait_delivery_status(http, tenant, notification_id, "sent", timeout=5.0)
    assert [row["device_id"] for row in rows] == [device["id"]]

    resp = await ack(http, token, [notification_id])
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"acknowledged": 1}
    await wait_delivery_status(http, tenant, notification_id, "delivered", timeout=5.0)

    # nothing unacknowledged is left for this device
    assert await poll(http, token) == []


async def test_sse_with_query_token_and_last_event_id(
    server: ServerProcess, http: httpx2.AsyncClient
) -> None:
    tenant = await make_tenant(http, server.data_dir)
    device = await register_device(http, tenant, "sse-query")
    token = device["device_token"]
    posted = [await post_ok(http, tenant, signup(n)) for n in (1, 2, 3)]
    await wait_fanned_out(http, tenant, posted)

    async with (
        http.sse("/api/v1/channel/sse", params={"token": token}, timeout=SSE_TIMEOUT) as source,
        aclosing(source.__aiter__()) as events,
    ):
        received = [await next_event(events) for _ in range(3)]
        ready = await next_event(events)
    assert [event.event for event in received] == ["notification"] * 3
    assert [event.json()["message"] for event in received] == [signup_message(n) for n in (1, 2, 3)]  # type: ignore[index]
    assert ready.event == "ready" and ready.json()["backlog"] == 3  # type: ignore[index]

    # Last-Event-ID works as since: only the notifications after the first one
    first_id = received[0].id
    async with (
        http.sse(
            "/api/v1/channel/sse",
            headers={**bearer(token), "Last-Event-ID": first_id},
            timeout=SSE_TIMEOUT,
        ) as source,
        aclosing(source.__aiter__()) as events,
    ):
        again = [await next_event(events) for _ in range(2)]
        ready = await next_event(events)
    assert [event.id for event in again] == [event.id for event in received[1:]]
    assert ready.event == "ready" and ready.json()["backlog"] == 2  # type: ignore[index]


async def test_channel_endpoints_reject_bad_tokens(
    server: ServerProcess, http: httpx2.AsyncClient
) -> None:
    tenant = await make_tenant(http, server.data_dir)
    for headers in ({}, bearer("dvt_wrong"), bearer(tenant.user_token)):
        resp = await http.get("/api/v1/channel/sse", headers=headers)
        assert resp.status_code == 401, resp.text
        resp = await http.get("/api/v1/channel/poll", headers=headers)
        assert resp.status_code == 401, resp.text
        resp = await http.post("/api/v1/channel/ack", headers=headers, json={"ids": [1]})
        assert resp.status_code == 401, resp.text


async def test_ack_ignores_foreign_notification_ids(
    server: ServerProcess, http: httpx2.AsyncClient
) -> None:
    alice = await make_tenant(http, server.data_dir)
    bob = await make_tenant(http, server.data_dir)
    alice_device = await register_device(http, alice)
    bob_device = await register_device(http, bob)
    alice_notification = await post_ok(http, alice)
    bob_notification = await post_ok(http, bob)
    await wait_fanned_out(http, alice, [alice_notification])
    await wait_fanned_out(http, bob, [bob_notification])

    resp = await ack(
        http, bob_device["device_token"], [alice_notification, 10**9, bob_notification]
    )
    assert resp.status_code == 200, resp.text
    # once bob's own ack is stored, alice's delivery is still untouched
    await wait_delivery_status(http, bob, bob_notification, "delivered")
    rows = await deliveries(http, alice, alice_notification)
    assert [row["status"] for row in rows] == ["queued"]
    assert [item["id"] for item in await poll(http, alice_device["device_token"])] == [
        alice_notification
    ]
    # and the answer counts only what was really acknowledged
    assert resp.json() == {"acknowledged": 1}


# --------------------------------------------------------------------------- offline devices


async def test_offline_device_gets_backlog_then_since(
    server: ServerProcess, http: httpx2.AsyncClient
) -> None:
    tenant = await make_tenant(http, server.data_dir)
    device = await register_device(http, tenant, "offline")
    token = device["device_token"]

    await wait_fanned_out(http, tenant, [await post_ok(http, tenant, signup(1))])
    first_id = await latest_notification_id(http, tenant)
    rows = await deliveries(http, tenant, first_id)
    assert len(rows) == 1
    assert rows[0]["device_id"] == device["id"] and rows[0]["status"] == "queued"

    # connect: the stored notification arrives, then ready
    async with ws_connect(server, token=token) as ws:
        backlog, ready = await ws_until_ready(ws)
        assert [item["id"] for item in backlog] == [first_id]
        assert backlog[0]["message"] == signup_message(1)
        assert ready["backlog"] == 1
        await wait_delivery_status(http, tenant, first_id, "sent", timeout=5.0)
        await ws.send(json.dumps({"type": "ack", "ids": [first_id]}))
        rows = await wait_delivery_status(http, tenant, first_id, "delivered")
        assert rows[0]["attempts"] >= 1

    # reconnect without since: acknowledged notifications are not sent again
    async with ws_connect(server, token=token) as ws:
        backlog, ready = await ws_until_ready(ws)
        assert backlog == [] and ready["backlog"] == 0
        await ws_expect_silence(ws, 0.3)

    # two more while offline
    await wait_fanned_out(
        http,
        tenant,
        [await post_ok(http, tenant, signup(2)), await post_ok(http, tenant, signup(3))],
    )
    newer = await poll(http, token, since=first_id)
    assert [item["message"] for item in newer] == [signup_message(2), signup_message(3)]
    second_id, third_id = (item["id"] for item in newer)
    assert first_id < second_id < third_id
    # poll does not acknowledge: without since, the unacknowledged ones are still there
    assert [item["id"] for item in await poll(http, token)] == [second_id, third_id]

    # since=N sends everything newer than N, acknowledged or not, oldest first
    async with ws_connect(server, token=token, since=0) as ws:
        backlog, ready = await ws_until_ready(ws)
        assert [item["id"] for item in backlog] == [first_id, second_id, third_id]
        assert ready["backlog"] == 3
    async with ws_connect(server, token=token, since=second_id) as ws:
        backlog, _ = await ws_until_ready(ws)
        assert [item["id"] for item in backlog] == [third_id]

    # without since: the two unacknowledged ones, then live ones
    async with ws_connect(server, token=token) as ws:
        backlog, _ = await ws_until_ready(ws)
        assert [item["id"] for item in backlog] == [second_id, third_id]
        await ws.send(json.dumps({"type": "ack", "ids": [second_id, third_id]}))
        await post_ok(http, tenant, signup(4))
        live = await ws_recv(ws, 2.0)
        assert live["message"] == signup_message(4) and live["id"] > third_id
        await wait_delivery_status(http, tenant, second_id, "delivered")
        await wait_delivery_status(http, tenant, third_id, "delivered")

    # the notification list: newest first, with counts by status
    resp = await http.get("/api/v1/notifications", headers=tenant.bearer)
    assert resp.status_code == 200
    listed = resp.json()["notifications"]
    assert [item["id"] for item in listed[:4]] == [live["id"], third_id, second_id, first_id]
    assert listed[3]["message"] == signup_message(1)
    assert listed[3]["deliveries"].get("delivered") == 1


async def test_live_notifications_are_resent_until_acknowledged(
    server: ServerProcess, http: httpx2.AsyncClient
) -> None:
    tenant = await make_tenant(http, server.data_dir)
    device = await register_device(http, tenant)
    async with ws_connect(server, token=device["device_token"]) as ws:
        await ws_until_ready(ws)
        await post_ok(http, tenant)
        first = await ws_recv(ws, 2.0)
    # not acknowledged: sent again on the next connection
    async with ws_connect(server, token=device["device_token"]) as ws:
        backlog, ready = await ws_until_ready(ws)
    assert [item["id"] for item in backlog] == [first["id"]]
    assert ready["backlog"] == 1
    # statuses are written in batches, within a fraction of a second
    rows = await wait_delivery_status(http, tenant, first["id"], "sent")
    assert rows[0]["attempts"] == 2


# --------------------------------------------------------------------------- TTL


async def test_notification_expires_when_ttl_runs_out(make_server: ServerFactory) -> None:
    server = make_server(env={"PUSHGATE_NOTIFICATION_TTL_SECONDS": "1"})
    async with client_for(server) as http:
        tenant: Tenant = await make_tenant(http, server.data_dir)
        device = await register_device(http, tenant)
        await post_ok(http, tenant)
        notification_id = await latest_notification_id(http, tenant)
        await asyncio.sleep(2.5)

        async with ws_connect(server, token=device["device_token"]) as ws:
            backlog, ready = await ws_until_ready(ws)
            assert backlog == []
            assert ready["backlog"] == 0
            await ws_expect_silence(ws, 0.3)
        assert await poll(http, device["device_token"]) == []
        assert await poll(http, device["device_token"], since=0) == []
        await wait_delivery_status(http, tenant, notification_id, "expired", timeout=10.0)

        # a fresh notification on the same server still goes through live
        async with ws_connect(server, token=device["device_token"]) as ws:
            await ws_until_ready(ws)
            await post_ok(http, tenant)
            message = await ws_recv(ws, 2.0)
            assert message["message"] == SIGNUP_MESSAGE


@pytest.mark.parametrize(
    ("query", "status", "message"),
    [
        ("token=dvt_wrong", 401, "Missing or invalid device token"),
        ("since=abc", 400, "since must be a notification id"),
        ("since=-1", 400, "since must be a notification id"),
        ("since=99999999999999999999", 400, "since must be a notification id"),
        ("batch=maybe", 400, "batch must be 1 or 0"),
    ],
)
async def test_websocket_refuses_bad_tokens_and_options_with_the_reason(
    server: ServerProcess, query: str, status: int, message: str
) -> None:
    from websockets.asyncio.client import connect
    from websockets.exceptions import InvalidStatus

    url = server.url.replace("http://", "ws://", 1) + "/api/v1/channel/ws?" + query
    with pytest.raises(InvalidStatus) as refused:
        async with connect(url, compression=None):
            pass
    response = refused.value.response
    assert response.status_code == status
    assert json.loads(response.body)["error"]["message"].startswith(message)
