"""The workers' job loop (``Workers._job_loop``) on the embedded queue, on both databases: it
keeps claiming while a claim comes back full, without waiting for a signal or the queue's
fallback look, even when every job in hand finishes in the same turn."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from pushgate.queue.base import Job
from pushgate.queue.embedded import EmbeddedQueue
from pushgate.storage.database import Database
from pushgate.workers import Workers


def _workers(queue: EmbeddedQueue) -> Workers:
    unused = cast(Any, None)  # the job loop uses the queue alone
    return Workers(
        jobs=queue,
        queue=queue,
        fan_out=unused,
        scheduler=unused,
        broadcast=unused,
        push=unused,
        platforms=[],
        push_concurrency=4,
        lease_seconds=30,
        channel_jobs=True,
    )


async def test_jobs_beyond_one_claim_are_taken_at_once_when_the_claimed_ones_finish_together(
    db: Database,
) -> None:
    # A fallback look only every 60 s: a loop that waited for it would stall that long.
    queue = EmbeddedQueue(db, poll_seconds=60)
    workers = _workers(queue)
    handled: list[bytes] = []
    every = asyncio.Event()

    async def handle(job: Job) -> None:  # done at once: the 4 in hand finish in one turn
        handled.append(job.payload)
        if len(handled) == 12:
            every.set()

    await queue.enqueue("q", [str(i).encode() for i in range(12)])
    loop = asyncio.create_task(workers._job_loop("q", 4, handle))  # noqa: SLF001
    try:
        await asyncio.wait_for(every.wait(), 10)
    finally:
        workers.request_stop()
        await asyncio.wait_for(loop, 10)
        await queue.close()
    assert sorted(handled) == sorted(str(i).encode() for i in range(12))
