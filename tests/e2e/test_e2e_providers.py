"""End to end through the providers' wire protocols: a real server process sends to the local
fake APNs (HTTP/2), FCM, HMS and Web Push services of ``pushgate.testing``, which verify
signatures and decrypt payloads; faults prove retries, Retry-After, expiry and token
invalidation."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest
from e2e_support import Fakes, ServerFactory, Tenant, add_app, client_for, new_account

from pushgate.testing.server import ServerProcess


@pytest.fixture(scope="module")
def provider_server(
    fakes: Fakes, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    with ServerProcess(tmp_path_factory.mktemp("providers"), fakes.env()) as srv:
        yield srv


@pytest.fixture
async def http(provider_server: ServerProcess) -> Any:
    async with client_for(provider_server) as client:
        yield client


def ios_token() -> str:
    return secrets.token_hex(32)


def android_token() -> str:
    return secrets.token_urlsafe(120).replace("-", "_")[:152]


def huawei_token() -> str:
    return secrets.token_urlsafe(60)[:64].replace("-", "A").replace("_", "B")


async def register(
    http: httpx2.AsyncClient, tenant: Tenant, platform: str, address: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {"platform": platform, "app_id": tenant.app_id}
    if platform == "web":
        body["subscription"] = address
    else:
        body["token"] = address
    resp = await http.post("/api/v1/devices", headers=tenant.bearer, json=body)
    assert resp.status_code == 201, resp.text
    device: dict[str, Any] = resp.json()
    return device


async def setup_tenant(
    http: httpx2.AsyncClient, server: ServerProcess, fakes: Fakes, platforms: tuple[str, ...]
) -> Tenant:
    tenant = new_account(server.data_dir)
    await add_app(http, tenant)
    uploads = {
        "ios": lambda: fakes.apns.credentials(topic="com.example.app", environment="sandbox"),
        "android": fakes.fcm.credentials,
        "huawei": fakes.hms.credentials,
    }
    for platform in platforms:
        if platform in uploads:
            resp = await http.put(
                f"/api/v1/apps/{tenant.app_id}/credentials/{platform}",
                headers=tenant.bearer,
                json=uploads[platform](),
            )
            assert resp.status_code == 201, resp.text
    return tenant


async def web_subscription(http: httpx2.AsyncClient, tenant: Tenant, fakes: Fakes) -> Any:
    key = (await http.get(f"/api/v1/apps/{tenant.app_id}/web-push/public-key")).json()
    return fakes.webpush.subscribe(key["public_key"])


async def send(http: httpx2.AsyncClient, tenant: Tenant, **fields: Any) -> int:
    body = {"app_id": tenant.app_id, "message": "Your order shipped", **fields}
    resp = await http.post("/api/v1/notifications", headers=tenant.bearer, json=body)
    assert resp.status_code == 201, resp.text
    notification_id: int = resp.json()["id"]
    return notification_id


async def made(
    http: httpx2.AsyncClient, tenant: Tenant, notification_id: int, expected: int
) -> dict[int, dict[str, Any]]:
    """device id -> delivery, once the fan-out has made ``expected`` deliveries."""
    deadline = time.monotonic() + 10
    while True:
        resp = await http.get(
            f"/api/v1/notifications/{notification_id}/deliveries", headers=tenant.bearer
        )
        rows = resp.json()["deliveries"]
        if len(rows) >= expected or time.monotonic() > deadline:
            return {row["device_id"]: row for row in rows}
        await asyncio.sleep(0.05)


async def settled(
    http: httpx2.AsyncClient,
    tenant: Tenant,
    notification_id: int,
    expected: int,
    timeout: float = 20.0,
    *,
    channel_queued: bool = False,
) -> dict[int, dict[str, Any]]:
    """device id -> delivery, once ``expected`` deliveries have left ``queued`` (channel
    deliveries to devices that are not connected may stay queued, with ``channel_queued``)."""
    deadline = time.monotonic() + timeout
    while True:
        resp = await http.get(
            f"/api/v1/notifications/{notification_id}/deliveries", headers=tenant.bearer
        )
        rows = resp.json()["deliveries"]
        waiting = [
            row
            for row in rows
            if row["status"] == "queued" and not (channel_queued and row["transport"] == "channel")
        ]
        if len(rows) == expected and not waiting:
            return {row["device_id"]: row for row in rows}
        if time.monotonic() > deadline:
            pytest.fail(f"deliveries of {notification_id} did not settle: {rows}")
        await asyncio.sleep(0.1)


def received_by(items: list[Any], predicate: Any) -> list[Any]:
    return [item for item in list(items) if predicate(item)]


async def test_one_notification_reaches_all_four_platforms(
    http: httpx2.AsyncClient, provider_server: ServerProcess, fakes: Fakes
) -> None:
    tenant = await setup_tenant(http, provider_server, fakes, ("ios", "android", "huawei"))
    tokens = {"ios": ios_token(), "android": android_token(), "huawei": huawei_token()}
    subscription = await web_subscription(http, tenant, fakes)
    devices = {p: await register(http, tenant, p, t) for p, t in tokens.items()}
    devices["web"] = await register(http, tenant, "web", subscription)
    notification_id = await send(
        http,
        tenant,
        title="Shipped",
        data={"order": "A-17", "count": 2},
        image_url="https://cdn.example.com/box.png",
        deep_link="https://shop.example.com/orders/A-17",
        sound="default",
        badge=4,
        collapse_key="order-A-17",
        priority="high",
        ttl_seconds=3600,
    )
    rows = await settled(http, tenant, notification_id, 4)
    assert {row["status"] for row in rows.values()} == {"sent"}, rows
    assert {rows[d["id"]]["transport"] for d in devices.values()} == {
        "ios",
        "android",
        "huawei",
        "web",
    }
    marker = str(notification_id)

    (apns,) = received_by(fakes.apns.received, lambda r: r.token == tokens["ios"])
    assert apns.payload["aps"]["alert"] == {"title": "Shipped", "body": "Your order shipped"}
    assert apns.payload["aps"]["sound"] == "default" and apns.payload["aps"]["badge"] == 4
    assert apns.payload["pushgate_notification_id"] == marker
    assert apns.headers["apns-topic"] == "com.example.app"
    assert apns.headers["apns-priority"] == "10"
    assert apns.headers["apns-collapse-id"] == "order-A-17"

    (fcm,) = received_by(fakes.fcm.received, lambda r: r.token == tokens["android"])
    assert fcm.message["notification"]["title"] == "Shipped"
    assert fcm.message["notification"]["body"] == "Your order shipped"
    assert fcm.message["data"]["order"] == "A-17" and fcm.message["data"]["count"] == "2"
    assert fcm.message["data"]["pushgate_notification_id"] == marker
    assert fcm.message["android"]["collapse_key"] == "order-A-17"

    (hms,) = received_by(fakes.hms.received, lambda r: tokens["huawei"] in r.tokens)
    assert hms.message["android"]["notification"]["title"] == "Shipped"
    assert hms.message["android"]["notification"]["body"] == "Your order shipped"

    (web,) = received_by(fakes.webpush.received, lambda r: r.endpoint == subscription["endpoint"])
    shown = web.json()
    assert shown["title"] == "Shipped" and shown["body"] == "Your order shipped"
    assert shown["url"] == "https://shop.example.com/orders/A-17"
    assert shown["data"]["pushgate_notification_id"] == marker
    assert web.urgency == "high" and 3500 <= web.ttl <= 3600


async def test_platform_without_credentials_fails_with_invalid_certificate(
    http: httpx2.AsyncClient, provider_server: ServerProcess, fakes: Fakes
) -> None:
    tenant = await setup_tenant(http, provider_server, fakes, ())
    device = await register(http, tenant, "huawei", huawei_token())
    notification_id = await send(http, tenant)
    rows = await settled(http, tenant, notification_id, 1)
    assert rows[device["id"]]["status"] == "failed"
    assert rows[device["id"]]["reason"].startswith("InvalidCertificate")
    assert rows[device["id"]]["attempts"] == 1


async def test_retry_after_is_honoured_and_the_retry_succeeds(
    http: httpx2.AsyncClient, provider_server: ServerProcess, fakes: Fakes
) -> None:
    tenant = await setup_tenant(http, provider_server, fakes, ("ios",))
    token = ios_token()
    device = await register(http, tenant, "ios", token)
    fakes.apns.fail_next(429, retry_after=2, reason="TooManyRequests")
    started = time.monotonic()
    notification_id = await send(http, tenant)
    rows = await settled(http, tenant, notification_id, 1)
    assert rows[device["id"]]["status"] == "sent", rows
    assert rows[device["id"]]["attempts"] == 2
    attempts = received_by(fakes.apns.received, lambda r: r.token == token)
    assert len(attempts) >= 1
    assert time.monotonic() - started >= 2.0


async def test_dropped_connection_and_server_errors_are_retried(
    http: httpx2.AsyncClient, provider_server: ServerProcess, fakes: Fakes
) -> None:
    tenant = await setup_tenant(http, provider_server, fakes, ("android",))
    device = await register(http, tenant, "android", android_token())
    # Two drops: a request on a kept-alive connection that drops is sent once more on a new
    # connection at once (the connection may have gone stale); a second drop is an attempt
    # that failed.
    fakes.fcm.drop_next(2)
    fakes.fcm.fail_next(503, reason="UNAVAILABLE")
    notification_id = await send(http, tenant)
    rows = await settled(http, tenant, notification_id, 1)
    assert rows[device["id"]]["status"] == "sent", rows
    assert rows[device["id"]]["attempts"] >= 3


async def test_dead_addresses_disable_their_devices(
    http: httpx2.AsyncClient, provider_server: ServerProcess, fakes: Fakes
) -> None:
    tenant = await setup_tenant(http, provider_server, fakes, ("ios", "android", "huawei"))
    tokens = {"ios": ios_token(), "android": android_token(), "huawei": huawei_token()}
    subscription = await web_subscription(http, tenant, fakes)
    devices = {p: await register(http, tenant, p, t) for p, t in tokens.items()}
    devices["web"] = await register(http, tenant, "web", subscription)
    fakes.apns.unregister(tokens["ios"])
    fakes.fcm.unregister(tokens["android"])
    fakes.hms.unregister(tokens["huawei"])
    fakes.webpush.unregister(subscription["endpoint"])
    notification_id = await send(http, tenant)
    rows = await settled(http, tenant, notification_id, 4)
    assert {row["status"] for row in rows.values()} == {"failed"}, rows
    assert all(row["attempts"] == 1 for row in rows.values())
    listed = (await http.get("/api/v1/devices", headers=tenant.bearer)).json()["devices"]
    assert [d["enabled"] for d in listed] == [False] * 4
    assert all(d["disabled_reason"] for d in listed)
    # Later sends skip them: no new deliveries are made for disabled devices.
    again = await send(http, tenant)
    await asyncio.sleep(0.5)
    resp = await http.get(f"/api/v1/notifications/{again}/deliveries", headers=tenant.bearer)
    assert resp.json()["deliveries"] == []


async def test_a_notification_that_cannot_get_through_expires(
    http: httpx2.AsyncClient, provider_server: ServerProcess, fakes: Fakes
) -> None:
    tenant = await setup_tenant(http, provider_server, fakes, ())
    subscription = await web_subscription(http, tenant, fakes)
    device = await register(http, tenant, "web", subscription)
    fakes.webpush.fail_next(503, count=50)
    try:
        notification_id = await send(http, tenant, ttl_seconds=2)
        rows = await settled(http, tenant, notification_id, 1, timeout=15)
    finally:
        fakes.webpush.clear_faults()
    assert rows[device["id"]]["status"] == "expired", rows
    assert rows[device["id"]]["attempts"] >= 2


async def test_workers_share_provider_credentials_across_processes(
    make_server: ServerFactory, fakes: Fakes, tmp_path: Any
) -> None:
    """A second server on the same data dir (what a restart does) sends with the credentials
    the first stored."""
    first = make_server(env=fakes.env())
    async with client_for(first) as http:
        tenant = await setup_tenant(http, first, fakes, ("ios",))
        token = ios_token()
        await register(http, tenant, "ios", token)
    first.stop()
    second = make_server(data_dir=first.data_dir, env=fakes.env())
    async with client_for(second) as http:
        notification_id = await send(http, tenant)
        rows = await settled(http, tenant, notification_id, 1)
        assert [row["status"] for row in rows.values()] == ["sent"]


async def test_the_egress_policy_is_checked_again_when_connecting(
    fakes: Fakes, make_server: ServerFactory, tmp_path: Any
) -> None:
    """A device registered while its endpoint's address was allowed, sent to once that
    address is no longer allowed (DNS moved it, or the operator narrowed the policy), fails
    for good naming the policy, and no request reaches it; FCM's token endpoint likewise."""
    data_dir = tmp_path / "egress"
    allowed = make_server(data_dir, fakes.env())
    tenant = new_account(data_dir)
    async with client_for(allowed) as http:
        await add_app(http, tenant)
        android = fakes.fcm.credentials()
        resp = await http.put(
            f"/api/v1/apps/{tenant.app_id}/credentials/android", headers=tenant.bearer, json=android
        )
        assert resp.status_code == 201, resp.text
        web = await register(http, tenant, "web", await web_subscription(http, tenant, fakes))
        phone = await register(http, tenant, "android", android_token())
    allowed.stop()
    narrowed = {**fakes.env(), "PUSHGATE_EGRESS_ALLOW": ""}
    server = make_server(data_dir, narrowed)
    before = (len(fakes.webpush.received), fakes.fcm.token_fetches)
    async with client_for(server) as http:
        notification_id = await send(http, tenant)
        rows = await settled(http, tenant, notification_id, 2)
    failed = rows[web["id"]]
    assert failed["status"] == "failed", failed
    assert failed["attempts"] == 1
    assert failed["reason"].startswith("EgressRefused: 127.0.0.1 resolves to 127.0.0.1, a loopback")
    assert rows[phone["id"]]["status"] == "failed"
    assert "egress_allow" in rows[phone["id"]]["reason"]
    assert (len(fakes.webpush.received), fakes.fcm.token_fetches) == before


async def test_a_send_of_one_app_never_reaches_another_apps_devices(
    http: httpx2.AsyncClient, provider_server: ServerProcess, fakes: Fakes
) -> None:
    """Two apps of one account: a notification of app X (native send and Instapush post)
    reaches X's devices and the account's personal channel devices, never app Y's, on any
    platform; and Y's Huawei token, which Push Kit would call illegal for X, stays enabled."""
    x = await setup_tenant(http, provider_server, fakes, ("ios", "android", "huawei"))
    y = Tenant(data_dir=x.data_dir, user_token=x.user_token)
    await add_app(http, y, "app Y")
    for platform, upload in (
        ("ios", fakes.apns.credentials(topic="com.example.y", environment="sandbox")),
        ("android", fakes.fcm.credentials()),
        ("huawei", fakes.hms.credentials()),
    ):
        resp = await http.put(
            f"/api/v1/apps/{y.app_id}/credentials/{platform}", headers=y.bearer, json=upload
        )
        assert resp.status_code == 201, resp.text
    y_tokens = {"ios": ios_token(), "android": android_token(), "huawei": huawei_token()}
    y_devices = {p: await register(http, y, p, t) for p, t in y_tokens.items()}
    y_web = await web_subscription(http, y, fakes)
    y_devices["web"] = await register(http, y, "web", y_web)
    y_devices["channel"] = await register(http, y, "channel", None)
    x_channel = await register(http, x, "channel", None)
    personal = (
        await http.post("/api/v1/devices", headers=x.bearer, json={"platform": "channel"})
    ).json()
    fakes.hms.unregister(y_tokens["huawei"])  # what Push Kit answers for another app's token
    before = {
        "apns": len(fakes.apns.received),
        "fcm": len(fakes.fcm.received),
        "hms": len(fakes.hms.received),
        "webpush": len(fakes.webpush.received),
    }
    sent = await send(http, x)
    assert (
        await http.post(
            "/v1/events/add",
            headers=x.app_headers,
            json={
                "title": "signups",
                "trackers": ["email"],
                "message": "{email} joined",
            },
        )
    ).status_code == 201
    posted = await http.post(
        "/v1/post", headers=x.app_headers, json={"event": "signups", "trackers": {"email": "a"}}
    )
    assert posted.status_code == 201, posted.text
    for notification_id in (sent, int(posted.headers["x-pushgate-notification-id"])):
        rows = await made(http, x, notification_id, 2)
        assert set(rows) == {x_channel["id"], personal["id"]}, rows
    await asyncio.sleep(0.5)  # push deliveries to Y's devices would have been sent by now
    assert len(fakes.apns.received) == before["apns"]
    assert len(fakes.fcm.received) == before["fcm"]
    assert len(fakes.hms.received) == before["hms"]
    assert len(fakes.webpush.received) == before["webpush"]
    listed = (await http.get(f"/api/v1/devices?app_id={y.app_id}", headers=y.bearer)).json()
    assert {d["id"] for d in listed["devices"]} == {d["id"] for d in y_devices.values()}
    assert all(d["enabled"] for d in listed["devices"]), listed
    # Y's own send reaches Y's devices, with Y's credentials (APNs topic com.example.y).
    mine = await send(http, y)
    rows = await made(http, y, mine, 6)
    assert set(rows) == {d["id"] for d in y_devices.values()} | {personal["id"]}
    await settled(http, y, mine, 6, channel_queued=True)
    (apns,) = received_by(fakes.apns.received, lambda r: r.token == y_tokens["ios"])
    assert apns.headers["apns-topic"] == "com.example.y"
