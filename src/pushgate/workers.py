"""Delivery workers: thin loops that take jobs off the queues and call a service.

- one scheduler loop (``sending`` jobs, in the database): runs sendings when they are due;
- one fan-out loop (``fanout`` jobs, always in the database);
- a channel loop, with several processes: hand channel deliveries to the live connections
  (``ChannelBroadcast``). The outbox relay runs channel jobs itself (``publish_channel_jobs``,
  wired in runtime.py), so this loop only takes the ones an earlier version published;
- push loops, several per platform: send through the platform's transport.

A job is acknowledged after its handler returns. A handler that fails leaves its job to come
back when the lease runs out; stopping a worker does the same for jobs in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from pushgate.channel.broadcast import ChannelBroadcast
from pushgate.channel.hub import Outgoing
from pushgate.observability.logs import NOTIFICATION_ID
from pushgate.queue.base import Job, QueueEngine
from pushgate.queue.embedded import EmbeddedQueue
from pushgate.services.delivery_jobs import (
    CHANNEL,
    FANOUT_QUEUE,
    ChannelJob,
    PushJob,
    deliver_queue,
)
from pushgate.services.fan_out import FanOut
from pushgate.services.push_delivery import PushDelivery
from pushgate.services.scheduler import Scheduler
from pushgate.services.sendings import SENDING_QUEUE

log = logging.getLogger(__name__)

CLAIM_WAIT_SECONDS = 1.0
ERROR_PAUSE_SECONDS = 0.5
STOP_GRACE_SECONDS = 5.0


async def publish_channel_jobs(broadcast: ChannelBroadcast, payloads: list[bytes]) -> None:
    """Run channel jobs: offer each one's message to its devices' live connections (one
    ``publish_many``, so one trip to Redis for a relay's batch)."""
    jobs = [ChannelJob.decode(payload) for payload in payloads]
    await broadcast.publish_many(
        [(job.device_ids, Outgoing(job.notification_id, job.message)) for job in jobs]
    )


class Workers:
    def __init__(
        self,
        *,
        jobs: EmbeddedQueue,
        queue: QueueEngine,
        fan_out: FanOut,
        scheduler: Scheduler,
        broadcast: ChannelBroadcast,
        push: PushDelivery,
        platforms: list[str],
        push_concurrency: int,
        lease_seconds: float,
        channel_jobs: bool,
    ) -> None:
        self._jobs = jobs
        self._queue = queue
        self._fan_out = fan_out
        self._scheduler = scheduler
        self._broadcast = broadcast
        self._push = push
        self._platforms = platforms
        self._push_concurrency = push_concurrency
        self._lease = lease_seconds
        # False when the fan-out hands channel deliveries over itself (one process).
        self._channel_jobs = channel_jobs
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()

    def start(self) -> None:
        self._stopping.clear()
        self._spawn("fanout", self._fan_out_loop())
        self._spawn("scheduler", self._scheduler_loop())
        if self._channel_jobs:
            self._spawn("channel", self._job_loop(deliver_queue(CHANNEL), 64, self._channel_job))
        for platform in self._platforms:
            handler = self._push_handler(platform)
            self._spawn(
                platform,
                self._job_loop(deliver_queue(platform), self._push_concurrency, handler),
            )

    def _spawn(self, name: str, work: Coroutine[Any, Any, None]) -> None:
        self._tasks.append(asyncio.create_task(work, name=f"pushgate-worker-{name}"))

    def request_stop(self) -> None:
        """Take no new jobs; the ones in hand go on."""
        self._stopping.set()

    async def stop(self, grace_seconds: float = STOP_GRACE_SECONDS) -> None:
        """Let the handlers finish what they hold (for ``grace_seconds``), then stop; jobs
        still running are cancelled and come back to the queue after their lease."""
        self._stopping.set()
        if not self._tasks:
            return
        _done, pending = await asyncio.wait(self._tasks, timeout=grace_seconds)
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    async def _fan_out_loop(self) -> None:
        await self._step_loop(FANOUT_QUEUE, self._fan_out.step, "fan-out")

    async def _scheduler_loop(self) -> None:
        await self._step_loop(SENDING_QUEUE, self._scheduler.step, "scheduler")

    async def _step_loop(self, queue: str, step: Callable[[], Awaitable[int]], what: str) -> None:
        """Step when ``queue`` is signalled (jobs committed in this process, or found by the
        queue's fallback look), and again at once while a step finds work; nothing otherwise."""
        while not self._stopping.is_set():
            if not await self._jobs.ready(queue, CLAIM_WAIT_SECONDS):
                continue
            try:
                if await step() > 0:
                    self._jobs.wake(queue)  # there may be more
            except Exception:
                log.exception("%s step failed; its jobs are retried", what)
                await asyncio.sleep(ERROR_PAUSE_SECONDS)
                self._jobs.wake(queue)

    async def _job_loop(
        self, queue: str, limit: int, handle: Callable[[Job], Awaitable[None]]
    ) -> None:
        """Keep up to ``limit`` jobs of ``queue`` in hand at once: claim as many as there are
        free places, handle each in its own task, and acknowledge the finished ones together
        at the next turn."""
        running: set[asyncio.Task[Job | None]] = set()
        finished: list[Job] = []
        # The last claim took as many jobs as it asked for: more may be waiting, and no signal
        # says so (it was spent on that claim).
        more = False

        async def run(job: Job) -> Job | None:
            try:
                await handle(job)
                return job
            except Exception:
                log.exception("job %s of %s failed; it comes back after its lease", job.id, queue)
                return None

        def collect(tasks: set[asyncio.Task[Job | None]]) -> None:
            for task in tasks:
                running.discard(task)
                job = None if task.cancelled() else task.result()
                if job is not None:
                    finished.append(job)

        try:
            while not self._stopping.is_set():
                if finished:
                    await self._ack(queue, finished)
                    finished = []
                free = limit - len(running)
                if free <= 0:
                    done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                    collect(done)
                    continue
                # With nothing in hand, claim only when the queue may have jobs: the last
                # claim was full, or a signal came (an engine whose claim blocks on its server
                # says so at once).
                if (
                    not running
                    and not more
                    and not await self._queue.ready(queue, CLAIM_WAIT_SECONDS)
                ):
                    continue
                blocking = self._queue.blocking_claim and not running
                try:
                    jobs = await self._queue.claim(
                        queue,
                        limit=free,
                        lease_seconds=self._lease,
                        wait_seconds=CLAIM_WAIT_SECONDS if blocking else 0,
                    )
                except Exception:
                    log.exception("claiming jobs from %s failed", queue)
                    await asyncio.sleep(ERROR_PAUSE_SECONDS)
                    self._queue.wake(queue)  # look again
                    continue
                more = len(jobs) >= free
                for job in jobs:
                    running.add(asyncio.create_task(run(job)))
                if not jobs and running:
                    # Nothing more to take now: look again when a job in hand is done (or
                    # after a while, for jobs that became due meanwhile).
                    done, _ = await asyncio.wait(
                        running, timeout=CLAIM_WAIT_SECONDS, return_when=asyncio.FIRST_COMPLETED
                    )
                    collect(done)
                else:
                    collect({task for task in running if task.done()})
            if running:
                done, _ = await asyncio.wait(running)
                collect(done)
            if finished:
                await self._ack(queue, finished)
        finally:
            for task in running:
                task.cancel()

    async def _ack(self, queue: str, jobs: list[Job]) -> None:
        try:
            await self._queue.ack(jobs)
        except Exception:
            log.exception("acknowledging %d jobs of %s failed", len(jobs), queue)

    async def _channel_job(self, job: Job) -> None:
        await publish_channel_jobs(self._broadcast, [job.payload])

    def _push_handler(self, platform: str) -> Callable[[Job], Awaitable[None]]:
        async def handle(job: Job) -> None:
            push_job = PushJob.decode(job.payload)
            # Every line logged while it runs names the notification (its own task).
            NOTIFICATION_ID.set(push_job.notification_id)
            await self._push.run(platform, push_job)

        return handle
