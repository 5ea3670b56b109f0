"""What the fake providers (``FakeApns``, ``FakeFcm``, ``FakeHms``, ``FakeWebPush``) share: the
faults a test injects, the record of what arrived, and the addresses that are gone.

A fake mixes ``FakeProvider`` into its server class and calls ``FakeProvider.__init__`` from
its own constructor; its handler then asks ``_faults.take()`` for the next fault (status 0: drop
the connection without an answer), ``_gone(address)`` whether an address was unregistered, and
calls ``_record(item)`` for what it accepted. Everything here may be called from any thread:
tests call in from theirs while the server answers on its own loop.

    fake.fail_next(503, retry_after=7)  # the next send: 503 with Retry-After, in the provider's
    fake.drop_next()                    #   error format; then one connection closed unanswered
    fake.unregister(address)            # later sends to it: the provider's "gone" answer
    assert fake.wait_for(1)             # at least one recorded within 10 seconds
    fake.received                       # what was recorded, in order (a copy)
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Generic, TypeVar

import orjson

from pushgate.testing.fake_server import wait_until

R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class Fault:
    """One injected answer: ``status`` (0: close the connection without an answer), with
    ``Retry-After`` and the provider's reason (None: the fake's usual one for the status)."""

    status: int
    retry_after: float | None = None
    reason: str | None = None


class FaultQueue:
    """Faults to inject, the first injected first."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: deque[Fault] = deque()

    def add(
        self,
        status: int,
        count: int = 1,
        *,
        retry_after: float | None = None,
        reason: str | None = None,
    ) -> None:
        fault = Fault(status, retry_after, reason)
        with self._lock:
            self._faults.extend([fault] * count)

    def take(self) -> Fault | None:
        """The next fault to inject, or None (at once, without the lock, when there is none)."""
        if not self._faults:
            return None
        with self._lock:
            return self._faults.popleft() if self._faults else None

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def __len__(self) -> int:
        return len(self._faults)


class FakeProvider(Generic[R]):
    """Faults on demand, the record of what arrived (items of type ``R``), gone addresses."""

    def __init__(self, *, keep_records: bool = True) -> None:
        self._lock = threading.Lock()
        self._faults = FaultQueue()
        self._records: list[R] = []
        self._record_count = 0
        self._keep_records = keep_records
        self._unregistered: dict[str, int] = {}  # address -> when (ms since the epoch)

    # -- what a test sets up -------------------------------------------------------------

    def fail_next(
        self,
        status: int,
        count: int = 1,
        *,
        retry_after: float | None = None,
        reason: str | None = None,
    ) -> None:
        """Answer the next ``count`` sends with ``status`` in the provider's error format:
        ``reason`` names the provider's error (by default the usual one for the status; the
        fake's docstring lists them) and ``retry_after`` adds a ``Retry-After`` header."""
        self._faults.add(status, count, retry_after=retry_after, reason=reason)

    def drop_next(self, count: int = 1) -> None:
        """Close the connection of each of the next ``count`` sends without answering."""
        self._faults.add(0, count)

    def clear_faults(self) -> None:
        """Forget the faults not injected yet."""
        self._faults.clear()

    def unregister(self, address: str) -> None:
        """Later sends to ``address`` get the provider's answer for a device that is gone."""
        with self._lock:
            self._unregistered[address] = int(time.time() * 1000)

    # -- what a test reads ---------------------------------------------------------------

    @property
    def received(self) -> list[R]:
        """What arrived, in order (a copy)."""
        with self._lock:
            return list(self._records)

    @property
    def received_count(self) -> int:
        """How many arrived (also counted when the fake does not keep them)."""
        with self._lock:
            return self._record_count

    def wait_for(self, count: int, timeout: float = 10.0) -> bool:
        """Whether at least ``count`` arrived within ``timeout`` seconds."""
        return wait_until(lambda: self._record_count >= count, timeout)

    def clear(self) -> None:
        """Forget what arrived so far (``received`` and its count start again from zero)."""
        with self._lock:
            self._records.clear()
            self._record_count = 0

    # -- for the fake's handler ----------------------------------------------------------

    def _record(self, item: R) -> None:
        with self._lock:
            self._record_count += 1
            if self._keep_records:
                self._records.append(item)

    def _gone(self, address: str) -> bool:
        """Whether ``address`` was unregistered (at once when nothing was)."""
        return bool(self._unregistered) and address in self._unregistered

    def _gone_since(self, address: str) -> int | None:
        """When ``address`` was unregistered (ms since the epoch), or None."""
        return self._unregistered.get(address)


class OAuthFakeProvider(FakeProvider[R]):
    """A fake provider behind an OAuth 2.0 token endpoint (``FakeFcm``, ``FakeHms``): the
    access tokens its endpoint issued with their expiry, how many it issued, and the faults
    injected into the endpoint. The fake's token handler asks ``_token_faults.take()`` first
    and answers a good request with ``_issue_access_token``; its send handler asks
    ``_access_token_valid`` about the bearer token it got."""

    def __init__(self, *, expires_in: int, keep_records: bool = True) -> None:
        FakeProvider.__init__(self, keep_records=keep_records)
        self.expires_in = expires_in
        self.token_fetches = 0
        self._access_tokens: dict[str, float] = {}  # token -> expiry (time.time())
        self._token_faults = FaultQueue()

    def fail_token_endpoint_next(
        self,
        status: int,
        count: int = 1,
        *,
        retry_after: float | None = None,
        reason: str | None = None,
    ) -> None:
        """The next ``count`` token requests get ``status`` with the OAuth error ``reason``
        (by default the fake's usual one: its docstring names it); status 0 drops the
        connection."""
        self._token_faults.add(status, count, retry_after=retry_after, reason=reason)

    def revoke_access_tokens(self) -> None:
        """Every access token issued so far stops working (the fake's docstring says what
        sends with one get)."""
        with self._lock:
            self._access_tokens.clear()

    def _issue_access_token(self, access_token: str) -> bytes:
        """Remember ``access_token`` as issued now; the token endpoint's JSON answer."""
        with self._lock:
            self.token_fetches += 1
            self._access_tokens[access_token] = time.time() + self.expires_in
        return orjson.dumps(
            {"access_token": access_token, "expires_in": self.expires_in, "token_type": "Bearer"}
        )

    def _access_token_valid(self, access_token: str) -> bool:
        """Whether the endpoint issued ``access_token``, not revoked and not expired."""
        with self._lock:
            expiry = self._access_tokens.get(access_token)
        return expiry is not None and expiry >= time.time()
