"""Delivery workers: thin loops that take jobs off the queues and call a service.

- one fan-out loop (``fanout`` jobs, always in the database);
- a channel loop, with several processes: hand channel deliveries to the live connections
  (``ChannelBroadcast``);
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

log = logging.getLogger(__name__)

CLAIM_WAIT_SECONDS = 1.0
ERROR_PAUSE_SECONDS = 0.5
STOP_GRACE_SECONDS = 5.0


class Workers:
    def __init__(
        self,
        *,
        jobs: EmbeddedQueue,
        queue: QueueEngine,
        fan_out: FanOut,
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

    async def stop(self) -> None:
        """Let the handlers finish what they hold (for a few seconds), then stop."""
        self._stopping.set()
        if not self._tasks:
            return
        _done, pending = await asyncio.wait(self._tasks, timeout=STOP_GRACE_SECONDS)
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    async def _fan_out_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                if await self._fan_out.step() == 0:
                    await self._jobs.wait_for(FANOUT_QUEUE, CLAIM_WAIT_SECONDS)
            except Exception:
                log.exception("fan-out step failed; its jobs are retried")
                await asyncio.sleep(ERROR_PAUSE_SECONDS)

    async def _job_loop(
        self, queue: str, limit: int, handle: Callable[[Job], Awaitable[None]]
    ) -> None:
        while not self._stopping.is_set():
            try:
                jobs = await self._queue.claim(
                    queue, limit=limit, lease_seconds=self._lease, wait_seconds=CLAIM_WAIT_SECONDS
                )
            except Exception:
                log.exception("claiming jobs from %s failed", queue)
                await asyncio.sleep(ERROR_PAUSE_SECONDS)
                continue
            done: list[Job] = []
            for job in jobs:
                try:
                    await handle(job)
                    done.append(job)
                except Exception:
                    log.exception(
                        "job %s of %s failed; it comes back after its lease", job.id, queue
                    )
            try:
                await self._queue.ack(done)
            except Exception:
                log.exception("acknowledging %d jobs of %s failed", len(done), queue)

    async def _channel_job(self, job: Job) -> None:
        channel_job = ChannelJob.decode(job.payload)
        await self._broadcast.publish(
            channel_job.device_ids, Outgoing(channel_job.notification_id, channel_job.message)
        )

    def _push_handler(self, platform: str) -> Callable[[Job], Awaitable[None]]:
        async def handle(job: Job) -> None:
            await self._push.run(platform, PushJob.decode(job.payload))

        return handle
