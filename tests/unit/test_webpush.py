"""The pure parts of the Web Push transport: subscriptions, payload, headers, requests,
answers, and ``send_with`` over a scripted sender."""

from __future__ import annotations

import os
import re
import time
from typing import Any

import jwt
import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from provider_support import StaticSource

from pushgate.domain.credentials import VapidCredentials, b64url
from pushgate.domain.outcomes import Delivered, PermanentFailure, RetryLater, TokenInvalid
from pushgate.domain.push_options import PushOptions
from pushgate.transports.base import Content, Target
from pushgate.transports.http import ProviderRequest, ProviderResponse
from pushgate.transports.webpush import (
    InvalidSubscription,
    WebPushTransport,
    build_request,
    headers,
    outcome_of,
    parse_subscription,
    payload,
    topic_of,
)
from pushgate.transports.webpush_crypto import decrypt, parse_authorization, point_bytes

NOW_MS = 1_800_000_000_000
CREDENTIALS = VapidCredentials.generate("mailto:ops@example.com")


def content(
    *,
    title: str | None = "Hello",
    message: str = "World",
    data_json: str = '{"order": 7}',
    options: PushOptions | None = None,
    expires_ms: int = NOW_MS + 3_600_000,
) -> Content:
    return Content(
        notification_id=42,
        account_id=1,
        app_key="app",
        event=None,
        title=title,
        message=message,
        data_json=data_json,
        created_ms=NOW_MS,
        expires_ms=expires_ms,
        options=options or PushOptions(),
    )


class Browser:
    """A subscription with its private key, as a browser holds it."""

    def __init__(self, endpoint: str = "https://push.example.net/push/abc") -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.auth = os.urandom(16)
        self.endpoint = endpoint

    def json(self, **changes: Any) -> str:
        raw: dict[str, Any] = {
            "endpoint": self.endpoint,
            "expirationTime": None,
            "keys": {
                "p256dh": b64url(point_bytes(self.key.public_key())),
                "auth": b64url(self.auth),
            },
        }
        raw.update(changes)
        return orjson.dumps(raw).decode()


# -- subscriptions --------------------------------------------------------------------------


def test_a_browser_subscription_parses() -> None:
    browser = Browser("https://fcm.googleapis.com/fcm/send/abc:def")
    subscription = parse_subscription(browser.json())
    assert subscription.endpoint == "https://fcm.googleapis.com/fcm/send/abc:def"
    assert subscription.origin == "https://fcm.googleapis.com"
    assert subscription.auth == browser.auth
    assert subscription.p256dh == point_bytes(browser.key.public_key())


GOOD_KEYS = Browser().json()


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("not json", "not PushSubscription JSON"),
        ("[1, 2]", "JSON object"),
        ('{"endpoint": "https://x.example/p"}', "'endpoint' and 'keys'"),
        (GOOD_KEYS.replace("https://push.example.net", "http://push.example.net"), "https://"),
        (GOOD_KEYS.replace("https://push.example.net/push/abc", "/push/abc"), "https://"),
        ('{"endpoint": "https://x.example/p", "keys": {"auth": "AAAA"}}', "'p256dh' and 'auth'"),
        (
            '{"endpoint": "https://x.example/p", "keys": {"p256dh": "BAAA", "auth": "AAAA"}}',
            "16-byte",
        ),
        (
            '{"endpoint": "https://x.example/p", '
            '"keys": {"p256dh": "BAAA", "auth": "AAAAAAAAAAAAAAAAAAAAAA"}}',
            "uncompressed P-256",
        ),
        ("{" + " " * 5000 + "}", "too long"),
        (GOOD_KEYS.replace("push.example.net/", "push.example.net:99999/"), "port"),
        (GOOD_KEYS.replace("push.example.net/", "push.example.net:x/"), "port"),
    ],
)
def test_malformed_subscriptions_are_refused(address: str, why: str) -> None:
    with pytest.raises(InvalidSubscription, match=re.escape(why)):
        parse_subscription(address)


# -- payload and headers --------------------------------------------------------------------


def test_the_payload_maps_every_field() -> None:
    options = PushOptions(
        image_url="https://cdn.example/i.png",
        deep_link="https://example.com/orders/7",
        sound="ping.caf",
        badge=3,
        collapse_key="order-7",
        priority="normal",
    )
    assert payload(content(options=options)) == {
        "title": "Hello",
        "body": "World",
        "image": "https://cdn.example/i.png",
        "url": "https://example.com/orders/7",
        "tag": "order-7",
        "badge": 3,
        "sound": "ping.caf",
        "data": {"order": 7, "pushgate_notification_id": "42"},
    }


def test_a_minimal_payload_has_only_body_and_data() -> None:
    assert payload(content(title=None, data_json="")) == {
        "body": "World",
        "data": {"pushgate_notification_id": "42"},
    }


def test_headers_carry_ttl_urgency_topic_and_encoding() -> None:
    options = PushOptions(collapse_key="order-7", priority="normal")
    result = headers(content(options=options), NOW_MS + 600_000, "vapid t=x, k=y")
    assert result == {
        "TTL": "3000",
        "Urgency": "normal",
        "Topic": "order-7",
        "Content-Encoding": "aes128gcm",
        "Content-Type": "application/octet-stream",
        "Authorization": "vapid t=x, k=y",
    }


def test_high_priority_is_high_urgency_and_no_topic_without_a_collapse_key() -> None:
    result = headers(content(), NOW_MS, "vapid t=x, k=y")
    assert result["Urgency"] == "high"
    assert "Topic" not in result


def test_an_expired_notification_has_ttl_zero() -> None:
    assert headers(content(expires_ms=NOW_MS - 5), NOW_MS, "a")["TTL"] == "0"


@pytest.mark.parametrize(
    "key", ["a" * 33, "order 7", "ünïcode", "dots.are.not.base64url", "x" * 64]
)
def test_other_collapse_keys_become_a_valid_deterministic_topic(key: str) -> None:
    topic = topic_of(key)
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,32}", topic)
    assert topic == topic_of(key)
    assert topic != topic_of(key + "!")


def test_a_valid_collapse_key_is_the_topic() -> None:
    assert topic_of("a" * 32) == "a" * 32
    assert topic_of("Order_7-b") == "Order_7-b"


# -- requests -------------------------------------------------------------------------------


def test_a_request_posts_the_encrypted_payload_to_the_endpoint() -> None:
    browser = Browser()
    request = build_request(
        CREDENTIALS, content(), Target(1, browser.json()), NOW_MS, salt=b"s" * 16
    )

    assert isinstance(request, ProviderRequest)
    assert request.method == "POST"
    assert request.url == "https://push.example.net/push/abc"
    assert request.body[:16] == b"s" * 16
    assert orjson.loads(decrypt(request.body, browser.key, browser.auth)) == payload(content())
    token, key = parse_authorization(request.headers["Authorization"])
    assert key == CREDENTIALS.public_key
    assert request.headers["TTL"] == "3600"


def test_a_payload_over_the_limit_fails_with_its_size() -> None:
    failure = build_request(
        CREDENTIALS, content(message="x" * 4000), Target(1, Browser().json()), NOW_MS
    )
    assert isinstance(failure, PermanentFailure)
    assert failure.reason.startswith("PayloadTooLarge: ")
    size = len(orjson.dumps(payload(content(message="x" * 4000))))
    assert f"{size} bytes" in failure.reason and "at most 3993 bytes" in failure.reason


def test_a_malformed_subscription_fails_permanently() -> None:
    failure = build_request(CREDENTIALS, content(), Target(1, "{}"), NOW_MS)
    assert isinstance(failure, PermanentFailure)
    assert failure.reason.startswith("InvalidSubscription: ")


# -- answers --------------------------------------------------------------------------------


def answer(status: int, body: bytes = b"", **headers: str) -> ProviderResponse:
    return ProviderResponse(status, {k.replace("_", "-"): v for k, v in headers.items()}, body)


@pytest.mark.parametrize("status", [200, 201, 202])
def test_accepted_is_delivered(status: int) -> None:
    assert outcome_of(answer(status)) == Delivered()


@pytest.mark.parametrize(("status", "name"), [(404, "NotFound"), (410, "Gone")])
def test_a_gone_subscription_is_token_invalid(status: int, name: str) -> None:
    outcome = outcome_of(answer(status, b'{"code":410,"errno":106,"message":"expired"}'))
    assert isinstance(outcome, TokenInvalid)
    assert outcome.reason.startswith(f"{name}: ")
    assert outcome.reason.endswith("expired")


@pytest.mark.parametrize(
    ("status", "name", "says"),
    [
        (400, "BadRequest", "malformed"),
        (401, "Unauthorized", "VAPID"),
        (403, "Forbidden", "another VAPID key"),
        (413, "RequestEntityTooLarge", "too large"),
    ],
)
def test_refusals_fail_permanently_with_status_and_reason(
    status: int, name: str, says: str
) -> None:
    outcome = outcome_of(answer(status, b"plain text from the service"))
    assert isinstance(outcome, PermanentFailure)
    assert outcome.reason.startswith(f"{name}: ")
    assert says in outcome.reason and f"({status})" in outcome.reason
    assert "plain text" not in outcome.reason  # a body is never copied into a reason
    detailed = outcome_of(answer(status, b'{"message": "from \\u0000the\\nservice"}'))
    assert detailed.reason.endswith(": from the service")  # a field, sanitised


@pytest.mark.parametrize("status", [429, 500, 502, 503])
def test_rate_limits_and_outages_retry_after_what_the_service_says(status: int) -> None:
    assert outcome_of(answer(status, retry_after="30")) == RetryLater(
        outcome_of(answer(status)).reason,  # type: ignore[union-attr]
        30.0,
    )
    outcome = outcome_of(answer(status))
    assert isinstance(outcome, RetryLater) and outcome.after_seconds is None


# -- send_with over a scripted sender -------------------------------------------------------


class ScriptedSender:
    def __init__(self, answers: dict[str, ProviderResponse | Exception]) -> None:
        self.answers = answers
        self.requests: list[ProviderRequest] = []
        self.closed = False

    async def send(self, request: ProviderRequest) -> ProviderResponse:
        self.requests.append(request)
        found = self.answers.get(request.url, answer(201))
        if isinstance(found, Exception):
            raise found
        return found

    async def close(self) -> None:
        self.closed = True


@pytest.mark.parametrize("concurrency", [3, 64])  # fewer workers than requests, and more
@pytest.mark.parametrize("threads", [0, 2])
async def test_send_answers_one_outcome_per_target_in_order(threads: int, concurrency: int) -> None:
    browsers = [Browser(f"https://push.example.net/push/{i}") for i in range(40)]
    sender = ScriptedSender(
        {
            "https://push.example.net/push/3": answer(410),
            "https://push.example.net/push/5": OSError("connection reset"),
            "https://push.example.net/push/6": ConnectionResetError("server disconnected"),
            "https://push.example.net/push/7": TimeoutError(),
            "https://push.example.net/push/8": answer(503, retry_after="9"),
        }
    )
    transport = WebPushTransport(
        StaticSource(CREDENTIALS),
        sender,
        encrypt_threads=threads,
        chunk_size=8,
        concurrency=concurrency,
    )
    targets = [Target(i, b.json()) for i, b in enumerate(browsers)]
    targets.insert(4, Target(99, "garbage"))

    outcomes = await transport.send(content(), targets)
    await transport.close()

    assert len(outcomes) == 41
    assert isinstance(outcomes[3], TokenInvalid)
    assert isinstance(outcomes[4], PermanentFailure)
    assert outcomes[4].reason.startswith("InvalidSubscription")
    for index in (6, 7, 8):  # browsers 5, 6, 7 (shifted by the garbage target)
        outcome = outcomes[index]
        assert isinstance(outcome, RetryLater)
        assert outcome.reason.startswith(
            "ConnectionFailed: no answer from https://push.example.net"
        )
    assert outcomes[9] == RetryLater(outcomes[9].reason, 9.0)  # type: ignore[union-attr]
    assert sum(isinstance(o, Delivered) for o in outcomes) == 35
    assert len(sender.requests) == 40 and sender.closed
    for request in sender.requests:
        browser = browsers[int(request.url.rsplit("/", 1)[1])]
        assert orjson.loads(decrypt(request.body, browser.key, browser.auth))["body"] == "World"


async def test_the_vapid_token_is_signed_once_and_reused_across_sends() -> None:
    sender = ScriptedSender({})
    transport = WebPushTransport(StaticSource(CREDENTIALS), sender)
    one, two = Browser(), Browser("https://other.example/p/1")

    await transport.send(content(), [Target(1, one.json()), Target(2, two.json())])
    await transport.send(content(), [Target(1, one.json())])

    assert transport.tokens.signed == 2  # one per origin
    by_url: dict[str, set[str]] = {}
    for request in sender.requests:
        by_url.setdefault(request.url, set()).add(request.headers["Authorization"])
    assert [len(v) for v in by_url.values()] == [1, 1]
    token, _ = parse_authorization(sender.requests[0].headers["Authorization"])
    claims = jwt.decode(token, options={"verify_signature": False})
    assert time.time() < claims["exp"] <= time.time() + 12 * 3600 + 5


async def test_a_payload_too_large_sends_nothing() -> None:
    sender = ScriptedSender({})
    transport = WebPushTransport(StaticSource(CREDENTIALS), sender)
    outcomes = await transport.send(content(message="x" * 5000), [Target(1, Browser().json())])
    assert isinstance(outcomes[0], PermanentFailure)
    assert outcomes[0].reason.startswith("PayloadTooLarge")
    assert sender.requests == []


async def test_an_app_without_vapid_credentials_fails_with_invalid_certificate() -> None:
    sender = ScriptedSender({})
    transport = WebPushTransport(StaticSource(None), sender)
    outcomes = await transport.send(content(), [Target(1, Browser().json())])
    assert isinstance(outcomes[0], PermanentFailure)
    assert outcomes[0].reason.startswith("InvalidCertificate")
    assert sender.requests == []
