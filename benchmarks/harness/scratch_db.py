"""Scratch PostgreSQL databases for benchmarks: made on a loopback server, dropped afterwards.

    name, url = await create_database(admin_url, "stats")      # pushgate_stats_<random>
    ...
    await drop_database(admin_url, name)

``create_scratch`` / ``drop_scratch`` do the same from synchronous code (outside an event loop).
``migrated_database`` yields a migrated ``Database``: a scratch PostgreSQL database, or a SQLite
file in a temporary directory. A URL that is not PostgreSQL or not on loopback is refused with
``ScratchError``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url

from benchmarks.harness import HarnessError
from pushgate.storage.database import Database, open_database
from pushgate.storage.migrate import migrate

ENGINES = ("sqlite", "postgresql")
LOOPBACK = (None, "", "localhost", "127.0.0.1", "::1")


class ScratchError(Exception):
    pass


def _dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def _admin(url: str, sql: str) -> None:
    conn = await asyncpg.connect(_dsn(url), timeout=10)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def create_database(admin_url: str, label: str) -> tuple[str, str]:
    """A new empty database on the server of ``admin_url``: (its name, its asyncpg URL)."""
    u = make_url(admin_url)
    if u.get_backend_name() != "postgresql":
        raise ScratchError(f"a PostgreSQL URL is needed, got {u.drivername}")
    if u.host not in LOOPBACK:
        raise ScratchError(f"refusing non-loopback database host {u.host!r}")
    name = f"pushgate_{label}_{uuid.uuid4().hex[:12]}"
    try:
        await _admin(admin_url, f'CREATE DATABASE "{name}"')
    except (OSError, asyncpg.PostgresError) as exc:
        raise ScratchError(f"cannot create a scratch database on {u.host}: {exc}") from exc
    scratch = u.set(database=name, drivername="postgresql+asyncpg")
    return name, scratch.render_as_string(hide_password=False)


async def drop_database(admin_url: str, name: str) -> None:
    with contextlib.suppress(OSError, asyncpg.PostgresError):
        await _admin(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def create_scratch(admin_url: str, label: str) -> tuple[str, str]:
    return asyncio.run(create_database(admin_url, label))


def drop_scratch(admin_url: str, name: str) -> None:
    asyncio.run(drop_database(admin_url, name))


@contextlib.asynccontextmanager
async def migrated_database(label: str, postgres_url: str | None) -> AsyncIterator[Database]:
    """A migrated database for one run, gone afterwards: a scratch database on the PostgreSQL
    server of ``postgres_url``, or (None) a SQLite file in a temporary directory."""
    if postgres_url is None:
        with tempfile.TemporaryDirectory(prefix=f"pushgate-bench-{label}-") as tmp:
            db = open_database(f"sqlite+aiosqlite:///{Path(tmp) / 'pushgate.db'}")
            try:
                await migrate(db)
                yield db
            finally:
                await db.dispose()
        return
    name, url = await create_database(postgres_url, label)
    try:
        db = open_database(url)
        try:
            await migrate(db)
            yield db
        finally:
            await db.dispose()
    finally:
        await drop_database(postgres_url, name)


def per_engine(
    engines: list[str], measure: Callable[[str], Coroutine[Any, Any, dict[str, Any]]]
) -> list[dict[str, Any]]:
    """``measure(engine)`` for each engine ("sqlite", "postgresql"), each in an event loop of
    its own; a ``ScratchError`` (the PostgreSQL server refused) as ``HarnessError``."""
    try:
        return [asyncio.run(measure(engine)) for engine in engines]
    except ScratchError as exc:
        raise HarnessError(f"--postgres-url: {exc}") from exc


def _engines(value: str) -> list[str]:
    engines = [e.strip() for e in value.split(",") if e.strip()]
    if unknown := set(engines) - set(ENGINES):
        raise argparse.ArgumentTypeError(f"unknown engines: {', '.join(sorted(unknown))}")
    return engines


def add_engine_options(parser: argparse.ArgumentParser) -> None:
    """--engines (comma-separated, of ``ENGINES``; all by default; a list in ``args``) and
    --postgres-url (``PUSHGATE_TEST_POSTGRES_URL`` or a loopback default), for ``per_engine``."""
    parser.add_argument(
        "--engines",
        type=_engines,
        default=",".join(ENGINES),
        help="comma-separated: sqlite,postgresql",
    )
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get(
            "PUSHGATE_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
        ),
        help="an admin URL of a loopback PostgreSQL server to create the scratch database on",
    )
