"""Request quotas: one contract, in this process and shared through Redis."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from pushgate.services.quotas import Quotas


@pytest.fixture(params=["memory", "redis"])
async def quotas(request: pytest.FixtureRequest) -> AsyncIterator[Quotas]:
    if request.param == "memory":
        yield Quotas()
        return
    url = request.getfixturevalue("redis_url")
    prefix = request.getfixturevalue("redis_prefix")
    shared = Quotas(url, prefix)
    yield shared
    await shared.close()


async def test_a_key_gets_its_quota_then_waits_for_the_window(quotas: Quotas) -> None:
    key = f"key:{uuid.uuid4().hex}"
    assert [await quotas.hit(key, 3) for _ in range(3)] == [None, None, None]
    wait = await quotas.hit(key, 3)
    assert wait is not None and 1 <= wait <= 60
    assert await quotas.hit(f"key:{uuid.uuid4().hex}", 3) is None  # another key: its own


async def test_processes_share_the_quota_through_redis(redis_url: str, redis_prefix: str) -> None:
    one, two = Quotas(redis_url, redis_prefix), Quotas(redis_url, redis_prefix)
    key = f"key:{uuid.uuid4().hex}"
    assert await one.hit(key, 2) is None
    assert await two.hit(key, 2) is None
    assert await one.hit(key, 2) is not None
    assert await two.hit(key, 2) is not None
    await one.close()
    await two.close()
