"""The retention sweep (services/retention.py) on both engines: what goes, what stays, ids that
never come back, batches that stay small, and two sweeps at once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from sqlalchemy import text

from pushgate.services.retention import DAY_MS, Retention, RetentionLoop, cutoff_for
from pushgate.storage.database import Database, now_ms, open_database
from pushgate.storage.delivery_writes import DeliveryWrites, NotificationRow
from pushgate.storage.migrate import migrate

DEVICES = 8
NOW = now_ms()
OLD = NOW - 40 * DAY_MS  # older than the 30 days the tests keep
CUTOFF = cutoff_for(30, NOW)


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = open_database(database_url)
    await migrate(database)
    async with database.write.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO accounts (id, name, user_token_hash, user_token_enc, created_ms) "
                "VALUES (1, 'a', 'h', 'e', 0)"
            )
        )
        await conn.execute(
            text(
                "INSERT INTO apps (id, account_id, title, app_key, secret_hash, secret_enc, "
                "created_ms) VALUES (1, 1, 'app', 'k', 'h', 'e', 0)"
            )
        )
        await conn.execute(
            text(
                "INSERT INTO campaigns (id, app_id, external_id, created_ms) "
                "VALUES (1, 1, 'spring', 0)"
            )
        )
        await conn.execute(
            text("INSERT INTO subscribers (id, account_id, app_id, created_ms) VALUES (1, 1, 1, 0)")
        )
        for device in range(1, DEVICES + 1):
            await conn.execute(
                text(
                    "INSERT INTO devices (id, account_id, app_id, subscriber_id, platform, "
                    "token_hash, enabled, created_ms) "
                    "VALUES (:id, 1, 1, 1, 'android', :hash, true, 0)"
                ),
                {"id": device, "hash": f"t{device}"},
            )
    yield database
    await database.dispose()


def _row(created: int, expires: int) -> NotificationRow:
    """A notification of account 1 and app 1 (the id is given on insert)."""
    return (
        0, 1, 1, None, None, "hi", "{}", created, expires, None, 1, None, None, None, 0, 0,
        None, None,
    )  # fmt: skip


@dataclass
class Store:
    db: Database

    async def notification(
        self, created: int, expires: int | None = None, statuses: list[str] | None = None
    ) -> int:
        """A notification with one delivery per status (to devices 1, 2...); its id is given
        as the delivery pipeline gives ids."""
        async with self.db.write.begin() as conn:
            (notification_id,) = await DeliveryWrites(
                self.db.write.dialect.name
            ).insert_notifications(
                conn, [_row(created, created + DAY_MS if expires is None else expires)]
            )
            for device, status in enumerate(statuses or [], start=1):
                await conn.execute(
                    text(
                        "INSERT INTO deliveries (notification_id, device_id, status, "
                        "attempts, created_ms, updated_ms) VALUES (:n, :d, :s, 1, :t, :t)"
                    ),
                    {"n": notification_id, "d": device, "s": status, "t": created},
                )
        return notification_id

    async def key(self, name: str, created: int, notification_id: int) -> None:
        async with self.db.write.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO idempotency_keys (account_id, key, fingerprint, status, "
                    "response, created_ms) VALUES (1, :key, 'f', 201, :n, :created)"
                ),
                {"key": name, "n": str(notification_id), "created": created},
            )

    async def rows(self, sql: str) -> list[tuple[object, ...]]:
        async with self.db.read.connect() as conn:
            return [tuple(row) for row in (await conn.execute(text(sql))).all()]

    async def notifications(self) -> list[int]:
        return [
            int(str(row[0])) for row in await self.rows("SELECT id FROM notifications ORDER BY id")
        ]

    async def deliveries(self) -> list[tuple[object, ...]]:
        return await self.rows(
            "SELECT notification_id, status FROM deliveries ORDER BY notification_id, device_id"
        )


ALL = ["delivered", "opened", "failed", "expired", "capped", "queued", "sent"]


async def test_old_final_deliveries_go_open_ones_and_recent_history_stay(db: Database) -> None:
    store = Store(db)
    finished = await store.notification(OLD, statuses=["delivered", "failed", "expired"])
    no_devices = await store.notification(OLD)
    mixed = await store.notification(OLD, statuses=ALL)
    # Made long ago, but its TTL (a scheduled send, a long TTL) ran out within the 30 days.
    long_lived = await store.notification(OLD, expires=NOW - DAY_MS, statuses=["delivered"])
    recent = await store.notification(NOW - DAY_MS, statuses=["delivered", "expired"])
    await store.key("old", OLD, finished)
    await store.key("recent", NOW - DAY_MS, recent)

    report = await Retention(db).sweep(CUTOFF)

    assert (report.deliveries, report.notifications, report.idempotency_keys) == (8, 2, 1)
    assert not report.skipped
    assert await store.notifications() == [mixed, long_lived, recent]
    assert no_devices not in await store.notifications()
    assert await store.deliveries() == [
        (mixed, "queued"),
        (mixed, "sent"),
        (long_lived, "delivered"),
        (recent, "delivered"),
        (recent, "expired"),
    ]
    assert await store.rows("SELECT key FROM idempotency_keys") == [("recent",)]
    assert await store.rows("SELECT external_id FROM campaigns") == [("spring",)]
    # Nothing more to do: a second sweep deletes nothing.
    again = await Retention(db).sweep(CUTOFF)
    assert (again.deliveries, again.notifications, again.idempotency_keys) == (0, 0, 0)


async def test_the_newest_notification_stays_so_its_id_is_never_given_again(
    db: Database,
) -> None:
    store = Store(db)
    ids = [await store.notification(OLD, statuses=["delivered"]) for _ in range(5)]
    assert ids == sorted(ids)

    report = await Retention(db).sweep(CUTOFF)

    assert (report.deliveries, report.notifications) == (5, 4)
    assert await store.notifications() == [ids[-1]]  # old, but the newest: kept, emptied
    assert await store.deliveries() == []
    writes = DeliveryWrites(db.write.dialect.name)
    async with db.write.begin() as conn:
        given = await writes.insert_notifications(conn, [_row(NOW, NOW), _row(NOW, NOW)])
        assert given == [ids[-1] + 1, ids[-1] + 2]
    assert await store.notification(NOW) > ids[-1]


async def test_sqlite_gives_a_deleted_newest_id_again_which_is_why_it_is_kept(
    db: Database,
) -> None:
    """The hazard itself: on SQLite an INTEGER PRIMARY KEY without AUTOINCREMENT is max + 1;
    PostgreSQL draws ids from a sequence, which never goes back."""
    store = Store(db)
    newest = [await store.notification(OLD) for _ in range(3)][-1]
    async with db.write.begin() as conn:
        await conn.execute(text("DELETE FROM notifications WHERE id = :id"), {"id": newest})
        writes = DeliveryWrites(db.write.dialect.name)
        (next_id,) = await writes.insert_notifications(conn, [_row(NOW, NOW)])
    assert next_id == newest if db.is_sqlite else next_id > newest


async def test_a_sweep_deletes_in_small_batches_and_keeps_queued_ones_between_them(
    db: Database,
) -> None:
    store = Store(db)
    pattern = ["delivered", "queued", "failed", "sent", "expired", "opened", "capped", "queued"]
    old = [await store.notification(OLD, statuses=pattern) for _ in range(12)]
    newest = await store.notification(NOW, statuses=["delivered"])
    retention = Retention(db, min_pause_seconds=0, batch=3)
    progress: list[int] = []

    report = await retention.sweep(CUTOFF, lambda r: progress.append(r.deliveries))

    assert report.deliveries == 12 * 5 and report.notifications == 0
    assert report.batches >= 6  # from 3 rows, at most doubling: 3 + 6 + ... + 48 < 96
    assert progress == sorted(progress) and progress[-1] == 60
    kept = await store.deliveries()
    assert kept == [(n, s) for n in old for s in ("queued", "sent", "queued")] + [
        (newest, "delivered")
    ]
    assert await retention.count(CUTOFF) == 0


async def test_two_sweeps_at_once_delete_each_row_once(db: Database) -> None:
    store = Store(db)
    for _ in range(20):
        await store.notification(OLD, statuses=["delivered"] * 4 + ["queued"])
    await store.notification(NOW)
    first, second = Retention(db, batch=8), Retention(db, batch=8)

    reports = await asyncio.gather(first.sweep(CUTOFF), second.sweep(CUTOFF))

    assert sum(r.deliveries for r in reports) == 80
    assert sum(r.notifications for r in reports) == 0
    if not db.is_sqlite:  # one at a time on PostgreSQL: the other one did nothing
        assert sorted(r.skipped for r in reports) == [False, True]
    assert len(await store.deliveries()) == 20


async def test_the_background_loop_sweeps_by_the_setting(db: Database) -> None:
    store = Store(db)
    await store.notification(OLD, statuses=["delivered"])
    await store.notification(NOW, statuses=["delivered"])
    loop = RetentionLoop(Retention(db), 30, interval=0.05, first=0)
    loop.start()
    try:
        for _ in range(100):
            if loop.last is not None:
                break
            await asyncio.sleep(0.05)
    finally:
        await loop.stop()
    assert loop.last is not None and loop.last.deliveries == 1
    assert len(await store.deliveries()) == 1
    off = RetentionLoop(Retention(db), 0, interval=0.05, first=0)
    off.start()  # 0 days: retention is off, no task at all
    await off.stop()
    assert off.last is None


async def test_a_cancelled_sweep_leaves_no_lock_behind(db: Database) -> None:
    store = Store(db)
    for _ in range(30):
        await store.notification(OLD, statuses=["delivered"] * 4)
    await store.notification(NOW)
    started = asyncio.Event()
    stopped = Retention(db, batch=1, min_pause_seconds=0.05)
    task = asyncio.create_task(stopped.sweep(CUTOFF, lambda _report: started.set()))
    await asyncio.wait_for(started.wait(), 10)
    advisory = "SELECT objid FROM pg_locks WHERE locktype = 'advisory'"
    if not db.is_sqlite:
        assert len(await store.rows(advisory)) == 1  # held while it sweeps
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    if not db.is_sqlite:  # no session holds the advisory lock any more
        assert await store.rows(advisory) == []

    report = await Retention(db).sweep(CUTOFF)  # not skipped

    assert not report.skipped and report.deliveries > 0
    assert await store.deliveries() == []
