"""The pure parts of the APNs transport: payload and headers, provider tokens, outcomes; and
``send_with`` over a scripted sender."""

from __future__ import annotations

import asyncio
from typing import Any

import jwt
import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from pushgate.domain.credentials import ApnsCredentials
from pushgate.domain.outcomes import Delivered, PermanentFailure, RetryLater, TokenInvalid
from pushgate.domain.push_options import PushOptions
from pushgate.transports.apns import (
    PRODUCTION_URL,
    SANDBOX_URL,
    ApnsTransport,
    ProviderTokens,
    base_url_for,
    collapse_id,
    encode_payload,
    outcome,
    payload,
    provider_token,
    request_headers,
)
from pushgate.transports.base import Content, Target
from pushgate.transports.http import ProviderRequest, ProviderResponse
from pushgate.transports.http2 import Http2ConnectionLost

TOKEN = "ab" * 32


def credentials(environment: str = "production", key_id: str = "KEY1234567") -> ApnsCredentials:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return ApnsCredentials.parse(
        {
            "key_id": key_id,
            "team_id": "TEAM123456",
            "topic": "com.example.app",
            "environment": environment,
            "private_key": pem,
        }
    )


CREDENTIALS = credentials()


def content(
    title: str | None = "Hello",
    message: str = "World",
    data: dict[str, Any] | None = None,
    **options: Any,
) -> Content:
    return Content(
        notification_id=42,
        account_id=1,
        app_key="app",
        event=None,
        title=title,
        message=message,
        data_json=orjson.dumps(data).decode() if data is not None else "",
        created_ms=1_700_000_000_000,
        expires_ms=1_700_000_600_500,
        options=PushOptions(**options),
    )


def response(status: int, reason: str | None = None, **headers: str) -> ProviderResponse:
    body = orjson.dumps({"reason": reason}) if reason else b""
    return ProviderResponse(status, headers, body)


# -- payload and headers --------------------------------------------------------------------


def test_alert_payload_maps_every_field() -> None:
    body = payload(
        content(
            data={"order": 7, "nested": {"a": [1]}},
            image_url="https://img.example/cat.png",
            deep_link="myapp://orders/7",
            sound="chime.caf",
            badge=3,
        )
    )
    assert body == {
        "aps": {
            "alert": {"title": "Hello", "body": "World"},
            "sound": "chime.caf",
            "badge": 3,
            "mutable-content": 1,
        },
        "image_url": "https://img.example/cat.png",
        "deep_link": "myapp://orders/7",
        "order": 7,
        "nested": {"a": [1]},
        "pushgate_notification_id": "42",
    }


def test_message_only_and_title_only() -> None:
    assert payload(content(title=None))["aps"] == {"alert": {"body": "World"}}
    assert payload(content(message=""))["aps"] == {"alert": {"title": "Hello"}}


def test_background_payload_and_headers() -> None:
    quiet = content(title=None, message="", data={"sync": True}, priority="high")
    assert payload(quiet) == {
        "aps": {"content-available": 1},
        "sync": True,
        "pushgate_notification_id": "42",
    }
    headers = request_headers(CREDENTIALS, quiet, "JWT")
    assert headers["apns-push-type"] == "background"
    assert headers["apns-priority"] == "5"


def test_data_cannot_replace_aps_or_our_keys() -> None:
    body = payload(
        content(
            data={"aps": {"badge": 99}, "deep_link": "x", "pushgate_notification_id": "1"},
            deep_link="myapp://real",
        )
    )
    assert body["aps"] == {"alert": {"title": "Hello", "body": "World"}}
    assert body["deep_link"] == "myapp://real"
    assert body["pushgate_notification_id"] == "42"


def test_alert_headers() -> None:
    headers = request_headers(CREDENTIALS, content(collapse_key="score"), "JWT")
    assert headers == {
        "authorization": "bearer JWT",
        "apns-topic": "com.example.app",
        "apns-push-type": "alert",
        "apns-priority": "10",
        "apns-expiration": "1700000600",
        "apns-collapse-id": "score",
    }
    normal = request_headers(CREDENTIALS, content(priority="normal"), "JWT")
    assert normal["apns-priority"] == "5"
    assert "apns-collapse-id" not in normal


def test_collapse_id_is_cut_to_64_bytes_on_a_character_boundary() -> None:
    assert collapse_id("k" * 64) == "k" * 64
    cut = collapse_id("é" * 40)  # 80 bytes
    assert len(cut.encode()) <= 64
    assert cut == "é" * 32


def test_payload_too_large_fails_without_a_request() -> None:
    assert isinstance(encode_payload(content(message="x" * 3000)), bytes)
    failure = encode_payload(content(message="x" * 4100))
    assert isinstance(failure, PermanentFailure)
    assert failure.reason.startswith("PayloadTooLarge: ")


def test_base_url_by_environment_unless_given() -> None:
    assert base_url_for(CREDENTIALS, None) == PRODUCTION_URL
    assert base_url_for(credentials("sandbox"), None) == SANDBOX_URL
    assert base_url_for(CREDENTIALS, "https://127.0.0.1:9/") == "https://127.0.0.1:9"


# -- provider tokens ------------------------------------------------------------------------


def test_provider_token_is_es256_with_kid_iss_iat() -> None:
    token = provider_token(CREDENTIALS, 1_700_000_000.7)
    assert jwt.get_unverified_header(token) == {"alg": "ES256", "kid": "KEY1234567"}
    claims = jwt.decode(
        token,
        CREDENTIALS.private_key().public_key(),
        algorithms=["ES256"],
        options={"verify_iat": False},
    )
    assert claims == {"iss": "TEAM123456", "iat": 1_700_000_000}


def test_provider_tokens_are_cached_then_renewed_after_40_minutes() -> None:
    tokens = ProviderTokens()
    first = tokens.get(CREDENTIALS, 1000.0)
    assert tokens.get(CREDENTIALS, 1000.0 + 39 * 60) == first
    renewed = tokens.get(CREDENTIALS, 1000.0 + 40 * 60)
    assert renewed != first
    other = credentials(key_id="OTHERKEY12")
    assert tokens.get(other, 1000.0 + 40 * 60) != renewed


def test_a_refused_token_is_dropped_only_if_still_cached() -> None:
    tokens = ProviderTokens()
    first = tokens.get(CREDENTIALS, 1000.0)
    tokens.drop(CREDENTIALS, "an older token")
    assert tokens.get(CREDENTIALS, 1001.0) == first
    tokens.drop(CREDENTIALS, first)
    assert tokens.get(CREDENTIALS, 1002.0) != first


# -- outcomes -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (response(200), Delivered()),
        (response(410, "Unregistered"), TokenInvalid),
        (response(400, "BadDeviceToken"), TokenInvalid),
        (response(400, "DeviceTokenNotForTopic"), PermanentFailure),
        (response(400, "BadCollapseId"), PermanentFailure),
        (response(400, "TopicDisallowed"), PermanentFailure),
        (response(403, "ExpiredProviderToken"), RetryLater),
        (response(403, "InvalidProviderToken"), RetryLater),
        (response(403, "BadCertificate"), PermanentFailure),
        (response(404, "BadPath"), PermanentFailure),
        (response(405, "MethodNotAllowed"), PermanentFailure),
        (response(413, "PayloadTooLarge"), PermanentFailure),
        (response(429, "TooManyRequests"), RetryLater),
        (response(500, "InternalServerError"), RetryLater),
        (response(503, "ServiceUnavailable"), RetryLater),
        (response(502), RetryLater),
    ],
)
def test_outcome_of_each_answer(answer: ProviderResponse, expected: Any) -> None:
    result = outcome(answer)
    if isinstance(expected, type):
        assert isinstance(result, expected)
        reason = orjson.loads(answer.body)["reason"] if answer.body else f"HTTP {answer.status}"
        assert result.reason.startswith(f"{reason}: ")  # type: ignore[union-attr]
    else:
        assert result == expected


def test_retry_after_is_kept() -> None:
    assert outcome(response(429, "TooManyRequests", **{"retry-after": "30"})) == RetryLater(
        "TooManyRequests: too many requests to this device token", 30.0
    )
    assert outcome(response(503, "ServiceUnavailable")).after_seconds is None  # type: ignore[union-attr]


def test_an_error_body_that_is_not_json() -> None:
    answer = ProviderResponse(400, {}, b"<html>oops</html>")
    assert outcome(answer) == PermanentFailure("HTTP 400: APNs answered 400")


# -- send_with over a scripted sender -------------------------------------------------------


class ScriptedSender:
    def __init__(self, answer: Any) -> None:
        self.answer = answer
        self.requests: list[ProviderRequest] = []
        self.in_flight = 0
        self.most_in_flight = 0

    async def send(self, request: ProviderRequest) -> ProviderResponse:
        self.requests.append(request)
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(0)
            result = self.answer(request)
            if isinstance(result, BaseException):
                raise result
            return result  # type: ignore[no-any-return]
        finally:
            self.in_flight -= 1

    async def close(self) -> None:
        pass


class Source:
    async def get(self, app_key: str | None, platform: str) -> ApnsCredentials | None:
        return CREDENTIALS


def targets(count: int) -> list[Target]:
    return [Target(index, f"{index:064x}") for index in range(count)]


async def test_send_with_answers_in_order_bounded_by_concurrency() -> None:
    def answer(request: ProviderRequest) -> Any:
        index = int(request.url.rsplit("/", 1)[1], 16)
        if index % 3 == 1:
            return response(410, "Unregistered")
        if index % 3 == 2:
            return Http2ConnectionLost("gone")
        return response(200)

    sender = ScriptedSender(answer)
    transport = ApnsTransport(Source(), sender, concurrency=4)
    outcomes = await transport.send(content(), targets(30))
    assert [type(o) for o in outcomes] == [Delivered, TokenInvalid, RetryLater] * 10
    assert outcomes[2] == RetryLater("no answer from APNs: Http2ConnectionLost: gone")
    assert sender.most_in_flight == 4
    first = sender.requests[0]
    assert first.method == "POST"
    assert first.url == f"{PRODUCTION_URL}/3/device/{0:064x}"
    assert orjson.loads(first.body)["aps"]["alert"] == {"title": "Hello", "body": "World"}
    assert len({request.headers["authorization"] for request in sender.requests}) == 1


async def test_timeouts_and_os_errors_are_retry_later() -> None:
    sender = ScriptedSender(lambda request: TimeoutError())
    transport = ApnsTransport(Source(), sender)
    assert await transport.send(content(), targets(1)) == [
        RetryLater("no answer from APNs: TimeoutError: no answer in time")
    ]
    sender.answer = lambda request: ConnectionRefusedError(111, "refused")
    [result] = await transport.send(content(), targets(1))
    assert isinstance(result, RetryLater)
    assert "ConnectionRefusedError" in result.reason


async def test_a_refused_provider_token_is_replaced_for_the_next_send() -> None:
    sender = ScriptedSender(lambda request: response(403, "ExpiredProviderToken"))
    transport = ApnsTransport(Source(), sender)
    transport.tokens = ProviderTokens()
    assert isinstance((await transport.send(content(), targets(2)))[0], RetryLater)
    used = sender.requests[-1].headers["authorization"]
    # (ECDSA signatures are randomised: a token signed again differs even in the same second)
    sender.answer = lambda request: response(200)
    assert await transport.send(content(), targets(1)) == [Delivered()]
    assert sender.requests[-1].headers["authorization"] != used


async def test_a_too_large_payload_sends_nothing() -> None:
    sender = ScriptedSender(lambda request: response(200))
    transport = ApnsTransport(Source(), sender)
    outcomes = await transport.send(content(message="x" * 5000), targets(3))
    assert all(isinstance(o, PermanentFailure) for o in outcomes)
    assert sender.requests == []
    assert await transport.send(content(), []) == []


def test_a_reason_that_is_not_a_reason_name_is_not_copied() -> None:
    answer = ProviderResponse(400, {}, orjson.dumps({"reason": "secret <b>page</b>\n at 10.0.0.1"}))
    result = outcome(answer)
    assert isinstance(result, PermanentFailure)
    assert result.reason.startswith("HTTP 400: ") and "secret" not in result.reason
