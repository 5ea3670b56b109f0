"""Insider mobile push (POST /api/v2/notification/user) against a real server and the fake
providers: the reference's sample body verbatim, every documented error, the per-user result
classes, the key's IP allowlist and quota, and what APNs, FCM and HMS receive."""

from __future__ import annotations

import asyncio
import copy
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from e2e_support import Fakes, Tenant, client_for, new_account
from test_e2e_providers import (
    android_token,
    huawei_token,
    ios_token,
    received_by,
    send,
    settled,
    setup_tenant,
)

from pushgate.testing.server import ServerProcess

PATH = "/api/v2/notification/user"
# The reference's sample body, verbatim.
SAMPLE = Path(__file__).parent / "samples" / "insider-mobile-sample.json"


def sample_body() -> dict[str, Any]:
    body: dict[str, Any] = json.loads(SAMPLE.read_text())
    return body


@pytest.fixture(scope="module")
def insider_server(
    fakes: Fakes, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    with ServerProcess(tmp_path_factory.mktemp("insider"), fakes.env()) as srv:
        yield srv


@pytest.fixture
async def http(insider_server: ServerProcess) -> Any:
    async with client_for(insider_server) as client:
        yield client


async def api_key(http: httpx2.AsyncClient, tenant: Tenant, **fields: Any) -> str:
    resp = await http.post(
        "/api/v1/keys",
        headers=tenant.bearer,
        json={"kind": "insider-mobile", "app_id": tenant.app_id, **fields},
    )
    assert resp.status_code == 201, resp.text
    assert resp.json()["ip_allowlist"] == fields.get("ip_allowlist", ["127.0.0.1/32"])
    key: str = resp.json()["key"]
    return key


async def person(
    http: httpx2.AsyncClient, tenant: Tenant, identifiers: dict[str, str], **profile: Any
) -> dict[str, Any]:
    resp = await http.put(
        f"/api/v1/apps/{tenant.app_id}/subscribers",
        headers=tenant.bearer,
        json={"identifiers": identifiers, **profile},
    )
    assert resp.status_code in (200, 201), resp.text
    made: dict[str, Any] = resp.json()
    return made


async def device(
    http: httpx2.AsyncClient, tenant: Tenant, platform: str, token: str, **owner: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {"platform": platform, "app_id": tenant.app_id, "token": token, **owner}
    resp = await http.post("/api/v1/devices", headers=tenant.bearer, json=body)
    assert resp.status_code == 201, resp.text
    made: dict[str, Any] = resp.json()
    return made


def notification(identifiers: dict[str, str], **fields: Any) -> dict[str, Any]:
    return {
        "identifiers": identifiers,
        "camp_id": 7,
        "camp_name": "Order updates",
        "title": "Your order",
        "message": "It shipped",
        **fields,
    }


async def post(http: httpx2.AsyncClient, key: str, *items: dict[str, Any], **body: Any) -> Any:
    return await http.post(PATH, json={"api_key": key, "notifications": list(items), **body})


def notification_ids(resp: httpx2.Response) -> list[int]:
    header = resp.headers.get("x-pushgate-notification-ids", "")
    return [int(n) for n in header.split(",") if n]


async def wait_for(predicate: Any, what: str, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        await asyncio.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


async def test_the_reference_sample_body_reaches_the_users_last_active_iphone(
    http: httpx2.AsyncClient, insider_server: ServerProcess, fakes: Fakes
) -> None:
    tenant = await setup_tenant(http, insider_server, fakes, ("ios", "android"))
    key = await api_key(http, tenant)
    await person(
        http,
        tenant,
        {"email": "example@gmail.com"},
        language="en-US",
        attributes={"d_name": "Ann", "c_tier": "gold"},
    )
    older = android_token()
    await device(http, tenant, "android", older, email="example@gmail.com")
    token = ios_token()
    await device(http, tenant, "ios", token, email="example@gmail.com", model="iPhone15,2")
    body = sample_body()
    body["api_key"] = key
    resp = await http.post(PATH, json=body)
    assert resp.status_code == 200, resp.text
    answer = resp.json()
    assert answer["errors"] == {}
    (success,) = answer["successes"]
    assert success["INSIDER.email"] == "example@gmail.com"
    assert success["INSIDER.name"] == "Ann"
    assert success["INSIDER.platform"] == "ios"
    assert success["INSIDER.model"] == "iPhone15,2"
    assert success["INSIDER.device_token"] == token
    assert success["INSIDER.language"] == "en-US"
    assert success["INSIDER.push_optin"] is True
    assert success["INSIDER.carrier"] is None
    assert answer["optin_delivery_count"] == 1

    (sent,) = await wait_for(
        lambda: received_by(fakes.apns.received, lambda r: r.token == token), "the APNs push"
    )
    aps = sent.payload["aps"]
    # deliver_silently: a background push that wakes the app with the carousel's data.
    assert "alert" not in aps and aps["content-available"] == 1
    assert aps["thread-id"] == "13" and aps["badge"] == 1 and aps["sound"] == "sound_check"
    assert aps["mutable-content"] == 1
    assert sent.headers["apns-push-type"] == "background"
    assert sent.payload["ins_dl_internal"] == "https://www.deeplink.useinsider"
    rich = sent.payload["pushgate_rich"]
    assert rich["type"] == "carousel"
    assert [item["id"] for item in rich["items"]] == [1, 2, 3]
    assert rich["items"][1]["deep_links"] == {"your_deeplink_key": "value2"}
    assert rich["items"][0]["headline"] == "Title for the item 1"
    assert not received_by(fakes.fcm.received, lambda r: r.token == older)

    stats = await http.get(f"/api/v1/apps/{tenant.app_id}/campaigns/1", headers=tenant.bearer)
    assert stats.status_code == 200, stats.text
    assert stats.json()["name"] == "Your push notification campaign name goes here"
    assert stats.json()["notifications"] == 1 and stats.json()["stats"]["targeted"] == 1


async def test_android_and_huawei_get_their_options_and_the_carousel_as_data(
    http: httpx2.AsyncClient, insider_server: ServerProcess, fakes: Fakes
) -> None:
    tenant = await setup_tenant(http, insider_server, fakes, ("android", "huawei"))
    key = await api_key(http, tenant)
    fcm_token, hms_token = android_token(), huawei_token()
    await device(http, tenant, "android", fcm_token, external_id="u-android")
    await device(http, tenant, "huawei", hms_token, external_id="u-huawei")
    sample = sample_body()["notifications"][0]
    items = []
    for external_id in ("u-android", "u-huawei"):
        item = copy.deepcopy(sample)
        item["identifiers"] = {"INSIDER.external_id": external_id}
        item["advanced_push_payload"]["advanced_push_type"] = "Slider"
        items.append(item)
    resp = await post(http, key, *items)
    assert resp.status_code == 200, resp.text
    assert len(resp.json()["successes"]) == 2 and "optin_delivery_count" in resp.json()

    (fcm,) = await wait_for(
        lambda: received_by(fakes.fcm.received, lambda r: r.token == fcm_token), "the FCM send"
    )
    android = fcm.message["android"]
    assert android["notification"]["channel_id"] == "1"
    assert android["notification"]["sound"] == "sound_check"
    data = fcm.message["data"]
    assert data["ins_dl_internal"] == "https://www.deeplink.useinsider"
    assert json.loads(data["pushgate_rich"])["type"] == "slider"
    assert len(json.loads(data["pushgate_rich"])["items"]) == 3
    assert fcm.message["notification"]["image"] == "https://your_image_url.jpg"

    (hms,) = await wait_for(
        lambda: received_by(fakes.hms.received, lambda r: hms_token in r.tokens), "the HMS send"
    )
    assert hms.message["android"]["notification"]["channel_id"] == "1"
    hms_data = json.loads(hms.message["data"])
    assert hms_data["pushgate_rich"]["items"][2]["deep_links"] == {"your_deeplink_key": "value3"}
    assert hms_data["ins_dl_internal"] == "https://www.deeplink.useinsider"


async def test_a_silent_android_push_is_a_data_message(
    http: httpx2.AsyncClient, insider_server: ServerProcess, fakes: Fakes
) -> None:
    tenant = await setup_tenant(http, insider_server, fakes, ("android", "ios"))
    key = await api_key(http, tenant)
    fcm_token = android_token()
    await device(http, tenant, "android", fcm_token, external_id="quiet")
    resp = await post(
        http,
        key,
        notification(
            {"external_id": "quiet"},
            ios={"deliver_silently": True, "badge": 3},
            android={"deep_link": {"ins_dl_external": "https://shop.example.com/a"}},
        ),
    )
    assert resp.status_code == 200, resp.text
    (fcm,) = await wait_for(
        lambda: received_by(fakes.fcm.received, lambda r: r.token == fcm_token), "the FCM send"
    )
    assert fcm.message["notification"]["title"] == "Your order"
    assert fcm.message["data"]["ins_dl_external"] == "https://shop.example.com/a"
    assert fcm.message["apns"]["payload"]["aps"] == {"badge": 3, "content-available": 1}


async def test_each_user_lands_in_its_result_class(
    http: httpx2.AsyncClient, insider_server: ServerProcess, fakes: Fakes
) -> None:
    tenant = await setup_tenant(http, insider_server, fakes, ("ios",))
    key = await api_key(http, tenant)
    patched = await http.patch(
        f"/api/v1/apps/{tenant.app_id}", headers=tenant.bearer, json={"frequency_cap": 1}
    )
    assert patched.status_code == 200, patched.text
    await device(http, tenant, "ios", ios_token(), email="ok@example.com")
    await person(http, tenant, {"email": "out@example.com"}, optins={"push": False})
    await device(http, tenant, "ios", ios_token(), email="out@example.com")
    await person(http, tenant, {"email": "nodevice@example.com"})
    dead = ios_token()
    dead_device = await device(http, tenant, "ios", dead, email="dead@example.com")
    await device(http, tenant, "huawei", huawei_token(), email="nocert@example.com")
    await device(http, tenant, "ios", ios_token(), email="capped@example.com")

    fakes.apns.unregister(dead)
    first = await send(http, tenant, audience={"subscribers": [{"email": "dead@example.com"}]})
    rows = await settled(http, tenant, first, 1)
    assert rows[dead_device["id"]]["status"] == "failed"
    earlier = await send(http, tenant, audience={"subscribers": [{"email": "capped@example.com"}]})
    await settled(http, tenant, earlier, 1)

    resp = await post(
        http,
        key,
        notification({"INSIDER.email": "ok@example.com"}),
        notification({"email": "nobody@example.com"}),
        notification({"email": "out@example.com"}),
        notification({"email": "nodevice@example.com"}),
        notification({"email": "dead@example.com"}),
        notification({"email": "capped@example.com"}),
        notification({"email": "nocert@example.com"}),
        report_attributes=["INSIDER.email"],
    )
    assert resp.status_code == 200, resp.text
    answer = resp.json()
    assert answer["successes"] == [{"INSIDER.email": "ok@example.com"}]
    assert answer["errors"] == {
        "NoUserFound": [{"email": "nobody@example.com"}],
        "OptOut": [{"email": "out@example.com"}],
        "Unregistered": [{"email": "nodevice@example.com"}, {"email": "dead@example.com"}],
        "UserGloballyCapped": [{"email": "capped@example.com"}],
        "InvalidCertificate": [{"email": "nocert@example.com"}],
    }
    assert "optin_delivery_count" not in answer
    assert len(notification_ids(resp)) == 1

    alone = await post(http, key, notification({"email": "nocert@example.com"}))
    assert alone.status_code == 400
    assert alone.json() == {
        "error": "invalid_certificate",
        "message": "You do not have a validated certificate. Please check Certificate "
        "section under Insider's Settings.",
    }


def _errors() -> list[tuple[Any, str, str]]:
    base = notification({"email": "a@example.com"})
    aps_link = {**base, "ios": {"deep_link": {"ins_dl_json": '{"aps": {"alert": "x"}}'}}}
    item_aps = copy.deepcopy(sample_body()["notifications"][0])
    item_aps["advanced_push_payload"]["advanced_push_items"][0]["deep_links"] = {"aps": "x"}
    return [
        ([base] * 21, "invalid_notifications", "'notifications' can't have more than 20 objects"),
        ([], "invalid_notifications", "'notifications' is empty, add some notification objects"),
        ([aps_link], "blacklisted_deeplink", "deepLink can't contain 'aps' key"),
        ([item_aps], "blacklisted_deeplink", "deepLink can't contain 'aps' key"),
        (
            [{**base, "camp_id": 0}],
            "negative_integer",
            "camp_id' and/or 'channel_id' must be greater than zero",
        ),
        (
            [{**base, "android": {"channel_id": -3}}],
            "negative_integer",
            "camp_id' and/or 'channel_id' must be greater than zero",
        ),
        (
            [
                {
                    **base,
                    "advanced_push_payload": {
                        "advanced_push_type": "banner",
                        "advanced_push_items": [],
                    },
                }
            ],
            "invalid_advanced_push_type",
            "'advanced_push_type' must be either Carousel or Slider",
        ),
        (
            [{**base, "ttl": "1"}],
            "invalid_payload",
            "Can't parse payload, check your keys and data types",
        ),
    ]


async def test_every_documented_error_has_its_exact_code_and_message(
    http: httpx2.AsyncClient, insider_server: ServerProcess, fakes: Fakes
) -> None:
    tenant = await setup_tenant(http, insider_server, fakes, ("ios",))
    key = await api_key(http, tenant)
    for items, code, message in _errors():
        resp = await post(http, key, *items)
        assert resp.status_code == 400, (code, resp.text)
        assert resp.json()["error"] == code and resp.json()["message"] == message, resp.text
    not_json = await http.post(
        PATH, content=b"{not json", headers={"content-type": "application/json"}
    )
    assert not_json.status_code == 400
    assert not_json.json()["error"] == "invalid_payload"
    assert not_json.json()["message"] == "Can't parse payload, check your keys and data types"
    http_link = await post(
        http,
        key,
        notification(
            {"email": "a@example.com"}, android={"deep_link": {"ins_dl_internal": "http://x"}}
        ),
    )
    assert http_link.status_code == 400 and "https://" in http_link.json()["message"]
    missing = await post(http, key, {"identifiers": {"email": "a@example.com"}, "message": "x"})
    assert missing.status_code == 400 and "title" in missing.json()["message"]
    listed = await http.get("/api/v1/notifications?limit=5", headers=tenant.bearer)
    assert listed.json()["notifications"] == []


async def test_a_wrong_key_executes_nothing_and_the_key_limits_apply(
    http: httpx2.AsyncClient, insider_server: ServerProcess, fakes: Fakes
) -> None:
    tenant = await setup_tenant(http, insider_server, fakes, ("ios",))
    await device(http, tenant, "ios", ios_token(), email="a@example.com")
    item = notification({"email": "a@example.com"})
    wrong = await post(http, "not-a-key", item)
    assert wrong.status_code == 401 and wrong.json()["error"] == "unauthorized"
    elsewhere = await api_key(http, tenant, ip_allowlist=["10.1.2.0/24"])
    refused = await post(http, elsewhere, item)
    assert refused.status_code == 403 and "allowlist" in refused.json()["message"]
    listed = await http.get("/api/v1/notifications?limit=5", headers=tenant.bearer)
    assert listed.json()["notifications"] == []

    limited = await api_key(http, tenant, per_minute=2)
    for _ in range(2):
        assert (await post(http, limited, item)).status_code == 200
    over = await post(http, limited, item)
    assert over.status_code == 429 and over.json()["error"] == "rate_limit_exceeded"
    assert int(over.headers["retry-after"]) >= 1

    other = new_account(insider_server.data_dir)
    other_app = await http.post("/api/v1/apps", headers=other.bearer, json={"title": "x"})
    other.app_id = other_app.json()["id"]
    other_key = await api_key(http, other)
    # Another app's key finds none of this app's users.
    resp = await post(http, other_key, item)
    assert resp.json()["errors"] == {"NoUserFound": [{"email": "a@example.com"}]}
