"""In-process registry of live device connections and their outgoing queues."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import dataclass

# A connection that falls this far behind is closed; it gets the rest from storage on reconnect.
MAX_QUEUED_PER_CONNECTION = 10_000


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One notification on its way to devices: its id and its pre-serialized message."""

    notification_id: int
    payload: bytes


class Subscription:
    """One live connection's outgoing items. Deliberately small: a list, and a future only
    while the connection waits (an idle device connection holds just these few objects,
    where an ``asyncio.Queue`` would hold four deques of ~760 bytes each).

    A connection that writes what it is given at once sets ``sink``: ``put`` then hands each
    item straight to it, and nothing is queued."""

    __slots__ = ("device_id", "overflowed", "sink", "_items", "_waiter")

    def __init__(self, device_id: int) -> None:
        self.device_id = device_id
        self.overflowed = False
        self.sink: Callable[[Outgoing], None] | None = None
        self._items: list[Outgoing] = []
        self._waiter: asyncio.Future[None] | None = None

    def qsize(self) -> int:
        return len(self._items)

    def put(self, item: Outgoing) -> None:
        sink = self.sink
        if sink is not None:
            sink(item)
            return
        self._items.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def get(self) -> Outgoing:
        while not self._items:
            waiter = self._waiter = asyncio.get_running_loop().create_future()
            try:
                await waiter
            finally:
                self._waiter = None
        return self._items.pop(0)

    def drain(self, limit: int) -> list[Outgoing]:
        """What is already queued, up to ``limit`` items, without waiting."""
        items = self._items[:limit]
        del self._items[:limit]
        return items


class Hub:
    def __init__(self) -> None:
        self._by_device: dict[int, set[Subscription]] = {}
        # Frames (WebSocket messages, SSE events and keep-alives) and their bytes written to
        # device connections, counted by the writers with ``count_sent`` (the metrics read them).
        self.frames_sent = 0
        self.bytes_sent = 0

    def count_sent(self, frames: int, nbytes: int) -> None:
        self.frames_sent += frames
        self.bytes_sent += nbytes

    def subscribe(self, device_id: int) -> Subscription:
        subscription = Subscription(device_id)
        self._by_device.setdefault(device_id, set()).add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        subscriptions = self._by_device.get(subscription.device_id)
        if subscriptions is None:
            return
        subscriptions.discard(subscription)
        if not subscriptions:
            del self._by_device[subscription.device_id]

    def publish(self, device_ids: Iterable[int], item: Outgoing) -> int:
        """Queue ``item`` for every live connection of these devices; returns how many."""
        queued = 0
        by_device = self._by_device
        for device_id in device_ids:
            subscriptions = by_device.get(device_id)
            if not subscriptions:
                continue
            for subscription in subscriptions:
                if subscription.qsize() >= MAX_QUEUED_PER_CONNECTION:
                    subscription.overflowed = True
                    continue
                subscription.put(item)
                queued += 1
        return queued

    def connection_count(self) -> int:
        return sum(len(subscriptions) for subscriptions in self._by_device.values())
