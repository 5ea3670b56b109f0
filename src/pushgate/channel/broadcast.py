"""Cross-process fan-out for the device channel.

A channel delivery job may be run by any process (the outbox relay of the process that committed
it, or another's for one left behind), while the device's connection lives in one server
process. ``LocalBroadcast`` hands notifications straight to this process's hub (one
process, the embedded default). ``RedisBroadcast`` publishes them on one Redis pub/sub channel
that every server process subscribes to; each hands them to the connections it holds.

Pub/sub is not durable, and it does not have to be: the delivery row is committed before the
job that publishes it, so a device that misses a live message (its server was cut off from
Redis) gets it from its backlog when it reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from abc import ABC, abstractmethod
from array import array
from collections.abc import Sequence

import redis.asyncio as aioredis

from pushgate.channel.hub import Hub, Outgoing

log = logging.getLogger(__name__)

_HEADER = struct.Struct("<qI")  # notification id, device count
RESUBSCRIBE_SECONDS = 1.0


def encode(device_ids: Sequence[int], item: Outgoing) -> bytes:
    ids = array("q", device_ids)
    return _HEADER.pack(item.notification_id, len(ids)) + ids.tobytes() + item.payload


def decode(message: bytes) -> tuple[array[int], Outgoing]:
    notification_id, count = _HEADER.unpack_from(message)
    start = _HEADER.size
    end = start + 8 * count
    ids = array("q")
    ids.frombytes(message[start:end])
    return ids, Outgoing(notification_id, message[end:])


class ChannelBroadcast(ABC):
    async def start(self) -> None:  # noqa: B027 - optional hook
        pass

    async def close(self) -> None:  # noqa: B027 - optional hook
        pass

    @abstractmethod
    async def publish(self, device_ids: Sequence[int], item: Outgoing) -> None:
        """Offer ``item`` to these devices' live connections, in whichever process."""

    async def publish_many(self, items: Sequence[tuple[Sequence[int], Outgoing]]) -> None:
        """``publish`` each (device ids, item), in order."""
        for device_ids, item in items:
            await self.publish(device_ids, item)


class LocalBroadcast(ChannelBroadcast):
    def __init__(self, hub: Hub) -> None:
        self._hub = hub

    async def publish(self, device_ids: Sequence[int], item: Outgoing) -> None:
        self._hub.publish(device_ids, item)


class RedisBroadcast(ChannelBroadcast):
    """``hub``: this process's connections (a server process); ``None`` in a worker process,
    which only publishes."""

    def __init__(self, url: str, prefix: str, hub: Hub | None) -> None:
        self._client = aioredis.Redis.from_url(url)
        self._channel = f"{prefix}:channel".encode()
        self._hub = hub
        self._listener: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()

    async def start(self) -> None:
        if self._hub is not None:
            self._listener = asyncio.create_task(self._listen(), name="pushgate-channel-sub")
            await asyncio.wait_for(self._subscribed.wait(), 10)

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
            self._listener = None
        await self._client.aclose()

    async def publish(self, device_ids: Sequence[int], item: Outgoing) -> None:
        await self._client.publish(self._channel, encode(device_ids, item))

    async def publish_many(self, items: Sequence[tuple[Sequence[int], Outgoing]]) -> None:
        """One trip to Redis for all of them (a pipeline, in order)."""
        if len(items) == 1:
            await self.publish(*items[0])
            return
        async with self._client.pipeline(transaction=False) as pipe:
            for device_ids, item in items:
                pipe.publish(self._channel, encode(device_ids, item))
            await pipe.execute()

    async def _listen(self) -> None:
        assert self._hub is not None
        hub = self._hub
        while True:
            try:
                async with self._client.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(self._channel)
                    self._subscribed.set()
                    async for message in pubsub.listen():
                        if message is None or message.get("type") != "message":
                            continue
                        ids, item = decode(message["data"])
                        hub.publish(ids, item)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("channel subscription to Redis lost; resubscribing")
                await asyncio.sleep(RESUBSCRIBE_SECONDS)
