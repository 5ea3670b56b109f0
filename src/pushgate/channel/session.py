"""One device connection: its backlog from storage, then live notifications, without gaps or
repeats. Shared by the WebSocket and SSE endpoints."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from pushgate.channel.hub import Hub, Outgoing
from pushgate.channel.messages import ready_message
from pushgate.services.notifications import NotificationQueries
from pushgate.services.pipeline import DeliveryPipeline

READY = -1  # notification_id of the "ready" message


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

    async def messages(
        self, since: int | None, idle_timeout: float | None = None
    ) -> AsyncIterator[Outgoing | None]:
        """Backlog, then ``ready``, then live messages; ``None`` after ``idle_timeout``
        seconds without a message (for keep-alives)."""
        subscription = self._hub.subscribe(self.device_id)
        self._pipeline.record_seen(self.device_id)
        try:
            # Subscribed first, so anything committed after the backlog query arrives live;
            # what arrives live and was already in the backlog is skipped.
            backlog_ids: set[int] = set()
            async for item in self._queries.backlog(self.device_id, since):
                backlog_ids.add(item.notification_id)
                yield item
            yield Outgoing(READY, ready_message(self.device_id, len(backlog_ids)))
            newest = max(backlog_ids, default=0)
            while True:
                if subscription.overflowed:
                    raise SlowConsumer
                try:
                    item = await asyncio.wait_for(subscription.get(), idle_timeout)
                except TimeoutError:
                    yield None
                    continue
                if item.notification_id <= newest and item.notification_id in backlog_ids:
                    continue
                yield item
        finally:
            self._hub.unsubscribe(subscription)
            self._pipeline.record_seen(self.device_id)

    def sent(self, item: Outgoing) -> None:
        if item.notification_id != READY:
            self._pipeline.record_sent(self.device_id, item.notification_id)

    def acknowledged(self, notification_ids: list[int]) -> None:
        if notification_ids:
            self._pipeline.record_delivered(self.device_id, notification_ids)
