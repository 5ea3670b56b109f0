"""In-process registry of live device connections and their outgoing queues."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field

# A connection that falls this far behind is closed; it gets the rest from storage on reconnect.
MAX_QUEUED_PER_CONNECTION = 10_000


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One notification on its way to devices: its id and its pre-serialized message."""

    notification_id: int
    payload: bytes


@dataclass(eq=False)
class Subscription:
    device_id: int
    queue: asyncio.Queue[Outgoing] = field(default_factory=asyncio.Queue)
    overflowed: bool = False

    async def get(self) -> Outgoing:
        return await self.queue.get()

    def drain(self, limit: int) -> list[Outgoing]:
        """What is already queued, up to ``limit`` items, without waiting."""
        items: list[Outgoing] = []
        queue = self.queue
        while len(items) < limit and not queue.empty():
            items.append(queue.get_nowait())
        return items


class Hub:
    def __init__(self) -> None:
        self._by_device: dict[int, set[Subscription]] = {}

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
                if subscription.queue.qsize() >= MAX_QUEUED_PER_CONNECTION:
                    subscription.overflowed = True
                    continue
                subscription.queue.put_nowait(item)
                queued += 1
        return queued

    def connection_count(self) -> int:
        return sum(len(subscriptions) for subscriptions in self._by_device.values())
