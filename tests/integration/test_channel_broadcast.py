"""The Redis channel broadcast: what one process publishes reaches the connections another
holds, and a batch (``publish_many``, one pipeline) arrives whole and in order."""

from __future__ import annotations

import asyncio

from pushgate.channel.broadcast import RedisBroadcast
from pushgate.channel.hub import Hub, Outgoing


async def test_a_batch_published_in_one_trip_reaches_the_devices_in_order(
    redis_url: str, redis_prefix: str
) -> None:
    hub = Hub()
    server = RedisBroadcast(redis_url, redis_prefix, hub)  # holds the connections
    worker = RedisBroadcast(redis_url, redis_prefix, None)  # only publishes
    await server.start()
    try:
        first, second = hub.subscribe(1), hub.subscribe(2)
        await worker.publish_many(
            [
                ([1, 2], Outgoing(10, b'{"n":10}')),
                ([2], Outgoing(11, b'{"n":11}')),
                ([1], Outgoing(12, b'{"n":12}')),
            ]
        )
        await worker.publish_many([([2], Outgoing(13, b'{"n":13}'))])
        got_first = [await asyncio.wait_for(first.get(), 5) for _ in range(2)]
        got_second = [await asyncio.wait_for(second.get(), 5) for _ in range(3)]
        assert [(o.notification_id, o.payload) for o in got_first] == [
            (10, b'{"n":10}'),
            (12, b'{"n":12}'),
        ]
        assert [o.notification_id for o in got_second] == [10, 11, 13]
    finally:
        await worker.close()
        await server.close()
