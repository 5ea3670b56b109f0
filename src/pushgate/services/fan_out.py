"""Fan-out: an accepted notification's audience becomes deliveries, queued per transport.

Each step takes a batch of ``fanout`` jobs and, in ONE transaction, deletes them, inserts the
deliveries (one per notification x enabled device) and queues the delivery jobs. With the
embedded queue engine the delivery jobs are rows of that same transaction, so the step happens
exactly once. With Redis they are added just before the commit; if the commit then fails, the
fan-out runs again, adds no delivery twice, and the extra jobs find nothing left to send.
"""

from __future__ import annotations

import logging
from collections import defaultdict

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

log = logging.getLogger(__name__)

FANOUT_BATCH = 64


class FanOut:
    def __init__(self, db: Database, jobs: EmbeddedQueue, queue: QueueEngine) -> None:
        self._db = db
        self._jobs = jobs
        self._queue = queue
        self._writes = DeliveryWrites(db.write.dialect.name)

    async def step(self, limit: int = FANOUT_BATCH) -> int:
        """Fan out up to ``limit`` accepted notifications; returns how many."""
        queued: set[str] = set()
        async with self._db.write.begin() as conn:
            jobs = await self._jobs.take_within(conn, FANOUT_QUEUE, limit)
            if not jobs:
                return 0
            ids = [fanout_id(job.payload) for job in jobs]
            rows = await self._writes.notifications_by_id(conn, ids)
            by_id = {int(row[0]): row for row in rows}
            created = await self._writes.fan_out(
                conn, [(int(row[0]), int(row[1]), int(row[7])) for row in rows]
            )
            groups: dict[tuple[int, str], list[int]] = defaultdict(list)
            for notification_id, device_id, transport in created:
                groups[(notification_id, transport)].append(device_id)
            payloads: dict[str, list[bytes]] = defaultdict(list)
            for (notification_id, transport), device_ids in groups.items():
                if transport == CHANNEL:
                    row = by_id[notification_id]
                    message = notification_message(
                        notification_id=notification_id,
                        app_key=row[2],
                        event=row[3],
                        title=row[4],
                        message=row[5],
                        data_json=row[6],
                        created_ms=int(row[7]),
                        expires_ms=int(row[8]),
                    )
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
        return len(jobs)
