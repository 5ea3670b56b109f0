"""Push deliveries through the whole flow (accept -> fan-out -> queue -> transport -> outcome)
on both databases with the embedded queue, using a scripted transport: outcomes, retries with
backoff and Retry-After, the attempt limit, expiry, token invalidation, duplicate jobs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest
from sqlalchemy import select

from pushgate.config import Settings
from pushgate.domain.outcomes import (
    Delivered,
    Outcome,
    PermanentFailure,
    RetryLater,
    TokenInvalid,
)
from pushgate.runtime import Runtime, build_runtime
from pushgate.services.delivery_jobs import PushJob, deliver_queue
from pushgate.services.devices import DeviceRegistration
from pushgate.services.pipeline import NewNotification
from pushgate.storage.migrate import migrate
from pushgate.storage.models import deliveries
from pushgate.testing.transports import ScriptedTransport
from pushgate.transports.base import Content, Target

TOKEN = "ab" * 32


@dataclass
class World:
    rt: Runtime
    ios: ScriptedTransport
    account_id: int
    device_ids: list[int]
    app_id: int = 0
    app_key: str = ""

    async def send(self, ttl: int = 60) -> int:
        return await self.rt.pipeline.submit(
            NewNotification(
                account_id=self.account_id,
                app_id=self.app_id,
                event=None,
                title="t",
                message="hello",
                data_json=orjson.dumps({}).decode(),
                ttl_seconds=ttl,
            )
        )

    async def rows(self, notification_id: int) -> list[tuple[int, str, int, str | None]]:
        async with self.rt.db.read.connect() as conn:
            result = await conn.execute(
                select(
                    deliveries.c.device_id,
                    deliveries.c.status,
                    deliveries.c.attempts,
                    deliveries.c.reason,
                )
                .where(deliveries.c.notification_id == notification_id)
                .order_by(deliveries.c.device_id)
            )
            return [(int(d), str(s), int(a), r) for d, s, a, r in result]

    async def settle(
        self, notification_id: int, done: Callable[[list[tuple[int, str, int, str | None]]], bool]
    ) -> list[tuple[int, str, int, str | None]]:
        for _ in range(400):
            rows = await self.rows(notification_id)
            if rows and done(rows):
                return rows
            await asyncio.sleep(0.025)
        return await self.rows(notification_id)


def all_final(rows: list[tuple[int, str, int, str | None]]) -> bool:
    return all(status in ("sent", "failed", "expired") for _, status, _, _ in rows)


def make_world(
    script: Callable[[Content, Target, int], Outcome], **settings: object
) -> Callable[[str, Path], AsyncIterator[World]]:
    async def build(database_url: str, tmp_path: Path) -> AsyncIterator[World]:
        config = Settings(
            database_url=database_url,
            data_dir=tmp_path,
            secret_key="s" * 40,
            retry_base_seconds=0.05,
            retry_max_seconds=0.4,
            **settings,  # type: ignore[arg-type]
        )
        ios = ScriptedTransport("ios", script)
        rt = build_runtime(config, transports={"ios": ios})
        await migrate(rt.db)
        account = (await rt.accounts.create("acme")).account
        app = (await rt.apps.create(account.id, "app")).app
        ids = []
        for n in range(3):
            token = f"{n:02x}" * 32
            registered = await rt.devices.register(
                account.id, DeviceRegistration("ios", app_key=app.app_key, token=token)
            )
            ids.append(registered.device.id)
        await rt.start(accepting=True, working=True)
        try:
            yield World(rt, ios, account.id, ids, app.id, app.app_key)
        finally:
            await rt.stop()

    return build


@pytest.fixture
async def delivered(database_url: str, tmp_path: Path) -> AsyncIterator[World]:
    async for world in make_world(lambda c, t, a: Delivered())(database_url, tmp_path):
        yield world


async def test_delivered_deliveries_are_sent_once_with_one_attempt(delivered: World) -> None:
    notification_id = await delivered.send()
    rows = await delivered.settle(notification_id, all_final)
    assert rows == [(d, "sent", 1, None) for d in delivered.device_ids]
    assert sorted(s.device_id for s in delivered.ios.sent) == delivered.device_ids
    assert {s.address for s in delivered.ios.sent} == {f"{n:02x}" * 32 for n in range(3)}


async def test_a_job_run_twice_never_sends_twice(delivered: World) -> None:
    notification_id = await delivered.send()
    await delivered.settle(notification_id, all_final)
    # The same job again, as a redelivered or duplicated copy would be.
    job = PushJob(notification_id, delivered.device_ids, 0)
    await delivered.rt.queue.enqueue(deliver_queue("ios"), [job.encode()] * 2)
    for _ in range(100):
        if await delivered.rt.queue.depth(deliver_queue("ios")) == 0:
            break
        await asyncio.sleep(0.025)
    assert await delivered.rt.queue.depth(deliver_queue("ios")) == 0
    assert len(delivered.ios.sent) == 3
    assert [attempts for _, _, attempts, _ in await delivered.rows(notification_id)] == [1, 1, 1]


@pytest.fixture
async def flaky(database_url: str, tmp_path: Path) -> AsyncIterator[World]:
    def script(content: Content, target: Target, attempt: int) -> Outcome:
        if target.address.startswith("00"):  # fails twice, then goes through
            return RetryLater("503 Service Unavailable") if attempt <= 2 else Delivered()
        if target.address.startswith("01"):  # asks for a 0.5 s pause once
            return (
                RetryLater("429 TooManyRequests", after_seconds=0.5)
                if attempt == 1
                else (Delivered())
            )
        return RetryLater("500 InternalServerError")  # never recovers

    async for world in make_world(script, max_attempts=4)(database_url, tmp_path):
        yield world


async def test_retries_back_off_honour_retry_after_and_stop_at_the_limit(flaky: World) -> None:
    notification_id = await flaky.send()
    rows = await flaky.settle(notification_id, all_final)
    first, second, third = flaky.device_ids
    assert rows[0] == (first, "sent", 3, "503 Service Unavailable") or rows[0][:3] == (
        first,
        "sent",
        3,
    )
    assert rows[1][:3] == (second, "sent", 2)
    assert rows[2][:3] == (third, "failed", 4)
    assert rows[2][3] == "gave up after 4 attempts: 500 InternalServerError"
    sends = flaky.ios.sends_to(notification_id, second)
    assert sends[1].at - sends[0].at >= 0.5  # Retry-After honoured
    gaps = [
        b.at - a.at
        for a, b in zip(
            flaky.ios.sends_to(notification_id, third)[:-1],
            flaky.ios.sends_to(notification_id, third)[1:],
            strict=True,
        )
    ]
    # Backoff: each wait at least half its cap (0.05 s doubling, full jitter on the upper half).
    assert gaps[0] >= 0.025 and gaps[1] >= 0.05 and gaps[2] >= 0.1, gaps


@pytest.fixture
async def answered_late(database_url: str, tmp_path: Path) -> AsyncIterator[World]:
    def script(content: Content, target: Target, attempt: int) -> Outcome:
        if target.address.startswith("00"):
            return RetryLater("timed out")  # it arrived all the same
        if target.address.startswith("01"):
            return TokenInvalid("410 Unregistered")
        return Delivered()

    async for world in make_world(script)(database_url, tmp_path):
        yield world


async def test_an_open_reported_before_the_providers_answer_is_kept(answered_late: World) -> None:
    """The app's backend reports the notification opened on every device while the
    provider's answers are on their way: the answers (sent, failed, retry) do not overwrite
    the reports, and the timed-out one is not sent again."""
    world = answered_late
    scripted = world.ios.send

    async def opened_then_answered(content: Content, targets: Sequence[Target]) -> list[Outcome]:
        ids = [target.device_id for target in targets]
        assert await world.rt.stats.opened(world.account_id, content.notification_id, ids) == 3
        return await scripted(content, targets)

    world.ios.send = opened_then_answered  # type: ignore[method-assign]
    notification_id = await world.send()
    await world.settle(notification_id, lambda rows: len(world.ios.sent) == 3)
    await asyncio.sleep(0.5)  # a retry would have come by now (retry_base_seconds=0.05)
    rows = await world.rows(notification_id)
    assert [(status, attempts) for _, status, attempts, _ in rows] == [("opened", 1)] * 3
    assert len(world.ios.sent) == 3


@pytest.fixture
async def slow_provider(database_url: str, tmp_path: Path) -> AsyncIterator[World]:
    script = lambda c, t, a: RetryLater("503", after_seconds=5.0)  # noqa: E731
    async for world in make_world(script)(database_url, tmp_path):
        yield world


async def test_a_retry_that_would_pass_the_ttl_expires_instead(slow_provider: World) -> None:
    notification_id = await slow_provider.send(ttl=2)
    rows = await slow_provider.settle(notification_id, all_final)
    assert [(status, attempts) for _, status, attempts, _ in rows] == [("expired", 1)] * 3
    assert all(reason and reason.startswith("expired before") for *_, reason in rows)
    assert len(slow_provider.ios.sent) == 3  # never sent after the TTL


@pytest.fixture
async def dead_tokens(database_url: str, tmp_path: Path) -> AsyncIterator[World]:
    def script(content: Content, target: Target, attempt: int) -> Outcome:
        if target.address.startswith("00"):
            return TokenInvalid("410 Unregistered")
        if target.address.startswith("01"):
            return PermanentFailure("400 PayloadTooLarge")
        return Delivered()

    async for world in make_world(script)(database_url, tmp_path):
        yield world


async def test_token_invalid_disables_the_device_and_later_sends_skip_it(
    dead_tokens: World,
) -> None:
    first_id = await dead_tokens.send()
    rows = await dead_tokens.settle(first_id, all_final)
    dead, too_big, fine = dead_tokens.device_ids
    assert rows == [
        (dead, "failed", 1, "410 Unregistered"),
        (too_big, "failed", 1, "400 PayloadTooLarge"),
        (fine, "sent", 1, None),
    ]
    devices = {d.id: d for d in await dead_tokens.rt.devices.list(dead_tokens.account_id)}
    assert not devices[dead].enabled and devices[dead].disabled_reason == "410 Unregistered"
    assert devices[too_big].enabled  # a permanent failure of one notification is not the device's
    second_id = await dead_tokens.send()
    rows = await dead_tokens.settle(second_id, lambda r: len(r) == 2 and all_final(r))
    assert [device for device, *_ in rows] == [too_big, fine]
    assert not dead_tokens.ios.sends_to(second_id, dead)


async def test_an_expired_notification_is_never_sent(delivered: World) -> None:
    # Stop the workers, accept with a 1 s TTL, let it pass, start them again.
    await delivered.rt.workers.stop()
    notification_id = await delivered.send(ttl=1)
    await asyncio.sleep(1.2)
    delivered.rt.workers.start()
    rows = await delivered.settle(notification_id, lambda r: len(r) == 3 and all_final(r))
    assert [status for _, status, _, _ in rows] == ["expired"] * 3
    assert delivered.ios.sent == []


async def test_a_job_without_queued_deliveries_sends_nothing(delivered: World) -> None:
    """A stale copy of a job (its deliveries already sent) or a job for deliveries that do not
    exist is done at once: jobs are published only after their deliveries commit."""
    notification_id = await delivered.send()
    rows = await delivered.settle(notification_id, all_final)
    device = (
        await delivered.rt.devices.register(
            delivered.account_id,
            DeviceRegistration("ios", app_key=delivered.app_key, token="cd" * 32),
        )
    ).device
    sent_before = len(delivered.ios.sent)
    stale = [PushJob(notification_id, [rows[0][0]], 0), PushJob(notification_id, [device.id], 0)]
    await delivered.rt.queue.enqueue(deliver_queue("ios"), [job.encode() for job in stale])
    delivered.rt.queue.wake(deliver_queue("ios"))
    deadline = asyncio.get_running_loop().time() + 5
    while await delivered.rt.queue.depth(deliver_queue("ios")):
        assert asyncio.get_running_loop().time() < deadline, "the jobs were never taken"
        await asyncio.sleep(0.05)
    assert len(delivered.ios.sent) == sent_before
    assert delivered.ios.sends_to(notification_id, device.id) == []
