"""Request quotas (requests per minute per API key), with the ``limits`` library: in this
process (memory), or shared by every process through Redis when ``queue_url`` names one.

A fixed one-minute window per key: cheap (one counter per key and minute) and never lets more
than the quota through in a window."""

from __future__ import annotations

import math
import time

import limits
import redis.asyncio as aioredis
from limits.aio.strategies import FixedWindowRateLimiter
from limits.storage import storage_from_string

_ITEMS: dict[int, limits.RateLimitItem] = {}


def _per_minute(count: int) -> limits.RateLimitItem:
    item = _ITEMS.get(count)
    if item is None:
        item = _ITEMS[count] = limits.RateLimitItemPerMinute(count)
    return item


class Quotas:
    def __init__(self, redis_url: str | None = None, prefix: str = "pushgate") -> None:
        self._pool: aioredis.ConnectionPool | None = None
        if redis_url is None:
            storage = storage_from_string("async+memory://")
        else:
            # Our own pool, so that ``close`` can close it.
            self._pool = aioredis.ConnectionPool.from_url(redis_url)
            uri = "async+" + redis_url if redis_url.startswith("redis") else redis_url
            storage = storage_from_string(
                uri,
                implementation="redispy",
                key_prefix=f"{prefix}:quota",
                connection_pool=self._pool,  # type: ignore[arg-type]  # limits passes it on
            )
        self._limiter = FixedWindowRateLimiter(storage)

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.aclose()

    async def hit(self, key: str, per_minute: int) -> int | None:
        """Count one request of ``key``: None while within ``per_minute``, else the seconds
        until the window ends (for ``Retry-After``)."""
        item = _per_minute(per_minute)
        if await self._limiter.hit(item, key):
            return None
        stats = await self._limiter.get_window_stats(item, key)
        return max(1, math.ceil(stats.reset_time - time.time()))
