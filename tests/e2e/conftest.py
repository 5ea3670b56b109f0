"""End-to-end fixtures: real `pushgate serve` processes on loopback, real HTTP/WS/SSE clients.

Test modules import the helpers below as ``from e2e_support import ...``: this conftest registers
itself under that name, which stays unambiguous however many other conftest.py files exist.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import pytest
from websockets.asyncio.client import ClientConnection, connect

from pushgate.testing.fake_apns import FakeApns
from pushgate.testing.fake_fcm import FakeFcm
from pushgate.testing.fake_hms import FakeHms
from pushgate.testing.fake_webpush import FakeWebPush
from pushgate.testing.server import ServerProcess, cli_env, create_account

SIGNUP_TEMPLATE = "{email} has signed up from {country}"
SIGNUP_TRACKERS = {"email": "ann@example.com", "country": "NL"}
SIGNUP_MESSAGE = "ann@example.com has signed up from NL"

ServerFactory = Callable[..., ServerProcess]

sys.modules["e2e_support"] = sys.modules[__name__]


# --------------------------------------------------------------------------- servers


# Test servers take every request from 127.0.0.1, and many tests make wrong credentials on
# purpose: the failed-authentication throttle is tested on servers of its own
# (test_e2e_security.py), and lifted on the others.
NO_THROTTLE = {
    "PUSHGATE_AUTH_FAILURES_PER_MINUTE": "1000000",
    "PUSHGATE_AUTH_FAILURES_PER_KEY_PER_MINUTE": "1000000",
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server per test module; tests use their own accounts so they do not interfere."""
    with ServerProcess(tmp_path_factory.mktemp("pushgate-data"), NO_THROTTLE) as srv:
        yield srv


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator[ServerFactory]:
    """Start extra servers (own data dir unless given, extra env); all stopped at teardown."""
    started: list[ServerProcess] = []

    def factory(
        data_dir: Path | None = None, env: Mapping[str, str] | None = None
    ) -> ServerProcess:
        if data_dir is None:
            data_dir = tmp_path / f"data-{len(started)}"
        srv = ServerProcess(data_dir, {**NO_THROTTLE, **(env or {})})
        started.append(srv)
        return srv.start()

    yield factory
    for srv in started:
        srv.stop()


@pytest.fixture
async def http(server: ServerProcess) -> AsyncIterator[httpx2.AsyncClient]:
    async with client_for(server) as client:
        yield client


def client_for(server: ServerProcess) -> httpx2.AsyncClient:
    return httpx2.AsyncClient(base_url=server.url, timeout=10.0, trust_env=False)


# --------------------------------------------------------------------------- Instapush setup


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@dataclass
class Tenant:
    """An account with one app (and its signups event when made by `make_tenant`)."""

    data_dir: Path
    user_token: str
    app_id: str = ""
    app_secret: str = ""
    account_id: int = 0

    @property
    def user_headers(self) -> dict[str, str]:
        return {"x-instapush-token": self.user_token}

    @property
    def bearer(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.user_token}"}

    @property
    def app_headers(self) -> dict[str, str]:
        return {"x-instapush-appid": self.app_id, "x-instapush-appsecret": self.app_secret}


def new_account(data_dir: Path) -> Tenant:
    account = create_account(data_dir, unique("acct"))
    assert isinstance(account["user_token"], str) and account["user_token"]
    return Tenant(data_dir=data_dir, user_token=account["user_token"], account_id=account["id"])


async def add_app(http: httpx2.AsyncClient, tenant: Tenant, title: str = "test") -> None:
    resp = await http.post("/v1/apps/add", headers=tenant.user_headers, json={"title": title})
    assert resp.status_code == 201, resp.text
    body = resp.json()
    tenant.app_id, tenant.app_secret = body["id"], body["secret"]


async def add_event(
    http: httpx2.AsyncClient,
    tenant: Tenant,
    title: str = "signups",
    trackers: list[str] | None = None,
    message: str = SIGNUP_TEMPLATE,
) -> httpx2.Response:
    payload = {
        "title": title,
        "trackers": ["email", "country"] if trackers is None else trackers,
        "message": message,
    }
    return await http.post("/v1/events/add", headers=tenant.app_headers, json=payload)


async def make_tenant(http: httpx2.AsyncClient, data_dir: Path) -> Tenant:
    """Account (CLI) + app + the reference's signups event."""
    tenant = new_account(data_dir)
    await add_app(http, tenant)
    resp = await add_event(http, tenant)
    assert resp.status_code == 201, resp.text
    return tenant


def make_tenant_sync(server: ServerProcess) -> Tenant:
    """`make_tenant` for sync (e.g. module-scoped) fixtures."""
    tenant = new_account(server.data_dir)
    with httpx2.Client(base_url=server.url, timeout=10.0, trust_env=False) as client:
        resp = client.post("/v1/apps/add", headers=tenant.user_headers, json={"title": "test"})
        assert resp.status_code == 201, resp.text
        tenant.app_id, tenant.app_secret = resp.json()["id"], resp.json()["secret"]
        payload = {"title": "signups", "trackers": ["email", "country"], "message": SIGNUP_TEMPLATE}
        resp = client.post("/v1/events/add", headers=tenant.app_headers, json=payload)
        assert resp.status_code == 201, resp.text
    return tenant


async def post_event(
    http: httpx2.AsyncClient,
    tenant: Tenant,
    trackers: Mapping[str, Any] | None = None,
    event: str = "signups",
) -> httpx2.Response:
    payload = {"event": event, "trackers": dict(SIGNUP_TRACKERS if trackers is None else trackers)}
    return await http.post("/v1/post", headers=tenant.app_headers, json=payload)


async def post_ok(
    http: httpx2.AsyncClient,
    tenant: Tenant,
    trackers: Mapping[str, Any] | None = None,
    event: str = "signups",
) -> int:
    """Post an event; returns the accepted notification's id."""
    resp = await post_event(http, tenant, trackers, event)
    assert resp.status_code == 201, resp.text
    assert resp.json() == {"msg": "Notification Sent Succesfully", "error": False, "status": 201}
    return int(resp.headers["x-pushgate-notification-id"])


async def register_device(
    http: httpx2.AsyncClient, tenant: Tenant, name: str = "e2e device"
) -> dict[str, Any]:
    resp = await http.post(
        "/api/v1/devices", headers=tenant.bearer, json={"platform": "channel", "name": name}
    )
    assert resp.status_code == 201, resp.text
    device: dict[str, Any] = resp.json()
    assert isinstance(device["device_token"], str) and device["device_token"]
    return device


# --------------------------------------------------------------------------- native API


async def latest_notification_id(http: httpx2.AsyncClient, tenant: Tenant) -> int:
    resp = await http.get("/api/v1/notifications", headers=tenant.bearer)
    assert resp.status_code == 200, resp.text
    notifications = resp.json()["notifications"]
    assert notifications, "no notification listed"
    notification_id: int = notifications[0]["id"]
    return notification_id


async def deliveries(
    http: httpx2.AsyncClient, tenant: Tenant, notification_id: int
) -> list[dict[str, Any]]:
    resp = await http.get(
        f"/api/v1/notifications/{notification_id}/deliveries", headers=tenant.bearer
    )
    assert resp.status_code == 200, resp.text
    result: list[dict[str, Any]] = resp.json()["deliveries"]
    return result


async def wait_delivery_status(
    http: httpx2.AsyncClient,
    tenant: Tenant,
    notification_id: int,
    status: str,
    timeout: float = 10.0,
) -> list[dict[str, Any]]:
    """Poll the deliveries endpoint until every delivery has `status`."""
    deadline = time.monotonic() + timeout
    while True:
        rows = await deliveries(http, tenant, notification_id)
        if rows and all(row["status"] == status for row in rows):
            return rows
        if time.monotonic() > deadline:
            pytest.fail(f"deliveries of {notification_id} never became {status!r}: {rows}")
        await asyncio.sleep(0.1)


async def wait_fanned_out(
    http: httpx2.AsyncClient, tenant: Tenant, notification_ids: Sequence[int]
) -> None:
    """Until every notification has its deliveries (the fan-out runs after the 2xx answer)."""
    for notification_id in notification_ids:
        await wait_delivery_status(http, tenant, notification_id, "queued")


# --------------------------------------------------------------------------- audience core


async def make_app(http: httpx2.AsyncClient, tenant: Tenant, title: str = "shop") -> str:
    resp = await http.post("/api/v1/apps", headers=tenant.bearer, json={"title": title})
    assert resp.status_code == 201, resp.text
    body = resp.json()
    tenant.app_id, tenant.app_secret = body["id"], body["secret"]
    return str(body["id"])


async def subscriber(
    http: httpx2.AsyncClient, tenant: Tenant, app_id: str, **body: Any
) -> dict[str, Any]:
    resp = await http.put(f"/api/v1/apps/{app_id}/subscribers", headers=tenant.bearer, json=body)
    assert resp.status_code in (200, 201), resp.text
    view: dict[str, Any] = resp.json()
    return view


async def app_device(
    http: httpx2.AsyncClient, tenant: Tenant, app_id: str, **body: Any
) -> dict[str, Any]:
    resp = await http.post(
        "/api/v1/devices",
        headers=tenant.bearer,
        json={"platform": "channel", "app_id": app_id, **body},
    )
    assert resp.status_code == 201, resp.text
    made: dict[str, Any] = resp.json()
    return made


async def send(
    http: httpx2.AsyncClient, tenant: Tenant, body: dict[str, Any], **headers: str
) -> httpx2.Response:
    return await http.post(
        "/api/v1/notifications",
        headers={**tenant.bearer, **headers},
        json={"app_id": tenant.app_id, "message": "hello", **body},
    )


async def polled(http: httpx2.AsyncClient, token: str) -> list[dict[str, Any]]:
    resp = await http.get("/api/v1/channel/poll", headers={"Authorization": f"Bearer {token}"})
    assert resp.status_code == 200, resp.text
    items: list[dict[str, Any]] = resp.json()["notifications"]
    return items


# --------------------------------------------------------------------------- channel clients


def ws_url(server: ServerProcess, token: str | None = None, since: int | None = None) -> str:
    url = server.url.replace("http://", "ws://", 1) + "/api/v1/channel/ws"
    params = []
    if token is not None:
        params.append(f"token={token}")
    if since is not None:
        params.append(f"since={since}")
    return url + ("?" + "&".join(params) if params else "")


def ws_connect(
    server: ServerProcess,
    token: str | None = None,
    since: int | None = None,
    headers: Mapping[str, str] | None = None,
) -> connect:
    return connect(
        ws_url(server, token, since),
        additional_headers=dict(headers or {}),
        open_timeout=10,
        close_timeout=2,
        compression=None,
        proxy=None,
    )


async def ws_recv(ws: ClientConnection, timeout: float = 5.0) -> dict[str, Any]:
    try:
        raw = await asyncio.wait_for(ws.recv(), timeout)
    except TimeoutError:
        pytest.fail(f"no WebSocket message within {timeout} s")
    message: dict[str, Any] = json.loads(raw)
    return message


async def ws_until_ready(
    ws: ClientConnection, timeout: float = 5.0
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Read the backlog up to the `ready` message; returns (notifications, ready)."""
    backlog: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while True:
        message = await ws_recv(ws, max(0.05, deadline - time.monotonic()))
        if message.get("type") == "ready":
            return backlog, message
        assert message.get("type") == "notification", message
        backlog.append(message)


async def ws_expect_silence(ws: ClientConnection, seconds: float) -> None:
    try:
        raw = await asyncio.wait_for(ws.recv(), seconds)
    except TimeoutError:
        return
    pytest.fail(f"unexpected WebSocket message: {raw!r}")


async def with_timeout(awaitable: Awaitable[Any], timeout: float, what: str) -> Any:
    try:
        return await asyncio.wait_for(awaitable, timeout)
    except TimeoutError:
        pytest.fail(f"timed out after {timeout} s waiting for {what}")


# --------------------------------------------------------------------------- fake providers


class Fakes:
    def __init__(self) -> None:
        self.apns = FakeApns()
        self.fcm = FakeFcm()
        self.hms = FakeHms()
        self.webpush = FakeWebPush()

    def all(self) -> tuple[Any, ...]:
        return (self.apns, self.fcm, self.hms, self.webpush)

    def env(self) -> dict[str, str]:
        return {
            "PUSHGATE_APNS_URL": self.apns.url,
            "PUSHGATE_FCM_URL": self.fcm.url,
            "PUSHGATE_HMS_URL": self.hms.url,
            "PUSHGATE_HMS_TOKEN_URL": self.hms.token_url,
            "PUSHGATE_PROVIDER_CA_FILE": str(self.apns.ca_file),
            "PUSHGATE_EGRESS_ALLOW": "127.0.0.0/8",
            "PUSHGATE_FCM_TOKEN_HOSTS": "127.0.0.1",
            "PUSHGATE_RETRY_BASE_SECONDS": "0.2",
            "PUSHGATE_RETRY_MAX_SECONDS": "1",
        }


@pytest.fixture(scope="module")
def fakes() -> Iterator[Fakes]:
    """The four fake providers of ``pushgate.testing``, started for the test module."""
    fakes = Fakes()
    for fake in fakes.all():
        fake.start()
    try:
        yield fakes
    finally:
        for fake in fakes.all():
            fake.stop()


# --------------------------------------------------------------------------- docs


def run_bash_doc(server: ServerProcess, doc: Path, cwd: Path, user_token: str) -> str:
    """Every ``bash`` block of ``doc``, run in order as one script against ``server`` (with
    ``PUSHGATE`` and ``USER_TOKEN`` set); its output, the blocks' outputs separated by
    ``-----`` lines. Fails the test when the script fails."""
    blocks = re.findall(r"```bash\n(.*?)```", doc.read_text(), re.S)
    script = "set -euo pipefail\n" + "\necho '-----'\n".join(blocks)
    env = cli_env(server.data_dir)
    env.update(
        PUSHGATE=server.url,
        USER_TOKEN=user_token,
        PATH=str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""),
    )
    result = subprocess.run(
        ["bash", "-c", script], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


# --------------------------------------------------------------------------- the browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def require_chromium() -> None:
    """Debian's Chromium (never a downloaded browser): a skip without it, a failure when the
    services are required (``.ci/run`` installs it)."""
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} is not installed (Debian package chromium; .ci/run installs it)"
        if os.environ.get("PUSHGATE_REQUIRE_SERVICES") == "1":
            raise AssertionError(message)
        pytest.skip(message)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium (Playwright), one per test module."""
    require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()
