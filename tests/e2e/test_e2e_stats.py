"""Campaign and notification statistics, "opened" reports from the channel and the native API,
and the app's frequency cap, against a real server (docs/audience.md)."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx2
import pytest
from e2e_support import (
    Tenant,
    app_device,
    make_app,
    new_account,
    polled,
    send,
    subscriber,
    ws_connect,
    ws_recv,
    ws_until_ready,
)

from pushgate.testing.server import ServerProcess, run_cli


async def stats(http: httpx2.AsyncClient, tenant: Tenant, notification_id: int) -> dict[str, Any]:
    resp = await http.get(f"/api/v1/notifications/{notification_id}/stats", headers=tenant.bearer)
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


async def until_stats(
    http: httpx2.AsyncClient, tenant: Tenant, notification_id: int, **expected: int
) -> dict[str, Any]:
    """Poll the notification's statistics until the expected counts are there (the fan-out
    runs after the answer, statuses are written in batches)."""
    deadline = time.monotonic() + 10
    while True:
        body = await stats(http, tenant, notification_id)
        if all(body[name] == count for name, count in expected.items()):
            return body
        if time.monotonic() > deadline:
            pytest.fail(f"statistics of {notification_id} never reached {expected}: {body}")
        await asyncio.sleep(0.1)


async def test_a_campaign_counts_every_target_opened_and_capped(
    http: httpx2.AsyncClient, server: ServerProcess
) -> None:
    tenant = new_account(server.data_dir)
    app_id = await make_app(http, tenant)
    capped = await http.patch(
        f"/api/v1/apps/{app_id}", headers=tenant.bearer, json={"frequency_cap": 1}
    )
    assert capped.status_code == 200, capped.text
    made: dict[str, dict[str, Any]] = {}
    for name in ("ann", "bob", "cat"):
        optins = {"push": name != "cat"}
        await subscriber(http, tenant, app_id, identifiers={"external_id": name}, optins=optins)
        made[name] = await app_device(http, tenant, app_id, external_id=name)

    # 1: four identifiers, one names nobody, one withdrew push opt-in.
    first = await send(
        http,
        tenant,
        {
            "audience": {
                "subscribers": [{"external_id": n} for n in ("ann", "bob", "cat", "nobody")],
                "optin_required": True,
            },
            "campaign": {"id": "spring", "name": "Spring sale"},
        },
    )
    assert first.status_code == 201, first.text
    n1 = first.json()["id"]
    counted = await until_stats(http, tenant, n1, queued=2)
    assert counted == {
        "notification_id": n1,
        "targeted": 4,
        "queued": 2,
        "sent": 0,
        "delivered": 0,
        "opened": 0,
        "failed": 0,
        "failed_by_reason": {},
        "expired": 0,
        "capped": 0,
        "no_user": 1,
        "opted_out": 1,
    }

    # ann's device takes it and acknowledges it; bob's opens it over the WebSocket.
    ann = {"Authorization": f"Bearer {made['ann']['device_token']}"}
    assert [n["id"] for n in await polled(http, made["ann"]["device_token"])] == [n1]
    acked = await http.post("/api/v1/channel/ack", headers=ann, json={"ids": [n1]})
    assert acked.json() == {"acknowledged": 1}
    async with ws_connect(server, made["bob"]["device_token"]) as ws:
        backlog, _ = await ws_until_ready(ws)
        assert [n["id"] for n in backlog] == [n1]
        await ws.send(json.dumps({"type": "opened", "ids": [n1]}))
        await ws.send(json.dumps({"type": "opened", "ids": "all"}))
        error = await ws_recv(ws)
        assert error["type"] == "error" and "ids" in error["message"]
    await until_stats(http, tenant, n1, delivered=1, opened=1, queued=0, sent=0)

    # 2: to every device of the app; ann and bob already had one today (cap 1).
    second = await send(http, tenant, {"campaign": {"id": "spring"}})
    n2 = second.json()["id"]
    await until_stats(http, tenant, n2, capped=2, queued=1)
    assert [n["id"] for n in await polled(http, made["bob"]["device_token"])] == []
    assert [n["id"] for n in await polled(http, made["cat"]["device_token"])] == [n2]
    reported = await http.post(
        f"/api/v1/notifications/{n2}/opened",
        headers=tenant.bearer,
        json={"device_ids": [made["cat"]["id"], made["ann"]["id"]]},
    )
    assert reported.json() == {"opened": 1}, reported.text  # ann's was capped
    again = await http.post(
        "/api/v1/channel/opened",
        headers={"Authorization": f"Bearer {made['cat']['device_token']}"},
        json={"ids": [n2]},
    )
    assert again.json() == {"opened": 0}  # already opened
    counted = await until_stats(http, tenant, n2, opened=1)
    assert (counted["targeted"], counted["capped"], counted["sent"]) == (3, 2, 0)
    capped_rows = await http.get(
        f"/api/v1/notifications/{n2}/deliveries?status=capped", headers=tenant.bearer
    )
    assert {r["device_id"] for r in capped_rows.json()["deliveries"]} == {
        made["ann"]["id"],
        made["bob"]["id"],
    }

    campaign = await http.get(f"/api/v1/apps/{app_id}/campaigns/spring", headers=tenant.bearer)
    assert campaign.status_code == 200, campaign.text
    body = campaign.json()
    assert (body["id"], body["name"], body["notifications"]) == ("spring", "Spring sale", 2)
    assert {k: v for k, v in body["stats"].items() if v} == {
        "targeted": 7,
        "delivered": 1,
        "opened": 2,
        "capped": 2,
        "no_user": 1,
        "opted_out": 1,
    }
    listed = await http.get(f"/api/v1/apps/{app_id}/campaigns", headers=tenant.bearer)
    assert [c["id"] for c in listed.json()["campaigns"]] == ["spring"]

    # The same from the command line.
    account = str(tenant.account_id)
    shown = await asyncio.to_thread(
        run_cli, ["deliveries", "stats", str(n2), "--account", account, "--json"], server.data_dir
    )
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout) == {**counted, "notification_id": n2}
    table = await asyncio.to_thread(
        run_cli, ["deliveries", "campaigns", "--app", app_id, "--account", account],
        server.data_dir,
    )  # fmt: skip
    assert table.returncode == 0, table.stderr
    assert "Campaign spring (Spring sale), 2 notifications" in table.stdout
    assert "opted_out" in table.stdout
    missing = await asyncio.to_thread(
        run_cli,
        ["deliveries", "campaigns", "--app", app_id, "--campaign", "x", "--account", account],
        server.data_dir,
    )
    assert missing.returncode == 1 and "no campaign 'x'" in missing.stderr


async def test_statistics_and_opened_reports_stay_in_their_account(
    http: httpx2.AsyncClient, server: ServerProcess
) -> None:
    tenant = new_account(server.data_dir)
    app_id = await make_app(http, tenant)
    mine = await app_device(http, tenant, app_id)
    sent = await send(http, tenant, {"campaign": {"id": "c1"}})
    notification_id = sent.json()["id"]
    await until_stats(http, tenant, notification_id, queued=1)

    other = new_account(server.data_dir)
    other_app = await make_app(http, other)
    theirs = await app_device(http, other, other_app)
    for path in (
        f"/api/v1/notifications/{notification_id}/stats",
        f"/api/v1/apps/{app_id}/campaigns",
        f"/api/v1/apps/{app_id}/campaigns/c1",
    ):
        resp = await http.get(path, headers=other.bearer)
        assert resp.status_code == 404, (path, resp.text)
        assert "error" in resp.json()
    unknown = await http.get(f"/api/v1/apps/{app_id}/campaigns/nope", headers=tenant.bearer)
    assert unknown.status_code == 404
    assert "nope" in unknown.json()["error"]["message"]

    # Another account's device, or another device's notification, opens nothing.
    foreign = await http.post(
        f"/api/v1/notifications/{notification_id}/opened",
        headers=other.bearer,
        json={"device_ids": [mine["id"]]},
    )
    assert foreign.json() == {"opened": 0}
    elsewhere = await http.post(
        "/api/v1/channel/opened",
        headers={"Authorization": f"Bearer {theirs['device_token']}"},
        json={"ids": [notification_id]},
    )
    assert elsewhere.json() == {"opened": 0}
    for bad in ({"device_ids": []}, {"device_ids": [0]}, {"devices": [1]}):
        resp = await http.post(
            f"/api/v1/notifications/{notification_id}/opened", headers=tenant.bearer, json=bad
        )
        assert resp.status_code in (400, 422), (bad, resp.text)
    assert (await stats(http, tenant, notification_id))["opened"] == 0
