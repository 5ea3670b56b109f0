"""Security and robustness, against real server processes: hostile keys, server-side request
forgery, the failed-authentication throttle, connection limits, secrets in the log, the
channel kept to channel devices, odd JSON, disconnects, file permissions."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import select
import socket
import stat
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from e2e_support import (
    ServerFactory,
    Tenant,
    add_app,
    client_for,
    make_tenant,
    new_account,
    post_ok,
    register_device,
    wait_delivery_status,
    wait_fanned_out,
    ws_connect,
    ws_until_ready,
)
from provider_support import pem, service_account
from websockets.exceptions import InvalidStatus

from pushgate.domain.credentials import b64url
from pushgate.testing.server import ServerProcess, create_account, run_cli

IOS_TOKEN = "ab" * 32


def rsa_pem(bits: int) -> str:
    return pem(rsa.generate_private_key(65537, bits))


@contextlib.asynccontextmanager
async def client_from(server: ServerProcess, address: str) -> AsyncIterator[httpx2.AsyncClient]:
    """A client whose connections come from ``address`` (any 127.x.y.z on loopback)."""
    transport = httpx2.AsyncHTTPTransport(local_address=address)
    async with httpx2.AsyncClient(
        base_url=server.url, timeout=10.0, trust_env=False, transport=transport
    ) as client:
        yield client


# --------------------------------------------------------------------------- keys and SSRF


async def test_keys_too_large_or_of_the_wrong_kind_are_refused_at_once(
    http: httpx2.AsyncClient, server: ServerProcess
) -> None:
    tenant = await make_tenant(http, server.data_dir)
    huge = rsa_pem(8192)
    url = f"/api/v1/apps/{tenant.app_id}/credentials"
    google = "https://oauth2.googleapis.com/token"
    answers = await asyncio.gather(
        http.put(url + "/android", headers=tenant.bearer, json=service_account(huge, google)),
        http.put(
            url + "/ios",
            headers=tenant.bearer,
            json={
                "key_id": "ABC123DEFG",
                "team_id": "DEF123GHIJ",
                "topic": "com.example.app",
                "private_key": huge,
            },
        ),
        http.put(
            url + "/android", headers=tenant.bearer, json=service_account(rsa_pem(1024), google)
        ),
    )
    assert [a.status_code for a in answers] == [400, 400, 400], [a.text for a in answers]
    assert "longer than any accepted key" in answers[0].json()["error"]["message"]
    assert "RSA key of 2048 to 4096 bits" in answers[0].json()["error"]["message"]
    assert "EC key on P-256" in answers[1].json()["error"]["message"]
    assert "(got 1024 bits)" in answers[2].json()["error"]["message"]


@pytest.mark.parametrize(
    "token_uri",
    [
        "http://127.0.0.1:9/token",
        "https://localhost.attacker.example/token",
        "https://127.0.0.1@169.254.169.254/token",
        "https://169.254.169.254/computeMetadata/v1/token",
    ],
)
async def test_a_service_account_must_use_googles_token_endpoint(
    http: httpx2.AsyncClient, server: ServerProcess, token_uri: str
) -> None:
    tenant = await make_tenant(http, server.data_dir)
    resp = await http.put(
        f"/api/v1/apps/{tenant.app_id}/credentials/android",
        headers=tenant.bearer,
        json=service_account(rsa_pem(2048), token_uri),
    )
    assert resp.status_code == 400, resp.text
    assert "token_uri" in resp.json()["error"]["message"]


def subscription(endpoint: str) -> dict[str, Any]:
    point = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    )
    return {"endpoint": endpoint, "keys": {"p256dh": b64url(point), "auth": b64url(os.urandom(16))}}


@pytest.mark.parametrize(
    "endpoint",
    [
        "https://127.0.0.1:8443/push/x",
        "https://localhost:8443/push/x",
        "https://[::1]:8443/push/x",
        "https://2130706433:8443/push/x",
        "https://0x7f000001:8443/push/x",
        "https://127.1:8443/push/x",
        "https://0:8443/push/x",
        "https://169.254.169.254/latest/meta-data/",
        "https://[::ffff:10.0.0.1]/push/x",
    ],
)
async def test_web_push_endpoints_on_internal_addresses_are_refused(
    http: httpx2.AsyncClient, server: ServerProcess, endpoint: str
) -> None:
    tenant = new_account(server.data_dir)
    await add_app(http, tenant)
    resp = await http.post(
        "/api/v1/devices",
        headers=tenant.bearer,
        json={"platform": "web", "app_id": tenant.app_id, "subscription": subscription(endpoint)},
    )
    assert resp.status_code == 400, resp.text
    message = resp.json()["error"]["message"]
    assert "subscription.endpoint is refused" in message and "egress_allow" in message


async def test_an_endpoint_that_does_not_resolve_now_is_accepted(
    http: httpx2.AsyncClient, server: ServerProcess
) -> None:
    tenant = new_account(server.data_dir)
    await add_app(http, tenant)
    body = {
        "platform": "web",
        "app_id": tenant.app_id,
        "subscription": subscription("https://push.example.invalid/x"),
    }
    resp = await http.post("/api/v1/devices", headers=tenant.bearer, json=body)
    assert resp.status_code == 201, resp.text


async def test_devices_per_subscriber_are_capped(make_server: ServerFactory) -> None:
    server = make_server(env={"PUSHGATE_MAX_DEVICES_PER_SUBSCRIBER": "2"})
    tenant = new_account(server.data_dir)
    async with client_for(server) as http:
        body = {"platform": "channel", "external_id": "user-1"}
        for _ in range(2):
            ok = await http.post("/api/v1/devices", headers=tenant.bearer, json=body)
            assert ok.status_code == 201, ok.text
        refused = await http.post("/api/v1/devices", headers=tenant.bearer, json=body)
        assert refused.status_code == 409, refused.text
        assert "max_devices_per_subscriber" in refused.json()["error"]["message"]
        other = {"platform": "channel", "external_id": "user-2"}
        assert (await http.post("/api/v1/devices", headers=tenant.bearer, json=other)).is_success


# --------------------------------------------------------------------------- the throttle


@pytest.fixture(scope="module")
def throttled_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    env = {
        "PUSHGATE_AUTH_FAILURES_PER_MINUTE": "5",
        "PUSHGATE_AUTH_FAILURES_PER_KEY_PER_MINUTE": "3",
    }
    with ServerProcess(tmp_path_factory.mktemp("throttled"), env) as srv:
        yield srv


async def test_wrong_secrets_are_throttled_per_app_id(throttled_server: ServerProcess) -> None:
    async with client_for(throttled_server) as http:
        tenant = await make_tenant(http, throttled_server.data_dir)
    wrong = {"x-instapush-appid": tenant.app_id, "x-instapush-appsecret": "0" * 32}
    async with (
        client_from(throttled_server, "127.0.0.1") as own,
        client_from(throttled_server, "127.0.0.2") as guesser,
        client_from(throttled_server, "127.0.0.3") as newcomer,
    ):
        assert (await guesser.get("/v1/events/list", headers=wrong)).status_code == 401
        # The app's own server authenticates while its appID is being guessed at.
        assert (await own.get("/v1/events/list", headers=tenant.app_headers)).status_code == 200
        for _ in range(2):
            assert (await guesser.get("/v1/events/list", headers=wrong)).status_code == 401
        refused = await newcomer.get("/v1/events/list", headers=tenant.app_headers)
        assert refused.status_code == 429, refused.text
        body = refused.json()
        assert body["error"] is True and body["status"] == 429
        assert "Too many failed authentications" in body["msg"]
        assert 1 <= int(refused.headers["retry-after"]) <= 60
        assert (await guesser.get("/v1/events/list", headers=wrong)).status_code == 429
        for _ in range(20):  # successful traffic goes on
            ok = await own.get("/v1/events/list", headers=tenant.app_headers)
            assert ok.status_code == 200


async def test_wrong_tokens_are_throttled_per_address(throttled_server: ServerProcess) -> None:
    async with client_for(throttled_server) as http:
        tenant = await make_tenant(http, throttled_server.data_dir)
        device = await register_device(http, tenant)
    async with client_from(throttled_server, "127.0.0.4") as http:
        for _ in range(5):
            resp = await http.get("/api/v1/devices", headers={"Authorization": "Bearer nope"})
            assert resp.status_code == 401
        resp = await http.get("/api/v1/devices", headers=tenant.bearer)
        assert resp.status_code == 429, resp.text
        assert resp.json()["error"]["code"] == "too_many_requests"
        assert "retry-after" in resp.headers
        instapush = await http.get("/v1/apps/list", headers=tenant.user_headers)
        assert instapush.status_code == 429 and instapush.json()["status"] == 429
    async with client_from(throttled_server, "127.0.0.5") as http:
        headers = {"Authorization": "Bearer dvt_" + "0" * 48}
        for _ in range(5):
            assert (await http.get("/api/v1/channel/poll", headers=headers)).status_code == 401
        good = {"Authorization": f"Bearer {device['device_token']}"}
        assert (await http.get("/api/v1/channel/poll", headers=good)).status_code == 429


# --------------------------------------------------------------------------- connections


@pytest.fixture(scope="module")
def limited_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    env = {
        "PUSHGATE_HEADER_TIMEOUT_SECONDS": "1",
        "PUSHGATE_BODY_TIMEOUT_SECONDS": "1",
        "PUSHGATE_MAX_CONNECTIONS": "40",
    }
    with ServerProcess(tmp_path_factory.mktemp("limited"), env) as srv:
        yield srv


def raw_exchange(server: ServerProcess, data: bytes, timeout: float = 10.0) -> bytes:
    with socket.create_connection(("127.0.0.1", server.port), timeout=timeout) as sock:
        if data:
            sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


def test_idle_and_half_sent_connections_are_closed(limited_server: ServerProcess) -> None:
    assert raw_exchange(limited_server, b"") == b""
    answer = raw_exchange(limited_server, b"GET /api/v1/health HTTP/1.1\r\nhost: x\r\n")
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    stalled = b"POST /api/v1/ping HTTP/1.1\r\nhost: x\r\ncontent-length: 500\r\n\r\n{"
    assert raw_exchange(limited_server, stalled) == b""


def test_huge_headers_get_431(limited_server: ServerProcess) -> None:
    request = (
        b"GET /api/v1/devices HTTP/1.1\r\nhost: x\r\nauthorization: Bearer "
        + b"a" * 8_000_000
        + b"\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", limited_server.port), timeout=10) as sock:
        with contextlib.suppress(ConnectionError):
            sock.sendall(request)
        answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]


def test_connections_past_the_limit_get_503(make_server: ServerFactory) -> None:
    server = make_server(env={"PUSHGATE_MAX_CONNECTIONS": "20"})
    held = [socket.create_connection(("127.0.0.1", server.port), timeout=10) for _ in range(25)]
    try:
        time.sleep(1.0)  # the server answers refused connections at once
        readable, _, _ = select.select(held, [], [], 0)
        answers = [sock.recv(1024) if sock in readable else None for sock in held]
        refused = [a for a in answers if a is not None]
        assert answers[:20] == [None] * 20  # held open, waiting for a request
        assert len(refused) == 5 and all(a.startswith(b"HTTP/1.1 503 ") for a in refused)
        assert b"connection limit" in refused[0]
    finally:
        for sock in held:
            sock.close()


async def test_channel_connections_outlive_the_header_timeout(
    limited_server: ServerProcess,
) -> None:
    async with client_for(limited_server) as http:
        tenant = await make_tenant(http, limited_server.data_dir)
        device = await register_device(http, tenant)
        async with ws_connect(limited_server, device["device_token"]) as ws:
            await ws_until_ready(ws)
            await asyncio.sleep(2.5)
            notification_id = await post_ok(http, tenant)
            message = json.loads(await asyncio.wait_for(ws.recv(), 5))
            assert message["id"] == notification_id


# --------------------------------------------------------------------------- the channel


async def test_only_channel_devices_use_the_channel(
    http: httpx2.AsyncClient, server: ServerProcess
) -> None:
    tenant = await make_tenant(http, server.data_dir)
    resp = await http.post(
        "/api/v1/devices",
        headers=tenant.bearer,
        json={"platform": "ios", "app_id": tenant.app_id, "token": IOS_TOKEN},
    )
    assert resp.status_code == 201, resp.text
    ios = {"Authorization": f"Bearer {resp.json()['device_token']}"}
    notification_id = await post_ok(http, tenant)
    poll = await http.get("/api/v1/channel/poll", headers=ios)
    assert poll.status_code == 401, poll.text
    assert "channel device" in poll.json()["error"]["message"]
    ack = await http.post("/api/v1/channel/ack", headers=ios, json={"ids": [notification_id]})
    assert ack.status_code == 401
    sse = await http.get("/api/v1/channel/sse", headers=ios)
    assert sse.status_code == 401
    with pytest.raises(InvalidStatus) as refused:
        async with ws_connect(server, resp.json()["device_token"]):
            pass
    assert refused.value.response.status_code == 401
    rows = await wait_delivery_status(http, tenant, notification_id, "failed")
    assert all(row["status"] == "failed" for row in rows)  # never "delivered"


# --------------------------------------------------------------------------- odd input


ODD_SENDS = [
    ({"data": {"a": 2**70}}, "64-bit"),
    ("1e999", "too large for a double"),
    ("NaN", "not a JSON number"),
    ("-Infinity", "not a JSON number"),
    ({"badge": True}, "badge"),
    ({"ttl_seconds": True}, "ttl_seconds"),
    ({"sound": "a\u0000"}, "NUL"),
    ({"collapse_key": "a\u0000"}, "NUL"),
    ({"data": {"k\u0000": 1}}, "NUL"),
    ({"data": {"k": ["a\u0000"]}}, "NUL"),
    ({"data": {"k": 1.5, "n": None}}, None),
]


def nested(levels: int) -> Any:
    value: Any = 1
    for _ in range(levels):
        value = {"a": value}
    return value


async def odd_sends(http: httpx2.AsyncClient, tenant: Tenant) -> None:
    base = {"app_id": tenant.app_id, "message": "hello"}
    for extra, expected in ODD_SENDS:
        if isinstance(extra, str):
            content = json.dumps({**base, "data": {"x": "PLACEHOLDER"}}).replace(
                '"PLACEHOLDER"', extra
            )
        else:
            content = json.dumps({**base, **extra})
        resp = await http.post(
            "/api/v1/notifications",
            headers={**tenant.bearer, "content-type": "application/json"},
            content=content,
        )
        if expected is None:
            assert resp.status_code == 201, resp.text
            continue
        assert resp.status_code == 400, (extra, resp.text)
        assert expected in resp.json()["error"]["message"], (extra, resp.text)
    for body in (json.dumps({**base, "data": nested(300)}), "[" * 100_000 + "]" * 100_000):
        resp = await http.post(
            "/api/v1/notifications",
            headers={**tenant.bearer, "content-type": "application/json"},
            content=body,
        )
        assert resp.status_code in (400, 413), resp.text
        assert resp.status_code != 400 or "nested" in resp.json()["error"]["message"]


async def test_odd_json_is_a_clear_400_on_sqlite(
    http: httpx2.AsyncClient, server: ServerProcess
) -> None:
    await odd_sends(http, await make_tenant(http, server.data_dir))


async def test_odd_json_is_a_clear_400_on_postgresql(
    make_server: ServerFactory, postgres_database_url: str
) -> None:
    env = {"PUSHGATE_DATABASE_URL": postgres_database_url}
    server = make_server(env=env)
    account = create_account(server.data_dir, "pg", env)
    tenant = Tenant(data_dir=server.data_dir, user_token=account["user_token"])
    async with client_for(server) as http:
        await add_app(http, tenant)
        await odd_sends(http, tenant)


async def test_instapush_keeps_only_declared_trackers_and_caps_them(
    http: httpx2.AsyncClient, server: ServerProcess
) -> None:
    tenant = await make_tenant(http, server.data_dir)
    device = await register_device(http, tenant)
    many = {f"t{n}": "value" for n in range(10_000)}
    resp = await http.post(
        "/v1/post",
        headers=tenant.app_headers,
        json={"event": "signups", "trackers": {"email": "a@b.c", "country": "NL", **many}},
    )
    assert resp.status_code == 201, resp.text
    await wait_fanned_out(http, tenant, [int(resp.headers["x-pushgate-notification-id"])])
    big = {"email": "a@b.c" + "x" * 5000, "country": "NL"}
    too_big = await http.post(
        "/v1/post", headers=tenant.app_headers, json={"event": "signups", "trackers": big}
    )
    assert too_big.status_code == 400, too_big.text
    assert "4096 bytes" in too_big.json()["msg"]
    poll = await http.get(
        "/api/v1/channel/poll", headers={"Authorization": f"Bearer {device['device_token']}"}
    )
    (notification,) = poll.json()["notifications"]
    assert notification["data"] == {"email": "a@b.c", "country": "NL"}


# --------------------------------------------------------------------------- bodies


async def chunked_answer(server: ServerProcess, path: str, headers: dict[str, str]) -> bytes:
    """The status line of the answer to a chunked POST of 512 KiB, read while sending (the
    server may answer before the body is over)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    head = f"POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    head += "transfer-encoding: chunked\r\n\r\n"

    async def send() -> None:
        writer.write(head.encode())
        chunk = b"x" * 65536
        with contextlib.suppress(ConnectionError):
            for _ in range(8):
                writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                await writer.drain()
            writer.write(b"0\r\n\r\n")
            await writer.drain()

    sending = asyncio.create_task(send())
    try:
        return await asyncio.wait_for(reader.readline(), 10)
    finally:
        sending.cancel()
        with contextlib.suppress(BaseException):
            await sending
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def test_body_limits_answer_413_after_authentication(
    http: httpx2.AsyncClient, server: ServerProcess
) -> None:
    tenant = await make_tenant(http, server.data_dir)
    cases = [
        ("/api/v1/notifications", tenant.bearer, 413),
        ("/api/v1/notifications", {"authorization": "Bearer nope"}, 401),
        ("/api/v1/devices", tenant.bearer, 413),
        ("/v1/post", tenant.app_headers, 413),
        ("/v1/post", {"x-instapush-appid": "nope", "x-instapush-appsecret": "nope"}, 401),
    ]
    for path, headers, status in cases:
        line = await chunked_answer(server, path, headers)
        assert line.startswith(f"HTTP/1.1 {status} ".encode()), (path, line)
        declared = await http.post(path, headers=headers, content=b"x" * (300 * 1024))
        assert declared.status_code == status, (path, declared.text)


async def test_a_client_gone_mid_body_is_one_log_line(
    http: httpx2.AsyncClient, make_server: ServerFactory
) -> None:
    server = make_server()
    async with client_for(server) as client:
        tenant = await make_tenant(client, server.data_dir)
    for path, headers in (
        ("/api/v1/notifications", tenant.bearer),
        ("/v1/post", tenant.app_headers),
    ):
        head = f"POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        head += "".join(f"{n}: {v}\r\n" for n, v in headers.items())
        head += "content-length: 1000\r\n\r\n"
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            sock.sendall(head.encode() + b'{"app_id":')
            await asyncio.sleep(0.3)
    await asyncio.sleep(0.5)
    log = server.output()
    assert log.count("disconnected before its request") == 2, log
    assert "Traceback" not in log and "ERROR" not in log


# --------------------------------------------------------------------------- the log


async def test_no_secret_reaches_the_log(make_server: ServerFactory) -> None:
    server = make_server(env={"PUSHGATE_LOG_LEVEL": "debug"})
    secrets: list[str] = []
    async with client_for(server) as http:
        tenant = await make_tenant(http, server.data_dir)
        secrets += [tenant.user_token, tenant.app_secret]
        device = await register_device(http, tenant)
        token = device["device_token"]
        secrets.append(token)
        hms = await http.put(
            f"/api/v1/apps/{tenant.app_id}/credentials/huawei",
            headers=tenant.bearer,
            json={"app_id": "101234567", "client_secret": "hms-client-secret-4c1d"},
        )
        assert hms.status_code == 201
        secrets.append("hms-client-secret-4c1d")
        pem = rsa_pem(2048)
        await http.put(
            f"/api/v1/apps/{tenant.app_id}/credentials/android",
            headers=tenant.bearer,
            json=service_account(pem, "https://oauth2.googleapis.com/token"),
        )
        secrets += [line for line in pem.splitlines() if "-----" not in line][:3]
        async with ws_connect(server, token) as ws:
            await ws_until_ready(ws)
            await post_ok(http, tenant)
            await asyncio.wait_for(ws.recv(), 5)
        async with http.stream("GET", f"/api/v1/channel/sse?token={token}") as sse:
            async for line in sse.aiter_lines():
                if line.startswith("event: ready"):
                    break
        await http.get(f"/api/v1/channel/poll?token={token}")
        bad = "dvt_" + "f" * 48
        secrets.append(bad)
        with pytest.raises(InvalidStatus):
            async with ws_connect(server, bad):
                pass
        await http.get(f"/api/v1/channel/poll?token={bad}&x=1")
        wrong = {"x-instapush-appid": tenant.app_id, "x-instapush-appsecret": "wrong-secret-77"}
        secrets.append("wrong-secret-77")
        await http.get("/v1/events/list", headers=wrong)
        await wait_fanned_out(http, tenant, [await post_ok(http, tenant)])
    server.stop()
    log = server.output()
    assert "WebSocket" in log  # the handshakes were logged...
    for secret in secrets:
        assert secret not in log, f"a secret reached the log: {secret[:8]}..."
    # (401 as a number of its own: a client port such as 40138 is not one)
    status_401 = re.compile(r"(?<!\d)401(?!\d)")
    refused = [
        line for line in log.splitlines() if "dvt_[redacted]" in line or status_401.search(line)
    ]
    assert len([line for line in refused if "WebSocket" in line]) == 1, refused
    assert "ERROR" not in log


# --------------------------------------------------------------------------- files


def test_the_data_directory_and_database_are_private(tmp_path: Path) -> None:
    data_dir = tmp_path / "fresh" / "pushgate"
    result = run_cli(["account", "create", "acme", "--json"], data_dir)
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    for name in ("pushgate.db", "pushgate.db-wal", "pushgate.db-shm", "secret.key"):
        path = data_dir / name
        if path.exists():
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, name
    assert (data_dir / "pushgate.db").exists()


async def test_reading_the_public_key_writes_nothing(
    http: httpx2.AsyncClient, server: ServerProcess
) -> None:
    tenant = new_account(server.data_dir)
    await add_app(http, tenant)
    url = f"/api/v1/apps/{tenant.app_id}/credentials"
    created = (await http.get(url, headers=tenant.bearer)).json()["credentials"]
    assert [c["platform"] for c in created] == ["web"]  # every new app gets a key pair
    assert (await http.delete(url + "/web", headers=tenant.bearer)).status_code == 204
    missing = await http.get(f"/api/v1/apps/{tenant.app_id}/web-push/public-key")
    assert missing.status_code == 404, missing.text
    assert "credentials/web/generate" in missing.json()["error"]["message"]
    assert (await http.get(url, headers=tenant.bearer)).json()["credentials"] == []
