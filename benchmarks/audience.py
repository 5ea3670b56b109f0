"""Audience selection benchmark: the fan-out of one notification whose audience is an
attribute filter, next to the fan-out of the same number of devices without a filter.

One run, on a fresh database (SQLite in a temporary directory by default; ``--database-url``
names a loopback PostgreSQL server, on which a scratch database is created and dropped):

1. setup    - one account with two apps, written in bulk through SQLAlchemy Core (not
              measured): app "targeted" has ``--devices`` subscribers with one push device
              each, and ``--share`` of them (chosen at random) have ``c_plan = "gold"``; app
              "plain" has exactly that many subscribers and devices. Every subscriber has
              three attributes (``c_plan``, ``c_age``, ``d_wp_browser``). Ids are handed out
              in a random order of the two apps (``--contiguous``: the targeted app's first),
              so the plain app's devices are spread over the table like the gold ones.
              PostgreSQL then gets ``VACUUM ANALYZE`` (what autovacuum does after a bulk
              load); SQLite gets nothing, as Pushgate runs no ANALYZE.
2. rounds   - ``--rounds`` rounds, each running the three cases below in a rotating order.
              Per case and round a fresh notification and its ``fanout`` job are stored (not
              measured), then ``FanOut.step()`` (services/fan_out.py) runs: take the job,
              read the notification, ``INSERT ... SELECT`` the deliveries, queue the push
              jobs, commit. That step is the measured time. Then the ``INSERT ... SELECT``
              statement alone (``DeliveryWrites``, rolled back) and the bare ``SELECT`` of the
              devices (rows fetched) are timed on their own. Deliveries, jobs and the
              notification are deleted after each case, so every round starts alike.

   - filtered:   app "targeted", audience ``c_plan in ("gold",)``: ``share x devices``
                 devices out of ``devices``;
   - unfiltered: app "plain", a notification without an audience (the batched path that a
                 plain send takes): all of its ``share x devices`` devices;
   - all:        app "plain", an empty audience (every device of the app) through the same
                 audience path as the filtered case.

3. report   - median, min and max per case and level, of wall time and of CPU time (this
              process, its SQLite thread included, plus the PostgreSQL backends of the
              scratch database, from /proc: it shows the work done even when other processes
              share the cores); the ratio filtered / unfiltered (and filtered / all) of the
              medians. Target (from the issue), checked on the wall time of the fan-out step:
              the filtered selection costs at most 1.3 x the unfiltered selection of as many
              devices. The two levels below the step are held to the same ratio, for
              information.

The process runs with ``pushgate.app.tune_interpreter()`` (collector and GIL settings of
``pushgate serve`` and ``pushgate worker``, which run the fan-out); everything happens in
this one process and, on PostgreSQL, the server.

Exit code 0 whenever it measured (target PASS or FAIL), 2 on a harness error.

    .venv/bin/python -m benchmarks.audience                  # SQLite, 100,000 devices
    .venv/bin/python -m benchmarks.audience --database-url \
        postgresql+asyncpg://postgres@127.0.0.1:5432/test
    .venv/bin/python -m benchmarks.audience --devices 20000 --rounds 5 --json
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from benchmarks.harness import HarnessError
from benchmarks.harness.machine import cpu_seconds_self, machine_busy, machine_info, source_version
from benchmarks.harness.report import add_output_options, mark, run_and_report, utc_now
from benchmarks.harness.scratch_db import ScratchError, create_scratch, drop_scratch
from benchmarks.harness.stats import ratio, summary_ms
from pushgate.app import tune_interpreter
from pushgate.domain.audience import Audience, Condition
from pushgate.queue.embedded import EmbeddedQueue
from pushgate.services.delivery_jobs import FANOUT_QUEUE, fanout_payload
from pushgate.services.fan_out import FanOut
from pushgate.storage.audience_sql import Params, select_devices
from pushgate.storage.database import Database, now_ms, open_database
from pushgate.storage.delivery_writes import DeliveryWrites, NotificationRow
from pushgate.storage.migrate import migrate
from pushgate.storage.models import (
    accounts,
    apps,
    devices,
    subscriber_attributes,
    subscribers,
)
from pushgate.transports.base import Content

TARGET_RATIO = 1.3
T = TypeVar("T")
CASES = ("filtered", "unfiltered", "all")
LEVELS = ("step", "insert_select", "select")
LEVEL_NAMES = {
    "step": "fan-out step (FanOut.step, commit)",
    "insert_select": "INSERT ... SELECT alone",
    "select": "bare SELECT, rows fetched",
}
ATTRIBUTE = "c_plan"
GOLD = "gold"
OTHER_PLANS = ("free", "silver", "team")
PLATFORMS = ("android", "ios")
BULK_ROWS = 5000
ACCOUNT_ID = 1
TARGETED_APP, PLAIN_APP = 1, 2


class _NoChannel:
    """The fan-out's channel port; the benchmark's devices are push devices only, so the
    fan-out never hands anything to it."""

    def message(self, content: Content) -> bytes:
        raise HarnessError("a channel message was built: the benchmark has push devices only")

    async def hand_over(self, device_ids: list[int], notification_id: int, message: bytes) -> None:
        raise HarnessError("a channel hand-over: the benchmark has push devices only")


# --------------------------------------------------------------------------------------------
# Machine and source
# --------------------------------------------------------------------------------------------


def _server_cpu_ns(marker: str | None) -> int:
    """CPU time (ns, from /proc/PID/schedstat) of the PostgreSQL backends whose process title
    names ``marker`` (the scratch database): the server's share of the work. 0 for SQLite,
    whose work runs in this process."""
    if marker is None:
        return 0
    total = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            title = Path(entry.path, "cmdline").read_bytes()
            if not title.startswith(b"postgres:") or marker.encode() not in title:
                continue
            total += int(Path(entry.path, "schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue
    return total


@dataclass
class Sample:
    wall: float  # seconds
    cpu: float  # seconds of CPU: this process (all threads) plus the database's backends


class Stopwatch:
    """Wall time and CPU time of one measured call. CPU time counts this process (the SQLite
    thread included) and, on PostgreSQL, the backends of the scratch database, so it shows
    the work done even when other processes share the cores."""

    def __init__(self, server_marker: str | None) -> None:
        self.marker = server_marker

    async def time(self, work: Awaitable[T]) -> tuple[T, Sample]:
        server = _server_cpu_ns(self.marker)
        cpu = time.process_time()
        started = time.perf_counter()
        value = await work
        wall = time.perf_counter() - started
        cpu = time.process_time() - cpu
        server = _server_cpu_ns(self.marker) - server
        return value, Sample(wall, cpu + server / 1e9)


# --------------------------------------------------------------------------------------------
# Scratch database
# --------------------------------------------------------------------------------------------


@dataclass
class Scratch:
    url: str
    kind: str  # "sqlite" | "postgresql"
    cleanup: Callable[[], None]
    where: str


def scratch_database(database_url: str | None, keep: bool) -> Scratch:
    if database_url is None:
        directory = tempfile.mkdtemp(prefix="pushgate-audience-")
        path = Path(directory) / "pushgate.db"

        def remove_dir() -> None:
            if not keep:
                shutil.rmtree(directory, ignore_errors=True)

        return Scratch(f"sqlite+aiosqlite:///{path}", "sqlite", remove_dir, str(path))
    try:
        name, url = create_scratch(database_url, "audience")
    except ScratchError as exc:
        raise HarnessError(f"--database-url: {exc}") from exc

    def drop() -> None:
        if not keep:
            drop_scratch(database_url, name)

    return Scratch(url, "postgresql", drop, name)


# --------------------------------------------------------------------------------------------
# Setup: bulk rows through SQLAlchemy Core
# --------------------------------------------------------------------------------------------


def _chunks(rows: Sequence[dict[str, Any]], size: int = BULK_ROWS) -> Iterator[Sequence[Any]]:
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


@dataclass
class Population:
    targeted: int  # devices of app "targeted"
    plain: int  # devices of app "plain"
    gold: int  # subscribers (= devices) of app "targeted" with c_plan = gold


async def populate(
    db: Database, n_targeted: int, selected: int, seed: int, *, interleaved: bool = True
) -> Population:
    """One account, app "targeted" with ``n_targeted`` subscribers (``selected`` of them gold)
    and app "plain" with ``selected`` subscribers; one enabled push device each. Ids are
    handed out in a random order of the two apps' subscribers (``interleaved``), as when both
    apps' users register over the same months, or the targeted app's first."""
    rng = random.Random(seed)
    created = now_ms()
    gold_targeted = set(rng.sample(range(n_targeted), selected))
    owners = [(TARGETED_APP, i, i in gold_targeted) for i in range(n_targeted)]
    # The plain app's subscribers have plans too (10% gold), as any app's would.
    gold_plain = set(rng.sample(range(selected), selected // 10))
    owners += [(PLAIN_APP, i, i in gold_plain) for i in range(selected)]
    if interleaved:  # the two apps' subscribers and devices registered in a mixed order
        rng.shuffle(owners)
    subscriber_rows: list[dict[str, Any]] = []
    device_rows: list[dict[str, Any]] = []
    attribute_rows: list[dict[str, Any]] = []
    for number, (app, i, gold) in enumerate(owners, start=1):
        subscriber_rows.append(
            {
                "id": number,
                "account_id": ACCOUNT_ID,
                "app_id": app,
                "external_id": f"u{app}-{i}",
                "language": rng.choice(("en", "nl", "de")),
                "country": rng.choice(("NL", "DE", "US")),
                "created_ms": created,
            }
        )
        token = hashlib.sha256(f"device-{number}".encode()).hexdigest()
        device_rows.append(
            {
                "id": number,
                "account_id": ACCOUNT_ID,
                "app_id": app,
                "subscriber_id": number,
                "platform": PLATFORMS[number % len(PLATFORMS)],
                "token_hash": token,
                "push_token_hash": token[::-1],
                "enabled": True,
                "created_ms": created,
            }
        )
        plan = GOLD if gold else rng.choice(OTHER_PLANS)
        attribute_rows += [
            {"subscriber_id": number, "name": ATTRIBUTE, "position": 0, "kind": "string",
             "text_value": plan, "num_value": None},
            {"subscriber_id": number, "name": "c_age", "position": 0, "kind": "number",
             "text_value": None, "num_value": float(rng.randint(16, 80))},
            {"subscriber_id": number, "name": "d_wp_browser", "position": 0, "kind": "string",
             "text_value": rng.choice(("Chrome", "Edg", "Firefox")), "num_value": None},
        ]  # fmt: skip
    async with db.write.begin() as conn:
        await conn.execute(
            insert(accounts),
            [{"id": ACCOUNT_ID, "name": "bench", "user_token_hash": "audience-bench",
              "user_token_enc": "-", "created_ms": created}],
        )  # fmt: skip
        await conn.execute(
            insert(apps),
            [
                {"id": app, "account_id": ACCOUNT_ID, "title": title, "app_key": f"bench-{app}",
                 "secret_hash": "-", "secret_enc": "-", "created_ms": created}
                for app, title in ((TARGETED_APP, "targeted"), (PLAIN_APP, "plain"))
            ],
        )  # fmt: skip
        for table, rows in (
            (subscribers, subscriber_rows),
            (devices, device_rows),
            (subscriber_attributes, attribute_rows),
        ):
            for chunk in _chunks(rows):
                await conn.execute(insert(table), list(chunk))
        if not db.is_sqlite:  # later rows of the application draw ids from the sequences
            for name in ("accounts", "apps", "subscribers", "devices"):
                await conn.exec_driver_sql(
                    f"SELECT setval(pg_get_serial_sequence('{name}', 'id'), "
                    f"(SELECT max(id) FROM {name}))"
                )
    return Population(targeted=n_targeted, plain=selected, gold=selected)


async def vacuum_postgres(db: Database) -> None:
    """What autovacuum does on its own within a minute or two of a bulk load: planner
    statistics (ANALYZE) and the visibility map that index-only scans rely on (VACUUM)."""
    async with db.write.connect() as conn:
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.exec_driver_sql("VACUUM ANALYZE")


# --------------------------------------------------------------------------------------------
# The three cases, at three levels
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    name: str
    app_id: int
    audience: Audience | None
    expected: int


def _cases(pop: Population) -> dict[str, Case]:
    gold = Audience(attributes=(Condition(ATTRIBUTE, "in", (GOLD,)),))
    return {
        "filtered": Case("filtered", TARGETED_APP, gold, pop.gold),
        "unfiltered": Case("unfiltered", PLAIN_APP, None, pop.plain),
        "all": Case("all", PLAIN_APP, Audience(), pop.plain),
    }


class Bench:
    def __init__(self, db: Database, watch: Stopwatch) -> None:
        self.db = db
        self.watch = watch
        self.postgres = not db.is_sqlite
        self.writes = DeliveryWrites(db.write.dialect.name)
        self.jobs = EmbeddedQueue(db)
        self.fan_out = FanOut(db, self.jobs, self.jobs, _NoChannel(), direct=True)

    async def _store(self, case: Case) -> int:
        """A notification of ``case`` and its fanout job, committed."""
        now = now_ms()
        async with self.db.write.begin() as conn:
            row: NotificationRow = (
                0, ACCOUNT_ID, case.app_id, None, "Sale", "Gold members: 20% off", "{}", now,
                now + 3_600_000, None, None,
                case.audience.to_json() if case.audience is not None else None,
                None, None, 0, 0, None, None,
            )  # fmt: skip
            (nid,) = await self.writes.insert_notifications(conn, [row])
            await self.jobs.enqueue(FANOUT_QUEUE, [fanout_payload(nid)], conn=conn)
        return nid

    async def _clean(self, nid: int) -> None:
        mark = "$1" if self.postgres else "?"
        async with self.db.write.begin() as conn:
            await conn.exec_driver_sql(
                f"DELETE FROM deliveries WHERE notification_id = {mark}", (nid,)
            )
            await conn.exec_driver_sql("DELETE FROM jobs")
            await conn.exec_driver_sql(f"DELETE FROM notifications WHERE id = {mark}", (nid,))
        await self.db.checkpoint()

    async def _count(self, nid: int) -> int:
        mark = "$1" if self.postgres else "?"
        async with self.db.read.connect() as conn:
            result = await conn.exec_driver_sql(
                f"SELECT count(*) FROM deliveries WHERE notification_id = {mark}", (nid,)
            )
            return int(result.scalar_one())

    async def step(self, case: Case) -> Sample:
        """One ``FanOut.step`` that fans out one notification of ``case``."""
        nid = await self._store(case)
        try:
            done, elapsed = await self.watch.time(self.fan_out.step())
            if done != 1:
                raise HarnessError(f"{case.name}: the fan-out step took {done} jobs, not 1")
            made = await self._count(nid)
            if made != case.expected:
                raise HarnessError(f"{case.name}: {made} deliveries, expected {case.expected}")
        finally:
            await self._clean(nid)
        return elapsed

    async def _insert_select(self, conn: AsyncConnection, case: Case, nid: int) -> int:
        created = now_ms()
        if case.audience is None:
            rows = await self.writes.fan_out(conn, [(nid, ACCOUNT_ID, case.app_id, created)])
        else:
            rows = await self.writes.fan_out_audience(
                conn, nid, created, case.audience, app_id=case.app_id, account_id=ACCOUNT_ID,
                engaged_since_ms=0,
            )  # fmt: skip
        return len(rows)

    async def insert_select(self, case: Case) -> Sample:
        """The deliveries' ``INSERT ... SELECT`` statement alone, rolled back."""
        nid = await self._store(case)
        try:
            async with self.db.write.connect() as conn:
                transaction = await conn.begin()
                try:
                    made, elapsed = await self.watch.time(self._insert_select(conn, case, nid))
                finally:
                    await transaction.rollback()
            if made != case.expected:
                raise HarnessError(f"{case.name}: inserted {made}, expected {case.expected}")
        finally:
            await self._clean(nid)
        return elapsed

    def select_sql(self, case: Case) -> tuple[str, tuple[Any, ...]]:
        """The device selection alone, as the fan-out's ``INSERT ... SELECT`` embeds it."""
        p = Params(self.postgres)
        if case.audience is None:  # the batched path's SELECT (DeliveryWrites.fan_out)
            app, account = p(case.app_id), p(ACCOUNT_ID)
            enabled = p.true("d.enabled")
            sql = (
                f"SELECT d.id, d.platform FROM devices d WHERE d.app_id = {app} AND {enabled} "
                "UNION ALL SELECT d.id, d.platform FROM devices d "
                f"WHERE d.account_id = {account} AND d.app_id IS NULL AND {enabled}"
            )
            return sql, tuple(p.values)
        sql = select_devices(
            p, case.audience, app_id=case.app_id, account_id=ACCOUNT_ID, engaged_since_ms=0
        )
        return sql, tuple(p.values)

    async def select(self, case: Case) -> Sample:
        """The bare device ``SELECT``, every row fetched."""
        sql, values = self.select_sql(case)

        async def fetch(conn: AsyncConnection) -> list[Any]:
            return list(await conn.exec_driver_sql(sql, values))

        async with self.db.read.connect() as conn:
            rows, elapsed = await self.watch.time(fetch(conn))
        if len(rows) != case.expected:
            raise HarnessError(f"{case.name}: selected {len(rows)}, expected {case.expected}")
        return elapsed

    async def plan(self, case: Case) -> list[str]:
        """The query plan of the deliveries' ``INSERT ... SELECT`` (not run on SQLite;
        ``EXPLAIN ANALYZE`` in a rolled-back transaction on PostgreSQL)."""
        nid = await self._store(case)
        try:
            async with self.db.write.connect() as conn:
                transaction = await conn.begin()
                try:
                    return await self._plan(conn, case, nid)
                finally:
                    await transaction.rollback()
        finally:
            await self._clean(nid)

    async def _plan(self, conn: AsyncConnection, case: Case, nid: int) -> list[str]:
        sql, values = self.select_sql(case)
        if not self.postgres:
            rows: list[Any] = list(await conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}", values))
            return [f"{'  ' * _depth(rows, row)}{row[3]}" for row in rows]
        # PostgreSQL: the real INSERT ... SELECT, executed and rolled back.
        shift = len(values)
        p = Params(True, start=shift + 1)
        n, t = p(nid), p(0)
        text = (
            "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) INSERT INTO deliveries "
            "(notification_id, device_id, status, transport, attempts, created_ms, updated_ms) "
            f"SELECT {n}, x.id, 'queued', x.platform, 0, {t}, {t} FROM ({sql}) x "
            "ON CONFLICT (notification_id, device_id) DO NOTHING"
        )
        result = await conn.exec_driver_sql(text, (*values, *p.values))
        return [str(r[0]) for r in result]


def _depth(rows: list[Any], row: Any) -> int:
    """Nesting depth of an ``EXPLAIN QUERY PLAN`` row (id, parent, notused, detail)."""
    parents = {r[0]: r[1] for r in rows}
    depth, parent = 0, row[1]
    while parent in parents:
        depth, parent = depth + 1, parents[parent]
    return depth


# --------------------------------------------------------------------------------------------
# Run
# --------------------------------------------------------------------------------------------


async def _measure(args: argparse.Namespace, scratch: Scratch, log: Any) -> dict[str, Any]:
    db = open_database(scratch.url)
    try:
        t0 = time.perf_counter()
        await migrate(db)
        selected = round(args.devices * args.share)
        if not 0 < selected < args.devices:
            raise HarnessError("--share must select at least one device and not all of them")
        log(f"setup: {args.devices:,} + {selected:,} subscribers and devices ...")
        pop = await populate(db, args.devices, selected, args.seed, interleaved=not args.contiguous)
        if not db.is_sqlite:
            await vacuum_postgres(db)
        await db.checkpoint()
        setup_s = time.perf_counter() - t0
        log(f"setup done in {setup_s:.1f} s")
        # The collector and GIL settings of `pushgate serve` and `pushgate worker`, whose
        # fan-out this is.
        tune_interpreter()
        watch = Stopwatch(scratch.where if scratch.kind == "postgresql" else None)
        bench = Bench(db, watch)
        cases = _cases(pop)
        plans: dict[str, list[str]] = {}
        for name, case in cases.items():
            plans[name] = await bench.plan(case)
        # One unmeasured pass of everything: caches and statement caches warm.
        for case in cases.values():
            await bench.step(case)
            await bench.insert_select(case)
            await bench.select(case)
        times: dict[str, dict[str, list[Sample]]] = {
            c: {level: [] for level in LEVELS} for c in CASES
        }
        deadline = time.monotonic() + args.time_limit
        server0 = _server_cpu_ns(watch.marker)
        busy0, own0, wall0 = machine_busy(), cpu_seconds_self(), time.perf_counter()
        rounds = 0
        for r in range(args.rounds):
            if time.monotonic() > deadline:
                log(f"time limit reached after {rounds} rounds")
                break
            order = CASES[r % len(CASES) :] + CASES[: r % len(CASES)]
            for name in order:
                case = cases[name]
                times[name]["step"].append(await bench.step(case))
            for name in order:
                case = cases[name]
                times[name]["insert_select"].append(await bench.insert_select(case))
            for name in order:
                case = cases[name]
                times[name]["select"].append(await bench.select(case))
            rounds += 1
            log(
                f"round {rounds}: "
                + ", ".join(f"{n} {times[n]['step'][-1].wall * 1000:.1f} ms" for n in CASES)
            )
        wall = time.perf_counter() - wall0
        busy1 = machine_busy()
        machine_cpu = (busy1 - busy0) / wall if busy0 is not None and busy1 is not None else None
        own_cpu = (cpu_seconds_self() - own0) / wall
        server_cpu = (_server_cpu_ns(watch.marker) - server0) / 1e9 / wall
    finally:
        await db.dispose()
    results = {
        c: {
            level: {
                "wall": summary_ms([sample.wall for sample in times[c][level]]),
                "cpu": summary_ms([sample.cpu for sample in times[c][level]]),
            }
            for level in LEVELS
        }
        for c in CASES
    }
    ratios: dict[str, dict[str, float | None]] = {}
    for level in LEVELS:
        ratios[level] = {}
        for kind in ("wall", "cpu"):
            f = results["filtered"][level][kind]["median_ms"]
            for against in ("unfiltered", "all"):
                key = f"vs_{against}" if kind == "wall" else f"cpu_vs_{against}"
                ratios[level][key] = ratio(f, results[against][level][kind]["median_ms"])
    others = None
    if machine_cpu is not None:
        others = round(max(0.0, machine_cpu - own_cpu - server_cpu), 2)
    return {
        "population": {
            "targeted_app_devices": pop.targeted,
            "plain_app_devices": pop.plain,
            "selected": pop.gold,
            "attribute_rows": 3 * (pop.targeted + pop.plain),
        },
        "setup_s": round(setup_s, 2),
        "rounds_done": rounds,
        "results": results,
        "ratios": ratios,
        "plans": plans,
        "cpu": {
            "machine_cores_busy": None if machine_cpu is None else round(machine_cpu, 2),
            "benchmark_process_cores": round(own_cpu, 2),
            "database_server_cores": round(server_cpu, 2),
            "other_processes_cores": others,
        },
    }


def _targets(m: dict[str, Any]) -> list[dict[str, Any]]:
    """The target is the fan-out step (the selection as the fan-out makes it, deliveries
    included); the two levels below it are held to the same ratio, for information."""
    out = []
    for level in LEVELS:
        for against in ("unfiltered", "all"):
            ratio = m["ratios"][level][f"vs_{against}"]
            out.append(
                {
                    "level": level,
                    "against": against,
                    "target": level == "step",
                    "ratio": ratio,
                    "cpu_ratio": m["ratios"][level][f"cpu_vs_{against}"],
                    "pass": None if ratio is None else ratio <= TARGET_RATIO,
                }
            )
    return out


def run(args: argparse.Namespace, log: Any) -> dict[str, Any]:
    scratch = scratch_database(args.database_url, args.keep_data)
    log(f"database: {scratch.kind} ({scratch.where})")
    try:
        measured = asyncio.run(_measure(args, scratch, log))
    except HarnessError:
        raise
    except Exception as exc:
        raise HarnessError(f"{type(exc).__name__}: {exc}") from exc
    finally:
        scratch.cleanup()
    result: dict[str, Any] = {
        "benchmark": "audience",
        "date": utc_now(),
        "source": source_version(),
        "machine": machine_info(),
        "config": {
            "database": scratch.kind,
            "devices": args.devices,
            "share": args.share,
            "rounds": args.rounds,
            "time_limit_s": args.time_limit,
            "seed": args.seed,
            "layout": "contiguous" if args.contiguous else "interleaved",
            "target_ratio": TARGET_RATIO,
        },
        **measured,
    }
    if scratch.kind == "sqlite":
        import sqlite3

        result["machine"]["sqlite"] = sqlite3.sqlite_version
    result["targets"] = _targets(result)
    return result


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:,.1f}"


def print_table(r: dict[str, Any]) -> None:
    c, m, pop = r["config"], r["machine"], r["population"]
    print(
        f"\nPushgate audience selection  {r['date']}  source {r['source']}  nproc={m['nproc']}  "
        f"python {m['python']}"
    )
    print(
        f"database={c['database']}  app 'targeted': {pop['targeted_app_devices']:,} devices, "
        f"{pop['selected']:,} with {ATTRIBUTE}={GOLD}; app 'plain': {pop['plain_app_devices']:,} "
        f"devices; ids {c['layout']}; rounds {r['rounds_done']} (setup {r['setup_s']} s)\n"
    )
    head = (
        f"{'level':<36}{'case':<12}{'wall ms: median':>16}{'min':>8}{'max':>8}"
        f"{'cpu ms: median':>16}{'min':>8}{'max':>8}"
    )
    print(head)
    print("-" * len(head))
    for level in LEVELS:
        for case in CASES:
            w, u = r["results"][case][level]["wall"], r["results"][case][level]["cpu"]
            print(
                f"{LEVEL_NAMES[level] if case == 'filtered' else '':<36}{case:<12}"
                f"{_ms(w['median_ms']):>16}{_ms(w['min_ms']):>8}{_ms(w['max_ms']):>8}"
                f"{_ms(u['median_ms']):>16}{_ms(u['min_ms']):>8}{_ms(u['max_ms']):>8}"
            )
    cpu = r["cpu"]
    print(
        f"\ncores busy during the rounds: benchmark process {cpu['benchmark_process_cores']}, "
        f"database server {cpu['database_server_cores']}, other processes "
        f"{cpu['other_processes_cores']} (whole machine {cpu['machine_cores_busy']})"
    )
    if (cpu["other_processes_cores"] or 0) > 0.25:
        print("WARNING: other processes were busy; wall times are inflated, see the cpu columns")
    print(
        f"\nfiltered <= {TARGET_RATIO} x unfiltered, ratio of the wall-time medians (cpu-time "
        "medians in brackets); the target is the fan-out step"
    )
    for t in r["targets"]:
        ratio = "-" if t["ratio"] is None else f"{t['ratio']:.2f} x"
        cpu_ratio = "-" if t["cpu_ratio"] is None else f"{t['cpu_ratio']:.2f} x"
        kind = "target" if t["target"] else "also  "
        print(
            f"  {kind} [{mark(t['pass'])}] {LEVEL_NAMES[t['level']]}: filtered / {t['against']} "
            f"= {ratio} ({cpu_ratio})"
        )
    print("\nplans of the selection (SQLite: EXPLAIN QUERY PLAN of the SELECT; PostgreSQL: "
          "EXPLAIN ANALYZE of the INSERT ... SELECT)")  # fmt: skip
    for case in CASES:
        print(f"  {case}:")
        for line in r["plans"][case]:
            print(f"    {line}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument(
        "--devices", type=int, default=100_000,
        help="devices (= subscribers) of the targeted app (100000)",
    )  # fmt: skip
    ap.add_argument(
        "--share", type=float, default=0.10,
        help="share of them the attribute filter selects; the plain app gets as many (0.10)",
    )  # fmt: skip
    ap.add_argument("--rounds", type=int, default=11, help="measured rounds (11)")
    ap.add_argument(
        "--contiguous", action="store_true",
        help="the targeted app's subscribers and devices first, then the plain app's (default: "
        "ids handed out in a random order of the two apps, as when both grow side by side)",
    )  # fmt: skip
    ap.add_argument(
        "--time-limit", type=float, default=300.0, help="stop starting rounds after this (300 s)"
    )
    ap.add_argument("--seed", type=int, default=1, help="random seed of the population (1)")
    ap.add_argument(
        "--database-url",
        help="PostgreSQL server (loopback) to create a scratch database on, e.g. "
        "postgresql+asyncpg://postgres@127.0.0.1:5432/test; default: SQLite in a temp dir",
    )
    add_output_options(ap)
    args = ap.parse_args(argv)
    if not 1_000 <= args.devices <= 2_000_000:
        ap.error("--devices must be between 1,000 and 2,000,000")
    if not 0 < args.share < 1:
        ap.error("--share must be between 0 and 1")
    if not 1 <= args.rounds <= 1000:
        ap.error("--rounds must be between 1 and 1000")
    return run_and_report(args, run, print_table)


if __name__ == "__main__":
    sys.exit(main())
