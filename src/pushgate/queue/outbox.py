"""The transactional outbox in front of a queue engine outside the database (Redis).

A job made inside a database transaction (a fan-out's delivery jobs, a push retry) must not
reach a worker before that transaction commits, and must not be lost if the process dies right
after the commit. So ``enqueue(..., conn=conn)`` does not publish: it writes one ``outbox`` row
per job in the caller's transaction, and the rows commit or roll back with the caller's own.
A relay publishes committed rows to the engine and deletes them:

- at once after the commit, when the caller calls ``wake`` (every caller that passes ``conn``
  does, after committing);
- otherwise within ``poll_seconds``: rows another process committed, or that a process left
  behind when it died between its commit and the publish, are found by any process's relay.

The relay publishes, then deletes, in one database transaction that holds the rows (``FOR
UPDATE SKIP LOCKED`` on PostgreSQL, so relays of several processes take disjoint rows; the
write transaction on SQLite). A crash between the publish and the commit of the delete
publishes those jobs again: the queue is at-least-once anyway, and handlers are idempotent. A
job's delay counts from its outbox row's creation, so a late publish is not delayed twice.

When the engine refuses jobs (``QueueFull``), the rows stay and the relay tries again after
``poll_seconds``: the outbox holds the backlog durably until workers catch up.

A queue can be run inline (``run_inline``): its jobs due by then are run by the relay itself,
in that same transaction, instead of being published for a worker. That is for jobs whose
whole work is one publish (a channel job: a message offered to the servers' connections over
pub/sub): a worker's claim, run and ack would only add trips and a process between the commit
and the devices. The guarantee is the same: rows whose handler fails stay and are tried again.

``enqueue`` without ``conn`` publishes at once, as the engine does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from itertools import groupby
from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from pushgate.queue.base import Job, QueueEngine, QueueFull
from pushgate.storage.database import Database, driver_rows, now_ms
from pushgate.storage.models import outbox
from pushgate.storage.params import markers

log = logging.getLogger(__name__)

POLL_SECONDS = 1.0
BATCH = 1000
_o = outbox.c

# Runs a batch of one queue's due jobs (their payloads, in order) in the relay.
InlineHandler = Callable[[list[bytes]], Awaitable[None]]


class OutboxQueue(QueueEngine):
    def __init__(
        self,
        engine: QueueEngine,
        db: Database,
        *,
        poll_seconds: float = POLL_SECONDS,
        batch: int = BATCH,
        relay: bool = True,
    ) -> None:
        """``relay``: run the relay in this process (every process normally does)."""
        self.kind = engine.kind
        self.engine = engine
        self._db = db
        self._postgres = not db.is_sqlite
        self._poll = poll_seconds
        self._batch = batch
        self._relaying = relay
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._inline: dict[str, InlineHandler] = {}

    def run_inline(self, queue: str, handler: InlineHandler) -> None:
        """From now on the relay runs ``queue``'s jobs due by then with ``handler``, in the
        transaction that deletes their rows (a failure keeps them), instead of publishing them
        to the engine; a delayed job is still published, to be taken when due."""
        self._inline[queue] = handler

    async def start(self) -> None:
        await self.engine.start()
        if self._relaying and self._task is None:
            self._task = asyncio.create_task(self._relay(), name="pushgate-outbox-relay")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.engine.close()

    async def enqueue(
        self,
        queue: str,
        payloads: Sequence[bytes],
        *,
        delay_seconds: float = 0.0,
        conn: AsyncConnection | None = None,
    ) -> None:
        if conn is None:
            await self.engine.enqueue(queue, payloads, delay_seconds=delay_seconds)
            return
        if not payloads:
            return
        now = now_ms()
        delay_ms = max(0, round(delay_seconds * 1000))
        await conn.execute(
            insert(outbox),
            [
                {"queue": queue, "payload": p, "delay_ms": delay_ms, "created_ms": now}
                for p in payloads
            ],
        )

    def wake(self, queue: str) -> None:
        """Rows were committed in this process: publish them now."""
        self._wake.set()
        self.engine.wake(queue)

    async def claim(
        self, queue: str, *, limit: int, lease_seconds: float, wait_seconds: float = 0.0
    ) -> list[Job]:
        return await self.engine.claim(
            queue, limit=limit, lease_seconds=lease_seconds, wait_seconds=wait_seconds
        )

    async def ack(self, jobs: Sequence[Job]) -> None:
        await self.engine.ack(jobs)

    async def depth(self, queue: str) -> int:
        """The engine's jobs plus those still in the outbox (counted in that order, so a job
        published in between is counted at most once)."""
        published = await self.engine.depth(queue)
        async with self._db.read.connect() as conn:
            waiting = (
                await conn.execute(select(func.count()).where(_o.queue == queue))
            ).scalar_one()
        return published + int(waiting)

    async def oldest_age(self, queue: str) -> float:
        """The older of the engine's oldest job and the oldest due row still in the outbox."""
        published = await self.engine.oldest_age(queue)
        now = now_ms()
        due = _o.created_ms + _o.delay_ms
        async with self._db.read.connect() as conn:
            oldest = (
                await conn.execute(select(func.min(due)).where(_o.queue == queue, due <= now))
            ).scalar_one()
        waiting = 0.0 if oldest is None else max(0.0, (now - int(oldest)) / 1000)
        return max(published, waiting)

    async def relay_once(self) -> int:
        """Publish up to one batch of committed rows, oldest first (or run them, for a queue
        run inline); how many were published. The rows are deleted (and on PostgreSQL locked
        against other relays) by one statement of the transaction that publishes them: if
        publishing fails, it rolls back and they stay."""
        skip_locked = " FOR UPDATE SKIP LOCKED" if self._postgres else ""
        (limit,) = markers(self._postgres, 1)
        async with self._db.writing() as conn:
            rows: list[Any] = await driver_rows(
                conn,
                "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox ORDER BY id "
                f"LIMIT {limit}{skip_locked}) RETURNING id, queue, payload, delay_ms, created_ms",
                (self._batch,),
            )
            if not rows:
                return 0
            rows.sort(key=lambda row: int(row[0]))
            now = now_ms()
            # Consecutive rows of one queue and one due time go out as one enqueue, in order.
            for (queue, due_ms), group in groupby(rows, key=lambda r: (r[1], r[4] + r[3])):
                payloads = [bytes(r[2]) for r in group]
                handler = self._inline.get(queue)
                if handler is not None and due_ms <= now:
                    await handler(payloads)
                else:
                    await self.engine.enqueue(
                        queue, payloads, delay_seconds=max(0, due_ms - now) / 1000
                    )
        return len(rows)

    async def _relay(self) -> None:
        while True:
            published = 0
            try:
                published = await self.relay_once()
            except asyncio.CancelledError:
                raise
            except QueueFull as exc:
                log.warning("outbox: the queue is full, publishing again later (%s)", exc)
            except Exception as exc:  # the database or the engine is away: try again later
                log.warning("outbox: publishing failed, trying again later: %r", exc)
            if published >= self._batch:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._poll)
            self._wake.clear()
