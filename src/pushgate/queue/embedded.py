"""The embedded queue engine: a ``jobs`` table in the application database.

A claim is one ``UPDATE ... RETURNING`` that pushes the chosen jobs' ``visible_ms`` past the
lease. On PostgreSQL the jobs are picked with ``FOR UPDATE SKIP LOCKED``, so claimers in many
processes never wait for each other; on SQLite the write transaction (``BEGIN IMMEDIATE``)
already makes each claim exclusive. Claimers in this process are woken as soon as jobs are
committed here; jobs added by other processes, and delayed jobs, are found by polling.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from pushgate.queue.base import Job, QueueEngine
from pushgate.storage.database import Database, now_ms
from pushgate.storage.params import markers

POLL_SECONDS = 0.2
# SQLite allows 32766 bound parameters per statement; four per job row.
_ROWS_PER_INSERT = 5000


class EmbeddedQueue(QueueEngine):
    kind = "embedded"

    def __init__(self, db: Database, poll_seconds: float = POLL_SECONDS) -> None:
        self._db = db
        self._postgres = not db.is_sqlite
        self._poll = poll_seconds
        self._wakers: dict[str, asyncio.Event] = {}

    def _event(self, queue: str) -> asyncio.Event:
        event = self._wakers.get(queue)
        if event is None:
            event = self._wakers[queue] = asyncio.Event()
        return event

    def wake(self, queue: str) -> None:
        self._event(queue).set()

    async def wait_for(self, queue: str, seconds: float) -> None:
        """Until jobs are committed to ``queue`` in this process, or at most ``seconds`` (or
        the poll interval) seconds, for jobs from other processes."""
        event = self._event(queue)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), min(seconds, self._poll))
        event.clear()

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
            return
        async with self._db.write.begin() as own:
            await self._insert(own, queue, payloads, delay_seconds)
        self.wake(queue)

    async def _insert(
        self, conn: AsyncConnection, queue: str, payloads: Sequence[bytes], delay: float
    ) -> None:
        created = now_ms()
        visible = created + int(delay * 1000)
        for start in range(0, len(payloads), _ROWS_PER_INSERT):
            chunk = payloads[start : start + _ROWS_PER_INSERT]
            if self._postgres:
                groups = ", ".join(
                    f"(${i * 4 + 1}, ${i * 4 + 2}::bytea, ${i * 4 + 3}::bigint, 0, "
                    f"${i * 4 + 4}::bigint)"
                    for i in range(len(chunk))
                )
            else:
                groups = ", ".join(["(?, ?, ?, 0, ?)"] * len(chunk))
            params: list[object] = []
            for payload in chunk:
                params.extend((queue, payload, visible, created))
            await conn.exec_driver_sql(
                "INSERT INTO jobs (queue, payload, visible_ms, claims, created_ms) "
                f"VALUES {groups}",
                tuple(params),
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
        async with self._db.write.begin() as conn:
            rows: list[Any] = list(await conn.exec_driver_sql(sql, (queue, now, limit, until)))
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
        async with self._db.write.begin() as conn:
            await self.ack_within(conn, jobs)

    async def ack_within(self, conn: AsyncConnection, jobs: Sequence[Job]) -> None:
        """Acknowledge in the caller's transaction (the job goes with the caller's writes)."""
        ids = [int(job.id) for job in jobs]
        for start in range(0, len(ids), _ROWS_PER_INSERT):
            chunk = ids[start : start + _ROWS_PER_INSERT]
            await conn.exec_driver_sql(
                f"DELETE FROM jobs WHERE id IN ({', '.join(self._marks(len(chunk)))})", tuple(chunk)
            )

    async def take_within(self, conn: AsyncConnection, queue: str, limit: int) -> list[Job]:
        """Claim and delete visible jobs inside the caller's transaction: they are done
        exactly when that transaction commits, and untouched when it rolls back."""
        skip_locked = " FOR UPDATE SKIP LOCKED" if self._postgres else ""
        q, upto, n = self._marks(3)
        rows: list[Any] = list(
            await conn.exec_driver_sql(
                f"SELECT id, payload, claims FROM jobs WHERE queue = {q} AND visible_ms <= {upto} "
                f"ORDER BY visible_ms, id LIMIT {n}{skip_locked}",
                (queue, now_ms(), limit),
            )
        )
        jobs = [
            Job(str(id_), queue, bytes(payload), int(claims) + 1) for id_, payload, claims in rows
        ]
        await self.ack_within(conn, jobs)
        return jobs

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
