"""The embedded queue engine: a ``jobs`` table in the application database.

A claim is one ``UPDATE ... RETURNING`` that pushes the chosen jobs' ``visible_ms`` past the
lease. On PostgreSQL the jobs are picked with ``FOR UPDATE SKIP LOCKED``, so claimers in many
processes never wait for each other; on SQLite the write transaction (``BEGIN IMMEDIATE``)
already makes each claim exclusive.

Idle workers cost nothing until there is work: ``ready`` waits for a signal instead of
claiming on a timer. A queue is signalled when jobs are committed to it in this process
(``wake``), when a delayed job enqueued here becomes due (a timer), and by ONE watcher per
engine that reads every ``poll_seconds`` whether any waited-on queue has a visible job (jobs
committed by other processes, and jobs whose lease ran out), one query for all queues.

On PostgreSQL, jobs that are due at once are also announced to the other processes: the
statement that inserts them sends a notice (``storage/notices.py``), which reaches them when
the transaction commits; each process that waits on a queue listens for them. So a job that
one process commits (a post accepted by a server, fanned out by a worker) is taken at once,
not at the next look; the look stays, for notices that were missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncConnection

from pushgate.queue.base import Job, QueueEngine
from pushgate.storage.database import Database, driver_rows, now_ms
from pushgate.storage.notices import listen
from pushgate.storage.params import markers

log = logging.getLogger(__name__)

# The fallback look for jobs no signal announces (other processes' jobs, expired leases).
POLL_SECONDS = 1.0
_DUE_MARGIN_SECONDS = 0.01
# SQLite allows 32766 bound parameters per statement; four per job row.
_ROWS_PER_INSERT = 5000
# PostgreSQL: the channel of the notices "<process token> <queue>" that announce due jobs.
NOTICE_CHANNEL = "pushgate_jobs"
# Waits between attempts to listen again after the notices' connection failed.
_LISTEN_RETRY_SECONDS = (1.0, 5.0, 30.0)


class EmbeddedQueue(QueueEngine):
    kind = "embedded"
    blocking_claim = False

    def __init__(self, db: Database, poll_seconds: float = POLL_SECONDS) -> None:
        self._db = db
        self._postgres = not db.is_sqlite
        self._poll = poll_seconds
        self._wakers: dict[str, asyncio.Event] = {}
        self._watcher: asyncio.Task[None] | None = None
        self._listener: asyncio.Task[None] | None = None
        # Set while other processes' notices of due jobs are heard (PostgreSQL).
        self.hearing = asyncio.Event()
        # Names this process's notices, which it does not need to hear (it wakes itself).
        self._token = secrets.token_hex(8)

    def _event(self, queue: str) -> asyncio.Event:
        event = self._wakers.get(queue)
        if event is None:
            # Set at first: a new waiter looks once (jobs left from before a restart).
            event = self._wakers[queue] = asyncio.Event()
            event.set()
        return event

    def wake(self, queue: str) -> None:
        self._event(queue).set()

    def _wake_later(self, queue: str, delay: float) -> None:
        """A delayed job enqueued here: signal its queue when it is due (a little late rather
        than early: the due time is in whole ms of the wall clock, the timer on the loop's)."""
        with contextlib.suppress(RuntimeError):  # no running loop: the watcher finds it
            asyncio.get_running_loop().call_later(delay + _DUE_MARGIN_SECONDS, self.wake, queue)

    async def ready(self, queue: str, seconds: float) -> bool:
        event = self._event(queue)
        if not event.is_set():
            self._watch()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), seconds)
        signalled = event.is_set()
        event.clear()
        return signalled

    async def wait_for(self, queue: str, seconds: float) -> None:
        """Until ``queue`` is signalled (see ``ready``), or at most ``seconds``."""
        await self.ready(queue, seconds)

    def _watch(self) -> None:
        if self._watcher is None or self._watcher.done():
            self._watcher = asyncio.create_task(self._watch_loop(), name="pushgate-queue-watch")
        if self._postgres and (self._listener is None or self._listener.done()):
            self._listener = asyncio.create_task(self._listen_loop(), name="pushgate-queue-hear")

    async def _listen_loop(self) -> None:
        """Hear other processes' notices of due jobs, for as long as this engine lives; the
        watcher's look covers the time the notices' connection is down."""
        failures = 0
        while True:
            try:
                await listen(
                    self._db.url, NOTICE_CHANNEL, self._heard, on_listening=self.hearing.set
                )
                failures = 0
                log.warning("the connection that hears of other processes' jobs was lost")
            except Exception as exc:
                failures += 1
                log.warning(
                    "cannot hear of other processes' jobs (%s: %s); looking for them every "
                    "%s s meanwhile",
                    type(exc).__name__,
                    exc,
                    self._poll,
                )
            finally:
                self.hearing.clear()
            await asyncio.sleep(_LISTEN_RETRY_SECONDS[min(failures, 2)])

    def _heard(self, payload: str) -> None:
        token, _, queue = payload.partition(" ")
        if token != self._token and queue in self._wakers:
            self.wake(queue)

    async def _watch_loop(self) -> None:
        while True:
            await asyncio.sleep(self._poll)
            waiting = [queue for queue, event in self._wakers.items() if not event.is_set()]
            if not waiting:
                continue
            try:
                found = await self._visible_queues(waiting, now_ms())
            except Exception:
                # The database is away for now; every waiter looks for itself.
                found = waiting
            for queue in found:
                self.wake(queue)

    async def _visible_queues(self, queues: list[str], now: int) -> list[str]:
        """Which of ``queues`` have a visible job: one read, an index probe per queue."""
        marks = self._marks(2 * len(queues))
        sql = " UNION ALL ".join(
            f"SELECT {i} AS q WHERE EXISTS (SELECT 1 FROM jobs WHERE queue = {marks[2 * i]} "
            f"AND visible_ms <= {marks[2 * i + 1]})"
            for i in range(len(queues))
        )
        params: list[object] = []
        for queue in queues:
            params.extend((queue, now))
        async with self._db.read.connect() as conn:
            rows = list(await conn.exec_driver_sql(sql, tuple(params)))
        return [queues[int(row[0])] for row in rows]

    async def close(self) -> None:
        for task in (self._watcher, self._listener):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._watcher = self._listener = None

    def _marks(self, count: int) -> list[str]:
        return markers(self._postgres, count)

    async def enqueue(
        self,
        queue: str,
        payloads: Sequence[bytes],
        *,
        delay_seconds: float = 0.0,
        conn: AsyncConnection | None = None,
    ) -> None:
        if not payloads:
            return
        if conn is not None:
            await self._insert(conn, queue, payloads, delay_seconds)
        else:
            async with self._db.writing() as own:
                await self._insert(own, queue, payloads, delay_seconds)
            self.wake(queue)
        if delay_seconds > 0:
            # After the insert, whose clock reading made the due time.
            self._wake_later(queue, delay_seconds)

    async def _insert(
        self, conn: AsyncConnection, queue: str, payloads: Sequence[bytes], delay: float
    ) -> None:
        created = now_ms()
        visible = created + int(delay * 1000)
        for start in range(0, len(payloads), _ROWS_PER_INSERT):
            chunk = payloads[start : start + _ROWS_PER_INSERT]
            params: list[object] = []
            for payload in chunk:
                params.extend((queue, payload, visible, created))
            insert = "INSERT INTO jobs (queue, payload, visible_ms, claims, created_ms) "
            if self._postgres:
                groups = ", ".join(
                    f"(${i * 4 + 1}::text, ${i * 4 + 2}::bytea, ${i * 4 + 3}::bigint, 0, "
                    f"${i * 4 + 4}::bigint)"
                    for i in range(len(chunk))
                )
            else:
                groups = ", ".join(["(?, ?, ?, 0, ?)"] * len(chunk))
            if not self._postgres or start > 0 or delay > 0:
                await driver_rows(conn, f"{insert}VALUES {groups}", tuple(params))
                continue
            # Due at once: the same statement sends the notice, once (the one-row "notice"
            # is joined to every row), so announcing the jobs costs no trip of its own.
            n = len(params)
            await driver_rows(
                conn,
                f"WITH notice AS (SELECT pg_notify(${n + 1}, ${n + 2})) {insert}"
                f"SELECT v.* FROM (VALUES {groups}) AS v, notice",
                (*params, NOTICE_CHANNEL, f"{self._token} {queue}"),
            )

    async def any_due(self, queue: str) -> bool:
        """Whether ``queue`` has a visible job (a read: no write lock is taken)."""
        return await self._any_visible(queue, now_ms())

    async def _any_visible(self, queue: str, now: int) -> bool:
        """A read (never waiting for the write lock) that tells whether a claim would find
        anything, so idle workers poll without taking SQLite's write lock."""
        q, upto = self._marks(2)
        async with self._db.read.connect() as conn:
            row = (
                await conn.exec_driver_sql(
                    f"SELECT 1 FROM jobs WHERE queue = {q} AND visible_ms <= {upto} LIMIT 1",
                    (queue, now),
                )
            ).first()
        return row is not None

    async def _claim_once(self, queue: str, limit: int, lease_seconds: float) -> list[Job]:
        now = now_ms()
        if self._db.is_sqlite and not await self._any_visible(queue, now):
            return []
        until = now + int(lease_seconds * 1000)
        skip_locked = " FOR UPDATE SKIP LOCKED" if self._postgres else ""
        q, upto, n, lease = self._marks(4)
        sql = (
            f"UPDATE jobs SET visible_ms = {lease}, claims = claims + 1 WHERE id IN "
            f"(SELECT id FROM jobs WHERE queue = {q} AND visible_ms <= {upto} "
            f"ORDER BY visible_ms, id LIMIT {n}{skip_locked}) "
            "RETURNING id, payload, claims"
        )
        async with self._db.writing() as conn:
            rows = await driver_rows(conn, sql, (queue, now, limit, until))
        return sorted(
            (Job(str(id_), queue, bytes(payload), int(claims)) for id_, payload, claims in rows),
            key=lambda job: int(job.id),
        )

    async def claim(
        self, queue: str, *, limit: int, lease_seconds: float, wait_seconds: float = 0.0
    ) -> list[Job]:
        if limit <= 0:
            return []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_seconds
        event = self._event(queue)
        while True:
            event.clear()
            jobs = await self._claim_once(queue, limit, lease_seconds)
            left = deadline - loop.time()
            if jobs or left <= 0:
                return jobs
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), min(left, self._poll))

    async def ack(self, jobs: Sequence[Job]) -> None:
        if not jobs:
            return
        async with self._db.writing() as conn:
            await self.ack_within(conn, jobs)

    async def ack_within(self, conn: AsyncConnection, jobs: Sequence[Job]) -> None:
        """Acknowledge in the caller's transaction (the job goes with the caller's writes)."""
        ids = [int(job.id) for job in jobs]
        for start in range(0, len(ids), _ROWS_PER_INSERT):
            chunk = ids[start : start + _ROWS_PER_INSERT]
            await driver_rows(
                conn, f"DELETE FROM jobs WHERE id IN ({', '.join(self._marks(len(chunk)))})", chunk
            )

    async def take_within(self, conn: AsyncConnection, queue: str, limit: int) -> list[Job]:
        """Claim and delete visible jobs inside the caller's transaction: they are done
        exactly when that transaction commits, and untouched when it rolls back."""
        jobs = await self.peek_within(conn, queue, limit)
        await self.ack_within(conn, jobs)
        return jobs

    async def peek_within(self, conn: AsyncConnection, queue: str, limit: int) -> list[Job]:
        """The first visible jobs, in order, for the caller's transaction to delete
        (``ack_within``), rewrite (``replace_within``) or leave; on PostgreSQL locked until it
        ends, so that no other process takes them meanwhile."""
        skip_locked = " FOR UPDATE SKIP LOCKED" if self._postgres else ""
        q, upto, n = self._marks(3)
        rows = await driver_rows(
            conn,
            f"SELECT id, payload, claims FROM jobs WHERE queue = {q} AND visible_ms <= {upto} "
            f"ORDER BY visible_ms, id LIMIT {n}{skip_locked}",
            (queue, now_ms(), limit),
        )
        return [
            Job(str(id_), queue, bytes(payload), int(claims) + 1) for id_, payload, claims in rows
        ]

    async def replace_within(self, conn: AsyncConnection, job: Job, payload: bytes) -> None:
        """Give ``job`` a new payload in the caller's transaction; it keeps its place in its
        queue (the jobs after it still come after it)."""
        new, id_ = self._marks(2)
        await driver_rows(
            conn, f"UPDATE jobs SET payload = {new} WHERE id = {id_}", (payload, int(job.id))
        )

    async def depth(self, queue: str) -> int:
        (q,) = self._marks(1)
        async with self._db.read.connect() as conn:
            result = await conn.exec_driver_sql(
                f"SELECT count(*) FROM jobs WHERE queue = {q}", (queue,)
            )
            return int(result.scalar_one())

    async def oldest_age(self, queue: str) -> float:
        # A job never claimed is due at ``visible_ms``; a claimed one's ``visible_ms`` is its
        # lease, so it counts from when it was added (its due time is not kept).
        q, upto = self._marks(2)
        now = now_ms()
        async with self._db.read.connect() as conn:
            result = await conn.exec_driver_sql(
                "SELECT min(CASE WHEN claims = 0 THEN visible_ms ELSE created_ms END) "
                f"FROM jobs WHERE queue = {q} AND (claims > 0 OR visible_ms <= {upto})",
                (queue, now),
            )
            oldest = result.scalar_one()
        return 0.0 if oldest is None else max(0.0, (now - int(oldest)) / 1000)
