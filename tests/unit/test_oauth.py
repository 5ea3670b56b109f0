"""The access-token cache: one fetch at a time per credential, refresh before expiry,
invalidation, and token endpoint answers mapped to outcomes."""

from __future__ import annotations

import asyncio

import pytest

from pushgate.domain.outcomes import PermanentFailure, RetryLater
from pushgate.transports.http import ProviderRequest, ProviderResponse
from pushgate.transports.oauth import (
    AccessTokenCache,
    Grant,
    TokenUnavailable,
    fetch_grant,
    grant_from_response,
    refresh_margin,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def counting_fetch(expires_in: float = 3600, delay: float = 0.0):
    calls: list[int] = []

    async def fetch() -> Grant:
        calls.append(1)
        await asyncio.sleep(delay)
        return Grant(f"token-{len(calls)}", expires_in)

    return fetch, calls


async def test_concurrent_gets_share_one_fetch() -> None:
    cache = AccessTokenCache()
    fetch, calls = counting_fetch(delay=0.05)
    tokens = await asyncio.gather(*(cache.get("app", fetch) for _ in range(20)))
    assert tokens == ["token-1"] * 20
    assert len(calls) == 1
    assert await cache.get("app", fetch) == "token-1"
    assert len(calls) == 1
    assert cache.fetches == 1


async def test_credentials_have_tokens_of_their_own() -> None:
    cache = AccessTokenCache()
    fetch, calls = counting_fetch()
    assert await cache.get("a", fetch) == "token-1"
    assert await cache.get("b", fetch) == "token-2"
    assert await cache.get("a", fetch) == "token-1"
    assert len(calls) == 2


async def test_token_is_replaced_five_minutes_before_it_expires() -> None:
    clock = Clock()
    cache = AccessTokenCache(clock=clock)
    fetch, calls = counting_fetch(expires_in=3600)
    assert await cache.get("app", fetch) == "token-1"
    clock.now += 3600 - 301
    assert await cache.get("app", fetch) == "token-1"
    clock.now += 2
    assert await cache.get("app", fetch) == "token-2"
    assert len(calls) == 2


async def test_short_lived_token_is_replaced_at_half_its_life() -> None:
    clock = Clock()
    cache = AccessTokenCache(clock=clock)
    fetch, _calls = counting_fetch(expires_in=60)
    assert await cache.get("app", fetch) == "token-1"
    clock.now += 29
    assert await cache.get("app", fetch) == "token-1"
    clock.now += 2
    assert await cache.get("app", fetch) == "token-2"


def test_refresh_margin() -> None:
    assert refresh_margin(3600) == 300
    assert refresh_margin(100) == 50
    assert refresh_margin(0) == 0


async def test_invalidate_forgets_only_the_refused_token() -> None:
    cache = AccessTokenCache()
    fetch, _calls = counting_fetch()
    assert await cache.get("app", fetch) == "token-1"
    cache.invalidate("app", "token-1")
    assert await cache.get("app", fetch) == "token-2"
    cache.invalidate("app", "token-1")  # an older token was refused: keep the new one
    assert await cache.get("app", fetch) == "token-2"
    cache.invalidate("app")
    assert await cache.get("app", fetch) == "token-3"


async def test_failed_fetch_reaches_every_waiter_and_the_next_get_fetches_again() -> None:
    cache = AccessTokenCache()
    attempts: list[int] = []

    async def failing() -> Grant:
        attempts.append(1)
        await asyncio.sleep(0.02)
        raise TokenUnavailable(RetryLater("down"))

    results = await asyncio.gather(
        *(cache.get("app", failing) for _ in range(5)), return_exceptions=True
    )
    assert all(isinstance(r, TokenUnavailable) for r in results)
    assert len(attempts) == 1
    fetch, _calls = counting_fetch()
    assert await cache.get("app", fetch) == "token-1"


async def test_a_cancelled_waiter_leaves_the_fetch_to_the_others() -> None:
    cache = AccessTokenCache()
    fetch, calls = counting_fetch(delay=0.05)
    first = asyncio.create_task(cache.get("app", fetch))
    second = asyncio.create_task(cache.get("app", fetch))
    await asyncio.sleep(0.01)
    first.cancel()
    assert await second == "token-1"
    with pytest.raises(asyncio.CancelledError):
        await first
    assert len(calls) == 1


def response(status: int, body: bytes, headers: dict[str, str] | None = None) -> ProviderResponse:
    return ProviderResponse(status, headers or {}, body)


def test_grant_from_a_good_answer() -> None:
    grant = grant_from_response(
        response(200, b'{"access_token":"abc","expires_in":3599,"token_type":"Bearer"}'), "FCM"
    )
    assert grant == Grant("abc", 3599.0)


def test_refused_credentials_are_invalid_certificate() -> None:
    body = b'{"error":"invalid_grant","error_description":"Invalid JWT Signature."}'
    with pytest.raises(TokenUnavailable) as caught:
        grant_from_response(response(400, body), "FCM")
    assert isinstance(caught.value.outcome, PermanentFailure)
    assert caught.value.outcome.reason.startswith("InvalidCertificate: ")
    assert "invalid_grant: Invalid JWT Signature." in caught.value.outcome.reason


def test_hms_style_oauth_error_is_named() -> None:
    body = b'{"error":1101,"sub_error":20001,"error_description":"invalid client"}'
    with pytest.raises(TokenUnavailable) as caught:
        grant_from_response(response(401, body), "Push Kit")
    assert "1101 20001: invalid client" in caught.value.outcome.reason


def test_token_endpoint_outage_is_retry_later() -> None:
    with pytest.raises(TokenUnavailable) as caught:
        grant_from_response(response(503, b"busy", {"retry-after": "12"}), "FCM")
    assert caught.value.outcome == RetryLater(
        "FCM token endpoint answered 503: (no OAuth error in the answer)", 12.0
    )  # a plain-text body is never copied into a reason
    with pytest.raises(TokenUnavailable) as caught:
        grant_from_response(response(429, b"{}"), "FCM")
    assert isinstance(caught.value.outcome, RetryLater)


def test_answer_without_a_token_is_retry_later() -> None:
    with pytest.raises(TokenUnavailable) as caught:
        grant_from_response(response(200, b'{"token_type":"Bearer"}'), "FCM")
    assert isinstance(caught.value.outcome, RetryLater)


class Unreachable:
    async def send(self, request: ProviderRequest) -> ProviderResponse:
        raise ConnectionResetError("reset by peer")

    async def close(self) -> None:
        pass


async def test_unreachable_token_endpoint_is_retry_later() -> None:
    with pytest.raises(TokenUnavailable) as caught:
        await fetch_grant(Unreachable(), ProviderRequest("POST", "https://x/token"), "FCM")
    assert isinstance(caught.value.outcome, RetryLater)
    assert "ConnectionResetError" in caught.value.outcome.reason
