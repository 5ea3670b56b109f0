"""When to try a failed delivery again: exponential backoff with full jitter, a floor set by the
provider's ``Retry-After``, an attempt limit, and the notification's expiry."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RetryAt:
    """Try again at ``at_ms``."""

    at_ms: int


@dataclass(frozen=True, slots=True)
class GiveUp:
    """Stop: ``status`` is ``failed`` (attempts used up) or ``expired`` (the TTL would pass)."""

    status: str
    reason: str


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 8
    base_seconds: float = 1.0
    max_seconds: float = 600.0

    def backoff_seconds(self, attempts: int, rng: random.Random | None = None) -> float:
        """A delay drawn from [cap/2, cap] where cap = base x 2^(attempts-1), at most
        ``max_seconds``: growing waits, spread so retries of many deliveries don't align."""
        cap = min(self.max_seconds, self.base_seconds * 2.0 ** max(0, attempts - 1))
        draw = (rng or random).random()
        return cap / 2 + draw * cap / 2

    def next_step(
        self,
        *,
        attempts: int,
        now_ms: int,
        expires_ms: int,
        retry_after_seconds: float | None,
        reason: str,
        rng: random.Random | None = None,
    ) -> RetryAt | GiveUp:
        """What follows a ``RetryLater`` after ``attempts`` attempts."""
        if attempts >= self.max_attempts:
            return GiveUp("failed", f"gave up after {attempts} attempts: {reason}")
        delay = self.backoff_seconds(attempts, rng)
        if retry_after_seconds is not None:
            delay = max(delay, min(retry_after_seconds, self.max_seconds * 6))
        at = now_ms + int(delay * 1000)
        if at >= expires_ms:
            return GiveUp("expired", f"expired before the next attempt: {reason}")
        return RetryAt(at)
