"""Storage and services on both engines (SQLite file and the real PostgreSQL server)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import event, select

from pushgate.crypto import SecretBox
from pushgate.domain.errors import Conflict, InvalidInput, NotFound
from pushgate.services.accounts import AccountService
from pushgate.services.apps import AppService
from pushgate.services.devices import DeviceRegistration, DeviceService
from pushgate.services.events import EventService
from pushgate.storage.database import Database
from pushgate.storage.migrate import migrate
from pushgate.storage.models import accounts, apps, metadata

BOX = SecretBox("test-secret-" * 4)


async def test_migrations_produce_exactly_the_models_schema(db: Database) -> None:
    def diff(connection):  # type: ignore[no-untyped-def]
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return compare_metadata(context, metadata)

    async with db.read.connect() as conn:
        assert await conn.run_sync(diff) == []


async def test_migrate_is_idempotent(db: Database) -> None:
    await migrate(db)
    async with db.read.connect() as conn:
        assert (await conn.execute(select(accounts.c.id))).all() == []


async def test_account_tokens_are_stored_hashed_and_encrypted(db: Database) -> None:
    service = AccountService(db, BOX)
    created = await service.create("acme")
    async with db.read.connect() as conn:
        row = (await conn.execute(select(accounts))).one()
    assert created.user_token not in (row.user_token_hash, row.user_token_enc)
    assert await service.authenticate(created.user_token) == created.account
    assert await service.authenticate("0" * 32) is None
    assert await service.authenticate(None) is None
    assert [(a.name, t) for a, t in await service.list()] == [("acme", created.user_token)]


async def test_app_secret_encrypted_at_rest_and_checked(db: Database) -> None:
    account = (await AccountService(db, BOX).create("acme")).account
    service = AppService(db, BOX)
    created = await service.create(account.id, "My app")
    async with db.read.connect() as conn:
        row = (await conn.execute(select(apps))).one()
    assert created.secret not in (row.secret_enc, row.secret_hash)
    assert await service.authenticate(created.app.app_key, created.secret) == created.app
    assert await service.authenticate(created.app.app_key, created.secret + "x") is None
    assert await service.authenticate("nope", created.secret) is None
    listed = await service.list(account.id)
    assert [(a.app.title, a.secret) for a in listed] == [("My app", created.secret)]


async def test_a_refused_app_secret_costs_the_same_whether_the_app_exists(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """appIDs cannot be probed by timing: a wrong secret for a known (cached) app reads the
    app from storage, as an unknown appID does, and both compare one keyed hash."""
    account = (await AccountService(db, BOX).create("acme")).account
    service = AppService(db, BOX)
    created = await service.create(account.id, "My app")
    assert await service.authenticate(created.app.app_key, created.secret) == created.app
    reads: list[str] = []
    hashes: list[str] = []
    engine = db.read

    class CountingEngine:
        def connect(self):  # type: ignore[no-untyped-def]
            reads.append("read")
            return engine.connect()

    matches = BOX.matches

    def counting_matches(credential: str, digest: str) -> bool:
        hashes.append(digest)
        return matches(credential, digest)

    monkeypatch.setattr(db, "read", CountingEngine())
    monkeypatch.setattr(BOX, "matches", counting_matches)
    assert await service.authenticate(created.app.app_key, created.secret) == created.app
    assert (reads, len(hashes)) == ([], 1)  # the right secret: from the cache
    reads.clear(), hashes.clear()
    assert await service.authenticate(created.app.app_key, "f" * 32) is None
    known = (len(reads), len(hashes))
    reads.clear(), hashes.clear()
    assert await service.authenticate("unknownapp01", "f" * 32) is None
    assert known == (1, 2) and (len(reads), len(hashes)) == (1, 1)


async def test_apps_are_isolated_per_account(db: Database) -> None:
    service_accounts = AccountService(db, BOX)
    first = (await service_accounts.create("a")).account
    second = (await service_accounts.create("b")).account
    apps_service = AppService(db, BOX)
    await apps_service.create(first.id, "A's app")
    assert await apps_service.list(second.id) == []


async def test_event_titles_are_unique_per_app(db: Database) -> None:
    account = (await AccountService(db, BOX).create("acme")).account
    app_one = (await AppService(db, BOX).create(account.id, "one")).app
    app_two = (await AppService(db, BOX).create(account.id, "two")).app
    service = EventService(db)
    await service.create(app_one.id, "signups", ["email"], "{email} joined")
    with pytest.raises(Conflict):
        await service.create(app_one.id, "signups", ["email"], "{email} joined")
    await service.create(app_two.id, "signups", ["email"], "{email} joined")  # other app: fine
    with pytest.raises(InvalidInput):
        await service.create(app_one.id, "x", ["email"], "{name}")
    fresh = EventService(db)  # no cache: read back from storage
    event = await fresh.get(app_one.id, "signups")
    assert event is not None and event.template.render({"email": "a"}) == "a joined"
    assert [e.title for e in await fresh.list(app_one.id)] == ["signups"]
    assert await fresh.get(app_one.id, "nope") is None


async def test_devices_share_a_subscriber_by_external_id(db: Database) -> None:
    account = (await AccountService(db, BOX).create("acme")).account
    service = DeviceService(db, BOX)
    one = await service.register(account.id, DeviceRegistration("channel", external_id="u1"))
    two = await service.register(account.id, DeviceRegistration("channel", external_id="u1"))
    three = await service.register(account.id, DeviceRegistration("channel"))
    assert one.device.subscriber_id == two.device.subscriber_id != three.device.subscriber_id
    assert (await service.authenticate(one.device_token)) == one.device
    assert await service.authenticate("dvt_" + "0" * 48) is None
    listed = await service.list(account.id)
    assert [d.id for d in listed] == [one.device.id, two.device.id, three.device.id]
    assert [d.external_id for d in listed] == ["u1", "u1", None]
    assert {d.app_key for d in listed} == {None}  # personal channel devices of the account


async def test_device_authentication_is_one_read_and_types_its_row(db: Database) -> None:
    account = (await AccountService(db, BOX).create("acme")).account
    service = DeviceService(db, BOX)
    created = await service.register(
        account.id, DeviceRegistration("channel", name="laptop", language="de", external_id="u7")
    )
    other = await service.register(account.id, DeviceRegistration("channel"))
    assert await service.disable(other.device.id, "gone")
    statements: list[str] = []

    def before(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        statements.append(statement)

    event.listen(db.read.sync_engine, "before_cursor_execute", before)
    try:
        found = await service.authenticate(created.device_token)
    finally:
        event.remove(db.read.sync_engine, "before_cursor_execute", before)
    assert found == created.device
    assert found is not None and found.enabled is True
    disabled = await service.authenticate(other.device_token)
    assert disabled is not None and disabled.enabled is False
    assert disabled.disabled_reason == "gone"
    assert await service.authenticate(created.device_token + "0") is None
    if db.is_sqlite:  # the raw one-trip read: SQLAlchemy runs no statement (no BEGIN either)
        assert statements == []
    else:
        assert len(statements) == 1


async def test_concurrent_registrations_of_one_external_id(db: Database) -> None:
    account = (await AccountService(db, BOX).create("acme")).account
    service = DeviceService(db, BOX)
    registered = await asyncio.gather(
        *(
            service.register(account.id, DeviceRegistration("channel", external_id="same"))
            for _ in range(5)
        )
    )
    assert len({r.device.subscriber_id for r in registered}) == 1


async def test_deliveries_of_other_accounts_are_not_found(db: Database) -> None:
    from pushgate.services.notifications import NotificationQueries

    with pytest.raises(NotFound):
        await NotificationQueries(db).deliveries(1, 12345)


IOS = "ab" * 32


async def test_devices_and_subscribers_belong_to_their_app(db: Database) -> None:
    account = (await AccountService(db, BOX).create("acme")).account
    apps_service = AppService(db, BOX)
    one = (await apps_service.create(account.id, "one")).app
    two = (await apps_service.create(account.id, "two")).app
    service = DeviceService(db, BOX)
    with pytest.raises(InvalidInput, match="app_id is required for platform ios"):
        await service.register(account.id, DeviceRegistration("ios", token=IOS))
    with pytest.raises(NotFound):
        await service.register(account.id, DeviceRegistration("ios", app_key="nope", token=IOS))
    first = await service.register(
        account.id, DeviceRegistration("ios", app_key=one.app_key, token=IOS, external_id="u1")
    )
    again = await service.register(
        account.id, DeviceRegistration("ios", app_key=one.app_key, token=IOS, external_id="u1")
    )
    other = await service.register(
        account.id, DeviceRegistration("ios", app_key=two.app_key, token=IOS, external_id="u1")
    )
    assert again.device.id == first.device.id and not again.created
    assert other.device.id != first.device.id and other.created  # one address, two apps
    assert other.device.subscriber_id != first.device.subscriber_id  # u1 of each app
    assert (first.device.app_key, other.device.app_key) == (one.app_key, two.app_key)
    assert [d.id for d in await service.list(account.id, two.app_key)] == [other.device.id]


async def test_identifiers_that_name_two_subscribers_conflict(db: Database) -> None:
    account = (await AccountService(db, BOX).create("acme")).account
    app = (await AppService(db, BOX).create(account.id, "one")).app
    service = DeviceService(db, BOX)
    await service.register(
        account.id, DeviceRegistration("channel", app_key=app.app_key, external_id="a")
    )
    await service.register(
        account.id,
        DeviceRegistration("channel", app_key=app.app_key, email="b@example.com"),
    )
    with pytest.raises(Conflict, match="name different subscribers"):
        await service.register(
            account.id,
            DeviceRegistration(
                "channel", app_key=app.app_key, external_id="a", email="b@example.com"
            ),
        )
    merged = await service.register(
        account.id,
        DeviceRegistration(
            "channel",
            app_key=app.app_key,
            external_id="a",
            phone_number="+31 6 1234 5678",
            identifiers={"INSIDER.member_no": "M-1"},
        ),
    )
    assert merged.device.phone_number == "+31612345678"
    from pushgate.domain.subscribers import parse_identifiers
    from pushgate.services.subscribers import SubscriberService

    found = await SubscriberService(db).search(
        account.id, app.app_key, parse_identifiers({"member_no": "M-1"})
    )
    assert [s.id for s in found] == [merged.device.subscriber_id]
    assert found[0].identifiers == {
        "external_id": "a",
        "phone_number": "+31612345678",
        "member_no": "M-1",
    }


async def test_subscriber_profiles_are_upserted_and_erased(db: Database) -> None:
    from pushgate.domain.subscribers import parse_identifiers, parse_profile
    from pushgate.services.subscribers import SubscriberService

    account = (await AccountService(db, BOX).create("acme")).account
    app = (await AppService(db, BOX).create(account.id, "one")).app
    subscribers = SubscriberService(db)
    view, created = await subscribers.upsert(
        account.id,
        app.app_key,
        parse_identifiers({"INSIDER.email": "Ann@Example.COM"}),
        parse_profile(
            {
                "language": "en_us",
                "country": "nl",
                "optins": {"email": True},
                "attributes": {
                    "c_plan": "pro",
                    "c_age": 42,
                    "c_vip": True,
                    "c_sizes": [38, 39],
                    "d_birthday": {"date": "1990-05-01"},
                },
                "tags": ["vip", "beta"],
                "events": ["install", {"name": "reg", "at": "2026-01-02T03:04:05Z"}],
            }
        ),
    )
    assert created
    assert view.identifiers == {"email": "Ann@example.com"}
    assert (view.language, view.country) == ("en-US", "NL")
    assert view.optins == {"push": True, "email": True, "sms": None, "location": None}
    assert view.attributes == {
        "c_age": 42,
        "c_plan": "pro",
        "c_sizes": [38, 39],
        "c_vip": True,
        "d_birthday": {"date": "1990-05-01T00:00:00Z"},
    }
    assert view.tags == ["beta", "vip"]
    assert [e["name"] for e in view.events] == ["install", "reg"]
    again, created = await subscribers.upsert(
        account.id,
        app.app_key,
        parse_identifiers({"email": "Ann@example.com", "external_id": "ann"}),
        parse_profile({"attributes": {"c_plan": None}, "add_tags": ["new"], "events": ["reg"]}),
    )
    assert not created and again.id == view.id
    assert again.identifiers == {"external_id": "ann", "email": "Ann@example.com"}
    assert "c_plan" not in again.attributes
    assert again.tags == ["beta", "new", "vip"]
    assert [e["count"] for e in again.events] == [1, 2]
    device = await DeviceService(db, BOX).register(
        account.id, DeviceRegistration("ios", app_key=app.app_key, token=IOS, external_id="ann")
    )
    assert device.device.subscriber_id == view.id
    other = (await AccountService(db, BOX).create("other")).account
    with pytest.raises(NotFound):
        await subscribers.get(other.id, view.id)
    assert await subscribers.delete(account.id, view.id) == 1
    with pytest.raises(NotFound):
        await subscribers.get(account.id, view.id)
    assert await DeviceService(db, BOX).list(account.id) == []


async def test_write_statements_commit_together_or_not_at_all(db: Database) -> None:
    """``write_statements`` (one trip to SQLite's script thread): every statement of a batch
    is committed, in order, or none is."""
    from pushgate.storage.database import Statement, driver_rows
    from pushgate.storage.params import markers

    postgres = not db.is_sqlite
    name, title = markers(postgres, 2)
    (key,) = markers(postgres, 1)
    account = (await AccountService(db, BOX).create("acme")).account
    await db.write_statements(
        [
            Statement(f"UPDATE accounts SET name = {name} WHERE id = {title}", ("one", account.id)),
            Statement(
                f"UPDATE accounts SET name = name || '-' || {name} WHERE id = {title}",
                ("two", account.id),
            ),
            Statement(
                f"UPDATE accounts SET name = name || '-' || {name} WHERE id = {title}",
                ("three", account.id),
            ),
        ]
    )
    async with db.read.connect() as conn:
        [(stored,)] = await driver_rows(
            conn, f"SELECT name FROM accounts WHERE id = {key}", (account.id,)
        )
    assert stored == "one-two-three"
    with pytest.raises(Exception, match="(?i)no such column|does not exist"):
        await db.write_statements(
            [
                Statement(
                    f"UPDATE accounts SET name = {name} WHERE id = {title}", ("lost", account.id)
                ),
                Statement("UPDATE accounts SET nonexistent_column = 1"),
            ]
        )
    async with db.read.connect() as conn:
        [(stored,)] = await driver_rows(
            conn, f"SELECT name FROM accounts WHERE id = {key}", (account.id,)
        )
    assert stored == "one-two-three"
    # The batch thread's connection is left outside any transaction: other writers go on.
    async with db.writing() as conn:
        await driver_rows(
            conn, f"UPDATE accounts SET name = {name} WHERE id = {title}", ("after", account.id)
        )
    async with db.read.connect() as conn:
        [(stored,)] = await driver_rows(
            conn, f"SELECT name FROM accounts WHERE id = {key}", (account.id,)
        )
    assert stored == "after"


async def test_sqlite_write_transaction_begins_in_one_trip_and_ends_with_its_commit(
    tmp_path: Path,
) -> None:
    """On SQLite a write transaction is BEGIN, its statements and COMMIT, one trip each to
    the driver's thread: no cursor round trips for BEGIN, no rollback after a commit. A
    connection returned with its transaction still open is rolled back."""
    import aiosqlite

    from pushgate.storage.database import driver_rows, open_database

    db = open_database(f"sqlite+aiosqlite:///{tmp_path / 'trips.db'}")
    try:
        async with db.writing() as conn:
            await driver_rows(conn, "CREATE TABLE t (x INTEGER)")
        trips: list[str] = []
        original = aiosqlite.Connection._execute

        async def counted(self, fn, *args, **kwargs):  # type: ignore[no-untyped-def]
            trips.append(getattr(fn, "__name__", repr(fn)))
            return await original(self, fn, *args, **kwargs)

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(aiosqlite.Connection, "_execute", counted)
            async with db.writing() as conn:
                await driver_rows(conn, "INSERT INTO t VALUES (1)")
            assert trips == ["_execute_fetchall", "_execute_fetchall", "commit"]
            trips.clear()
            async with db.write.connect() as conn:  # no commit
                await conn.exec_driver_sql("INSERT INTO t VALUES (2)")
            assert trips[-1] == "rollback"
            trips.clear()
            async with db.write.connect() as conn:  # a driver-level transaction left open
                await driver_rows(conn, "BEGIN IMMEDIATE")
                await driver_rows(conn, "INSERT INTO t VALUES (3)")
            assert trips[-1] == "rollback"
        async with db.read.connect() as conn:
            assert await driver_rows(conn, "SELECT x FROM t") == [(1,)]
    finally:
        await db.dispose()
