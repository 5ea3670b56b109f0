"""Event templates are data, never code: only plain `{name}` placeholders of declared trackers,
`{{`/`}}` are literal braces, and tracker values are inserted verbatim."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx2
import pytest
from e2e_support import (
    Tenant,
    add_event,
    make_tenant_sync,
    post_ok,
    register_device,
    unique,
    ws_connect,
    ws_recv,
    ws_until_ready,
)
from websockets.asyncio.client import ClientConnection

from pushgate.testing.server import ServerProcess


@pytest.fixture(scope="module")
def tenant(server: ServerProcess) -> Tenant:
    return make_tenant_sync(server)


@pytest.fixture
async def device_ws(
    server: ServerProcess, http: httpx2.AsyncClient, tenant: Tenant
) -> AsyncIterator[ClientConnection]:
    device = await register_device(http, tenant)
    async with ws_connect(server, token=device["device_token"]) as ws:
        backlog, _ = await ws_until_ready(ws)
        assert backlog == []
        yield ws


async def send_and_receive(
    http: httpx2.AsyncClient,
    tenant: Tenant,
    ws: ClientConnection,
    event: str,
    trackers: dict[str, str],
) -> str:
    await post_ok(http, tenant, trackers, event=event)
    message = await ws_recv(ws, 3.0)
    assert message["type"] == "notification"
    assert message["event"] == event
    assert message["data"] == trackers
    text: str = message["message"]
    return text


@pytest.mark.parametrize(
    "template",
    [
        "{0.__class__}",
        "{email!r}",
        "{email!s}",
        "{email.__class__}",
        "{email.__class__.__init__.__globals__}",
        "{email[0]}",
        "{email:>10}",
        "{email:{country}}",
        "{}",
        "{0}",
        "{email",
        "email} joined",
    ],
)
async def test_unsafe_or_broken_templates_are_400(
    http: httpx2.AsyncClient, tenant: Tenant, template: str
) -> None:
    resp = await add_event(http, tenant, unique("bad"), ["email", "country"], template)
    assert resp.status_code == 400, resp.text
    body = resp.json()
    assert body["error"] is True and body["status"] == 400 and body["msg"]
    events = (await http.get("/v1/events/list", headers=tenant.app_headers)).json()
    assert all(not event["title"].startswith("bad-") for event in events)


async def test_double_braces_are_literal_braces(
    http: httpx2.AsyncClient, tenant: Tenant, device_ws: ClientConnection
) -> None:
    resp = await add_event(http, tenant, "braces", ["email"], "{{x}} {email}")
    assert resp.status_code == 201, resp.text
    text = await send_and_receive(http, tenant, device_ws, "braces", {"email": "ann@example.com"})
    assert text == "{x} ann@example.com"

    resp = await add_event(http, tenant, "braces2", ["email"], "{{{email}}} }}{{")
    assert resp.status_code == 201, resp.text
    text = await send_and_receive(http, tenant, device_ws, "braces2", {"email": "bob"})
    assert text == "{bob} }{"


async def test_tracker_values_are_inserted_verbatim(
    http: httpx2.AsyncClient, tenant: Tenant, device_ws: ClientConnection
) -> None:
    trackers = {"email": "{country}", "country": "{0.__class__}"}
    text = await send_and_receive(http, tenant, device_ws, "signups", trackers)
    assert text == "{country} has signed up from {0.__class__}"

    trackers = {"email": "{{email}} %s %(x)s $x ${x}", "country": "<b>&amp;</b> ✓\n\t"}
    text = await send_and_receive(http, tenant, device_ws, "signups", trackers)
    assert text == "{{email}} %s %(x)s $x ${x} has signed up from <b>&amp;</b> ✓\n\t"


async def test_repeated_and_unused_placeholders(
    http: httpx2.AsyncClient, tenant: Tenant, device_ws: ClientConnection
) -> None:
    resp = await add_event(http, tenant, "repeat", ["a", "b"], "{a}-{a}-{a}")
    assert resp.status_code == 201, resp.text
    text = await send_and_receive(http, tenant, device_ws, "repeat", {"a": "x", "b": "unused"})
    assert text == "x-x-x"
