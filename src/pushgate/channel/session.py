"""One device connection: its backlog from storage, then live notifications, without gaps or
repeats. Shared by the WebSocket and SSE endpoints."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable

from pushgate.channel.hub import Hub, Outgoing, Subscription
from pushgate.channel.messages import content_message, ready_message
from pushgate.services.notifications import NotificationQueries
from pushgate.services.pipeline import DeliveryPipeline

READY = -1  # notification_id of the "ready" message
MAX_BATCH = 100


class SlowConsumer(Exception):
    """The connection fell too far behind; it is closed and catches up on reconnect."""


class DeviceSession:
    def __init__(
        self,
        device_id: int,
        hub: Hub,
        queries: NotificationQueries,
        pipeline: DeliveryPipeline,
    ) -> None:
        self.device_id = device_id
        self._hub = hub
        self._queries = queries
        self._pipeline = pipeline
        self._backlog_ids: set[int] = set()
        self._newest = 0

    def open(self) -> Subscription:
        """Subscribe to live notifications (before the backlog is read, so that nothing
        committed meanwhile is missed)."""
        self._pipeline.record_seen(self.device_id)
        return self._hub.subscribe(self.device_id)

    def close(self, subscription: Subscription) -> None:
        self._hub.unsubscribe(subscription)
        self._pipeline.record_seen(self.device_id)

    async def catch_up(self, since: int | None) -> AsyncIterator[list[Outgoing]]:
        """The backlog in batches of at most ``MAX_BATCH``, then ``ready`` alone in its
        batch. Call after ``open``: what arrives live from then on and was in the backlog is
        dropped by ``unseen``."""
        self._backlog_ids = set()
        page: list[Outgoing] = []
        async for item in self.owed(since):
            self._backlog_ids.add(item.notification_id)
            page.append(item)
            if len(page) == MAX_BATCH:
                yield page
                page = []
        if page:
            yield page
        self._newest = max(self._backlog_ids, default=0)
        yield [Outgoing(READY, ready_message(self.device_id, len(self._backlog_ids)))]

    def unseen(self, items: Iterable[Outgoing]) -> list[Outgoing]:
        """Live ``items`` less those the backlog already carried."""
        newest, backlog_ids = self._newest, self._backlog_ids
        if not backlog_ids:
            return list(items)
        return [
            item
            for item in items
            if item.notification_id > newest or item.notification_id not in backlog_ids
        ]

    async def batches(
        self, since: int | None, idle_timeout: float | None = None
    ) -> AsyncIterator[list[Outgoing] | None]:
        """The backlog, then ``ready`` (alone in its batch), then live notifications, in
        batches of what is ready to go (at most ``MAX_BATCH``); ``None`` after
        ``idle_timeout`` seconds without a notification (for keep-alives)."""
        subscription = self.open()
        try:
            async for page in self.catch_up(since):
                yield page
            while True:
                if subscription.overflowed:
                    raise SlowConsumer
                try:
                    first = await asyncio.wait_for(subscription.get(), idle_timeout)
                except TimeoutError:
                    yield None
                    continue
                batch = self.unseen((first, *subscription.drain(MAX_BATCH - 1)))
                if batch:
                    yield batch
        finally:
            self.close(subscription)

    async def owed(self, since: int | None, limit: int | None = None) -> AsyncIterator[Outgoing]:
        """The device's backlog from storage (see ``NotificationQueries.backlog``), less what
        it has acknowledged in changes not written yet."""
        async for content in self._queries.backlog(self.device_id, since, limit):
            notification_id = content.notification_id
            if since is None and self._pipeline.acknowledged(self.device_id, notification_id):
                continue
            yield Outgoing(notification_id, content_message(content))

    def sent_batch(self, batch: list[Outgoing]) -> None:
        ids = [item.notification_id for item in batch if item.notification_id != READY]
        if ids:
            self._pipeline.record_sent(self.device_id, ids)

    def acknowledged(self, notification_ids: list[int]) -> None:
        if notification_ids:
            self._pipeline.record_delivered(self.device_id, notification_ids)
