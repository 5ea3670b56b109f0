"""The Web Push transport with a real HTTP sender against the fake push service, which checks
VAPID and decrypts every payload as a browser would."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import jwt
import orjson
import pytest
from provider_support import StaticSource, local_sender

from pushgate.domain.credentials import VapidCredentials, b64url_decode
from pushgate.domain.outcomes import Delivered, PermanentFailure, RetryLater, TokenInvalid
from pushgate.domain.push_options import PushOptions
from pushgate.testing.fake_webpush import FakeWebPush
from pushgate.transports.base import Content, Target
from pushgate.transports.http import ProviderRequest
from pushgate.transports.http1 import Http1Sender
from pushgate.transports.webpush import WebPushTransport, build_request
from pushgate.transports.webpush_crypto import encrypt, vapid_authorization, vapid_token


def content(message: str = "World", options: PushOptions | None = None) -> Content:
    now = int(time.time() * 1000)
    return Content(
        notification_id=7,
        account_id=1,
        app_key="app",
        event=None,
        title="Hello",
        message=message,
        data_json='{"order": 7}',
        created_ms=now,
        expires_ms=now + 600_000,
        options=options or PushOptions(),
    )


@pytest.fixture
async def fake() -> AsyncIterator[FakeWebPush]:
    async with FakeWebPush() as server:
        yield server


@pytest.fixture
async def sender() -> AsyncIterator[Http1Sender]:
    sender = local_sender()
    yield sender
    await sender.close()


@pytest.fixture
def credentials(fake: FakeWebPush) -> VapidCredentials:
    return VapidCredentials.parse(fake.credentials())


@pytest.fixture
async def transport(
    credentials: VapidCredentials, sender: Http1Sender
) -> AsyncIterator[WebPushTransport]:
    transport = WebPushTransport(StaticSource(credentials), sender, chunk_size=8)
    yield transport
    await transport.close()


def target(fake: FakeWebPush, device_id: int = 1, key: str | None = None) -> Target:
    return Target(device_id, orjson.dumps(fake.subscribe(key)).decode())


async def test_a_notification_arrives_decrypted_with_its_headers(
    fake: FakeWebPush, transport: WebPushTransport, credentials: VapidCredentials
) -> None:
    options = PushOptions(
        deep_link="https://example.com/o/7", collapse_key="order 7", priority="normal", badge=2
    )
    device = target(fake)

    outcomes = await transport.send(content(options=options), [device])

    assert outcomes == [Delivered()]
    assert fake.wait_for(1)
    message = fake.messages[0]
    assert message.endpoint == orjson.loads(device.address)["endpoint"]
    assert message.json() == {
        "title": "Hello",
        "body": "World",
        "url": "https://example.com/o/7",
        "tag": "order 7",
        "badge": 2,
        "data": {"order": 7, "pushgate_notification_id": "7"},
    }
    assert 598 <= message.ttl <= 600
    assert message.urgency == "normal"
    assert message.topic is not None and len(message.topic) <= 32
    assert message.headers["content-type"] == "application/octet-stream"
    assert message.headers["content-encoding"] == "aes128gcm"
    assert message.headers["authorization"].endswith(f", k={credentials.public_key}")
    assert message.vapid_claims["aud"] == fake.url
    assert message.vapid_claims["sub"] == credentials.subject


async def test_a_batch_reuses_one_vapid_token_and_keeps_the_order(
    fake: FakeWebPush, transport: WebPushTransport
) -> None:
    devices = [target(fake, i) for i in range(60)]
    devices.insert(10, Target(99, '{"endpoint": "https://x.example/p"}'))

    first = await transport.send(content(), devices)
    second = await transport.send(content("Again"), devices[:5])

    refused = first[10]
    assert isinstance(refused, PermanentFailure)
    assert refused.reason.startswith("InvalidSubscription")
    assert first[:10] + first[11:] == [Delivered()] * 60
    assert second == [Delivered()] * 5
    assert fake.wait_for(65)
    assert len(fake.vapid_tokens) == 1
    assert transport.tokens.signed == 1
    for device in devices[:3]:
        bodies = [m.json()["body"] for m in fake.messages_to(device.address)]
        assert sorted(bodies) == ["Again", "World"]


async def test_an_unregistered_subscription_is_token_invalid(
    fake: FakeWebPush, transport: WebPushTransport
) -> None:
    gone, alive = target(fake, 1), target(fake, 2)
    fake.unregister(gone.address)

    outcomes = await transport.send(content(), [gone, alive])

    assert isinstance(outcomes[0], TokenInvalid)
    assert outcomes[0].reason.startswith("Gone: ")
    assert outcomes[1] == Delivered()


async def test_an_unknown_subscription_is_token_invalid(
    fake: FakeWebPush, transport: WebPushTransport
) -> None:
    address = orjson.loads(target(fake).address)
    address["endpoint"] = f"{fake.url}/push/never-issued"
    outcomes = await transport.send(content(), [Target(1, orjson.dumps(address).decode())])
    assert isinstance(outcomes[0], TokenInvalid)


async def test_a_subscription_made_with_another_key_is_forbidden(
    fake: FakeWebPush, transport: WebPushTransport
) -> None:
    other = VapidCredentials.generate("mailto:other@example.com")
    outcomes = await transport.send(content(), [target(fake, key=other.public_key)])
    assert isinstance(outcomes[0], PermanentFailure)
    assert outcomes[0].reason.startswith("Forbidden: the subscription belongs to another")
    assert "applicationServerKey" in outcomes[0].reason
    assert fake.messages == []


@pytest.mark.parametrize(
    ("status", "kind", "name"),
    [
        (404, TokenInvalid, "NotFound"),
        (410, TokenInvalid, "Gone"),
        (400, PermanentFailure, "BadRequest"),
        (401, PermanentFailure, "Unauthorized"),
        (403, PermanentFailure, "Forbidden"),
        (413, PermanentFailure, "RequestEntityTooLarge"),
        (500, RetryLater, "InternalServerError"),
        (503, RetryLater, "ServiceUnavailable"),
    ],
)
async def test_every_answer_maps_to_its_outcome(
    fake: FakeWebPush, transport: WebPushTransport, status: int, kind: type, name: str
) -> None:
    fake.fail_next(status, reason="scripted by the test")
    outcomes = await transport.send(content(), [target(fake)])
    outcome = outcomes[0]
    assert isinstance(outcome, kind)
    assert outcome.reason.startswith(f"{name}: ")  # type: ignore[union-attr]
    assert outcome.reason.endswith("scripted by the test")  # type: ignore[union-attr]


@pytest.mark.parametrize("status", [429, 503])
async def test_retry_after_is_honoured(
    fake: FakeWebPush, transport: WebPushTransport, status: int
) -> None:
    fake.fail_next(status, retry_after=120)
    devices = [target(fake, 1), target(fake, 2)]

    outcomes = await transport.send(content(), devices[:1])
    later = await transport.send(content(), devices[1:])

    assert isinstance(outcomes[0], RetryLater) and outcomes[0].after_seconds == 120
    assert later == [Delivered()]


async def test_a_dropped_connection_is_retried_later(
    fake: FakeWebPush, transport: WebPushTransport
) -> None:
    fake.drop_next()
    device = target(fake)

    first = await transport.send(content(), [device])
    second = await transport.send(content(), [device])

    assert isinstance(first[0], RetryLater)
    assert first[0].reason.startswith("ConnectionFailed: ")
    assert second == [Delivered()]


async def test_an_unreachable_service_is_retried_later(
    credentials: VapidCredentials, sender: Http1Sender
) -> None:
    async with FakeWebPush() as gone_soon:
        device = target(gone_soon)
    transport = WebPushTransport(StaticSource(credentials), sender)
    outcomes = await transport.send(content(), [device])
    assert isinstance(outcomes[0], RetryLater)
    assert outcomes[0].reason.startswith("ConnectionFailed: ")


async def test_a_payload_too_large_is_refused_before_sending(
    fake: FakeWebPush, transport: WebPushTransport
) -> None:
    outcomes = await transport.send(content("x" * 4000), [target(fake)])
    assert isinstance(outcomes[0], PermanentFailure)
    assert outcomes[0].reason.startswith("PayloadTooLarge: ")
    assert fake.messages == [] and fake.refused == 0


# -- what the fake checks, with requests the transport would never send ----------------------


async def post(
    sender: Http1Sender,
    fake: FakeWebPush,
    credentials: VapidCredentials,
    change: dict[str, str | None] | None = None,
    body: bytes | None = None,
) -> tuple[int, dict[str, Any]]:
    """A push built by the transport, with headers changed (None removes one) or the body
    replaced, straight through the sender."""
    request = build_request(credentials, content(), target(fake), int(time.time() * 1000))
    assert isinstance(request, ProviderRequest)
    headers = dict(request.headers)
    for name, value in (change or {}).items():
        if value is None:
            headers.pop(name, None)
        else:
            headers[name] = value
    sent = ProviderRequest("POST", request.url, headers, request.body if body is None else body)
    response = await sender.send(sent)
    return response.status, orjson.loads(response.body) if response.body else {}


def authorization(credentials: VapidCredentials, aud: str, exp: int, sub: str) -> str:
    token = vapid_token(credentials.private_key(), aud, sub, exp)
    return vapid_authorization(token, credentials.public_key)


@pytest.mark.parametrize(
    ("claims", "why"),
    [
        ({"aud": "https://elsewhere.example", "exp": 3600, "sub": "mailto:a@b.c"}, "aud"),
        ({"aud": None, "exp": -10, "sub": "mailto:a@b.c"}, "expired"),
        ({"aud": None, "exp": 25 * 3600, "sub": "mailto:a@b.c"}, "24 hours"),
        ({"aud": None, "exp": 3600, "sub": "ops@example.com"}, "sub"),
    ],
)
async def test_the_fake_refuses_tokens_that_break_rfc_8292(
    fake: FakeWebPush,
    sender: Http1Sender,
    credentials: VapidCredentials,
    claims: dict[str, Any],
    why: str,
) -> None:
    claims = {**claims, "aud": claims["aud"] or fake.url, "exp": int(time.time()) + claims["exp"]}
    status, body = await post(
        sender, fake, credentials, {"Authorization": authorization(credentials, **claims)}
    )
    assert status == 403
    assert why in body["message"]


async def test_the_fake_refuses_a_token_signed_with_another_key(
    fake: FakeWebPush, sender: Http1Sender, credentials: VapidCredentials
) -> None:
    other = VapidCredentials.generate("mailto:other@example.com")
    token = vapid_token(other.private_key(), fake.url, "mailto:a@b.c", int(time.time()) + 60)
    header = vapid_authorization(token, credentials.public_key)
    status, body = await post(sender, fake, credentials, {"Authorization": header})
    assert status == 403 and "does not verify" in body["message"]
    assert jwt.get_unverified_header(token)["alg"] == "ES256"


@pytest.mark.parametrize(
    ("change", "body", "status", "why"),
    [
        ({"TTL": None}, None, 400, "TTL"),
        ({"Content-Encoding": "aesgcm"}, None, 400, "aes128gcm"),
        ({"Authorization": None}, None, 403, "Authorization"),
        ({}, b"\x00" * 200, 400, "does not decrypt"),
    ],
)
async def test_the_fake_refuses_what_a_push_service_refuses(
    fake: FakeWebPush,
    sender: Http1Sender,
    credentials: VapidCredentials,
    change: dict[str, str | None],
    body: bytes | None,
    status: int,
    why: str,
) -> None:
    got, answer = await post(sender, fake, credentials, change, body)
    assert got == status
    assert why in answer["message"]
    assert fake.messages == []


async def test_the_fake_decrypts_with_the_subscription_key_only(
    fake: FakeWebPush, sender: Http1Sender, credentials: VapidCredentials
) -> None:
    someone_else = fake.subscribe()["keys"]
    body = encrypt(
        b'{"body":"x"}', b64url_decode(someone_else["p256dh"]), b64url_decode(someone_else["auth"])
    )
    status, answer = await post(sender, fake, credentials, body=body)
    assert status == 400 and "does not decrypt" in answer["message"]
