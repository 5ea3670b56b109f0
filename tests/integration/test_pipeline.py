"""The delivery flow on both databases, with the embedded queue and in-process workers: group
commit, fan-out into deliveries, live hand-off, statuses, expiry, backlog."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import event, func, select

from pushgate.channel.hub import Hub
from pushgate.config import Settings
from pushgate.domain.translations import Translation, Translations
from pushgate.observability.metrics import Metrics
from pushgate.queue.embedded import EmbeddedQueue
from pushgate.runtime import build_runtime
from pushgate.services import fan_out as fan_out_module
from pushgate.services import pipeline as pipeline_module
from pushgate.services.delivery_jobs import CHANNEL, deliver_queue
from pushgate.services.devices import DeviceRegistration, DeviceService
from pushgate.services.notifications import NotificationQueries
from pushgate.services.pipeline import (
    DeliveryPipeline,
    DuplicateRequest,
    Idempotency,
    NewNotification,
    PipelineUnavailable,
)
from pushgate.storage.database import Database
from pushgate.storage.delivery_writes import DeliveryWrites
from pushgate.storage.migrate import migrate
from pushgate.storage.models import deliveries, jobs, maintenance_marks, notifications, outbox


@dataclass
class World:
    db: Database
    hub: Hub
    devices: DeviceService
    pipeline: DeliveryPipeline
    queries: NotificationQueries
    account_id: int
    device_ids: list[int]

    def notification(self, message: str = "hello", ttl: int = 60) -> NewNotification:
        return NewNotification(
            account_id=self.account_id,
            app_id=None,
            event="e",
            title="t",
            message=message,
            data_json=orjson.dumps({"m": message}).decode(),
            ttl_seconds=ttl,
        )

    async def statuses(self, notification_id: int) -> list[tuple[int, str, int]]:
        async with self.db.read.connect() as conn:
            rows = await conn.execute(
                select(deliveries.c.device_id, deliveries.c.status, deliveries.c.attempts)
                .where(deliveries.c.notification_id == notification_id)
                .order_by(deliveries.c.device_id)
            )
            return [tuple(row) for row in rows]  # type: ignore[misc]

    async def wait_for(self, notification_id: int, expected: list[tuple[int, str, int]]) -> None:
        for _ in range(200):
            if await self.statuses(notification_id) == expected:
                return
            await asyncio.sleep(0.025)
        assert await self.statuses(notification_id) == expected


@pytest.fixture
async def world(database_url: str, tmp_path: Path) -> AsyncIterator[World]:
    settings = Settings(database_url=database_url, data_dir=tmp_path, secret_key="s" * 40)
    rt = build_runtime(settings)
    await migrate(rt.db)
    account = (await rt.accounts.create("acme")).account
    other = (await rt.accounts.create("other")).account
    ids = [
        (await rt.devices.register(account.id, DeviceRegistration("channel"))).device.id
        for _ in range(3)
    ]
    await rt.devices.register(other.id, DeviceRegistration("channel"))
    await rt.start(accepting=True, working=True)
    yield World(rt.db, rt.hub, rt.devices, rt.pipeline, rt.notifications, account.id, ids)
    await rt.stop()


async def test_submit_fans_out_one_delivery_per_enabled_device_of_the_account(
    world: World,
) -> None:
    notification_id = await world.pipeline.submit(world.notification())
    await world.wait_for(notification_id, [(d, "queued", 0) for d in world.device_ids])
    for _ in range(200):  # the fan-out job, then the channel job, are done and gone
        async with world.db.read.connect() as conn:
            left = (await conn.execute(select(func.count()).select_from(jobs))).scalar()
        if left == 0:
            break
        await asyncio.sleep(0.025)
    async with world.db.read.connect() as conn:
        print(list(await conn.execute(select(jobs))))
    assert left == 0


def _queued(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The queues jobs are added to from now on."""
    queued: list[str] = []
    enqueue = EmbeddedQueue.enqueue

    async def spy(self: EmbeddedQueue, queue: str, *args: Any, **kwargs: Any) -> None:
        queued.append(queue)
        await enqueue(self, queue, *args, **kwargs)

    monkeypatch.setattr(EmbeddedQueue, "enqueue", spy)
    return queued


async def test_a_small_app_is_fanned_out_in_the_accepting_transaction(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    queued = _queued(monkeypatch)
    notification_id = await world.pipeline.submit(world.notification())
    # Stored with the notification: there when the submit is answered, without a fan-out job.
    assert await world.statuses(notification_id) == [(d, "queued", 0) for d in world.device_ids]
    assert "fanout" not in queued


async def test_a_larger_app_gets_a_fan_out_job_instead(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fan_out_module, "AT_ACCEPT_MAX_DEVICES", len(world.device_ids) - 1)
    queued = _queued(monkeypatch)
    notification_id = await world.pipeline.submit(world.notification())
    await world.wait_for(notification_id, [(d, "queued", 0) for d in world.device_ids])
    assert queued.count("fanout") == 1


async def test_with_several_processes_a_small_app_is_fanned_out_at_accept_too(
    database_url: str, tmp_path: Path, redis_url: str, redis_prefix: str
) -> None:
    """A server of a multi-process deployment (Redis, no workers of its own) makes the
    deliveries in the accepting transaction, and its outbox relay offers them to the
    connections right after the commit: no fan-out job and no channel job waits for a worker,
    and a device reaches it with no worker running anywhere."""
    settings = Settings(
        database_url=database_url,
        data_dir=tmp_path,
        secret_key="s" * 40,
        queue_url=redis_url,
        queue_prefix=redis_prefix,
    )
    rt = build_runtime(settings)
    await migrate(rt.db)
    account = (await rt.accounts.create("acme")).account
    ids = [
        (await rt.devices.register(account.id, DeviceRegistration("channel"))).device.id
        for _ in range(3)
    ]
    await rt.start(accepting=True, working=False)
    try:
        subscription = rt.hub.subscribe(ids[1])
        world = World(rt.db, rt.hub, rt.devices, rt.pipeline, rt.notifications, account.id, ids)
        notification_id = await rt.pipeline.submit(world.notification())
        assert await world.statuses(notification_id) == [(d, "queued", 0) for d in ids]
        async with rt.db.read.connect() as conn:
            assert (await conn.execute(select(func.count()).select_from(jobs))).scalar() == 0
        got = await asyncio.wait_for(subscription.get(), 5)  # over Redis pub/sub
        assert got.notification_id == notification_id
        for _ in range(200):  # the relay's transaction commits right after its publish
            async with rt.db.read.connect() as conn:
                waiting = (await conn.execute(select(func.count()).select_from(outbox))).scalar()
            if waiting == 0:
                break
            await asyncio.sleep(0.025)
        assert waiting == 0
        assert await rt.queue.depth(deliver_queue(CHANNEL)) == 0
    finally:
        await rt.stop()


async def test_notifications_handed_over_together_reach_a_device_in_order(world: World) -> None:
    subscription = world.hub.subscribe(world.device_ids[0])
    ids = await asyncio.gather(
        *(world.pipeline.submit(world.notification(str(i))) for i in range(5))
    )
    got = [await asyncio.wait_for(subscription.get(), 2) for _ in ids]
    assert [item.notification_id for item in got] == sorted(ids)


async def test_live_connections_get_the_message_after_commit(world: World) -> None:
    subscription = world.hub.subscribe(world.device_ids[0])
    notification_id = await world.pipeline.submit(world.notification("live"))
    item = await asyncio.wait_for(subscription.get(), 2)
    assert item.notification_id == notification_id
    assert orjson.loads(item.payload)["message"] == "live"


async def test_concurrent_submits_are_group_committed_and_all_stored(world: World) -> None:
    ids = await asyncio.gather(*(world.pipeline.submit(world.notification()) for _ in range(300)))
    assert len(set(ids)) == 300
    for _ in range(200):
        async with world.db.read.connect() as conn:
            count = (await conn.execute(select(func.count()).select_from(deliveries))).scalar()
        if count == 300 * len(world.device_ids):
            break
        await asyncio.sleep(0.025)
    assert count == 300 * len(world.device_ids)


async def test_a_stored_idempotency_key_is_a_duplicate_without_an_error_log(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    key = Idempotency(world.account_id, "order-17", "fingerprint")
    first = await world.pipeline.submit(replace(world.notification("first"), idempotency=key))
    with caplog.at_level(logging.INFO, logger="pushgate"):
        again = replace(world.notification("again"), idempotency=key)
        answers = await asyncio.gather(
            world.pipeline.submit(again),
            world.pipeline.submit(world.notification("other")),
            return_exceptions=True,
        )
    assert isinstance(answers[0], DuplicateRequest)
    assert isinstance(answers[1], int) and answers[1] > first
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
    await world.wait_for(answers[1], [(d, "queued", 0) for d in world.device_ids])


async def test_sent_then_delivered(world: World) -> None:
    notification_id = await world.pipeline.submit(world.notification())
    first, second, third = world.device_ids
    await world.wait_for(notification_id, [(d, "queued", 0) for d in world.device_ids])
    world.pipeline.record_sent(first, [notification_id])
    world.pipeline.record_sent(second, [notification_id])
    world.pipeline.record_sent(second, [notification_id])
    await world.wait_for(
        notification_id, [(first, "sent", 1), (second, "sent", 2), (third, "queued", 0)]
    )
    world.pipeline.record_delivered(first, [notification_id])
    await world.wait_for(
        notification_id, [(first, "delivered", 1), (second, "sent", 2), (third, "queued", 0)]
    )
    world.pipeline.record_sent(first, [notification_id])  # a late "sent" never goes back
    world.pipeline.record_sent(third, [notification_id])
    world.pipeline.record_delivered(third, [notification_id])  # same cycle: coalesced
    await world.wait_for(
        notification_id, [(first, "delivered", 1), (second, "sent", 2), (third, "delivered", 1)]
    )


async def test_a_flush_of_many_status_changes_records_each(world: World) -> None:
    """More status changes than one statement carries on SQLite (256 rows): every one is
    recorded, sent and delivered alike."""
    ids = await asyncio.gather(*(world.pipeline.submit(world.notification()) for _ in range(150)))
    first, second, third = world.device_ids
    for notification_id in ids:
        await world.wait_for(notification_id, [(d, "queued", 0) for d in world.device_ids])
    world.pipeline.record_sent(first, ids)
    world.pipeline.record_sent(second, ids)
    world.pipeline.record_delivered(second, ids)
    world.pipeline.record_delivered(third, ids)
    for notification_id in ids:
        await world.wait_for(
            notification_id, [(first, "sent", 1), (second, "delivered", 1), (third, "delivered", 0)]
        )


async def test_undelivered_deliveries_expire(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pipeline_module, "SWEEP_INTERVAL_SECONDS", 0.1)
    notification_id = await world.pipeline.submit(world.notification(ttl=1))
    first, second, third = world.device_ids
    await world.wait_for(notification_id, [(d, "queued", 0) for d in world.device_ids])
    world.pipeline.record_delivered(first, [notification_id])
    await asyncio.sleep(1.3)
    world.pipeline.record_seen(first)  # wakes the writer for a sweep
    await world.wait_for(
        notification_id, [(first, "delivered", 0), (second, "expired", 0), (third, "expired", 0)]
    )
    assert [item async for item in world.queries.backlog(second, None)] == []


async def test_backlog_without_since_is_what_is_unacknowledged(world: World) -> None:
    device = world.device_ids[0]
    ids = [await world.pipeline.submit(world.notification(str(i))) for i in range(4)]
    await world.wait_for(ids[3], [(d, "queued", 0) for d in world.device_ids])
    world.pipeline.record_delivered(device, ids[:2])
    await world.wait_for(
        ids[1], [(device, "delivered", 0), *[(d, "queued", 0) for d in world.device_ids[1:]]]
    )
    assert [i.notification_id async for i in world.queries.backlog(device, None)] == ids[2:]
    since_first = [i.notification_id async for i in world.queries.backlog(device, ids[0])]
    assert since_first == ids[1:]
    limited = [i.notification_id async for i in world.queries.backlog(device, 0, limit=2)]
    assert limited == ids[:2]


async def test_backlog_pages_through_many(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    from pushgate.services import notifications as notifications_module

    monkeypatch.setattr(notifications_module, "BACKLOG_PAGE", 7)
    ids = await asyncio.gather(*(world.pipeline.submit(world.notification()) for _ in range(30)))
    await world.wait_for(max(ids), [(d, "queued", 0) for d in world.device_ids])
    got = [i.notification_id async for i in world.queries.backlog(world.device_ids[0], None)]
    assert got == sorted(ids)


def _count_selects(world: World) -> list[str]:
    """The SELECT statements about devices and deliveries run on the read engine from now on
    (the background workers' job polls, and the pipeline's look-up of its last expiry sweep
    when it starts, left out)."""
    seen: list[str] = []
    background = ("FROM jobs", "FROM maintenance_marks")

    def before(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT") and not any(
            table in statement for table in background
        ):
            seen.append(statement)

    event.listen(world.db.read.sync_engine, "before_cursor_execute", before)
    return seen


async def test_backlog_page_is_one_statement(world: World) -> None:
    seen = _count_selects(world)
    assert [item async for item in world.queries.backlog(world.device_ids[0], None)] == []
    # SQLite: one raw statement on the reader's thread, none through SQLAlchemy
    assert len(seen) == (0 if world.db.is_sqlite else 1)


async def test_backlog_is_localized_to_the_device_language_read_with_the_page(
    world: World,
) -> None:
    german = (
        await world.devices.register(world.account_id, DeviceRegistration("channel", language="de"))
    ).device.id
    translations = Translations(
        "en", (Translation("en", "Hi", "hello"), Translation("de", "Hallo", "guten Tag"))
    )
    new = replace(world.notification(), translations_json=translations.to_json())
    notification_id = await world.pipeline.submit(new)
    await world.wait_for(
        notification_id, [(d, "queued", 0) for d in sorted([*world.device_ids, german])]
    )
    seen = _count_selects(world)
    got = [item async for item in world.queries.backlog(german, None)]
    assert [(c.title, c.message) for c in got] == [("Hallo", "guten Tag")]
    assert len(seen) == (0 if world.db.is_sqlite else 1)  # the language is in the page
    english = [item async for item in world.queries.backlog(world.device_ids[0], None)]
    assert [(c.title, c.message) for c in english] == [("Hi", "hello")]


async def test_stop_finishes_pending_and_then_refuses(world: World) -> None:
    pending = [asyncio.create_task(world.pipeline.submit(world.notification())) for _ in range(20)]
    await asyncio.sleep(0)
    await world.pipeline.stop()
    assert len({await task for task in pending}) == 20
    with pytest.raises(PipelineUnavailable):
        await world.pipeline.submit(world.notification())
    async with world.db.read.connect() as conn:
        assert (await conn.execute(select(func.count()).select_from(notifications))).scalar() == 20


async def test_a_starting_writer_sweeps_from_where_the_last_sweep_got_to(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def swept() -> int | None:
        async with world.db.read.connect() as conn:
            return (
                await conn.execute(
                    select(maintenance_marks.c.value_ms).where(
                        maintenance_marks.c.name == pipeline_module.SWEPT_MARK
                    )
                )
            ).scalar()

    for _ in range(200):  # the running writer's first sweep keeps its time
        if await swept():
            break
        await asyncio.sleep(0.025)
    kept = await swept()
    assert kept is not None and kept > 0
    windows: list[tuple[int, int]] = []
    expire = DeliveryWrites.expire_statement

    def spy(self: DeliveryWrites, now: int, after: int) -> Any:
        windows.append((now, after))
        return expire(self, now, after)

    monkeypatch.setattr(DeliveryWrites, "expire_statement", spy)
    # A second writer (as after a restart) looks back from there, not over the whole history.
    later = DeliveryPipeline(world.db, EmbeddedQueue(world.db), Metrics())
    later.start()
    try:
        for _ in range(200):
            if windows:
                break
            await asyncio.sleep(0.025)
    finally:
        await later.stop()
    now, after = windows[0]
    assert after >= kept - pipeline_module.SWEEP_OVERLAP_MS
    assert after > now - 10 * pipeline_module.SWEEP_OVERLAP_MS
    assert (await swept() or 0) >= now
