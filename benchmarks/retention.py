"""Retention benchmark: the write lock a prune holds, what it costs accepted notifications, and
the bytes a delivery takes on disk.

Builds a database of --old-notifications notifications whose TTL ran out 40 days ago, each
delivered to every one of --devices devices (1,000 x 1,000 = 1,000,000 old deliveries by
default; statuses mixed, 1% still queued), plus --recent-notifications recent ones, in bulk
``INSERT ... SELECT`` statements (not through the API). Then, on SQLite (a temp dir) and on
PostgreSQL (a scratch database on a loopback server, dropped afterwards):

1. storage: bytes per delivery of the ``deliveries`` table and its index (SQLite ``dbstat``;
   PostgreSQL ``pg_relation_size`` / ``pg_indexes_size`` / ``pg_total_relation_size``);
2. baseline: for --probe-seconds, the real delivery pipeline (``DeliveryPipeline.submit``)
   stores one notification every --probe-interval seconds; the time each takes to be
   committed (after a 1.5 s warm-up: the pipeline's first TTL sweep marks the old queued
   deliveries expired, so the prune finds them final);
3. prune: ``Retention.sweep`` with a 30-day cut-off (the code ``pushgate database prune`` and
   the servers run) while the same probe goes on: the longest time one batch held the write
   lock, the batches' sizes, deliveries deleted per second, and the probe's latencies next to
   the baseline's;
4. after: what is left, and the storage again (SQLite keeps the freed pages for new rows).

    .venv/bin/python -m benchmarks.retention
    .venv/bin/python -m benchmarks.retention --engines sqlite --devices 100 --json-out r.json
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from typing import Any

from sqlalchemy import text

from benchmarks.harness import HarnessError
from benchmarks.harness.report import (
    Log,
    add_output_options,
    print_targets,
    run_and_report,
    target,
    utc_now,
)
from benchmarks.harness.scratch_db import add_engine_options, migrated_database, per_engine
from pushgate.app import tune_interpreter
from pushgate.observability.metrics import Metrics
from pushgate.queue.embedded import EmbeddedQueue
from pushgate.services import pipeline
from pushgate.services.pipeline import DeliveryPipeline, NewNotification
from pushgate.services.retention import DAY_MS, Report, Retention, cutoff_for
from pushgate.storage.database import Database, now_ms

# Notifications per INSERT ... SELECT of deliveries.
FILL_CHUNK = 50


def _series(db: Database, count_param: str) -> str:
    """Rows 1..N in column ``i`` (N the named parameter)."""
    if db.is_sqlite:
        return (
            "(WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s "
            f"WHERE i < :{count_param}) SELECT i FROM s)"
        )
    return f"(SELECT generate_series(1, :{count_param}) AS i)"


# Of every 100 deliveries: 1 still queued (kept), 3 failed, 4 expired, 8 opened, the rest
# delivered.
STATUS = (
    "CASE WHEN (n.id * 7 + d.id) % 100 = 0 THEN 'queued' "
    "WHEN (n.id * 7 + d.id) % 100 < 4 THEN 'failed' "
    "WHEN (n.id * 7 + d.id) % 100 < 8 THEN 'expired' "
    "WHEN (n.id * 7 + d.id) % 100 < 16 THEN 'opened' ELSE 'delivered' END"
)
REASON = (
    "CASE WHEN (n.id * 7 + d.id) % 100 BETWEEN 1 AND 3 THEN 'Unregistered: the app was removed' END"
)


async def fill(db: Database, devices: int, old: int, recent: int, now: int) -> None:
    true = "1" if db.is_sqlite else "true"
    async with db.write.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO accounts (id, name, user_token_hash, user_token_enc, created_ms) "
                "VALUES (1, 'bench', 'h', 'e', 0)"
            )
        )
        await conn.execute(
            text(
                "INSERT INTO apps (id, account_id, title, app_key, secret_hash, secret_enc, "
                "created_ms) VALUES (1, 1, 'bench', 'bench-app', 'h', 'e', 0)"
            )
        )
        await conn.execute(
            text(
                "INSERT INTO campaigns (id, app_id, external_id, created_ms) "
                "VALUES (1, 1, 'spring', 0)"
            )
        )
        await conn.execute(
            text(
                "INSERT INTO subscribers (id, account_id, app_id, created_ms) "
                f"SELECT i, 1, 1, 0 FROM {_series(db, 'count')} s"
            ),
            {"count": devices},
        )
        await conn.execute(
            text(
                "INSERT INTO devices (id, account_id, app_id, subscriber_id, platform, "
                f"token_hash, enabled, created_ms) SELECT i, 1, 1, i, 'android', "
                f"'bench-' || i, {true}, 0 FROM {_series(db, 'count')} s"
            ),
            {"count": devices},
        )
        # Old ones: one a minute, 40 days ago and later, TTL a day; then the recent ones.
        start = now - 40 * DAY_MS - old * 60_000
        for first, count, created in ((0, old, start), (old, recent, now - 3_600_000)):
            await conn.execute(
                text(
                    "INSERT INTO notifications (id, account_id, app_id, event, title, message, "
                    "data, created_ms, expires_ms, campaign_id) "
                    "SELECT :first + i, 1, 1, 'order_shipped', 'Your order', "
                    "'Your order #' || i || ' has shipped and arrives tomorrow', "
                    f"'{{\"order\": 12345}}', CAST(:created AS BIGINT) + i * 60000, "
                    "CAST(:created AS BIGINT) + i * 60000 + 86400000, 1 "
                    f"FROM {_series(db, 'count')} s"
                ),
                {"first": first, "count": count, "created": created},
            )
        if not db.is_sqlite:
            await conn.execute(
                text(
                    "SELECT setval(pg_get_serial_sequence('notifications', 'id'), "
                    "(SELECT max(id) FROM notifications))"
                )
            )
    for first in range(1, old + recent + 1, FILL_CHUNK):
        async with db.write.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO deliveries (notification_id, device_id, status, transport, "
                    "attempts, reason, created_ms, sent_ms, delivered_ms, updated_ms) "
                    f"SELECT n.id, d.id, {STATUS}, 'android', 1, {REASON}, n.created_ms, "
                    "n.created_ms + 150, n.created_ms + 900, n.created_ms + 900 "
                    "FROM notifications n CROSS JOIN devices d "
                    "WHERE n.id BETWEEN :a AND :b ORDER BY n.id, d.id"
                ),
                {"a": first, "b": first + FILL_CHUNK - 1},
            )
    if db.is_sqlite:
        # A server's checkpoint task keeps the write-ahead log short; after the bulk fill it
        # holds the whole database: copy it into the file before measuring.
        async with db.read.connect() as conn:
            await conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    else:
        async with db.write.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text("VACUUM ANALYZE"))


async def storage(db: Database) -> dict[str, Any]:
    """Bytes of the deliveries table and its index, per stored delivery."""
    async with db.read.connect() as conn:
        rows = int((await conn.execute(text("SELECT count(*) FROM deliveries"))).scalar_one())
        if db.is_sqlite:
            sizes = dict(
                (
                    await conn.execute(
                        text(
                            "SELECT name, sum(pgsize) FROM dbstat WHERE name IN "
                            "('deliveries', 'ix_deliveries_device_id_notification_id') "
                            "GROUP BY name"
                        )
                    )
                ).all()
            )
            table = int(sizes.get("deliveries", 0))
            index = int(sizes.get("ix_deliveries_device_id_notification_id", 0))
            page_size = int((await conn.execute(text("PRAGMA page_size"))).scalar_one())
            pages = int((await conn.execute(text("PRAGMA page_count"))).scalar_one())
            free = int((await conn.execute(text("PRAGMA freelist_count"))).scalar_one())
            whole, free_bytes = pages * page_size, free * page_size
        else:
            table, index, whole = (
                int(v)
                for v in (
                    await conn.execute(
                        text(
                            "SELECT pg_relation_size('deliveries'), pg_indexes_size('deliveries'), "
                            "pg_database_size(current_database())"
                        )
                    )
                ).one()
            )
            free_bytes = 0
    total = table + index
    return {
        "deliveries": rows,
        "table_bytes": table,
        "index_bytes": index,
        "bytes_per_delivery": round(total / rows, 1) if rows else None,
        "table_bytes_per_delivery": round(table / rows, 1) if rows else None,
        "database_bytes": whole,
        "free_bytes": free_bytes,
    }


class Probe:
    """Accepted notifications through the real pipeline, one at a time, paced."""

    def __init__(self, db: Database, interval: float) -> None:
        self._pipeline = DeliveryPipeline(db, EmbeddedQueue(db), Metrics())
        self._interval = interval

    def start(self) -> None:
        self._pipeline.start()

    async def stop(self) -> None:
        await self._pipeline.stop()

    async def run(self, until: asyncio.Event, deadline: float) -> list[float]:
        latencies: list[float] = []
        note = NewNotification(
            account_id=1,
            app_id=1,
            event=None,
            title="probe",
            message="a probe",
            data_json="{}",
            ttl_seconds=3600,
        )
        while not until.is_set() and time.monotonic() < deadline:
            started = time.perf_counter()
            await self._pipeline.submit(note)
            latencies.append(time.perf_counter() - started)
            await asyncio.sleep(self._interval)
        return latencies


def _ms(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)
    return {
        "count": len(ordered),
        "p50": round(statistics.median(ordered) * 1000, 2),
        "p99": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 2),
        "max": round(ordered[-1] * 1000, 2),
    }


async def run_engine(engine: str, args: argparse.Namespace) -> dict[str, Any]:
    postgres_url = None if engine == "sqlite" else args.postgres_url
    async with migrated_database("retention", postgres_url) as db:
        now = now_ms()
        started = time.perf_counter()
        await fill(db, args.devices, args.old_notifications, args.recent_notifications, now)
        fill_s = time.perf_counter() - started
        before = await storage(db)
        print(f"{engine}: {before['deliveries']:,} deliveries stored in {fill_s:.1f} s")

        tune_interpreter()  # as `pushgate serve` does: GC and GIL switch interval
        probe = Probe(db, args.probe_interval)
        probe.start()
        try:
            never = asyncio.Event()
            # The pipeline's first TTL sweep looks at every notification (it marks the
            # queued deliveries of the old ones expired): let it pass before measuring.
            await probe.run(never, time.monotonic() + 1.5)
            baseline = await probe.run(never, time.monotonic() + args.probe_seconds)

            retention = Retention(db)
            holds: list[float] = []
            sizes: list[int] = []

            def record(report: Report) -> None:
                holds.append(report.last_hold_seconds)
                sizes.append(report.last_batch)

            done = asyncio.Event()
            during_task = asyncio.create_task(probe.run(done, time.monotonic() + args.time_limit))
            try:
                report = await asyncio.wait_for(
                    retention.sweep(cutoff_for(30, now), record), args.time_limit
                )
            except TimeoutError as exc:
                raise HarnessError(f"the sweep took longer than {args.time_limit} s") from exc
            finally:
                done.set()
                during = await during_task
        finally:
            await probe.stop()
        after = await storage(db)
        async with db.read.connect() as conn:
            left_old = int(
                (
                    await conn.execute(
                        text("SELECT count(*) FROM deliveries WHERE notification_id <= :old"),
                        {"old": args.old_notifications},
                    )
                ).scalar_one()
            )
    expected = args.old_notifications * args.devices
    return {
        "engine": engine,
        "old_deliveries": expected,
        "fill_seconds": round(fill_s, 1),
        "storage_before": before,
        "storage_after": after,
        "sweep": {
            "deliveries": report.deliveries,
            "notifications": report.notifications,
            "batches": report.batches,
            "seconds": round(report.seconds, 2),
            "deliveries_per_second": round(report.deliveries / report.seconds)
            if report.seconds
            else None,
            "max_hold_ms": round(report.max_hold_seconds * 1000, 2),
            "p99_hold_ms": round(sorted(holds)[int(len(holds) * 0.99)] * 1000, 2)
            if holds
            else None,
            "batches_over_50ms": sum(1 for hold in holds if hold > 0.05),
            "slowest_batches": [
                {"hold_ms": round(hold * 1000, 2), "rows": rows}
                for hold, rows in sorted(zip(holds, sizes, strict=True), reverse=True)[:5]
            ],
            "p50_hold_ms": round(statistics.median(holds) * 1000, 2) if holds else None,
            "batch_rows_median": int(statistics.median(sizes)) if sizes else None,
            "max_batch_rows": report.max_batch,
            "old_deliveries_left": left_old,
        },
        "probe_baseline_ms": _ms(baseline),
        "probe_during_sweep_ms": _ms(during),
    }


TARGET_HOLD_MS = 50.0


def _targets(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        target(
            f"{r['engine']}: no prune batch holds the write lock {TARGET_HOLD_MS:.0f} ms or more",
            f"longest hold {r['sweep']['max_hold_ms']} ms",
            r["sweep"]["max_hold_ms"] < TARGET_HOLD_MS,
            r["sweep"]["max_hold_ms"],
        )
        for r in results
    ]


def table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| engine | old deliveries | deleted | batches | longest lock hold | median hold | "
        "median batch | deleted/s | probe p50 / p99 / max, baseline | during the sweep |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        s, b, d = r["sweep"], r["probe_baseline_ms"], r["probe_during_sweep_ms"]
        lines.append(
            f"| {r['engine']} | {r['old_deliveries']:,} | {s['deliveries']:,} | {s['batches']} | "
            f"**{s['max_hold_ms']} ms** | {s['p50_hold_ms']} ms | {s['batch_rows_median']:,} | "
            f"{s['deliveries_per_second']:,} | {b.get('p50')} / {b.get('p99')} / {b.get('max')} "
            f"ms | {d.get('p50')} / {d.get('p99')} / {d.get('max')} ms |"
        )
    lines += [
        "",
        "| engine | bytes per delivery (table + index) | table only | deliveries table + index "
        "| database | after the prune: database, free |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        b, a = r["storage_before"], r["storage_after"]
        lines.append(
            f"| {r['engine']} | **{b['bytes_per_delivery']}** | {b['table_bytes_per_delivery']} "
            f"| {(b['table_bytes'] + b['index_bytes']) / 2**20:.1f} MiB "
            f"| {b['database_bytes'] / 2**20:.1f} MiB "
            f"| {a['database_bytes'] / 2**20:.1f} MiB, {a['free_bytes'] / 2**20:.1f} MiB |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--devices", type=int, default=1000, help="devices (1000)")
    parser.add_argument(
        "--old-notifications", type=int, default=1000, help="notifications 40 days old (1000)"
    )
    parser.add_argument(
        "--recent-notifications", type=int, default=10, help="recent notifications, kept (10)"
    )
    parser.add_argument(
        "--probe-seconds", type=float, default=3.0, help="baseline probe duration (3)"
    )
    parser.add_argument(
        "--probe-interval", type=float, default=0.01, help="pause between two probes (0.01)"
    )
    parser.add_argument("--time-limit", type=float, default=300.0, help="sweep limit, s (300)")
    add_engine_options(parser)
    parser.add_argument(
        "--no-checkpoints",
        action="store_true",
        help="SQLite: no WAL checkpoints during the run (a server checkpoints every second)",
    )
    add_output_options(parser, keep_data=False)
    args = parser.parse_args(argv)
    if args.no_checkpoints:
        pipeline.CHECKPOINT_INTERVAL_SECONDS = 1e9

    if not 1 <= args.devices <= 100_000 or not 1 <= args.old_notifications <= 100_000:
        parser.error("--devices and --old-notifications must be 1..100000")
    if args.devices * args.old_notifications > 20_000_000:
        parser.error("at most 20,000,000 old deliveries")
    return run_and_report(args, run, print_table)


def run(args: argparse.Namespace, log: Log) -> dict[str, Any]:
    results = per_engine(args.engines, lambda engine: run_engine(engine, args))
    return {
        "benchmark": "retention",
        "date": utc_now(),
        "results": results,
        "targets": _targets(results),
    }


def print_table(r: dict[str, Any]) -> None:
    print(table(r["results"]))
    print_targets(r["targets"])


if __name__ == "__main__":
    sys.exit(main())
