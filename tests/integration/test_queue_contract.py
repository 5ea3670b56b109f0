"""The queue engine contract, run on every engine: embedded on SQLite, embedded on PostgreSQL,
Redis Streams, and Redis Streams behind the outbox (queue/outbox.py), as the runtime uses it.

Redis tests use ``PUSHGATE_TEST_REDIS_URL`` (default: the local server, database 0); each test
uses keys under a random prefix and deletes them afterwards. An unreachable server skips the
Redis tests with the reason, or fails them when ``PUSHGATE_REQUIRE_SERVICES=1``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from sqlalchemy import text

from pushgate.queue.base import Job, QueueEngine, QueueFull
from pushgate.queue.embedded import EmbeddedQueue
from pushgate.queue.outbox import OutboxQueue
from pushgate.queue.redis import RedisQueue
from pushgate.storage.database import Database, open_database
from pushgate.storage.migrate import migrate

Q = "contract"


@dataclass
class Storage:
    """Where one test's jobs live; ``open`` makes a new engine on it (like a new process)."""

    kind: str  # "sqlite" | "postgresql" | "redis" | "outbox" (Redis with its outbox)
    url: str
    # The outbox's database ("outbox" only).
    db_url: str | None = None
    prefix: str = field(default_factory=lambda: f"pushgate-test-{uuid.uuid4().hex[:12]}")
    opened: list[tuple[QueueEngine, Database | None]] = field(default_factory=list)

    @property
    def embedded(self) -> bool:
        return self.kind in ("sqlite", "postgresql")

    async def open(self, *, relay: bool = True, **options: Any) -> QueueEngine:
        engine: QueueEngine
        db: Database | None = None
        if self.embedded:
            db = open_database(self.url)
            engine = EmbeddedQueue(db, **options)
        elif self.db_url is not None:
            db = open_database(self.db_url)
            redis = RedisQueue(self.url, prefix=self.prefix, **options)
            engine = OutboxQueue(redis, db, relay=relay, poll_seconds=0.1)
        else:
            engine = RedisQueue(self.url, prefix=self.prefix, **options)
        await engine.start()
        self.opened.append((engine, db))
        return engine

    def db(self, engine: QueueEngine) -> Database:
        return next(db for e, db in self.opened if e is engine and db is not None)

    async def close(self, engine: QueueEngine) -> None:
        for i, (e, db) in enumerate(self.opened):
            if e is engine:
                del self.opened[i]
                await e.close()
                if db is not None:
                    await db.dispose()
                return

    async def close_all(self) -> None:
        while self.opened:
            await self.close(self.opened[-1][0])


@pytest.fixture(params=["sqlite", "postgresql", "redis", "outbox"])
def storage_url(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str, str | None]:
    sqlite = f"sqlite+aiosqlite:///{tmp_path / 'queue.db'}"
    if request.param == "sqlite":
        return "sqlite", sqlite, None
    if request.param == "postgresql":
        return "postgresql", str(request.getfixturevalue("postgres_database_url")), None
    redis_url = str(request.getfixturevalue("redis_url"))
    return request.param, redis_url, sqlite if request.param == "outbox" else None


@contextlib.asynccontextmanager
async def make_storage(kind: str, url: str, db_url: str | None = None) -> AsyncIterator[Storage]:
    store = Storage(kind, url, db_url)
    database_url = url if store.embedded else db_url
    if database_url is not None:
        db = open_database(database_url)
        try:
            await migrate(db)
        finally:
            await db.dispose()
    try:
        yield store
    finally:
        await store.close_all()
        if not store.embedded:
            client = aioredis.from_url(url)
            try:
                keys = [key async for key in client.scan_iter(match=f"{store.prefix}:*")]
                if keys:
                    await client.delete(*keys)
            finally:
                await client.aclose()


@pytest.fixture
async def storage(storage_url: tuple[str, str, str | None]) -> AsyncIterator[Storage]:
    async with make_storage(*storage_url) as store:
        yield store


@pytest.fixture
async def redis_storage(redis_url: str) -> AsyncIterator[Storage]:
    async with make_storage("redis", redis_url) as store:
        yield store


@pytest.fixture(params=["sqlite", "postgresql", "outbox-sqlite", "outbox-postgresql"])
def transactional_url(
    request: pytest.FixtureRequest, tmp_path: Path
) -> tuple[str, str, str | None]:
    """Engines whose ``enqueue(conn=...)`` joins the caller's transaction: the embedded one,
    and Redis behind the outbox (on either database)."""
    kind, _, database = str(request.param).rpartition("-")
    if database == "sqlite":
        db_url = f"sqlite+aiosqlite:///{tmp_path / 'queue.db'}"
    else:
        db_url = str(request.getfixturevalue("postgres_database_url"))
    if kind == "outbox":
        return "outbox", str(request.getfixturevalue("redis_url")), db_url
    return database, db_url, None


@pytest.fixture
async def transactional_storage(
    transactional_url: tuple[str, str, str | None],
) -> AsyncIterator[Storage]:
    async with make_storage(*transactional_url) as store:
        yield store


@pytest.fixture
async def outbox_storage(redis_url: str, tmp_path: Path) -> AsyncIterator[Storage]:
    async with make_storage(
        "outbox", redis_url, f"sqlite+aiosqlite:///{tmp_path / 'outbox.db'}"
    ) as store:
        yield store


@pytest.fixture
async def engine(storage: Storage) -> QueueEngine:
    return await storage.open()


async def drain(engine: QueueEngine, *, limit: int = 100, lease: float = 30.0) -> list[Job]:
    """Claim (without acknowledging) until the queue has nothing visible."""
    jobs: list[Job] = []
    while batch := await engine.claim(Q, limit=limit, lease_seconds=lease):
        jobs.extend(batch)
    return jobs


# --- every engine -------------------------------------------------------------------------


async def test_payload_bytes_round_trip(engine: QueueEngine) -> None:
    payloads = [
        b"plain",
        b"",
        b"\x00",
        bytes(range(256)),
        "ünïcødé ✓".encode(),
        os.urandom(64 * 1024),
    ]
    await engine.enqueue(Q, payloads)
    await engine.enqueue(Q, [b"\x00delayed\xff", b""], delay_seconds=0.05)
    await asyncio.sleep(0.1)
    jobs = await drain(engine)
    assert [job.payload for job in jobs] == [*payloads, b"\x00delayed\xff", b""]
    assert all(type(job.payload) is bytes for job in jobs)
    assert all(job.queue == Q and job.claims == 1 for job in jobs)
    assert len({job.id for job in jobs}) == len(jobs)


async def test_single_claimer_gets_jobs_in_order(engine: QueueEngine) -> None:
    expected = [f"job-{i}".encode() for i in range(23)]
    for payload in expected[:5]:
        await engine.enqueue(Q, [payload])
    await engine.enqueue(Q, expected[5:])
    got = [job.payload for job in await drain(engine, limit=3)]
    assert got == expected


async def test_claimed_job_is_leased_then_comes_back(engine: QueueEngine) -> None:
    await engine.enqueue(Q, [b"lease me"])
    [first] = await engine.claim(Q, limit=10, lease_seconds=0.3)
    assert (first.payload, first.claims) == (b"lease me", 1)
    assert await engine.claim(Q, limit=10, lease_seconds=0.3) == []
    await asyncio.sleep(0.45)
    [again] = await engine.claim(Q, limit=10, lease_seconds=0.3)
    assert (again.id, again.payload, again.claims) == (first.id, b"lease me", 2)
    assert await engine.claim(Q, limit=10, lease_seconds=0.3) == []


async def test_ack_removes_for_good(engine: QueueEngine) -> None:
    await engine.enqueue(Q, [b"a", b"b", b"c"])
    jobs = await engine.claim(Q, limit=10, lease_seconds=0.2)
    assert len(jobs) == 3
    await engine.ack(jobs[:2])
    await asyncio.sleep(0.35)
    [back] = await engine.claim(Q, limit=10, lease_seconds=0.2)
    assert (back.payload, back.claims) == (b"c", 2)
    await engine.ack([back])
    await engine.ack([back])  # acknowledging twice is harmless
    await asyncio.sleep(0.35)
    assert await engine.claim(Q, limit=10, lease_seconds=0.2) == []
    assert await engine.depth(Q) == 0


async def test_late_ack_never_removes_another_job(storage: Storage) -> None:
    engine = await storage.open()
    await engine.enqueue(Q, [b"old"])
    [slow] = await engine.claim(Q, limit=1, lease_seconds=0.2)
    await asyncio.sleep(0.35)
    [fast] = await engine.claim(Q, limit=1, lease_seconds=0.2)
    await engine.ack([fast])  # the job is done
    await engine.enqueue(Q, [b"new"])
    await engine.ack([slow])  # the slow worker finishes too, after its lease ran out
    assert [job.payload for job in await drain(engine)] == [b"new"]


async def test_delayed_job_is_invisible_until_due(engine: QueueEngine) -> None:
    # Margins wide enough for a machine busy with other work.
    await engine.enqueue(Q, [b"later"], delay_seconds=2.0)
    await engine.enqueue(Q, [b"later, too"], delay_seconds=2.0)
    assert await engine.claim(Q, limit=10, lease_seconds=30) == []
    await asyncio.sleep(0.3)
    assert await engine.claim(Q, limit=10, lease_seconds=30) == []
    await asyncio.sleep(2.0)
    jobs = await engine.claim(Q, limit=10, lease_seconds=30)
    assert [job.payload for job in jobs] == [b"later", b"later, too"]


async def test_waiting_claim_sees_delayed_job_when_due(engine: QueueEngine) -> None:
    started = time.monotonic()
    await engine.enqueue(Q, [b"soon"], delay_seconds=0.5)
    jobs = await engine.claim(Q, limit=10, lease_seconds=30, wait_seconds=5)
    elapsed = time.monotonic() - started
    assert [job.payload for job in jobs] == [b"soon"]
    assert 0.45 <= elapsed < 2.0


async def test_concurrent_claimers_get_disjoint_jobs(storage: Storage) -> None:
    first, second = await storage.open(), await storage.open()
    expected = {f"job-{i}".encode() for i in range(300)}
    await first.enqueue(Q, sorted(expected))
    seen: list[list[Job]] = [[], [], [], []]

    async def claimer(engine: QueueEngine, out: list[Job]) -> None:
        while batch := await engine.claim(Q, limit=7, lease_seconds=60):
            out.extend(batch)
            await asyncio.sleep(0)

    await asyncio.gather(
        claimer(first, seen[0]),
        claimer(second, seen[1]),
        claimer(first, seen[2]),
        claimer(second, seen[3]),
    )
    ids = [job.id for jobs in seen for job in jobs]
    assert len(ids) == len(set(ids)) == 300
    assert {job.payload for jobs in seen for job in jobs} == expected
    assert all(job.claims == 1 for jobs in seen for job in jobs)
    assert sum(1 for jobs in seen if jobs) >= 2  # the work was actually shared


async def test_jobs_survive_closing_the_engine(storage: Storage) -> None:
    engine = await storage.open()
    await engine.enqueue(Q, [b"durable 1", b"durable 2"])
    await engine.enqueue(Q, [b"durable later"], delay_seconds=0.3)
    await storage.close(engine)
    reopened = await storage.open()
    assert await reopened.depth(Q) == 3
    await asyncio.sleep(0.35)
    jobs = await drain(reopened)
    assert [job.payload for job in jobs] == [b"durable 1", b"durable 2", b"durable later"]


async def test_dead_workers_job_is_taken_over_after_its_lease(storage: Storage) -> None:
    dead = await storage.open()
    await dead.enqueue(Q, [b"orphan"])
    [held] = await dead.claim(Q, limit=10, lease_seconds=0.4)
    await storage.close(dead)  # never acknowledged
    survivor = await storage.open()
    assert await survivor.claim(Q, limit=10, lease_seconds=0.4) == []
    await asyncio.sleep(0.5)
    [taken] = await survivor.claim(Q, limit=10, lease_seconds=0.4)
    assert (taken.id, taken.payload, taken.claims) == (held.id, b"orphan", 2)
    await survivor.ack([taken])
    assert await survivor.depth(Q) == 0


async def test_waiting_claim_returns_when_a_job_arrives(storage: Storage) -> None:
    # A long poll interval: only the wake-up (embedded) or BLOCK (Redis) can return early.
    engine = await storage.open(poll_seconds=3.0)

    async def produce() -> None:
        await asyncio.sleep(0.2)
        await engine.enqueue(Q, [b"wake up"])

    started = time.monotonic()
    jobs, _ = await asyncio.gather(
        engine.claim(Q, limit=10, lease_seconds=30, wait_seconds=10), produce()
    )
    elapsed = time.monotonic() - started
    assert [job.payload for job in jobs] == [b"wake up"]
    assert 0.15 <= elapsed < 1.5


async def test_depth_counts_waiting_claimed_and_delayed_jobs(engine: QueueEngine) -> None:
    assert await engine.depth(Q) == 0
    await engine.enqueue(Q, [b"1", b"2", b"3"])
    await engine.enqueue(Q, [b"4", b"5"], delay_seconds=60)
    await engine.enqueue("other", [b"x"])
    assert await engine.depth(Q) == 5
    jobs = await engine.claim(Q, limit=2, lease_seconds=30)
    assert await engine.depth(Q) == 5
    await engine.ack(jobs)
    assert await engine.depth(Q) == 3
    assert await engine.depth("other") == 1
    assert await engine.depth("never used") == 0


async def test_oldest_age_counts_due_jobs_waiting_or_claimed(engine: QueueEngine) -> None:
    assert await engine.oldest_age(Q) == 0.0
    await engine.enqueue(Q, [b"later"], delay_seconds=60)
    assert await engine.oldest_age(Q) == 0.0  # not due yet
    await engine.enqueue(Q, [b"1", b"2"])
    await asyncio.sleep(0.3)
    first = await engine.oldest_age(Q)
    assert 0.25 <= first < 5
    jobs = await engine.claim(Q, limit=1, lease_seconds=30)
    await asyncio.sleep(0.1)
    assert await engine.oldest_age(Q) >= first  # a claimed job still counts
    await engine.ack(jobs)
    second = await engine.oldest_age(Q)
    assert 0.25 <= second < 5  # the other one, added at the same time
    await engine.ack(await drain(engine))
    assert await engine.oldest_age(Q) == 0.0
    assert await engine.oldest_age("never used") == 0.0


async def test_oldest_age_counts_a_delayed_job_from_its_due_time(engine: QueueEngine) -> None:
    started = time.monotonic()
    await engine.enqueue(Q, [b"soon"], delay_seconds=0.4)
    assert await engine.oldest_age(Q) == 0.0
    await asyncio.sleep(0.8)
    before = time.monotonic() - started
    age = await engine.oldest_age(Q)
    after = time.monotonic() - started
    # Due for the time since it was added less its 0.4 s delay, not for all of it (and not
    # moved yet); measured against the time that really passed, however late the sleep ended.
    assert before - 0.4 - 0.15 <= age <= after - 0.4 + 0.15


async def test_empty_claim_without_wait_returns_at_once(engine: QueueEngine) -> None:
    started = time.monotonic()
    assert await engine.claim(Q, limit=10, lease_seconds=30) == []
    assert await engine.claim(Q, limit=10, lease_seconds=30, wait_seconds=0) == []
    assert time.monotonic() - started < 0.5
    started = time.monotonic()
    assert await engine.claim(Q, limit=10, lease_seconds=30, wait_seconds=0.3) == []
    assert 0.25 <= time.monotonic() - started < 1.5


# --- Redis only ---------------------------------------------------------------------------


async def test_redis_refuses_jobs_beyond_max_length(redis_storage: Storage) -> None:
    engine = await redis_storage.open(max_length=5)
    await engine.enqueue(Q, [b"1", b"2", b"3"])
    with pytest.raises(QueueFull):
        await engine.enqueue(Q, [b"4", b"5", b"6"])
    assert await engine.depth(Q) == 3  # nothing of the refused batch was added
    await engine.enqueue(Q, [b"4"], delay_seconds=60)
    with pytest.raises(QueueFull):
        await engine.enqueue(Q, [b"5", b"6"], delay_seconds=60)
    await engine.enqueue(Q, [b"5"])
    with pytest.raises(QueueFull):
        await engine.enqueue(Q, [b"6"])
    jobs = await engine.claim(Q, limit=2, lease_seconds=30)
    with pytest.raises(QueueFull):  # claimed but unfinished jobs still count
        await engine.enqueue(Q, [b"6"])
    await engine.ack(jobs)
    await engine.enqueue(Q, [b"6", b"7"])
    assert await engine.depth(Q) == 5


async def test_redis_dead_consumer_entry_moves_to_the_new_consumer(
    redis_storage: Storage,
) -> None:
    dead = await redis_storage.open(consumer="dead")
    await dead.enqueue(Q, [b"orphan"])
    [held] = await dead.claim(Q, limit=10, lease_seconds=0.3)
    await redis_storage.close(dead)
    survivor = await redis_storage.open(consumer="survivor")
    client = aioredis.from_url(redis_storage.url)
    try:
        stream = f"{redis_storage.prefix}:q:{Q}"
        [pending] = await client.xpending_range(stream, "workers", "-", "+", 10)
        assert pending["consumer"] == b"dead"  # closing did not drop its pending entry
        await asyncio.sleep(0.4)
        [taken] = await survivor.claim(Q, limit=10, lease_seconds=0.3)
        assert (taken.id, taken.claims) == (held.id, 2)
        [pending] = await client.xpending_range(stream, "workers", "-", "+", 10)
        assert (pending["consumer"], pending["times_delivered"]) == (b"survivor", 2)
        await survivor.ack([taken])
        assert await client.xpending_range(stream, "workers", "-", "+", 10) == []
        assert await client.xlen(stream) == 0  # acknowledged entries are deleted
    finally:
        await client.aclose()


async def test_redis_waiting_claim_blocks_in_the_server(
    redis_storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = await redis_storage.open(poll_seconds=3.0)
    assert isinstance(engine, RedisQueue)
    client = engine._redis
    commands: list[object] = []
    execute = client.execute_command

    async def counting(*args: Any, **options: Any) -> Any:
        commands.append(args[0])
        return await execute(*args, **options)

    monkeypatch.setattr(client, "execute_command", counting)
    started = time.monotonic()
    assert await engine.claim(Q, limit=10, lease_seconds=30, wait_seconds=1.0) == []
    assert 0.95 <= time.monotonic() - started < 2.0
    assert len(commands) <= 4, commands  # one blocking read, not a polling loop


async def test_redis_skips_entries_deleted_while_pending(redis_storage: Storage) -> None:
    slow, fast = await redis_storage.open(), await redis_storage.open()
    await slow.enqueue(Q, [b"a", b"b"])
    jobs = await slow.claim(Q, limit=10, lease_seconds=0.2)
    client = aioredis.from_url(redis_storage.url)
    try:
        await client.xdel(f"{redis_storage.prefix}:q:{Q}", jobs[0].id)
    finally:
        await client.aclose()
    await asyncio.sleep(0.3)
    [back] = await fast.claim(Q, limit=10, lease_seconds=0.2)
    assert (back.payload, back.claims) == (b"b", 2)


# --- engines that join the caller's transaction: embedded, and Redis behind the outbox ------


class Rollback(Exception):
    pass


async def test_enqueue_in_a_transaction_commits_with_it(transactional_storage: Storage) -> None:
    engine = await transactional_storage.open()
    db = transactional_storage.db(engine)
    with pytest.raises(Rollback):
        async with db.write.begin() as conn:
            await engine.enqueue(Q, [b"rolled back"], conn=conn)
            await engine.enqueue(Q, [b"rolled back, delayed"], delay_seconds=0.1, conn=conn)
            raise Rollback
    await asyncio.sleep(0.15)
    assert await engine.claim(Q, limit=10, lease_seconds=30) == []
    assert await engine.depth(Q) == 0

    seen_before_commit: list[Job] = []
    async with db.write.begin() as conn:
        await engine.enqueue(Q, [b"committed 1", b"committed 2"], conn=conn)
        # Not before the commit, even while the transaction is open (Redis used to).
        seen_before_commit = await engine.claim(Q, limit=10, lease_seconds=30)
    engine.wake(Q)
    jobs = await engine.claim(Q, limit=10, lease_seconds=30, wait_seconds=5)
    assert seen_before_commit == []
    assert [job.payload for job in jobs] == [b"committed 1", b"committed 2"]


# --- the outbox -----------------------------------------------------------------------------


async def _commit_without_publishing(storage: Storage, payloads: list[bytes], delay: float) -> None:
    """A process that commits its jobs and dies before its relay publishes them."""
    dying = await storage.open(relay=False)
    async with storage.db(dying).write.begin() as conn:
        await dying.enqueue(Q, payloads, delay_seconds=delay, conn=conn)
    await storage.close(dying)


async def test_outbox_rows_left_by_a_dead_process_are_published(outbox_storage: Storage) -> None:
    await _commit_without_publishing(outbox_storage, [b"left 1", b"left 2"], 0.0)
    await _commit_without_publishing(outbox_storage, [b"left, delayed"], 0.6)
    started = time.monotonic()
    watcher = await outbox_storage.open(relay=False)
    assert await watcher.depth(Q) == 3  # in the outbox, counted as waiting
    survivor = await outbox_storage.open()
    jobs = await survivor.claim(Q, limit=10, lease_seconds=30, wait_seconds=5)
    assert [job.payload for job in jobs] == [b"left 1", b"left 2"]
    # The delay counts from the commit, not from the late publish.
    [late] = await survivor.claim(Q, limit=10, lease_seconds=30, wait_seconds=5)
    assert late.payload == b"left, delayed"
    assert time.monotonic() - started < 1.5
    await survivor.ack([*jobs, late])
    assert await survivor.depth(Q) == 0


async def test_outbox_relays_of_two_processes_publish_each_job_once(
    outbox_storage: Storage,
) -> None:
    payloads = [f"job-{i}".encode() for i in range(300)]
    await _commit_without_publishing(outbox_storage, payloads, 0.0)
    first, second = await outbox_storage.open(), await outbox_storage.open()
    got: list[Job] = []
    deadline = time.monotonic() + 10
    while len(got) < len(payloads) and time.monotonic() < deadline:
        got += await first.claim(Q, limit=100, lease_seconds=30, wait_seconds=0.2)
    await asyncio.sleep(0.3)  # both relays have had their turns
    got += await second.claim(Q, limit=1000, lease_seconds=30)
    assert sorted(job.payload for job in got) == sorted(payloads)


async def test_outbox_keeps_jobs_the_full_queue_refuses(outbox_storage: Storage) -> None:
    engine = await outbox_storage.open(max_length=2)
    db = outbox_storage.db(engine)
    async with db.write.begin() as conn:
        await engine.enqueue(Q, [b"1", b"2", b"3"], conn=conn)
    engine.wake(Q)
    await asyncio.sleep(0.3)
    assert await engine.claim(Q, limit=10, lease_seconds=30) == []  # refused as one batch
    assert await engine.depth(Q) == 3
    async with db.write.begin() as conn:
        await conn.execute(text("DELETE FROM outbox WHERE payload = :p"), {"p": b"3"})
    jobs = await engine.claim(Q, limit=10, lease_seconds=30, wait_seconds=5)
    assert [job.payload for job in jobs] == [b"1", b"2"]


async def test_outbox_runs_an_inline_queues_due_jobs_itself(outbox_storage: Storage) -> None:
    """A queue run inline: the relay runs its due jobs in order, in the transaction that
    deletes their rows, and nothing reaches the engine; a handler that fails keeps the rows
    (run again later, never lost); a delayed job is still published, to be taken when due."""
    await _commit_without_publishing(outbox_storage, [b"left 1", b"left 2"], 0.0)
    await _commit_without_publishing(outbox_storage, [b"left, delayed"], 0.3)
    engine = await outbox_storage.open(relay=False)
    assert isinstance(engine, OutboxQueue)
    ran: list[bytes] = []
    failing = True

    async def handler(payloads: list[bytes]) -> None:
        if failing:
            raise ConnectionError("the broadcast is away")
        ran.extend(payloads)

    engine.run_inline(Q, handler)
    with pytest.raises(ConnectionError):
        await engine.relay_once()
    assert ran == []
    assert await engine.depth(Q) == 3  # all kept, in the outbox
    failing = False
    assert await engine.relay_once() == 3
    assert ran == [b"left 1", b"left 2"]
    assert await engine.relay_once() == 0
    [late] = await engine.claim(Q, limit=10, lease_seconds=30, wait_seconds=5)
    assert late.payload == b"left, delayed"
    await engine.ack([late])
    assert await engine.depth(Q) == 0


# --- waiting for work without polling: ``ready`` -------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def embedded_url(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    if request.param == "sqlite":
        return "sqlite", f"sqlite+aiosqlite:///{tmp_path / 'queue.db'}"
    return "postgresql", str(request.getfixturevalue("postgres_database_url"))


@pytest.fixture
async def embedded_storage(embedded_url: tuple[str, str]) -> AsyncIterator[Storage]:
    async with make_storage(*embedded_url) as store:
        yield store


async def test_ready_is_signalled_by_this_process_and_quiet_otherwise(
    embedded_storage: Storage,
) -> None:
    engine = await embedded_storage.open(poll_seconds=30.0)
    assert await engine.ready(Q, 0.1)  # a new waiter looks once (jobs from before a restart)
    assert await engine.claim(Q, limit=10, lease_seconds=30) == []
    started = time.monotonic()
    assert not await engine.ready(Q, 0.2)  # nothing enqueued: no signal, no claim needed
    assert time.monotonic() - started >= 0.15

    async def produce() -> None:
        await asyncio.sleep(0.1)
        await engine.enqueue(Q, [b"now"])

    signalled, _ = await asyncio.gather(engine.ready(Q, 5), produce())
    assert signalled
    [job] = await engine.claim(Q, limit=10, lease_seconds=30)
    await engine.ack([job])


async def test_ready_wakes_when_a_delayed_job_becomes_due(embedded_storage: Storage) -> None:
    engine = await embedded_storage.open(poll_seconds=30.0)
    await engine.ready(Q, 0)
    await engine.enqueue(Q, [b"later"], delay_seconds=0.4)
    await engine.ready(Q, 0)  # the enqueue's own wake-up, before the job is due
    assert await engine.claim(Q, limit=10, lease_seconds=30) == []
    started = time.monotonic()
    assert await engine.ready(Q, 5)
    assert 0.25 <= time.monotonic() - started < 2
    [job] = await engine.claim(Q, limit=10, lease_seconds=30)
    assert job.payload == b"later"


async def test_ready_finds_another_processes_jobs_within_the_poll(
    embedded_storage: Storage,
) -> None:
    waiter = await embedded_storage.open(poll_seconds=0.3)
    other = await embedded_storage.open(poll_seconds=30.0)
    await waiter.ready(Q, 0)
    assert await waiter.claim(Q, limit=10, lease_seconds=30) == []

    async def produce() -> None:
        await asyncio.sleep(0.1)
        await other.enqueue(Q, [b"from elsewhere"])

    started = time.monotonic()
    signalled, _ = await asyncio.gather(waiter.ready(Q, 5), produce())
    assert signalled
    assert time.monotonic() - started < 1.5
    [job] = await waiter.claim(Q, limit=10, lease_seconds=30)
    assert job.payload == b"from elsewhere"


# --- the embedded engine on PostgreSQL: notices of due jobs ---------------------------------


@pytest.fixture
async def postgres_storage(postgres_database_url: str) -> AsyncIterator[Storage]:
    async with make_storage("postgresql", postgres_database_url) as store:
        yield store


async def _hearing(waiter: QueueEngine) -> asyncio.Task[bool]:
    """A wait on ``Q`` by ``waiter`` (its first look spent), once it hears other processes."""
    assert isinstance(waiter, EmbeddedQueue)
    await waiter.ready(Q, 0)
    waiting = asyncio.create_task(waiter.ready(Q, 20))
    await asyncio.wait_for(waiter.hearing.wait(), 10)
    return waiting


async def test_postgres_announces_due_jobs_to_other_processes_at_commit(
    postgres_storage: Storage,
) -> None:
    """Without the notice, the waiter would find the job only at its next look (30 s)."""
    waiter = await postgres_storage.open(poll_seconds=30.0)
    other = await postgres_storage.open(poll_seconds=30.0)
    waiting = await _hearing(waiter)
    async with postgres_storage.db(other).writing() as conn:
        await other.enqueue(Q, [b"from elsewhere"], conn=conn)
        await asyncio.sleep(0.3)
        assert not waiting.done()  # not before the commit
    started = time.monotonic()
    assert await waiting
    assert time.monotonic() - started < 2
    [job] = await waiter.claim(Q, limit=10, lease_seconds=30)
    assert job.payload == b"from elsewhere"


async def test_postgres_announces_nothing_rolled_back_or_not_due(
    postgres_storage: Storage,
) -> None:
    waiter = await postgres_storage.open(poll_seconds=30.0)
    other = await postgres_storage.open(poll_seconds=30.0)
    waiting = await _hearing(waiter)
    with pytest.raises(Rollback):
        async with postgres_storage.db(other).writing() as conn:
            await other.enqueue(Q, [b"rolled back"], conn=conn)
            raise Rollback
    await other.enqueue(Q, [b"due in a minute"], delay_seconds=60)
    await asyncio.sleep(1.0)
    assert not waiting.done()
    waiting.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await waiting


async def test_postgres_hears_again_after_its_connection_is_cut(postgres_storage: Storage) -> None:
    waiter = await postgres_storage.open(poll_seconds=30.0)
    other = await postgres_storage.open(poll_seconds=30.0)
    assert isinstance(waiter, EmbeddedQueue)
    waiting = await _hearing(waiter)
    async with postgres_storage.db(other).writing() as conn:
        cut = await conn.exec_driver_sql(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND query LIKE 'LISTEN%'"
        )
        assert list(cut) == [(True,)]
    while waiter.hearing.is_set():  # the loss is seen...
        await asyncio.sleep(0.01)
    await asyncio.wait_for(waiter.hearing.wait(), 10)  # ...and the notices heard again
    await other.enqueue(Q, [b"after the cut"])
    assert await asyncio.wait_for(waiting, 5)
    [job] = await waiter.claim(Q, limit=10, lease_seconds=30)
    assert job.payload == b"after the cut"


async def test_postgres_a_process_does_not_hear_its_own_notices(postgres_storage: Storage) -> None:
    """A process wakes its own workers after its commit (``wake``); its notice would only
    make them look a second time."""
    engine = await postgres_storage.open(poll_seconds=30.0)
    waiting = await _hearing(engine)
    async with postgres_storage.db(engine).writing() as conn:
        await engine.enqueue(Q, [b"mine"], conn=conn)
    await asyncio.sleep(0.5)
    assert not waiting.done()
    engine.wake(Q)
    assert await asyncio.wait_for(waiting, 5)
