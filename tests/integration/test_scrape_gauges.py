"""The gauges a scrape reads first (``Runtime.refresh_metrics``), on SQLite and PostgreSQL:
database connections in use per engine, and each queue's oldest due job."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from pushgate.config import Settings
from pushgate.runtime import Runtime, build_runtime
from pushgate.services.delivery_jobs import FANOUT_QUEUE
from pushgate.storage.migrate import migrate

POOL = "pushgate_db_pool_checked_out_connections"
AGE = "pushgate_queue_oldest_job_age_seconds"


@pytest.fixture
async def rt(database_url: str, tmp_path: Path) -> AsyncIterator[Runtime]:
    runtime = build_runtime(
        Settings(database_url=database_url, data_dir=tmp_path, secret_key="s" * 40)
    )
    await migrate(runtime.db)
    await runtime.start(accepting=False, working=False)
    yield runtime
    await runtime.stop()


async def scraped(rt: Runtime) -> dict[tuple[str, str], float]:
    await rt.refresh_metrics()
    found = {}
    for family in text_string_to_metric_families(rt.metrics.render().decode()):
        for sample in family.samples:
            if sample.name in (POOL, AGE):
                label = sample.labels.get("engine") or sample.labels["queue"]
                found[(sample.name, label)] = sample.value
    return found


async def test_pool_use_is_read_per_engine(rt: Runtime) -> None:
    async with rt.db.write.connect() as held:
        await held.exec_driver_sql("SELECT 1")
        found = await scraped(rt)
        assert found[(POOL, "write")] == 1
    if rt.db.is_sqlite:
        assert found[(POOL, "read")] == 0  # its connections went back after the queue reads
    else:
        assert (POOL, "read") not in found  # one engine serves both
    assert (await scraped(rt))[(POOL, "write")] == 0


async def test_the_oldest_due_job_of_each_queue(rt: Runtime) -> None:
    found = await scraped(rt)
    assert found[(AGE, FANOUT_QUEUE)] == 0 and found[(AGE, "deliver.ios")] == 0
    await rt.jobs.enqueue(FANOUT_QUEUE, [b"waiting"])
    await asyncio.sleep(0.3)
    found = await scraped(rt)
    assert 0.25 <= found[(AGE, FANOUT_QUEUE)] < 5
    assert found[(AGE, "deliver.ios")] == 0
