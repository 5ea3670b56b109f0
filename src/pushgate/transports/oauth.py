"""OAuth 2.0 access tokens for the providers that want one per request (FCM, HMS).

An access token is fetched once per credential and shared by every send until shortly before
it expires: ``AccessTokenCache.get`` runs one fetch at a time per credential (concurrent sends
wait for the same fetch) and keeps the token until ``refresh_margin`` before its
``expires_in`` runs out. After the provider refuses a token (401), ``invalidate`` drops it so
the next send fetches a new one.

A fetch that fails raises ``TokenUnavailable`` with the outcome every target of the send gets:
the token endpoint refusing the credential (4xx) is ``PermanentFailure("InvalidCertificate:
...")`` with the provider's error; an outage (429, 5xx) or no answer at all is ``RetryLater``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Any

import orjson

from pushgate.domain.outcomes import PermanentFailure, RetryLater
from pushgate.egress import EgressRefused
from pushgate.transports.base import CONNECTION_ERRORS, short_text
from pushgate.transports.http import HttpSender, ProviderRequest, ProviderResponse

MAX_CACHED = 4096


@dataclass(frozen=True, slots=True)
class Grant:
    """A token endpoint's answer: the access token and its lifetime in seconds."""

    access_token: str
    expires_in: float


class TokenUnavailable(Exception):
    """No access token: ``outcome`` is what every target of the send gets."""

    def __init__(self, outcome: PermanentFailure | RetryLater) -> None:
        super().__init__(outcome.reason)
        self.outcome = outcome


def refresh_margin(lifetime: float) -> float:
    """How long before its expiry a token is replaced: 5 minutes, or half of a short life."""
    return min(300.0, lifetime / 2)


def _error_text(body: bytes) -> str:
    """The error of an OAuth answer (RFC 6749 ``error``/``error_description``, or HMS's
    numeric ``error`` with ``sub_error``) as short sanitised fields; never the body itself
    (the endpoint's URL came from a credential: its answer is not ours to store)."""
    try:
        value: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        return "(no OAuth error in the answer)"
    if not isinstance(value, dict):
        return "(no OAuth error in the answer)"
    parts = [short_text(value.get(name)) for name in ("error", "sub_error")]
    description = short_text(value.get("error_description"))
    text = " ".join(part for part in parts if part)
    if description:
        text = f"{text}: {description}" if text else description
    return text or "(no OAuth error in the answer)"


def grant_from_response(response: ProviderResponse, provider: str) -> Grant:
    """The grant in a token endpoint's answer; raises ``TokenUnavailable`` when there is none."""
    if response.status == 200:
        try:
            value: Any = orjson.loads(response.body)
            token = value["access_token"]
            expires_in = float(value.get("expires_in", 3600))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise TokenUnavailable(
                RetryLater(f"{provider} token endpoint answered without an access token ({exc!r})")
            ) from exc
        if not isinstance(token, str) or not token:
            raise TokenUnavailable(
                RetryLater(f"{provider} token endpoint answered an empty access token")
            )
        return Grant(token, expires_in)
    error = _error_text(response.body)
    if response.status == 429 or response.status >= 500:
        raise TokenUnavailable(
            RetryLater(
                f"{provider} token endpoint answered {response.status}: {error}",
                response.retry_after(),
            )
        )
    raise TokenUnavailable(
        PermanentFailure(
            f"InvalidCertificate: the {provider} token endpoint refused the credentials "
            f"({response.status} {error})"
        )
    )


async def fetch_grant(sender: HttpSender, request: ProviderRequest, provider: str) -> Grant:
    """Ask the token endpoint; raises ``TokenUnavailable``."""
    try:
        response = await sender.send(request)
    except EgressRefused as exc:
        raise TokenUnavailable(
            PermanentFailure(f"InvalidCertificate: {provider} token_uri {exc}")
        ) from exc
    except CONNECTION_ERRORS as exc:
        raise TokenUnavailable(
            RetryLater(f"{provider} token endpoint unreachable: {type(exc).__name__}")
        ) from exc
    return grant_from_response(response, provider)


@dataclass(frozen=True, slots=True)
class _Cached:
    access_token: str
    refresh_at: float  # clock time after which it is fetched anew


class AccessTokenCache:
    """Access tokens by credential (any hashable identity of it), fetched one at a time."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._tokens: dict[Hashable, _Cached] = {}
        self._inflight: dict[Hashable, asyncio.Task[str]] = {}
        self.fetches = 0

    async def get(self, key: Hashable, fetch: Callable[[], Awaitable[Grant]]) -> str:
        """The cached access token for ``key``, or the one ``fetch`` brings. Raises what
        ``fetch`` raises (to every waiter of that fetch)."""
        cached = self._tokens.get(key)
        if cached is not None and self._clock() < cached.refresh_at:
            return cached.access_token
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._fetch(key, fetch))
            task.add_done_callback(_retrieve)
            self._inflight[key] = task
        # shield: a cancelled waiter leaves the fetch running for the others
        return await asyncio.shield(task)

    async def _fetch(self, key: Hashable, fetch: Callable[[], Awaitable[Grant]]) -> str:
        try:
            self.fetches += 1
            grant = await fetch()
            lifetime = max(0.0, grant.expires_in)
            if len(self._tokens) >= MAX_CACHED:
                self._forget_stale()
            self._tokens[key] = _Cached(
                grant.access_token, self._clock() + lifetime - refresh_margin(lifetime)
            )
            return grant.access_token
        finally:
            self._inflight.pop(key, None)

    def invalidate(self, key: Hashable, access_token: str | None = None) -> None:
        """Forget the token of ``key`` (only if it is still ``access_token``, when given: a
        token fetched since the refused one stays)."""
        cached = self._tokens.get(key)
        if cached is not None and (access_token is None or cached.access_token == access_token):
            del self._tokens[key]

    def clear(self) -> None:
        self._tokens.clear()

    def _forget_stale(self) -> None:
        now = self._clock()
        for key in [key for key, cached in self._tokens.items() if cached.refresh_at <= now]:
            del self._tokens[key]


def _retrieve(task: asyncio.Task[str]) -> None:
    """Mark a failed fetch's exception as seen (its waiters may all have been cancelled)."""
    if not task.cancelled():
        task.exception()
