"""The queue engine interface.

A queue engine holds jobs (opaque bytes) in named queues until a worker claims them. A claimed
job is leased: it is invisible to other workers until the lease runs out, and it is gone for
good only when acknowledged. A worker that dies leaves its jobs to come back when their leases
run out, so every job runs at least once; handlers must be idempotent.

Two engines implement it, and ONE contract suite (tests/integration/test_queue_contract.py)
runs on both:

- ``EmbeddedQueue``: a ``jobs`` table in the application database (SQLite or PostgreSQL);
- ``RedisQueue``: one Redis stream per queue with a consumer group.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncConnection


@dataclass(frozen=True, slots=True)
class Job:
    """One claimed job. ``claims`` counts how many times it has been handed out (1 the first
    time); more than 1 means an earlier worker did not acknowledge it in time."""

    id: str
    queue: str
    payload: bytes
    claims: int


class QueueFull(Exception):
    """The queue holds as many jobs as it may; try again later."""


class QueueEngine(ABC):
    """Where jobs wait. Every method is safe to call from several tasks and processes."""

    #: "embedded" or "redis"
    kind: str

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Prepare the engine (connections, consumer groups)."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections; jobs stay where they are."""

    @abstractmethod
    async def enqueue(
        self,
        queue: str,
        payloads: Sequence[bytes],
        *,
        delay_seconds: float = 0.0,
        conn: AsyncConnection | None = None,
    ) -> None:
        """Add one job per payload, visible after ``delay_seconds``.

        ``conn``: an open write transaction on the application database. An engine that keeps
        its jobs in that database writes them in this transaction, so they commit (or roll
        back) with the caller's rows; call ``wake`` after the commit. Other engines add the
        jobs at once, before the caller commits.
        """

    @abstractmethod
    async def claim(
        self, queue: str, *, limit: int, lease_seconds: float, wait_seconds: float = 0.0
    ) -> list[Job]:
        """Lease up to ``limit`` visible jobs, waiting up to ``wait_seconds`` for the first.

        Every claimer of one queue must use the same ``lease_seconds``: Redis measures a lease
        when another claimer takes the job over, the embedded engine when it is claimed."""

    @abstractmethod
    async def ack(self, jobs: Sequence[Job]) -> None:
        """Remove finished jobs for good. A job whose lease ran out and that another worker
        took over is removed too (at-least-once: that worker's run still happens)."""

    @abstractmethod
    async def depth(self, queue: str) -> int:
        """Jobs in the queue, claimed or not (for monitoring)."""

    @abstractmethod
    async def oldest_age(self, queue: str) -> float:
        """Seconds the oldest unfinished job of the queue has been due (waiting or claimed);
        0 when nothing is due (for monitoring). A delayed job counts from its due time."""

    def wake(self, queue: str) -> None:  # noqa: B027 - optional hook
        """Jobs were committed to ``queue`` in this process: wake its waiting claimers."""

    async def ready(self, queue: str, seconds: float) -> bool:
        """Wait until ``queue`` may have jobs to claim, at most ``seconds``; False when nothing
        said so (an idle worker then claims nothing). An engine whose ``claim`` itself blocks
        cheaply until a job arrives answers True at once."""
        return True

    #: Whether ``claim(wait_seconds=...)`` blocks on the server (no polling of ours).
    blocking_claim: bool = True
