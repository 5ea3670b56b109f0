"""The Redis queue engine: one Redis stream per queue, read through one consumer group.

Keys (``prefix`` defaults to ``pushgate``):

- ``{prefix}:q:{queue}`` - a stream; each job is one entry with the field ``p`` (the payload).
  All engines share the consumer group ``workers``, created lazily (``MKSTREAM``, from id 0,
  so jobs added before the first claimer are not skipped). Each engine instance is one
  consumer, named ``host-pid-random`` unless given.
- ``{prefix}:d:{queue}`` - a sorted set of delayed jobs scored by due time (ms); a member is
  the enqueue time (8 bytes, ns), the job's index in its batch (4 bytes) and 8 random bytes,
  then the payload: equal payloads stay distinct, and jobs due together come out in order.
  Every claim first moves due members to the stream with a Lua script (atomic: no member is
  moved twice).

A claim takes over entries that have been pending longer than its ``lease_seconds``
(``XAUTOCLAIM``: another worker claimed them and did not acknowledge in time, or died), then
reads new entries (``XREADGROUP >``), blocking up to ``wait_seconds`` for the first. A job's
``claims`` is the entry's delivery counter. The lease is measured by the claimer that takes
the entry over, so every worker of a queue should use the same ``lease_seconds``.
``XAUTOCLAIM`` scans a bounded part of the pending list per call and the engine resumes
where the previous call stopped, so with very many leased jobs an expired one may need a
few claims to be found.

Bounded length: an acknowledged job is ``XACK``-ed and ``XDEL``-eted, so a stream holds only
unfinished jobs, and the stream is never trimmed with ``MAXLEN`` (that would drop jobs nobody
has finished). Instead ``enqueue`` raises ``QueueFull`` when the queue's depth (stream length
plus delayed jobs) would exceed ``max_length``; the check and the adds are one Lua script.

``conn`` in ``enqueue`` is ignored: jobs are added at once. The runtime puts the engine
behind the outbox (queue/outbox.py), which publishes jobs made in a transaction only after it
commits.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError
from sqlalchemy.ext.asyncio import AsyncConnection

from pushgate.queue.base import Job, QueueEngine, QueueFull

GROUP = "workers"
# Longest single BLOCK; a waiting claim wakes this often to move due delayed jobs and take
# over expired leases (and it stays well below the client's socket timeout).
POLL_SECONDS = 1.0
# Delayed jobs moved to the stream per claim, at most.
_MOVE_BATCH = 1000

# Due times are the Redis server's clock (TIME), so the clocks of the machines that enqueue
# and claim do not matter.
_NOW_MS = """
local clock = redis.call('TIME')
local now = clock[1] * 1000 + math.floor(clock[2] / 1000)
"""

# KEYS: stream, delayed. ARGV: max_length, delay_ms (0 = now), payloads (or delayed members).
_ENQUEUE = """
local n = #ARGV - 2
if redis.call('XLEN', KEYS[1]) + redis.call('ZCARD', KEYS[2]) + n > tonumber(ARGV[1]) then
  return -1
end
if ARGV[2] == '0' then
  for i = 3, #ARGV do redis.call('XADD', KEYS[1], '*', 'p', ARGV[i]) end
else
  local due = now + tonumber(ARGV[2])
  for i = 3, #ARGV do redis.call('ZADD', KEYS[2], due, ARGV[i]) end
end
return n
"""
_ENQUEUE = _NOW_MS + _ENQUEUE

# KEYS: stream, delayed. ARGV: move_limit, group, consumer, min_idle_ms, cursor, count.
# Returns {ms until the next delayed job is due or false, next cursor,
# {{id, payload, times delivered}, ...}}.
_READY = """
local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, ARGV[1])
for _, member in ipairs(due) do
  redis.call('XADD', KEYS[1], '*', 'p', string.sub(member, 21))
end
if #due > 0 then redis.call('ZREMRANGEBYRANK', KEYS[2], 0, #due - 1) end
local first = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
local taken = {}
local reply = redis.call('XAUTOCLAIM', KEYS[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5],
                         'COUNT', ARGV[6])
for _, entry in ipairs(reply[2]) do
  if entry and entry[2] then
    local p = redis.call('XPENDING', KEYS[1], ARGV[2], entry[1], entry[1], 1)
    local times = 2
    if p[1] then times = p[1][4] end
    local payload = false
    for i = 1, #entry[2], 2 do
      if entry[2][i] == 'p' then payload = entry[2][i + 1] end
    end
    if payload then table.insert(taken, {entry[1], payload, times}) end
  end
end
local wait = false
if first[2] then wait = math.max(0, tonumber(first[2]) - now) end
return {wait, reply[1], taken}
"""
_READY = _NOW_MS + _READY

# KEYS: stream. ARGV: group, consumer. Forget this consumer if it holds no pending entries.
_FORGET = """
if #redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2]) == 0 then
  return redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
end
return -1
"""


def redact_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class RedisQueue(QueueEngine):
    kind = "redis"

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "pushgate",
        max_length: int = 1_000_000,
        consumer: str | None = None,
        poll_seconds: float = POLL_SECONDS,
    ) -> None:
        self._url = url
        self._prefix = prefix
        self.max_length = max_length
        self.consumer = consumer or f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"
        self._poll = poll_seconds
        # A pool: a claim blocked in XREADGROUP holds one connection, others use the rest.
        self._redis: aioredis.Redis = aioredis.from_url(url, protocol=2)
        self._enqueue_script = self._redis.register_script(_ENQUEUE)
        self._ready_script = self._redis.register_script(_READY)
        self._forget_script = self._redis.register_script(_FORGET)
        self._groups: set[str] = set()
        self._cursors: dict[str, str] = {}

    def _stream(self, queue: str) -> str:
        return f"{self._prefix}:q:{queue}"

    def _delayed(self, queue: str) -> str:
        return f"{self._prefix}:d:{queue}"

    async def start(self) -> None:
        try:
            await self._redis.ping()
        except (RedisError, OSError) as exc:
            raise ConnectionError(
                f"Redis at {redact_url(self._url)} is unreachable: {exc}"
            ) from exc

    async def close(self) -> None:
        try:
            for stream in self._groups:
                await self._forget_script(keys=[stream], args=[GROUP, self.consumer])
        except (RedisError, OSError):
            pass  # the consumer stays listed in the group; harmless
        finally:
            await self._redis.aclose()

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
        args: list[bytes | int]
        if delay_seconds > 0:
            delay_ms = max(1, round(delay_seconds * 1000))
            stamp = time.time_ns().to_bytes(8, "big")
            members = (
                stamp + i.to_bytes(4, "big") + secrets.token_bytes(8) + p
                for i, p in enumerate(payloads)
            )
            args = [self.max_length, delay_ms, *members]
        else:
            args = [self.max_length, 0, *payloads]
        added = await self._enqueue_script(
            keys=[self._stream(queue), self._delayed(queue)], args=args
        )
        if int(added) < 0:
            raise QueueFull(f"queue {queue!r} would exceed {self.max_length} jobs")

    async def _ensure_group(self, stream: str) -> None:
        if stream in self._groups:
            return
        try:
            await self._redis.xgroup_create(stream, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._groups.add(stream)

    async def _ready(
        self, queue: str, limit: int, lease_seconds: float
    ) -> tuple[list[Job], float | None]:
        """Move due delayed jobs to the stream and take over expired leases; also return
        in how many seconds the next delayed job is due, if there is one."""
        stream = self._stream(queue)
        min_idle = max(0, int(lease_seconds * 1000))
        cursor = self._cursors.get(queue, "0-0")
        due_in_ms, next_cursor, taken = await self._ready_script(
            keys=[stream, self._delayed(queue)],
            args=[_MOVE_BATCH, GROUP, self.consumer, min_idle, cursor, limit],
        )
        self._cursors[queue] = _text(next_cursor)
        jobs = [Job(_text(id_), queue, bytes(p), int(times)) for id_, p, times in taken]
        return jobs, (int(due_in_ms) / 1000 if due_in_ms is not None else None)

    async def _read_new(self, queue: str, count: int, block_ms: int | None) -> list[Job]:
        reply: Any = await self._redis.xreadgroup(
            GROUP, self.consumer, {self._stream(queue): ">"}, count=count, block=block_ms
        )
        jobs = []
        for _stream, entries in reply or []:
            for id_, fields in entries:
                if id_ is not None and fields and b"p" in fields:
                    jobs.append(Job(_text(id_), queue, bytes(fields[b"p"]), 1))
        return jobs

    async def claim(
        self, queue: str, *, limit: int, lease_seconds: float, wait_seconds: float = 0.0
    ) -> list[Job]:
        if limit <= 0:
            return []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_seconds
        stream = self._stream(queue)
        await self._ensure_group(stream)
        while True:
            try:
                jobs, due_in = await self._ready(queue, limit, lease_seconds)
                left = deadline - loop.time()
                if len(jobs) < limit:
                    block_ms: int | None = None  # no BLOCK argument: BLOCK 0 waits forever
                    if not jobs and left > 0:
                        block = min(left, self._poll)
                        if due_in is not None:
                            block = min(block, due_in)
                        block_ms = max(1, round(block * 1000))
                    jobs += await self._read_new(queue, limit - len(jobs), block_ms)
                    left = deadline - loop.time()
            except ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                self._groups.discard(stream)  # the stream was deleted: create it again
                await self._ensure_group(stream)
                continue
            if jobs or left <= 0:
                return jobs

    async def ack(self, jobs: Sequence[Job]) -> None:
        if not jobs:
            return
        ids: dict[str, list[str]] = {}
        for job in jobs:
            ids.setdefault(self._stream(job.queue), []).append(job.id)
        async with self._redis.pipeline(transaction=False) as pipe:
            for stream, stream_ids in ids.items():
                pipe.xack(stream, GROUP, *stream_ids)
                pipe.xdel(stream, *stream_ids)
            await pipe.execute()

    async def depth(self, queue: str) -> int:
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.xlen(self._stream(queue))
            pipe.zcard(self._delayed(queue))
            stream_length, delayed = await pipe.execute()
        return int(stream_length) + int(delayed)

    async def oldest_age(self, queue: str) -> float:
        """The stream's first entry (acknowledged entries are deleted, so it is the oldest
        unfinished job, read or not; its id holds the time it was added), or a delayed job
        that is due but not moved to the stream yet, whichever is older; on Redis's clock."""
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.time()
            pipe.xrange(self._stream(queue), count=1)
            pipe.zrange(self._delayed(queue), 0, 0, withscores=True)
            (seconds, micros), first, delayed = await pipe.execute()
        now = int(seconds) * 1000 + int(micros) // 1000
        due = [int(_text(first[0][0]).partition("-")[0])] if first else []
        due += [int(score) for _, score in delayed if score <= now]
        return max(0.0, (now - min(due)) / 1000) if due else 0.0
