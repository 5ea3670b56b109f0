"""The HMS Push Kit transport with a real HTTP sender against the fake Push Kit (TLS, its
client-credentials token endpoint, one request per 1000 tokens)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from provider_support import StaticSource, local_sender, targets

from pushgate.domain.credentials import Credentials, HmsCredentials
from pushgate.domain.outcomes import Delivered, PermanentFailure, RetryLater, TokenInvalid
from pushgate.domain.push_options import PushOptions
from pushgate.testing.fake_hms import FakeHms, check_message
from pushgate.transports.base import Content
from pushgate.transports.hms import HmsTransport


def make_transport(hms: FakeHms, credentials: Credentials | None) -> HmsTransport:
    return HmsTransport(
        StaticSource(credentials),
        local_sender(8),
        base_url=hms.url,
        token_url=hms.token_url,
        concurrency=8,
    )


@pytest.fixture
async def transport(hms: FakeHms) -> AsyncIterator[HmsTransport]:
    transport = make_transport(hms, HmsCredentials.parse(hms.credentials()))
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
        data_json='{"k": 1}',
        created_ms=now,
        expires_ms=now + 600_000,
        options=PushOptions(**options),
    )


async def test_one_request_per_thousand_tokens(hms: FakeHms, transport: HmsTransport) -> None:
    addresses = [f"token-{n}" for n in range(2500)]
    result = await transport.send(content(), targets(*addresses))
    assert result == [Delivered()] * 2500
    sizes = sorted(len(m.tokens) for m in hms.messages)
    assert sizes == [500, 1000, 1000]
    assert sorted(t for m in hms.messages for t in m.tokens) == sorted(addresses)
    assert hms.token_fetches == 1
    assert all(m.app_id == hms.app_id for m in hms.messages)


async def test_message_as_received(hms: FakeHms, transport: HmsTransport) -> None:
    options = {"deep_link": "myapp://orders/1", "collapse_key": "5", "priority": "normal"}
    assert await transport.send(content(**options), targets("t1")) == [Delivered()]
    [received] = hms.messages
    assert received.tokens == ("t1",)
    assert orjson.loads(received.message["data"]) == {
        "k": 1,
        "pushgate_notification_id": "7",
        "pushgate_deep_link": "myapp://orders/1",
    }
    android = received.message["android"]
    assert android["urgency"] == "NORMAL"
    assert android["collapse_key"] == 5
    assert android["ttl"].endswith("s") and 590 <= int(android["ttl"][:-1]) <= 600
    assert android["notification"]["click_action"] == {"type": 1, "intent": "myapp://orders/1"}
    assert android["notification"]["title"] == "Hi"
    assert android["notification"]["body"] == "There"


async def test_partial_success_marks_only_the_illegal_tokens(
    hms: FakeHms, transport: HmsTransport
) -> None:
    hms.unregister("t2")
    hms.unregister("t4")
    result = await transport.send(content(), targets("t1", "t2", "t3", "t4"))
    assert result[0] == Delivered()
    assert isinstance(result[1], TokenInvalid)
    assert result[1].reason.startswith("80100000 ")
    assert result[2] == Delivered()
    assert isinstance(result[3], TokenInvalid)


async def test_all_tokens_invalid(hms: FakeHms, transport: HmsTransport) -> None:
    hms.unregister("t1")
    hms.unregister("t2")
    result = await transport.send(content(), targets("t1", "t2"))
    assert all(isinstance(r, TokenInvalid) for r in result)
    assert result[0].reason.startswith("80300007 ")  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("status", "reason", "kind", "starts"),
    [
        (500, None, RetryLater, "81000001 "),
        (503, None, RetryLater, "503 Traffic control"),
        (429, None, RetryLater, "429 Traffic control"),
        (413, None, PermanentFailure, "80300008 "),
        (400, None, PermanentFailure, "80100003 "),
        (403, None, PermanentFailure, "InvalidCertificate: 80300002 "),
        (401, "80200001", RetryLater, "80200001 "),
    ],
)
async def test_provider_errors(
    hms: FakeHms,
    transport: HmsTransport,
    status: int,
    reason: str | None,
    kind: type,
    starts: str,
) -> None:
    hms.fail_next(status, reason=reason)
    result = await transport.send(content(), targets("t1", "t2"))
    assert len(result) == 2
    assert all(isinstance(r, kind) for r in result)
    assert result[0].reason.startswith(starts)  # type: ignore[union-attr]
    assert await transport.send(content(), targets("t1")) == [Delivered()]


async def test_retry_after_is_honoured(hms: FakeHms, transport: HmsTransport) -> None:
    hms.fail_next(503, retry_after=4)
    assert await transport.send(content(), targets("t1")) == [
        RetryLater("503 Traffic control", 4.0)
    ]


async def test_dropped_connection_is_retry_later(hms: FakeHms, transport: HmsTransport) -> None:
    # The send reuses the token fetch's kept-alive connection: a drop there is sent once
    # more on a new connection at once (it may have been a stale connection); the
    # second drop, on a new connection, is RetryLater.
    hms.drop_next(2)
    result = await transport.send(content(), targets("t1", "t2"))
    assert all(isinstance(r, RetryLater) for r in result)
    assert result[0].reason.startswith("Push Kit unreachable: ")  # type: ignore[union-attr]
    assert await transport.send(content(), targets("t1")) == [Delivered()]


async def test_expired_access_token_is_replaced(hms: FakeHms, transport: HmsTransport) -> None:
    assert await transport.send(content(), targets("t1")) == [Delivered()]
    hms.revoke_access_tokens()
    [result] = await transport.send(content(), targets("t1"))
    assert isinstance(result, RetryLater)
    assert result.reason.startswith("80200003 ")
    assert await transport.send(content(), targets("t1")) == [Delivered()]
    assert hms.token_fetches == 2


async def test_wrong_secret_is_invalid_certificate(hms: FakeHms) -> None:
    raw = {**hms.credentials(), "client_secret": "not-the-secret"}
    transport = make_transport(hms, HmsCredentials.parse(raw))
    try:
        result = await transport.send(content(), targets("t1", "t2"))
    finally:
        await transport.close()
    assert all(isinstance(r, PermanentFailure) for r in result)
    assert result[0].reason.startswith("InvalidCertificate: ")  # type: ignore[union-attr]
    assert "1101" in result[0].reason  # type: ignore[union-attr]
    assert hms.messages == []


@pytest.mark.parametrize(
    ("status", "kind"), [(503, RetryLater), (0, RetryLater), (401, PermanentFailure)]
)
async def test_token_endpoint_failures(
    hms: FakeHms, transport: HmsTransport, status: int, kind: type
) -> None:
    hms.fail_token_endpoint_next(status)
    result = await transport.send(content(), targets("t1", "t2"))
    assert all(isinstance(r, kind) for r in result)
    assert await transport.send(content(), targets("t1")) == [Delivered()]


async def test_app_without_credentials(hms: FakeHms) -> None:
    transport = make_transport(hms, None)
    try:
        [result] = await transport.send(content(), targets("t1"))
    finally:
        await transport.close()
    assert isinstance(result, PermanentFailure)
    assert result.reason.startswith("InvalidCertificate: ")


def test_fake_refuses_what_push_kit_refuses() -> None:
    good: dict[str, Any] = {
        "data": "{}",
        "android": {
            "collapse_key": 3,
            "urgency": "HIGH",
            "ttl": "60s",
            "notification": {"body": "b", "click_action": {"type": 3}},
        },
        "token": ["t"],
    }
    assert check_message(good) is None
    assert check_message({**good, "data": {"a": 1}}) is not None
    bad_key = {**good, "android": {**good["android"], "collapse_key": 101}}
    assert (check_message(bad_key) or ("",))[0] == "80100013"
    no_click = {**good, "android": {"notification": {"body": "b"}}}
    assert (check_message(no_click) or ("",))[0] == "80100003"
    big = {**good, "data": "x" * 5000}
    assert (check_message(big) or ("",))[0] == "80300008"
