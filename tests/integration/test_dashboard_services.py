"""The services behind the dashboard on both engines: logins and sessions, the overview and
its delivery feed, events deleted, devices disabled by hand, subscribers found by any
identifier; each for one account only."""

from __future__ import annotations

import pytest
from sqlalchemy import select, update

from pushgate.crypto import SecretBox
from pushgate.domain.audience import Audience
from pushgate.domain.errors import Conflict, InvalidInput, NotFound
from pushgate.domain.subscribers import Identifiers, Profile
from pushgate.egress import EgressPolicy
from pushgate.services.accounts import AccountService
from pushgate.services.apps import AppService
from pushgate.services.audience_count import AudienceCount
from pushgate.services.dashboard_auth import DashboardAuth, hash_password, password_matches
from pushgate.services.devices import DeviceRegistration, DeviceService
from pushgate.services.events import EventService
from pushgate.services.overview import OverviewService, day_starts
from pushgate.services.subscribers import SubscriberService
from pushgate.storage.database import Database, now_ms
from pushgate.storage.models import dashboard_logins, dashboard_sessions, deliveries, notifications

BOX = SecretBox("test-secret-" * 4)
PASSWORD = "a long enough password"


def test_password_hashes_are_salted_and_checked() -> None:
    first, second = hash_password(PASSWORD), hash_password(PASSWORD)
    assert first != second and PASSWORD not in first
    assert password_matches(PASSWORD, first) and password_matches(PASSWORD, second)
    assert not password_matches(PASSWORD + "!", first)
    assert not password_matches(PASSWORD, None)
    assert not password_matches(PASSWORD, "bcrypt$whatever")


async def test_logins_and_sessions(db: Database) -> None:
    accounts = AccountService(db, BOX)
    acme = (await accounts.create("acme")).account
    other = (await accounts.create("other")).account
    auth = DashboardAuth(db, BOX, session_seconds=60)
    with pytest.raises(InvalidInput):
        await auth.set_password(acme.id, "ann@example.com", "short")
    with pytest.raises(NotFound):
        await auth.set_password(10_000, "ann@example.com", PASSWORD)
    await auth.set_password(acme.id, "Ann@Example.com", PASSWORD)
    with pytest.raises(Conflict):
        await auth.set_password(other.id, "ann@example.com", PASSWORD)
    async with db.read.connect() as conn:
        stored = (await conn.execute(select(dashboard_logins))).one()
    assert stored.email == "ann@example.com" and PASSWORD not in stored.password_hash
    assert await auth.check_password("ann@example.com", PASSWORD) == acme.id
    assert await auth.check_password(" ANN@example.com", PASSWORD) == acme.id
    assert await auth.check_password("ann@example.com", "wrong password") is None
    assert await auth.check_password("bob@example.com", PASSWORD) is None

    token = await auth.start(acme.id)
    session = await auth.session(token)
    assert session is not None and session.account == acme
    assert auth.csrf_matches(token, session.csrf_token)
    assert not auth.csrf_matches(token, None)
    assert not auth.csrf_matches(await auth.start(acme.id), session.csrf_token)
    async with db.read.connect() as conn:
        hashes = list((await conn.execute(select(dashboard_sessions.c.token_hash))).scalars())
    assert token not in hashes
    assert await auth.session(token[:-1] + ("1" if token.endswith("0") else "0")) is None
    assert await auth.session(None) is None

    # Expired: refused, and removed when a new session starts.
    async with db.write.begin() as conn:
        await conn.execute(update(dashboard_sessions).values(expires_ms=now_ms() - 1))
    assert await auth.session(token) is None
    fresh = await auth.start(acme.id)
    async with db.read.connect() as conn:
        left = list((await conn.execute(select(dashboard_sessions.c.token_hash))).scalars())
    assert left == [BOX.digest(fresh)]
    # Signing out ends it; a new password ends every session of the account.
    await auth.end(fresh)
    assert await auth.session(fresh) is None
    kept = await auth.start(acme.id)
    await auth.set_password(acme.id, "ann@example.com", PASSWORD + "2")
    assert await auth.session(kept) is None


async def test_overview_feed_and_device_changes(db: Database) -> None:
    accounts = AccountService(db, BOX)
    acme = (await accounts.create("acme")).account
    other = (await accounts.create("other")).account
    apps = AppService(db, BOX)
    devices = DeviceService(db, BOX, EgressPolicy.from_setting(()))
    mine = await apps.create(acme.id, "shop")
    theirs = await apps.create(other.id, "shop")
    device = (
        await devices.register(
            acme.id, DeviceRegistration("channel", mine.app.app_key, external_id="u1")
        )
    ).device
    their_device = (
        await devices.register(
            other.id, DeviceRegistration("channel", theirs.app.app_key, external_id="u1")
        )
    ).device
    now = now_ms()
    today, week = day_starts(now)
    assert week <= today <= now < today + 86_400_000
    async with db.write.begin() as conn:
        for account_id, app, device_id, created in (
            (acme.id, mine.app.id, device.id, now),
            (acme.id, mine.app.id, device.id, week - 1),  # last week: not counted
            (other.id, theirs.app.id, their_device.id, now),
        ):
            notification_id = (
                await conn.execute(
                    notifications.insert().returning(notifications.c.id),
                    {
                        "account_id": account_id,
                        "app_id": app,
                        "message": "hi",
                        "data": "{}",
                        "created_ms": created,
                        "expires_ms": now + 60_000,
                    },
                )
            ).scalar_one()
            await conn.execute(
                deliveries.insert(),
                {
                    "notification_id": notification_id,
                    "device_id": device_id,
                    "status": "failed",
                    "transport": "channel",
                    "attempts": 1,
                    "reason": "BadDeviceToken: gone",
                    "created_ms": created,
                    "updated_ms": created,
                },
            )
    service = OverviewService(db)
    view = await service.overview(acme.id, now)
    assert (view.today, view.this_week) == (1, 1)
    assert view.statuses["failed"] == 1
    assert view.failed_by_reason == {"BadDeviceToken": 1}
    assert view.devices_by_platform == {"channel": 1}
    lines = await service.device_deliveries(acme.id, device.id)
    assert [line.reason for line in lines] == ["BadDeviceToken: gone"] * 2
    assert await service.device_deliveries(acme.id, their_device.id) == []
    feed = await service.feed(acme.id, now - 1)
    assert [(line.device_id, line.status) for line in feed] == [(device.id, "failed")]
    assert await service.feed(acme.id, now) == []
    assert [line.device_id for line in await service.feed(other.id, now - 1)] == [their_device.id]

    # Disabled and enabled by hand, for its own account only.
    with pytest.raises(NotFound):
        await devices.set_enabled(acme.id, their_device.id, False)
    off = await devices.set_enabled(acme.id, device.id, False, "by hand")
    assert (off.enabled, off.disabled_reason) == (False, "by hand")
    assert (await service.overview(acme.id, now)).disabled_devices == 1
    on = await devices.set_enabled(acme.id, device.id, True)
    assert (on.enabled, on.disabled_reason) == (True, None)
    # Enabling by hand keeps to the most enabled devices a subscriber may have.
    capped = DeviceService(db, BOX, EgressPolicy.from_setting(()), max_per_subscriber=1)
    await capped.set_enabled(acme.id, device.id, False)
    second = await capped.register(
        acme.id, DeviceRegistration("channel", mine.app.app_key, external_id="u1", name="new")
    )
    assert second.device.subscriber_id == device.subscriber_id
    with pytest.raises(Conflict):
        await capped.set_enabled(acme.id, device.id, True)
    await capped.set_enabled(acme.id, second.device.id, False)
    assert (await capped.set_enabled(acme.id, device.id, True)).enabled
    mine_now = await devices.of_subscriber(acme.id, device.subscriber_id)
    assert [(d.id, d.enabled) for d in mine_now] == [(device.id, True), (second.device.id, False)]
    assert await devices.of_subscriber(other.id, device.subscriber_id) == []


async def test_events_delete_and_subscriber_lookup(db: Database) -> None:
    acme = (await AccountService(db, BOX).create("acme")).account
    app = (await AppService(db, BOX).create(acme.id, "shop")).app
    events = EventService(db)
    await events.create(app.id, "signups", ["email"], "{email} joined")
    assert await events.get(app.id, "signups") is not None
    await events.delete(app.id, "signups")
    assert await events.get(app.id, "signups") is None
    with pytest.raises(NotFound):
        await events.delete(app.id, "signups")

    subscribers = SubscriberService(db)
    view, _created = await subscribers.upsert(
        acme.id,
        app.app_key,
        Identifiers(email="ann@example.com", external_id="A-1", custom=(("member_no", "M7"),)),
        Profile(),
    )
    for value in (
        "ann@example.com",
        " A-1",
        "member_no=M7",
        "email = ann@example.com",
        str(view.id),
    ):
        assert [found.id for found in await subscribers.lookup(acme.id, app.app_key, value)] == [
            view.id
        ], value
    for value in ("nobody", "M7", "member_no=M8", "=", "phone_number=not a number"):
        assert await subscribers.lookup(acme.id, app.app_key, value) == [], value
    with pytest.raises(NotFound):
        await subscribers.lookup(acme.id + 1, app.app_key, "A-1")


async def test_audience_count_counts_what_the_fan_out_would_select(db: Database) -> None:
    accounts = AccountService(db, BOX)
    acme = (await accounts.create("acme")).account
    other = (await accounts.create("other")).account
    apps = AppService(db, BOX)
    devices = DeviceService(db, BOX, EgressPolicy.from_setting(()))
    mine = (await apps.create(acme.id, "shop")).app
    theirs = (await apps.create(other.id, "shop")).app
    for n in range(3):
        await devices.register(
            acme.id, DeviceRegistration("channel", mine.app_key, external_id=f"u{n}")
        )
    await devices.register(other.id, DeviceRegistration("channel", theirs.app_key, external_id="x"))
    personal = await devices.register(acme.id, DeviceRegistration("channel", None))
    count = AudienceCount(db)
    assert await count.devices(acme.id, mine.id, Audience()) == 3
    assert await count.devices(acme.id, mine.id, Audience(personal=True)) == 4
    assert await count.devices(acme.id, mine.id, Audience(platforms=("ios",))) == 0
    # Another account's app counts none of its devices.
    assert await count.devices(acme.id, theirs.id, Audience()) == 0
    await devices.set_enabled(acme.id, personal.device.id, False)
    assert await count.devices(acme.id, mine.id, Audience(personal=True)) == 3
