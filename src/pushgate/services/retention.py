"""The retention policy: old deliveries, notifications and idempotency keys are deleted, so the
database stops growing with history (``retention_days``; 0 keeps everything).

What goes is ``storage/retention.py``'s to say: the deliveries in a final status of the
notifications whose TTL ran out more than the retention age ago, then those notifications
once they have no delivery left (never the newest one), then idempotency keys older than the
age. Deliveries still ``queued`` or ``sent`` are never deleted. Campaigns are kept: their
statistics count the deliveries that are still stored, so they cover the retention window.

A sweep deletes in small batches, each in a write transaction of its own. A batch's size is
set from the time the previous one held the write lock (aiming at ``TARGET_HOLD_SECONDS``,
well under ``MAX_HOLD_SECONDS``), and the sweep sleeps between batches at least as long as the
last one held the lock, so the single writer (``services/pipeline.py``) and accepted
notifications get the lock between them. The rows of a batch are found before its
transaction, on the read side; the transaction only deletes between two known keys.

Two sweeps at once (a server and ``pushgate database prune``, or several processes) are safe:
every delete is bounded by keys and re-checks its conditions, so a row is deleted once and a
kept row stays kept. On PostgreSQL a session advisory lock also lets only one sweep run at a
time; a second one returns at once, having done nothing (``Report.skipped``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncConnection

from pushgate.storage.database import Database, now_ms
from pushgate.storage.retention import START, DeliveryKey, RetentionQueries

log = logging.getLogger(__name__)

DAY_MS = 86_400_000
# The batch size follows the measured lock hold time, towards this target.
TARGET_HOLD_SECONDS = 0.01
MAX_HOLD_SECONDS = 0.05
MIN_BATCH = 16
MAX_BATCH = 20_000
FIRST_BATCH = 500
# Least pause between two batches (the pause is at least the previous batch's hold time).
MIN_PAUSE_SECONDS = 0.005
# How often servers and workers sweep, and how long after starting the first time.
INTERVAL_SECONDS = 600.0
FIRST_SWEEP_SECONDS = 60.0
# pg_try_advisory_lock key: one retention sweep at a time on a PostgreSQL database.
ADVISORY_LOCK_KEY = 0x7075_7368_7265_7401  # "pushret\x01"


@dataclass(slots=True)
class Report:
    """What a sweep did."""

    cutoff_ms: int
    deliveries: int = 0
    notifications: int = 0
    idempotency_keys: int = 0
    batches: int = 0
    # The longest time one batch held the write lock, and the largest batch (in rows).
    max_hold_seconds: float = 0.0
    max_batch: int = 0
    # The latest batch's hold time and size.
    last_hold_seconds: float = 0.0
    last_batch: int = 0
    seconds: float = 0.0
    # Another sweep held the PostgreSQL advisory lock: nothing was done.
    skipped: bool = False


Progress = Callable[[Report], None]


@dataclass(slots=True)
class _Batch:
    """One batch's size in rows, and whether it was as large as it was sized for."""

    rows: int
    full: bool


def cutoff_for(days: float, now: int | None = None) -> int:
    """The cut-off (ms since the epoch) of a retention age of ``days``."""
    return (now_ms() if now is None else now) - int(days * DAY_MS)


class Retention:
    """Deletes what is older than a cut-off, in batches that hold the write lock briefly."""

    def __init__(
        self,
        db: Database,
        *,
        min_pause_seconds: float = MIN_PAUSE_SECONDS,
        batch: int = FIRST_BATCH,
    ) -> None:
        self._db = db
        self._queries = RetentionQueries(db.write.dialect.name)
        self._batch = batch
        self._min_pause = min_pause_seconds

    @property
    def batch_size(self) -> int:
        """Rows the next batch will be sized for."""
        return self._batch

    def _adapt(self, held: float) -> None:
        """Size the next batch from this one's hold time: towards the target, at most twice
        as large, and at once as small as needed after a batch that held the lock too long."""
        wanted = int(self._batch * TARGET_HOLD_SECONDS / max(held, 1e-4))
        if held <= MAX_HOLD_SECONDS:
            wanted = max(wanted, self._batch // 2)
        self._batch = max(MIN_BATCH, min(MAX_BATCH, wanted, self._batch * 2))

    @contextlib.asynccontextmanager
    async def _write(self, report: Report, batch: _Batch) -> AsyncIterator[AsyncConnection]:
        """One batch's write transaction, timed from the lock taken (``BEGIN IMMEDIATE`` on
        SQLite) to its commit, never at the same time as a WAL checkpoint of this process
        (``Database.maintenance``); then the pause before the next batch."""
        async with self._db.maintenance, self._db.writing() as conn:
            started = time.perf_counter()
            yield conn
        held = time.perf_counter() - started
        report.batches += 1
        report.last_hold_seconds, report.last_batch = held, batch.rows
        report.max_hold_seconds = max(report.max_hold_seconds, held)
        report.max_batch = max(report.max_batch, batch.rows)
        if batch.full:  # a short batch says little about a full one
            self._adapt(held)
        await asyncio.sleep(max(self._min_pause, held))

    @contextlib.asynccontextmanager
    async def _exclusive(self) -> AsyncIterator[bool]:
        """Whether this sweep may run: on PostgreSQL, only while it holds the advisory lock."""
        if self._db.is_sqlite:
            yield True
            return
        async with self._db.read.connect() as conn:
            got = (
                await conn.exec_driver_sql("SELECT pg_try_advisory_lock($1)", (ADVISORY_LOCK_KEY,))
            ).scalar_one()
            await conn.commit()
            try:
                yield bool(got)
            finally:
                if got:
                    try:
                        await conn.exec_driver_sql(
                            "SELECT pg_advisory_unlock($1)", (ADVISORY_LOCK_KEY,)
                        )
                        await conn.commit()
                    except BaseException:
                        # Never back into the pool holding the lock: closing the session
                        # releases it.
                        await conn.invalidate()
                        raise

    async def count(self, cutoff: int) -> int:
        """How many deliveries a sweep with this cut-off would delete now."""
        async with self._db.read.connect() as conn:
            return await self._queries.count_old_deliveries(conn, cutoff)

    async def sweep(self, cutoff: int, on_progress: Progress | None = None) -> Report:
        """Delete what is older than ``cutoff`` (ms since the epoch)."""
        report = Report(cutoff_ms=cutoff)
        started = time.perf_counter()
        async with self._exclusive() as allowed:
            if not allowed:
                report.skipped = True
                return report
            await self._notifications(report, on_progress)
            await self._idempotency_keys(report, on_progress)
        report.seconds = time.perf_counter() - started
        return report

    async def _notifications(self, report: Report, on_progress: Progress | None) -> None:
        q = self._queries
        key = START
        while True:
            async with self._db.read.connect() as conn:
                chunk = await q.old_notifications(conn, report.cutoff_ms, key, self._batch)
            if not chunk:
                return
            key = chunk[-1]
            ids = sorted(id_ for _, id_ in chunk)
            after: DeliveryKey = (0, 0)
            while ids:
                size = self._batch
                async with self._db.read.connect() as conn:
                    upto = await q.delivery_boundary(conn, ids, after, size)
                # The notifications this batch passes: none of their deliveries lies ahead.
                end = ids[-1] + 1 if upto is None else upto[0]
                passed = [id_ for id_ in ids if id_ < end]
                batch = _Batch(size, full=upto is not None)
                async with self._write(report, batch) as conn:
                    deliveries = await q.delete_deliveries(conn, ids, after, upto)
                    notifications = await q.delete_notifications(conn, passed, report.cutoff_ms)
                    if upto is None:
                        batch.rows = deliveries + notifications
                report.deliveries += deliveries
                report.notifications += notifications
                if on_progress is not None:
                    on_progress(report)
                if upto is None:
                    break
                after = upto
                # Those behind the cursor are done with: not looked at again.
                ids = [id_ for id_ in ids if id_ >= after[0]]

    async def _idempotency_keys(self, report: Report, on_progress: Progress | None) -> None:
        while True:
            limit = self._batch
            batch = _Batch(limit, full=False)
            async with self._write(report, batch) as conn:
                deleted = await self._queries.delete_idempotency_keys(conn, report.cutoff_ms, limit)
                batch.rows, batch.full = deleted, deleted == limit
            report.idempotency_keys += deleted
            if on_progress is not None:
                on_progress(report)
            if deleted < limit:
                return


class RetentionLoop:
    """Sweeps every ``interval`` seconds in the background of a server or worker process."""

    def __init__(
        self,
        retention: Retention,
        days: float,
        *,
        interval: float = INTERVAL_SECONDS,
        first: float = FIRST_SWEEP_SECONDS,
    ) -> None:
        self._retention = retention
        self._days = days
        self._interval = interval
        self._first = first
        self._task: asyncio.Task[None] | None = None
        self.last: Report | None = None

    def start(self) -> None:
        if self._days > 0 and self._task is None:
            self._task = asyncio.create_task(self._run(), name="pushgate-retention")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        await asyncio.sleep(self._first)
        while True:
            try:
                report = await self._retention.sweep(cutoff_for(self._days))
                self.last = report
                if report.deliveries or report.notifications or report.idempotency_keys:
                    log.info(
                        "retention: deleted %d deliveries, %d notifications and %d idempotency "
                        "keys older than %g days in %d batches (longest lock hold %.1f ms)",
                        report.deliveries,
                        report.notifications,
                        report.idempotency_keys,
                        self._days,
                        report.batches,
                        report.max_hold_seconds * 1000,
                    )
            except Exception:
                log.exception("retention sweep failed; trying again at the next interval")
            await asyncio.sleep(self._interval)
