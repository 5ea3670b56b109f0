"""Fixtures of the integration suites: a migrated database on each engine, and each fake
provider, started for one test and stopped after it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from pushgate.storage.database import Database, open_database
from pushgate.storage.migrate import migrate
from pushgate.testing.fake_apns import FakeApns
from pushgate.testing.fake_fcm import FakeFcm
from pushgate.testing.fake_hms import FakeHms


@pytest.fixture
def apns() -> Iterator[FakeApns]:
    with FakeApns() as fake:
        yield fake


@pytest.fixture
def fcm() -> Iterator[FakeFcm]:
    with FakeFcm() as fake:
        yield fake


@pytest.fixture
def hms() -> Iterator[FakeHms]:
    with FakeHms() as fake:
        yield fake


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    """A migrated database on each engine (``database_url``), disposed afterwards."""
    database = open_database(database_url)
    await migrate(database)
    yield database
    await database.dispose()
