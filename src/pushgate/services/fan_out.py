"""Fan-out: an accepted notification's audience becomes deliveries, queued per transport.

Each step takes a batch of ``fanout`` jobs and, in ONE transaction, deletes them, inserts the
deliveries (one per notification x enabled device) and queues the delivery jobs. With the
embedded queue engine the delivery jobs are rows of that same transaction, so the step happens
exactly once. With Redis they are added just before the commit; if the commit then fails, the
fan-out runs again, adds no delivery twice, and the extra jobs find nothing left to send.
Channel deliveries of a single process skip the queue (see ``__init__``).
"""

from __future__ import annotations

import logging
from collections import defaultdict

from pushgate.channel.broadcast import ChannelBroadcast
from pushgate.channel.hub import Outgoing
from pushgate.channel.messages import notification_message
from pushgate.queue.base import QueueEngine
from pushgate.queue.embedded import EmbeddedQueue
from pushgate.services.delivery_jobs import (
    CHANNEL,
    CHANNEL_BATCH,
    FANOUT_QUEUE,
    PUSH_BATCH,
    ChannelJob,
    PushJob,
    batches,
    deliver_queue,
    fanout_id,
)
from pushgate.storage.database import Database
from pushgate.storage.delivery_writes import DeliveryWrites
from pushgate.transports.base import Content

log = logging.getLogger(__name__)

FANOUT_BATCH = 64


class FanOut:
    def __init__(
        self,
        db: Database,
        jobs: EmbeddedQueue,
        queue: QueueEngine,
        direct_channel: ChannelBroadcast | None = None,
    ) -> None:
        self._db = db
        self._jobs = jobs
        self._queue = queue
        self._writes = DeliveryWrites(db.write.dialect.name)
        # With one process (embedded queue, local broadcast) channel deliveries are handed to
        # this process's connections right after the commit, without a job: a job would only
        # protect that hand-off against a crash of this process, which takes the connections
        # with it (the devices then get their backlog when they reconnect). With several
        # processes a channel job carries it, so a crashed worker's hand-off is done by another.
        self._direct = direct_channel

    async def step(self, limit: int = FANOUT_BATCH) -> int:
        """Fan out up to ``limit`` accepted notifications; returns how many."""
        queued: set[str] = set()
        direct: list[tuple[list[int], Outgoing]] = []
        async with self._db.write.begin() as conn:
            jobs = await self._jobs.take_within(conn, FANOUT_QUEUE, limit)
            if not jobs:
                return 0
            ids = [fanout_id(job.payload) for job in jobs]
            contents = [
                Content.from_row(row) for row in await self._writes.notifications_by_id(conn, ids)
            ]
            by_id = {content.notification_id: content for content in contents}
            created = await self._writes.fan_out(
                conn, [(c.notification_id, c.account_id, c.created_ms) for c in contents]
            )
            groups: dict[tuple[int, str], list[int]] = defaultdict(list)
            for notification_id, device_id, transport in created:
                groups[(notification_id, transport)].append(device_id)
            payloads: dict[str, list[bytes]] = defaultdict(list)
            for (notification_id, transport), device_ids in groups.items():
                if transport == CHANNEL:
                    content = by_id[notification_id]
                    message = notification_message(
                        notification_id=notification_id,
                        app_key=content.app_key,
                        event=content.event,
                        title=content.title,
                        message=content.message,
                        data_json=content.data_json,
                        created_ms=content.created_ms,
                        expires_ms=content.expires_ms,
                    )
                    if self._direct is not None:
                        direct.append((device_ids, Outgoing(notification_id, message)))
                        continue
                    payloads[deliver_queue(CHANNEL)].extend(
                        ChannelJob(notification_id, part, message).encode()
                        for part in batches(device_ids, CHANNEL_BATCH)
                    )
                else:
                    payloads[deliver_queue(transport)].extend(
                        PushJob(notification_id, part, 0).encode()
                        for part in batches(device_ids, PUSH_BATCH)
                    )
            for queue, items in payloads.items():
                await self._queue.enqueue(queue, items, conn=conn)
                queued.add(queue)
        for queue in queued:
            self._queue.wake(queue)
        if self._direct is not None:
            for device_ids, item in direct:
                await self._direct.publish(device_ids, item)
        return len(jobs)
