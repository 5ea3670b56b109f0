"""The APNs transport with the real HTTP/2 sender against the fake APNs (TLS, ALPN h2, JWT
verified with the minted key)."""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from provider_support import StaticSource

from pushgate.domain.credentials import ApnsCredentials
from pushgate.domain.outcomes import Delivered, PermanentFailure, RetryLater, TokenInvalid
from pushgate.domain.push_options import PushOptions
from pushgate.testing.fake_apns import FakeApns
from pushgate.testing.tls import local_ca
from pushgate.transports.apns import ApnsTransport, provider_token
from pushgate.transports.base import Content, Target
from pushgate.transports.http import ProviderRequest, provider_ssl_context
from pushgate.transports.http2 import Http2Sender


@pytest.fixture
def credentials(apns: FakeApns) -> ApnsCredentials:
    return ApnsCredentials.parse(apns.credentials())


@pytest.fixture
async def sender() -> AsyncIterator[Http2Sender]:
    sender = Http2Sender(ssl_context=provider_ssl_context(local_ca().ca_file), timeout_seconds=5)
    yield sender
    await sender.close()


@pytest.fixture
def transport(apns: FakeApns, credentials: ApnsCredentials, sender: Http2Sender) -> ApnsTransport:
    return ApnsTransport(StaticSource(credentials), sender, base_url=apns.url, concurrency=16)


def content(title: str | None = "Hi", message: str = "There", **options: Any) -> Content:
    now = int(time.time() * 1000)
    return Content(
        notification_id=7,
        account_id=1,
        app_key="app",
        event=None,
        title=title,
        message=message,
        data_json='{"order": 12}',
        created_ms=now,
        expires_ms=now + 3_600_000,
        options=PushOptions(**options),
    )


def devices(count: int, start: int = 0) -> list[Target]:
    return [Target(index, f"{index:064x}") for index in range(start, start + count)]


async def test_delivered_with_payload_and_headers_as_apns_wants_them(
    apns: FakeApns, transport: ApnsTransport, credentials: ApnsCredentials
) -> None:
    sent = content(
        image_url="https://img.example/a.png",
        deep_link="myapp://orders/12",
        sound="default",
        badge=2,
        collapse_key="order-12",
    )
    assert await transport.send(sent, devices(3)) == [Delivered()] * 3
    requests = sorted(apns.requests, key=lambda r: r.token)
    assert [r.token for r in requests] == [t.address for t in devices(3)]
    first = requests[0]
    assert first.status == 200
    assert first.payload == {
        "aps": {
            "alert": {"title": "Hi", "body": "There"},
            "sound": "default",
            "badge": 2,
            "mutable-content": 1,
        },
        "image_url": "https://img.example/a.png",
        "deep_link": "myapp://orders/12",
        "order": 12,
        "pushgate_notification_id": "7",
    }
    headers = first.headers
    assert headers[":method"] == "POST"
    assert headers[":path"] == f"/3/device/{first.token}"
    assert headers["apns-topic"] == credentials.topic
    assert headers["apns-push-type"] == "alert"
    assert headers["apns-priority"] == "10"
    assert headers["apns-collapse-id"] == "order-12"
    assert headers["apns-expiration"] == str(sent.expires_ms // 1000)
    assert headers["authorization"] == f"bearer {first.jwt}"
    assert apns.distinct_jwts == 1
    assert apns.connection_count == 1


async def test_background_push(apns: FakeApns, transport: ApnsTransport) -> None:
    assert await transport.send(content(title=None, message=""), devices(1)) == [Delivered()]
    [received] = apns.requests
    assert received.headers["apns-push-type"] == "background"
    assert received.headers["apns-priority"] == "5"
    assert received.payload["aps"] == {"content-available": 1}


async def test_the_provider_token_is_reused_across_sends(
    apns: FakeApns, transport: ApnsTransport
) -> None:
    for start in range(0, 50, 10):
        assert await transport.send(content(), devices(10, start)) == [Delivered()] * 10
    assert apns.distinct_jwts == 1
    assert apns.connection_count == 1


@pytest.mark.parametrize(
    ("status", "reason", "expected"),
    [
        (410, "Unregistered", TokenInvalid),
        (400, "BadDeviceToken", TokenInvalid),
        (400, "DeviceTokenNotForTopic", PermanentFailure),
        (400, "BadCollapseId", PermanentFailure),
        (413, "PayloadTooLarge", PermanentFailure),
        (403, "BadCertificate", PermanentFailure),
        (429, "TooManyRequests", RetryLater),
        (500, "InternalServerError", RetryLater),
        (503, "ServiceUnavailable", RetryLater),
        (403, "InvalidProviderToken", RetryLater),
    ],
)
async def test_each_error_answer(
    apns: FakeApns, transport: ApnsTransport, status: int, reason: str, expected: type
) -> None:
    apns.fail_next(status, reason=reason)
    [result] = await transport.send(content(), devices(1))
    assert isinstance(result, expected)
    assert result.reason.startswith(f"{reason}: ")  # type: ignore[union-attr]
    assert await transport.send(content(), devices(1)) == [Delivered()]


async def test_retry_after_is_passed_on(apns: FakeApns, transport: ApnsTransport) -> None:
    apns.fail_next(429, retry_after=120)
    [result] = await transport.send(content(), devices(1))
    assert result == RetryLater("TooManyRequests: too many requests to this device token", 120.0)


async def test_an_unregistered_device(apns: FakeApns, transport: ApnsTransport) -> None:
    [gone] = devices(1)
    apns.unregister(gone.address)
    results = await transport.send(content(), [gone, *devices(1, start=5)])
    assert results == [
        TokenInvalid("Unregistered: the device token is no longer active for the topic"),
        Delivered(),
    ]


async def test_a_refused_provider_token_is_replaced(
    apns: FakeApns, transport: ApnsTransport, credentials: ApnsCredentials
) -> None:
    expired = provider_token(credentials, time.time() - 2 * 3600)
    transport.tokens._tokens[(credentials.team_id, credentials.key_id)] = (expired, time.time())
    [result] = await transport.send(content(), devices(1))
    assert isinstance(result, RetryLater)
    assert result.reason.startswith("ExpiredProviderToken: ")
    assert await transport.send(content(), devices(1)) == [Delivered()]
    assert apns.distinct_jwts == 2


async def test_credentials_the_fake_did_not_mint_are_refused(
    apns: FakeApns, sender: Http2Sender, credentials: ApnsCredentials
) -> None:
    other = FakeApns().credentials()  # another key, unknown here
    stranger = ApnsCredentials.parse({**other, "key_id": credentials.key_id})
    transport = ApnsTransport(StaticSource(stranger), sender, base_url=apns.url)
    [result] = await transport.send(content(), devices(1))
    assert isinstance(result, RetryLater)
    assert result.reason.startswith("InvalidProviderToken: ")


async def test_a_topic_of_another_app(apns: FakeApns, sender: Http2Sender) -> None:
    mine = ApnsCredentials.parse(apns.credentials(topic="com.example.one"))
    apns.credentials(topic="com.example.two")
    wrong = ApnsCredentials.parse({**mine.secret(), "topic": "com.example.two"})
    transport = ApnsTransport(StaticSource(wrong), sender, base_url=apns.url)
    [result] = await transport.send(content(), devices(1))
    assert isinstance(result, PermanentFailure)
    assert result.reason.startswith("DeviceTokenNotForTopic: ")
    unknown = ApnsCredentials.parse({**mine.secret(), "topic": "com.example.nobody"})
    transport = ApnsTransport(StaticSource(unknown), sender, base_url=apns.url)
    [result] = await transport.send(content(), devices(1))
    assert result == PermanentFailure("TopicDisallowed: the credentials may not push to this topic")


async def test_the_fake_checks_the_path_and_headers(
    apns: FakeApns, sender: Http2Sender, credentials: ApnsCredentials
) -> None:
    bearer = f"bearer {provider_token(credentials, time.time())}"
    good = {
        "authorization": bearer,
        "apns-topic": credentials.topic,
        "apns-push-type": "alert",
    }
    body = b'{"aps":{"alert":"x"}}'

    async def answer(path: str, headers: dict[str, str], data: bytes = body) -> str:
        request = ProviderRequest("POST", f"{apns.url}{path}", headers, data)
        response = await sender.send(request)
        return f"{response.status} {orjson.loads(response.body)['reason']}"

    token = "ab" * 32
    assert await answer("/3/device/not-hex", good) == "400 BadDeviceToken"
    assert await answer("/4/device/" + token, good) == "404 BadPath"
    assert await answer(f"/3/device/{token}", {**good, "authorization": ""}) == (
        "403 MissingProviderToken"
    )
    assert await answer(f"/3/device/{token}", {**good, "authorization": "bearer x.y.z"}) == (
        "403 InvalidProviderToken"
    )
    assert await answer(f"/3/device/{token}", {**good, "apns-push-type": "loud"}) == (
        "400 InvalidPushType"
    )
    assert await answer(f"/3/device/{token}", {**good, "apns-priority": "7"}) == ("400 BadPriority")
    background = {**good, "apns-push-type": "background", "apns-priority": "10"}
    assert await answer(f"/3/device/{token}", background) == "400 BadPriority"
    assert await answer(f"/3/device/{token}", good, b'{"alert":"x"}') == "400 BadPayload"
    assert await answer(f"/3/device/{token}", good, b" " * 5000) == "413 PayloadTooLarge"
    get = await sender.send(ProviderRequest("GET", f"{apns.url}/3/device/{token}", good))
    assert get.status == 405
    gone = await sender.send(ProviderRequest("POST", f"{apns.url}/3/device/{token}", good, body))
    assert gone.status == 200
    apns.unregister(token)
    response = await sender.send(
        ProviderRequest("POST", f"{apns.url}/3/device/{token}", good, body)
    )
    answer_body = orjson.loads(response.body)
    assert response.status == 410
    assert answer_body["reason"] == "Unregistered"
    assert isinstance(answer_body["timestamp"], int)


async def test_a_dropped_connection_is_retry_later_then_reconnects(
    apns: FakeApns, transport: ApnsTransport
) -> None:
    assert await transport.send(content(), devices(1)) == [Delivered()]
    apns.drop_next()
    [result] = await transport.send(content(), devices(1))
    assert isinstance(result, RetryLater)
    assert "Http2ConnectionLost" in result.reason
    assert await transport.send(content(), devices(1)) == [Delivered()]
    assert apns.connection_count == 2


async def test_goaway_mid_batch_loses_nothing_and_sends_nothing_twice(
    apns: FakeApns, sender: Http2Sender, credentials: ApnsCredentials
) -> None:
    transport = ApnsTransport(StaticSource(credentials), sender, base_url=apns.url, concurrency=200)
    apns.goaway_after(150)
    targets = devices(500)
    assert await transport.send(content(), targets) == [Delivered()] * 500
    received = collections.Counter(r.token for r in apns.requests)
    assert sorted(received) == sorted(t.address for t in targets)
    assert set(received.values()) == {1}
    assert apns.connection_count == 2


async def test_no_credentials_is_invalid_certificate(apns: FakeApns, sender: Http2Sender) -> None:
    transport = ApnsTransport(StaticSource(None), sender, base_url=apns.url)
    [result] = await transport.send(content(), devices(1))
    assert isinstance(result, PermanentFailure)
    assert result.reason.startswith("InvalidCertificate: ")
    assert apns.requests == []


async def test_concurrent_batches_share_the_connection(
    apns: FakeApns, transport: ApnsTransport
) -> None:
    batches = [transport.send(content(), devices(100, start)) for start in range(0, 500, 100)]
    for results in await asyncio.gather(*batches):
        assert results == [Delivered()] * 100
    assert apns.wait_for(500, timeout=1)
    assert apns.connection_count == 1
