"""The retry policy: backoff with jitter, Retry-After, attempt limit, expiry."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from pushgate.domain.retry import GiveUp, RetryAt, RetryPolicy

POLICY = RetryPolicy(max_attempts=5, base_seconds=1.0, max_seconds=60.0)
FAR = 10**12


@given(st.integers(1, 40), st.integers(0, 2**32))
def test_backoff_is_between_half_its_cap_and_the_cap(attempts: int, seed: int) -> None:
    cap = min(60.0, 2.0 ** (attempts - 1))
    delay = POLICY.backoff_seconds(attempts, random.Random(seed))
    assert cap / 2 <= delay <= cap


def test_backoff_grows_then_stays_at_the_maximum() -> None:
    low = [POLICY.backoff_seconds(n, random.Random(0)) for n in range(1, 12)]
    assert low[0] < low[3] < low[6]
    assert all(delay <= 60.0 for delay in low)


def test_retry_after_is_a_floor() -> None:
    step = POLICY.next_step(
        attempts=1, now_ms=0, expires_ms=FAR, retry_after_seconds=30, reason="429"
    )
    assert isinstance(step, RetryAt) and step.at_ms >= 30_000


def test_the_attempt_limit_gives_up_as_failed_with_the_reason() -> None:
    step = POLICY.next_step(
        attempts=5, now_ms=0, expires_ms=FAR, retry_after_seconds=None, reason="503"
    )
    assert step == GiveUp("failed", "gave up after 5 attempts: 503")


def test_a_retry_past_the_expiry_expires_instead() -> None:
    step = POLICY.next_step(
        attempts=1, now_ms=0, expires_ms=10_000, retry_after_seconds=20, reason="429"
    )
    assert isinstance(step, GiveUp) and step.status == "expired"
