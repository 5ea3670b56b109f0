"""Queue engines benchmark: jobs/s through each engine, end to end, against Redis's own ceiling.

For every engine (embedded on SQLite in a temp dir, embedded on a temporary PostgreSQL
database, Redis Streams under a unique key prefix) three phases, each with --jobs jobs of
--payload-bytes bytes:

1. enqueue     - one producer adds the jobs in batches of --batch;
2. claim+ack   - one consumer task drains them: claim up to --batch, acknowledge the batch;
3. round trip  - a producer and a consumer run at the same time (the consumer waits in its
                 claims); the time from the first enqueue until the last job is acknowledged.

The baseline, measured in the same run: ``redis-benchmark -P 16 XADD`` of the same payload
into a scratch key (deleted afterwards) - the most a single Redis can take in, so every rate
is also shown as a ratio of it. The run is bounded: phases stop at --time-limit seconds (in
all) and report what they finished. Nothing is written anywhere but temp dirs, the temporary
database and keys that are removed again.

    .venv/bin/python -m benchmarks.queues
    .venv/bin/python -m benchmarks.queues --jobs 5000 --engines sqlite,redis --json out.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import redis
import redis.asyncio as aioredis
from sqlalchemy.engine import make_url

from benchmarks.harness import HarnessError
from benchmarks.harness.report import Log, print_targets, run_and_report
from benchmarks.harness.scratch_db import ScratchError, create_database, drop_database
from benchmarks.harness.server import LOOP, run_loop
from pushgate.queue.base import QueueEngine
from pushgate.queue.embedded import EmbeddedQueue
from pushgate.queue.redis import RedisQueue, redact_url
from pushgate.storage.database import open_database
from pushgate.storage.migrate import migrate

ENGINES = ("sqlite", "postgresql", "redis")
QUEUE = "bench"
LEASE_SECONDS = 300.0


@dataclass
class Row:
    engine: str
    phase: str
    jobs: int
    seconds: float
    complete: bool

    @property
    def rate(self) -> float:
        return self.jobs / self.seconds if self.seconds > 0 else 0.0


def _payloads(n: int, size: int) -> list[bytes]:
    """Numbered payloads (the first 8 bytes), at least 8 bytes long."""
    filler = os.urandom(max(0, size - 8))
    return [b"%08d" % i + filler for i in range(n)]


# --- ceiling ------------------------------------------------------------------------------


def redis_benchmark_xadd(url: str, requests: int, payload_bytes: int) -> float:
    """XADD requests/s of ``redis-benchmark`` (pipeline 16) into a scratch key."""
    exe = shutil.which("redis-benchmark")
    if exe is None:
        raise HarnessError("redis-benchmark is not installed")
    parts = urlsplit(url)
    key = f"pushgate-bench:ceiling:{uuid.uuid4().hex[:12]}"
    db = (parts.path or "/0").lstrip("/") or "0"
    cmd = [exe, "-h", parts.hostname or "127.0.0.1", "-p", str(parts.port or 6379)]
    cmd += ["--dbnum", db, "-n", str(requests), "-P", "16", "-q"]
    if parts.password:
        cmd += ["-a", parts.password, "--no-auth-warning"]
    cmd += ["XADD", key, "*", "p", "x" * payload_bytes]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise HarnessError(f"redis-benchmark failed: {exc}") from exc
    finally:
        client = redis.Redis.from_url(url)
        try:
            client.delete(key)
        finally:
            client.close()
    found = re.findall(r"([\d.]+) requests per second", out)
    if not found:
        raise HarnessError(f"no 'requests per second' in redis-benchmark output: {out[-300:]!r}")
    return float(found[-1])


# --- engines ------------------------------------------------------------------------------

Opener = Callable[[], "contextlib.AbstractAsyncContextManager[QueueEngine]"]


@contextlib.asynccontextmanager
async def _embedded(url: str) -> AsyncIterator[QueueEngine]:
    db = open_database(url)
    engine = EmbeddedQueue(db)
    try:
        await engine.start()
        yield engine
    finally:
        await engine.close()
        await db.dispose()


@contextlib.asynccontextmanager
async def sqlite_storage() -> AsyncIterator[Opener]:
    with tempfile.TemporaryDirectory(prefix="pushgate-bench-") as tmp:
        url = f"sqlite+aiosqlite:///{Path(tmp) / 'queue.db'}"
        db = open_database(url)
        await migrate(db)
        await db.dispose()
        yield lambda: _embedded(url)


@contextlib.asynccontextmanager
async def postgres_storage(admin_url: str) -> AsyncIterator[Opener]:
    try:
        name, url = await create_database(admin_url, "bench")
    except ScratchError as exc:
        raise HarnessError(f"PostgreSQL at {admin_url} is unreachable: {exc}") from exc
    try:
        db = open_database(url)
        await migrate(db)
        await db.dispose()
        yield lambda: _embedded(url)
    finally:
        await drop_database(admin_url, name)


@contextlib.asynccontextmanager
async def redis_storage(url: str) -> AsyncIterator[Opener]:
    prefix = f"pushgate-bench-{uuid.uuid4().hex[:12]}"

    @contextlib.asynccontextmanager
    async def open_engine() -> AsyncIterator[QueueEngine]:
        engine = RedisQueue(url, prefix=prefix, max_length=10_000_000)
        try:
            await engine.start()
        except ConnectionError as exc:
            raise HarnessError(str(exc)) from exc
        try:
            yield engine
        finally:
            await engine.close()

    try:
        yield open_engine
    finally:
        client = aioredis.from_url(url)
        try:
            keys = [key async for key in client.scan_iter(match=f"{prefix}:*")]
            if keys:
                await client.delete(*keys)
        finally:
            await client.aclose()


# --- phases -------------------------------------------------------------------------------


async def enqueue_all(
    engine: QueueEngine, payloads: list[bytes], batch: int, deadline: float
) -> int:
    done = 0
    for start in range(0, len(payloads), batch):
        if time.monotonic() > deadline:
            break
        chunk = payloads[start : start + batch]
        await engine.enqueue(QUEUE, chunk)
        done += len(chunk)
    return done


async def drain(engine: QueueEngine, n: int, batch: int, deadline: float, wait: float) -> int:
    """Claim and acknowledge until ``n`` distinct jobs are done, the deadline passes, or (with
    no wait) the queue is empty. Jobs are told apart by their payload's number: the embedded
    engine on SQLite may give a new job the id of one acknowledged before."""
    seen: set[bytes] = set()
    while len(seen) < n and time.monotonic() < deadline:
        jobs = await engine.claim(
            QUEUE, limit=min(batch, n - len(seen)), lease_seconds=LEASE_SECONDS, wait_seconds=wait
        )
        if not jobs and wait == 0:
            break
        await engine.ack(jobs)
        seen.update(job.payload[:8] for job in jobs)
    return len(seen)


async def run_engine(
    name: str, opener: Opener, args: argparse.Namespace, deadline: float
) -> list[Row]:
    payloads = _payloads(args.jobs, args.payload_bytes)
    rows: list[Row] = []
    async with opener() as engine:
        t0 = time.perf_counter()
        added = await enqueue_all(engine, payloads, args.batch, deadline)
        rows.append(Row(name, "enqueue", added, time.perf_counter() - t0, added == args.jobs))

        t0 = time.perf_counter()
        done = await drain(engine, added, args.batch, deadline, wait=0)
        rows.append(Row(name, "claim+ack", done, time.perf_counter() - t0, done == args.jobs))
        if done != added and time.monotonic() < deadline:
            raise HarnessError(f"{name}: {added} jobs enqueued but {done} claimed")

        t0 = time.perf_counter()
        consumer = asyncio.create_task(drain(engine, args.jobs, args.batch, deadline, wait=0.5))
        added = await enqueue_all(engine, payloads, args.batch, deadline)
        done = await consumer
        rows.append(Row(name, "round trip", done, time.perf_counter() - t0, done == args.jobs))
        left = await engine.depth(QUEUE)
        if all(row.complete for row in rows) and left != 0:
            raise HarnessError(f"{name}: {left} jobs left in the queue after the run")
    return rows


# --- report -------------------------------------------------------------------------------


def table(rows: list[Row], ceiling: float | None) -> str:
    head = (
        f"{'engine':<12} {'phase':<12} {'jobs':>8} {'seconds':>9} {'jobs/s':>10} {'x ceiling':>10}"
    )
    lines = [head, "-" * len(head)]
    if ceiling is not None:
        lines.append(
            f"{'redis-bench':<12} {'XADD -P 16':<12} {'':>8} {'':>9} {ceiling:>10.0f} {1:>10.3f}"
        )
    for r in rows:
        ratio = f"{r.rate / ceiling:>10.3f}" if ceiling else f"{'-':>10}"
        mark = "" if r.complete else "  (stopped at --time-limit)"
        cells = f"{r.engine:<12} {r.phase:<12} {r.jobs:>8} {r.seconds:>9.3f} {r.rate:>10.0f}"
        lines.append(f"{cells} {ratio}{mark}")
    return "\n".join(lines)


async def run_engines(args: argparse.Namespace, deadline: float, log: Log) -> list[Row]:
    rows: list[Row] = []
    storages = {
        "sqlite": sqlite_storage,
        "postgresql": lambda: postgres_storage(args.postgres_url),
        "redis": lambda: redis_storage(args.redis_url),
    }
    for name in args.engines:
        if time.monotonic() > deadline:
            log(f"skipped {name}: --time-limit reached")
            continue
        async with storages[name]() as opener:
            rows += await run_engine(name, opener, args, deadline)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=20_000, help="jobs per phase (default 20000)")
    ap.add_argument("--batch", type=int, default=100, help="jobs per enqueue/claim (default 100)")
    ap.add_argument("--payload-bytes", type=int, default=200, help="payload size (default 200)")
    ap.add_argument(
        "--engines",
        type=lambda s: [e.strip() for e in s.split(",") if e.strip()],
        default=list(ENGINES),
        help="comma-separated, of: " + ",".join(ENGINES),
    )
    ap.add_argument(
        "--redis-url", default=os.environ.get("PUSHGATE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    )
    ap.add_argument(
        "--postgres-url",
        default=os.environ.get(
            "PUSHGATE_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
        ),
        help="a database the temporary benchmark database is created from",
    )
    ap.add_argument("--time-limit", type=float, default=120.0, help="seconds for the whole run")
    ap.add_argument(
        "--ceiling-requests", type=int, default=200_000, help="redis-benchmark requests (min)"
    )
    ap.add_argument("--ceiling", action="store_true", help="measure the ceiling without redis")
    ap.add_argument(
        "--json", nargs="?", const=True, default=False, metavar="PATH",
        help="print one JSON object; with PATH, print the table and write the JSON there",
    )  # fmt: skip
    ap.add_argument("--json-out", type=Path, help="also write the JSON object to this file")
    args = ap.parse_args(argv)
    unknown = set(args.engines) - set(ENGINES)
    if unknown:
        ap.error(f"unknown --engines {sorted(unknown)}")
    if args.jobs < 1 or args.batch < 1 or args.payload_bytes < 8:
        ap.error("--jobs and --batch must be >= 1, --payload-bytes >= 8")
    if args.json is not True and args.json is not False:  # --json PATH, as before --json-out
        args.json_out, args.json = Path(args.json), False

    return run_and_report(args, run, print_table)


def run(args: argparse.Namespace, log: Log) -> dict[str, Any]:
    log(
        f"queues benchmark: {args.jobs} jobs x {args.payload_bytes} B, batch {args.batch}, "
        f"loop {LOOP}, python {platform.python_version()}, {os.cpu_count()} cpus"
    )
    before = os.getloadavg()
    started = time.monotonic()
    ceiling = None
    if "redis" in args.engines or args.ceiling:
        requests = max(args.jobs, args.ceiling_requests)
        ceiling = redis_benchmark_xadd(args.redis_url, requests, args.payload_bytes)
    deadline = started + args.time_limit
    rows = run_loop(run_engines(args, deadline, log))
    load = os.getloadavg()
    return {
        "args": {
            **{k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "redis_url": redact_url(args.redis_url),
            "postgres_url": make_url(args.postgres_url).render_as_string(hide_password=True),
        },
        "python": platform.python_version(),
        "loop": LOOP,
        "cpus": os.cpu_count(),
        "seconds": round(time.monotonic() - started, 1),
        "load_average_before_after": [before[0], load[0]],
        "ceiling_xadd_per_s": ceiling,
        "rows": [
            {
                **asdict(r),
                "jobs_per_s": r.rate,
                "ratio": (r.rate / ceiling if ceiling else None),
            }
            for r in rows
        ],
        "targets": [],
    }


def print_table(r: dict[str, Any]) -> None:
    a = r["args"]
    print(
        f"queues benchmark: {a['jobs']} jobs x {a['payload_bytes']} B, batch {a['batch']}, "
        f"loop {r['loop']}, python {r['python']}, {r['cpus']} cpus"
    )
    print(table([Row(**{k: x[k] for k in Row.__dataclass_fields__}) for x in r["rows"]],
                r["ceiling_xadd_per_s"]))  # fmt: skip
    before, after = r["load_average_before_after"]
    print(f"({r['seconds']} s in all; load average before {before:.2f}, after {after:.2f})")
    if max(before, after) > 0.5 * (r["cpus"] or 1):
        print("warning: the machine was not quiet; rates and ratios are noisy")
    print_targets(r["targets"])


if __name__ == "__main__":
    sys.exit(main())
