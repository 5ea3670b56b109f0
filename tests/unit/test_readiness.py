"""Readiness checks: each part answers, fails with its reason, or runs out of time."""

from __future__ import annotations

import asyncio

import pytest

from pushgate.observability import health
from pushgate.observability.health import run_checks


async def test_every_part_is_reported_and_a_failure_names_its_reason(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(health, "CHECK_TIMEOUT_SECONDS", 0.2)

    async def fine() -> None:
        pass

    async def refused() -> None:
        raise ConnectionError("Connection refused\nsecond line")

    async def silent() -> None:
        await asyncio.sleep(5)

    ok, report = await run_checks({"database": fine})
    assert ok and report == {"database": "ok"}
    ok, report = await run_checks({"database": fine, "redis": refused, "other": silent})
    assert not ok
    assert report == {
        "database": "ok",
        "redis": "ConnectionError: Connection refused",
        "other": "no answer within 0.2 s",
    }
