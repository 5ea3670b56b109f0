"""Shared fixtures: database URLs for every storage engine, with real servers.

PostgreSQL tests use ``PUSHGATE_TEST_POSTGRES_URL`` (default: the local server, database
``test``). Each test gets a database of its own, dropped afterwards. When the server cannot be
reached they skip with the reason, unless ``PUSHGATE_REQUIRE_SERVICES=1`` (set by .ci/run),
where they fail.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.engine import make_url

DEFAULT_POSTGRES_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"


def services_required() -> bool:
    return os.environ.get("PUSHGATE_REQUIRE_SERVICES") == "1"


def postgres_url() -> str:
    return os.environ.get("PUSHGATE_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL)


def _asyncpg_dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def _admin_execute(sql: str) -> None:
    connection = await asyncpg.connect(_asyncpg_dsn(postgres_url()), timeout=5)
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


def _postgres_execute(sql: str) -> None:
    """Run one administrative statement (CREATE/DROP DATABASE) on its own event loop."""
    asyncio.run(_admin_execute(sql))


@pytest.fixture
def postgres_database_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    name = f"pushgate_test_{uuid.uuid4().hex[:12]}"
    try:
        _postgres_execute(f'CREATE DATABASE "{name}"')
    except (OSError, asyncpg.PostgresError) as exc:
        message = f"PostgreSQL at {postgres_url()} is unreachable: {exc}"
        if services_required():
            pytest.fail(message + " (PUSHGATE_REQUIRE_SERVICES=1)")
        pytest.skip(message)
    try:
        yield make_url(postgres_url()).set(database=name).render_as_string(hide_password=False)
    finally:
        _postgres_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Every storage test runs on both engines."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'pushgate.db'}"
    return str(request.getfixturevalue("postgres_database_url"))


DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


def redis_test_url() -> str:
    return os.environ.get("PUSHGATE_TEST_REDIS_URL", DEFAULT_REDIS_URL)


@pytest.fixture
def redis_url() -> Iterator[str]:
    """The test Redis server's URL, after checking that it answers (skip, or fail when
    services are required). Tests use a random key prefix of their own and clean it up."""
    import redis

    url = redis_test_url()
    client = redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=3)
    try:
        client.ping()
    except (redis.RedisError, OSError) as exc:
        message = f"Redis at {url} is unreachable: {exc}"
        if services_required():
            pytest.fail(message + " (PUSHGATE_REQUIRE_SERVICES=1)")
        pytest.skip(message)
    finally:
        client.close()
    yield url


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix of this test's own on the test Redis server; its keys are deleted after."""
    import redis

    prefix = f"pgtest-{uuid.uuid4().hex[:12]}"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()
