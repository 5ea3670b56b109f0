"""Apply the Alembic migrations that ship inside the package."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

from pushgate.storage.database import Database

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


class MigrationError(RuntimeError):
    pass


def alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    return config


def _upgrade(connection: Connection) -> None:
    command.upgrade(alembic_config(connection), "head")


async def _sqlite_pragma(conn: AsyncConnection, statement: str) -> list[tuple[object, ...]]:
    """A PRAGMA outside any transaction (``foreign_keys`` is ignored inside one)."""
    raw = await conn.get_raw_connection()
    driver = raw.driver_connection
    assert driver is not None
    cursor = await driver.execute(statement)
    rows = list(await cursor.fetchall())
    await cursor.close()
    return rows


async def migrate(db: Database) -> None:
    """Bring the database schema to the newest revision (idempotent).

    On SQLite, a migration that rebuilds a table others refer to (ALTER TABLE cannot change
    constraints there) runs with foreign keys off, as SQLite prescribes; they are checked
    before they are turned on again."""
    if not db.is_sqlite:
        async with db.write.begin() as conn:
            await conn.run_sync(_upgrade)
        return
    async with db.write.connect() as conn:
        await _sqlite_pragma(conn, "PRAGMA foreign_keys=OFF")
        try:
            async with conn.begin():
                await conn.run_sync(_upgrade)
            broken = await _sqlite_pragma(conn, "PRAGMA foreign_key_check")
            if broken:
                raise MigrationError(f"foreign keys broken by the migration: {broken[:5]}")
        finally:
            await _sqlite_pragma(conn, "PRAGMA foreign_keys=ON")
