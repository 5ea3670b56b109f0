"""The audience and access core through the native API, against a real server: apps,
subscribers with profiles, sends to an audience, translations, campaigns, idempotency keys
and scheduled sends."""

from __future__ import annotations

import asyncio
import json
import time

import httpx2
from e2e_support import (
    app_device,
    make_app,
    new_account,
    polled,
    send,
    subscriber,
    wait_fanned_out,
)

from pushgate.testing.server import ServerProcess, run_cli


async def test_apps_are_created_listed_renamed_and_deleted(
    http: httpx2.AsyncClient, server: ServerProcess
) -> None:
    tenant = new_account(server.data_dir)
    app_id = await make_app(http, tenant)
    listed = (await http.get("/api/v1/apps", headers=tenant.bearer)).json()
    number = listed["apps"][0]["number"]
    assert isinstance(number, int)
    assert listed == {"apps": [{"id": app_id, "number": number, "title": "shop"}]}
    shown = (await http.get(f"/api/v1/apps/{app_id}", headers=tenant.bearer)).json()
    assert shown["secret"] == tenant.app_secret
    renamed = await http.patch(
        f"/api/v1/apps/{app_id}", headers=tenant.bearer, json={"title": "store"}
    )
    assert renamed.json() == {
        "id": app_id,
        "number": number,
        "title": "store",
        "frequency_cap": None,
        "default_icon_url": None,
    }
    made = await app_device(http, tenant, app_id, external_id="u1")
    other = new_account(server.data_dir)
    assert (await http.get(f"/api/v1/apps/{app_id}", headers=other.bearer)).status_code == 404
    assert (await http.delete(f"/api/v1/apps/{app_id}", headers=other.bearer)).status_code == 404
    assert (await http.delete(f"/api/v1/apps/{app_id}", headers=tenant.bearer)).status_code == 204
    assert (await http.get("/api/v1/apps", headers=tenant.bearer)).json() == {"apps": []}
    gone = (await http.get("/api/v1/devices", headers=tenant.bearer)).json()["devices"]
    assert made["id"] not in {d["id"] for d in gone}


async def test_subscribers_are_upserted_searched_and_erased(
    http: httpx2.AsyncClient, server: ServerProcess
) -> None:
    tenant = new_account(server.data_dir)
    app_id = await make_app(http, tenant)
    created = await subscriber(
        http,
        tenant,
        app_id,
        identifiers={"INSIDER.email": "ann@example.com", "member_no": "M-1"},
        language="pt_BR",
        attributes={"c_plan": "pro", "d_wp_browser": "Edg", "c_sizes": [38, 39]},
        tags=["vip"],
        events=["install"],
    )
    assert created["identifiers"] == {"email": "ann@example.com", "member_no": "M-1"}
    assert created["language"] == "pt-BR"
    assert created["attributes"] == {"c_plan": "pro", "c_sizes": [38, 39], "d_wp_browser": "Edg"}
    found = await http.get(
        f"/api/v1/apps/{app_id}/subscribers?member_no=M-1", headers=tenant.bearer
    )
    assert [s["id"] for s in found.json()["subscribers"]] == [created["id"]]
    nobody = await http.get(
        f"/api/v1/apps/{app_id}/subscribers?phone_number=12", headers=tenant.bearer
    )
    assert nobody.json() == {"subscribers": []}
    phone = await app_device(http, tenant, app_id, email="ann@example.com")
    shown = (await http.get(f"/api/v1/subscribers/{created['id']}", headers=tenant.bearer)).json()
    assert shown["device_ids"] == [phone["id"]]
    bad = await http.put(
        f"/api/v1/apps/{app_id}/subscribers",
        headers=tenant.bearer,
        json={"identifiers": {"email": "x@y.z"}, "attributes": {"plan": "x"}},
    )
    assert bad.status_code == 400 and "d_<name>" in bad.json()["error"]["message"]
    erased = await http.delete(f"/api/v1/subscribers/{created['id']}", headers=tenant.bearer)
    assert erased.json() == {"deleted_devices": 1}
    missing = await http.get(f"/api/v1/subscribers/{created['id']}", headers=tenant.bearer)
    assert missing.status_code == 404


async def test_an_audience_selects_devices_and_each_gets_its_language(
    http: httpx2.AsyncClient, server: ServerProcess
) -> None:
    tenant = new_account(server.data_dir)
    app_id = await make_app(http, tenant)
    people = {
        "ann": {"attributes": {"c_plan": "pro"}, "language": "nl", "country": "NL"},
        "bob": {"attributes": {"c_plan": "free"}, "language": "en-GB", "country": "GB"},
        "cat": {"attributes": {"c_plan": "pro"}, "language": "pt-BR", "country": "BR"},
    }
    tokens: dict[str, str] = {}
    for name, profile in people.items():
        await subscriber(http, tenant, app_id, identifiers={"external_id": name}, **profile)
        tokens[name] = (await app_device(http, tenant, app_id, external_id=name))["device_token"]
    translations = {
        "default_language": "en",
        "items": [
            {"language": "en", "title": "Sale", "message": "Everything half price"},
            {"language": "nl", "title": "Uitverkoop", "message": "Alles halve prijs"},
            {"language": "pt", "title": "Promoção", "message": "Tudo pela metade"},
        ],
    }
    resp = await send(
        http,
        tenant,
        {
            "audience": {"attributes": [{"name": "c_plan", "values": ["pro"]}]},
            "translations": translations,
            "campaign": {"id": "summer", "name": "Summer sale"},
        },
    )
    assert resp.status_code == 201, resp.text
    notification_id = resp.json()["id"]
    await wait_fanned_out(http, tenant, [notification_id])
    got = {name: await polled(http, token) for name, token in tokens.items()}
    assert [(n["title"], n["message"]) for n in got["ann"]] == [("Uitverkoop", "Alles halve prijs")]
    assert [(n["title"], n["message"]) for n in got["cat"]] == [("Promoção", "Tudo pela metade")]
    assert got["bob"] == []
    by_identifier = await send(
        http,
        tenant,
        {"audience": {"subscribers": [{"external_id": "bob"}, {"external_id": "nobody"}]}},
    )
    await wait_fanned_out(http, tenant, [by_identifier.json()["id"]])
    assert [n["id"] for n in await polled(http, tokens["bob"])] == [by_identifier.json()["id"]]
    invalid = await send(http, tenant, {"audience": {"countries": ["Neverland"]}})
    assert invalid.status_code == 400
    assert "country" in invalid.json()["error"]["message"]


async def test_an_idempotency_key_sends_once(
    http: httpx2.AsyncClient, server: ServerProcess
) -> None:
    tenant = new_account(server.data_dir)
    app_id = await make_app(http, tenant)
    token = (await app_device(http, tenant, app_id))["device_token"]
    answers = await asyncio.gather(
        *(
            send(http, tenant, {"title": "once"}, **{"Idempotency-Key": "order-17"})
            for _ in range(5)
        )
    )
    assert {a.status_code for a in answers} == {201}, [a.text for a in answers]
    assert len({a.json()["id"] for a in answers}) == 1
    await wait_fanned_out(http, tenant, [answers[0].json()["id"]])
    assert len(await polled(http, token)) == 1
    other = await send(http, tenant, {"title": "twice?"}, **{"Idempotency-Key": "order-17"})
    assert other.status_code == 409, other.text
    assert "Idempotency-Key" in other.json()["error"]["message"]


async def test_a_send_at_a_later_time_waits_until_then(
    http: httpx2.AsyncClient, server: ServerProcess
) -> None:
    tenant = new_account(server.data_dir)
    app_id = await make_app(http, tenant)
    token = (await app_device(http, tenant, app_id))["device_token"]
    when = time.time() + 2
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(when)) + f".{int(when % 1 * 1000):03d}Z"
    resp = await send(http, tenant, {"send_at": stamp})
    assert resp.status_code == 201, resp.text
    assert await polled(http, token) == []
    await asyncio.sleep(max(0.0, when - time.time()) + 1.5)
    assert [n["id"] for n in await polled(http, token)] == [resp.json()["id"]]


async def test_api_keys_are_created_once_listed_and_revoked(
    http: httpx2.AsyncClient, server: ServerProcess
) -> None:
    tenant = new_account(server.data_dir)
    app_id = await make_app(http, tenant)
    created = await http.post(
        "/api/v1/keys",
        headers=tenant.bearer,
        json={"kind": "insider-mobile", "app_id": app_id, "per_minute": 10},
    )
    assert created.status_code == 201, created.text
    key = created.json()
    assert key["key"].startswith("pgk_") and key["ip_allowlist"] == ["127.0.0.1/32"]
    assert key["partner_id"] == str(key["company_id"])
    listed = (await http.get("/api/v1/keys", headers=tenant.bearer)).json()["keys"]
    assert [k["id"] for k in listed] == [key["id"]] and "key" not in listed[0]
    updated = await http.patch(
        f"/api/v1/keys/{key['id']}",
        headers=tenant.bearer,
        json={"ip_allowlist": ["10.0.0.0/8", "192.0.2.1"], "per_minute": None},
    )
    assert updated.json()["ip_allowlist"] == ["10.0.0.0/8", "192.0.2.1/32"]
    assert updated.json()["per_minute"] is None
    wrong = await http.post("/api/v1/keys", headers=tenant.bearer, json={"kind": "insider-web"})
    assert wrong.status_code == 400 and "belongs to an app" in wrong.json()["error"]["message"]
    # A native key acts for its account, like the user token, until it is revoked.
    native = (
        await http.post("/api/v1/keys", headers=tenant.bearer, json={"kind": "native"})
    ).json()
    as_key = {"Authorization": f"Bearer {native['key']}"}
    assert (await http.get("/api/v1/apps", headers=as_key)).json()["apps"][0]["id"] == app_id
    revoked = await http.delete(f"/api/v1/keys/{native['id']}", headers=tenant.bearer)
    assert revoked.json()["revoked_at"] is not None
    await asyncio.sleep(1.1)
    assert (await http.get("/api/v1/apps", headers=as_key)).status_code == 401


async def test_the_cli_creates_lists_updates_and_revokes_keys(
    http: httpx2.AsyncClient, server: ServerProcess
) -> None:
    tenant = new_account(server.data_dir)
    app_id = await make_app(http, tenant)
    made = await asyncio.to_thread(
        run_cli,
        ["key", "create", "--app", app_id, "--kind", "push-api-v2", "--ip", "10.0.0.0/8",
         "--per-minute", "120", "--json"],
        server.data_dir,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    key = json.loads(made.stdout)
    assert key["key"].startswith("pgk_") and key["ip_allowlist"] == ["10.0.0.0/8"]
    account = str(key["company_id"])
    listed = await asyncio.to_thread(
        run_cli, ["key", "list", "--account", account, "--json"], server.data_dir
    )
    assert [json.loads(line)["id"] for line in listed.stdout.splitlines()] == [key["id"]]
    updated = await asyncio.to_thread(
        run_cli,
        ["key", "update", str(key["id"]), "--account", account, "--any-ip", "--json"],
        server.data_dir,
    )
    assert json.loads(updated.stdout)["ip_allowlist"] is None
    revoked = await asyncio.to_thread(
        run_cli, ["key", "revoke", str(key["id"]), "--account", account], server.data_dir
    )
    assert revoked.returncode == 0 and "revoked" in revoked.stdout
    missing = await asyncio.to_thread(
        run_cli, ["key", "create", "--kind", "push-express"], server.data_dir
    )
    assert missing.returncode == 2 and "--account" in missing.stderr
