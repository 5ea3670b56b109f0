"""The targeting model's SQL selects exactly what its plain Python reading selects, for random
subscribers, devices and audiences, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, insert

from pushgate.domain.audience import (
    Audience,
    Condition,
    DeviceFacts,
    SubscriberFacts,
    all_of_user,
    one_user,
    select,
)
from pushgate.storage.audience_sql import Params, count_devices, select_devices
from pushgate.storage.database import Database, open_database
from pushgate.storage.delivery_writes import DeliveryWrites
from pushgate.storage.migrate import migrate
from pushgate.storage.models import (
    accounts,
    apps,
    devices,
    notifications,
    subscriber_attributes,
    subscriber_events,
    subscriber_tags,
    subscribers,
)

ACCOUNT, OTHER_ACCOUNT = 1, 2
APP, OTHER_APP, FOREIGN_APP = 1, 2, 3
PLATFORMS = ["ios", "android", "huawei", "web", "channel"]
COUNTRIES = ["NL", "DE", "US"]
LANGUAGES = ["en", "en-US", "en-GB", "nl", "de-AT"]
FILTER_LANGUAGES = ["en", "en-US", "nl", "de", "fr"]
TAGS = ["a", "b", "c"]
TIMEZONES = ["Europe/Amsterdam", "Asia/Tokyo", "+03:00"]
EVENTS = ["install", "reg", "buy"]

ATTRIBUTE_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "c_plan": st.sampled_from(["free", "pro", "team"]),
    "c_age": st.one_of(st.integers(10, 60), st.sampled_from([17.5, 42.25])),
    "d_wp_browser": st.sampled_from(["Edg", "Chrome"]),
    "c_vip": st.booleans(),
}


class Runner:
    def __init__(self, database_url: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.db: Database = open_database(database_url)
        self.run(migrate(self.db))
        self.postgres = self.db.write.dialect.name == "postgresql"

    def run(self, work: Any) -> Any:
        return self.loop.run_until_complete(work)

    def close(self) -> None:
        self.run(self.db.dispose())
        self.loop.close()


@pytest.fixture
def runner(database_url: str) -> Iterator[Runner]:
    runner = Runner(database_url)
    runner.run(_base(runner.db))
    yield runner
    runner.close()


async def _base(db: Database) -> None:
    async with db.write.begin() as conn:
        for account in (ACCOUNT, OTHER_ACCOUNT):
            await conn.execute(
                insert(accounts),
                {
                    "id": account,
                    "name": f"a{account}",
                    "user_token_hash": f"h{account}",
                    "user_token_enc": "x",
                    "created_ms": 0,
                },
            )
        for app, account in ((APP, ACCOUNT), (OTHER_APP, ACCOUNT), (FOREIGN_APP, OTHER_ACCOUNT)):
            await conn.execute(
                insert(apps),
                {
                    "id": app,
                    "account_id": account,
                    "title": f"app{app}",
                    "app_key": f"k{app}",
                    "secret_hash": "x",
                    "secret_enc": "x",
                    "created_ms": 0,
                },
            )


@dataclass
class World:
    subscribers: list[SubscriberFacts]
    devices: list[DeviceFacts]


@st.composite
def worlds(draw: st.DrawFn) -> World:
    people: list[SubscriberFacts] = []
    for number in range(draw(st.integers(1, 12))):
        attributes: dict[str, list[Any]] = {}
        for name, values in ATTRIBUTE_VALUES.items():
            if draw(st.booleans()):
                attributes[name] = draw(st.lists(values, min_size=1, max_size=3, unique=True))
        people.append(
            SubscriberFacts(
                id=number + 1,
                country=draw(st.sampled_from([*COUNTRIES, None])),
                language=draw(st.sampled_from([*LANGUAGES, None])),
                timezone=draw(st.sampled_from([*TIMEZONES, None])),
                optin_push=draw(st.booleans()),
                last_active_ms=draw(st.one_of(st.none(), st.integers(0, 100))),
                created_ms=draw(st.integers(0, 100)),
                tags=frozenset(draw(st.sets(st.sampled_from(TAGS)))),
                events=frozenset(draw(st.sets(st.sampled_from(EVENTS)))),
                attributes=attributes,
            )
        )
    phones: list[DeviceFacts] = []
    for number in range(draw(st.integers(0, 30))):
        owner = draw(st.sampled_from(people))
        platform = draw(st.sampled_from(PLATFORMS))
        account = draw(st.sampled_from([ACCOUNT, ACCOUNT, ACCOUNT, OTHER_ACCOUNT]))
        if account == OTHER_ACCOUNT:
            app: int | None = FOREIGN_APP
        elif platform == "channel":
            app = draw(st.sampled_from([APP, OTHER_APP, None]))
        else:
            app = draw(st.sampled_from([APP, APP, OTHER_APP]))
        phones.append(
            DeviceFacts(
                id=number + 1,
                subscriber=owner,
                app_id=app,
                account_id=account,
                platform=platform,
                enabled=draw(st.booleans()) or draw(st.booleans()),
                country=draw(st.sampled_from([*COUNTRIES, None, None])),
                language=draw(st.sampled_from([*LANGUAGES, None, None])),
                timezone=draw(st.sampled_from([*TIMEZONES, None, None])),
                last_active_ms=draw(st.one_of(st.none(), st.integers(0, 5))),
            )
        )
    return World(people, phones)


@st.composite
def conditions(draw: st.DrawFn) -> Condition:
    name = draw(st.sampled_from([*ATTRIBUTE_VALUES, "c_unknown"]))
    values = ATTRIBUTE_VALUES.get(name, st.sampled_from(["x"]))
    op = draw(st.sampled_from(["in", "not_in", "exists", "missing", "gt", "gte", "lt", "lte"]))
    if op in ("in", "not_in"):
        return Condition(name, op, tuple(draw(st.lists(values, min_size=1, max_size=3))))
    if op in ("exists", "missing"):
        return Condition(name, op)
    return Condition(name, op, (draw(st.one_of(st.integers(0, 70), st.just(17.5))),))


def _pair(draw: st.DrawFn, values: list[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    include = draw(st.lists(st.sampled_from(values), max_size=2, unique=True))
    rest = [v for v in values if v not in include]
    exclude = draw(st.lists(st.sampled_from(rest), max_size=2, unique=True)) if rest else []
    return tuple(include), tuple(exclude)


@st.composite
def audiences(draw: st.DrawFn) -> Audience:
    platforms, exclude_platforms = _pair(draw, PLATFORMS)
    countries, exclude_countries = _pair(draw, COUNTRIES)
    languages, exclude_languages = _pair(draw, FILTER_LANGUAGES)
    tags, exclude_tags = _pair(draw, TAGS)
    events, exclude_events = _pair(draw, EVENTS)
    return Audience(
        platforms=platforms if draw(st.booleans()) else (),
        exclude_platforms=exclude_platforms if draw(st.booleans()) else (),
        countries=countries if draw(st.booleans()) else (),
        exclude_countries=exclude_countries if draw(st.booleans()) else (),
        languages=languages if draw(st.booleans()) else (),
        exclude_languages=exclude_languages if draw(st.booleans()) else (),
        tags=tags if draw(st.booleans()) else (),
        exclude_tags=exclude_tags if draw(st.booleans()) else (),
        events=events if draw(st.booleans()) else (),
        exclude_events=exclude_events if draw(st.booleans()) else (),
        attributes=tuple(draw(st.lists(conditions(), max_size=2))),
        subscribers=(
            tuple(draw(st.lists(st.integers(1, 12), max_size=4, unique=True)))
            if draw(st.booleans())
            else None
        ),
        timezones=(
            tuple(draw(st.lists(st.sampled_from(TIMEZONES), max_size=2, unique=True)))
            if draw(st.booleans())
            else ()
        ),
        without_timezone=draw(st.booleans()) and draw(st.booleans()),
        optin_required=draw(st.booleans()),
        engaged_only=draw(st.booleans()),
        last_active_device_only=draw(st.booleans()),
        personal=draw(st.booleans()),
    )


async def _store(db: Database, world: World) -> None:
    async with db.write.begin() as conn:
        for table in (subscriber_attributes, subscriber_tags, subscriber_events, devices):
            await conn.execute(delete(table))
        await conn.execute(delete(subscribers))
        for person in world.subscribers:
            await conn.execute(
                insert(subscribers),
                {
                    "id": person.id,
                    "account_id": ACCOUNT,
                    "app_id": APP,
                    "country": person.country,
                    "language": person.language,
                    "timezone": person.timezone,
                    "optin_push": person.optin_push,
                    "last_active_ms": person.last_active_ms,
                    "created_ms": person.created_ms,
                },
            )
            for tag in person.tags:
                await conn.execute(
                    insert(subscriber_tags), {"subscriber_id": person.id, "tag": tag}
                )
            for event in person.events:
                await conn.execute(
                    insert(subscriber_events),
                    {
                        "subscriber_id": person.id,
                        "name": event,
                        "first_ms": 0,
                        "last_ms": 0,
                        "count": 1,
                    },
                )
            for name, values in person.attributes.items():
                for position, value in enumerate(values):
                    text = value if isinstance(value, str) else None
                    number = None if isinstance(value, str) else float(value)
                    await conn.execute(
                        insert(subscriber_attributes),
                        {
                            "subscriber_id": person.id,
                            "name": name,
                            "position": position,
                            "kind": type(value).__name__,
                            "text_value": text,
                            "num_value": number,
                        },
                    )
        for device in world.devices:
            await conn.execute(
                insert(devices),
                {
                    "id": device.id,
                    "account_id": device.account_id,
                    "app_id": device.app_id,
                    "subscriber_id": device.subscriber.id,
                    "platform": device.platform,
                    "token_hash": f"t{device.id}",
                    "enabled": device.enabled,
                    "country": device.country,
                    "language": device.language,
                    "timezone": device.timezone,
                    "last_active_ms": device.last_active_ms,
                    "created_ms": 0,
                },
            )


async def _selected(db: Database, audience: Audience, since: int) -> set[int]:
    p = Params(db.write.dialect.name == "postgresql")
    sql = select_devices(p, audience, app_id=APP, account_id=ACCOUNT, engaged_since_ms=since)
    async with db.read.connect() as conn:
        rows = await conn.exec_driver_sql(sql, tuple(p.values))
        return {int(row[0]) for row in rows}


async def _counted(db: Database, audience: Audience, since: int) -> int:
    p = Params(db.write.dialect.name == "postgresql")
    sql = count_devices(p, audience, app_id=APP, account_id=ACCOUNT, engaged_since_ms=since)
    async with db.read.connect() as conn:
        return int((await conn.exec_driver_sql(sql, tuple(p.values))).scalar_one())


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    world=worlds(),
    cases=st.lists(st.tuples(audiences(), st.integers(0, 100)), min_size=1, max_size=8),
)
def test_sql_selects_what_the_reference_selects(
    runner: Runner, world: World, cases: list[tuple[Audience, int]]
) -> None:
    runner.run(_store(runner.db, world))
    for audience, since in cases:
        expected = select(
            audience, world.devices, app_id=APP, account_id=ACCOUNT, engaged_since_ms=since
        )
        assert runner.run(_selected(runner.db, audience, since)) == expected, audience
        assert runner.run(_counted(runner.db, audience, since)) == len(expected), audience


def test_everything_of_the_app_and_nothing_else(runner: Runner) -> None:
    owner = SubscriberFacts(1)
    world = World(
        [owner],
        [
            DeviceFacts(1, owner, APP, ACCOUNT, "ios"),
            DeviceFacts(2, owner, OTHER_APP, ACCOUNT, "ios"),
            DeviceFacts(3, owner, None, ACCOUNT, "channel"),
            DeviceFacts(4, owner, FOREIGN_APP, OTHER_ACCOUNT, "ios"),
            DeviceFacts(5, owner, APP, ACCOUNT, "web", enabled=False),
        ],
    )
    runner.run(_store(runner.db, world))
    assert runner.run(_selected(runner.db, Audience(), 0)) == {1}
    assert runner.run(_selected(runner.db, Audience(personal=True), 0)) == {1, 3}


def test_audiences_round_trip_through_json() -> None:
    audience = Audience(
        platforms=("ios",),
        attributes=(Condition("c_age", "gte", (18,)), Condition("c_plan", "in", ("pro", 1.5))),
        subscribers=(3, 4),
        engaged_only=True,
    )
    assert Audience.from_json(audience.to_json()) == audience
    assert Audience.from_json(Audience().to_json()) == Audience()


async def _users_fanned_out(
    db: Database, people: list[int], *, last_active: bool = True
) -> dict[int, set[int]]:
    """subscriber -> the devices ``fan_out_users`` gives its notification (rolled back)."""
    writes = DeliveryWrites(db.write.dialect.name)
    async with db.write.connect() as conn:
        transaction = await conn.begin()
        rows = []
        for n, person in enumerate(people, start=1):
            await conn.execute(
                insert(notifications),
                {
                    "id": n,
                    "account_id": ACCOUNT,
                    "app_id": APP,
                    "message": "m",
                    "data": "{}",
                    "created_ms": 0,
                    "expires_ms": 1,
                },
            )
            rows.append((n, person, APP, 0))
        made = await writes.fan_out_users(conn, rows, last_active=last_active)
        await transaction.rollback()
    chosen: dict[int, set[int]] = {}
    for n, device, _ in made:
        chosen.setdefault(people[n - 1], set()).add(device)
    return chosen


@pytest.mark.parametrize("last_active", [True, False], ids=["last-active", "all-devices"])
@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(world=worlds())
def test_one_user_sends_in_one_statement_choose_what_the_reference_chooses(
    runner: Runner, world: World, last_active: bool
) -> None:
    """Sends to one user each: their last active device (``one_user``, Insider) or all of
    their devices (``all_of_user``, Push API v2)."""
    runner.run(_store(runner.db, world))
    people = [person.id for person in world.subscribers]
    chosen = runner.run(_users_fanned_out(runner.db, people, last_active=last_active))
    for person in people:
        audience = one_user(person) if last_active else all_of_user(person)
        assert audience.one_subscriber() == (person, last_active)
        expected = select(
            audience, world.devices, app_id=APP, account_id=ACCOUNT, engaged_since_ms=0
        )
        assert chosen.get(person, set()) == expected, person
        if last_active:
            assert len(expected) <= 1


def test_only_one_opted_in_users_devices_are_a_send_to_one_user() -> None:
    assert one_user(1).one_subscriber() == (1, True)
    assert all_of_user(1).one_subscriber() == (1, False)
    assert Audience(subscribers=(1,), last_active_device_only=True).one_subscriber() is None
    assert Audience(subscribers=(1,)).one_subscriber() is None
    assert Audience(subscribers=(1, 2), optin_required=True).one_subscriber() is None
