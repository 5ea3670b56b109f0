"""The browser SDK against a real server process: its scripts (content types, the service
worker's scope header), the public browser key's endpoints (CORS, identities signed with the
app's secret, "opened" reports by device token), and the SDK's channel client run in
Chromium on a page of another origin (docs/browser.md)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx2
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from e2e_support import NO_THROTTLE, unique

from pushgate.testing.server import ServerProcess, create_account

SITE = "https://site.example"


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def identity(secret: str, identifiers: dict[str, str]) -> str:
    """What the site's server computes (docs/browser.md)."""
    message = "\n".join(f"{k}={identifiers[k]}" for k in sorted(identifiers))
    return hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()


class Site:
    """An account with an app, a browser key of it and a native bearer."""

    def __init__(self, server: ServerProcess) -> None:
        account = create_account(server.data_dir, unique("sdk"))
        self.bearer = {"Authorization": f"Bearer {account['user_token']}"}
        with http(server) as client:
            app = client.post("/api/v1/apps", headers=self.bearer, json={"title": "Site"})
            assert app.status_code == 201, app.text
            self.app_key, self.secret = app.json()["id"], app.json()["secret"]
            key = client.post(
                "/api/v1/keys",
                headers=self.bearer,
                json={"kind": "browser", "app_id": self.app_key, "name": "site pages"},
            )
            assert key.status_code == 201, key.text
            self.key = key.json()["key"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """This module's server takes web subscriptions of browsers on push.example.com only."""
    env = {**NO_THROTTLE, "PUSHGATE_BROWSER_PUSH_HOSTS": "push.example.com"}
    with ServerProcess(tmp_path_factory.mktemp("pushgate-data"), env) as srv:
        yield srv


def http(server: ServerProcess) -> httpx2.Client:
    return httpx2.Client(base_url=server.url, timeout=10.0, trust_env=False)


@pytest.fixture(scope="module")
def site(server: ServerProcess) -> Site:
    return Site(server)


def register(client: httpx2.Client, body: dict[str, Any]) -> httpx2.Response:
    """As the SDK does: a text/plain POST (no preflight) with the key in the body."""
    return client.post(
        "/sdk/v1/devices",
        content=json.dumps(body),
        headers={"Content-Type": "text/plain;charset=UTF-8", "Origin": SITE},
    )


def test_scripts_are_served_with_their_headers(server: ServerProcess) -> None:
    with http(server) as client:
        sdk = client.get("/sdk/pushgate.js")
        worker = client.get("/sdk/pushgate-sw.js")
    for resp in (sdk, worker):
        assert resp.status_code == 200
        assert resp.headers["content-type"] == "text/javascript; charset=utf-8"
        assert resp.headers["x-content-type-options"] == "nosniff"
    assert "Pushgate" in sdk.text and "subscribeWebPush" in sdk.text
    assert "notificationclick" in worker.text
    assert worker.headers["service-worker-allowed"] == "/"
    assert "service-worker-allowed" not in sdk.headers


def test_the_browser_key_registers_browsers_and_nothing_more(
    server: ServerProcess, site: Site
) -> None:
    with http(server) as client:
        preflight = client.options(
            "/sdk/v1/devices",
            headers={"Origin": SITE, "Access-Control-Request-Method": "POST"},
        )
        assert preflight.status_code == 204
        assert preflight.headers["access-control-allow-origin"] == "*"
        assert "x-pushgate-key" in preflight.headers["access-control-allow-headers"]

        vapid = client.get("/sdk/v1/vapid", params={"key": site.key})
        assert vapid.status_code == 200 and vapid.headers["access-control-allow-origin"] == "*"
        shown = client.get(f"/api/v1/apps/{site.app_key}/web-push/public-key", headers=site.bearer)
        assert vapid.json()["vapid_public_key"] == shown.json()["public_key"]

        # Anonymous: a device of its own subscriber.
        resp = register(client, {"key": site.key, "platform": "channel", "language": "nl"})
        assert resp.status_code == 201, resp.text
        assert resp.headers["access-control-allow-origin"] == "*"
        anonymous = resp.json()
        assert anonymous["device_token"].startswith("dvt_")

        # A web subscription, with the key in a header.
        point = (
            ec.generate_private_key(ec.SECP256R1())
            .public_key()
            .public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
        )
        subscription = {
            "endpoint": f"https://push.example.com/wpush/v2/{secrets.token_urlsafe(32)}",
            "keys": {"p256dh": b64(point), "auth": b64(secrets.token_bytes(16))},
        }
        # Only on the push services of browser_push_hosts.
        elsewhere = {**subscription, "endpoint": "https://collector.example.net/x"}
        resp = register(client, {"key": site.key, "platform": "web", "subscription": elsewhere})
        assert resp.status_code == 400 and "browser_push_hosts" in resp.text, resp.text
        resp = client.post(
            "/sdk/v1/devices",
            headers={"X-Pushgate-Key": site.key},
            json={"platform": "web", "subscription": subscription},
        )
        assert resp.status_code == 201, resp.text
        web = resp.json()
        assert web["platform"] == "web"

        # Naming a subscriber takes the identity the site's server signed.
        ids = {"external_id": unique("member")}
        for wrong in (None, "0" * 64, identity("not the secret", ids)):
            body = {"key": site.key, "platform": "channel", "identifiers": ids}
            if wrong is not None:
                body["identity"] = wrong
            resp = register(client, body)
            assert resp.status_code == 403, resp.text
            assert "identity" in resp.json()["error"]["message"]
        resp = register(
            client, {"key": site.key, "platform": "channel", "attributes": {"c_plan": "pro"}}
        )
        assert resp.status_code == 400 and "identifiers" in resp.text
        resp = register(
            client,
            {
                "key": site.key,
                "platform": "channel",
                "identifiers": ids,
                "identity": identity(site.secret, ids),
                "attributes": {"c_plan": "pro"},
            },
        )
        assert resp.status_code == 201, resp.text
        subscriber = client.get(
            f"/api/v1/subscribers/{resp.json()['subscriber_id']}", headers=site.bearer
        ).json()
        assert subscriber["identifiers"]["external_id"] == ids["external_id"]
        assert subscriber["attributes"]["c_plan"] == "pro"

        # Nothing else: not iOS, no unknown fields, no other key kind, no key.
        assert register(client, {"key": site.key, "platform": "ios"}).status_code == 400
        assert register(client, {"key": site.key, "app_id": "x"}).status_code == 400
        assert (
            register(client, {"key": site.key, "platform": "channel", "name": 5}).status_code == 400
        )
        smuggled = {"external_id": "a\nemail=ann@example.com"}
        resp = register(
            client,
            {
                "key": site.key,
                "platform": "channel",
                "identifiers": smuggled,
                "identity": identity(site.secret, smuggled),
            },
        )
        assert resp.status_code == 400 and "line break" in resp.text
        resp = register(
            client,
            {"key": site.key, "platform": "channel", "identifiers": ids, "identity": "é" * 64},
        )
        assert resp.status_code == 403, resp.text
        native = client.post(
            "/api/v1/keys", headers=site.bearer, json={"kind": "native", "name": "server"}
        ).json()["key"]
        for key in (native, "pgk_" + "0" * 40, None):
            resp = register(client, {"key": key, "platform": "channel"})
            assert resp.status_code == 401, resp.text
            assert resp.headers["access-control-allow-origin"] == "*"
        # The browser key does not open the native API.
        listed = client.get("/api/v1/devices", headers={"Authorization": f"Bearer {site.key}"})
        assert listed.status_code == 401

        # "opened" by the device's token (the anonymous channel device's: its delivery waits
        # for it, where the web device's would be retried against a push service that is not
        # reachable here, and a late retry's status may land after the report).
        sent = client.post(
            "/api/v1/notifications",
            headers=site.bearer,
            json={"app_id": site.app_key, "message": "opened later"},
        )
        notification_id = sent.json()["id"]
        deadline = time.monotonic() + 10
        opened = 0
        while opened == 0 and time.monotonic() < deadline:
            resp = client.post(
                "/sdk/v1/opened",
                content=json.dumps(
                    {"device_token": anonymous["device_token"], "ids": [notification_id]}
                ),
                headers={"Content-Type": "text/plain"},
            )
            assert resp.status_code == 200, resp.text
            opened = resp.json()["opened"]
            time.sleep(0.1)  # until the fan-out made the delivery
        assert opened == 1
        deliveries = client.get(
            f"/api/v1/notifications/{notification_id}/deliveries", headers=site.bearer
        ).json()["deliveries"]
        assert [d["status"] for d in deliveries if d["device_id"] == anonymous["id"]] == ["opened"]
        bad = client.post(
            "/sdk/v1/opened", json={"device_token": "dvt_" + "0" * 40, "ids": [notification_id]}
        )
        assert bad.status_code == 401


def test_a_page_of_another_origin_receives_through_the_sdk_channel(
    browser: Any, server: ServerProcess, site: Site
) -> None:
    """The site's page (another origin) loads /sdk/pushgate.js, registers as a named
    subscriber's channel device and receives what is sent to that subscriber. The page is
    served by a server of the test on another port: another origin on the same loopback."""
    html = f'<!doctype html><title>Site</title><script src="{server.url}/sdk/pushgate.js"></script>'

    class Page(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the standard library's name
            body = html.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    pages = ThreadingHTTPServer(("127.0.0.1", 0), Page)
    threading.Thread(target=pages.serve_forever, daemon=True).start()
    origin = f"http://127.0.0.1:{pages.server_address[1]}"
    context = browser.new_context()
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    try:
        page.goto(origin + "/")
        ids = {"external_id": unique("reader")}
        page.evaluate(
            """async ([key, ids, identity]) => {
                window.received = [];
                const pg = Pushgate.init({key: key});
                window.states = [];
                window.channel = await pg.connectChannel({
                    identifiers: ids, identity: identity,
                    onNotification: n => window.received.push(n),
                    onState: s => window.states.push(s),
                });
            }""",
            [site.key, ids, identity(site.secret, ids)],
        )
        page.wait_for_function("window.states.includes('connected')")
        with http(server) as client:
            sent = client.post(
                "/api/v1/notifications",
                headers=site.bearer,
                json={
                    "app_id": site.app_key,
                    "title": "For you",
                    "message": "only this reader",
                    "audience": {"subscribers": [ids]},
                },
            )
            assert sent.status_code == 201, sent.text
            notification_id = sent.json()["id"]
            page.wait_for_function("window.received.length > 0")
            received = page.evaluate("window.received")
            assert [(n["id"], n["message"]) for n in received] == [
                (notification_id, "only this reader")
            ]
            page.evaluate(f"window.channel.opened({notification_id})")
            deadline = time.monotonic() + 10
            statuses: list[str] = []
            while statuses != ["opened"] and time.monotonic() < deadline:
                time.sleep(0.1)
                deliveries = client.get(
                    f"/api/v1/notifications/{notification_id}/deliveries", headers=site.bearer
                ).json()["deliveries"]
                statuses = [d["status"] for d in deliveries]
        assert statuses == ["opened"]
        assert problems == []
    finally:
        context.close()
        pages.shutdown()
        pages.server_close()


def test_the_service_worker_shows_a_web_push_and_reports_its_click(
    browser: Any, server: ServerProcess, site: Site
) -> None:
    """/sdk/pushgate-sw.js registered for a whole origin (its Service-Worker-Allowed header
    lets a worker under /sdk/ take scope /), given a push message in the Web Push payload's
    format through Chromium's devtools protocol (no push service is reachable here): it shows
    the notification with the title, body and link; a click on it (dispatched in the worker:
    no devtools command clicks a notification) reports it opened with the device token that
    the SDK keeps in the origin's IndexedDB. The token is a channel device's: its delivery
    waits for it, where a web device's would be retried against a push service that is not
    reachable here (and a late retry's status may land after the report)."""
    with http(server) as client:
        resp = register(client, {"key": site.key, "platform": "channel"})
        assert resp.status_code == 201, resp.text
        device = resp.json()
        sent = client.post(
            "/api/v1/notifications",
            headers=site.bearer,
            json={"app_id": site.app_key, "title": "Order shipped", "message": "Tomorrow"},
        )
        notification_id = sent.json()["id"]
    context = browser.new_context()
    context.grant_permissions(["notifications"], origin=server.url)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        page.goto(server.url + "/")
        scope = page.evaluate(
            """async () => {
                const worker = "/sdk/pushgate-sw.js";
                const r = await navigator.serviceWorker.register(worker, {scope: "/"});
                await navigator.serviceWorker.ready;
                return r.scope;
            }"""
        )
        assert scope == server.url + "/"
        cdp = context.new_cdp_session(page)
        registrations: list[dict[str, Any]] = []
        cdp.on(
            "ServiceWorker.workerRegistrationUpdated",
            lambda event: registrations.extend(event["registrations"]),
        )
        cdp.send("ServiceWorker.enable")
        deadline = time.monotonic() + 10
        while not registrations and time.monotonic() < deadline:
            page.wait_for_timeout(100)  # events arrive while Playwright waits
        payload = {
            "title": "Order shipped",
            "body": "It arrives tomorrow",
            "url": "https://shop.example/orders/7",
            "data": {"pushgate_notification_id": str(notification_id), "order": "7"},
        }
        cdp.send(
            "ServiceWorker.deliverPushMessage",
            {
                "origin": server.url,
                "registrationId": registrations[0]["registrationId"],
                "data": json.dumps(payload),
            },
        )
        shown: list[Any] = []
        deadline = time.monotonic() + 10
        while not shown and time.monotonic() < deadline:
            page.wait_for_timeout(100)
            shown = page.evaluate(
                """async () => {
                    const r = await navigator.serviceWorker.ready;
                    return (await r.getNotifications()).map(n => [n.title, n.body, n.data]);
                }"""
            )
        assert shown == [
            [
                "Order shipped",
                "It arrives tomorrow",
                {"id": str(notification_id), "url": payload["url"]},
            ]
        ]
        # What subscribeWebPush stores for the worker, then a click in the worker.
        page.evaluate(
            """([server, token]) => new Promise((resolve, reject) => {
                const open = indexedDB.open("pushgate", 1);
                open.onupgradeneeded = () => open.result.createObjectStore("state");
                open.onsuccess = () => {
                    const tx = open.result.transaction("state", "readwrite");
                    tx.objectStore("state").put({server, token}, "device");
                    tx.oncomplete = resolve;
                    tx.onerror = () => reject(tx.error);
                };
            })""",
            [server.url, device["device_token"]],
        )
        (worker,) = context.service_workers
        worker.evaluate(
            """async () => {
                const [shown] = await self.registration.getNotifications();
                const click = new NotificationEvent("notificationclick", {notification: shown});
                self.dispatchEvent(click);  // its link's window needs a real click: refused
            }"""
        )
        with http(server) as client:
            deadline = time.monotonic() + 10
            statuses: list[str] = []
            while statuses != ["opened"] and time.monotonic() < deadline:
                page.wait_for_timeout(100)
                deliveries = client.get(
                    f"/api/v1/notifications/{notification_id}/deliveries", headers=site.bearer
                ).json()["deliveries"]
                statuses = [d["status"] for d in deliveries if d["device_id"] == device["id"]]
        assert statuses == ["opened"]
        assert errors == []
    finally:
        context.close()
