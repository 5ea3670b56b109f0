"""The scheduler on both databases, with its clock set by the test: a local-time sending runs
once per offset of its audience at that offset's moment (devices without a known timezone at
the fallback offset), each part once; a cancelled sending sends nothing; two schedulers that
race make each part once."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import func, insert, select, update

from pushgate.crypto import SecretBox
from pushgate.domain.audience import Audience
from pushgate.domain.errors import Forbidden, InvalidInput
from pushgate.domain.schedules import AppSelection, moment_ms, wall_ms
from pushgate.domain.translations import Translation, Translations
from pushgate.queue.embedded import EmbeddedQueue
from pushgate.services.accounts import AccountService
from pushgate.services.apps import App, AppService
from pushgate.services.scheduler import Scheduler
from pushgate.services.sendings import NewSending, PushContent, SendingService
from pushgate.services.stats import StatsService
from pushgate.storage.database import Database
from pushgate.storage.models import (
    devices,
    jobs,
    notifications,
    pushes,
    subscriber_tags,
    subscribers,
)

BOX = SecretBox("test-secret-" * 4)
HOUR = 3_600_000
# 09:00 on a winter day: Berlin is at +01:00, New York at -05:00.
WALL = wall_ms(datetime(2027, 1, 15, 9, 0))
FALLBACK = 3 * 60


class Clock:
    def __init__(self) -> None:
        self.now = 0

    def __call__(self) -> int:
        return self.now


async def _app(db: Database) -> App:
    account = (await AccountService(db, BOX).create("acme")).account
    return (await AppService(db, BOX).create(account.id, "shop")).app


async def _devices(db: Database, app: App, zones: dict[str, str | None]) -> dict[str, int]:
    made = {}
    async with db.write.begin() as conn:
        for name, zone in zones.items():
            person = (
                await conn.execute(
                    insert(subscribers)
                    .values(account_id=app.account_id, app_id=app.id, created_ms=0)
                    .returning(subscribers.c.id)
                )
            ).scalar_one()
            made[name] = (
                await conn.execute(
                    insert(devices)
                    .values(
                        account_id=app.account_id,
                        app_id=app.id,
                        subscriber_id=person,
                        platform="channel",
                        token_hash=f"{app.id}-{name}",
                        enabled=True,
                        created_ms=0,
                        timezone=zone,
                    )
                    .returning(devices.c.id)
                )
            ).scalar_one()
    return made


async def _made(db: Database, sending_id: int) -> list[tuple[int, Audience]]:
    """(due_ms, audience) of the sending's notifications, in id order."""
    async with db.read.connect() as conn:
        rows = await conn.execute(
            select(notifications.c.due_ms, notifications.c.audience)
            .where(notifications.c.sending_id == sending_id)
            .order_by(notifications.c.id)
        )
        return [(int(due), Audience.from_json(audience)) for due, audience in rows]


async def _due_now(db: Database) -> None:
    """Make every queued sending job visible (the test's clock runs ahead of the real one)."""
    async with db.write.begin() as conn:
        await conn.execute(update(jobs).where(jobs.c.queue == "sending").values(visible_ms=0))


async def _state(service: SendingService, app: App, sending_id: int) -> Any:
    return (await service.get(app.account_id, sending_id)).state


async def test_a_local_time_sending_runs_once_per_offset_at_its_moment(db: Database) -> None:
    app = await _app(db)
    await _devices(
        db,
        app,
        {
            "tokyo": "Asia/Tokyo",
            "plus9": "+09:00",
            "berlin": "Europe/Berlin",
            "new-york": "America/New_York",
            "nowhere": None,
            "unknown": "Mars/Olympus",
        },
    )
    jobs_ = EmbeddedQueue(db)
    service = SendingService(db, jobs_, StatsService(db), 3600)
    clock = Clock()
    scheduler = Scheduler(db, jobs_, 3600, clock=clock)
    sending_id, _ = await service.create(
        app.account_id,
        NewSending(
            name="breakfast",
            wall_ms=WALL,
            offset_minutes=FALLBACK,
            local_time=True,
            apps=AppSelection(include=(app.id,)),
        ),
        [PushContent(message="Good morning")],
    )
    expected = [
        (9 * 60, ("+09:00", "Asia/Tokyo"), False),
        (FALLBACK, ("Mars/Olympus",), True),
        (60, ("Europe/Berlin",), False),
        (-5 * 60, ("America/New_York",), False),
    ]
    # Nobody is at +14:00, where the sending first looks: nothing yet, still waiting.
    clock.now = moment_ms(WALL, 14 * 60)
    await _due_now(db)
    assert await scheduler.step() == 1
    assert await _made(db, sending_id) == []
    assert await _state(service, app, sending_id) == "waiting"
    for index, (offset, zones, without) in enumerate(expected):
        clock.now = moment_ms(WALL, offset) - 1  # a moment early: nothing
        await _due_now(db)
        await scheduler.step()
        assert len(await _made(db, sending_id)) == index
        clock.now = moment_ms(WALL, offset)
        await _due_now(db)
        await scheduler.step()
        made = await _made(db, sending_id)
        assert len(made) == index + 1, made
        due, audience = made[-1]
        assert due == moment_ms(WALL, offset)
        assert (audience.timezones, audience.without_timezone) == (zones, without)
        await _due_now(db)  # running again at the same moment makes nothing new
        await scheduler.step()
        assert len(await _made(db, sending_id)) == index + 1
        state = await _state(service, app, sending_id)
        assert state == ("done" if index == len(expected) - 1 else "running")


async def test_summer_time_moves_an_offset(db: Database) -> None:
    app = await _app(db)
    await _devices(db, app, {"berlin": "Europe/Berlin"})
    jobs_ = EmbeddedQueue(db)
    service = SendingService(db, jobs_, StatsService(db), 3600)
    clock = Clock()
    scheduler = Scheduler(db, jobs_, 3600, clock=clock)
    summer = wall_ms(datetime(2027, 7, 15, 9, 0))
    sending_id, _ = await service.create(
        app.account_id,
        NewSending("summer", summer, 0, True, AppSelection(include=(app.id,))),
        [PushContent(message="Sun")],
    )
    clock.now = moment_ms(summer, 2 * 60)
    await _due_now(db)
    await scheduler.step()
    made = await _made(db, sending_id)
    assert [(due, a.timezones) for due, a in made] == [(clock.now, ("Europe/Berlin",))]


async def test_cancelled_and_empty_sendings_send_nothing(db: Database) -> None:
    app = await _app(db)
    await _devices(db, app, {"a": None})
    jobs_ = EmbeddedQueue(db)
    service = SendingService(db, jobs_, StatsService(db), 3600)
    clock = Clock()
    scheduler = Scheduler(db, jobs_, 3600, clock=clock)
    at = wall_ms(datetime(2027, 1, 15, 9, 0))
    selection = AppSelection(include=(app.id,))
    cancelled, _ = await service.create(
        app.account_id, NewSending("c", at, 0, False, selection), [PushContent(message="x")]
    )
    empty, _ = await service.create(app.account_id, NewSending("e", at, 0, False, selection))
    await service.cancel(app.account_id, cancelled)
    clock.now = at
    await _due_now(db)
    await scheduler.step()
    assert await _made(db, cancelled) == []
    assert await _made(db, empty) == []
    assert await _state(service, app, cancelled) == "cancelled"
    assert await _state(service, app, empty) == "done"


async def test_racing_schedulers_make_each_part_once(db: Database) -> None:
    app = await _app(db)
    await _devices(db, app, {"a": None})
    queue = EmbeddedQueue(db)
    service = SendingService(db, queue, StatsService(db), 3600)
    at = wall_ms(datetime(2027, 1, 15, 9, 0))
    ids = [
        (
            await service.create(
                app.account_id,
                NewSending(f"s{n}", at, 0, False, AppSelection(include=(app.id,))),
                [PushContent(message="x"), PushContent(message="y")],
            )
        )[0]
        for n in range(40)
    ]
    # A second copy of every job, as if a crash had left one behind.
    async with db.write.begin() as conn:
        await conn.execute(
            insert(jobs),
            [
                {
                    "queue": "sending",
                    "payload": str(i).encode(),
                    "visible_ms": 0,
                    "claims": 0,
                    "created_ms": 0,
                }
                for i in ids
            ],
        )
    await _due_now(db)
    clock = Clock()
    clock.now = at
    racers = [Scheduler(db, EmbeddedQueue(db), 3600, clock=clock) for _ in range(3)]
    for _ in range(4):
        await asyncio.gather(*(racer.step(limit=7) for racer in racers))
    for sending_id in ids:
        made = await _made(db, sending_id)
        assert len(made) == 2, (sending_id, made)
    async with db.read.connect() as conn:
        pushes_made = [
            row[0]
            for row in await conn.execute(
                select(notifications.c.push_id).where(notifications.c.sending_id.in_(ids))
            )
        ]
    assert len(pushes_made) == len(set(pushes_made)) == 80


async def test_only_the_audiences_offsets_run(db: Database) -> None:
    app = await _app(db)
    made = await _devices(db, app, {"tokyo": "Asia/Tokyo", "berlin": "Europe/Berlin"})
    async with db.write.begin() as conn:
        owner = (
            await conn.execute(select(devices.c.subscriber_id).where(devices.c.id == made["tokyo"]))
        ).scalar_one()
        await conn.execute(insert(subscriber_tags), {"subscriber_id": owner, "tag": "vip"})
    jobs_ = EmbeddedQueue(db)
    service = SendingService(db, jobs_, StatsService(db), 3600)
    clock = Clock()
    scheduler = Scheduler(db, jobs_, 3600, clock=clock)
    sending_id, _ = await service.create(
        app.account_id,
        NewSending(
            "vip", WALL, 0, True, AppSelection(include=(app.id,)), audience=Audience(tags=("vip",))
        ),
        [PushContent(message="x")],
    )
    for offset in (9 * 60, 60, 0):
        clock.now = moment_ms(WALL, offset)
        await _due_now(db)
        await scheduler.step()
    made_parts = await _made(db, sending_id)
    # Tokyo, then the fallback offset (devices without a timezone): Berlin has no VIP.
    assert [(due, a.timezones, a.tags) for due, a in made_parts] == [
        (moment_ms(WALL, 9 * 60), ("Asia/Tokyo",), ("vip",)),
        (moment_ms(WALL, 0), (), ("vip",)),
    ]
    assert await _state(service, app, sending_id) == "done"


async def test_a_sending_is_stored_with_its_pushes_and_names_only_the_accounts_apps(
    db: Database,
) -> None:
    app = await _app(db)
    stranger = (await AccountService(db, BOX).create("stranger")).account
    foreign = (await AppService(db, BOX).create(stranger.id, "theirs")).app
    service = SendingService(db, EmbeddedQueue(db), StatsService(db), 3600)
    at = wall_ms(datetime(2027, 1, 15, 9, 0))

    def sending(selection: AppSelection) -> NewSending:
        return NewSending("s", at, 0, False, selection)

    with pytest.raises(Forbidden, match=f"may not use app {foreign.id}: not an app of this"):
        await service.create(app.account_id, sending(AppSelection(include=(app.id, foreign.id))))
    with pytest.raises(InvalidInput, match="leave no app"):
        await service.create(app.account_id, sending(AppSelection(exclude=(app.id,))))
    translations = Translations(
        "en", (Translation("en", "Hi", "Hello"), Translation("de", "Hallo", "Guten Tag"))
    )
    sending_id, [push] = await service.create(
        app.account_id,
        sending(AppSelection(include=(app.id,))),
        [PushContent.of_translations(translations)],
    )
    assert push.sending_id == sending_id
    assert [t.translation.language for t in push.translations] == ["en", "de"]
    assert await service.get_push(app.account_id, push.id) == push
    async with db.read.connect() as conn:
        stored = (await conn.execute(select(pushes.c.sending_id, pushes.c.message))).all()
        queued = (await conn.execute(select(func.count()).select_from(jobs))).scalar()
    assert stored == [(sending_id, "Hello")]
    assert queued == 1  # the sending's job
    assert (await service.get(app.account_id, sending_id)).id == sending_id
