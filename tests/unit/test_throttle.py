"""The failed-authentication throttle, on a fake clock."""

from __future__ import annotations

import pytest

from pushgate.domain.errors import TooManyRequests
from pushgate.throttle import AuthThrottle


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def throttle(clock: Clock, per_address: int = 3, per_key: int = 5) -> AuthThrottle:
    return AuthThrottle(per_address=per_address, per_key=per_key, clock=clock)


def test_nothing_is_throttled_before_failures() -> None:
    t = throttle(Clock())
    assert t.retry_after("10.0.0.1", "app") is None


def test_an_address_is_throttled_after_its_failures_until_the_window_ends() -> None:
    clock = Clock()
    t = throttle(clock)
    for _ in range(3):
        assert t.retry_after("10.0.0.1") is None
        t.failed("10.0.0.1")
    assert t.retry_after("10.0.0.1") == 60
    assert t.retry_after("10.0.0.2") is None
    clock.now += 45.5
    assert t.retry_after("10.0.0.1") == 15
    clock.now += 15
    assert t.retry_after("10.0.0.1") is None


def test_a_key_id_is_throttled_for_addresses_that_never_succeeded_with_it() -> None:
    clock = Clock()
    t = throttle(clock, per_address=100, per_key=3)
    t.failed("10.0.0.9", "app")  # the key id is being guessed at
    t.succeeded("10.0.0.1", "app")  # its own server authenticates meanwhile
    for address in ("10.0.0.9", "10.0.0.8"):
        t.failed(address, "app")
    assert t.retry_after("10.0.0.7", "app") == 60
    assert t.retry_after("10.0.0.9", "app") == 60
    assert t.retry_after("10.0.0.1", "app") is None  # trusted
    assert t.retry_after("10.0.0.7", "other") is None
    clock.now += 60
    assert t.retry_after("10.0.0.7", "app") is None


def test_success_before_any_failure_records_nothing() -> None:
    t = throttle(Clock())
    t.succeeded("10.0.0.1", "app")
    assert t._trust == {}  # successful traffic leaves no state behind


async def test_authenticate_counts_and_refuses_without_checking() -> None:
    t = throttle(Clock(), per_address=2)
    checks = 0

    async def wrong() -> str | None:
        nonlocal checks
        checks += 1
        return None

    for _ in range(2):
        assert await t.authenticate("10.0.0.1", None, wrong) is None
    with pytest.raises(TooManyRequests) as refused:
        await t.authenticate("10.0.0.1", None, wrong)
    assert checks == 2
    assert refused.value.status == 429
    assert refused.value.headers == {"Retry-After": "60"}


def test_memory_stays_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    import pushgate.throttle as module

    monkeypatch.setattr(module, "MAX_ENTRIES", 100)
    t = throttle(Clock())
    for n in range(1000):
        t.failed(f"10.0.{n // 256}.{n % 256}")
    assert len(t._addresses) <= 100
