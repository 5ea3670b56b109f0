"""The accepting end of the delivery flow: group commit of accepted notifications with their
fan-out jobs, batched delivery-status updates from device connections, and TTL expiry.

One writer task owns these writes. A cycle first writes the pending notifications in ONE
transaction: the notification rows and one ``fanout`` job per notification. Only after that
commit are the callers answered, so nothing is answered as accepted before it is durable; the
fan-out (``services/fan_out.py``) then makes the deliveries. The notifications due at once
that go to one user or to an app of at most ``fan_out.AT_ACCEPT_MAX_DEVICES`` devices get
their deliveries in that same transaction instead of a job: with one process (the embedded
queue) they are handed to the device connections right after the commit (one transaction and
one wait for SQLite's write lock less between a post and its devices); with several (Redis)
their delivery jobs go out through the outbox right after it, with no fan-out job for a
worker to find first. In a transaction of its own, a cycle writes a bounded chunk of the
status changes reported by device connections (sent, delivered) and expires deliveries whose
TTL ran out.

New notifications start a cycle at once. Status changes wait up to ``STATUS_FLUSH_SECONDS``
so that a "sent" and the device's acknowledgement that follows it become one row update.

Each expiry sweep keeps its time in ``maintenance_marks`` (in the sweep's transaction), and a
starting writer looks back from there, not over the whole history.

An idle writer costs next to nothing: the expiry sweep runs every ``SWEEP_INTERVAL_SECONDS``
only while this writer has written something since the last sweep, otherwise every
``IDLE_SWEEP_SECONDS`` (for notifications other processes stored); the WAL checkpoint runs
only when the write-ahead log changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import islice

from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from pushgate.domain.push_options import DEFAULT_OPTIONS, PushOptions
from pushgate.observability.metrics import Metrics
from pushgate.queue.embedded import EmbeddedQueue
from pushgate.services.delivery_jobs import FANOUT_QUEUE, fanout_payload
from pushgate.services.fan_out import Accepted, FanOut, Handoff
from pushgate.storage.database import Database, now_ms
from pushgate.storage.delivery_writes import DeliveryWrites, NotificationRow, StatusRow
from pushgate.storage.models import idempotency_keys, maintenance_marks

log = logging.getLogger(__name__)

MAX_NOTIFICATIONS_PER_CYCLE = 1024
SWEEP_INTERVAL_SECONDS = 1.0
IDLE_SWEEP_SECONDS = 10.0
CHECKPOINT_INTERVAL_SECONDS = 1.0
STATUS_FLUSH_SECONDS = 0.1
# Most delivery status changes written in one transaction.
STATUS_CHUNK = 1000
RECENT_SECONDS = 2.0
# Expiry looks back this far past the previous sweep, so a failed sweep is caught up later.
SWEEP_OVERLAP_MS = 60_000
# The maintenance mark of the last expiry sweep (storage/models.py maintenance_marks).
SWEPT_MARK = "expiry_swept"


class PipelineUnavailable(Exception):
    """The notification could not be stored; the caller should answer 503."""


class DuplicateRequest(Exception):  # noqa: N818 - it says what it is
    """A notification with this idempotency key is stored already (by a concurrent request)."""


@dataclass(frozen=True, slots=True)
class Idempotency:
    """An idempotency key, stored with the notification in its transaction: a second request
    with the same key (in any process) cannot store a second notification."""

    account_id: int
    key: str
    fingerprint: str


@dataclass(frozen=True, slots=True)
class NewNotification:
    account_id: int
    app_id: int | None
    event: str | None
    title: str | None
    message: str
    data_json: str
    ttl_seconds: int
    options: PushOptions = DEFAULT_OPTIONS
    campaign_id: int | None = None
    # domain.audience.Audience as JSON; None: the app's devices and the personal ones
    audience_json: str | None = None
    translations_json: str | None = None
    # the fan-out is due then (ms since the epoch); None: at once
    due_ms: int | None = None
    idempotency: Idempotency | None = None
    # targets that get no delivery (see storage/models.py notifications)
    no_user: int = 0
    opted_out: int = 0


@dataclass(slots=True)
class _Pending:
    notification: NewNotification
    future: asyncio.Future[int]


# A notification id takes the low 101 bits of a key. Python hashes an int modulo 2**61 - 1,
# so the key's hash is device_id * 2**40 + notification_id (mod 2**61 - 1): distinct for
# every pair below 2**21 devices and 2**40 notifications, and rarely equal above. (With 64
# bits it was device_id * 8 + notification_id: many pairs shared a hash, and the dicts of
# status changes slowed to a crawl.)
_ID_BITS = 101
_LOW_ID = (1 << _ID_BITS) - 1


def _key(device_id: int, notification_id: int) -> int:
    """One int for a (device, notification) pair. Ints are not tracked by Python's cyclic
    garbage collector, where a tuple is until a collection has looked at it: at 100,000
    status changes a second, tuple keys kept about 50,000 new tracked objects alive between
    collections, and each young-generation collection took 5-7 ms."""
    return device_id << _ID_BITS | notification_id


@dataclass(slots=True)
class _Statuses:
    """Status changes waiting for the next flush, coalesced per (device, notification),
    keyed by ``_key``: when each was sent last (``sent``; ``resent``: how many more sends
    than one, when there were more) and acknowledged (``delivered``), and when each device
    was seen last."""

    sent: dict[int, int]
    resent: dict[int, int]
    delivered: dict[int, int]
    seen: dict[int, int]

    @classmethod
    def empty(cls) -> _Statuses:
        return cls({}, {}, {}, {})

    def __bool__(self) -> bool:
        return bool(self.sent or self.delivered or self.seen)

    def take(self, limit: int) -> _Statuses:
        """Move up to ``limit`` deliveries' changes (and every "seen") into a new chunk."""
        if len(self.sent) + len(self.delivered) <= limit:
            chunk = _Statuses(self.sent, self.resent, self.delivered, self.seen)
            self.sent, self.resent, self.delivered, self.seen = {}, {}, {}, {}
            return chunk
        chunk = _Statuses.empty()
        for key in list(islice(self.delivered, limit)):
            chunk.delivered[key] = self.delivered.pop(key)
            if key in self.sent:
                self._move_sent(key, chunk)
        room = limit - len(chunk.delivered)
        # A "sent" whose acknowledgement is still waiting goes with it, in a later chunk.
        alone = (key for key in self.sent if key not in self.delivered)
        for key in list(islice(alone, max(0, room))):
            self._move_sent(key, chunk)
        chunk.seen, self.seen = self.seen, {}
        return chunk

    def _move_sent(self, key: int, chunk: _Statuses) -> None:
        chunk.sent[key] = self.sent.pop(key)
        more = self.resent.pop(key, None)
        if more is not None:
            chunk.resent[key] = more

    def rows(self) -> tuple[list[StatusRow], list[StatusRow], list[tuple[int, int]]]:
        """(sent rows, delivered rows, seen rows); a delivered row carries the sends that
        preceded it, and a "sent" that was acknowledged in the same chunk is not written."""
        sent = self.sent
        resent = self.resent
        delivered = self.delivered
        low = _LOW_ID
        sent_rows = [
            (1 + resent.get(key, 0), at, key >> _ID_BITS, key & low)
            for key, at in sent.items()
            if key not in delivered
        ]
        delivered_rows = [
            ((1 + resent.get(key, 0)) if key in sent else 0, at, key >> _ID_BITS, key & low)
            for key, at in delivered.items()
        ]
        seen_rows = [(at, d) for d, at in self.seen.items()]
        return sent_rows, delivered_rows, seen_rows


@dataclass(frozen=True, slots=True)
class _Stored:
    """A stored batch: its ids (None: not stored, answered with an error), what its fan-out
    left for after the commit, and whether it queued fan-out jobs."""

    ids: Sequence[int | None]
    handoff: Handoff | None
    jobs: bool


class DeliveryPipeline:
    def __init__(
        self, db: Database, jobs: EmbeddedQueue, metrics: Metrics, fan_out: FanOut | None = None
    ) -> None:
        self._db = db
        # Notifications due now to one user or to a small app are fanned out in their own
        # transaction (see ``FanOut.foldable``): with one process their channel messages are
        # handed to the device connections right after it, with several (Redis) they become
        # channel jobs through the outbox, whose relay publishes them to the servers right
        # after the commit. Either way no fan-out job or channel job waits for a worker.
        self._fan_out = fan_out
        self._batch_sizes = metrics.commit_batch
        self._commit_seconds = metrics.commit_latency
        self._writes = DeliveryWrites(db.write.dialect.name)
        self._jobs = jobs
        self._pending: list[_Pending] = []
        self._statuses = _Statuses.empty()
        self._writing = _Statuses.empty()  # the chunk being written right now
        # Acknowledgements written in the last RECENT_SECONDS: a backlog query that started
        # before their commit may still offer those notifications.
        self._recent: dict[int, float] = {}  # _key -> when its "delivered" was written
        self._statuses_since = 0.0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._checkpoints: asyncio.Task[None] | None = None
        self._stopping = False
        self._last_sweep_ms = 0
        # Whether this writer stored anything since the last expiry sweep.
        self._wrote = True

    # -- producers ---------------------------------------------------------------------------

    async def submit(self, notification: NewNotification) -> int:
        """Store ``notification`` and its deliveries; returns its id once committed."""
        if self._task is None or self._stopping:
            raise PipelineUnavailable("the server is shutting down")
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(notification, future))
        self._wake.set()
        return await future

    def _status_recorded(self) -> None:
        if not self._statuses:
            # The first change starts the flush clock; wake the writer to set its timer.
            self._statuses_since = asyncio.get_running_loop().time()
            self._wake.set()

    def record_sent(self, device_id: int, notification_ids: list[int]) -> None:
        high = device_id << _ID_BITS
        self._sent([high | notification_id for notification_id in notification_ids])

    def record_sent_to(self, device_ids: Iterable[int], notification_id: int) -> None:
        """``record_sent`` of one notification to many devices (a live fan-out)."""
        self._sent([device_id << _ID_BITS | notification_id for device_id in device_ids])

    def _sent(self, keys: list[int]) -> None:
        self._status_recorded()
        at = now_ms()
        statuses = self._statuses
        sent = statuses.sent
        for key in keys:
            if key in sent:
                statuses.resent[key] = statuses.resent.get(key, 0) + 1
            sent[key] = at

    def record_delivered(self, device_id: int, notification_ids: list[int]) -> None:
        self._status_recorded()
        at = now_ms()
        delivered = self._statuses.delivered
        high = device_id << _ID_BITS
        for notification_id in notification_ids:
            delivered[high | notification_id] = at

    def acknowledged(self, device_id: int, notification_id: int) -> bool:
        """Whether the device has acknowledged this notification in a change that is not in
        storage yet (status changes are written up to ``STATUS_FLUSH_SECONDS`` later)."""
        key = _key(device_id, notification_id)
        return (
            key in self._statuses.delivered or key in self._writing.delivered or key in self._recent
        )

    def record_seen(self, device_id: int) -> None:
        self._status_recorded()
        self._statuses.seen[device_id] = now_ms()

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="pushgate-delivery-pipeline")
        if self._db.is_sqlite:
            self._checkpoints = asyncio.create_task(self._checkpoint(), name="pushgate-checkpoint")

    async def _checkpoint(self) -> None:
        """Keep SQLite's write-ahead log short, off the writer's path; only when the log
        changed since the last checkpoint (any writer of any process)."""
        database = self._db.write.url.database
        wal = f"{database}-wal" if database else None
        checkpointed: tuple[int, int] | None = None
        while True:
            await asyncio.sleep(CHECKPOINT_INTERVAL_SECONDS)
            seen: tuple[int, int] | None = None
            if wal is not None:
                with contextlib.suppress(OSError):
                    stat = os.stat(wal)
                    seen = (stat.st_mtime_ns, stat.st_size)
                if seen is not None and seen == checkpointed:
                    continue
            try:
                await self._db.checkpoint()
                checkpointed = seen
            except Exception:
                log.exception("WAL checkpoint failed; retrying later")

    async def stop(self) -> None:
        """Write what is pending, then stop."""
        self._stopping = True
        self._wake.set()
        if self._checkpoints is not None:
            self._checkpoints.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._checkpoints
            self._checkpoints = None
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def _sweep_interval(self) -> float:
        return (
            SWEEP_INTERVAL_SECONDS
            if self._wrote
            else max(SWEEP_INTERVAL_SECONDS, IDLE_SWEEP_SECONDS)
        )

    def _seconds_to_next_duty(self) -> float:
        loop_now = asyncio.get_running_loop().time()
        sweep_in = self._sweep_interval() - (now_ms() - self._last_sweep_ms) / 1000
        if self._statuses:
            flush_in = self._statuses_since + STATUS_FLUSH_SECONDS - loop_now
            return max(0.0, min(sweep_in, flush_in))
        return max(0.0, sweep_in)

    async def _run(self) -> None:
        self._last_sweep_ms = await self._swept_before()
        while True:
            if not self._pending:
                if self._stopping and not self._statuses:
                    return
                if not self._stopping:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), self._seconds_to_next_duty())
            self._wake.clear()
            try:
                await self._cycle()
            except Exception:  # never let the writer die; the cycle has answered its callers
                log.exception("delivery pipeline cycle failed")
                await asyncio.sleep(0.05)

    # -- one write cycle -----------------------------------------------------------------------

    def _take_statuses(self) -> _Statuses:
        """A chunk of the status changes, when they are due. What is left stays due, so the
        next cycle takes it, after any notifications that arrived in between."""
        due = (
            self._stopping
            or asyncio.get_running_loop().time() - self._statuses_since >= STATUS_FLUSH_SECONDS
        )
        if not self._statuses or not due:
            return _Statuses.empty()
        chunk = self._statuses.take(STATUS_CHUNK)
        if self._statuses:
            self._wake.set()
        return chunk

    async def _cycle(self) -> None:
        batch = self._pending[:MAX_NOTIFICATIONS_PER_CYCLE]
        del self._pending[:MAX_NOTIFICATIONS_PER_CYCLE]
        now = now_ms()
        if batch:
            started = time.perf_counter()
            stored = await self._store_batch(batch, now)
            self._commit_seconds.observe(time.perf_counter() - started)
            self._batch_sizes.observe(len(batch))
            self._wrote = True
            if stored.jobs:
                self._jobs.wake(FANOUT_QUEUE)
            for pending, notification_id in zip(batch, stored.ids, strict=True):
                if notification_id is not None and not pending.future.done():
                    pending.future.set_result(notification_id)
            if stored.handoff is not None and self._fan_out is not None:
                try:
                    await self._fan_out.after_commit(stored.handoff)
                except Exception:  # stored: the devices get them from their backlog
                    log.exception("handing accepted notifications to connections failed")
        # Status changes and expiry go in a transaction of their own, in bounded chunks, so
        # an accepted notification never waits behind a large flush.
        statuses = self._take_statuses()
        sweep = now - self._last_sweep_ms >= self._sweep_interval() * 1000
        if statuses:
            self._wrote = True
        if statuses or sweep:
            self._writing = statuses
            try:
                await self._store_statuses(statuses, now if sweep else None)
            finally:
                self._remember(statuses)
                self._writing = _Statuses.empty()
            if sweep:
                self._last_sweep_ms = now
                self._wrote = bool(statuses)

    def _remember(self, written: _Statuses) -> None:
        loop_now = asyncio.get_running_loop().time()
        recent = self._recent
        cutoff = loop_now - RECENT_SECONDS
        old: list[int] = []
        for key, at in recent.items():  # oldest first: insertion order
            if at >= cutoff:
                break
            old.append(key)
        for key in old:
            del recent[key]
        for key in written.delivered:
            recent[key] = loop_now

    async def _store_notifications(
        self, conn: AsyncConnection, batch: list[_Pending], now: int, fan_out: FanOut | None
    ) -> _Stored:
        """Store the batch with a fan-out job per notification; with ``fan_out``, those it
        takes (``FanOut.foldable``) are fanned out here instead, in the same transaction."""
        rows: list[NotificationRow] = []
        starts: list[int] = []
        for pending in batch:
            n = pending.notification
            start = max(now, n.due_ms or now)
            starts.append(start)
            rows.append(
                (
                    0,  # given by insert_notifications
                    n.account_id,
                    n.app_id,
                    n.event,
                    n.title,
                    n.message,
                    n.data_json,
                    now,
                    start + n.ttl_seconds * 1000,
                    n.options.to_json(),
                    n.campaign_id,
                    n.audience_json,
                    n.translations_json,
                    n.due_ms,
                    n.no_user,
                    n.opted_out,
                    None,
                    None,
                )
            )
        ids = await self._writes.insert_notifications(conn, rows)
        keys: list[tuple[Idempotency, int]] = []
        later: dict[int, list[bytes]] = defaultdict(list)
        due: list[Accepted] = []
        for notification_id, pending, start in zip(ids, batch, starts, strict=True):
            n = pending.notification
            if n.idempotency is not None:
                keys.append((n.idempotency, notification_id))
            if start == now and fan_out is not None:
                due.append((notification_id, n.account_id, n.app_id, n.audience_json))
            else:
                later[start - now].append(fanout_payload(notification_id))
        if keys:
            await conn.execute(
                insert(idempotency_keys),
                [
                    {
                        "account_id": key.account_id,
                        "key": key.key,
                        "fingerprint": key.fingerprint,
                        "status": 201,
                        "response": str(notification_id),
                        "created_ms": now,
                    }
                    for key, notification_id in keys
                ],
            )
        handoff = None
        if fan_out is not None and due:
            folded = await fan_out.foldable(conn, due)
            later[0].extend(fanout_payload(d[0]) for d in due if d[0] not in folded)
            if folded:
                handoff = await fan_out.within(conn, sorted(folded))
        for delay_ms, payloads in sorted(later.items()):
            if payloads:
                await self._jobs.enqueue(
                    FANOUT_QUEUE, payloads, delay_seconds=delay_ms / 1000, conn=conn
                )
        return _Stored(ids, handoff, any(later.values()))

    async def _store_batch(
        self, batch: list[_Pending], now: int, *, alone: bool = False
    ) -> _Stored:
        """Store the batch in one transaction; if that fails, store each notification on its
        own (``alone``: with a fan-out job, not fanned out here) so one bad row cannot fail
        the requests batched with it. Failed ones get 503."""
        fan_out = None if alone else self._fan_out
        try:
            async with self._db.writing() as conn:
                return await self._store_notifications(conn, batch, now, fan_out)
        except Exception as exc:
            # One notification stored as a job already: nothing different left to try.
            if alone or (len(batch) == 1 and fan_out is None):
                future = batch[0].future
                if isinstance(exc, IntegrityError) and batch[0].notification.idempotency:
                    if not future.done():
                        future.set_exception(DuplicateRequest())
                    return _Stored([None], None, False)
                log.exception("storing a notification failed; answering 503")
                if not future.done():
                    future.set_exception(PipelineUnavailable(str(exc)))
                return _Stored([None], None, False)
            if isinstance(exc, IntegrityError) and any(
                pending.notification.idempotency for pending in batch
            ):
                # Most likely an idempotency key stored already (a client's retry racing its
                # first request): expected, no traceback. Alone, that one gets its 409; any
                # other cause is logged there.
                log.info(
                    "storing %d notifications met a stored idempotency key; storing them one "
                    "by one",
                    len(batch),
                )
            else:
                log.exception("storing %d notifications failed; retrying one by one", len(batch))
        ids: list[int | None] = []
        jobs = False
        for pending in batch:
            stored = await self._store_batch([pending], now, alone=True)
            ids.extend(stored.ids)
            jobs = jobs or stored.jobs
        return _Stored(ids, None, jobs)

    async def _swept_before(self) -> int:
        """Where an earlier expiry sweep got to (any process's, before this start): the
        first sweep looks back from there. 0 (the whole history) when none is kept."""
        try:
            async with self._db.read.connect() as conn:
                found = (
                    await conn.execute(
                        select(maintenance_marks.c.value_ms).where(
                            maintenance_marks.c.name == SWEPT_MARK
                        )
                    )
                ).scalar()
        except Exception:
            log.exception("reading where the last expiry sweep got to failed; sweeping it all")
            return 0
        return 0 if found is None else min(int(found), now_ms())

    async def _store_statuses(self, statuses: _Statuses, sweep_at: int | None) -> None:
        try:
            statements = self._writes.status_statements(*statuses.rows())
            if sweep_at is not None:
                after = self._last_sweep_ms - SWEEP_OVERLAP_MS
                statements.append(self._writes.expire_statement(sweep_at, after))
                statements.append(self._writes.mark_statement(SWEPT_MARK, sweep_at))
            await self._db.write_statements(statements)
        except Exception:
            # Unrecorded "sent"/"delivered" marks only mean the device is offered these
            # notifications again on its next connection (at-least-once), never a loss; a
            # failed sweep is caught up by the next one (it looks back SWEEP_OVERLAP_MS).
            log.exception(
                "recording %d delivery statuses failed; dropped",
                len(statuses.sent) + len(statuses.delivered),
            )
