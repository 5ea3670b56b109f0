"""The web dashboard (/dashboard) in headless Chromium against a real server process: signing
in and out, every page clicked through, CSRF, the Content-Security-Policy, and tenant
isolation of every dashboard URL."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from e2e_support import unique
from provider_support import pem, service_account

from pushgate.testing.server import ServerProcess, cli_env, create_account

PASSWORD = "correct horse battery staple"
BAD_P8 = "-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n"


# --------------------------------------------------------------------------- set-up


@dataclass
class Tenant:
    """An account with an app, a subscriber with a channel device, one notification, an
    event and an API key."""

    account_id: int
    user_token: str
    app_key: str = ""
    app_secret: str = ""
    subscriber_id: int = 0
    device_id: int = 0
    key_id: int = 0
    external_id: str = ""
    notification_id: int = 0
    device_token: str = ""
    sending_id: int = 0
    campaign_id: int = 0

    @property
    def bearer(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.user_token}"}


def api(server: ServerProcess) -> httpx2.Client:
    return httpx2.Client(base_url=server.url, timeout=10.0, trust_env=False)


def send(client: httpx2.Client, tenant: Tenant, message: str) -> int:
    resp = client.post(
        "/api/v1/notifications",
        headers=tenant.bearer,
        json={"app_id": tenant.app_key, "title": "Hi", "message": message},
    )
    assert resp.status_code == 201, resp.text
    notification_id: int = resp.json()["id"]
    return notification_id


def make_tenant(server: ServerProcess) -> Tenant:
    account = create_account(server.data_dir, unique("dash"))
    tenant = Tenant(account_id=account["id"], user_token=account["user_token"])
    tenant.external_id = unique("ext")
    with api(server) as client:
        resp = client.post("/api/v1/apps", headers=tenant.bearer, json={"title": "Shop"})
        assert resp.status_code == 201, resp.text
        tenant.app_key, tenant.app_secret = resp.json()["id"], resp.json()["secret"]
        resp = client.post(
            "/api/v1/devices",
            headers=tenant.bearer,
            json={
                "platform": "channel",
                "app_id": tenant.app_key,
                "external_id": tenant.external_id,
                "name": "phone",
            },
        )
        assert resp.status_code == 201, resp.text
        tenant.device_id = resp.json()["id"]
        tenant.subscriber_id = resp.json()["subscriber_id"]
        tenant.device_token = resp.json()["device_token"]
        tenant.notification_id = send(client, tenant, "first")
        resp = client.post(
            "/api/v1/notifications",
            headers=tenant.bearer,
            json={
                "app_id": tenant.app_key,
                "message": "welcome",
                "campaign": {"id": "welcome", "name": "Welcome"},
            },
        )
        assert resp.status_code == 201, resp.text
        with closing(sqlite3.connect(server.data_dir / "pushgate.db")) as db:
            (tenant.campaign_id,) = db.execute(
                "SELECT c.id FROM campaigns c JOIN apps a ON a.id = c.app_id "
                "WHERE a.app_key = ? AND c.external_id = 'welcome'",
                (tenant.app_key,),
            ).fetchone()
        resp = client.post(
            "/v1/events/add",
            headers={
                "x-instapush-appid": tenant.app_key,
                "x-instapush-appsecret": tenant.app_secret,
            },
            json={"title": "signups", "trackers": ["email"], "message": "{email} signed up"},
        )
        assert resp.status_code == 201, resp.text
        resp = client.post(
            "/api/v1/keys",
            headers=tenant.bearer,
            json={"kind": "push-api-v2", "app_id": tenant.app_key, "name": "backend"},
        )
        assert resp.status_code == 201, resp.text
        tenant.key_id = resp.json()["id"]
        tenant.sending_id = send_later(client, tenant, "later")
    return tenant


def in_a_week() -> str:
    """A wall time a week ahead (a local-time sending due then has not started)."""
    return time.strftime("%Y-%m-%dT09:00", time.gmtime(time.time() + 7 * 86_400))


def send_later(client: httpx2.Client, tenant: Tenant, message: str) -> int:
    """A local-time send a week ahead: a sending that waits."""
    resp = client.post(
        "/api/v1/notifications",
        headers=tenant.bearer,
        json={
            "app_id": tenant.app_key,
            "message": message,
            "send_at": in_a_week() + ":00+01:00",
            "local_time": True,
        },
    )
    assert resp.status_code == 201, resp.text
    sending_id: int = resp.json()["sending_id"]
    return sending_id


def set_password(
    server: ServerProcess, tenant: Tenant, email: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pushgate",
            "account",
            "set-password",
            "--account",
            str(tenant.account_id),
            "--email",
            email,
            "--password-stdin",
        ],
        env=cli_env(server.data_dir),
        input=PASSWORD + "\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, html
    return found.group(1)


def signed_in_client(server: ServerProcess, tenant: Tenant) -> tuple[httpx2.Client, str]:
    """An HTTP client with a dashboard session of the tenant, and its CSRF token."""
    client = httpx2.Client(base_url=server.url, timeout=10.0, trust_env=False)
    form = client.get("/dashboard/sign-in")
    resp = client.post(
        "/dashboard/sign-in", data={"csrf": csrf_of(form.text), "user_token": tenant.user_token}
    )
    assert resp.status_code == 303, resp.text
    overview = client.get("/dashboard/")
    assert overview.status_code == 200
    return client, csrf_of(overview.text)


@pytest.fixture(scope="module")
def tenants(server: ServerProcess) -> tuple[Tenant, Tenant]:
    return make_tenant(server), make_tenant(server)


@dataclass
class Browsing:
    page: Any
    context: Any
    problems: list[str]


@pytest.fixture
def browsing(browser: Any, server: ServerProcess) -> Iterator[Browsing]:
    """A fresh browser context (no cookies) that may reach only the server, with console
    errors (CSP violations among them) and failed requests collected."""
    context = browser.new_context(base_url=server.url)
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=server.url)
    page = context.new_page()
    problems: list[str] = []
    # Answers of 4xx (a refused sign-in, a refused upload) are logged as errors too: those
    # are tested where they happen; anything else (a CSP violation, a script error) is not.
    expected = "Failed to load resource: the server responded with a status of 4"
    # htmx logs a request that a page change cut short (the Send page's count or preview,
    # typed just before the form is sent) as these two; a failed answer is htmx:responseError.
    cut_short = ("htmx:sendAbort", "htmx:afterRequest")

    def console(message: Any) -> None:
        if message.type == "error" and not message.text.startswith((expected, *cut_short)):
            problems.append(message.text)

    page.on("console", console)
    page.on("pageerror", lambda e: problems.append(str(e)))

    def only_the_server(route: Any) -> None:
        if route.request.url.startswith(server.url):
            route.continue_()
        else:
            problems.append("outside request: " + route.request.url)
            route.abort()

    page.route("**/*", only_the_server)
    try:
        yield Browsing(page, context, problems)
    finally:
        context.close()


def sign_in(page: Any, token: str) -> None:
    page.goto("/dashboard/")
    assert page.url.endswith("/dashboard/sign-in")
    page.fill("#token-sign-in input[name=user_token]", token)
    page.click("#token-sign-in button[type=submit]")
    page.wait_for_url("**/dashboard/")


SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "dashboard"


def screenshot(page: Any, name: str) -> None:
    """With PUSHGATE_SCREENSHOTS=1: the page as docs/dashboard/NAME.png (docs/dashboard.md
    shows them); otherwise nothing, so that a test run leaves the repository as it was."""
    if os.environ.get("PUSHGATE_SCREENSHOTS") == "1":
        SCREENSHOTS.mkdir(exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


# --------------------------------------------------------------------------- sign-in


def test_sign_in_with_user_token_and_sign_out(
    browsing: Browsing, tenants: tuple[Tenant, Tenant]
) -> None:
    page = browsing.page
    tenant, _other = tenants
    page.goto("/dashboard/")
    page.fill("#token-sign-in input[name=user_token]", "0" * 32)
    page.click("#token-sign-in button[type=submit]")
    assert "Wrong user token" in page.inner_text("#sign-in-error")

    sign_in(page, tenant.user_token)
    assert page.inner_text("#accepted-today") != ""
    (cookie,) = [c for c in browsing.context.cookies() if c["name"] == "pushgate_session"]
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Strict"
    assert cookie["path"] == "/dashboard"

    page.click("#sign-out")
    page.wait_for_url("**/dashboard/sign-in")
    # The session ended on the server: its cookie, put back, opens nothing.
    browsing.context.add_cookies([cookie])
    page.goto("/dashboard/apps")
    assert page.url.endswith("/dashboard/sign-in")
    assert browsing.problems == []


def test_sign_in_with_email_and_password(
    browsing: Browsing, server: ServerProcess, tenants: tuple[Tenant, Tenant]
) -> None:
    tenant, _other = tenants
    email = f"{unique('owner')}@example.com"
    short = subprocess.run(
        [sys.executable, "-m", "pushgate", "account", "set-password", "--account",
         str(tenant.account_id), "--email", email, "--password-stdin"],
        env=cli_env(server.data_dir), input="short\n", capture_output=True, text=True,
        timeout=60, check=False,
    )  # fmt: skip
    assert short.returncode == 2 and "12" in short.stderr
    result = set_password(server, tenant, email)
    assert result.returncode == 0, result.stderr
    assert PASSWORD not in result.stdout + result.stderr

    page = browsing.page
    page.goto("/dashboard/sign-in")
    page.fill("#password-sign-in input[name=email]", email)
    page.fill("#password-sign-in input[name=password]", "wrong password!")
    page.click("#password-sign-in button[type=submit]")
    assert "wrong e-mail or password" in page.inner_text("#sign-in-error")
    page.fill("#password-sign-in input[name=email]", email.upper())
    page.fill("#password-sign-in input[name=password]", PASSWORD)
    page.click("#password-sign-in button[type=submit]")
    page.wait_for_url("**/dashboard/")
    assert tenant.app_key in page.content() or page.inner_text("#accepted-week")
    assert browsing.problems == []


# --------------------------------------------------------------------------- every page


def test_click_through_every_page(
    browsing: Browsing, server: ServerProcess, tenants: tuple[Tenant, Tenant]
) -> None:
    page = browsing.page
    tenant, _other = tenants
    sign_in(page, tenant.user_token)

    # Overview: this week's notification and its queued delivery, the channel device.
    assert int(page.inner_text("#accepted-today")) >= 1
    assert int(page.inner_text("#accepted-week")) >= 1
    assert "queued" in page.inner_text("#by-status")
    assert "channel" in page.inner_text("#by-platform")

    # Apps: create one, rename it, reveal its secret, copy its VAPID key.
    page.click("nav >> text=Apps")
    page.fill("#create-app input[name=title]", "Dashboard app")
    page.click("#create-app button[type=submit]")
    page.wait_for_url(re.compile(r".*/dashboard/apps/[0-9a-f]+$"))
    app_key = page.inner_text("#app-key")
    assert page.inner_text("#app-title") == "Dashboard app"
    page.fill("#rename-app input[name=title]", "Renamed app")
    page.click("#rename-app button[type=submit]")
    page.wait_for_selector("#app-title >> text=Renamed app")
    page.click("#reveal-secret")
    secret = page.wait_for_selector("#app-secret").inner_text()
    with api(server) as client:
        shown = client.get(f"/api/v1/apps/{app_key}", headers=tenant.bearer).json()
    assert shown["secret"] == secret and shown["title"] == "Renamed app"
    vapid = page.inner_text("#vapid-key")
    page.click("#copy-vapid")
    page.wait_for_selector("#copy-vapid >> text=Copied")
    assert page.evaluate("navigator.clipboard.readText()") == vapid

    # Settings: the frequency cap and the default web push icon; a refusal next to its field.
    page.fill("#frequency-cap", "5")
    page.fill("#default-icon-url", "http://shop.example/icon.png")
    page.click("#settings-form button[type=submit]")
    error = page.wait_for_selector("#error-default_icon_url").inner_text()
    assert "https://" in error
    assert page.input_value("#default-icon-url") == "http://shop.example/icon.png"
    page.fill("#default-icon-url", "https://shop.example/icon.png")
    page.click("#settings-form button[type=submit]")
    page.wait_for_selector("#saved >> text=Settings saved.")
    with api(server) as client:
        shown = client.get(f"/api/v1/apps/{app_key}", headers=tenant.bearer).json()
    assert (shown["frequency_cap"], shown["default_icon_url"]) == (
        5,
        "https://shop.example/icon.png",
    )
    assert page.input_value("#frequency-cap") == "5"

    # Provider credentials: refusals shown next to their field, then a good one saved.
    page.set_input_files(
        "#upload-ios input[name=private_key]",
        files=[{"name": "AuthKey.p8", "mimeType": "text/plain", "buffer": BAD_P8.encode()}],
    )
    page.fill("#upload-ios input[name=key_id]", "ABC123DEFG")
    page.fill("#upload-ios input[name=team_id]", "DEF123GHIJ")
    page.fill("#upload-ios input[name=topic]", "com.example.app")
    page.click("#upload-ios button[type=submit]")
    error = page.wait_for_selector("#upload-ios #error-private_key")
    assert "private_key" in error.inner_text()
    assert page.input_value("#upload-ios input[name=team_id]") == "DEF123GHIJ"
    page.fill("#upload-huawei input[name=app_id]", "not-numeric")
    page.fill("#upload-huawei input[name=client_secret]", "s3cret")
    page.click("#upload-huawei button[type=submit]")
    assert "numeric app id" in page.inner_text("#upload-huawei #error-app_id")
    page.fill("#upload-huawei input[name=app_id]", "101234567")
    page.fill("#upload-huawei input[name=client_secret]", "s3cret")
    page.click("#upload-huawei button[type=submit]")
    assert "huawei credentials saved" in page.inner_text("#saved")
    assert "101234567" in page.inner_text("#credential-huawei")
    assert "s3cret" not in page.content()
    p8 = pem(ec.generate_private_key(ec.SECP256R1()))
    page.set_input_files(
        "#upload-ios input[name=private_key]",
        files=[{"name": "AuthKey.p8", "mimeType": "text/plain", "buffer": p8.encode()}],
    )
    page.fill("#upload-ios input[name=key_id]", "ABC123DEFG")
    page.fill("#upload-ios input[name=team_id]", "DEF123GHIJ")
    page.fill("#upload-ios input[name=topic]", "com.example.app")
    page.select_option("#upload-ios select[name=environment]", "sandbox")
    page.click("#upload-ios button[type=submit]")
    assert "ios credentials saved" in page.inner_text("#saved")
    assert "sandbox" in page.inner_text("#credential-ios")
    page.set_input_files(
        "#upload-android input[name=service_account]",
        files=[{"name": "sa.json", "mimeType": "application/json", "buffer": b"{not json"}],
    )
    page.click("#upload-android button[type=submit]")
    assert "not JSON" in page.inner_text("#upload-android #error-service_account")
    account_file = json.dumps(
        service_account(pem(rsa.generate_private_key(65537, 2048)))["service_account"]
    )
    page.set_input_files(
        "#upload-android input[name=service_account]",
        files=[
            {"name": "sa.json", "mimeType": "application/json", "buffer": account_file.encode()}
        ],
    )
    page.click("#upload-android button[type=submit]")
    assert "android credentials saved" in page.inner_text("#saved")
    assert "my-project" in page.inner_text("#credential-android")
    assert "PRIVATE KEY" not in page.content()
    page.click("#generate-vapid")
    page.wait_for_selector("#vapid-key")
    assert page.inner_text("#vapid-key") != vapid

    # API keys: created (shown once), allowlist and quota, revoked.
    page.click("nav >> text=API keys")
    page.select_option("#create-key select[name=kind]", "push-api-v2")
    page.select_option("#create-key select[name=app]", app_key)
    page.fill("#create-key input[name=name]", "from the dashboard")
    page.click("#create-key button[type=submit]")
    key = page.inner_text("#new-key-value")
    assert key.startswith("pgk_")
    row = page.locator("#keys tr", has_text="from the dashboard")
    row.locator("input[name=ip_allowlist]").fill("203.0.113.0/24, 127.0.0.1")
    row.locator("input[name=per_minute]").fill("120")
    row.locator("button", has_text="Save").click()
    page.wait_for_url("**/dashboard/keys")
    assert key not in page.content()
    row = page.locator("#keys tr", has_text="from the dashboard")
    assert row.locator("input[name=per_minute]").input_value() == "120"
    assert "203.0.113.0/24" in row.locator("input[name=ip_allowlist]").input_value()
    row.locator("button", has_text="Revoke").click()
    page.wait_for_url("**/dashboard/keys")
    assert "revoked" in page.locator("#keys tr", has_text="from the dashboard").inner_text()

    # Instapush events: preview, create, delete.
    page.goto(f"/dashboard/apps/{app_key}/events")
    page.fill("#create-event input[name=title]", "orders")
    page.fill("#create-event input[name=trackers]", "name, total")
    page.fill("#create-event input[name=message]", "{name} ordered for {total}")
    page.click("#preview-event")
    assert page.wait_for_selector("#preview-text").inner_text() == "[name] ordered for [total]"
    page.fill("#create-event input[name=message]", "{name} ordered {missing}")
    page.click("#preview-event")
    assert "missing" in page.wait_for_selector("#preview-error").inner_text()
    page.fill("#create-event input[name=message]", "{name} ordered for {total}")
    page.click("#create-event button[type=submit]")
    page.wait_for_selector("#events >> text=orders")
    page.locator("#events tr", has_text="orders").locator("button", has_text="Delete").click()
    page.wait_for_url(f"**/dashboard/apps/{app_key}/events")
    assert "orders" not in page.inner_text("#events")

    # Subscribers: found by an identifier; profile, device, its deliveries.
    page.click("nav >> text=Subscribers")
    page.select_option("#search select[name=app]", tenant.app_key)
    page.fill("#search input[name=q]", tenant.external_id)
    page.click("#search button[type=submit]")
    page.click(f"#subscribers >> text={tenant.subscriber_id}")
    assert page.inner_text("#subscriber-id") == str(tenant.subscriber_id)
    assert tenant.external_id in page.inner_text("#identifiers")
    device = page.locator(f"#device-{tenant.device_id}")
    assert "first" in device.locator("table.deliveries").inner_text()
    assert "queued" in device.locator("table.deliveries").inner_text()
    page.click(f"#toggle-device-{tenant.device_id}")
    assert page.inner_text(f"#device-{tenant.device_id}-state") == "disabled"
    assert "disabled in the dashboard" in device.inner_text()
    page.click(f"#toggle-device-{tenant.device_id}")
    assert page.inner_text(f"#device-{tenant.device_id}-state") == "enabled"

    # Send: refused with the field to fix, then sent; its statistics and deliveries.
    page.click("nav >> text=Send")
    page.select_option("#send select[name=app_id]", tenant.app_key)
    page.fill("#send input[name=title]", "From the dashboard")
    page.click("#send button[type=submit]")
    assert "required" in page.inner_text("#send #error-message").lower()
    assert page.input_value("#send input[name=title]") == "From the dashboard"
    page.fill("#send textarea[name=message]", "sent by hand")
    page.click("#send button[type=submit]")
    page.wait_for_url(re.compile(r".*/dashboard/notifications/\d+$"))
    sent_id = int(page.inner_text("#notification-id"))
    deadline = time.monotonic() + 10
    while page.inner_text("#targeted") != "1" and time.monotonic() < deadline:
        page.wait_for_timeout(200)  # the fan-out runs after the answer
        page.reload()
    assert page.inner_text("#targeted") == "1"
    assert str(tenant.device_id) in page.inner_text("#deliveries")
    with api(server) as client:
        listed = client.get("/api/v1/notifications", headers=tenant.bearer).json()
    assert listed["notifications"][0]["id"] == sent_id
    assert listed["notifications"][0]["message"] == "sent by hand"
    page.click("nav >> text=Send")
    page.click(f"#notifications >> text={sent_id}")
    page.wait_for_url(f"**/dashboard/notifications/{sent_id}")

    # Campaigns of the app: counted from their deliveries.
    with api(server) as client:
        resp = client.post(
            "/api/v1/notifications",
            headers=tenant.bearer,
            json={
                "app_id": tenant.app_key,
                "message": "sale",
                "campaign": {"id": "winter-sale", "name": "Winter sale"},
            },
        )
        assert resp.status_code == 201, resp.text
    page.goto(f"/dashboard/apps/{tenant.app_key}")
    page.click("text=Campaigns")
    row = page.locator("#campaigns tr", has_text="winter-sale")
    assert "Winter sale" in row.inner_text()
    # A campaign over time: its deliveries by status, drawn and as a table.
    page.click("#campaigns >> text=welcome")
    page.wait_for_url(f"**/dashboard/apps/{tenant.app_key}/campaigns/{tenant.campaign_id}")
    page.wait_for_selector("#timeline circle.series-targeted")
    assert page.inner_text("#campaign-targeted") == "1"
    assert "1" in page.inner_text("#timeline-table tbody")

    # Live: a notification sent now shows as it is delivered (queued for the device).
    page.click("nav >> text=Live")
    page.wait_for_selector("#live-state >> text=connected")
    with api(server) as client:
        notification_id = send(client, tenant, "live one")
    row = page.wait_for_selector(f"#live tr[data-notification='{notification_id}']")
    assert "live one" in row.inner_text()
    assert str(tenant.device_id) in row.inner_text()

    # Erasing a subscriber (one made for this: the shared one serves other tests).
    with api(server) as client:
        resp = client.put(
            f"/api/v1/apps/{app_key}/subscribers",
            headers=tenant.bearer,
            json={"identifiers": {"email": "erase.me@example.com"}},
        )
        assert resp.status_code == 201, resp.text
        erased_id = resp.json()["id"]
    page.goto(f"/dashboard/subscribers?app={app_key}&q=erase.me@example.com")
    page.click(f"#subscribers >> text={erased_id}")
    page.check("#delete-subscriber input[name=confirm]")
    page.click("#delete-subscriber button[type=submit]")
    page.wait_for_url(f"**/dashboard/subscribers?app={app_key}")
    with api(server) as client:
        gone = client.get(f"/api/v1/subscribers/{erased_id}", headers=tenant.bearer)
    assert gone.status_code == 404

    assert browsing.problems == []


def matched(page: Any, expected: str) -> None:
    """Wait until the Send page's live count shows ``expected`` devices."""
    page.wait_for_selector(f"#audience-count #matched >> text='{expected}'")


def test_compose_a_local_time_sending_then_change_and_cancel_it(
    browsing: Browsing, server: ServerProcess
) -> None:
    """The Send page's audience (with its live count), translations (with their previews)
    and local-time schedule make a sending; its page changes its pushes and cancels it."""
    tenant = make_tenant(server)  # its own: exactly one device (a channel one of the app)
    page = browsing.page
    sign_in(page, tenant.user_token)
    page.click("nav >> text=Send")
    page.select_option("#send select[name=app_id]", tenant.app_key)
    matched(page, "1")
    page.check("#audience input[name=platforms][value=ios]")
    matched(page, "0")
    page.uncheck("#audience input[name=platforms][value=ios]")
    page.check("#audience input[name=platforms][value=channel]")
    matched(page, "1")
    page.fill("#audience input[name=countries]", "Atlantis")
    assert "countries" in page.wait_for_selector("#count-error").inner_text()
    page.fill("#audience input[name=countries]", "")
    page.fill("#audience textarea[name=subscribers]", f"external_id={tenant.external_id}")
    matched(page, "1")
    page.fill("#audience textarea[name=subscribers]", "external_id=nobody-at-all")
    matched(page, "0")
    assert "named nobody" in page.inner_text("#audience-count")
    page.fill("#audience textarea[name=subscribers]", "")
    matched(page, "1")

    page.fill("#send input[name=title]", "Hello")
    page.fill("#send textarea[name=message]", "Good morning")
    page.fill("#send input[name=image_url]", "https://img.example.com/sale.png")
    page.fill("#send input[name=default_language]", "en")
    page.fill("#send input[name=t0_language]", "de")
    page.fill("#send input[name=t0_title]", "Hallo")
    page.fill("#send input[name=t0_message]", "Guten Morgen")
    page.wait_for_selector("#preview-list section[aria-label='Preview in de']")
    previews = page.locator("#preview-list .preview-language")
    assert previews.count() == 2
    german = previews.nth(1)
    assert german.locator(".mock").count() == 3  # iOS, Android, web
    assert "Guten Morgen" in german.locator(".mock-ios").inner_text()
    assert "Hallo" in german.locator(".mock-android").inner_text()
    assert "img.example.com" in previews.nth(0).locator(".mock-web").inner_text()
    screenshot(page, "send-composed")

    # At that time in each timezone: refused without a date, then a sending.
    page.check("#when input[name=when][value=local]")
    page.click("#send button[type=submit]")
    assert "date" in page.inner_text("#when #error-when")
    assert axe_problems(page) == []  # with its refusal shown
    assert page.input_value("#send input[name=t0_message]") == "Guten Morgen"
    assert page.is_checked("#audience input[name=platforms][value=channel]")
    page.fill("#when input[name=send_date]", in_a_week())
    page.select_option("#when select[name=send_offset]", "+01:00")
    page.click("#send button[type=submit]")
    page.wait_for_url(re.compile(r".*/dashboard/sendings/\d+$"))
    sending_id = int(page.inner_text("#sending-id"))
    assert page.inner_text("#sending-state") == "waiting"
    due = page.inner_text("#sending-due")
    assert in_a_week().replace("T", " ") in due and "local time" in due and "+01:00" in due
    (first,) = page.locator("#pushes tbody tr").all()
    assert "Good morning" in first.inner_text() and "Guten Morgen" in first.inner_text()
    screenshot(page, "sending-waiting")

    # Its pushes: one added, then only that one kept; a wrong id refused.
    page.fill("#new-push input[name=title]", "Second")
    page.fill("#new-push textarea[name=message]", "another push")
    page.click("#new-push button[type=submit]")
    page.wait_for_selector("#pushes >> text=another push")
    assert page.locator("#pushes tbody tr").count() == 2
    second_id = page.locator("#pushes tbody tr").nth(1).locator("td").first.inner_text()
    page.fill("#bind-pushes input[name=pushes]", "not-a-push")
    page.click("#bind-pushes button[type=submit]")
    assert "not a push id" in page.inner_text("#sending-error")
    assert axe_problems(page) == []
    page.fill("#bind-pushes input[name=pushes]", second_id)
    page.click("#bind-pushes button[type=submit]")
    page.wait_for_url(f"**/dashboard/sendings/{sending_id}")
    assert page.locator("#pushes tbody tr").count() == 1
    assert "another push" in page.inner_text("#pushes")

    # Listed under Sendings; cancelled from its page.
    page.click("nav >> text=Sendings")
    row = page.locator(f"#sending-{sending_id}")
    assert "waiting" in row.inner_text()
    page.click("#states >> text=waiting")
    row.locator("a").click()
    page.wait_for_url(f"**/dashboard/sendings/{sending_id}")
    page.click("#cancel-sending button[type=submit]")
    page.wait_for_selector("#sending-state >> text=cancelled")
    assert page.locator("#cancel-sending").count() == 0
    assert page.locator("#bind-pushes").count() == 0
    with api(server) as client:
        shown = client.get(f"/api/v1/sendings/{sending_id}", headers=tenant.bearer).json()
    assert shown["state"] == "cancelled" and shown["pushes"] == [int(second_id)]
    # Cancelling again: refused, shown on the page.
    client, csrf = signed_in_client(server, tenant)
    with closing(client):
        resp = client.post(f"/dashboard/sendings/{sending_id}/cancel", data={"csrf": csrf})
    assert resp.status_code == 409 and "only a waiting sending" in resp.text
    assert browsing.problems == []


def test_send_at_a_time_holds_the_notification_until_then(
    server: ServerProcess, tenants: tuple[Tenant, Tenant]
) -> None:
    """The Send page's "at this date and time": the native send's ``send_at`` at the chosen
    offset (its TTL counts from then); a wrong date or offset is refused next to "When"."""
    tenant, _other = tenants
    client, csrf = signed_in_client(server, tenant)
    form = {
        "csrf": csrf,
        "app_id": tenant.app_key,
        "message": "held for a week",
        "personal": "on",
        "when": "at",
        "send_date": in_a_week(),
        "send_offset": "+02:00",
    }
    with closing(client):
        for wrong in ({"send_date": "next week"}, {"send_offset": "+25:00"}):
            resp = client.post("/dashboard/send", data={**form, **wrong})
            assert resp.status_code == 400 and 'id="error-when"' in resp.text, resp.text
        resp = client.post("/dashboard/send", data=form)
        assert resp.status_code == 303, resp.text
        notification_id = int(resp.headers["location"].rsplit("/", 1)[1])
    with api(server) as plain:
        listed = plain.get("/api/v1/notifications", headers=tenant.bearer).json()
    (shown,) = [n for n in listed["notifications"] if n["id"] == notification_id]
    due = time.mktime(time.strptime(in_a_week(), "%Y-%m-%dT%H:%M")) - time.timezone - 7200
    expires = time.mktime(time.strptime(shown["expires_at"][:19], "%Y-%m-%dT%H:%M:%S"))
    assert expires - time.timezone > due  # the TTL counts from the chosen time


def test_a_notification_composed_reaches_a_channel_device_and_the_live_page(
    browsing: Browsing, server: ServerProcess
) -> None:
    from websockets.sync.client import connect

    tenant = make_tenant(server)
    page = browsing.page
    sign_in(page, tenant.user_token)
    live = browsing.context.new_page()
    live.on("pageerror", lambda e: browsing.problems.append(str(e)))
    live.goto("/dashboard/live")
    live.wait_for_selector("#live-state >> text=connected")
    url = server.url.replace("http://", "ws://", 1) + "/api/v1/channel/ws"
    with connect(f"{url}?token={tenant.device_token}", open_timeout=10, proxy=None) as ws:
        while json.loads(ws.recv(timeout=10)).get("type") != "ready":
            pass  # the backlog (the tenant's first notification)
        page.click("nav >> text=Send")
        page.select_option("#send select[name=app_id]", tenant.app_key)
        page.check("#audience input[name=platforms][value=channel]")
        matched(page, "1")
        page.fill("#send input[name=title]", "Composed")
        page.fill("#send textarea[name=message]", "typed in the dashboard")
        page.click("#send button[type=submit]")
        page.wait_for_url(re.compile(r".*/dashboard/notifications/\d+$"))
        sent_id = int(page.inner_text("#notification-id"))
        message = json.loads(ws.recv(timeout=10))
    assert message["type"] == "notification" and message["id"] == sent_id
    assert (message["title"], message["message"]) == ("Composed", "typed in the dashboard")
    row = live.wait_for_selector(f"#live tr[data-notification='{sent_id}']")
    assert "typed in the dashboard" in row.inner_text()
    assert str(tenant.device_id) in row.inner_text()
    screenshot(live, "live")
    assert axe_problems(live) == []  # with rows
    assert browsing.problems == []


def test_the_try_page_receives_a_notification_in_the_browser(
    browsing: Browsing, server: ServerProcess
) -> None:
    tenant = make_tenant(server)
    page = browsing.page
    browsing.context.grant_permissions(["notifications"], origin=server.url)
    sign_in(page, tenant.user_token)
    page.goto(f"/dashboard/apps/{tenant.app_key}")
    page.click("#try-link")
    page.wait_for_url(f"**/dashboard/apps/{tenant.app_key}/try")
    page.click("#try-permission")
    page.wait_for_selector("#try-permission >> text=Browser notifications on")
    page.click("#try-subscribe")
    page.wait_for_selector("#try-state >> text=connected")
    device_id = int(page.get_attribute("#try-device", "data-device") or 0)
    with api(server) as client:
        devices = client.get("/api/v1/devices", headers=tenant.bearer).json()["devices"]
        (tried,) = [d for d in devices if d["id"] == device_id]
        assert tried["platform"] == "channel" and tried["app_id"] == tenant.app_key
        notification_id = send(client, tenant, "to the try page")
    row = page.wait_for_selector(f"#try-received tr[data-notification='{notification_id}']")
    assert "to the try page" in row.inner_text() and "Hi" in row.inner_text()
    screenshot(page, "try")
    assert axe_problems(page) == []  # with what arrived
    # The page acknowledged it: its delivery to the browser's device is delivered.
    page.goto(f"/dashboard/notifications/{notification_id}")
    deadline = time.monotonic() + 10
    while "delivered" not in page.inner_text("#deliveries") and time.monotonic() < deadline:
        page.wait_for_timeout(200)
        page.reload()
    cells = [row.split("\t") for row in page.inner_text("#deliveries tbody").splitlines()]
    assert [c[2] for c in cells if c[0] == str(device_id)] == ["delivered"]
    assert browsing.problems == []


# --------------------------------------------------------------------------- accessibility


AXE = Path(__file__).resolve().parent / "vendor" / "axe-core" / "axe.min.js"


def axe_problems(page: Any) -> list[str]:
    """axe-core's serious and critical violations on the page (axe is injected by the test
    through the browser's devtools protocol, which the page's CSP does not govern)."""
    if not page.evaluate("typeof window.axe !== 'undefined'"):
        page.evaluate(AXE.read_text())
    results = page.evaluate("window.axe.run(document, {resultTypes: ['violations']})")
    return [
        f"{page.url}: {v['id']} ({v['impact']}): {v['help']}: "
        + "; ".join(node["target"][0] for node in v["nodes"][:5])
        for v in results["violations"]
        if v["impact"] in ("serious", "critical")
    ]


def test_no_serious_accessibility_violation_on_any_page(
    browsing: Browsing, tenants: tuple[Tenant, Tenant]
) -> None:
    tenant, _other = tenants
    page = browsing.page
    page.goto("/dashboard/sign-in")
    problems = axe_problems(page)
    screenshot(page, "sign-in")
    sign_in(page, tenant.user_token)
    paths = {
        "/dashboard/": "overview",
        "/dashboard/apps": "apps",
        f"/dashboard/apps/{tenant.app_key}": "app",
        "/dashboard/keys": "keys",
        f"/dashboard/apps/{tenant.app_key}/events": "events",
        f"/dashboard/apps/{tenant.app_key}/campaigns": "campaigns",
        f"/dashboard/apps/{tenant.app_key}/campaigns/{tenant.campaign_id}": "campaign",
        "/dashboard/subscribers": "",
        f"/dashboard/subscribers?app={tenant.app_key}": "subscribers",
        f"/dashboard/subscribers/{tenant.subscriber_id}": "subscriber",
        "/dashboard/send": "",  # shown composed: send-composed
        f"/dashboard/notifications/{tenant.notification_id}": "notification",
        "/dashboard/sendings": "sendings",
        f"/dashboard/sendings/{tenant.sending_id}": "",  # shown with pushes: sending-waiting
        f"/dashboard/apps/{tenant.app_key}/try": "",
        "/dashboard/live": "",
        "/dashboard/notifications/999999999": "",  # the error page
    }
    for path, name in paths.items():
        page.goto(path)
        if path == "/dashboard/send":
            page.wait_for_selector("#matched")
            page.wait_for_selector("#preview-list .preview-language")
        problems += axe_problems(page)
        if name:
            screenshot(page, name)
    assert problems == [], "\n".join(problems)


# --------------------------------------------------------------------------- CSRF and CSP


def test_posts_without_the_csrf_token_are_refused(
    server: ServerProcess, tenants: tuple[Tenant, Tenant]
) -> None:
    tenant, _other = tenants
    client, csrf = signed_in_client(server, tenant)
    with closing(client):
        for data in ({"title": "csrf-less"}, {"title": "csrf-less", "csrf": "0" * 64}):
            resp = client.post("/dashboard/apps", data=data)
            assert resp.status_code == 403, resp.text
            assert "CSRF" in resp.text
        resp = client.post(f"/dashboard/apps/{tenant.app_key}/secret")
        assert resp.status_code == 403 and tenant.app_secret not in resp.text
        # The sign-in form has its own token.
        resp = client.post("/dashboard/sign-in", data={"user_token": tenant.user_token})
        assert resp.status_code == 403
        with api(server) as plain:
            apps = plain.get("/api/v1/apps", headers=tenant.bearer).json()["apps"]
        assert "csrf-less" not in [app["title"] for app in apps]
        # Another session's token does not do either.
        other_client, other_csrf = signed_in_client(server, tenant)
        other_client.close()
        assert other_csrf != csrf
        resp = client.post("/dashboard/apps", data={"title": "csrf-less", "csrf": other_csrf})
        assert resp.status_code == 403
        # With its own token it works.
        resp = client.post("/dashboard/apps", data={"title": "with csrf", "csrf": csrf})
        assert resp.status_code == 303


def test_pages_carry_a_strict_csp_and_no_inline_script(
    server: ServerProcess, tenants: tuple[Tenant, Tenant]
) -> None:
    tenant, _other = tenants
    client, _csrf = signed_in_client(server, tenant)
    paths = [
        "/dashboard/",
        "/dashboard/apps",
        f"/dashboard/apps/{tenant.app_key}",
        "/dashboard/keys",
        f"/dashboard/apps/{tenant.app_key}/events",
        f"/dashboard/apps/{tenant.app_key}/campaigns",
        f"/dashboard/subscribers?app={tenant.app_key}",
        f"/dashboard/subscribers/{tenant.subscriber_id}",
        "/dashboard/send",
        f"/dashboard/notifications/{tenant.notification_id}",
        "/dashboard/live",
        "/dashboard/sendings",
        f"/dashboard/sendings/{tenant.sending_id}",
        f"/dashboard/apps/{tenant.app_key}/try",
    ]
    with closing(client):
        with api(server) as signed_out:
            pages = [("/dashboard/sign-in", signed_out.get("/dashboard/sign-in"))]
        pages += [(path, client.get(path)) for path in paths]
        for path, resp in pages:
            assert resp.status_code == 200, path
            csp = resp.headers["content-security-policy"]
            assert "script-src 'self';" in csp and "unsafe" not in csp
            assert "frame-ancestors 'none'" in csp
            assert resp.headers["x-frame-options"] == "DENY"
            assert resp.headers["cache-control"] == "no-store"
            for tag in re.findall(r"<script[^>]*>", resp.text):
                assert "src=" in tag, (path, tag)
            assert not re.search(r"\son[a-z]+=", resp.text), path
            assert "style=" not in resp.text, path


# --------------------------------------------------------------------------- isolation


def dashboard_paths() -> set[tuple[str, str]]:
    """Every (method, path) the dashboard serves, from its route table."""
    from starlette.routing import Mount, Route

    from pushgate.config import Settings
    from pushgate.dashboard import dashboard_routes
    from pushgate.runtime import build_runtime

    found: set[tuple[str, str]] = set()
    for route in dashboard_routes(build_runtime(Settings(database_url="sqlite+aiosqlite://"))):
        if isinstance(route, Route):
            for method in route.methods or ():
                if method != "HEAD":
                    found.add((method, route.path))
        else:
            assert isinstance(route, Mount)
    return found


def test_every_dashboard_url_refuses_another_accounts_ids(
    server: ServerProcess, tenants: tuple[Tenant, Tenant]
) -> None:
    mine, theirs = tenants
    client, csrf = signed_in_client(server, mine)
    ids = {
        "app_key": theirs.app_key,
        "subscriber_id": str(theirs.subscriber_id),
        "device_id": str(theirs.device_id),
        "key_id": str(theirs.key_id),
        "notification_id": str(theirs.notification_id),
        "sending_id": str(theirs.sending_id),
        "campaign_id": str(theirs.campaign_id),
        "platform": "huawei",
    }
    # What each POST sends besides the CSRF token (enough to act, were the ids mine).
    forms: dict[str, dict[str, str]] = {
        "/dashboard/apps/{app_key}/rename": {"title": "taken over"},
        "/dashboard/apps/{app_key}/settings": {
            "frequency_cap": "1",
            "default_icon_url": "https://evil.example/i.png",
        },
        "/dashboard/apps/{app_key}/credentials/{platform}": {
            "app_id": "101234567",
            "client_secret": "x",
        },
        "/dashboard/apps/{app_key}/events": {
            "title": "evil",
            "trackers": "a",
            "message": "{a}",
        },
        "/dashboard/apps/{app_key}/events/preview": {"trackers": "a", "message": "{a}"},
        "/dashboard/apps/{app_key}/events/delete": {"title": "signups"},
        "/dashboard/keys/{key_id:int}/update": {"ip_allowlist": "10.0.0.0/8", "per_minute": "1"},
        "/dashboard/subscribers/{subscriber_id:int}/delete": {"confirm": "yes"},
        "/dashboard/keys": {"kind": "push-api-v2", "app": theirs.app_key},
        "/dashboard/send": {"app_id": theirs.app_key, "message": "hijacked"},
        "/dashboard/send/count": {"app_id": theirs.app_key},
        "/dashboard/send/preview": {"app_id": theirs.app_key, "message": "peek"},
        "/dashboard/sendings/{sending_id:int}/pushes": {"pushes": ""},
        "/dashboard/sendings/{sending_id:int}/pushes/new": {"message": "hijacked"},
    }
    # Pages without ids in the path: what they take from the query or the form instead.
    queries = {"/dashboard/subscribers": f"?app={theirs.app_key}&q={theirs.external_id}"}
    # Pages of the signed-in account as a whole, checked by the other tests (the overview
    # and the live stream in test_overview_and_live_stream_show_only_the_own_account).
    whole_account = {
        ("GET", "/dashboard/sign-in"),
        ("POST", "/dashboard/sign-in"),
        ("POST", "/dashboard/sign-out"),
        ("GET", "/dashboard/"),
        ("GET", "/dashboard"),
        ("GET", "/dashboard/apps"),
        ("POST", "/dashboard/apps"),
        ("GET", "/dashboard/keys"),
        ("GET", "/dashboard/live"),
        ("GET", "/dashboard/live/stream"),
        ("GET", "/dashboard/send"),
        ("GET", "/dashboard/sendings"),
    }
    with_ids = {
        ("GET", "/dashboard/apps/{app_key}"),
        ("POST", "/dashboard/apps/{app_key}/rename"),
        ("POST", "/dashboard/apps/{app_key}/settings"),
        ("POST", "/dashboard/apps/{app_key}/secret"),
        ("POST", "/dashboard/apps/{app_key}/credentials/web/generate"),
        ("POST", "/dashboard/apps/{app_key}/credentials/{platform}"),
        ("GET", "/dashboard/apps/{app_key}/events"),
        ("GET", "/dashboard/apps/{app_key}/campaigns"),
        ("GET", "/dashboard/apps/{app_key}/campaigns/{campaign_id:int}"),
        ("POST", "/dashboard/apps/{app_key}/events"),
        ("POST", "/dashboard/apps/{app_key}/events/preview"),
        ("POST", "/dashboard/apps/{app_key}/events/delete"),
        ("POST", "/dashboard/keys"),
        ("POST", "/dashboard/keys/{key_id:int}/update"),
        ("POST", "/dashboard/keys/{key_id:int}/revoke"),
        ("GET", "/dashboard/subscribers"),
        ("GET", "/dashboard/subscribers/{subscriber_id:int}"),
        ("POST", "/dashboard/subscribers/{subscriber_id:int}/delete"),
        ("POST", "/dashboard/devices/{device_id:int}/disable"),
        ("POST", "/dashboard/devices/{device_id:int}/enable"),
        ("POST", "/dashboard/send"),
        ("GET", "/dashboard/notifications/{notification_id:int}"),
        ("POST", "/dashboard/send/count"),
        ("POST", "/dashboard/send/preview"),
        ("GET", "/dashboard/sendings/{sending_id:int}"),
        ("POST", "/dashboard/sendings/{sending_id:int}/cancel"),
        ("POST", "/dashboard/sendings/{sending_id:int}/pushes"),
        ("POST", "/dashboard/sendings/{sending_id:int}/pushes/new"),
        ("GET", "/dashboard/apps/{app_key}/try"),
        ("POST", "/dashboard/apps/{app_key}/try/device"),
    }
    # A new dashboard URL must be added to one of the two sets (and so be tried here).
    assert dashboard_paths() == whole_account | with_ids
    with closing(client):
        for method, template in sorted(with_ids):
            path = re.sub(r"\{(\w+)(:int)?\}", lambda m: ids[m.group(1)], template)
            if method == "GET":
                resp = client.get(path + queries.get(template, ""))
            else:
                resp = client.post(path, data={"csrf": csrf, **forms.get(template, {})})
            assert resp.status_code == 404, (method, template, resp.status_code, resp.text[:300])
            for secret in (theirs.app_secret, theirs.external_id, theirs.user_token):
                assert secret not in resp.text, (method, template)

    # Nothing of theirs changed.
    with api(server) as plain:
        app = plain.get(f"/api/v1/apps/{theirs.app_key}", headers=theirs.bearer).json()
        assert app["title"] == "Shop"
        creds = plain.get(f"/api/v1/apps/{theirs.app_key}/credentials", headers=theirs.bearer)
        assert "huawei" not in [c["platform"] for c in creds.json()["credentials"]]
        subscriber = plain.get(f"/api/v1/subscribers/{theirs.subscriber_id}", headers=theirs.bearer)
        assert subscriber.status_code == 200
        devices = plain.get("/api/v1/devices", headers=theirs.bearer).json()["devices"]
        assert [d["enabled"] for d in devices if d["id"] == theirs.device_id] == [True]
        assert len(devices) == 1  # the try page registered nothing in their app
        keys = plain.get("/api/v1/keys", headers=theirs.bearer).json()["keys"]
        (key,) = [k for k in keys if k["id"] == theirs.key_id]
        assert key["revoked_at"] is None and key["per_minute"] is None
        sending = plain.get(f"/api/v1/sendings/{theirs.sending_id}", headers=theirs.bearer).json()
        assert sending["state"] == "waiting" and len(sending["pushes"]) == 1
    # The sendings list shows only the own account's.
    client, _csrf = signed_in_client(server, mine)
    with closing(client):
        listed = client.get("/dashboard/sendings").text
    assert f'id="sending-{mine.sending_id}"' in listed
    assert f'id="sending-{theirs.sending_id}"' not in listed


def test_overview_and_live_stream_show_only_the_own_account(
    server: ServerProcess, tenants: tuple[Tenant, Tenant]
) -> None:
    mine, _theirs = tenants
    # A fresh account of its own: its numbers are exactly its own.
    other = make_tenant(server)
    client, _csrf = signed_in_client(server, mine)
    with closing(client):
        before = client.get("/dashboard/").text
        with client.stream("GET", "/dashboard/live/stream") as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            with api(server) as plain:
                send(plain, other, "not for you")
                own_id = send(plain, mine, "for you")
            seen = ""
            deadline = time.monotonic() + 10
            for chunk in stream.iter_text():
                seen += chunk
                if f'"notification_id":{own_id}' in seen or time.monotonic() > deadline:
                    break
        assert f'"notification_id":{own_id}' in seen
        assert "not for you" not in seen
        after = client.get("/dashboard/").text
    today = re.compile(r'id="accepted-today">(\d+)<')
    assert int(today.search(after).group(1)) == int(today.search(before).group(1)) + 1  # type: ignore[union-attr]


# --------------------------------------------------------------------------- docs, proxies


ROOT = Path(__file__).resolve().parents[2]


def test_docs_set_password_block_runs_as_written(
    server: ServerProcess, tenants: tuple[Tenant, Tenant], tmp_path: Path
) -> None:
    """docs/dashboard.md's command, run as written; its e-mail and password then sign in."""
    tenant, _other = tenants
    (block,) = re.findall(r"```bash\n(.*?)```", (ROOT / "docs" / "dashboard.md").read_text(), re.S)
    env = cli_env(server.data_dir)
    env.update(
        ACCOUNT_ID=str(tenant.account_id),
        DASHBOARD_PASSWORD=PASSWORD,
        PATH=str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""),
    )
    result = subprocess.run(
        ["bash", "-c", "set -euo pipefail\n" + block],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    with api(server) as client:
        form = client.get("/dashboard/sign-in")
        resp = client.post(
            "/dashboard/sign-in",
            data={"csrf": csrf_of(form.text), "email": "owner@example.com", "password": PASSWORD},
        )
        assert resp.status_code == 303, resp.text
        assert "pushgate_session" in resp.headers["set-cookie"]


def test_secure_cookie_behind_https_proxy_and_sign_in_throttle(make_server: Any) -> None:
    srv = make_server(
        env={
            "PUSHGATE_TRUSTED_PROXIES": "127.0.0.1",
            "PUSHGATE_AUTH_FAILURES_PER_MINUTE": "3",
        }
    )
    account = create_account(srv.data_dir, unique("proxy"))
    https = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "198.51.100.7"}
    with api(srv) as client:
        form = client.get("/dashboard/sign-in", headers=https)
        assert "; secure" in form.headers["set-cookie"].lower()
        client.cookies.set("pushgate_signin", form.cookies["pushgate_signin"])
        resp = client.post(
            "/dashboard/sign-in",
            headers=https,
            data={"csrf": csrf_of(form.text), "user_token": account["user_token"]},
        )
        assert resp.status_code == 303, resp.text
        cookie = resp.headers["set-cookie"].lower()
        assert "pushgate_session=" in cookie and "; secure" in cookie and "httponly" in cookie
        assert "samesite=strict" in cookie

    # Wrong tokens from one address: refused, then throttled (even the right one).
    elsewhere = {"X-Forwarded-For": "198.51.100.8"}
    with api(srv) as client:
        csrf = csrf_of(client.get("/dashboard/sign-in", headers=elsewhere).text)
        codes = [
            client.post(
                "/dashboard/sign-in", headers=elsewhere, data={"csrf": csrf, "user_token": "0" * 32}
            ).status_code
            for _ in range(4)
        ]
        assert codes == [401, 401, 401, 429]
        resp = client.post(
            "/dashboard/sign-in",
            headers=elsewhere,
            data={"csrf": csrf, "user_token": account["user_token"]},
        )
        assert resp.status_code == 429 and "Too many" in resp.text
