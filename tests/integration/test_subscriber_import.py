"""The subscriber import service on both engines (SQLite file and the real PostgreSQL server):
the same rules as the API, rejected entries with their lines, entries of one subscriber
merged, and a second run that changes nothing."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from sqlalchemy import select

from pushgate.crypto import SecretBox
from pushgate.domain.import_entries import SourceRow
from pushgate.domain.subscribers import Identifiers, parse_identifiers, parse_profile
from pushgate.services.accounts import AccountService
from pushgate.services.apps import AppService
from pushgate.services.devices import DeviceRegistration, DeviceService
from pushgate.services.subscriber_import import ImportReport, SubscriberImport
from pushgate.services.subscribers import SubscriberService, SubscriberView
from pushgate.storage.database import Database, open_database
from pushgate.storage.migrate import migrate
from pushgate.storage.models import (
    devices,
    subscriber_attributes,
    subscriber_events,
    subscriber_identifiers,
    subscriber_tags,
    subscribers,
)

BOX = SecretBox("test-secret-" * 4)
IOS_1 = "ab" * 32
IOS_2 = "cd" * 32
ANDROID_1 = "f" * 152


def _web_subscription() -> dict[str, Any]:
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    point = key.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
    return {
        "endpoint": "https://push.example.net/send/abc",
        "keys": {
            "p256dh": base64.urlsafe_b64encode(point).decode().rstrip("="),
            "auth": base64.urlsafe_b64encode(b"0123456789abcdef").decode().rstrip("="),
        },
    }


WEB_1 = _web_subscription()


@dataclass
class World:
    db: Database
    account_id: int
    app: str
    other_app: str

    def importer(self, **options: Any) -> SubscriberImport:
        return SubscriberImport(self.db, BOX, **options)

    async def run(self, *bodies: object, batch_size: int = 500, **options: Any) -> ImportReport:
        rows = [SourceRow(number, body) for number, body in enumerate(bodies, start=1)]
        return await self.importer(**options).run(self.app, rows, batch_size=batch_size)

    async def find(self, **identifiers: str) -> SubscriberView:
        found = await SubscriberService(self.db).search(
            self.account_id, self.app, parse_identifiers(identifiers)
        )
        assert len(found) == 1, identifiers
        return found[0]


@pytest.fixture
async def world(database_url: str) -> AsyncIterator[World]:
    db = open_database(database_url)
    await migrate(db)
    account = (await AccountService(db, BOX).create("acme")).account
    apps = AppService(db, BOX)
    app = (await apps.create(account.id, "Shop")).app.app_key
    other = (await apps.create(account.id, "Other")).app.app_key
    yield World(db, account.id, app, other)
    await db.dispose()


async def snapshot(db: Database) -> dict[str, list[tuple[Any, ...]]]:
    """Every row a subscriber import can write, in key order."""
    tables = {
        "subscribers": (subscribers, [subscribers.c.id]),
        "identifiers": (
            subscriber_identifiers,
            [subscriber_identifiers.c.name, subscriber_identifiers.c.value],
        ),
        "attributes": (
            subscriber_attributes,
            [
                subscriber_attributes.c.subscriber_id,
                subscriber_attributes.c.name,
                subscriber_attributes.c.position,
            ],
        ),
        "tags": (subscriber_tags, [subscriber_tags.c.subscriber_id, subscriber_tags.c.tag]),
        "events": (subscriber_events, [subscriber_events.c.subscriber_id]),
        "devices": (devices, [devices.c.id]),
    }
    found: dict[str, list[tuple[Any, ...]]] = {}
    async with db.read.connect() as conn:
        for name, (table, order) in tables.items():
            found[name] = [tuple(row) for row in await conn.execute(select(table).order_by(*order))]
    return found


def ann(**more: Any) -> dict[str, Any]:
    return {
        "identifiers": {"external_id": "u-1", "INSIDER.email": "Ann@Example.COM"},
        "language": "pt_BR",
        "country": "NL",
        "timezone": "europe/amsterdam",
        "optins": {"email": True},
        "attributes": {"c_plan": "pro", "c_age": 42, "c_birthday": {"date": "1990-05-01"}},
        "tags": ["vip", "beta"],
        "devices": [
            {"platform": "ios", "token": IOS_1.upper(), "language": "nl_NL", "model": "iPhone"},
            {"platform": "android", "token": ANDROID_1},
            {"platform": "web", "subscription": WEB_1},
        ],
        **more,
    }


async def test_subscribers_and_devices_are_imported_into_the_app(world: World) -> None:
    report = await world.run(
        ann(),
        {"identifiers": {"INSIDER.member_no": "A-17", "INSIDER.phone_number": "+31 6 12345678"}},
    )
    assert report.rejected == ()
    assert (report.rows, report.subscribers.new, report.devices.new) == (2, 2, 3)
    view = await world.find(email="Ann@example.com")
    assert view.identifiers == {"external_id": "u-1", "email": "Ann@example.com"}
    assert (view.language, view.country, view.timezone) == ("pt-BR", "NL", "Europe/Amsterdam")
    assert view.optins == {"push": True, "email": True, "sms": None, "location": None}
    assert view.attributes == {
        "c_age": 42,
        "c_birthday": {"date": "1990-05-01T00:00:00Z"},
        "c_plan": "pro",
    }
    assert view.tags == ["beta", "vip"] and view.events == []
    assert view.last_active_ms is None  # an import is no sign of life
    member = await world.find(member_no="A-17")
    assert member.identifiers == {"phone_number": "+31612345678", "member_no": "A-17"}

    registry = DeviceService(world.db, BOX)
    listed = await registry.list(world.account_id, world.app)
    assert sorted(d.platform for d in listed) == ["android", "ios", "web"]
    assert {d.app_key for d in listed} == {world.app}
    assert {d.subscriber_id for d in listed} == {view.id} and sorted(view.device_ids) == sorted(
        d.id for d in listed
    )
    ios = next(d for d in listed if d.platform == "ios")
    assert (ios.language, ios.model, ios.enabled, ios.address_hint) == (
        "nl-NL",
        "iPhone",
        True,
        "…" + IOS_1[-8:],
    )
    assert await registry.list(world.account_id, world.other_app) == []
    addresses = await registry.addresses(d.id for d in listed)
    assert addresses[ios.id].address == IOS_1  # stored normalized (lower case), encrypted
    async with world.db.read.connect() as conn:
        stored = (await conn.execute(select(devices.c.push_token_enc))).scalars().all()
    assert all(IOS_1 not in value and ANDROID_1 not in value for value in stored)


async def test_a_second_run_changes_nothing(world: World) -> None:
    bodies = [
        ann(),
        {"identifiers": {"user_id": "7"}, "add_tags": ["x"], "attributes": {"c_n": None}},
        {"identifiers": {"uuid": "2f1b3c4d-0000-4000-8000-000000000001"}, "tags": []},
    ]
    first = await world.run(*bodies, batch_size=2)
    assert (first.subscribers.new, first.devices.new, first.rejected) == (3, 3, ())
    before = await snapshot(world.db)
    again = await world.run(*bodies, batch_size=2)
    assert await snapshot(world.db) == before
    assert again.subscribers == type(again.subscribers)(new=0, updated=0, unchanged=3)
    assert again.devices == type(again.devices)(new=0, updated=0, unchanged=3)


async def test_rejected_entries_name_their_line_and_the_rest_is_imported(world: World) -> None:
    await world.run({"identifiers": {"external_id": "taken-1"}})
    await world.run({"identifiers": {"email": "taken@example.com"}})
    rows = [
        SourceRow(1, {"identifiers": {"external_id": "ok-1"}}),
        SourceRow(2, {"identifiers": {"email": "not-an-address"}}),
        SourceRow(3, {"identifiers": {"external_id": "ok-2"}, "favourite": "blue"}),
        SourceRow(4, {"identifiers": {"external_id": "ok-3"}, "events": ["install"]}),
        SourceRow(
            5, {"identifiers": {"external_id": "ok-4"}, "devices": [{"platform": "channel"}]}
        ),
        SourceRow(
            6,
            {
                "identifiers": {"external_id": "ok-5"},
                "devices": [{"platform": "ios", "token": IOS_2, "app_id": world.other_app}],
            },
        ),
        SourceRow(7, {"identifiers": {"external_id": "taken-1", "email": "taken@example.com"}}),
        SourceRow(8, error="not JSON: unexpected character"),
        SourceRow(9, {"language": "nl"}),
        SourceRow(10, {"identifiers": {"external_id": "ok-6"}, "country": "XX"}),
        SourceRow(11, {"identifiers": {"external_id": "ok-7"}, "devices": [{"platform": "ios"}]}),
        SourceRow(
            12,
            {
                "identifiers": {"external_id": "ok-8"},
                "devices": [
                    {"platform": "ios", "token": IOS_1},
                    {"platform": "android", "token": ANDROID_1},
                ],
            },
        ),
        SourceRow(13, ["not", "an", "object"]),
        SourceRow(14, {"identifiers": {"external_id": "ok-9"}, "devices": [{"email": "a@b.nl"}]}),
        SourceRow(15, {"identifiers": {"external_id": "ok-10"}}),
    ]
    report = await world.importer(max_devices_per_subscriber=1).run(world.app, rows, batch_size=4)
    reasons = {item.line: item.reason for item in report.rejected}
    assert sorted(reasons) == [2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14]
    assert "identifiers.email must be an address" in reasons[2]
    assert reasons[3].startswith("favourite is not a field of a subscriber")
    assert reasons[4].startswith("events are not imported")
    assert "channel devices are not imported" in reasons[5]
    assert reasons[6].startswith(f"devices[0].app_id is '{world.other_app}'")
    assert reasons[7].startswith("The identifiers name different subscribers (external_id name")
    assert reasons[8] == "not JSON: unexpected character"
    assert reasons[9].startswith("identifiers are required")
    assert reasons[10].startswith("country must be an ISO 3166-1 alpha-2")
    assert reasons[11].startswith("devices[0].token is required for platform ios")
    assert "max_devices_per_subscriber is 1" in reasons[12]
    assert reasons[13].startswith("an entry is an object")
    assert reasons[14].startswith("devices[0].email: a device belongs to the subscriber")
    assert (report.rows, report.subscribers.new) == (15, 2)
    assert [(await world.find(external_id=f"ok-{n}")).device_ids for n in (1, 10)] == [[], []]
    assert await DeviceService(world.db, BOX).list(world.account_id, world.app) == []


async def test_entries_of_one_subscriber_merge(world: World) -> None:
    report = await world.run(
        {"identifiers": {"external_id": "u-1"}, "language": "nl", "tags": ["a"]},
        {"identifiers": {"external_id": "u-1"}, "devices": [{"platform": "ios", "token": IOS_1}]},
        {
            "identifiers": {"external_id": "u-1", "email": "ann@example.com"},
            "add_tags": ["b"],
            "devices": [{"platform": "ios", "token": IOS_2}],
        },
        {
            "identifiers": {"INSIDER.email": "ann@example.com", "INSIDER.member_no": "M1"},
            "devices": [{"platform": "android", "token": ANDROID_1, "model": "Pixel"}],
        },
        {"identifiers": {"member_no": "M1"}, "devices": [{"platform": "ios", "token": IOS_1}]},
        batch_size=2,
    )
    assert report.rejected == ()
    assert (report.subscribers.new, report.devices.new) == (1, 3)
    view = await world.find(member_no="M1")
    assert view.identifiers == {
        "external_id": "u-1",
        "email": "ann@example.com",
        "member_no": "M1",
    }
    assert (view.language, view.tags, len(view.device_ids)) == ("nl", ["a", "b"], 3)


async def test_subscribers_and_devices_made_by_the_api_are_found(world: World) -> None:
    service = SubscriberService(world.db)
    made, _ = await service.upsert(
        world.account_id,
        world.app,
        Identifiers(external_id="u-1"),
        parse_profile({"language": "en", "attributes": {"c_plan": "free"}, "tags": ["old"]}),
    )
    registry = DeviceService(world.db, BOX)
    registered = await registry.register(
        world.account_id,
        DeviceRegistration(platform="ios", app_key=world.app, token=IOS_1, external_id="u-1"),
    )
    await registry.disable(registered.device.id, "Unregistered")
    anonymous = await registry.register(
        world.account_id, DeviceRegistration(platform="android", app_key=world.app, token=ANDROID_1)
    )
    before = await world.find(external_id="u-1")

    report = await world.run(
        {
            "identifiers": {"external_id": "u-1", "email": "ann@example.com"},
            "language": "nl",
            "attributes": {"c_plan": "pro"},
            "tags": ["new"],
            "devices": [{"platform": "ios", "token": IOS_1, "name": "Ann's phone"}],
        },
        {
            "identifiers": {"external_id": "u-9"},
            "devices": [{"platform": "android", "token": ANDROID_1}],
        },
    )
    assert report.rejected == ()
    assert (report.subscribers.new, report.subscribers.updated) == (0, 2)
    assert (report.devices.new, report.devices.updated, report.devices.unchanged) == (0, 1, 1)
    view = await world.find(external_id="u-1")
    assert view.id == made.id and view.identifiers["email"] == "ann@example.com"
    assert (view.language, view.attributes, view.tags) == ("nl", {"c_plan": "pro"}, ["new"])
    assert view.updated_ms is not None and before.updated_ms is not None
    listed = {d.id: d for d in await registry.list(world.account_id, world.app)}
    assert len(listed) == 2
    ios = listed[registered.device.id]
    assert (ios.name, ios.enabled, ios.disabled_reason) == ("Ann's phone", False, "Unregistered")
    # The device keeps its device token; the anonymous owner got the identifiers.
    assert await registry.authenticate(registered.device_token) is not None
    adopted = await world.find(external_id="u-9")
    assert adopted.id == anonymous.device.subscriber_id
    assert adopted.device_ids == [anonymous.device.id]


async def test_a_device_moves_to_the_subscriber_of_its_entry(world: World) -> None:
    await world.run(
        {"identifiers": {"external_id": "u-1"}, "devices": [{"platform": "ios", "token": IOS_1}]}
    )
    report = await world.run(
        {"identifiers": {"external_id": "u-2"}, "devices": [{"platform": "ios", "token": IOS_1}]}
    )
    assert (report.subscribers.new, report.devices.updated) == (1, 1)
    first, second = await world.find(external_id="u-1"), await world.find(external_id="u-2")
    assert (first.device_ids, len(second.device_ids)) == ([], 1)


async def test_profile_changes_are_written_and_only_they(world: World) -> None:
    await world.run(ann())
    first = await snapshot(world.db)
    report = await world.run(
        {
            "identifiers": {"email": "Ann@example.com"},
            "attributes": {"c_plan": "team", "c_age": None, "c_sizes": [38, 39]},
            "tags": ["beta"],
            "add_tags": ["gold"],
            "optins": {"push": False},
        }
    )
    assert (report.subscribers.updated, report.devices.unchanged) == (1, 0)
    view = await world.find(external_id="u-1")
    assert view.attributes == {
        "c_birthday": {"date": "1990-05-01T00:00:00Z"},
        "c_plan": "team",
        "c_sizes": [38, 39],
    }
    assert (view.tags, view.optins["push"], view.language) == (["beta", "gold"], False, "pt-BR")
    after = await snapshot(world.db)
    assert after["devices"] == first["devices"] and after["identifiers"] == first["identifiers"]


@pytest.mark.parametrize("size", [1, 7])
async def test_batch_sizes_give_the_same_result(world: World, size: int) -> None:
    bodies: Sequence[dict[str, Any]] = [
        {
            "identifiers": {"external_id": f"u-{n % 9}", "email": f"u{n % 9}@example.com"},
            "attributes": {"c_n": n % 9},
            "devices": [{"platform": "ios", "token": f"{n:064x}"}],
        }
        for n in range(30)
    ]
    report = await world.run(*bodies, batch_size=size)
    assert report.rejected == ()
    assert (report.subscribers.new, report.devices.new) == (9, 30)
    assert len((await world.find(external_id="u-3")).device_ids) == 3


async def test_a_large_batch_stays_within_the_lock_table(world: World) -> None:
    """20,000 advisory locks in one transaction overflow PostgreSQL's default lock table
    (64 x 100 connections): the batch is written in transactions of at most MAX_LOCKS."""
    bodies = [
        {
            "identifiers": {"external_id": f"u-{n}", "user_id": f"{n}", "uuid": str(UUID(int=n))},
            "devices": [{"platform": "ios", "token": f"{n:064x}"}],
        }
        for n in range(5000)
    ]
    report = await world.run(*bodies, batch_size=5000)
    assert (report.rejected, report.subscribers.new, report.devices.new) == ((), 5000, 5000)
    again = await world.run(*bodies, batch_size=5000)
    assert (again.subscribers.unchanged, again.devices.unchanged) == (5000, 5000)
