"""Engines for SQLite (embedded default) and PostgreSQL.

SQLite runs in WAL mode with a busy timeout; write transactions start with ``BEGIN IMMEDIATE``
so two writers never deadlock on a lock upgrade. Reads use a second engine with ordinary
deferred transactions so they never wait for the write lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import aiosqlite
from sqlalchemy import Table, event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import PoolResetState
from sqlalchemy.util import await_only

from pushgate.storage.params import markers

SQLITE_BUSY_TIMEOUT_MS = 10_000
WAL_SIZE_LIMIT_BYTES = 64 * 1024 * 1024
# SQLite connections of ``Database.read_once`` (each with its own aiosqlite thread).
RAW_READERS = 2


@dataclass(frozen=True, slots=True)
class Statement:
    """One statement written for the driver (its own parameter markers) with its parameters."""

    sql: str
    params: Sequence[Any] = ()


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class Database:
    """A write engine and a read engine (the same engine except on SQLite)."""

    url: str
    write: AsyncEngine
    read: AsyncEngine
    # Held by a WAL checkpoint and by each retention batch (services/retention.py) of this
    # process, so that the two never overlap.
    maintenance: asyncio.Lock = field(default_factory=asyncio.Lock)
    # Taken around every write transaction of this process on SQLite (see ``writing``).
    serial: asyncio.Lock = field(default_factory=asyncio.Lock)
    # SQLite: the connections ``read_once`` uses (opened on first use).
    _raw: list[Any] = field(default_factory=list)
    _raw_turn: int = 0
    _raw_opening: asyncio.Lock = field(default_factory=asyncio.Lock)
    # SQLite: the thread of ``write_statements`` (started on first use), with its connection.
    _script: ThreadPoolExecutor | None = None

    @functools.cached_property
    def _sqlite_path(self) -> str:
        return make_url(self.url).database or ""

    @property
    def is_sqlite(self) -> bool:
        return self.write.dialect.name == "sqlite"

    async def write_statements(self, statements: Sequence[Statement]) -> None:
        """Run ``statements``, in order, in one write transaction (all or none), for their
        effects. On SQLite (a database file) the whole transaction, ``BEGIN IMMEDIATE``, the
        statements and ``COMMIT``, is ONE trip to a thread with a connection of its own, in
        turn with this process's other writers (``serial``). Through a pooled connection the
        same transaction takes a trip per statement plus two, and each trip waits for a turn
        of a busy event loop while the transaction holds SQLite's one write lock. Elsewhere
        (PostgreSQL, a private SQLite database): ``writing`` with ``driver_rows``."""
        if self.is_sqlite and _a_plain_file(self._sqlite_path):
            if self._script is None:
                self._script = ThreadPoolExecutor(1, thread_name_prefix="pushgate-sqlite-script")
            loop = asyncio.get_running_loop()
            async with self.serial:
                await loop.run_in_executor(self._script, self._run_script, tuple(statements))
            return
        async with self.writing() as conn:
            for statement in statements:
                await driver_rows(conn, statement.sql, statement.params)

    def _run_script(self, statements: tuple[Statement, ...]) -> None:
        """``write_statements`` on the script thread (its connection is opened there)."""
        conn = _script_connection.conn
        if conn is None:
            conn = sqlite3.connect(
                self._sqlite_path, timeout=SQLITE_BUSY_TIMEOUT_MS / 1000, isolation_level=None
            )
            _configure(conn, immediate=True)
            _script_connection.conn = conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in statements:
                conn.execute(statement.sql, tuple(statement.params))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    @contextlib.asynccontextmanager
    async def writing(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction, like ``write.begin()``; every writer of the application
        uses it. On SQLite the writers of one process take turns on an asyncio lock first,
        in the order they came: SQLite has one write lock, and a ``BEGIN IMMEDIATE`` that
        finds it taken sleeps in SQLite's busy handler (1, 2, 5, ... up to 100 ms steps)
        instead of starting when the lock is free, so that with many writers at once one of
        them could wait past the busy timeout and fail. Other processes (a CLI command, a
        backup) still meet the busy handler. On PostgreSQL: no lock."""
        if not self.is_sqlite:
            async with self.write.begin() as conn:
                yield conn
            return
        async with self.serial, self.write.begin() as conn:
            yield conn

    async def checkpoint(self) -> None:
        """Copy committed pages from SQLite's write-ahead log into the database file without
        blocking the writer (PASSIVE). A no-op on PostgreSQL."""
        if not self.is_sqlite:
            return
        async with self.maintenance, self.read.connect() as conn:
            driver = (await conn.get_raw_connection()).driver_connection
            assert driver is not None
            await driver.execute("PRAGMA wal_checkpoint(PASSIVE)")

    async def read_once(self, sql: str, params: tuple[Any, ...]) -> list[Any]:
        """SQLite only: one SELECT (``sql`` compiled for SQLite, ``?`` parameters) in ONE trip
        to an aiosqlite thread, raw values (no SQLAlchemy result types). Through SQLAlchemy
        the same statement takes eight trips (BEGIN, cursor, execute, fetch, close...), each a
        thread wake-up both ways, and a pool checkout: on a hot path such as a device's
        (re)connection that costs more than the query. The statement runs on one of
        ``RAW_READERS`` connections of its own, outside any transaction: a single statement
        reads one consistent snapshot all the same."""
        path = self._sqlite_path
        if not _a_plain_file(path):
            async with self.read.connect() as conn:  # a private database: the pool's only
                return await driver_rows(conn, sql, params)
        return list(await (await self._raw_reader(path)).execute_fetchall(sql, params))

    async def _raw_reader(self, path: str) -> Any:
        if len(self._raw) < RAW_READERS:
            async with self._raw_opening:
                if len(self._raw) < RAW_READERS:
                    conn = await aiosqlite.connect(
                        path, timeout=SQLITE_BUSY_TIMEOUT_MS / 1000, isolation_level=None
                    )
                    await conn.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
                    await conn.execute("PRAGMA query_only=ON")
                    self._raw.append(conn)
                    return conn
        self._raw_turn = (self._raw_turn + 1) % len(self._raw)
        return self._raw[self._raw_turn]

    async def dispose(self) -> None:
        script, self._script = self._script, None
        if script is not None:
            await asyncio.get_running_loop().run_in_executor(script, _close_script_connection)
            script.shutdown(wait=True)
        raw, self._raw = self._raw, []
        for conn in raw:
            await conn.close()
        await self.write.dispose()
        if self.read is not self.write:
            await self.read.dispose()


async def driver_rows(conn: AsyncConnection, sql: str, params: Sequence[Any] = ()) -> list[Any]:
    """Run one statement written for the driver (its own parameter markers) in ``conn``'s
    transaction; its rows. On SQLite that is ONE trip to the aiosqlite thread (execute and
    fetch together) where SQLAlchemy takes three or four (cursor, execute, fetch, close), each
    a thread wake-up both ways that waits for the event loop: the hot write transactions hold
    SQLite's one write lock through all of them. On PostgreSQL it is ``exec_driver_sql``."""
    if conn.dialect.name == "sqlite":
        return list(await (await _driver(conn)).execute_fetchall(sql, tuple(params)))
    result = await conn.exec_driver_sql(sql, tuple(params))
    return list(result) if result.returns_rows else []


async def insert_returning_id(conn: AsyncConnection, table: Table, row: Mapping[str, Any]) -> int:
    """Insert one row into ``table`` in ``conn``'s transaction, in one trip to the driver
    (``driver_rows``); its new id."""
    columns = list(row)
    unknown = [name for name in columns if name not in table.c]
    if unknown:
        raise ValueError(f"{table.name} has no column {', '.join(unknown)}")
    marks = ", ".join(markers(conn.dialect.name == "postgresql", len(columns)))
    # Names from the table's own columns (checked above); values are bound.
    sql = f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES ({marks}) RETURNING id"  # noqa: S608
    rows = await driver_rows(conn, sql, tuple(row.values()))
    return int(rows[0][0])


async def _driver(conn: AsyncConnection) -> Any:
    """The aiosqlite connection under a SQLite ``conn``."""
    driver = (await conn.get_raw_connection()).driver_connection
    assert driver is not None
    return driver


def _sqlite_engine(url: str, *, immediate: bool) -> AsyncEngine:
    """``immediate``: the write engine. Its commits never run a WAL checkpoint themselves (that
    would stall the writer for tens of milliseconds now and then); ``Database.checkpoint``
    does it from a reader connection, and SQLite does it when the last connection closes."""
    # No rollback on every return to the pool: ``_on_reset`` rolls back only a transaction
    # that is still open (after a commit it would be one more trip to the driver's thread).
    engine = create_async_engine(
        url,
        connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
        pool_reset_on_return=None,
    )

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
        _configure(dbapi_connection, immediate=immediate)

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        # Straight to the driver: one trip to its thread, where ``exec_driver_sql`` takes
        # three (cursor, execute, close), each waiting for a turn of the event loop while
        # the write transactions of this process queue behind it.
        driver = connection.connection.driver_connection
        await_only(driver.execute_fetchall("BEGIN IMMEDIATE" if immediate else "BEGIN"))

    @event.listens_for(engine.sync_engine, "reset")
    def _on_reset(dbapi_connection: Any, record: Any, state: PoolResetState) -> None:
        if state.asyncio_safe and not state.terminate_only:
            driver = record.driver_connection
            if driver is not None and driver.in_transaction:
                dbapi_connection.rollback()

    return engine


def _configure(dbapi_connection: Any, *, immediate: bool) -> None:
    """The settings of every SQLite connection; ``immediate``: of a writer's."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    if immediate:
        cursor.execute("PRAGMA wal_autocheckpoint=0")
    cursor.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT_BYTES}")
    cursor.close()


class _ScriptConnection(threading.local):
    """The connection of a ``write_statements`` thread (one thread per ``Database``)."""

    conn: sqlite3.Connection | None = None


_script_connection = _ScriptConnection()


def _close_script_connection() -> None:
    conn, _script_connection.conn = _script_connection.conn, None
    if conn is not None:
        conn.close()


def _a_plain_file(path: str) -> bool:
    """Whether a SQLite database path names a file on disk (not ``:memory:`` or a URI)."""
    return bool(path) and path != ":memory:" and not path.startswith("file:")


def _private_file(path: str) -> None:
    """Create the SQLite file readable by this user only (it holds e-mail addresses and
    message text), or narrow an existing one to that. SQLite gives the ``-wal`` and ``-shm``
    files the database file's permissions."""
    if not _a_plain_file(path):
        return
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except FileNotFoundError:  # no such directory: SQLite will say so when it connects
        return
    try:
        if os.fstat(fd).st_mode & 0o077:
            os.fchmod(fd, 0o600)
    finally:
        os.close(fd)
    for suffix in ("-wal", "-shm", "-journal"):  # left by an earlier, wider database file
        with contextlib.suppress(FileNotFoundError):
            if os.stat(path + suffix).st_mode & 0o077:
                os.chmod(path + suffix, 0o600)


def open_database(url: str) -> Database:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        _private_file(parsed.database or "")
        return Database(
            url=url,
            write=_sqlite_engine(url, immediate=True),
            read=_sqlite_engine(url, immediate=False),
        )
    engine = create_async_engine(url, pool_size=10, max_overflow=10, pool_pre_ping=True)
    return Database(url=url, write=engine, read=engine)
