"""The FCM transport with a real HTTP sender against the fake FCM (TLS, its token endpoint
checking the signed assertion)."""

from __future__ import annotations

import asyncio
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from typing import Any

import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from provider_support import StaticSource, local_negotiated_sender, local_sender, targets

from pushgate.domain.credentials import FcmCredentials
from pushgate.domain.outcomes import Delivered, PermanentFailure, RetryLater, TokenInvalid
from pushgate.domain.push_options import PushOptions
from pushgate.testing.fake_fcm import FakeFcm, check_message
from pushgate.testing.tls import local_ca
from pushgate.transports.base import Content
from pushgate.transports.fcm import FcmTransport


@pytest.fixture(params=["http/1.1", "h2", "h2-declined"])
def protocol(request: pytest.FixtureRequest) -> str:
    """Every test of the transport runs three ways: over HTTP/1.1 (``Http1Sender``), and with
    FCM's own sender (``NegotiatedSender``), which speaks HTTP/2 to a server that offers it
    in ALPN (as FCM does) and HTTP/1.1 to one that does not (``h2-declined``: a proxy)."""
    return str(request.param)


@pytest.fixture
def fcm(protocol: str) -> Iterator[FakeFcm]:
    with FakeFcm(http2=protocol != "h2-declined") as fake:
        yield fake


@pytest.fixture
async def transport(fcm: FakeFcm, protocol: str) -> AsyncIterator[FcmTransport]:
    credentials = FcmCredentials.parse(fcm.credentials(), fcm.rules)
    transport = FcmTransport(
        StaticSource(credentials),
        local_sender() if protocol == "http/1.1" else local_negotiated_sender(),
        base_url=fcm.url,
        concurrency=16,
        token_hosts=fcm.token_hosts,
    )
    yield transport
    await transport.close()


def content(**options: Any) -> Content:
    now = int(time.time() * 1000)
    return Content(
        notification_id=7,
        account_id=1,
        app_key="app",
        event=None,
        title="Hi",
        message="There",
        data_json='{"k": 1, "s": "v"}',
        created_ms=now,
        expires_ms=now + 600_000,
        options=PushOptions(**options),
    )


async def test_delivers_with_one_access_token(fcm: FakeFcm, transport: FcmTransport) -> None:
    result = await transport.send(
        content(collapse_key="c1", sound="default", badge=2, deep_link="https://e.com/x"),
        targets("t1", "t2", "t3"),
    )
    assert result == [Delivered()] * 3
    assert await transport.send(content(), targets("t4")) == [Delivered()]
    assert fcm.token_fetches == 1
    received = {m.token: m for m in fcm.messages}
    assert set(received) == {"t1", "t2", "t3", "t4"}
    message = received["t1"]
    assert message.project_id == fcm.project_id
    assert message.access_token.startswith("ya29.fake-")
    assert message.message["notification"] == {"title": "Hi", "body": "There"}
    assert message.message["data"] == {
        "k": "1",
        "s": "v",
        "pushgate_notification_id": "7",
        "pushgate_deep_link": "https://e.com/x",
    }
    assert message.message["android"]["priority"] == "HIGH"
    assert message.message["android"]["collapse_key"] == "c1"
    assert message.message["apns"]["payload"] == {"aps": {"sound": "default", "badge": 2}}
    assert message.message["webpush"]["fcm_options"] == {"link": "https://e.com/x"}


async def test_many_targets_keep_their_order(fcm: FakeFcm, transport: FcmTransport) -> None:
    addresses = [f"token-{n}" for n in range(300)]
    for gone in addresses[::7]:
        fcm.unregister(gone)
    result = await transport.send(content(), targets(*addresses))
    for n, outcome in enumerate(result):
        assert isinstance(outcome, TokenInvalid if n % 7 == 0 else Delivered), n
    assert len(fcm.messages) == 300 - len(addresses[::7])


async def test_unregistered_and_invalid_tokens(fcm: FakeFcm, transport: FcmTransport) -> None:
    fcm.unregister("gone")
    fcm.mark_invalid("garbled")
    result = await transport.send(content(), targets("gone", "ok", "garbled"))
    assert isinstance(result[0], TokenInvalid)
    assert result[0].reason.startswith("UNREGISTERED: ")
    assert result[1] == Delivered()
    assert isinstance(result[2], TokenInvalid)
    assert result[2].reason.startswith("INVALID_ARGUMENT: The registration token is not valid"[:30])


@pytest.mark.parametrize(
    ("status", "reason", "kind", "starts"),
    [
        (403, None, PermanentFailure, "SENDER_ID_MISMATCH: "),
        (400, None, PermanentFailure, "INVALID_ARGUMENT: "),
        (401, None, PermanentFailure, "InvalidCertificate: THIRD_PARTY_AUTH_ERROR: "),
        (429, None, RetryLater, "QUOTA_EXCEEDED: "),
        (500, None, RetryLater, "INTERNAL: "),
        (503, None, RetryLater, "UNAVAILABLE: "),
        (404, None, TokenInvalid, "UNREGISTERED: "),
    ],
)
async def test_provider_errors(
    fcm: FakeFcm,
    transport: FcmTransport,
    status: int,
    reason: str | None,
    kind: type,
    starts: str,
) -> None:
    fcm.fail_next(status, reason=reason)
    [result] = await transport.send(content(), targets("t1"))
    assert isinstance(result, kind)
    assert result.reason.startswith(starts)  # type: ignore[union-attr]
    assert await transport.send(content(), targets("t1")) == [Delivered()]


async def test_retry_after_is_honoured(fcm: FakeFcm, transport: FcmTransport) -> None:
    fcm.fail_next(503, retry_after=7)
    fcm.fail_next(429, retry_after=30)
    first = await transport.send(content(), targets("t1"))
    second = await transport.send(content(), targets("t1"))
    assert first == [RetryLater("UNAVAILABLE: injected by FakeFcm", 7.0)]
    assert second == [RetryLater("QUOTA_EXCEEDED: injected by FakeFcm", 30.0)]


async def test_dropped_connection_is_retry_later(
    fcm: FakeFcm, transport: FcmTransport, protocol: str
) -> None:
    # HTTP/1.1: the send reuses the token fetch's kept-alive connection; a drop there is sent
    # once more on a new connection at once (it may have been a stale connection), and the
    # second drop, on a new connection, is RetryLater. HTTP/2 sends once: a connection lost
    # with the request in flight is RetryLater.
    fcm.drop_next(1 if protocol == "h2" else 2)
    [result] = await transport.send(content(), targets("t1"))
    assert isinstance(result, RetryLater)
    assert result.reason.startswith("FCM unreachable: ")
    assert await transport.send(content(), targets("t1")) == [Delivered()]
    assert (fcm.http2_requests > 0) == (protocol == "h2")


async def test_refused_access_token_is_replaced(fcm: FakeFcm, transport: FcmTransport) -> None:
    assert await transport.send(content(), targets("t1")) == [Delivered()]
    fcm.revoke_access_tokens()
    [result] = await transport.send(content(), targets("t1"))
    assert isinstance(result, RetryLater)
    assert result.reason.startswith("UNAUTHENTICATED: ")
    assert await transport.send(content(), targets("t1")) == [Delivered()]
    assert fcm.token_fetches == 2
    tokens = [m.access_token for m in fcm.messages]
    assert tokens[0] != tokens[1]


async def test_token_is_fetched_again_before_it_expires() -> None:
    with FakeFcm(expires_in=2) as fcm:
        credentials = FcmCredentials.parse(fcm.credentials(), fcm.rules)
        transport = FcmTransport(
            StaticSource(credentials),
            local_sender(4),
            base_url=fcm.url,
            token_hosts=fcm.token_hosts,
        )
        try:
            assert await transport.send(content(), targets("t1")) == [Delivered()]
            assert fcm.token_fetches == 1
            await asyncio.sleep(1.1)  # half of the 2 s life has passed
            assert await transport.send(content(), targets("t1")) == [Delivered()]
            assert fcm.token_fetches == 2
        finally:
            await transport.close()


async def test_concurrent_sends_share_one_token_fetch(
    fcm: FakeFcm, transport: FcmTransport
) -> None:
    results = await asyncio.gather(
        *(transport.send(content(), targets(f"t{n}")) for n in range(10))
    )
    assert all(r == [Delivered()] for r in results)
    assert fcm.token_fetches == 1


@pytest.mark.parametrize(
    ("status", "kind", "starts"),
    [
        (400, PermanentFailure, "InvalidCertificate: the FCM token endpoint refused"),
        (401, PermanentFailure, "InvalidCertificate: the FCM token endpoint refused"),
        (503, RetryLater, "FCM token endpoint answered 503"),
        (0, RetryLater, "FCM token endpoint unreachable"),
    ],
)
async def test_token_endpoint_failures(
    fcm: FakeFcm, transport: FcmTransport, status: int, kind: type, starts: str
) -> None:
    fcm.fail_token_endpoint_next(status)
    result = await transport.send(content(), targets("t1", "t2"))
    assert len(result) == 2
    assert all(isinstance(r, kind) for r in result)
    assert result[0].reason.startswith(starts)  # type: ignore[union-attr]
    assert fcm.messages == []
    assert await transport.send(content(), targets("t1")) == [Delivered()]


async def test_a_foreign_key_is_refused_as_invalid_certificate(fcm: FakeFcm) -> None:
    raw = fcm.credentials()
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    raw["service_account"]["private_key"] = other.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    transport = FcmTransport(
        StaticSource(FcmCredentials.parse(raw, fcm.rules)),
        local_sender(4),
        base_url=fcm.url,
        token_hosts=fcm.token_hosts,
    )
    try:
        [result] = await transport.send(content(), targets("t1"))
    finally:
        await transport.close()
    assert isinstance(result, PermanentFailure)
    assert result.reason.startswith("InvalidCertificate: ")
    assert "invalid_grant" in result.reason
    assert fcm.token_fetches == 0


async def test_app_without_credentials(fcm: FakeFcm) -> None:
    transport = FcmTransport(StaticSource(None), local_sender(4), base_url=fcm.url)
    try:
        [result] = await transport.send(content(), targets("t1"))
    finally:
        await transport.close()
    assert isinstance(result, PermanentFailure)
    assert result.reason.startswith("InvalidCertificate: ")


async def test_unreachable_fcm_is_retry_later() -> None:
    with FakeFcm() as fcm:
        credentials = FcmCredentials.parse(fcm.credentials(), fcm.rules)
        url = fcm.url
    transport = FcmTransport(
        StaticSource(credentials), local_sender(4), base_url=url, token_hosts=(url[8:],)
    )
    try:
        result = await transport.send(content(), targets("t1", "t2"))
    finally:
        await transport.close()
    assert all(isinstance(r, RetryLater) for r in result)


def test_fake_token_endpoint_refuses_other_grants(fcm: FakeFcm) -> None:
    context = ssl.create_default_context(cafile=str(local_ca().ca_file))
    request = urllib.request.Request(fcm.token_url, data=b"grant_type=password", method="POST")
    request.add_header("content-type", "application/x-www-form-urlencoded")
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, context=context)
    assert caught.value.code == 400
    assert orjson.loads(caught.value.read())["error"] == "unsupported_grant_type"
    caught.value.close()


def test_fake_refuses_what_fcm_refuses() -> None:
    good = {"token": "t", "data": {"a": "1"}, "android": {"priority": "HIGH", "ttl": "3.5s"}}
    assert check_message(good) is None
    assert "strings" in (check_message({**good, "data": {"a": 1}}) or "")
    assert "Exactly one" in (check_message({**good, "topic": "news"}) or "")
    assert "data payload key" in (check_message({**good, "data": {"google.x": "1"}}) or "")
    assert "priority" in (check_message({**good, "android": {"priority": "high"}}) or "")
    assert "ttl" in (check_message({**good, "android": {"ttl": "10"}}) or "")
    assert "Unknown name" in (check_message({**good, "priority": "high"}) or "")
    big = {**good, "data": {"a": "x" * 5000}}
    assert "too big" in (check_message(big) or "")
