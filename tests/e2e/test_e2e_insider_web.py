"""Insider web push v2 (POST /v2/single/campaign_id) against a real server and the fake Web
Push service, which decrypts every push: the reference's sample requests verbatim, the
target, language and engagement rules, and every documented error."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from e2e_support import Fakes, Tenant, client_for, new_account
from test_e2e_providers import setup_tenant, web_subscription

from pushgate.testing.server import ServerProcess

PATH = "/v2/single/campaign_id"
# The reference's two sample request bodies, verbatim.
SAMPLES = [Path(__file__).parent / "samples" / f"insider-web-sample-{n}.json" for n in (1, 2)]
# Subscribers not active for this long are unengaged on this test's server.
UNENGAGED_SECONDS = 3.0


def sample_bodies() -> list[dict[str, Any]]:
    """The two sample request bodies of the reference, verbatim."""
    return [json.loads(path.read_text()) for path in SAMPLES]


@pytest.fixture(scope="module")
def web_server(fakes: Fakes, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    env = {
        "PUSHGATE_EGRESS_ALLOW": "127.0.0.0/8",
        "PUSHGATE_PROVIDER_CA_FILE": str(fakes.webpush.ca_file),
        "PUSHGATE_UNENGAGED_AFTER_DAYS": str(UNENGAGED_SECONDS / 86_400),
    }
    with ServerProcess(tmp_path_factory.mktemp("insider-web"), env) as srv:
        yield srv


@pytest.fixture
async def http(web_server: ServerProcess) -> Any:
    async with client_for(web_server) as client:
        yield client


async def web_key(http: httpx2.AsyncClient, tenant: Tenant, **fields: Any) -> tuple[str, str]:
    resp = await http.post(
        "/api/v1/keys",
        headers=tenant.bearer,
        json={"kind": "insider-web", "app_id": tenant.app_id, **fields},
    )
    assert resp.status_code == 201, resp.text
    return resp.json()["key"], resp.json()["partner_id"]


async def browser(
    http: httpx2.AsyncClient, tenant: Tenant, fakes: Fakes, external_id: str, **profile: Any
) -> str:
    """A subscriber with a web push subscription; its endpoint."""
    resp = await http.put(
        f"/api/v1/apps/{tenant.app_id}/subscribers",
        headers=tenant.bearer,
        json={"identifiers": {"external_id": external_id}, **profile},
    )
    assert resp.status_code in (200, 201), resp.text
    subscription = await web_subscription(http, tenant, fakes)
    made = await http.post(
        "/api/v1/devices",
        headers=tenant.bearer,
        json={
            "platform": "web",
            "app_id": tenant.app_id,
            "subscription": subscription,
            "external_id": external_id,
        },
    )
    assert made.status_code == 201, made.text
    endpoint: str = subscription["endpoint"]
    return endpoint


async def launch(http: httpx2.AsyncClient, key: str, body: dict[str, Any]) -> httpx2.Response:
    return await http.post(PATH, headers={"Authorization": f"Bearer {key}"}, json=body)


async def reached(
    fakes: Fakes, endpoints: set[str], title: str, expected: set[str], wait: float = 10.0
) -> set[str]:
    """Which of ``endpoints`` got a push titled ``title`` (waiting until ``expected`` did, then
    a moment more for any that should not)."""
    deadline = time.monotonic() + wait

    def got() -> set[str]:
        return {
            m.endpoint
            for m in list(fakes.webpush.received)
            if m.endpoint in endpoints and m.json().get("title") == title
        }

    while not expected <= got() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)
    return got()


async def test_the_reference_samples_launch_campaigns(
    http: httpx2.AsyncClient, web_server: ServerProcess, fakes: Fakes
) -> None:
    tenant = await setup_tenant(http, web_server, fakes, ())
    key, partner = await web_key(http, tenant)
    edge = await browser(
        http, tenant, fakes, "edge", language="en-US", attributes={"d_wp_browser": "Edg"}
    )
    chrome = await browser(
        http, tenant, fakes, "chrome", language="en-US", attributes={"d_wp_browser": "Chrome"}
    )
    french = await browser(
        http, tenant, fakes, "fr", language="fr-FR", attributes={"d_wp_browser": "Edg"}
    )
    everyone = {edge, chrome, french}
    first, second = sample_bodies()

    first["partner_id"] = partner
    first["title"] = "to everyone"
    resp = await launch(http, key, first)
    assert resp.status_code == 200, resp.text
    assert resp.json()["success"] is True and isinstance(resp.json()["campaign_id"], int)
    assert await reached(fakes, everyone, "to everyone", everyone) == everyone
    shown = next(
        m.json()
        for m in fakes.webpush.received
        if m.endpoint == edge and m.json()["title"] == "to everyone"
    )
    assert shown["body"] == "description of push"
    assert shown["url"] == "https://image.useinsider.com"
    assert shown["image"] == first["banner"] and shown["icon"] == first["image"]
    sent = next(m for m in fakes.webpush.received if m.endpoint == edge)
    assert 990 <= sent.ttl <= 1000

    second["partner_id"] = partner
    second["title"] = "edge in english"
    resp = await launch(http, key, second)
    assert resp.status_code == 200, resp.text
    assert await reached(fakes, everyone, "edge in english", {edge}) == {edge}

    campaign = resp.json()["campaign_id"]
    stats = await http.get(
        f"/api/v1/apps/{tenant.app_id}/campaigns/{campaign}", headers=tenant.bearer
    )
    assert stats.status_code == 200, stats.text
    assert stats.json()["stats"]["targeted"] == 1


async def test_unengaged_subscribers_are_left_out_unless_included(
    http: httpx2.AsyncClient, web_server: ServerProcess, fakes: Fakes
) -> None:
    tenant = await setup_tenant(http, web_server, fakes, ())
    key, partner = await web_key(http, tenant)
    idle = await browser(http, tenant, fakes, "idle", attributes={"c_plan": "pro"})
    await asyncio.sleep(UNENGAGED_SECONDS + 0.5)
    active = await browser(http, tenant, fakes, "active", attributes={"c_plan": "pro"})
    free = await browser(http, tenant, fakes, "free", attributes={"c_plan": "free"})
    body = {
        "partner_id": partner,
        "title": "engaged pros",
        "link": "https://shop.example.com",
        "ttl": 600,
        "target": {"attribute": "c_plan", "values": ["pro"]},
    }
    assert (await launch(http, key, body)).status_code == 200
    assert await reached(fakes, {idle, active, free}, "engaged pros", {active}) == {active}
    body = {**body, "title": "all pros", "include_unengaged": True}
    assert (await launch(http, key, body)).status_code == 200
    assert await reached(fakes, {idle, active, free}, "all pros", {idle, active}) == {
        idle,
        active,
    }


async def test_every_invalid_field_and_credential_is_refused(
    http: httpx2.AsyncClient, web_server: ServerProcess, fakes: Fakes
) -> None:
    tenant = await setup_tenant(http, web_server, fakes, ())
    key, partner = await web_key(http, tenant)
    good = {"partner_id": partner, "title": "t", "link": "https://a.example", "ttl": "60"}
    assert (await launch(http, key, good)).status_code == 200

    unauthorized = [
        await launch(http, "wrong", good),
        await http.post(PATH, json=good),
        await launch(http, key, {**good, "partner_id": "999999"}),
    ]
    for resp in unauthorized:
        assert resp.status_code == 401 and resp.json() == {"message": "Unauthorized"}

    invalid = {
        "title": {**good, "title": "x" * 101},
        "no title": {k: v for k, v in good.items() if k != "title"},
        "description": {**good, "description": "d" * 256},
        "banner description": {
            **good,
            "banner": "https://cdn.example/b.png",
            "description": "d" * 31,
        },
        "image": {**good, "image": "http://cdn.example/i.png"},
        "banner": {**good, "banner": "ftp://cdn.example/b.png"},
        "link": {k: v for k, v in good.items() if k != "link"},
        "ttl": {**good, "ttl": str(240 * 3600 + 1)},
        "ttl text": {**good, "ttl": "soon"},
        "target": {**good, "is_all": False},
        "attribute": {**good, "target": {"attribute": "wp_browser", "values": ["Edg"]}},
        "values": {**good, "target": {"attribute": "d_wp_browser", "values": []}},
        "language": {**good, "language": "not a language"},
    }
    for what, body in invalid.items():
        resp = await launch(http, key, body)
        assert resp.status_code == 400, (what, resp.text)
        assert set(resp.json()) == {"message"} and resp.json()["message"], what
    ok = await launch(
        http, key, {**good, "banner": "https://cdn.example/b.png", "description": "d" * 30}
    )
    assert ok.status_code == 200
    assert (await launch(http, key, {**good, "ttl": 240 * 3600})).status_code == 200

    deleted = await http.delete(
        f"/api/v1/apps/{tenant.app_id}/credentials/web", headers=tenant.bearer
    )
    assert deleted.status_code == 204, deleted.text
    no_vapid = await launch(http, key, good)
    assert no_vapid.status_code == 424 and no_vapid.json() == {"message": "SERVICE:-"}


async def test_the_quota_and_the_allowlist_apply(
    http: httpx2.AsyncClient, web_server: ServerProcess, fakes: Fakes
) -> None:
    tenant = await setup_tenant(http, web_server, fakes, ())
    key, partner = await web_key(http, tenant, per_minute=1)
    body = {"partner_id": partner, "title": "t", "link": "https://a.example"}
    assert (await launch(http, key, body)).status_code == 200
    over = await launch(http, key, body)
    assert over.status_code == 429 and "Request limit exceeded" in over.json()["message"]
    fenced, _ = await web_key(http, tenant, ip_allowlist=["192.0.2.0/24"])
    assert (await launch(http, fenced, body)).status_code == 403
    other = new_account(web_server.data_dir)
    made = await http.post("/api/v1/apps", headers=other.bearer, json={"title": "y"})
    other.app_id = made.json()["id"]
    other_key, _ = await web_key(http, other)
    # The partner id of another account does not go with this key.
    assert (await launch(http, other_key, body)).status_code == 401
