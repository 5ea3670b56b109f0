"""Fan-out: an accepted notification's audience becomes deliveries, queued per transport.

Each step takes a batch of ``fanout`` jobs and, in ONE transaction, deletes them, inserts the
deliveries (one per notification x enabled device) and queues the delivery jobs. With the
embedded queue engine the delivery jobs are rows of that same transaction, so the step happens
exactly once. With Redis they are added just before the commit; if the commit then fails, the
fan-out runs again, adds no delivery twice, and the extra jobs find nothing left to send.
Channel deliveries of a single process skip the queue (see ``__init__``).

A notification to every device of an app of more than ``CHUNK`` devices is fanned out in
chunks of ``CHUNK`` devices in id order, one chunk per step. The step that makes a chunk's
deliveries also rewrites the job to say where the next chunk starts (or deletes it after the
last), in the same transaction, so each device gets one delivery however the steps are
interrupted. The job keeps its place in the queue, so the notifications accepted after it are
fanned out after it. SQLite's one write lock is never held, nor memory taken, for a whole large
audience at once: the posts accepted meanwhile take turns with the chunks. Audiences with
rules, and sends to one user, are fanned out in one step.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import Histogram
from sqlalchemy.ext.asyncio import AsyncConnection

from pushgate.domain.audience import Audience
from pushgate.queue.base import Job, QueueEngine
from pushgate.queue.embedded import EmbeddedQueue
from pushgate.services.channel_port import ChannelPort
from pushgate.services.delivery_jobs import (
    CHANNEL,
    CHANNEL_BATCH,
    FANOUT_QUEUE,
    PUSH_BATCH,
    ChannelJob,
    FanoutPart,
    PushJob,
    batches,
    deliver_queue,
)
from pushgate.storage.database import Database, now_ms
from pushgate.storage.delivery_writes import EVERY_DEVICE, DeliveryWrites, Span
from pushgate.transports.base import Content

log = logging.getLogger(__name__)

FANOUT_BATCH = 64
# The accepting pipeline fans out in its own transaction only to apps this small; larger ones
# get a fan-out job (see ``foldable``). App sizes are looked up again after SIZE_SECONDS.
AT_ACCEPT_MAX_DEVICES = 1000
# A larger app's fan-out goes in chunks of this many devices. A send to another app waited
# up to 0.2-0.34 s for a chunk of 20,000 (up to 0.5 s for 50,000, and 1 s for all 120,000
# devices in one transaction) on a 2-core machine. Not smaller: between two chunks the first
# chunk's devices' acknowledgements are written, so with chunks of 10,000 the last of 19,841
# devices had the notification 838 ms after the post instead of 579 ms
# (docs/performance.md).
CHUNK = 20_000
SIZE_SECONDS = 10.0
SIZES_KEPT = 10_000
DAY_MS = 86_400_000
EVERY_DEVICE_OF_APP = Audience()
EVERY_DEVICE_AND_PERSONAL = Audience(personal=True)


def _every_device(audience: Audience | None) -> bool | None:
    """For a notification to every device of its app (without an audience of its own, or
    with one without rules): whether the account's personal devices get it too. None for
    any other audience."""
    if audience is None:
        return True
    if audience in (EVERY_DEVICE_OF_APP, EVERY_DEVICE_AND_PERSONAL):
        return audience.personal
    return None


# (notification_id, account_id, app_id, audience JSON) of a notification just stored
Accepted = tuple[int, int, "int | None", "str | None"]


@dataclass(slots=True)
class Handoff:
    """What a fan-out leaves for after its commit: the delivery queues it filled, and the
    channel messages to hand to this process's connections (device ids, notification, bytes)."""

    queued: set[str] = field(default_factory=set)
    direct: list[tuple[list[int], int, bytes]] = field(default_factory=list)


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
        # processes a channel job in the outbox carries it (run by the relay, see runtime.py),
        # so a hand-off left by a process that died after its commit is done by another.
        self._channel = channel
        self._direct = direct
        # (app_id, account_id, personal, limit) -> (look again after, at most limit devices)
        self._sizes: dict[tuple[int | None, int, bool, int], tuple[float, bool]] = {}

    async def step(self, limit: int = FANOUT_BATCH) -> int:
        """Fan out up to ``limit`` accepted notifications, in queue order, or one chunk of
        the first one when it goes in chunks; returns how many jobs it worked on."""
        async with self._db.writing() as conn:
            jobs = await self._jobs.peek_within(conn, FANOUT_QUEUE, limit)
            if not jobs:
                return 0
            parts = [FanoutPart.decode(job.payload) for job in jobs]
            rows = await self._writes.notifications_by_id(conn, [p.notification_id for p in parts])
            found = {int(row[0]): row for row in rows}
            whole: list[Job] = []
            chunk_personal: bool | None = None
            for job, part in zip(jobs, parts, strict=True):
                row = found.get(part.notification_id)
                if row is not None:
                    chunk_personal = await self._chunking(conn, part, row)
                    if chunk_personal is not None:
                        break
                whole.append(job)
            if whole:  # the jobs before the first one that goes in chunks
                await self._jobs.ack_within(conn, whole)
                ids = [p.notification_id for p in parts[: len(whole)]]
                handoff = await self._fan_out_rows(conn, [found[n] for n in ids if n in found])
            else:
                assert chunk_personal is not None
                handoff = await self._chunk(
                    conn, jobs[0], parts[0], found[parts[0].notification_id], chunk_personal
                )
        await self.after_commit(handoff)
        return len(whole) or 1

    async def _chunking(self, conn: AsyncConnection, part: FanoutPart, row: Any) -> bool | None:
        """None when this notification is fanned out in one step; when it goes in chunks
        (it started in chunks, or it goes to every device of an app of more than ``CHUNK``
        devices), whether they include the account's personal devices."""
        app_id, audience_json = row[10], row[11]
        if app_id is None:
            return None
        personal = _every_device(
            None if audience_json is None else Audience.from_json(audience_json)
        )
        if personal is None:
            return None
        if part.after or not await self._at_most(conn, int(app_id), int(row[1]), personal, CHUNK):
            return personal
        return None

    async def _chunk(
        self, conn: AsyncConnection, job: Job, part: FanoutPart, row: Any, personal: bool
    ) -> Handoff:
        """The next chunk of a notification's devices (with the account's personal ones when
        ``personal``): its deliveries, and the job rewritten to start after it (deleted after
        the last chunk)."""
        end = await self._writes.chunk_end(
            conn, int(row[10]), int(row[1]) if personal else None, part.after, CHUNK
        )
        if end is None:
            await self._jobs.ack_within(conn, [job])
        else:
            following = FanoutPart(part.notification_id, end)
            await self._jobs.replace_within(conn, job, following.encode())
        span = (part.after, EVERY_DEVICE[1] if end is None else end)
        return await self._fan_out_rows(conn, [row], span)

    async def foldable(self, conn: AsyncConnection, candidates: Sequence[Accepted]) -> set[int]:
        """Which of these just-stored notifications the accepting pipeline fans out in its own
        transaction (saving a job and a transaction of its own): those due now that go to one
        user (their last active device, or all of their devices), or to every device of an app
        of at most ``AT_ACCEPT_MAX_DEVICES`` devices (so that a post to a large app never holds
        up the posts accepted with it)."""
        folded: set[int] = set()
        for notification_id, account_id, app_id, audience_json in candidates:
            audience = None if audience_json is None else Audience.from_json(audience_json)
            if (
                audience is not None
                and app_id is not None
                and audience.one_subscriber() is not None
            ):
                folded.add(notification_id)
                continue
            personal = _every_device(audience)
            if personal is not None and await self._at_most(
                conn, app_id, account_id, personal, AT_ACCEPT_MAX_DEVICES
            ):
                folded.add(notification_id)
        return folded

    async def _at_most(
        self, conn: AsyncConnection, app_id: int | None, account_id: int, personal: bool, limit: int
    ) -> bool:
        """Whether the app's enabled devices (with the account's personal ones when
        ``personal``) number at most ``limit``; remembered for ``SIZE_SECONDS``."""
        key = (app_id, account_id, personal, limit)
        now = time.monotonic()
        known = self._sizes.get(key)
        if known is not None and known[0] > now:
            return known[1]
        if len(self._sizes) > SIZES_KEPT:
            self._sizes.clear()
        small = await self._writes.devices_at_most(
            conn, app_id, account_id if personal else None, limit
        )
        self._sizes[key] = (now + SIZE_SECONDS, small)
        return small

    async def within(self, conn: AsyncConnection, ids: list[int]) -> Handoff:
        """Make the deliveries of these stored notifications in ``conn``'s transaction and
        queue their delivery jobs; what is left for after the commit is returned."""
        return await self._fan_out_rows(conn, await self._writes.notifications_by_id(conn, ids))

    async def _fan_out_rows(
        self, conn: AsyncConnection, rows: list[Any], span: Span = EVERY_DEVICE
    ) -> Handoff:
        """``within`` for these notifications' rows (``notifications_by_id``); only devices
        whose ids are in ``span`` (a chunk of one notification's devices)."""
        handoff = Handoff()
        direct = handoff.direct
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
            span=span,
        )
        engaged_since = now_ms() - self._unengaged_ms
        audiences = {
            c.notification_id: Audience.from_json(row[11])
            for c, row in zip(contents, rows, strict=True)
            if row[11] is not None and row[10] is not None
        }
        # Audiences with no rule but the app's (a sending to every device of an app):
        # many notifications in one statement too.
        everyone = {n for n, a in audiences.items() if _every_device(a) is not None}
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
                span=span,
            )
        # Sends to one user each (Insider's batch: their last active device; Push API v2:
        # all of their devices): many notifications in one statement each.
        users = {n: a.one_subscriber() for n, a in audiences.items() if n not in everyone}
        for last_active in (True, False):
            created += await self._writes.fan_out_users(
                conn,
                [
                    (c.notification_id, user[0], int(row[10]), c.created_ms)
                    for c, row in zip(contents, rows, strict=True)
                    if (user := users.get(c.notification_id)) is not None and user[1] == last_active
                ],
                last_active=last_active,
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
                        now - DAY_MS, now, span,
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
            handoff.queued.add(queue)
        return handoff

    async def after_commit(self, handoff: Handoff) -> None:
        """Wake the delivery queues a fan-out filled, and hand its channel messages to this
        process's connections (only once the deliveries are stored)."""
        for queue in handoff.queued:
            self._queue.wake(queue)
        for device_ids, notification_id, message in handoff.direct:
            await self._channel.hand_over(device_ids, notification_id, message)

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
