"""The look-ups behind sends to single users (Insider mobile, Push API v2) on both databases:
identifiers of a whole request at once, opt-ins and last active devices, the frequency cap,
one user's target, and report attributes."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import insert

from pushgate.crypto import SecretBox
from pushgate.domain.errors import Conflict
from pushgate.domain.subscribers import parse_identifiers, parse_profile
from pushgate.services.accounts import AccountService
from pushgate.services.apps import App, AppService
from pushgate.services.subscriber_reports import SubscriberReports
from pushgate.services.subscribers import Scope, SubscriberService, find_many
from pushgate.services.user_sends import UserSendService, _capped, _optins_and_devices
from pushgate.storage.database import Database, now_ms
from pushgate.storage.models import deliveries, devices, notifications

BOX = SecretBox("test-secret-" * 4)


class World:
    def __init__(self, db: Database, app: App, people: dict[str, int]) -> None:
        self.db = db
        self.app = app
        self.people = people
        self.devices: dict[str, int] = {}

    async def device(self, name: str, person: str, platform: str, active: int, **row: Any) -> int:
        async with self.db.write.begin() as conn:
            made = await conn.execute(
                insert(devices)
                .values(
                    account_id=self.app.account_id,
                    app_id=self.app.id,
                    subscriber_id=self.people[person],
                    platform=platform,
                    token_hash=f"{self.app.id}-{name}",
                    enabled=row.pop("enabled", True),
                    created_ms=0,
                    last_active_ms=active,
                    **row,
                )
                .returning(devices.c.id)
            )
            self.devices[name] = int(made.scalar_one())
        return self.devices[name]


async def _world(db: Database) -> World:
    account = (await AccountService(db, BOX).create("acme")).account
    app = (await AppService(db, BOX).create(account.id, "shop")).app
    service = SubscriberService(db)
    people = {}
    for name, raw, profile in (
        (
            "ann",
            {"email": "ann@example.com", "member_no": "A-1"},
            {"attributes": {"d_name": "Ann"}},
        ),
        ("bob", {"external_id": "bob", "user_id": "u-bob"}, {"optins": {"push": False}}),
        ("cat", {"email": "cat@example.com", "member_no": "C-3"}, {"language": "nl"}),
    ):
        view, _ = await service.upsert(
            account.id, app.app_key, parse_identifiers(raw), parse_profile(profile)
        )
        people[name] = view.id
    return World(db, app, people)


async def test_identifiers_of_a_request_are_found_at_once(db: Database) -> None:
    world = await _world(db)
    scope = Scope(world.app.account_id, world.app.id)
    items = [
        parse_identifiers(raw)
        for raw in (
            {"INSIDER.email": "ann@example.com"},
            {"member_no": "C-3"},
            {"external_id": "bob", "user_id": "u-bob"},
            {"email": "nobody@example.com"},
            {"member_no": "A-1", "email": "ann@example.com"},
        )
    ]
    async with db.read.connect() as conn:
        found = await find_many(conn, scope, items)
        assert found == [
            world.people["ann"],
            world.people["cat"],
            world.people["bob"],
            None,
            world.people["ann"],
        ]
        with pytest.raises(Conflict):
            await find_many(
                conn, scope, [parse_identifiers({"email": "ann@example.com", "member_no": "C-3"})]
            )
        other = Scope(world.app.account_id, world.app.id + 1000)
        assert await find_many(conn, other, items[:2]) == [None, None]


async def test_opt_ins_last_active_devices_and_the_cap(db: Database) -> None:
    world = await _world(db)
    await world.device("ann-old", "ann", "android", 10)
    newest = await world.device("ann-new", "ann", "ios", 20)
    await world.device("ann-off", "ann", "web", 30, enabled=False)
    bob = await world.device("bob", "bob", "ios", 5)
    ids = list(world.people.values())
    async with db.read.connect() as conn:
        opted_out, targets = await _optins_and_devices(conn, world.app.id, ids)
    assert opted_out == {world.people["bob"]}
    assert (
        targets[world.people["ann"]].id == newest and targets[world.people["ann"]].platform == "ios"
    )
    assert targets[world.people["bob"]].id == bob
    assert world.people["cat"] not in targets

    now = now_ms()
    async with db.write.begin() as conn:
        for n in range(2):
            made = await conn.execute(
                insert(notifications)
                .values(
                    account_id=world.app.account_id,
                    app_id=world.app.id,
                    message="m",
                    data="{}",
                    created_ms=now,
                    expires_ms=now + 1000,
                )
                .returning(notifications.c.id)
            )
            await conn.execute(
                insert(deliveries).values(
                    notification_id=made.scalar_one(),
                    device_id=newest,
                    status="delivered" if n else "failed",
                    transport="ios",
                    attempts=1,
                    created_ms=now,
                    updated_ms=now,
                )
            )
    async with db.read.connect() as conn:
        # One live delivery (the failed one does not count).
        assert await _capped(conn, world.app.id, ids, 1) == {world.people["ann"]}
        assert await _capped(conn, world.app.id, ids, 2) == set()


async def test_one_users_target_and_reports(db: Database) -> None:
    world = await _world(db)
    await world.device(
        "ann-1", "ann", "android", 1, model="Pixel 8", push_token_enc=BOX.encrypt("tok-1")
    )
    await world.device("ann-2", "ann", "channel", 2)
    await world.device("bob", "bob", "ios", 1)
    sends = UserSendService(db, AppService(db, BOX), None, None)  # type: ignore[arg-type]
    ann = await sends.target(world.app, parse_identifiers({"email": "ann@example.com"}))
    assert (ann.subscriber_id, ann.devices) == (world.people["ann"], 2)
    assert ann.identifiers == {"email": "ann@example.com"}
    bob = await sends.target(
        world.app, parse_identifiers({"user_id": "u-bob", "external_id": "bob"})
    )
    assert (bob.subscriber_id, bob.devices) == (world.people["bob"], 0)  # opted out
    by_custom = await sends.target(world.app, parse_identifiers({"member_no": "C-3"}))
    assert by_custom.subscriber_id == world.people["cat"] and by_custom.devices == 0
    assert (
        await sends.target(world.app, parse_identifiers({"email": "x@example.com"}))
    ).subscriber_id is None
    with pytest.raises(Conflict):
        await sends.target(
            world.app, parse_identifiers({"email": "ann@example.com", "external_id": "bob"})
        )

    reports = SubscriberReports(db, BOX)
    names = [
        "INSIDER.email",
        "INSIDER.name",
        "INSIDER.device_token",
        "INSIDER.model",
        "member_no",
        "INSIDER.push_optin",
        "INSIDER.language",
        "INSIDER.carrier",
        "INSIDER.insider_id",
    ]
    ann_report, cat_report = await reports.report(
        [(world.people["ann"], world.devices["ann-1"]), (world.people["cat"], None)], names
    )
    assert ann_report == {
        "INSIDER.email": "ann@example.com",
        "INSIDER.name": "Ann",
        "INSIDER.device_token": "tok-1",
        "INSIDER.model": "Pixel 8",
        "member_no": "A-1",
        "INSIDER.push_optin": True,
        "INSIDER.language": None,
        "INSIDER.carrier": None,
        "INSIDER.insider_id": str(world.people["ann"]),
    }
    assert cat_report["INSIDER.language"] == "nl" and cat_report["INSIDER.device_token"] is None
    assert await reports.report([(world.people["ann"], None)], []) == [{}]
