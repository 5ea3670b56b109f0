"""Scale-out benchmark: the same load on 1 ``pushgate serve`` + 1 ``pushgate worker`` and on
2 + 2, on PostgreSQL and Redis (issue 13, target 7).

Per layout (1 and 2 processes of each kind), on its own scratch PostgreSQL database (dropped
afterwards) and its own Redis key prefix (deleted afterwards), every process with the same
``PUSHGATE_DATABASE_URL``, ``PUSHGATE_QUEUE_URL``, ``PUSHGATE_QUEUE_PREFIX`` and
``PUSHGATE_SECRET_KEY``, servers with ``PUSHGATE_RUN_WORKERS=false``:

1. setup  - a fake FCM (``pushgate.testing``, a process of its own); an account with an app, an
            event and --channel-devices channel devices, connected over WebSocket, half to each
            server (all to the one server with one); another account whose app has the fake's
            credentials and --push-devices Android devices (bulk registration). Not measured;
2. load   - the same for both layouts: Instapush ``POST /v1/post`` paced at --rate posts/s for
            --duration s, spread evenly over the servers (ingest.py's load generator), each
            post to every channel device; and --push-notifications ``POST
            /api/v1/notifications`` to every Android device, spread over the servers (their
            deliveries go through Redis Streams to the workers and on to the fake FCM);
3. drain  - until every channel device has every accepted post, the fake has every push and
            the stored statuses show every delivery final (bounded by --drain-timeout);
4. check  - no loss (every device got every accepted post; the fake got every push) and no
            duplicates (no device got a post twice; the fake got no (token, notification)
            twice);
5. cost   - utime + stime (``/proc/<pid>/stat``) of every pushgate process, summed, from
            the start of the load to the end of the drain, divided by the deliveries;
6. latency - post to device (each post carries its send time) p50 / p99, of each server's
            devices (the table shows the slower server's).

Target: CPU per delivery with 2 + 2 processes <= 1.15 x with 1 + 1. The layouts run one
after the other, --repeats times alternating which goes first; medians are compared.

    .venv/bin/python -m benchmarks.scale_out
    .venv/bin/python -m benchmarks.scale_out --rate 100 --duration 5 --repeats 1 --json
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import multiprocessing as mp
import secrets
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import orjson

from benchmarks.delivery import FakeProcess, Tenant, android_token, register_devices
from benchmarks.harness import HarnessError
from benchmarks.harness.http import check, http_request
from benchmarks.harness.machine import cpu_seconds_pid, machine_busy, machine_info, source_version
from benchmarks.harness.report import add_output_options, run_and_report
from benchmarks.harness.scratch_db import ScratchError, create_scratch, drop_scratch
from benchmarks.harness.server import LOOP
from benchmarks.ingest import (
    LoadSpec,
    ReceiverProcess,
    run_load,
    setup_account,
    wait_delivered,
)
from pushgate.testing.server import (
    ServerProcess,
    ServerStartError,
    WorkerProcess,
    create_account,
)
from pushgate.testing.tls import local_ca

TARGET_RATIO = 1.15
FINAL = ("delivered", "opened", "failed", "expired", "capped", "sent")


def _fcm_entry(pipe: Any) -> None:
    """A fake FCM in its own process. Commands: info, count, wait, pairs, stop."""
    from pushgate.testing.fake_fcm import FakeFcm

    fake = FakeFcm()
    fake.start()
    try:
        while True:
            cmd, args = pipe.recv()
            if cmd == "stop":
                break
            try:
                if cmd == "info":
                    pipe.send(("ok", {"url": fake.url, "credentials": fake.credentials()}))
                elif cmd == "count":
                    pipe.send(("ok", (fake.received_count, 0)))
                elif cmd == "wait":
                    target, _start, timeout = args
                    deadline = time.monotonic() + timeout
                    while fake.received_count < target and time.monotonic() < deadline:
                        time.sleep(0.005)
                    pipe.send(("ok", {"count": fake.received_count}))
                elif cmd == "pairs":  # (token, message) seen more than once, since index
                    seen = Counter(
                        (m.token, orjson.dumps(m.message, option=orjson.OPT_SORT_KEYS))
                        for m in fake.messages[args[0] :]
                    )
                    pipe.send(("ok", {"distinct": len(seen),
                                      "repeated": sum(c - 1 for c in seen.values())}))  # fmt: skip
                else:
                    pipe.send(("error", f"unknown command {cmd!r}"))
            except Exception as exc:  # report anything to the parent
                pipe.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        fake.stop()
        pipe.close()


class FcmProcess(FakeProcess):
    """delivery.py's fake process, with a fake FCM that also reports repeated messages."""

    def __init__(self) -> None:
        ctx = mp.get_context("fork")
        self.kind = "fcm"
        self.pipe, child = ctx.Pipe()
        self.proc = ctx.Process(target=_fcm_entry, args=(child,), daemon=True)
        self.proc.start()
        child.close()
        self.info: dict[str, Any] = self.call("info", timeout=60)


def _status_counts(base: str, bearer: dict[str, str], app_id: str) -> dict[str, int]:
    path = f"/api/v1/apps/{app_id}/delivery-counts"
    data = check(*http_request("GET", base, path, bearer, None), path, ok=(200,))
    return {k: int(v) for k, v in data["counts"].items()}


def _redis_cleanup(url: str, prefix: str) -> int:
    import redis

    r = redis.Redis.from_url(url)
    try:
        keys = list(r.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            r.delete(*keys)
        return len(keys)
    finally:
        r.close()


class Layout:
    """N servers and N workers sharing one scratch database and one Redis prefix."""

    def __init__(self, n: int, env: dict[str, str], root: Path) -> None:
        self.n = n
        self.env = env
        self.root = root
        self.servers: list[ServerProcess] = []
        self.workers: list[WorkerProcess] = []

    def start(self) -> None:
        for i in range(self.n):
            for attempt in range(3):  # a free port may be taken before the server binds it
                s = ServerProcess(
                    self.root / f"serve{i}", {**self.env, "PUSHGATE_RUN_WORKERS": "false"}
                )
                try:
                    self.servers.append(s.start())
                    break
                except ServerStartError as exc:
                    if attempt == 2 or "port is in use" not in str(exc):
                        raise HarnessError(f"pushgate serve did not start: {exc}") from exc
        for i in range(self.n):
            w = WorkerProcess(self.root / f"worker{i}", self.env, name=f"worker{i}")
            self.workers.append(w.start())

    def pids(self) -> list[int]:
        out = [s.pid for s in self.servers] + [w._proc.pid for w in self.workers if w._proc]
        return [p for p in out if p is not None]

    def cpu(self) -> list[float]:
        return [cpu_seconds_pid(p) or 0.0 for p in self.pids()]

    def stop(self) -> None:
        for w in self.workers:
            w.stop()
        for s in self.servers:
            s.stop()


def run_layout(
    n: int, args: argparse.Namespace, fake: FakeProcess, ca_file: Path, log: Any
) -> dict[str, Any]:
    prefix = f"pgbench{uuid.uuid4().hex[:10]}"
    try:
        db_name, db_url = create_scratch(args.postgres_url, "scale")
    except ScratchError as exc:
        raise HarnessError(str(exc)) from exc
    env = {
        "PUSHGATE_DATABASE_URL": db_url,
        "PUSHGATE_QUEUE_URL": args.redis_url,
        "PUSHGATE_QUEUE_PREFIX": prefix,
        "PUSHGATE_SECRET_KEY": secrets.token_urlsafe(36),
        "PUSHGATE_PROVIDER_CA_FILE": str(ca_file),
        "PUSHGATE_EGRESS_ALLOW": "127.0.0.0/8",
        "PUSHGATE_FCM_TOKEN_HOSTS": "127.0.0.1",
        "PUSHGATE_FCM_URL": fake.info["url"],
    }
    out: dict[str, Any] = {"processes": {"serve": n, "worker": n}}
    rxs: list[ReceiverProcess] = []
    with tempfile.TemporaryDirectory(prefix=f"pushgate-scale{n}-") as tmp:
        layout = Layout(n, env, Path(tmp))
        try:
            log(f"[{n}+{n}] starting {n} server(s) and {n} worker(s) ...")
            layout.start()
            first = layout.servers[0]
            # channel tenant: app, event, devices
            ch_token = str(create_account(first.data_dir, "scale-channel", env)["user_token"])
            st = setup_account(first.url, ch_token, args.channel_devices)
            ch_bearer = {"Authorization": f"Bearer {ch_token}"}
            # push tenant: app with the fake's credentials, Android devices
            push = Tenant(first, "scale-push", env)
            push.put_credentials("android", fake.info["credentials"])
            tokens = [android_token() for _ in range(args.push_devices)]
            register_devices(
                first.url, push.user_token, push.app_id, "android", tokens,
                time.monotonic() + 300,
            )  # fmt: skip
            # devices: split over the servers
            for i, s in enumerate(layout.servers):
                part = st.device_tokens[i::n]
                rx = ReceiverProcess(0.05, True)
                rxs.append(rx)
                rx.call("connect", "127.0.0.1", s.port, part, 60.0, timeout=90)
            log(f"[{n}+{n}] {args.channel_devices} channel devices connected, "
                f"{args.push_devices} push devices registered")  # fmt: skip
            time.sleep(1.0)
            # what the processes spend with nothing to do (polling, pings), over 2 s
            i0, iw0 = layout.cpu(), time.perf_counter()
            time.sleep(2.0)
            i1, iw1 = layout.cpu(), time.perf_counter()
            out["idle_cpu_pct"] = round(100 * (sum(i1) - sum(i0)) / (iw1 - iw0), 1)
            creds = {"x-instapush-appid": st.app_id, "x-instapush-appsecret": st.app_secret}
            fake0 = fake.call("count")[0]

            cpu0, m0, w0 = layout.cpu(), machine_busy(), time.perf_counter()
            # push notifications, spread over the servers, sent while the posts go on
            push_ids: list[int] = []
            push_errors: list[str] = []

            def push_sender() -> None:
                gap = args.duration / max(1, args.push_notifications)
                for k in range(args.push_notifications):
                    s = layout.servers[k % n]
                    body = {"app_id": push.app_id, "title": "Sale", "message": f"push {k}",
                            "data": {"seq": k}}  # fmt: skip
                    try:
                        status, data = http_request(
                            "POST", s.url, "/api/v1/notifications", push.bearer,
                            orjson.dumps(body),
                        )  # fmt: skip
                        push_ids.append(int(check(status, data, "notifications")["id"]))
                    except (HarnessError, OSError) as exc:
                        push_errors.append(str(exc)[:200])
                    time.sleep(gap)

            pusher = threading.Thread(target=push_sender, daemon=True)
            pusher.start()
            per = args.rate / n
            max_posts = max(1, int(per * args.duration) + 1)
            results: list[Any] = [None] * n

            def post_load(i: int) -> None:
                spec = LoadSpec(
                    host="127.0.0.1", port=layout.servers[i].port, path="/v1/post",
                    headers=creds, concurrency=args.concurrency, duration=args.duration,
                    max_posts=max_posts, rate=per, seq_start=i * max_posts,
                )  # fmt: skip
                results[i] = run_load(spec)

            loaders = [threading.Thread(target=post_load, args=(i,)) for i in range(n)]
            for t in loaders:
                t.start()
            for t in loaders:
                t.join()
            pusher.join()
            if any(r is None for r in results):
                raise HarnessError("a load generator gave no result")
            # every seq of every generator, in one map: seq = i * max_posts + j
            accepted = bytearray(n * max_posts)
            for i, r in enumerate(results):
                m = r.accepted_map
                accepted[i * max_posts : i * max_posts + len(m)] = m
            acc = bytes(accepted)
            posts = acc.count(1)
            expected_push = len(push_ids) * args.push_devices

            # drain: devices, fake, stored statuses
            t_drain = time.perf_counter()
            counts = [wait_delivered(rx, acc, args.drain_timeout)[0] for rx in rxs]
            left = max(1.0, args.drain_timeout - (time.perf_counter() - t_drain))
            fake_wait = fake.call("wait", fake0 + expected_push, fake0, left, timeout=left + 30)
            expected_channel = posts * args.channel_devices
            deadline = time.monotonic() + max(1.0, args.drain_timeout)
            while True:
                ch = _status_counts(first.url, ch_bearer, st.app_id)
                pu = _status_counts(first.url, push.bearer, push.app_id)
                ch_final = sum(v for k, v in ch.items() if k in FINAL)
                pu_final = sum(v for k, v in pu.items() if k in FINAL)
                if (
                    ch_final >= expected_channel and pu_final >= expected_push
                ) or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            cpu1, m1, w1 = layout.cpu(), machine_busy(), time.perf_counter()
            # post -> device (the post carries its send time), per server's devices
            p2d = [rx.call("latency", 0, n * max_posts) for rx in rxs]

            per_proc = [b - a for a, b in zip(cpu0, cpu1, strict=True)]
            cpu_total = sum(per_proc)
            received = sum(c["received"] for c in counts)
            dup_channel = sum(c["duplicates"] for c in counts)
            fake_total = fake_wait["count"] - fake0
            pairs = fake.call("pairs", fake0, timeout=60)
            deliveries = received + fake_total
            out.update(
                posts_accepted=posts,
                post_errors=sum(sum(r.errors.values()) for r in results),
                push_notifications=len(push_ids),
                push_errors=push_errors[:5],
                expected={"channel": expected_channel, "push": expected_push},
                received={"channel": received, "push": fake_total},
                lost={"channel": expected_channel - received,
                      "push": expected_push - pairs["distinct"]},
                duplicates={"channel": dup_channel, "push": pairs["repeated"]},
                stored={"channel": ch, "push": pu},
                post_to_device_ms=[
                    {k: round(v, 2) if isinstance(v, float) else v for k, v in lat.items()}
                    for lat in p2d
                ],
                wall_s=round(w1 - w0, 3),
                drain_s=round(w1 - t_drain, 3),
                cpu_s={"total": round(cpu_total, 3),
                       "servers": [round(x, 3) for x in per_proc[:n]],
                       "workers": [round(x, 3) for x in per_proc[n:]]},
                machine_busy_pct=round(100 * (m1 - m0) / (w1 - w0), 1)
                if m0 is not None and m1 is not None else None,
                deliveries=deliveries,
                cpu_us_per_delivery=round(cpu_total / deliveries * 1e6, 2)
                if deliveries else None,
                pairs=pairs,
            )  # fmt: skip
            log(
                f"[{n}+{n}] {posts} posts x {args.channel_devices} devices + {len(push_ids)} "
                f"pushes x {args.push_devices}: {deliveries:,} deliveries, CPU "
                f"{cpu_total:.2f} s = {out['cpu_us_per_delivery']} us/delivery; lost "
                f"{out['lost']}, duplicates {out['duplicates']}"
            )
        finally:
            for rx in rxs:
                rx.close()
            layout.stop()
            with contextlib.suppress(Exception):
                out["redis_keys_deleted"] = _redis_cleanup(args.redis_url, prefix)
            drop_scratch(args.postgres_url, db_name)
    return out


def run(args: argparse.Namespace, log: Any) -> dict[str, Any]:
    result: dict[str, Any] = {
        "benchmark": "scale_out",
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "source": source_version(),
        "machine": machine_info(LOOP),
        "config": {
            k: getattr(args, k)
            for k in (
                "rate",
                "duration",
                "concurrency",
                "channel_devices",
                "push_devices",
                "push_notifications",
                "repeats",
                "redis_url",
            )  # fmt: skip
        },
        "runs": {"1": [], "2": []},
    }
    ca = local_ca()
    fake = FcmProcess()
    try:
        for rep in range(args.repeats):
            for n in (1, 2) if rep % 2 == 0 else (2, 1):
                result["runs"][str(n)].append(run_layout(n, args, fake, ca.ca_file, log))
    finally:
        fake.close()
        shutil.rmtree(ca.ca_file.parent, ignore_errors=True)
    one, two = result["runs"]["1"], result["runs"]["2"]

    def med(runs: list[dict[str, Any]]) -> float | None:
        v = [r["cpu_us_per_delivery"] for r in runs if r.get("cpu_us_per_delivery")]
        return statistics.median(v) if v else None

    m1, m2 = med(one), med(two)
    ratio = m2 / m1 if m1 and m2 else None
    lost = sum(v for r in one + two for v in r["lost"].values())
    dups = sum(v for r in one + two for v in r["duplicates"].values())
    result["summary"] = {
        "cpu_us_per_delivery_1": m1,
        "cpu_us_per_delivery_2": m2,
        "ratio": round(ratio, 3) if ratio else None,
        "lost": lost,
        "duplicates": dups,
    }
    result["targets"] = [
        {
            "target": "2 serve + 2 worker: no loss, no duplicates",
            "measured": f"lost {lost}, duplicates {dups}",
            "pass": lost == 0 and dups == 0,
        },
        {
            "target": f"CPU per delivery, 2+2 / 1+1 <= {TARGET_RATIO}",
            "measured": f"{m1} us vs {m2} us = {ratio:.3f} x" if ratio else "not measured",
            "pass": ratio is not None and ratio <= TARGET_RATIO,
        },
    ]
    return result


def _worst(run: dict[str, Any], key: str) -> str:
    """The slower server's percentile ``key`` of post -> device latency, in ms."""
    values = [lat[key] for lat in run.get("post_to_device_ms", []) if lat.get(key) is not None]
    return f"{max(values):.1f}" if values else "-"


def print_table(r: dict[str, Any]) -> None:
    c = r["config"]
    print(
        f"\nPushgate scale-out benchmark  {r['date']}  nproc={r['machine']['nproc']}  "
        f"source {r.get('source')}"
    )
    print(
        f"load: {c['rate']} Instapush posts/s for {c['duration']} s to {c['channel_devices']} "
        f"channel devices + {c['push_notifications']} notifications to {c['push_devices']} "
        f"Android devices (fake FCM); PostgreSQL + Redis; {c['repeats']} repeat(s)\n"
    )
    hdr = (
        f"{'layout':<8}{'deliveries':>11}{'CPU s':>8}{'servers':>16}{'workers':>16}"
        f"{'us/deliv':>10}{'drain':>8}{'machine':>9}{'lost':>6}{'dups':>6}{'p2d p50/p99 ms':>17}"
    )
    print(hdr)
    print("-" * len(hdr))
    for n in ("1", "2"):
        for x in r["runs"][n]:
            cpu = x["cpu_s"]
            print(
                f"{n + '+' + n:<8}{x['deliveries']:>11,}{cpu['total']:>8.2f}"
                f"{'/'.join(f'{v:.2f}' for v in cpu['servers']):>16}"
                f"{'/'.join(f'{v:.2f}' for v in cpu['workers']):>16}"
                f"{x['cpu_us_per_delivery']:>10}{x['drain_s']:>7.1f}s"
                f"{(x['machine_busy_pct'] or 0):>8.0f}%"
                f"{sum(x['lost'].values()):>6}{sum(x['duplicates'].values()):>6}"
                f"{_worst(x, 'p50'):>9}/{_worst(x, 'p99')}"
            )
    s = r["summary"]
    idle = {n: [x.get("idle_cpu_pct") for x in r["runs"][n]] for n in ("1", "2")}
    print(f"\nidle CPU of all pushgate processes (% of a core): 1+1 {idle['1']}, 2+2 {idle['2']}")
    print(
        f"median CPU per delivery: 1+1 {s['cpu_us_per_delivery_1']} us, 2+2 "
        f"{s['cpu_us_per_delivery_2']} us, ratio {s['ratio']}"
    )
    print("(CPU: utime+stime of every pushgate process from the start of the load to the end of")
    print(" the drain; machine: whole-machine busy % of one core over that time; p2d: post to")
    print(" device latency of the slower server's devices)")
    print("\ntargets:")
    for t in r["targets"]:
        print(f"  [{'PASS' if t['pass'] else 'FAIL'}] {t['target']}: {t['measured']}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--rate", type=float, default=200.0, help="Instapush posts/s in all (200)")
    ap.add_argument("--duration", type=float, default=10.0, help="seconds of load (10)")
    ap.add_argument("--concurrency", type=int, default=16, help="HTTP connections per server")
    ap.add_argument("--channel-devices", type=int, default=20, help="channel devices (20)")
    ap.add_argument("--push-devices", type=int, default=1000, help="Android devices (1000)")
    ap.add_argument("--push-notifications", type=int, default=10, help="notifications to them (10)")
    ap.add_argument("--repeats", type=int, default=1, help="runs of each layout (1)")
    ap.add_argument("--drain-timeout", type=float, default=120.0, help="max drain wait (s)")
    ap.add_argument(
        "--postgres-url", default="postgresql+asyncpg://postgres@127.0.0.1:5432/test",
        help="loopback PostgreSQL server for the scratch databases",
    )  # fmt: skip
    ap.add_argument("--redis-url", default="redis://127.0.0.1:6379/0", help="Redis queue")
    add_output_options(ap)
    args = ap.parse_args(argv)
    return run_and_report(args, run, print_table)


if __name__ == "__main__":
    sys.exit(main())
