"""Statistics benchmark: a campaign's and a notification's counts at a million deliveries.

Stores one app with --devices devices and a campaign of --notifications notifications, each
delivered to every device (``devices x notifications`` deliveries; 100,000 x 10 = 1,000,000
by default), with statuses spread as a real campaign's are (mostly delivered, some sent,
opened, failed with a few reasons, expired, capped). Then it times, --rounds times each, the
queries the native API answers with (``StatsService``):

- ``campaign``      - ``GET /api/v1/apps/{app_id}/campaigns/{campaign_id}``: every delivery of
                      the campaign counted by status and failure reason;
- ``notification``  - ``GET /api/v1/notifications/{id}/stats``: one notification's deliveries.

The baseline in the same run is a bare ``SELECT count(*)`` over the same deliveries (the
least any exact count can cost), so the result is also a ratio. Runs on SQLite in a temp dir
and, with --postgres-url (default: $PUSHGATE_TEST_POSTGRES_URL or the local test server), on a
temporary PostgreSQL database that is dropped afterwards.

    .venv/bin/python -m benchmarks.stats
    .venv/bin/python -m benchmarks.stats --devices 20000 --engines sqlite --json-out s.json
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Coroutine
from typing import Any

from sqlalchemy import func, select, text

from benchmarks.harness import HarnessError
from benchmarks.harness.report import (
    Log,
    add_output_options,
    print_targets,
    run_and_report,
    utc_now,
)
from benchmarks.harness.scratch_db import add_engine_options, migrated_database, per_engine
from pushgate.services.stats import StatsService
from pushgate.storage.database import Database
from pushgate.storage.models import deliveries, notifications

# (status, reason) by share of every 100 deliveries.
MIX: tuple[tuple[str, str | None, int], ...] = (
    ("delivered", None, 70),
    ("sent", None, 10),
    ("opened", None, 8),
    ("failed", "BadDeviceToken: the token is not valid", 3),
    ("failed", "Unregistered: the app was removed", 2),
    ("failed", "TooManyRequests: slow down", 1),
    ("expired", None, 4),
    ("capped", "capped: at most 3 notifications per subscriber per day", 2),
)
PATTERN = [(status, reason) for status, reason, share in MIX for _ in range(share)]
CHUNK = 5000


async def fill(db: Database, devices: int, notification_count: int) -> tuple[int, str, int]:
    """The app, campaign and deliveries; the account id, app key and a notification id."""
    now = int(time.time() * 1000)
    async with db.write.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO accounts (id, name, user_token_hash, user_token_enc, created_ms) "
                "VALUES (1, 'bench', 'h', 'e', :now)"
            ),
            {"now": now},
        )
        await conn.execute(
            text(
                "INSERT INTO apps (id, account_id, title, app_key, secret_hash, secret_enc, "
                "created_ms) VALUES (1, 1, 'bench', 'bench-app', 'h', 'e', :now)"
            ),
            {"now": now},
        )
        await conn.execute(
            text(
                "INSERT INTO campaigns (id, app_id, external_id, name, created_ms) "
                "VALUES (1, 1, 'spring', 'Spring sale', :now)"
            ),
            {"now": now},
        )
    for start in range(0, devices, CHUNK):
        ids = range(start + 1, min(start + CHUNK, devices) + 1)
        async with db.write.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO subscribers (id, account_id, app_id, created_ms) "
                    "VALUES (:id, 1, 1, :now)"
                ),
                [{"id": i, "now": now} for i in ids],
            )
            await conn.execute(
                text(
                    "INSERT INTO devices (id, account_id, app_id, subscriber_id, platform, "
                    "token_hash, enabled, created_ms) "
                    "VALUES (:id, 1, 1, :id, 'android', :hash, true, :now)"
                ),
                [{"id": i, "hash": f"bench-{i}", "now": now} for i in ids],
            )
    for n in range(1, notification_count + 1):
        async with db.write.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO notifications (id, account_id, app_id, message, data, "
                    "created_ms, expires_ms, campaign_id, no_user, opted_out) "
                    "VALUES (:id, 1, 1, 'hello', '{}', :now, :later, 1, 7, 3)"
                ),
                {"id": n, "now": now, "later": now + 86_400_000},
            )
        for start in range(0, devices, CHUNK):
            ids = range(start + 1, min(start + CHUNK, devices) + 1)
            rows = []
            for i in ids:
                status, reason = PATTERN[(i * 7 + n) % len(PATTERN)]
                rows.append({"n": n, "d": i, "status": status, "reason": reason, "now": now})
            async with db.write.begin() as conn:
                await conn.execute(
                    text(
                        "INSERT INTO deliveries (notification_id, device_id, status, "
                        "transport, attempts, reason, created_ms, updated_ms) "
                        "VALUES (:n, :d, :status, 'android', 1, :reason, :now, :now)"
                    ),
                    rows,
                )
    if not db.is_sqlite:
        async with db.write.begin() as conn:
            await conn.execute(text("ANALYZE"))
    return 1, "bench-app", notification_count


async def timed(rounds: int, work: Any) -> list[float]:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        await work()
        times.append((time.perf_counter() - started) * 1000)
    return times


async def run_engine(engine: str, args: argparse.Namespace) -> dict[str, Any]:
    postgres_url = None if engine == "sqlite" else args.postgres_url
    async with migrated_database("stats", postgres_url) as db:
        started = time.perf_counter()
        account, app_key, notification = await fill(db, args.devices, args.notifications)
        fill_s = time.perf_counter() - started
        stats = StatsService(db)
        expected = args.devices * args.notifications

        view = await stats.campaign(account, app_key, "spring")
        if sum(view.counts.statuses.values()) != expected:
            raise HarnessError(f"campaign counted {view.counts.statuses}, expected {expected}")

        async def campaign() -> None:
            await stats.campaign(account, app_key, "spring")

        async def one() -> None:
            await stats.notification(account, notification)

        campaign_ids = select(notifications.c.id).where(notifications.c.campaign_id == 1)

        async def baseline() -> None:
            async with db.read.connect() as conn:
                await conn.execute(
                    select(func.count()).where(deliveries.c.notification_id.in_(campaign_ids))
                )

        results: dict[str, list[float]] = {"baseline": [], "campaign": [], "notification": []}
        for _ in range(args.rounds):  # alternating, so drift hits all three alike
            results["baseline"] += await timed(1, baseline)
            results["campaign"] += await timed(1, campaign)
            results["notification"] += await timed(1, one)
    medians = {name: statistics.median(times) for name, times in results.items()}
    return {
        "engine": engine,
        "deliveries": expected,
        "fill_seconds": round(fill_s, 1),
        "counts": {"targeted": view.counts.targeted, **view.counts.statuses},
        "failed_by_reason": view.counts.failed_by_reason,
        "ms": {name: [round(t, 1) for t in times] for name, times in results.items()},
        "median_ms": {name: round(m, 1) for name, m in medians.items()},
        "campaign_x_baseline": round(medians["campaign"] / medians["baseline"], 2),
    }


def _targets(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """None: the statistics are measured against the bare count, not held to a figure."""
    return []


def table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| engine | deliveries | count(*) baseline | campaign stats | x baseline | "
        "one notification |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        m = r["median_ms"]
        lines.append(
            f"| {r['engine']} | {r['deliveries']:,} | {m['baseline']} ms | {m['campaign']} ms | "
            f"{r['campaign_x_baseline']} | {m['notification']} ms |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--devices", type=int, default=100_000, help="devices (default 100000)")
    parser.add_argument(
        "--notifications", type=int, default=10, help="notifications in the campaign (10)"
    )
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds of each query (5)")
    add_engine_options(parser)
    add_output_options(parser, keep_data=False)
    args = parser.parse_args(argv)
    if not 1 <= args.devices <= 1_000_000 or not 1 <= args.notifications <= 100:
        parser.error("--devices must be 1..1000000 and --notifications 1..100")
    return run_and_report(args, run, print_table)


def run(args: argparse.Namespace, log: Log) -> dict[str, Any]:
    def measure(engine: str) -> Coroutine[Any, Any, dict[str, Any]]:
        log(f"{engine}: storing {args.devices * args.notifications:,} deliveries...")
        return run_engine(engine, args)

    results = per_engine(args.engines, measure)
    return {
        "benchmark": "stats",
        "date": utc_now(),
        "results": results,
        "targets": _targets(results),
    }


def print_table(r: dict[str, Any]) -> None:
    print(table(r["results"]))
    for x in r["results"]:
        print(f"{x['engine']}: {x['counts']} failed by reason {x['failed_by_reason']}")
    print_targets(r["targets"])


if __name__ == "__main__":
    sys.exit(main())
