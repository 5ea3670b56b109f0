"""The scheduler: ``--sendings`` one-time sendings (10,000 by default) due in the same second.
How long after that second until every one has started, and how many ran twice.

Set-up (not timed), in this process on the benchmark's own data dir (SQLite, or PostgreSQL
with ``--database-url``): an account with one app and ``--devices`` channel devices (not
connected: their deliveries stay queued), then the sendings in bulk, each with one push bound
and its ``sending`` job, all due at the same moment a few seconds ahead. Then ``--servers``
``pushgate serve`` processes (workers in each) start on that database before the moment
comes. The run polls the database (reads only) until every sending has ``started_ms``, for at
most ``--timeout`` seconds, and reports:

- all started: from the due second to the last sending's start (target: within 5 s);
- the median and p99 start lag over the sendings;
- duplicates: notifications beyond one per sending and push (target: 0);
- the servers' CPU seconds over the run.

    .venv/bin/python -m benchmarks.sendings
    .venv/bin/python -m benchmarks.sendings --servers 2 --json
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import time
from typing import Any

import orjson
from sqlalchemy import func, insert, select

from benchmarks.harness import HarnessError
from benchmarks.harness.machine import cpu_seconds_pid
from benchmarks.harness.report import add_output_options, print_targets, run_and_report, target
from benchmarks.harness.server import OwnServer
from pushgate.config import Settings
from pushgate.crypto import SecretBox
from pushgate.domain.schedules import NO_OFFSET_RUN, AppSelection
from pushgate.services.accounts import AccountService
from pushgate.services.apps import AppService
from pushgate.services.sendings import SENDING_QUEUE, sending_payload
from pushgate.storage.database import Database, open_database
from pushgate.storage.migrate import migrate
from pushgate.storage.models import (
    devices,
    jobs,
    notifications,
    pushes,
    sendings,
    subscribers,
)

LEAD_SECONDS = 8.0
CHUNK = 2000


async def _set_up(db: Database, box: SecretBox, count: int, device_count: int) -> tuple[int, int]:
    """The account's app and devices, and ``count`` sendings; returns (due_ms, account_id)."""
    await migrate(db)
    account = (await AccountService(db, box).create("bench")).account
    app = (await AppService(db, box).create(account.id, "shop")).app
    async with db.write.begin() as conn:
        for n in range(device_count):
            person = (
                await conn.execute(
                    insert(subscribers)
                    .values(account_id=account.id, app_id=app.id, created_ms=0)
                    .returning(subscribers.c.id)
                )
            ).scalar_one()
            await conn.execute(
                insert(devices).values(
                    account_id=account.id, app_id=app.id, subscriber_id=person,
                    platform="channel", token_hash=f"bench-{n}", enabled=True, created_ms=0,
                )
            )  # fmt: skip
    due = int((time.time() + LEAD_SECONDS) * 1000) // 1000 * 1000 + 1000
    apps = orjson.dumps(AppSelection(include=(app.id,)).to_json()).decode()
    for start in range(0, count, CHUNK):
        names = range(start + 1, min(count, start + CHUNK) + 1)
        async with db.write.begin() as conn:
            made = await conn.execute(
                insert(sendings).returning(sendings.c.id, sort_by_parameter_order=True),
                [
                    {
                        "account_id": account.id, "name": f"s{i}", "source": "bench",
                        "wall_ms": due, "offset_minutes": 0, "local_time": False, "apps": apps,
                        "audience": "{}", "filters": None, "state": "waiting",
                        "cursor": NO_OFFSET_RUN, "created_ms": 0,
                    }
                    for i in names
                ],
            )  # fmt: skip
            ids = [int(row[0]) for row in made]
            await conn.execute(
                insert(pushes),
                [
                    {
                        "account_id": account.id, "sending_id": i, "title": "Sale",
                        "message": f"sending {i}", "data": "{}", "created_ms": 0,
                    }
                    for i in ids
                ],
            )  # fmt: skip
            await conn.execute(
                insert(jobs),
                [
                    {
                        "queue": SENDING_QUEUE, "payload": sending_payload(i), "visible_ms": due,
                        "claims": 0, "created_ms": 0,
                    }
                    for i in ids
                ],
            )  # fmt: skip
    return due, account.id


async def _progress(db: Database, account_id: int) -> tuple[int, list[int]]:
    """(sendings not started yet, start times of the started ones)."""
    async with db.read.connect() as conn:
        rows = await conn.execute(
            select(sendings.c.started_ms).where(sendings.c.account_id == account_id)
        )
        started = [int(r[0]) for r in rows if r[0] is not None]
        waiting = (
            await conn.execute(
                select(func.count())
                .select_from(sendings)
                .where(sendings.c.account_id == account_id, sendings.c.started_ms.is_(None))
            )
        ).scalar_one()
    return int(waiting), started


async def _duplicates(db: Database, account_id: int) -> tuple[int, int]:
    """(notifications made from sendings, how many beyond one per sending and push)."""
    async with db.read.connect() as conn:
        made = (
            await conn.execute(
                select(func.count()).where(
                    notifications.c.sending_id.is_not(None),
                    notifications.c.account_id == account_id,
                )
            )
        ).scalar_one()
        distinct = (
            await conn.execute(
                select(func.count()).select_from(
                    select(notifications.c.sending_id, notifications.c.push_id)
                    .where(
                        notifications.c.sending_id.is_not(None),
                        notifications.c.account_id == account_id,
                    )
                    .distinct()
                    .subquery()
                )
            )
        ).scalar_one()
    return int(made), int(made) - int(distinct)


def run(args: argparse.Namespace, log: Any) -> dict[str, Any]:
    servers = [OwnServer(keep_dir=args.keep_data) for _ in range(args.servers)]
    shared = servers[0].dir
    env_extra = {"PUSHGATE_SECRET_KEY": "b" * 48}
    if args.database_url:
        env_extra["PUSHGATE_DATABASE_URL"] = args.database_url
    for server in servers:
        if server is not servers[0]:
            shutil.rmtree(server.dir, ignore_errors=True)
            server.dir = shared
            server.log_path = shared / f"server-{server.port}.log"
        server.env.update({**env_extra, "PUSHGATE_DATA_DIR": str(shared)})
    settings = Settings(data_dir=shared, database_url=args.database_url, secret_key="b" * 48)
    db = open_database(settings.resolved_database_url)
    box = SecretBox(settings.resolved_secret_key())
    loop = asyncio.new_event_loop()
    try:
        log(f"set-up: {args.sendings} sendings, {args.devices} devices ...")
        due, account_id = loop.run_until_complete(_set_up(db, box, args.sendings, args.devices))
        for server in servers:
            server.start()
        cpu_before = [cpu_seconds_pid(s.proc.pid if s.proc else None) or 0.0 for s in servers]
        left = due / 1000 - time.time()
        if left < 0:
            raise HarnessError("the servers started after the sendings were due: raise the lead")
        log(f"servers up; the sendings are due in {left:.1f} s")
        time.sleep(max(0.0, left))
        deadline = time.monotonic() + args.timeout
        waiting, started = loop.run_until_complete(_progress(db, account_id))
        while waiting and time.monotonic() < deadline:
            time.sleep(0.1)
            waiting, started = loop.run_until_complete(_progress(db, account_id))
        cpu_after = [cpu_seconds_pid(s.proc.pid if s.proc else None) or 0.0 for s in servers]
        time.sleep(1.0)  # a late duplicate would show up now
        made, duplicated = loop.run_until_complete(_duplicates(db, account_id))
    finally:
        for server in servers:
            server.stop()
        loop.run_until_complete(db.dispose())
        loop.close()
        if not args.keep_data:
            shutil.rmtree(shared, ignore_errors=True)
    lags = sorted((s - due) / 1000 for s in started)
    return {
        "sendings": args.sendings,
        "servers": args.servers,
        "database": "postgresql" if args.database_url else "sqlite",
        "devices": args.devices,
        "not_started": waiting,
        "all_started_s": round(lags[-1], 3) if lags and not waiting else None,
        "lag_p50_s": round(statistics.median(lags), 3) if lags else None,
        "lag_p99_s": round(lags[int(len(lags) * 0.99) - 1], 3) if lags else None,
        "notifications": made,
        "duplicates": duplicated,
        "server_cpu_s": round(sum(cpu_after) - sum(cpu_before), 2),
        "target": "all started within 5 s, 0 duplicates",
        "met": bool(not waiting and lags and lags[-1] <= 5.0 and duplicated == 0),
        "targets": [
            target(
                "every sending started within 5 s of its due second",
                f"last after {round(lags[-1], 3) if lags else None} s, {waiting} not started",
                bool(not waiting and lags and lags[-1] <= 5.0),
                round(lags[-1], 3) if lags else None,
            ),
            target("no duplicate notifications", f"{duplicated} duplicates", duplicated == 0),
        ],
    }


def print_table(r: dict[str, Any]) -> None:
    print(
        f"{r['sendings']} sendings due in one second, {r['servers']} server(s) on {r['database']}, "
        f"{r['devices']} devices"
    )
    print(f"  all started after : {r['all_started_s']} s  (not started: {r['not_started']})")
    print(f"  start lag         : p50 {r['lag_p50_s']} s, p99 {r['lag_p99_s']} s")
    print(f"  notifications     : {r['notifications']}, duplicates {r['duplicates']}")
    print(f"  server CPU        : {r['server_cpu_s']} s")
    print_targets(r["targets"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sendings", type=int, default=10_000, help="sendings due (default 10000)")
    ap.add_argument("--devices", type=int, default=10, help="channel devices of the app")
    ap.add_argument("--servers", type=int, default=1, help="server processes (default 1)")
    ap.add_argument(
        "--database-url", default=os.environ.get("BENCH_DATABASE_URL"), help="PostgreSQL URL"
    )
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for starts")
    add_output_options(ap)
    return run_and_report(ap.parse_args(argv), run, print_table)


if __name__ == "__main__":
    raise SystemExit(main())
