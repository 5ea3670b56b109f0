"""One device connection: its backlog from storage, then live notifications, without gaps or
repeats. Shared by the WebSocket and SSE endpoints."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from pushgate.channel.hub import Hub, Outgoing
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

    async def batches(
        self, since: int | None, idle_timeout: float | None = None
    ) -> AsyncIterator[list[Outgoing] | None]:
        """The backlog, then ``ready`` (alone in its batch), then live notifications, in
        batches of what is ready to go (at most ``MAX_BATCH``); ``None`` after
        ``idle_timeout`` seconds without a notification (for keep-alives)."""
        subscription = self._hub.subscribe(self.device_id)
        self._pipeline.record_seen(self.device_id)
        try:
            # Subscribed first, so anything committed after the backlog query arrives live;
            # what arrives live and was already in the backlog is skipped.
            backlog_ids: set[int] = set()
            page: list[Outgoing] = []
            async for item in self.owed(since):
                backlog_ids.add(item.notification_id)
                page.append(item)
                if len(page) == MAX_BATCH:
                    yield page
                    page = []
            if page:
                yield page
            yield [Outgoing(READY, ready_message(self.device_id, len(backlog_ids)))]
            newest = max(backlog_ids, default=0)
            while True:
                if subscription.overflowed:
                    raise SlowConsumer
                try:
                    first = await asyncio.wait_for(subscription.get(), idle_timeout)
                except TimeoutError:
                    yield None
                    continue
                batch = [
                    item
                    for item in (first, *subscription.drain(MAX_BATCH - 1))
                    if item.notification_id > newest or item.notification_id not in backlog_ids
                ]
                if batch:
                    yield batch
        finally:
            self._hub.unsubscribe(subscription)
            self._pipeline.record_seen(self.device_id)

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
