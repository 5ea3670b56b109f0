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

from prometheus_client import Histogram
from sqlalchemy.ext.asyncio import AsyncConnection

from pushgate.domain.audience import Audience
from pushgate.queue.base import QueueEngine
from pushgate.queue.embedded import EmbeddedQueue
from pushgate.services.channel_port import ChannelPort
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
from pushgate.storage.database import Database, now_ms
from pushgate.storage.delivery_writes import DeliveryWrites
from pushgate.transports.base import Content

log = logging.getLogger(__name__)

FANOUT_BATCH = 64
DAY_MS = 86_400_000
EVERY_DEVICE_OF_APP = Audience()
EVERY_DEVICE_AND_PERSONAL = Audience(personal=True)


class FanOut:
    def __init__(
        self,
        db: Database,
        jobs: EmbeddedQueue,
        queue: QueueEngine,
        channel: ChannelPort,
        *,
        direct: bool = False,
        unengaged_after_days: float = 30.0,
        scheduler_lag: Histogram | None = None,
    ) -> None:
        self._db = db
        # Observes, for each notification with a due time, seconds from it to its fan-out.
        self._lag = scheduler_lag
        self._unengaged_ms = int(unengaged_after_days * 86_400_000)
        self._jobs = jobs
        self._queue = queue
        self._writes = DeliveryWrites(db.write.dialect.name)
        # With one process (embedded queue, local broadcast) channel deliveries are handed to
        # this process's connections right after the commit, without a job: a job would only
        # protect that hand-off against a crash of this process, which takes the connections
        # with it (the devices then get their backlog when they reconnect). With several
        # processes a channel job carries it, so a crashed worker's hand-off is done by another.
        self._channel = channel
        self._direct = direct

    async def step(self, limit: int = FANOUT_BATCH) -> int:
        """Fan out up to ``limit`` accepted notifications; returns how many."""
        queued: set[str] = set()
        direct: list[tuple[list[int], int, bytes]] = []
        async with self._db.writing() as conn:
            jobs = await self._jobs.take_within(conn, FANOUT_QUEUE, limit)
            if not jobs:
                return 0
            ids = [fanout_id(job.payload) for job in jobs]
            rows = await self._writes.notifications_by_id(conn, ids)
            contents = [Content.from_row(row) for row in rows]
            if self._lag is not None:
                started = now_ms()
                for row in rows:
                    if row[14] is not None:
                        self._lag.observe(max(0, started - int(row[14])) / 1000)
            by_id = {content.notification_id: content for content in contents}
            # Without an audience of its own (Instapush, a plain send): the app's devices and
            # the account's personal ones, many notifications in one statement.
            created = await self._writes.fan_out(
                conn,
                [
                    (c.notification_id, c.account_id, row[10], c.created_ms)
                    for c, row in zip(contents, rows, strict=True)
                    if row[11] is None
                ],
            )
            engaged_since = now_ms() - self._unengaged_ms
            audiences = {
                c.notification_id: Audience.from_json(row[11])
                for c, row in zip(contents, rows, strict=True)
                if row[11] is not None and row[10] is not None
            }
            # Audiences with no rule but the app's (a sending to every device of an app):
            # many notifications in one statement too.
            everyone = {
                n
                for n, a in audiences.items()
                if a in (EVERY_DEVICE_OF_APP, EVERY_DEVICE_AND_PERSONAL)
            }
            for personal in (False, True):
                created += await self._writes.fan_out(
                    conn,
                    [
                        (c.notification_id, c.account_id, row[10], c.created_ms)
                        for c, row in zip(contents, rows, strict=True)
                        if c.notification_id in everyone
                        and audiences[c.notification_id].personal == personal
                    ],
                    personal=personal,
                )
            # Sends to one user each (Insider's batch): many notifications in one statement.
            users = {n: a.single_user() for n, a in audiences.items() if n not in everyone}
            created += await self._writes.fan_out_users(
                conn,
                [
                    (c.notification_id, user, int(row[10]), c.created_ms)
                    for c, row in zip(contents, rows, strict=True)
                    if (user := users.get(c.notification_id)) is not None
                ],
            )
            for content, row in zip(contents, rows, strict=True):
                if content.notification_id in users and users[content.notification_id] is None:
                    created += await self._writes.fan_out_audience(
                        conn,
                        content.notification_id,
                        content.created_ms,
                        audiences[content.notification_id],
                        app_id=int(row[10]),
                        account_id=content.account_id,
                        engaged_since_ms=engaged_since,
                    )
            capped: set[tuple[int, int]] = set()
            now = now_ms()
            for content, row in zip(contents, rows, strict=True):
                if row[13] is not None and row[10] is not None:
                    capped.update(
                        (content.notification_id, device_id)
                        for device_id in await self._writes.cap(
                            conn, content.notification_id, int(row[10]), int(row[13]),
                            now - DAY_MS, now,
                        )
                    )  # fmt: skip
            groups: dict[tuple[int, str], list[int]] = defaultdict(list)
            for notification_id, device_id, transport in created:
                if (notification_id, device_id) not in capped:
                    groups[(notification_id, transport)].append(device_id)
            payloads: dict[str, list[bytes]] = defaultdict(list)
            for (notification_id, transport), device_ids in groups.items():
                if transport == CHANNEL:
                    content = by_id[notification_id]
                    for localized, ids_ in await self._localized(conn, content, device_ids):
                        message = self._channel.message(localized)
                        if self._direct:
                            direct.append((ids_, notification_id, message))
                            continue
                        payloads[deliver_queue(CHANNEL)].extend(
                            ChannelJob(notification_id, part, message).encode()
                            for part in batches(ids_, CHANNEL_BATCH)
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
        for device_ids, notification_id, message in direct:
            await self._channel.hand_over(device_ids, notification_id, message)
        return len(jobs)

    async def _localized(
        self, conn: AsyncConnection, content: Content, device_ids: list[int]
    ) -> list[tuple[Content, list[int]]]:
        """The content each group of these devices gets: one group per translation."""
        if content.translations is None:
            return [(content, device_ids)]
        languages = await self._writes.device_languages(conn, device_ids)
        groups: dict[str | None, list[int]] = defaultdict(list)
        for device_id in device_ids:
            groups[content.variant(languages.get(device_id))].append(device_id)
        return [(content.localized(languages.get(ids[0])), ids) for ids in groups.values()]
