"""A large app's fan-out in chunks of devices, on both databases: each step makes one chunk's
deliveries and rewrites the job to start after it, every device gets one delivery, the
notifications queued after it wait for its last chunk, and its progress says "not fanned out"
until then. Chunk sizes are shrunk to a few devices."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import func, select

from pushgate.channel.broadcast import LocalBroadcast
from pushgate.channel.port import ChannelOut
from pushgate.config import Settings
from pushgate.domain.audience import Audience
from pushgate.runtime import Runtime, build_runtime
from pushgate.services import fan_out as fan_out_module
from pushgate.services.apps import AppChanges
from pushgate.services.delivery_jobs import FANOUT_QUEUE, FanoutPart
from pushgate.services.devices import DeviceRegistration
from pushgate.services.fan_out import FanOut
from pushgate.services.pipeline import NewNotification
from pushgate.services.send_progress import send_progress
from pushgate.storage.migrate import migrate
from pushgate.storage.models import deliveries, jobs


@dataclass
class Large:
    rt: Runtime
    fan_out: FanOut
    account_id: int
    app_id: int
    small_app_id: int
    app_devices: list[int]
    personal: list[int]

    def notification(self, app_id: int, message: str) -> NewNotification:
        return NewNotification(
            account_id=self.account_id,
            app_id=app_id,
            event="e",
            title="t",
            message=message,
            data_json=orjson.dumps({"m": message}).decode(),
            ttl_seconds=600,
        )

    async def delivered_to(self, notification_id: int) -> list[int]:
        async with self.rt.db.read.connect() as conn:
            rows = await conn.execute(
                select(deliveries.c.device_id)
                .where(deliveries.c.notification_id == notification_id)
                .order_by(deliveries.c.device_id)
            )
            return [int(row[0]) for row in rows]

    async def statuses(self, notification_id: int) -> dict[str, int]:
        async with self.rt.db.read.connect() as conn:
            rows = await conn.execute(
                select(deliveries.c.status, func.count())
                .where(deliveries.c.notification_id == notification_id)
                .group_by(deliveries.c.status)
            )
            return {str(status): int(count) for status, count in rows}

    async def fanout_jobs(self) -> list[FanoutPart]:
        async with self.rt.db.read.connect() as conn:
            rows = await conn.execute(
                select(jobs.c.payload).where(jobs.c.queue == FANOUT_QUEUE).order_by(jobs.c.id)
            )
            return [FanoutPart.decode(bytes(row[0])) for row in rows]


@pytest.fixture
async def large(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Large]:
    # Apps of more than 4 devices go in chunks of 4; those of more than 3 get a fan-out job.
    monkeypatch.setattr(fan_out_module, "AT_ACCEPT_MAX_DEVICES", 3)
    monkeypatch.setattr(fan_out_module, "CHUNK", 4)
    settings = Settings(database_url=database_url, data_dir=tmp_path, secret_key="s" * 40)
    rt = build_runtime(settings)
    await migrate(rt.db)
    account = (await rt.accounts.create("acme")).account
    app = (await rt.apps.create(account.id, "big")).app
    small = (await rt.apps.create(account.id, "small")).app
    other = (await rt.accounts.create("other")).account
    other_app = (await rt.apps.create(other.id, "theirs")).app

    async def device(app_key: str | None, account_id: int = account.id) -> int:
        registration = DeviceRegistration("channel", app_key=app_key)
        return (await rt.devices.register(account_id, registration)).device.id

    app_devices: list[int] = []
    personal: list[int] = []
    for i in range(11):  # personal devices between the app's, by id
        app_devices.append(await device(app.app_key))
        if i in (2, 7):
            personal.append(await device(None))
        if i == 5:
            await device(other_app.app_key, other.id)
    await device(small.app_key)
    # The pipeline only stores (no workers); the test steps the fan-out itself.
    await rt.start(accepting=True, working=False)
    fan_out = FanOut(rt.db, rt.jobs, rt.queue, ChannelOut(LocalBroadcast(rt.hub)), direct=True)
    yield Large(rt, fan_out, account.id, app.id, small.id, app_devices, personal)
    await rt.stop()


async def test_a_large_app_is_fanned_out_in_chunks_each_device_once(large: Large) -> None:
    every = sorted(large.app_devices + large.personal)
    notification_id = await large.rt.pipeline.submit(large.notification(large.app_id, "big"))
    assert await large.delivered_to(notification_id) == []
    subscription = large.rt.hub.subscribe(every[-1])

    assert await large.fan_out.step() == 1
    assert await large.delivered_to(notification_id) == every[:4]
    assert await large.fanout_jobs() == [FanoutPart(notification_id, every[3])]
    assert await large.fan_out.step() == 1
    assert await large.delivered_to(notification_id) == every[:8]
    assert await large.fanout_jobs() == [FanoutPart(notification_id, every[7])]
    assert await large.fan_out.step() == 1
    assert await large.fanout_jobs() == [FanoutPart(notification_id, every[11])]
    # The last chunk holds what is left (1 device), and the job is gone.
    assert await large.fan_out.step() == 1
    assert await large.delivered_to(notification_id) == every
    assert await large.fanout_jobs() == []
    assert await large.fan_out.step() == 0
    # The device of the last chunk got it live, once.
    assert [item.notification_id for item in subscription.drain(10)] == [notification_id]


async def test_notifications_queued_after_a_chunked_one_wait_for_its_last_chunk(
    large: Large,
) -> None:
    first = await large.rt.pipeline.submit(large.notification(large.app_id, "first"))
    # Queued as jobs too (the at-accept fan-out is for apps of at most 3 devices).
    large.rt.pipeline._fan_out = None  # noqa: SLF001 - every notification gets a job here
    second = await large.rt.pipeline.submit(large.notification(large.small_app_id, "second"))
    third = await large.rt.pipeline.submit(large.notification(large.app_id, "third"))

    assert await large.fan_out.step() == 1  # first's first chunk alone
    assert await large.delivered_to(second) == []
    progress = await send_progress(large.rt.db, large.account_id, first)
    assert not progress.fanned_out
    for _ in range(2):
        assert await large.fan_out.step() == 1
    assert not (await send_progress(large.rt.db, large.account_id, first)).fanned_out
    assert await large.fan_out.step() == 1  # first's last chunk
    assert (await send_progress(large.rt.db, large.account_id, first)).fanned_out
    assert len(await large.delivered_to(first)) == 13
    # second (a small app: its device and the 2 personal ones) in one step, which stops
    # before third (chunked).
    assert await large.fan_out.step() == 1
    assert len(await large.delivered_to(second)) == 3
    assert await large.delivered_to(third) == []
    assert [part.notification_id for part in await large.fanout_jobs()] == [third]
    while await large.fan_out.step():
        pass
    assert len(await large.delivered_to(third)) == 13


async def test_a_chunk_step_that_fails_leaves_the_job_where_it_was(
    large: Large, monkeypatch: pytest.MonkeyPatch
) -> None:
    notification_id = await large.rt.pipeline.submit(large.notification(large.app_id, "big"))
    assert await large.fan_out.step() == 1
    before = await large.fanout_jobs()
    localized = large.fan_out._localized  # noqa: SLF001
    failing = True

    async def broken(*args: Any) -> Any:
        if failing:  # inside the step's transaction, after its deliveries are inserted
            raise RuntimeError("connection lost")
        return await localized(*args)

    monkeypatch.setattr(large.fan_out, "_localized", broken)
    with pytest.raises(RuntimeError):
        await large.fan_out.step()
    assert await large.fanout_jobs() == before
    assert len(await large.delivered_to(notification_id)) == 4
    failing = False
    while await large.fan_out.step():
        pass
    every = sorted(large.app_devices + large.personal)
    assert await large.delivered_to(notification_id) == every


async def test_an_app_wide_audience_goes_in_chunks_and_a_frequency_cap_holds_in_each(
    large: Large,
) -> None:
    apps = await large.rt.apps.list(large.account_id)
    app_key = next(a.app.app_key for a in apps if a.app.id == large.app_id)
    await large.rt.apps.update(
        large.account_id, app_key, AppChanges(set_frequency_cap=True, frequency_cap=1)
    )
    wide = replace(large.notification(large.app_id, "wide"), audience_json=Audience().to_json())
    first = await large.rt.pipeline.submit(wide)
    second = await large.rt.pipeline.submit(wide)
    subscription = large.rt.hub.subscribe(large.app_devices[-1])
    steps = 0
    while await large.fan_out.step():
        steps += 1
    assert steps == 6  # 11 devices of the app alone (no personal ones): 4 + 4 + 3, twice
    assert await large.delivered_to(first) == large.app_devices
    assert await large.statuses(second) == {"capped": len(large.app_devices)}
    assert [item.notification_id for item in subscription.drain(10)] == [first]
