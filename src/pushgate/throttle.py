"""The throttle on failed authentication: the floor under every face's credentials.

Every refused credential (user token, appID + appSecret, device token...) counts against the
client's address, and, when the credential names one, against its key id (the appID). Past
``per_address`` failures of one address, or ``per_key`` failures for one key id, within a
minute, requests from that address (or for that key id) are answered 429 with
``Retry-After`` until the minute is over, before their credentials are even looked at: so a
secret cannot be guessed faster than that, and a guess cannot be told right from wrong while
throttled.

A key id throttled by guesses from elsewhere would lock its own app out; so an address that
authenticates with that key id successfully while failures are counted for it stays trusted
for it (for an hour after its last success): the key id's throttle does not apply to it. An
address that first authenticates after the key id is throttled waits for the window's end.

Successful traffic pays one dictionary look-up while nothing has failed, and nothing more
until something does. Counts live in this process (several processes each keep their own);
they are forgotten a minute after their window starts.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from pushgate.domain.errors import TooManyRequests

T = TypeVar("T")

WINDOW_SECONDS = 60.0
TRUST_SECONDS = 3600.0
MAX_ENTRIES = 100_000
MAX_TRUSTED_PER_KEY = 1000


@dataclass(slots=True)
class _Window:
    started: float
    failures: int = 0


@dataclass(slots=True)
class _Trust:
    updated: float
    addresses: set[str] = field(default_factory=set)


class AuthThrottle:
    def __init__(
        self,
        *,
        per_address: int,
        per_key: int,
        window_seconds: float = WINDOW_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._per_address = per_address
        self._per_key = per_key
        self._window = window_seconds
        self._clock = clock
        self._addresses: dict[str, _Window] = {}
        self._keys: dict[str, _Window] = {}
        self._trust: dict[str, _Trust] = {}

    async def authenticate(
        self,
        address: str | None,
        key_id: str | None,
        check: Callable[[], Awaitable[T | None]],
    ) -> T | None:
        """``await check()`` (None: the credential was refused), counted; raises
        ``TooManyRequests`` without checking anything while ``address`` (or ``key_id``) is
        throttled."""
        wait = self.retry_after(address, key_id)
        if wait is not None:
            raise TooManyRequests(
                f"Too many failed authentications: try again in {wait} s", retry_after=wait
            )
        found = await check()
        if found is None:
            self.failed(address, key_id)
        elif key_id is not None:
            self.succeeded(address, key_id)
        return found

    def retry_after(self, address: str | None, key_id: str | None = None) -> int | None:
        """Seconds until ``address`` (asking for ``key_id``) may try again, or None when it
        may try now."""
        if not self._addresses and not self._keys:
            return None
        now = self._clock()
        wait = 0.0
        if address is not None:
            window = self._current(self._addresses, address, now)
            if window is not None and window.failures >= self._per_address:
                wait = window.started + self._window - now
        if key_id is not None:
            window = self._current(self._keys, key_id, now)
            if (
                window is not None
                and window.failures >= self._per_key
                and not self._trusted(key_id, address, now)
            ):
                wait = max(wait, window.started + self._window - now)
        return max(1, math.ceil(wait)) if wait > 0 else None

    def failed(self, address: str | None, key_id: str | None = None) -> None:
        """A refused credential from ``address`` (naming ``key_id``, when it does)."""
        now = self._clock()
        if address is not None:
            self._window_of(self._addresses, address, now).failures += 1
        if key_id is not None:
            self._window_of(self._keys, key_id, now).failures += 1

    def succeeded(self, address: str | None, key_id: str) -> None:
        """``address`` authenticated with ``key_id``: while failures are counted for the key
        id, the address is trusted for it."""
        if address is None or (not self._keys and not self._trust):
            return
        now = self._clock()
        trust = self._trust.get(key_id)
        if trust is None:
            if self._current(self._keys, key_id, now) is None:
                return
            if len(self._trust) >= MAX_ENTRIES:
                self._trust.clear()
            trust = self._trust[key_id] = _Trust(now)
        trust.updated = now
        if len(trust.addresses) < MAX_TRUSTED_PER_KEY:
            trust.addresses.add(address)

    def _trusted(self, key_id: str, address: str | None, now: float) -> bool:
        trust = self._trust.get(key_id)
        if trust is None:
            return False
        if now - trust.updated >= TRUST_SECONDS:
            del self._trust[key_id]
            return False
        return address in trust.addresses

    def _current(self, table: dict[str, _Window], name: str, now: float) -> _Window | None:
        window = table.get(name)
        if window is not None and now - window.started >= self._window:
            del table[name]
            return None
        return window

    def _window_of(self, table: dict[str, _Window], name: str, now: float) -> _Window:
        window = self._current(table, name, now)
        if window is None:
            if len(table) >= MAX_ENTRIES:
                self._forget_old(table, now)
            window = table[name] = _Window(now)
        return window

    def _forget_old(self, table: dict[str, _Window], now: float) -> None:
        for name in [n for n, w in table.items() if now - w.started >= self._window]:
            del table[name]
        if len(table) >= MAX_ENTRIES:  # all current: keep the newer half
            for name in list(table)[: len(table) // 2]:
                del table[name]
