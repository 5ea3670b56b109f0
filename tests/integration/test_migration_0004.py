"""Migration 0004 moves account-wide devices and subscribers into app scope (see its
docstring), on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from alembic import command
from sqlalchemy import Connection, text

from pushgate.storage.database import Database, open_database
from pushgate.storage.migrate import alembic_config, migrate


def _to_0003(connection: Connection) -> None:
    command.upgrade(alembic_config(connection), "0003")


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = open_database(database_url)
    async with database.write.begin() as conn:
        await conn.run_sync(_to_0003)
    yield database
    await database.dispose()


ROWS = """
INSERT INTO accounts (id, name, user_token_hash, user_token_enc, created_ms) VALUES
  (1, 'a', 'h1', 'x', 0), (2, 'b', 'h2', 'x', 0);
INSERT INTO apps (id, account_id, title, app_key, secret_hash, secret_enc, created_ms) VALUES
  (10, 1, 'A', 'ka', 'x', 'x', 0), (11, 1, 'B', 'kb', 'x', 'x', 0);
INSERT INTO subscribers (id, account_id, external_id, email, created_ms) VALUES
  (1, 1, 'ann', 'ann@example.com', 0),
  (2, 1, 'bob', 'shared@example.com', 0),
  (3, 1, 'cat', 'shared@example.com', 0),
  (4, 2, NULL, NULL, 0);
INSERT INTO devices (id, account_id, subscriber_id, platform, token_hash, push_token_hash,
                     enabled, created_ms) VALUES
  (1, 1, 1, 'channel', 't1', NULL, {true}, 0),
  (2, 1, 1, 'ios', 't2', 'p2', {true}, 0),
  (3, 1, 1, 'android', 't3', 'p3', {true}, 0),
  (4, 1, 2, 'ios', 't4', 'p4', {true}, 0),
  (5, 1, 3, 'ios', 't5', 'p5', {true}, 0),
  (6, 2, 4, 'web', 't6', 'p6', {true}, 0);
INSERT INTO notifications (id, account_id, app_id, message, data, created_ms, expires_ms)
  VALUES (1, 1, 11, 'm', '{{}}', 0, 1), (2, 1, 10, 'm', '{{}}', 0, 1);
INSERT INTO deliveries (notification_id, device_id, status, transport, attempts, created_ms,
                        updated_ms) VALUES
  (1, 3, 'sent', 'android', 1, 0, 0),
  (2, 3, 'failed', 'android', 1, 0, 0)
"""


async def test_existing_devices_and_subscribers_move_into_app_scope(db: Database) -> None:
    true = "true" if not db.is_sqlite else "1"
    async with db.write.begin() as conn:
        for statement in ROWS.format(true=true).split(";"):
            await conn.execute(text(statement))
        if not db.is_sqlite:  # rows made by the application draw their ids from sequences
            for table in ("accounts", "apps", "subscribers", "devices", "notifications"):
                await conn.execute(
                    text(
                        f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                        f"(SELECT max(id) FROM {table}))"
                    )
                )
    await migrate(db)
    async with db.read.connect() as conn:
        devices = {
            row.id: (row.app_id, row.subscriber_id, bool(row.enabled))
            for row in await conn.execute(
                text("SELECT id, app_id, subscriber_id, enabled FROM devices")
            )
        }
        subscribers = {
            row.id: (row.app_id, row.external_id, row.email)
            for row in await conn.execute(
                text("SELECT id, app_id, external_id, email FROM subscribers")
            )
        }
    # The channel device stays the account's own; the Android phone goes to the app whose
    # notification its provider accepted (B); the other push devices to the oldest app (A);
    # the web device of an account without apps is disabled.
    assert devices[1] == (None, 1, True)
    assert devices[2][0] == 10 and devices[3][0] == 11
    assert devices[6] == (None, 4, False)
    # Ann had devices in three scopes: she is herself in one and copied into the others.
    ann = {devices[n][1] for n in (1, 2, 3)}
    assert len(ann) == 3
    assert {subscribers[s][0] for s in ann} == {None, 10, 11}
    assert {subscribers[s][1:] for s in ann} == {("ann", "ann@example.com")}
    # Bob and Cat shared an e-mail address in app A: it stays with Bob, the older.
    assert subscribers[devices[4][1]] == (10, "bob", "shared@example.com")
    assert subscribers[devices[5][1]] == (10, "cat", None)
