"""Fixtures of the provider transport suites: each fake provider, started for one test and
stopped after it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

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
