"""Device registration for every platform through the native API, against a real server:
addresses, owner identifiers, re-registration, exact error messages, tenant isolation, and
docs/devices.md run as written."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx2
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from e2e_support import (
    ServerFactory,
    Tenant,
    add_app,
    client_for,
    deliveries,
    latest_notification_id,
    make_tenant,
    new_account,
    post_ok,
)

from pushgate.config import load_settings
from pushgate.crypto import SecretBox
from pushgate.services.devices import DeviceService
from pushgate.storage.database import open_database
from pushgate.testing.server import ServerProcess, cli_env, create_account

ROOT = Path(__file__).resolve().parents[2]


def apns_token() -> str:
    return secrets.token_hex(32)


def fcm_token() -> str:
    return secrets.token_urlsafe(16) + ":APA91b" + secrets.token_urlsafe(120)


def hms_token() -> str:
    return "IQAAAACy0" + base64.b64encode(secrets.token_bytes(60)).decode()


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def web_subscription(endpoint: str | None = None) -> dict[str, Any]:
    point = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
    )
    return {
        "endpoint": endpoint or f"https://push.example.com/wpush/v2/{secrets.token_urlsafe(32)}",
        "expirationTime": None,
        "keys": {"p256dh": b64(point), "auth": b64(secrets.token_bytes(16))},
    }


def json_values(text: str) -> list[Any]:
    """Every JSON value in ``text`` (curl prints them without newlines in between)."""
    decoder, values, index = json.JSONDecoder(), [], 0
    while index < len(text.rstrip()):
        value, index = decoder.raw_decode(text, index)
        values.append(value)
        while index < len(text) and text[index].isspace():
            index += 1
    return values


async def wait_deliveries(
    http: httpx2.AsyncClient, tenant: Tenant, notification_id: int, count: int
) -> list[dict[str, Any]]:
    """The notification's deliveries, once there are ``count`` (the fan-out may run after the
    send was answered)."""
    deadline = time.monotonic() + 10
    while True:
        rows = await deliveries(http, tenant, notification_id)
        if len(rows) >= count or time.monotonic() > deadline:
            assert len(rows) == count, rows
            return rows
        await asyncio.sleep(0.05)


async def with_app(http: httpx2.AsyncClient, tenant: Tenant, body: Any) -> Any:
    """A push device's body with the tenant's app (made the first time): push devices belong
    to an app."""
    platform = body.get("platform") if isinstance(body, dict) else None
    if isinstance(platform, str) and platform != "channel" and "app_id" not in body:
        if not tenant.app_id:
            await add_app(http, tenant)
        body = {**body, "app_id": tenant.app_id}
    return body


async def register(
    http: httpx2.AsyncClient, tenant: Tenant, body: dict[str, Any], status: int = 201
) -> dict[str, Any]:
    body = await with_app(http, tenant, body)
    response = await http.post("/api/v1/devices", headers=tenant.bearer, json=body)
    assert response.status_code == status, response.text
    device: dict[str, Any] = response.json()
    return device


async def rejected(http: httpx2.AsyncClient, tenant: Tenant, body: dict[str, Any]) -> str:
    body = await with_app(http, tenant, body)
    response = await http.post("/api/v1/devices", headers=tenant.bearer, json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_input"
    message: str = error["message"]
    return message


async def listed(http: httpx2.AsyncClient, tenant: Tenant) -> list[dict[str, Any]]:
    response = await http.get("/api/v1/devices", headers=tenant.bearer)
    assert response.status_code == 200, response.text
    devices: list[dict[str, Any]] = response.json()["devices"]
    return devices


async def test_every_platform_registers_and_lists_without_its_address(
    http: httpx2.AsyncClient, server: ServerProcess
) -> None:
    tenant = new_account(server.data_dir)
    ios, android, huawei, web = apns_token(), fcm_token(), hms_token(), web_subscription()
    bodies = [
        {"platform": "channel", "name": "laptop"},
        {"platform": "ios", "token": ios.upper(), "timezone": "europe/amsterdam"},
        {"platform": "android", "token": android, "timezone": "+03:00", "language": "pt-BR"},
        {"platform": "huawei", "token": huawei, "name": "Mate"},
        {"platform": "web", "subscription": web, "language": "en"},
    ]
    registered = [await register(http, tenant, body) for body in bodies]
    assert [d["platform"] for d in registered] == ["channel", "ios", "android", "huawei", "web"]
    assert all(d["device_token"].startswith("dvt_") and d["enabled"] for d in registered)
    assert [d["address_hint"] for d in registered] == [
        None,
        "…" + ios[-8:],
        "…" + android[-8:],
        "…" + huawei[-8:],
        "https://push.example.com",
    ]
    assert registered[1]["timezone"] == "Europe/Amsterdam"
    assert registered[2]["timezone"] == "+03:00" and registered[2]["language"] == "pt-BR"

    response = await http.get("/api/v1/devices", headers=tenant.bearer)
    assert response.status_code == 200
    devices = response.json()["devices"]
    assert [d["id"] for d in devices] == [d["id"] for d in registered]
    for device, answer in zip(devices, registered, strict=True):
        assert "device_token" not in device
        assert device == {key: value for key, value in answer.items() if key != "device_token"}
    for secret in (ios, ios.upper(), android, huawei, web["keys"]["p256dh"], web["endpoint"]):
        assert secret not in response.text
    assert set(devices[0]) >= {"timezone", "email", "phone_number", "uuid", "address_hint"}


async def test_registering_the_same_address_again_updates_the_device(
    http: httpx2.AsyncClient, server: ServerProcess
) -> None:
    tenant = new_account(server.data_dir)
    token = apns_token()
    first = await register(
        http, tenant, {"platform": "ios", "token": token, "language": "nl", "name": "phone"}
    )
    again = await register(
        http,
        tenant,
        {"platform": "ios", "token": token.upper(), "timezone": "Asia/Tokyo"},
        status=200,
    )
    assert again["id"] == first["id"]
    assert again["device_token"] != first["device_token"]
    # What the re-registration left out stays; what it sent replaces.
    assert (again["language"], again["name"], again["timezone"]) == ("nl", "phone", "Asia/Tokyo")
    assert again["last_seen_at"] is not None
    assert [d["id"] for d in await listed(http, tenant)] == [first["id"]]

    # The same token on another platform is another device.
    other = await register(http, tenant, {"platform": "huawei", "token": token})
    assert other["id"] != first["id"]

    # A browser that renews its keys keeps its device (found by endpoint); the keys change.
    sub = web_subscription()
    web = await register(http, tenant, {"platform": "web", "subscription": sub})
    renewed = web_subscription(endpoint=sub["endpoint"])
    web_again = await register(
        http, tenant, {"platform": "web", "subscription": renewed}, status=200
    )
    assert web_again["id"] == web["id"]
    assert len(await listed(http, tenant)) == 3


async def test_concurrent_registrations_of_one_address_make_one_device(
    http: httpx2.AsyncClient, server: ServerProcess
) -> None:
    tenant = new_account(server.data_dir)
    await add_app(http, tenant)
    body = {
        "platform": "android",
        "app_id": tenant.app_id,
        "token": fcm_token(),
        "external_id": "u-concurrent",
    }
    responses = await asyncio.gather(
        *(http.post("/api/v1/devices", headers=tenant.bearer, json=body) for _ in range(8))
    )
    assert sorted(r.status_code for r in responses) == [200] * 7 + [201]
    assert len({r.json()["id"] for r in responses}) == 1
    assert len(await listed(http, tenant)) == 1


async def test_a_disabled_device_is_enabled_again_by_registering_it(
    http: httpx2.AsyncClient, server: ServerProcess
) -> None:
    tenant = new_account(server.data_dir)
    token = fcm_token()
    device = await register(http, tenant, {"platform": "android", "token": token})

    # What a transport does on TokenInvalid: DeviceService.disable, here on the server's
    # database from this process.
    settings = load_settings(data_dir=server.data_dir)
    db = open_database(settings.resolved_database_url)
    try:
        service = DeviceService(db, SecretBox(settings.resolved_secret_key()))
        assert await service.disable(device["id"], "TokenInvalid: Unregistered") is True
        assert await service.disable(device["id"], "again") is False
        addresses = await service.addresses([device["id"], 10**12])
        assert list(addresses) == [device["id"]]
        address = addresses[device["id"]]
        assert (address.platform, address.address, address.enabled) == ("android", token, False)
    finally:
        await db.dispose()

    disabled = (await listed(http, tenant))[0]
    assert disabled["enabled"] is False
    assert disabled["disabled_reason"] == "TokenInvalid: Unregistered"
    again = await register(http, tenant, {"platform": "android", "token": token}, status=200)
    assert again["id"] == device["id"]
    assert again["enabled"] is True and again["disabled_reason"] is None


async def test_owner_identifiers_find_one_subscriber(
    http: httpx2.AsyncClient, server: ServerProcess
) -> None:
    tenant = new_account(server.data_dir)
    phone = await register(
        http,
        tenant,
        {
            "platform": "ios",
            "token": apns_token(),
            "external_id": "user-42",
            "email": "Ann@Example.COM",
        },
    )
    assert phone["email"] == "Ann@example.com"
    # Found by e-mail; the subscriber gets the phone number and uuid it lacked.
    browser = await register(
        http,
        tenant,
        {
            "platform": "web",
            "subscription": web_subscription(),
            "email": "Ann@example.com",
            "phone_number": "+31612345678",
            "uuid": "123E4567-E89B-12D3-A456-426614174000",
        },
    )
    assert browser["external_id"] == "user-42"
    owner = {
        "external_id": "user-42",
        "email": "Ann@example.com",
        "phone_number": "+31612345678",
        "uuid": "123e4567-e89b-12d3-a456-426614174000",
    }
    # The external id wins over an e-mail address of someone else; identifiers the subscriber
    # has already are never replaced.
    tablet = await register(
        http,
        tenant,
        {"platform": "android", "token": fcm_token(), "external_id": "user-42", "email": "x@y.io"},
    )
    for device in (*(await listed(http, tenant)), tablet):
        assert {key: device[key] for key in owner} == owner

    # Nothing matches: a new subscriber.
    stranger = await register(http, tenant, {"platform": "channel", "phone_number": "+4930123456"})
    assert stranger["external_id"] is None and stranger["email"] is None

    # An anonymous device re-registered with identifiers that match nobody takes them.
    token = hms_token()
    anonymous = await register(http, tenant, {"platform": "huawei", "token": token})
    assert anonymous["external_id"] is None
    named = await register(
        http,
        tenant,
        {"platform": "huawei", "token": token, "external_id": "user-7"},
        status=200,
    )
    assert named["external_id"] == "user-7"
    # ...and a re-registration without identifiers keeps the owner.
    kept = await register(http, tenant, {"platform": "huawei", "token": token}, status=200)
    assert kept["external_id"] == "user-7"


@pytest.fixture(scope="module")
def rejecting_tenant(server: ServerProcess) -> Tenant:
    """One account for every rejected registration: none of them may add a device."""
    return new_account(server.data_dir)


NOT_ON_CURVE = b64(b"\x04" + b"\x01" * 64)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            {"platform": "ios"},
            "Invalid request: token is required for platform ios: the APNs device token "
            "(hexadecimal)",
        ),
        (
            {"platform": "android"},
            "Invalid request: token is required for platform android: the FCM registration token",
        ),
        (
            {"platform": "huawei", "subscription": {"endpoint": "https://x.io"}},
            "Invalid request: subscription is only for platform web; send the huawei device's "
            "address as token: the HMS push token",
        ),
        (
            {"platform": "web", "token": "ab" * 32},
            "Invalid request: token is not used for platform web: send the browser's "
            "PushSubscription as subscription",
        ),
        (
            {"platform": "web"},
            "Invalid request: subscription is required for platform web: the browser's "
            'PushSubscription as JSON, {"endpoint": "https://...", "keys": {"p256dh": "...", '
            '"auth": "..."}}',
        ),
        (
            {"platform": "channel", "token": "ab" * 32},
            "Invalid request: token is not used for platform channel: channel devices have no "
            "provider address; leave it out",
        ),
        (
            {"platform": "ios", "token": "<" + "ab" * 32 + ">"},
            "Invalid request: token must be the APNs device token in hexadecimal (0-9, a-f); "
            "found '<' at character 1 (send the token's bytes as one hex string, without "
            "spaces or angle brackets)",
        ),
        (
            {"platform": "ios", "token": "ab" * 31},
            "Invalid request: token must be an APNs device token of an even number of 64 to "
            "200 hexadecimal digits; got 62 digits",
        ),
        (
            {"platform": "android", "token": "a" * 99},
            "Invalid request: token must be the FCM registration token of 100 to 4096 "
            "characters; got 99 characters",
        ),
        (
            {"platform": "android", "token": "a" * 120 + "/b"},
            "Invalid request: token must be the FCM registration token, which uses only "
            "letters, digits, '_', '-' and ':'; found '/' at character 121",
        ),
        (
            {"platform": "huawei", "token": "short"},
            "Invalid request: token must be the HMS push token of 32 to 4096 characters; "
            "got 5 characters",
        ),
        (
            {"platform": "web", "subscription": "https://push.example.com/x"},
            "Invalid request: subscription: Input should be a valid dictionary",
        ),
        (
            {"platform": "web", "subscription": {**web_subscription(), "endpoint": "http://x.io"}},
            "Invalid request: subscription.endpoint must be an https:// URL; got http://",
        ),
        (
            {
                "platform": "web",
                "subscription": {
                    "endpoint": "https://push.example.com/1",
                    "keys": {"p256dh": NOT_ON_CURVE, "auth": b64(b"0" * 16)},
                },
            },
            "Invalid request: subscription.keys.p256dh is not a point on the P-256 curve",
        ),
        (
            {
                "platform": "web",
                "subscription": {
                    "endpoint": "https://push.example.com/1",
                    "keys": {"p256dh": web_subscription()["keys"]["p256dh"], "auth": "AAAA"},
                },
            },
            "Invalid request: subscription.keys.auth must decode to 16 bytes; got 3 bytes",
        ),
        (
            {"platform": "web", "subscription": {"endpoint": "https://push.example.com/1"}},
            "Invalid request: subscription.keys must be an object with the subscription's "
            "p256dh and auth keys",
        ),
        (
            {"platform": "channel", "timezone": "Mars/Olympus"},
            "Invalid request: timezone must be an IANA time zone name such as "
            "Europe/Amsterdam, or a fixed offset such as +03:00; got 'Mars/Olympus'",
        ),
        (
            {"platform": "channel", "phone_number": "06 12345678"},
            "Invalid request: phone_number must be in international form with its country "
            "code, e.g. +31612345678",
        ),
        (
            {"platform": "channel", "email": "ann.example.com"},
            "Invalid request: email must be an address like ann@example.com, with exactly one '@'",
        ),
        (
            {"platform": "channel", "uuid": "not-a-uuid"},
            "Invalid request: uuid must be a UUID such as 123e4567-e89b-12d3-a456-426614174000",
        ),
        (
            {"platform": "fax"},
            "Invalid request: platform: Input should be 'channel', 'ios', 'android', 'huawei' "
            "or 'web'",
        ),
    ],
)
async def test_malformed_registrations_say_what_to_fix(
    http: httpx2.AsyncClient, rejecting_tenant: Tenant, body: dict[str, Any], message: str
) -> None:
    assert await rejected(http, rejecting_tenant, body) == message
    assert await listed(http, rejecting_tenant) == []


async def test_devices_and_addresses_are_per_account(
    http: httpx2.AsyncClient, server: ServerProcess
) -> None:
    one, two = new_account(server.data_dir), new_account(server.data_dir)
    token = apns_token()
    first = await register(http, one, {"platform": "ios", "token": token, "external_id": "u1"})
    # The same address in another account is that account's own device.
    second = await register(http, two, {"platform": "ios", "token": token, "external_id": "u1"})
    assert second["id"] != first["id"]
    assert [d["id"] for d in await listed(http, one)] == [first["id"]]
    assert [d["id"] for d in await listed(http, two)] == [second["id"]]
    again = await register(http, two, {"platform": "ios", "token": token}, status=200)
    assert again["id"] == second["id"]
    unauthorized = await http.post("/api/v1/devices", json={"platform": "ios", "token": token})
    assert unauthorized.status_code == 401
    assert unauthorized.json()["error"]["code"] == "unauthorized"


async def test_devices_doc_runs_as_written(
    http: httpx2.AsyncClient, server: ServerProcess, tmp_path: Path
) -> None:
    account = create_account(server.data_dir, "docs-devices")
    tenant = Tenant(data_dir=server.data_dir, user_token=account["user_token"])
    await add_app(http, tenant)
    resp = await http.post(
        "/v1/events/add",
        headers=tenant.app_headers,
        json={"title": "signups", "trackers": ["email", "country"], "message": "{email} joined"},
    )
    assert resp.status_code == 201, resp.text

    markdown = (ROOT / "docs" / "devices.md").read_text()
    registering, observing = markdown.split("## 6. ", 1)
    env = cli_env(server.data_dir)
    env.update(
        PUSHGATE=server.url,
        USER_TOKEN=tenant.user_token,
        ACCOUNT_ID=str(account["id"]),
        APP_ID=tenant.app_id,
        PATH=str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""),
    )

    def run_blocks(text: str) -> list[str]:
        blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.DOTALL)
        script = "set -euo pipefail\n" + "\necho '-----'\n".join(blocks)
        result = subprocess.run(
            ["bash", "-c", script],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        outputs = result.stdout.split("-----\n")
        assert len(outputs) == len(blocks)
        return outputs

    _setup, ios, android, huawei, web, again, error, listing = run_blocks(registering)
    for output, platform in ((ios, "ios"), (android, "android"), (huawei, "huawei"), (web, "web")):
        assert json.loads(output)["platform"] == platform
    assert json.loads(web)["address_hint"] == "https://fcm.googleapis.com"
    assert json.loads(web)["external_id"] == "user-42"
    assert json.loads(android)["email"] == "ann@example.com"
    assert json.loads(huawei)["external_id"] is None
    assert again.strip() == "200"
    assert json.loads(error)["error"]["message"].startswith(
        "Invalid request: token must be the APNs device token in hexadecimal"
    )
    devices = json.loads(listing)["devices"]
    assert [d["platform"] for d in devices] == ["ios", "android", "huawei", "web"]
    assert devices[0]["language"] == "en"
    assert [d["phone_number"] for d in devices] == [
        "+31612345678",
        "+31612345678",
        None,
        "+31612345678",
    ]

    await post_ok(http, tenant)
    await wait_deliveries(http, tenant, await latest_notification_id(http, tenant), 4)
    deliveries_out, filtered, counts, cli = run_blocks(observing)
    rows = json.loads(deliveries_out)["deliveries"]
    # The statuses depend on the transports (no provider credentials are configured here).
    assert sorted(row["transport"] for row in rows) == ["android", "huawei", "ios", "web"]
    page = json.loads(filtered)["deliveries"]
    assert len(page) <= 2 and all(row["status"] == "queued" for row in page)
    account_counts, app_counts = json_values(counts)
    assert account_counts["total"] == 4 and account_counts["app_id"] is None
    assert app_counts["app_id"] == tenant.app_id and app_counts["total"] == 4
    assert "Deliveries of notification" in cli and "transport" in cli
    assert f'"app_id":"{tenant.app_id}"' in cli and '"total":4' in cli


async def test_make_tenant_still_registers_channel_devices(
    http: httpx2.AsyncClient, server: ServerProcess
) -> None:
    """The existing helpers keep working: a channel device with only platform and name."""
    tenant = await make_tenant(http, server.data_dir)
    device = await register(http, tenant, {"platform": "channel", "name": "x"})
    assert device["address_hint"] is None and device["timezone"] is None


async def test_registration_on_postgresql(
    make_server: ServerFactory, postgres_database_url: str, tmp_path: Path
) -> None:
    """The same rules on PostgreSQL, where concurrent registrations of one address or one
    owner are serialized by advisory locks instead of SQLite's single writer."""
    env = {"PUSHGATE_DATABASE_URL": postgres_database_url}
    srv = make_server(tmp_path / "pg-data", env)
    account = create_account(srv.data_dir, "pg", env)
    tenant = Tenant(data_dir=srv.data_dir, user_token=account["user_token"])
    async with client_for(srv) as client:
        await add_app(client, tenant)
        token = apns_token()
        body = {
            "platform": "ios",
            "app_id": tenant.app_id,
            "token": token,
            "email": "pg@example.com",
            "timezone": "UTC",
        }
        responses = await asyncio.gather(
            *(client.post("/api/v1/devices", headers=tenant.bearer, json=body) for _ in range(8))
        )
        assert sorted(r.status_code for r in responses) == [200] * 7 + [201], [
            r.text for r in responses
        ]
        # Different addresses, one owner: one subscriber gets every identifier.
        owners = await asyncio.gather(
            *(
                client.post(
                    "/api/v1/devices",
                    headers=tenant.bearer,
                    json={
                        "platform": "android",
                        "app_id": tenant.app_id,
                        "token": fcm_token(),
                        "email": "pg@example.com",
                        "external_id": "pg-user",
                    },
                )
                for _ in range(6)
            )
        )
        assert {r.status_code for r in owners} == {201}
        devices = await listed(client, tenant)
        assert len(devices) == 7
        assert {(d["email"], d["external_id"]) for d in devices} == {("pg@example.com", "pg-user")}
        assert devices[0]["address_hint"] == "…" + token[-8:]
        assert (await rejected(client, tenant, {"platform": "web"})).startswith(
            "Invalid request: subscription is required for platform web"
        )
