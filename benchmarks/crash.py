"""Crash test at scale: SIGKILL the server in the middle of a burst of posts; nothing it
answered 201 may be lost.

One run, all on loopback, on one data directory (SQLite by default; ``--database-url`` for a
scratch PostgreSQL database, ``--queue-url`` for the Redis Streams queue engine):

1. setup    - start ``pushgate serve``, an account, an app, an event and D channel devices;
              connect ``--connected`` of them (WebSocket, ``batch=1``, acknowledging every
              ``--ack-interval`` s and reconnecting on their own like real clients);
2. burst    - ``--posts`` Instapush ``POST /v1/post`` from ``--concurrency`` keep-alive
              connections, as fast as the server answers. Every notification id answered 201
              (header ``X-Pushgate-Notification-Id``) is recorded. As soon as ``--kill-after``
              posts have been answered 201 the server gets SIGKILL, and no further post is sent;
3. restart  - the server starts again on the same data directory; the connected devices
              reconnect by themselves, the others connect now; everything is collected until
              every answered notification has reached every device (bounded by
              ``--drain-timeout``), then ``--settle`` more seconds to catch late duplicates;
4. report   - accepted (2xx) posts and posts/s before the kill; lost: answered notifications
              some device never received (target 0); duplicates: a notification received more
              than once by one device (at-least-once delivery may repeat what was sent but not
              yet recorded as acknowledged when the server died); extra: notifications stored
              whose answer the kill cut off; the time to drain after the restart; and the
              server's own view: delivery rows and statuses of every answered id, via
              ``GET /api/v1/notifications/{id}/deliveries``.

A device recognizes a notification by the post's sequence number carried in its data (the
``seq`` tracker); every post is one notification, so sequence numbers and answered ids map one
to one (the server view checks the ids). Exit code 0 whenever it measured (target PASS or
FAIL), 2 on a harness error.

    .venv/bin/python -m benchmarks.crash                       # SQLite, embedded queue
    .venv/bin/python -m benchmarks.crash --database-url postgresql+asyncpg://postgres@127.0.0.1/test
    .venv/bin/python -m benchmarks.crash --queue-url redis://127.0.0.1:6379/0
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import time
import uuid
from array import array
from collections import Counter
from typing import Any

import orjson

from benchmarks.fanout import ReceiverGroup, _FanoutReceivers, register_devices
from benchmarks.harness import HarnessError
from benchmarks.harness.http import HttpPool, check, header, http_request
from benchmarks.harness.machine import machine_info, raise_nofile, source_version
from benchmarks.harness.report import (
    add_output_options,
    fmt,
    print_targets,
    run_and_report,
    utc_now,
)
from benchmarks.harness.scratch_db import ScratchError, create_scratch, drop_scratch
from benchmarks.harness.server import LOOP, Clock, OwnServer, run_loop
from benchmarks.harness.stats import percentiles, sum_counts
from benchmarks.ingest import EVENT, setup_account

TARGET_LOST = 0


# --------------------------------------------------------------------------------------------
# Receivers: fanout's (ingest's raw WebSocket devices), asked which posts they miss
# --------------------------------------------------------------------------------------------


class _CrashReceivers(_FanoutReceivers):
    async def _do(self, cmd: str, args: tuple) -> None:
        if cmd == "missing":  # accepted map -> {seq: devices that do not have it}
            (accepted,) = args
            missing: Counter[int] = Counter()
            for d in self.devices:
                counts = d.counts
                for seq, ok in enumerate(accepted):
                    if ok and (seq >= len(counts) or not counts[seq]):
                        missing[seq] += 1
            self.pipe.send(("ok", dict(missing)))
        elif cmd == "arrivals":  # every first arrival: (seq, latency ns) as raw arrays
            self.pipe.send(("ok", (self.rec.lat_seq.tobytes(), self.rec.lat_ns.tobytes())))
        else:
            await super()._do(cmd, args)


def _crash_receivers_entry(pipe: Any, ack_interval: float, batch: bool, slots: int) -> None:
    run_loop(_CrashReceivers(pipe, ack_interval, batch, slots).serve())


class CrashReceiverGroup(ReceiverGroup):
    def __init__(self, ack_interval: float, slots: int) -> None:
        super().__init__(1, ack_interval, slots, entry=_crash_receivers_entry)

    def missing(self, accepted: bytes) -> Counter[int]:
        total: Counter[int] = Counter()
        for m in self.all("missing", accepted, timeout=120):
            total.update(m)
        return total

    def arrivals(self) -> tuple[array, array]:
        seqs, lats = array("q"), array("q")
        for s, lat in self.all("arrivals", timeout=60):
            seqs.frombytes(s)
            lats.frombytes(lat)
        return seqs, lats


# --------------------------------------------------------------------------------------------
# Scratch PostgreSQL database and Redis key prefix
# --------------------------------------------------------------------------------------------


def drop_redis_prefix(url: str, prefix: str) -> int:
    import redis

    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        if keys:
            client.delete(*keys)
        return len(keys)
    finally:
        client.close()


def _require_loopback_redis(url: str) -> None:
    from urllib.parse import urlsplit

    u = urlsplit(url)
    if u.scheme in ("redis", "rediss") and u.hostname not in ("localhost", "127.0.0.1", "::1"):
        raise HarnessError(f"refusing non-loopback Redis {u.hostname!r}")


# --------------------------------------------------------------------------------------------
# The burst, with the kill
# --------------------------------------------------------------------------------------------


async def burst(
    port: int,
    creds: dict[str, str],
    posts: int,
    concurrency: int,
    kill_after: int,
    server_pid: int,
    request_timeout: float,
) -> dict[str, Any]:
    pool = HttpPool("127.0.0.1", port, concurrency)
    ids = [0] * posts  # notification id answered 201 for post seq, else 0
    sent_ns = array("q", bytes(8 * posts))  # wall-clock send time per seq
    statuses: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    st: dict[str, Any] = {"next": 0, "accepted": 0, "ok": 0, "killed_at": None, "kill_wall": None}
    t0 = time.perf_counter()
    sent = 0

    async def worker() -> None:
        nonlocal sent
        while st["killed_at"] is None and st["next"] < posts:
            i = st["next"]
            st["next"] = i + 1
            t_ns = time.time_ns()
            sent_ns[i] = t_ns
            body = orjson.dumps({"event": EVENT, "trackers": {"seq": str(i), "t": str(t_ns)}})
            sent += 1
            try:
                status, head, raw = await pool.request("POST", "/v1/post", creds, body,
                                                       request_timeout)  # fmt: skip
            except (OSError, ConnectionError, TimeoutError) as exc:
                cut = st["killed_at"] is not None
                errors[("cut off by the kill: " if cut else "") + type(exc).__name__] += 1
                continue
            statuses[str(status)] += 1
            if 200 <= status < 300:
                st["ok"] += 1
            if status == 201:
                nid = header(head, b"x-pushgate-notification-id")
                ids[i] = int(nid) if nid else -1
                st["accepted"] += 1
                if st["accepted"] == kill_after and st["killed_at"] is None:
                    os.kill(server_pid, signal.SIGKILL)
                    st["killed_at"] = time.perf_counter() - t0
                    st["kill_wall"] = time.time_ns()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - t0
    pool.close()
    killed_at = st["killed_at"]
    return {
        "sent": sent,
        "not_sent": posts - sent,
        "ok_2xx": st["ok"],
        "accepted_201": st["accepted"],
        "statuses": dict(statuses),
        "errors": dict(errors),
        "elapsed_s": round(elapsed, 3),
        "killed_after_s": round(killed_at, 3) if killed_at is not None else None,
        "accepted_per_s_before_kill": round(st["accepted"] / killed_at, 1)
        if killed_at
        else round(st["accepted"] / elapsed, 1),
        "kill_wall_ns": st["kill_wall"],
        "ids": ids,
        "sent_ns": sent_ns,
    }


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------


def _wait_all(
    groups: list[CrashReceiverGroup], accepted: bytes, timeout: float, poll: float = 0.1
) -> tuple[dict[str, int], float, bool]:
    t0 = time.perf_counter()
    while True:
        c = _count(groups, accepted)
        waited = time.perf_counter() - t0
        if c["received"] >= c["expected"]:
            return c, waited, True
        if waited >= timeout:
            return c, waited, False
        time.sleep(poll)


def _count(groups: list[CrashReceiverGroup], accepted: bytes) -> dict[str, Any]:
    return sum_counts(g.count(accepted) for g in groups)


async def _server_view(
    port: int, user_token: str, ids: list[int], devices: int, concurrency: int = 8
) -> dict[str, Any]:
    """Delivery rows and statuses of every answered id, from the API."""
    pool = HttpPool("127.0.0.1", port, concurrency)
    auth = {"Authorization": f"Bearer {user_token}"}
    rows_per_id: Counter[int] = Counter()
    statuses: Counter[str] = Counter()
    short: list[int] = []
    errors: Counter[str] = Counter()

    async def one(nid: int) -> None:
        path = f"/api/v1/notifications/{nid}/deliveries?limit={max(devices, 1)}"
        try:
            status, _, raw = await pool.request("GET", path, auth, None, 30)
        except (OSError, ConnectionError, TimeoutError) as exc:
            errors[type(exc).__name__] += 1
            return
        if status != 200:
            errors[f"HTTP {status}"] += 1
            return
        data = orjson.loads(raw)
        rows = data["deliveries"]
        rows_per_id[len(rows)] += 1
        if len(rows) < devices:
            short.append(nid)
        for row in rows:
            statuses[row["status"]] += 1

    sem = asyncio.Semaphore(concurrency * 4)

    async def limited(nid: int) -> None:
        async with sem:
            await one(nid)

    try:
        await asyncio.gather(*(limited(n) for n in ids))
    finally:
        pool.close()
    return {
        "ids_checked": len(ids),
        "ids_with_all_deliveries": rows_per_id.get(devices, 0),
        "ids_short": len(short),
        "ids_short_sample": short[:10],
        "rows_per_id": {str(k): v for k, v in sorted(rows_per_id.items())},
        "statuses": dict(statuses),
        "errors": dict(errors),
    }


def _wait_statuses(base: str, user_token: str, timeout: float) -> tuple[dict[str, int], float]:
    """Until no delivery of the account is queued or sent (all acknowledged), or timeout."""
    auth = {"Authorization": f"Bearer {user_token}"}
    t0 = time.perf_counter()
    while True:
        status, data = http_request("GET", base, "/api/v1/delivery-counts", auth, None)
        counts = check(status, data, "delivery counts", ok=(200,))["counts"]
        waited = time.perf_counter() - t0
        if (counts.get("queued", 0) + counts.get("sent", 0)) == 0 or waited >= timeout:
            return counts, waited
        time.sleep(0.25)


def run(args: argparse.Namespace, log: Any) -> dict[str, Any]:
    clock = Clock(args.time_limit)
    soft, hard = raise_nofile()
    engine = "postgresql" if args.database_url else "sqlite"
    result: dict[str, Any] = {
        "benchmark": "crash",
        "date": utc_now(),
        "source": source_version(),
        "machine": machine_info(LOOP),
        "config": {
            "database": engine,
            "queue": "redis" if args.queue_url else "embedded",
            "devices": args.devices,
            "connected_before": args.connected,
            "posts": args.posts,
            "kill_after": args.kill_after,
            "concurrency": args.concurrency,
            "ack_interval_s": args.ack_interval,
            "nofile": [soft, hard],
        },
    }
    server: OwnServer | None = None
    groups: list[CrashReceiverGroup] = []
    pg_name: str | None = None
    prefix = f"pushgate-crash-{uuid.uuid4().hex[:10]}"
    try:
        server = OwnServer(keep_dir=args.keep_data)
        if args.database_url:
            try:
                pg_name, scratch = create_scratch(args.database_url, "crash")
            except ScratchError as exc:
                raise HarnessError(f"--database-url: {exc}") from exc
            server.env["PUSHGATE_DATABASE_URL"] = scratch
            log(f"scratch PostgreSQL database {pg_name}")
        if args.queue_url:
            _require_loopback_redis(args.queue_url)
            server.env["PUSHGATE_QUEUE_URL"] = args.queue_url
            server.env["PUSHGATE_QUEUE_PREFIX"] = prefix
            log(f"Redis queue engine, key prefix {prefix}")
        log("starting server ...")
        server.start()
        assert server.proc is not None
        user_token = server.create_account()
        st = setup_account(server.url, user_token, 0)
        creds = {"x-instapush-appid": st.app_id, "x-instapush-appsecret": st.app_secret}
        tokens = run_loop(
            register_devices("127.0.0.1", server.port, user_token, args.devices, 8,
                             clock.deadline, "crash")
        )  # fmt: skip
        before, after = tokens[: args.connected], tokens[args.connected :]
        slots = args.posts + 1
        if before:
            g = CrashReceiverGroup(args.ack_interval, slots)
            groups.append(g)
            info = g.connect(server.port, before, clock.need("connecting devices", 5))
            log(f"connected {info['connected']} of {args.devices} devices before the burst")

        first_pid = server.proc.pid
        log(
            f"burst: {args.posts:,} posts, {args.concurrency} connections; SIGKILL after "
            f"{args.kill_after:,} answered 201 ..."
        )
        b = run_loop(
            burst(server.port, creds, args.posts, args.concurrency, args.kill_after,
                  first_pid, args.request_timeout)
        )  # fmt: skip
        ids: list[int] = b.pop("ids")
        sent_ns: array = b.pop("sent_ns")
        kill_wall = b.pop("kill_wall_ns")
        with contextlib.suppress(Exception):
            server.proc.wait(15)
        b["server_exit"] = server.proc.returncode
        result["burst"] = b
        if b["killed_after_s"] is None:
            log("the burst ended before --kill-after posts were answered: no kill")
        else:
            log(
                f"  killed after {b['killed_after_s']} s: {b['accepted_201']:,} answered 201 "
                f"({b['accepted_per_s_before_kill']:,.0f}/s), {b['sent']:,} sent, "
                f"errors {b['errors']}"
            )

        # -- restart on the same data dir --------------------------------------------------
        server.log_path = server.dir / "server-restart.log"
        t_restart = time.perf_counter()
        if b["killed_after_s"] is not None:
            log("restarting the server on the same data directory ...")
            server.start(timeout=min(120.0, clock.need("restart", 10)))
        restart_s = time.perf_counter() - t_restart
        ready_wall = time.time_ns()
        if after:
            g = CrashReceiverGroup(args.ack_interval, slots)
            groups.append(g)
            info = g.connect(server.port, after, clock.need("connecting devices", 5))
            log(f"connected the other {info['connected']} devices after the restart")
        if not groups:
            raise HarnessError("no devices (--devices 0)")

        accepted = bytes(1 if i > 0 else 0 for i in ids)
        n_accepted = accepted.count(1)
        log(f"draining: {n_accepted:,} answered notifications x {args.devices} devices ...")
        c, waited, complete = _wait_all(
            groups, accepted, min(args.drain_timeout, max(1.0, clock.left() - 30))
        )
        if args.settle > 0:
            time.sleep(min(args.settle, max(0.0, clock.left() - 20)))
            c = _count(groups, accepted)
        missing: Counter[int] = Counter()
        for g in groups:
            missing.update(g.missing(accepted))
        # first arrivals after the restart, by wall clock
        arrivals_after = array("q")
        live_before = 0
        for g in groups:
            seqs, lats = g.arrivals()
            for s, lat in zip(seqs, lats, strict=True):
                at = sent_ns[s] + lat if 0 <= s < len(sent_ns) else 0
                if kill_wall is not None and at < kill_wall:
                    live_before += 1
                else:
                    arrivals_after.append(at - ready_wall)
        drain_s = max(arrivals_after) / 1e9 if arrivals_after else 0.0
        lost_ids = sorted(ids[s] for s in missing)
        result["restart"] = {
            "restart_s": round(restart_s, 3),
            "drained": complete,
            "waited_s": round(waited, 3),
            "drain_s": round(drain_s, 3),
            "received_before_kill": live_before,
            "received_after_restart": len(arrivals_after),
            "after_restart_ms": {
                k: (round(v, 1) if isinstance(v, float) else v)
                for k, v in percentiles(arrivals_after).items()
            },
        }
        unexpected = c.get("unexpected", 0)
        result["devices"] = {
            "accepted_posts": n_accepted,
            "devices": args.devices,
            "expected": c["expected"],
            "received": c["received"],
            "lost_deliveries": c["expected"] - c["received"],
            "lost_ids": len(lost_ids),
            "lost_ids_sample": lost_ids[:20],
            "duplicates": c["duplicates"],
            "extra_deliveries": unexpected,
            "reconnects": c["reconnects"],
            "close_reasons": c.get("close_reasons", {}),
            "bad_messages": c["bad_messages"],
        }

        # -- the server's view ---------------------------------------------------------------
        counts, st_wait = _wait_statuses(
            server.url, user_token, min(args.status_timeout, max(1.0, clock.left() - 20))
        )
        answered = [i for i in ids if i > 0]
        view = run_loop(_server_view(server.port, user_token, answered, args.devices))
        view["account_counts"] = counts
        view["waited_for_statuses_s"] = round(st_wait, 3)
        view["answered_without_id_header"] = sum(1 for i in ids if i < 0)
        result["server_view"] = view
        result["targets"] = _targets(result)
    finally:
        for g in groups:
            g.close()
        if server is not None:
            if server.proc is not None and server.proc.poll() is not None:
                result["server_exit"] = server.proc.returncode
            server.stop()
            result["server_log_dir"] = str(server.dir) if args.keep_data else None
        if pg_name is not None:
            drop_scratch(args.database_url, pg_name)
        if args.queue_url:
            with contextlib.suppress(Exception):
                drop_redis_prefix(args.queue_url, prefix)
    return result


def _targets(r: dict[str, Any]) -> list[dict[str, Any]]:
    d = r["devices"]
    v = r["server_view"]
    b = r["burst"]
    killed = b["killed_after_s"] is not None
    notes = [] if killed else ["the server was not killed (burst ended first)"]
    return [
        {
            "target": "nothing answered 201 is lost (every device gets every answered id)",
            "measured": f"lost {d['lost_ids']} of {d['accepted_posts']:,} ids "
            f"({d['lost_deliveries']} of {d['expected']:,} deliveries)",
            "value": d["lost_ids"],
            "pass": killed and d["lost_ids"] == TARGET_LOST and d["lost_deliveries"] == 0,
            "notes": notes,
        },
        {
            "target": "server view: every answered id has one delivery per device",
            "measured": f"{v['ids_with_all_deliveries']:,} of {v['ids_checked']:,} ids "
            f"(short {v['ids_short']}, errors {v['errors'] or 0})",
            "value": v["ids_short"],
            "pass": v["ids_short"] == 0 and not v["errors"],
        },
        {
            "target": "duplicates across the crash (reported, at-least-once allows them)",
            "measured": f"{d['duplicates']} duplicate receipts",
            "value": d["duplicates"],
            "pass": None,
        },
    ]


def _fmt(v: Any) -> str:
    return fmt(v, big=",.1f", small=".3g")


def print_table(r: dict[str, Any]) -> None:
    c = r["config"]
    m = r["machine"]
    print(
        f"\nPushgate crash test  {r['date']}  nproc={m['nproc']}  python {m['python']} "
        f"({m['loop']})  source {r.get('source')}"
    )
    print(
        f"database={c['database']} queue={c['queue']} devices={c['devices']} (connected before "
        f"the burst: {c['connected_before']}) posts={c['posts']:,} kill-after={c['kill_after']:,} "
        f"concurrency={c['concurrency']} ack-interval={c['ack_interval_s']}s\n"
    )
    b, rs, d, v = r["burst"], r["restart"], r["devices"], r["server_view"]
    rows = [
        ("posts sent before the kill", b["sent"]),
        ("answered 2xx (accepted)", b["ok_2xx"]),
        ("answered 201 with an id", b["accepted_201"] - v["answered_without_id_header"]),
        ("accepted posts/s before the kill", b["accepted_per_s_before_kill"]),
        ("killed after (s)", b["killed_after_s"]),
        ("requests cut off by the kill", sum(b["errors"].values())),
        ("server exit status", b.get("server_exit")),
        ("restart until serving (s)", rs["restart_s"]),
        ("drain after restart (s, last first arrival)", rs["drain_s"]),
        ("expected deliveries (ids x devices)", d["expected"]),
        ("received before the kill", rs["received_before_kill"]),
        ("received after the restart", rs["received_after_restart"]),
        ("LOST deliveries", d["lost_deliveries"]),
        ("LOST ids", d["lost_ids"]),
        ("duplicate receipts", d["duplicates"]),
        ("extra: stored, answer cut off (deliveries)", d["extra_deliveries"]),
        ("device reconnects", d["reconnects"]),
        ("server view: ids with all deliveries", v["ids_with_all_deliveries"]),
        ("server view: ids missing deliveries", v["ids_short"]),
    ]
    w = max(len(k) for k, _ in rows) + 2
    for k, val in rows:
        print(f"{k:<{w}}{_fmt(val):>14}")
    print(f"server view statuses (answered ids): {v['statuses']}")
    print(f"account delivery counts: {v['account_counts']} (waited {v['waited_for_statuses_s']} s)")
    p = rs["after_restart_ms"]
    print(
        f"first arrivals after the restart: p50 {_fmt(p.get('p50'))} ms, p99 "
        f"{_fmt(p.get('p99'))} ms, last {_fmt(p.get('max'))} ms after the server answered again"
    )
    if not rs["drained"]:
        print(f"NOT DRAINED: gave up after {rs['waited_s']} s")
    if d["lost_ids_sample"]:
        print(f"lost ids (sample): {d['lost_ids_sample']}")
    if d["close_reasons"]:
        print(f"server closed device connections: {d['close_reasons']}")
    print(f"burst statuses {b['statuses']} errors {b['errors']}")
    print_targets(r["targets"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--devices", type=int, default=10, help="channel devices (10)")
    ap.add_argument(
        "--connected", type=int, default=None,
        help="devices connected during the burst (default: half); the rest connect after",
    )  # fmt: skip
    ap.add_argument("--posts", type=int, default=10_000, help="posts in the burst (10000)")
    ap.add_argument("--kill-after", type=int, default=5_000, help="SIGKILL after N 201s (5000)")
    ap.add_argument("--concurrency", type=int, default=64, help="HTTP connections (64)")
    ap.add_argument("--ack-interval", type=float, default=0.05, help="device ack batching (s)")
    ap.add_argument("--request-timeout", type=float, default=30.0, help="per post (s)")
    ap.add_argument("--drain-timeout", type=float, default=120.0, help="max wait after restart")
    ap.add_argument("--settle", type=float, default=3.0, help="extra wait for late duplicates")
    ap.add_argument(
        "--status-timeout", type=float, default=30.0,
        help="max wait until no delivery is queued or sent",
    )  # fmt: skip
    ap.add_argument("--time-limit", type=float, default=600.0, help="whole run, seconds (600)")
    ap.add_argument(
        "--database-url",
        help="PostgreSQL server (loopback) to create a scratch database on, e.g. "
        "postgresql+asyncpg://postgres@127.0.0.1:5432/test; default: SQLite in the data dir",
    )
    ap.add_argument("--queue-url", help="redis://127.0.0.1:6379/0: the Redis Streams engine")
    add_output_options(ap)
    args = ap.parse_args(argv)
    if args.connected is None:
        args.connected = args.devices // 2
    if not (0 < args.kill_after <= args.posts) or args.devices < 1 or args.concurrency < 1:
        ap.error("need 0 < kill-after <= posts, devices >= 1, concurrency >= 1")
    if not 0 <= args.connected <= args.devices:
        ap.error("--connected must be between 0 and --devices")
    return run_and_report(args, run, print_table)


if __name__ == "__main__":
    sys.exit(main())
