"""History benchmark: ingest and channel fan-out on an empty database and on one that holds
10 million deliveries (issue 13, target 6: within 15 % of each other).

One run, all on loopback, on SQLite, or with --postgres-url on two scratch PostgreSQL databases
(made on that loopback server and dropped afterwards):

1. build    - two data directories, both migrated with ``pushgate migrate``; the second one gets
              a history written straight into its SQLite file with ``sqlite3`` (on PostgreSQL
              with ``asyncpg``, then ``VACUUM ANALYZE`` as autovacuum would have run), not
              through the API: an account with --history-devices channel devices,
              broadcasts to all of them and single-device posts (--broadcast-share of the
              deliveries come from broadcasts), --deliveries deliveries in all, in final
              statuses (84 % delivered, 8 % opened, 4 % expired, 4 % failed), spread over the
              last 29 days (inside the default 30-day retention, so no prune runs during the
              measurement). The build is timed and bounded by --build-limit;
2. ingest   - for each database, ``benchmarks/ingest.py``'s run (floor on ``/api/v1/ping``,
              closed-loop ``POST /v1/post`` with ONE connected device, paced latency phase, loss
              check) against a server started on that data directory;
3. fan-out  - for each database, ``benchmarks/fanout.py``'s run (raw ceiling, then
              --fanout-devices connected channel devices and one post per round);
4. compare  - per measurement, full / empty: accepted posts/s, server CPU per accepted post,
              fan-out deliveries/s (median of the rounds) and server CPU per delivery. Target:
              the full database within 15 % of the empty one (PASS/FAIL). The server CPU per
              unit of work is the primary figure (the two shared cores make throughput noisy);
              the ingest throughput is also shown as a ratio to its own same-run floor.

    .venv/bin/python -m benchmarks.history                        # 10 M deliveries
    .venv/bin/python -m benchmarks.history --deliveries 1000000 --duration 5 --json-out h.json
    .venv/bin/python -m benchmarks.history --build-only --keep-data   # just the database
    PG=postgresql+asyncpg://postgres@127.0.0.1:5432/test
    .venv/bin/python -m benchmarks.history --postgres-url "$PG"   # the same on PostgreSQL
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import orjson
from sqlalchemy.engine import make_url

from benchmarks import fanout, ingest
from benchmarks.harness import HarnessError
from benchmarks.harness.machine import machine_info, source_version
from benchmarks.harness.report import add_output_options, run_and_report
from benchmarks.harness.scratch_db import ScratchError, create_scratch, drop_scratch
from benchmarks.harness.server import LOOP, OwnServer

TARGET_WITHIN = 0.15
DAY_MS = 86_400_000
# Notifications per pair of INSERT ... SELECT statements while building the history.
CHUNK = 20_000
# Rows lo..hi in column ``value`` of ``s`` (this SQLite may lack generate_series).
SERIES = (
    "WITH RECURSIVE s(value) AS (SELECT :lo UNION ALL SELECT value + 1 FROM s WHERE value < :hi)"
)
STATUS = (
    "CASE WHEN (n.id * 7 + d.id) % 100 < 4 THEN 'failed' "
    "WHEN (n.id * 7 + d.id) % 100 < 8 THEN 'expired' "
    "WHEN (n.id * 7 + d.id) % 100 < 16 THEN 'opened' ELSE 'delivered' END"
)


# --------------------------------------------------------------------------------------------
# Building the history
# --------------------------------------------------------------------------------------------


def _pushgate_env(data_dir: Path, database_url: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PUSHGATE_")}
    env["PUSHGATE_DATA_DIR"] = str(data_dir)
    if database_url is not None:
        env["PUSHGATE_DATABASE_URL"] = database_url
    return env


def migrate_dir(data_dir: Path, database_url: str | None = None) -> None:
    cp = subprocess.run(
        [sys.executable, "-m", "pushgate", "migrate"],
        env=_pushgate_env(data_dir, database_url), capture_output=True, text=True, timeout=120,
        check=False,
    )  # fmt: skip
    if cp.returncode != 0:
        raise HarnessError(f"pushgate migrate failed: {cp.stderr or cp.stdout}")


def history_shape(deliveries: int, devices: int, broadcast_share: float) -> tuple[int, int]:
    """(broadcasts, single-device notifications) that make exactly ``deliveries``."""
    broadcasts = int(deliveries * broadcast_share) // devices
    return broadcasts, deliveries - broadcasts * devices


def build_history(
    db_path: Path,
    deliveries: int,
    devices: int,
    broadcast_share: float,
    time_limit: float,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """Write the history into a migrated SQLite database; returns counts and timings."""
    broadcasts, singles = history_shape(deliveries, devices, broadcast_share)
    total = broadcasts + singles
    now = int(time.time() * 1000)
    start = now - 29 * DAY_MS
    step = max(1, (28 * DAY_MS) // max(1, total))  # the last one a day ago
    t0 = time.perf_counter()
    deadline = t0 + time_limit
    con = sqlite3.connect(db_path, isolation_level=None)
    try:
        con.execute("PRAGMA journal_mode=OFF")
        con.execute("PRAGMA synchronous=OFF")
        con.execute("PRAGMA cache_size=-1000000")
        con.execute("PRAGMA temp_store=MEMORY")
        con.execute("BEGIN")
        con.execute(
            "INSERT INTO accounts (id, name, user_token_hash, user_token_enc, created_ms) "
            "VALUES (1000000, 'history', 'history-h', 'e', ?)",
            (start,),
        )
        con.execute(
            "INSERT INTO apps (id, account_id, title, app_key, secret_hash, secret_enc, "
            "created_ms) VALUES (1000000, 1000000, 'history', 'history-app', 'h', 'e', ?)",
            (start,),
        )
        con.execute(
            f"{SERIES} INSERT INTO subscribers (id, account_id, app_id, created_ms) "
            "SELECT 1000000 + value, 1000000, 1000000, :start FROM s",
            {"lo": 1, "hi": devices, "start": start},
        )
        con.execute(
            f"{SERIES} INSERT INTO devices (id, account_id, app_id, subscriber_id, platform, "
            "name, token_hash, enabled, created_ms, last_seen_ms) SELECT 1000000 + value, "
            "1000000, 1000000, 1000000 + value, 'channel', 'history-' || value, "
            "'history-' || value, 1, :start, :seen FROM s",
            {"lo": 1, "hi": devices, "start": start, "seen": now - DAY_MS},
        )
        con.execute("COMMIT")
        # Notification i (0-based) is a broadcast when (i * B) % N < B: exactly B of them,
        # evenly spread. Ids are in time order, so deliveries are appended in key order.
        done = 0
        for first in range(0, total, CHUNK):
            last = min(total, first + CHUNK) - 1
            con.execute("BEGIN")
            con.execute(
                f"{SERIES} INSERT INTO notifications (id, account_id, app_id, event, title, "
                "message, data, created_ms, expires_ms) "
                "SELECT 1000000 + value, 1000000, 1000000, 'order_shipped', 'Your order', "
                "'Your order #' || value || ' has shipped and arrives tomorrow', "
                "'{\"order\":' || value || '}', :start + value * :step, "
                ":start + value * :step + 86400000 FROM s",
                {"lo": first, "hi": last, "start": start, "step": step},
            )
            params = {"a": 1000000 + first, "b": 1000000 + last, "B": broadcasts, "N": total}
            con.execute(
                "INSERT INTO deliveries (notification_id, device_id, status, transport, "
                "attempts, created_ms, sent_ms, delivered_ms, opened_ms, updated_ms) "
                f"SELECT n.id, d.id, {STATUS}, 'channel', 1, n.created_ms, n.created_ms + 40, "
                "n.created_ms + 90, NULL, n.created_ms + 90 FROM notifications n "
                "JOIN devices d ON d.account_id = 1000000 "
                "WHERE n.id BETWEEN :a AND :b AND ((n.id - 1000000) * :B) % :N < :B "
                "ORDER BY n.id, d.id",
                params,
            )
            con.execute(
                "INSERT INTO deliveries (notification_id, device_id, status, transport, "
                "attempts, created_ms, sent_ms, delivered_ms, updated_ms) "
                f"SELECT n.id, d.id, {STATUS}, 'channel', 1, n.created_ms, n.created_ms + 40, "
                "n.created_ms + 90, n.created_ms + 90 FROM notifications n "
                f"JOIN devices d ON d.id = 1000001 + (n.id % {devices}) "
                "WHERE n.id BETWEEN :a AND :b AND ((n.id - 1000000) * :B) % :N >= :B",
                params,
            )
            con.execute("COMMIT")
            done = last + 1
            if time.perf_counter() > deadline:
                raise HarnessError(
                    f"history build passed --build-limit {time_limit:.0f}s after {done:,} of "
                    f"{total:,} notifications"
                )
            if first // CHUNK % 25 == 0:
                el = time.perf_counter() - t0
                log(f"  history: {done:,} of {total:,} notifications, {el:.0f}s")
        fill_s = time.perf_counter() - t0
        # No ANALYZE: Pushgate never runs it, and its queries are written for the planner
        # without statistics (see storage/audience_sql.py).
        con.execute("PRAGMA journal_mode=WAL")
        counts = {
            "notifications": con.execute(
                "SELECT count(*) FROM notifications WHERE account_id = 1000000"
            ).fetchone()[0],
            "deliveries": con.execute("SELECT count(*) FROM deliveries").fetchone()[0],
        }
        page_size = con.execute("PRAGMA page_size").fetchone()[0]
        pages = con.execute("PRAGMA page_count").fetchone()[0]
    finally:
        con.close()
    total_s = time.perf_counter() - t0
    if counts["deliveries"] != deliveries:
        raise HarnessError(f"history holds {counts['deliveries']:,} deliveries, not {deliveries:,}")
    return {
        "deliveries": counts["deliveries"],
        "notifications": counts["notifications"],
        "broadcasts": broadcasts,
        "single_device_notifications": singles,
        "devices": devices,
        "fill_s": round(fill_s, 1),
        "build_s": round(total_s, 1),
        "deliveries_per_s": round(deliveries / fill_s) if fill_s else None,
        "database_bytes": page_size * pages,
    }


def build_history_pg(
    database_url: str,
    deliveries: int,
    devices: int,
    broadcast_share: float,
    time_limit: float,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """``build_history`` on a migrated PostgreSQL database (the same rows, with
    ``generate_series``), then ``VACUUM ANALYZE``: a database that grew over 29 days has been
    vacuumed and analyzed by autovacuum."""
    return asyncio.run(
        _build_history_pg(database_url, deliveries, devices, broadcast_share, time_limit, log)
    )


async def _build_history_pg(
    database_url: str,
    deliveries: int,
    devices: int,
    broadcast_share: float,
    time_limit: float,
    log: Callable[[str], None],
) -> dict[str, Any]:
    broadcasts, singles = history_shape(deliveries, devices, broadcast_share)
    total = broadcasts + singles
    now = int(time.time() * 1000)
    start = now - 29 * DAY_MS
    step = max(1, (28 * DAY_MS) // max(1, total))
    t0 = time.perf_counter()
    deadline = t0 + time_limit
    dsn = make_url(database_url).set(drivername="postgresql").render_as_string(False)
    con = await asyncpg.connect(dsn, timeout=10)
    try:
        await con.execute("SET synchronous_commit = off")
        async with con.transaction():
            await con.execute(
                "INSERT INTO accounts (id, name, user_token_hash, user_token_enc, created_ms) "
                "VALUES (1000000, 'history', 'history-h', 'e', $1)",
                start,
            )
            await con.execute(
                "INSERT INTO apps (id, account_id, title, app_key, secret_hash, secret_enc, "
                "created_ms) VALUES (1000000, 1000000, 'history', 'history-app', 'h', 'e', $1)",
                start,
            )
            await con.execute(
                "INSERT INTO subscribers (id, account_id, app_id, created_ms) "
                "SELECT 1000000 + value, 1000000, 1000000, $2 "
                "FROM generate_series(1, $1::bigint) AS s(value)",
                devices, start,
            )  # fmt: skip
            await con.execute(
                "INSERT INTO devices (id, account_id, app_id, subscriber_id, platform, name, "
                "token_hash, enabled, created_ms, last_seen_ms) SELECT 1000000 + value, "
                "1000000, 1000000, 1000000 + value, 'channel', 'history-' || value, "
                "'history-' || value, true, $2, $3 FROM generate_series(1, $1::bigint) AS s(value)",
                devices, start, now - DAY_MS,
            )  # fmt: skip
        done = 0
        for first in range(0, total, CHUNK):
            last = min(total, first + CHUNK) - 1
            async with con.transaction():
                await con.execute(
                    "INSERT INTO notifications (id, account_id, app_id, event, title, message, "
                    "data, created_ms, expires_ms) SELECT 1000000 + value, 1000000, 1000000, "
                    "'order_shipped', 'Your order', "
                    "'Your order #' || value || ' has shipped and arrives tomorrow', "
                    "'{\"order\":' || value || '}', $3 + value * $4, "
                    "$3 + value * $4 + 86400000 "
                    "FROM generate_series($1::bigint, $2::bigint) AS s(value)",
                    first, last, start, step,
                )  # fmt: skip
                params = (1000000 + first, 1000000 + last, broadcasts, total)
                await con.execute(
                    "INSERT INTO deliveries (notification_id, device_id, status, transport, "
                    "attempts, created_ms, sent_ms, delivered_ms, opened_ms, updated_ms) "
                    f"SELECT n.id, d.id, {STATUS}, 'channel', 1, n.created_ms, "
                    "n.created_ms + 40, n.created_ms + 90, NULL, n.created_ms + 90 "
                    "FROM notifications n JOIN devices d ON d.account_id = 1000000 "
                    "WHERE n.id BETWEEN $1 AND $2 AND ((n.id - 1000000) * $3) % $4 < $3 "
                    "ORDER BY n.id, d.id",
                    *params,
                )
                await con.execute(
                    "INSERT INTO deliveries (notification_id, device_id, status, transport, "
                    "attempts, created_ms, sent_ms, delivered_ms, updated_ms) "
                    f"SELECT n.id, d.id, {STATUS}, 'channel', 1, n.created_ms, "
                    "n.created_ms + 40, n.created_ms + 90, n.created_ms + 90 "
                    f"FROM notifications n JOIN devices d ON d.id = 1000001 + (n.id % {devices}) "
                    "WHERE n.id BETWEEN $1 AND $2 AND ((n.id - 1000000) * $3) % $4 >= $3",
                    *params,
                )
            done = last + 1
            if time.perf_counter() > deadline:
                raise HarnessError(
                    f"history build passed --build-limit {time_limit:.0f}s after {done:,} of "
                    f"{total:,} notifications"
                )
            if first // CHUNK % 25 == 0:
                el = time.perf_counter() - t0
                log(f"  history: {done:,} of {total:,} notifications, {el:.0f}s")
        # The ids were given explicitly: move the sequence past them, as the server's own
        # inserts would have.
        await con.execute(
            "SELECT setval(pg_get_serial_sequence('notifications', 'id'), "
            "(SELECT max(id) FROM notifications))"
        )
        fill_s = time.perf_counter() - t0
        log("  VACUUM ANALYZE ...")
        await con.execute("VACUUM ANALYZE")
        notifications = await con.fetchval(
            "SELECT count(*) FROM notifications WHERE account_id = 1000000"
        )
        stored = await con.fetchval("SELECT count(*) FROM deliveries")
        database_bytes = await con.fetchval("SELECT pg_database_size(current_database())")
        deliveries_bytes = await con.fetchval("SELECT pg_total_relation_size('deliveries')")
    finally:
        await con.close()
    total_s = time.perf_counter() - t0
    if stored != deliveries:
        raise HarnessError(f"history holds {stored:,} deliveries, not {deliveries:,}")
    return {
        "deliveries": stored,
        "notifications": notifications,
        "broadcasts": broadcasts,
        "single_device_notifications": singles,
        "devices": devices,
        "fill_s": round(fill_s, 1),
        "build_s": round(total_s, 1),
        "deliveries_per_s": round(deliveries / fill_s) if fill_s else None,
        "database_bytes": database_bytes,
        "deliveries_table_bytes": deliveries_bytes,
    }


# --------------------------------------------------------------------------------------------
# Measuring: ingest.py's and fanout.py's runs against a server on a given data directory
# --------------------------------------------------------------------------------------------


class _ServerOn(OwnServer):
    """ingest.py's server, started on a prepared data directory that it leaves in place."""

    target_dir: Path
    target_url: str | None = None

    def __init__(self, keep_dir: bool = False) -> None:
        super().__init__(keep_dir=True)
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir = self.target_dir
        self.env["PUSHGATE_DATA_DIR"] = str(self.dir)
        if self.target_url is not None:
            self.env["PUSHGATE_DATABASE_URL"] = self.target_url
        self.log_path = self.dir / f"server-{self.port}.log"


@contextlib.contextmanager
def _servers_on(data_dir: Path, *modules: Any, url: str | None = None) -> Iterator[None]:
    """Within: the benchmarks in ``modules`` start their server on ``data_dir`` (and on the
    database at ``url``, when given)."""
    cls = type("ServerOnDir", (_ServerOn,), {"target_dir": data_dir, "target_url": url})
    saved = [m.OwnServer for m in modules]
    for m in modules:
        m.OwnServer = cls
    try:
        yield
    finally:
        for m, old in zip(modules, saved, strict=True):
            m.OwnServer = old


def _ingest_args(args: argparse.Namespace) -> argparse.Namespace:
    return argparse.Namespace(
        concurrency=args.concurrency, devices=1, duration=args.duration, max_posts=300_000,
        rate=0.0, latency_rate=args.latency_rate, latency_duration=args.latency_duration,
        ack_interval=0.05, single_frames=False, drain_timeout=30.0, server=None,
        user_token=None, wrk_check=False, keep_data=False, json=False, json_out=None,
    )  # fmt: skip


def _fanout_args(args: argparse.Namespace) -> argparse.Namespace:
    return argparse.Namespace(
        devices=args.fanout_devices, rounds=args.rounds, time_limit=300.0, setup_limit=300.0,
        receivers=2, ack_interval=0.05, register_concurrency=8, idle_wait=1.0,
        round_timeout=60.0, settle_timeout=30.0, pause=0.5, fd_margin=128, py_spy=None,
        keep_data=False, json=False, json_out=None,
    )  # fmt: skip


def ingest_figures(r: dict[str, Any]) -> dict[str, Any]:
    """Accepted posts/s, its ratio to the floor, server CPU per accepted post (us), loss."""
    ing = r["ingest"]
    rate = ing["accepted_per_s"]
    pct = ing["cpu"]["server_cpu_pct"]
    floor = r["floor"]["ok_per_s"]
    return {
        "accepted_per_s": rate,
        "floor_per_s": floor,
        "ratio_to_floor": round(rate / floor, 3) if floor else None,
        # % of a core over the phase / posts per second of the phase
        "server_cpu_us_per_post": round(pct * 1e4 / rate, 1) if pct and rate else None,
        "server_cpu_pct": pct,
        "accept_p99_ms": ing["latency_ms"]["p99"],
        "post_to_device_p99_ms": r["latency"]["post_to_device_ms"]["p99"],
        "lost": r["loss"]["lost"],
        "duplicates": r["loss"]["duplicates"],
        "other_processes_cpu_pct": ing["cpu"].get("other_processes_cpu_pct"),
    }


def fanout_figures(r: dict[str, Any]) -> dict[str, Any]:
    """Median deliveries/s of the rounds, server CPU per delivery (us), check."""
    rounds = r["pushgate"]["rounds"]
    n = r["config"]["devices"]
    per = []
    for x in rounds:
        pct = (x.get("cpu") or {}).get("server_cpu_pct")
        if pct is None or x.get("waited_s") is None:
            continue
        # the round's CPU snapshot spans the post's answer and the wait for the last device
        wall = x["accept_ms"] / 1000 + x["waited_s"]
        per.append(pct / 100 * wall / n * 1e6)
    chk = r["pushgate"].get("check") or {}
    return {
        "devices": n,
        "rounds": len(rounds),
        "deliveries_per_s": r["summary"]["pushgate_median_deliveries_per_s"],
        "raw_ceiling_per_s": r["summary"]["baseline_median_deliveries_per_s"],
        "ratio_to_raw": r["summary"]["ratio_median"],
        "server_cpu_us_per_delivery": round(statistics.median(per), 2) if per else None,
        "missing": chk.get("expected", 0) - chk.get("received", 0),
        "duplicates": chk.get("duplicates", 0),
    }


def _median_figures(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per key: the median over the repeats of numbers; loss counts are summed."""
    out: dict[str, Any] = {}
    for k in runs[0]:
        vals = [x[k] for x in runs if x.get(k) is not None]
        if k in ("lost", "duplicates", "missing"):
            out[k] = sum(vals)
        elif vals and all(isinstance(v, int | float) for v in vals):
            out[k] = statistics.median(vals)
        else:
            out[k] = vals[0] if vals else None
    return out


def _compare(
    name: str, empty: float | None, full: float | None, higher_is_better: bool, unit: str
) -> dict[str, Any]:
    if not empty or not full:
        return {"measure": name, "empty": empty, "full": full, "ratio": None, "pass": False}
    ratio = full / empty
    ok = ratio >= 1 - TARGET_WITHIN if higher_is_better else ratio <= 1 + TARGET_WITHIN
    return {"measure": name, "unit": unit, "empty": empty, "full": full,
            "ratio": round(ratio, 3), "pass": ok}  # fmt: skip


def run(args: argparse.Namespace, log: Any) -> dict[str, Any]:
    root = args.reuse or Path(tempfile.mkdtemp(prefix="pushgate-history-", dir=args.work_dir))
    dirs = {"empty": root / "empty", "full": root / "full"}
    # On PostgreSQL: a scratch database per side, (name, URL).
    scratch: dict[str, tuple[str, str]] = {}
    result: dict[str, Any] = {
        "benchmark": "history",
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "source": source_version(),
        "machine": machine_info(LOOP),
        "config": {
            "deliveries": args.deliveries,
            "history_devices": args.history_devices,
            "broadcast_share": args.broadcast_share,
            "concurrency": args.concurrency,
            "duration_s": args.duration,
            "fanout_devices": args.fanout_devices,
            "rounds": args.rounds,
            "order": args.order,
            "repeats": args.repeats,
            "database": "postgresql" if args.postgres_url else "sqlite",
        },
    }
    try:
        built = root / "history.json"
        if args.reuse and built.exists():
            result["history"] = orjson.loads(built.read_bytes())
            result["history"]["reused"] = str(root)
            log(f"reusing the databases in {root}")
        else:
            for label, d in dirs.items():
                d.mkdir(mode=0o700)
                if args.postgres_url:
                    try:
                        scratch[label] = create_scratch(args.postgres_url, f"history_{label}")
                    except ScratchError as exc:
                        raise HarnessError(f"--postgres-url: {exc}") from exc
                migrate_dir(d, scratch[label][1] if scratch else None)
            log(f"building a history of {args.deliveries:,} deliveries ...")
            if scratch:
                result["history"] = build_history_pg(
                    scratch["full"][1], args.deliveries, args.history_devices,
                    args.broadcast_share, args.build_limit, log,
                )  # fmt: skip
            else:
                result["history"] = build_history(
                    dirs["full"] / "pushgate.db", args.deliveries, args.history_devices,
                    args.broadcast_share, args.build_limit, log,
                )  # fmt: skip
            built.write_bytes(orjson.dumps(result["history"]))
        h = result["history"]
        log(
            f"  built in {h['build_s']} s ({h['deliveries_per_s']:,} deliveries/s), "
            f"{h['database_bytes'] / 2**20:,.0f} MiB"
        )
        if args.build_only:
            result["data_dir"] = str(dirs["full"])
            return result
        first = ["empty", "full"] if args.order == "empty-first" else ["full", "empty"]
        raw: dict[str, dict[str, list[dict[str, Any]]]] = {
            k: {"ingest": [], "fanout": []} for k in dirs
        }
        for what, mod, args_of, figures in (
            ("ingest", ingest, _ingest_args, ingest_figures),
            ("fanout", fanout, _fanout_args, fanout_figures),
        ):
            for rep in range(args.repeats):
                # alternate which database goes first, so a drift of the machine's load
                # falls on both sides
                for label in first if rep % 2 == 0 else first[::-1]:
                    log(f"--- {what} on the {label} database ({rep + 1}/{args.repeats}) ---")
                    try:
                        url = scratch[label][1] if scratch else None
                        with _servers_on(dirs[label], mod, url=url):
                            r = mod.run(args_of(args), log)
                        raw[label][what].append(figures(r))
                    except HarnessError as exc:  # keep what the other runs measured
                        log(f"harness error in {what} on the {label} database: {exc}")
                        result.setdefault("errors", []).append(f"{what} {label}: {exc}")
                    if args.json_out:  # what is measured so far, in case a later run fails
                        result["repeats"] = raw
                        args.json_out.write_bytes(orjson.dumps(result))
        if any(not raw[label][what] for label in dirs for what in ("ingest", "fanout")):
            raise HarnessError(f"a measurement has no complete run: {result.get('errors')}")
        result["runs"] = {
            label: {what: _median_figures(raw[label][what]) for what in ("ingest", "fanout")}
            for label in dirs
        }
        result["repeats"] = raw
        e, f = result["runs"]["empty"], result["runs"]["full"]
        result["comparison"] = [
            _compare("ingest: server CPU per accepted post", e["ingest"]["server_cpu_us_per_post"],
                     f["ingest"]["server_cpu_us_per_post"], False, "us"),
            _compare("ingest: accepted posts/s", e["ingest"]["accepted_per_s"],
                     f["ingest"]["accepted_per_s"], True, "/s"),
            _compare("ingest: accepted posts/s / same-run floor", e["ingest"]["ratio_to_floor"],
                     f["ingest"]["ratio_to_floor"], True, "x"),
            _compare("fan-out: server CPU per delivery",
                     e["fanout"]["server_cpu_us_per_delivery"],
                     f["fanout"]["server_cpu_us_per_delivery"], False, "us"),
            _compare("fan-out: deliveries/s (median round)", e["fanout"]["deliveries_per_s"],
                     f["fanout"]["deliveries_per_s"], True, "/s"),
        ]  # fmt: skip
        loss = sum(
            x[w][k] for x in (e, f) for w, k in (("ingest", "lost"), ("ingest", "duplicates"),
                                                 ("fanout", "missing"), ("fanout", "duplicates"))
        )  # fmt: skip
        result["nothing_lost_or_repeated"] = loss == 0
    finally:
        if not (args.keep_data or args.reuse or (args.build_only and "history" in result)):
            shutil.rmtree(root, ignore_errors=True)
            for name, _ in scratch.values():
                drop_scratch(args.postgres_url, name)
        else:
            result["kept"] = str(root)
            if scratch:
                result["kept_databases"] = [name for name, _ in scratch.values()]
    return result


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.0f}" if v >= 100 else f"{v:.3g}"
    return f"{v:,}"


def print_table(r: dict[str, Any]) -> None:
    c, h = r["config"], r["history"]
    print(
        f"\nPushgate history benchmark  {r['date']}  nproc={r['machine']['nproc']}  "
        f"source {r.get('source')}"
    )
    print(
        f"history: {h['deliveries']:,} deliveries ({h['broadcasts']:,} broadcasts to "
        f"{h['devices']:,} devices + {h['single_device_notifications']:,} single-device posts; "
        f"{h['notifications']:,} notifications), built in {h['build_s']} s "
        f"({_fmt(h['deliveries_per_s'])} deliveries/s), {h['database_bytes'] / 2**20:,.0f} MiB"
        f" on {c.get('database', 'sqlite')} ({h['database_bytes'] / h['deliveries']:.0f} bytes "
        "per delivery)"
    )
    if "runs" not in r:
        print(f"data dir kept: {r.get('data_dir')}")
        return
    print(
        f"ingest: 1 connected device, c={c['concurrency']}, {c['duration_s']} s; fan-out: "
        f"{c['fanout_devices']:,} devices, {c['rounds']} rounds; "
        f"{c['repeats']} repeats per database, alternating, medians\n"
    )
    hdr = f"{'measure':<46}{'empty':>12}{'10 M' if h['deliveries'] == 10**7 else 'full':>12}"
    hdr += f"{'full/empty':>12}  target"
    print(hdr)
    print("-" * (len(hdr) + 6))
    for x in r["comparison"]:
        mark = "PASS" if x["pass"] else "FAIL"
        print(
            f"{x['measure'] + ' (' + x.get('unit', '') + ')':<46}{_fmt(x['empty']):>12}"
            f"{_fmt(x['full']):>12}{_fmt(x['ratio']):>12}  [{mark}] within "
            f"{TARGET_WITHIN:.0%}"
        )
    for label in ("empty", "full"):
        i, f = r["runs"][label]["ingest"], r["runs"][label]["fanout"]
        print(
            f"{label}: ingest floor {_fmt(i['floor_per_s'])}/s, accept p99 "
            f"{_fmt(i['accept_p99_ms'])} ms, post-to-device p99 {_fmt(i['post_to_device_p99_ms'])}"
            f" ms, lost {i['lost']}, duplicates {i['duplicates']}, other processes "
            f"{_fmt(i['other_processes_cpu_pct'])}% CPU; fan-out raw ceiling "
            f"{_fmt(f['raw_ceiling_per_s'])}/s, missing {f['missing']}, duplicates "
            f"{f['duplicates']}"
        )
    print(f"nothing lost or repeated: {r['nothing_lost_or_repeated']}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--deliveries", type=int, default=10_000_000, help="history size (10 M)")
    ap.add_argument("--history-devices", type=int, default=1000, help="devices of the history")
    ap.add_argument(
        "--broadcast-share", type=float, default=0.8,
        help="share of the history's deliveries that come from broadcasts (0.8)",
    )  # fmt: skip
    ap.add_argument("--build-limit", type=float, default=900.0, help="seconds for the build")
    ap.add_argument("--concurrency", type=int, default=64, help="ingest HTTP connections")
    ap.add_argument("--duration", type=float, default=8.0, help="seconds per ingest phase")
    ap.add_argument("--latency-rate", type=float, default=500.0, help="paced posts/s")
    ap.add_argument("--latency-duration", type=float, default=3.0, help="paced seconds")
    ap.add_argument("--fanout-devices", type=int, default=2000, help="fan-out devices (2000)")
    ap.add_argument("--rounds", type=int, default=7, help="fan-out rounds (7)")
    ap.add_argument(
        "--order", choices=("empty-first", "full-first"), default="empty-first",
        help="which database each measurement runs on first",
    )  # fmt: skip
    ap.add_argument(
        "--repeats", type=int, default=2,
        help="runs of each measurement per database, alternating which goes first (2); "
        "medians are compared",
    )  # fmt: skip
    ap.add_argument("--work-dir", type=Path, help="where the data directories go (temp)")
    ap.add_argument(
        "--reuse", type=Path, metavar="DIR",
        help="the databases a run with --keep-data left in DIR (skips the build)",
    )  # fmt: skip
    ap.add_argument("--build-only", action="store_true", help="build the history and stop")
    ap.add_argument(
        "--postgres-url", metavar="URL",
        help="run on PostgreSQL: an admin URL of a loopback server on which two scratch "
        "databases are made (and dropped afterwards, unless --keep-data); default: SQLite",
    )  # fmt: skip
    add_output_options(ap)
    args = ap.parse_args(argv)
    if args.deliveries < args.history_devices or not 0 <= args.broadcast_share <= 1:
        ap.error("deliveries must be >= history-devices and broadcast-share in [0, 1]")
    if args.postgres_url and args.reuse:
        ap.error("--reuse keeps SQLite databases only; leave out --postgres-url")
    return run_and_report(args, run, print_table)


if __name__ == "__main__":
    sys.exit(main())
