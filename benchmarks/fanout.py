"""Fan-out benchmark: ONE notification to N connected channel devices, against the raw ceiling.

One run, all on loopback:

1. setup     - start ``pushgate serve`` on a temp dir (SQLite), an account, an app, an event and N
               channel devices (``POST /api/v1/devices``, many at once; not measured);
2. baseline  - a minimal asyncio WebSocket server in this benchmark (no framework, no storage):
               after the handshake it holds the connection, and when told it writes ONE
               pre-built text frame (a notification of Pushgate's size and shape) to all N
               connections. The same receivers connect to it; per round, the time from the
               command to the last device receiving the frame: the raw frame-write ceiling;
3. pushgate  - the same receivers connect all N devices to Pushgate (``batch=1``, as
               ``pushgate listen`` does); server RSS (VmRSS) before and after, idle -> memory per
               idle connection; then per round one Instapush ``POST /v1/post``: the time from
               sending the post to the last device receiving it -> deliveries/s = N / that time.
               Devices acknowledge; each round waits until storage shows every delivery
               ``delivered`` (bounded) before the next one;
4. check     - every device got every accepted round's notification exactly once (missing,
               duplicates), and every delivery of every round is ``delivered``.

Targets (printed PASS/FAIL; exit code 0 whatever they say, 2 only when the harness fails):
memory per idle connection <= 8 KiB; deliveries/s >= 0.7 x the raw ceiling measured in the same
run; the server's CPU with every device connected and idle (pings included) <= 2 % of one core
over ``--idle-wait`` seconds (60); no device misses or repeats a notification; every delivery
reaches ``delivered`` (issue 13, targets 1-3).

File descriptors: one process can hold at most RLIMIT_NOFILE descriptors. The benchmark raises
the soft limit to the hard one (inherited by the server and the receivers) and splits the
devices over enough receiver processes; when the server cannot hold N sockets next to what it
already uses (database files, listening socket, ...), N is capped and the cap is reported.

    .venv/bin/python -m benchmarks.fanout                  # 20,000 devices, 5 rounds
    .venv/bin/python -m benchmarks.fanout --devices 2000 --rounds 3 --json
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import http.client
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from array import array
from pathlib import Path
from typing import Any

import orjson

from benchmarks.harness import HarnessError
from benchmarks.harness.child import Child, ask_all
from benchmarks.harness.http import HttpPool, check, header, http_request
from benchmarks.harness.machine import (
    cpu_seconds_pid,
    device_room,
    fd_count,
    machine_busy,
    machine_info,
    nofile_of,
    raise_nofile,
    rss_kib,
    source_version,
)
from benchmarks.harness.report import (
    add_output_options,
    fmt,
    print_targets,
    run_and_report,
    utc_now,
)
from benchmarks.harness.server import LOOP, Clock, OwnServer, run_loop
from benchmarks.harness.stats import median, percentiles, sum_counts
from benchmarks.ingest import EVENT, ReceiverProcess, _Receivers, setup_account
from pushgate.channel.messages import notification_message

TARGET_KIB_PER_CONNECTION = 8.0
TARGET_RATIO = 0.7
TARGET_IDLE_CPU_PCT = 2.0
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
# Descriptors a receiver process needs besides its sockets (pipes, epoll, stdio, ...).
RECEIVER_FD_OVERHEAD = 64


# --------------------------------------------------------------------------------------------
# Registering channel devices (also used by crash.py)
# --------------------------------------------------------------------------------------------


async def register_devices(
    host: str, port: int, user_token: str, n: int, concurrency: int, deadline: float, prefix: str
) -> list[str]:
    """Register ``n`` channel devices, ``concurrency`` requests at a time; their tokens."""
    pool = HttpPool(host, port, concurrency)
    auth = {"Authorization": f"Bearer {user_token}"}
    tokens: list[str] = [""] * n
    todo = iter(range(n))

    async def worker() -> None:
        for i in todo:
            body = orjson.dumps({"platform": "channel", "name": f"{prefix}-{i}"})
            left = deadline - time.monotonic()
            if left <= 0:
                raise HarnessError(f"time limit reached while registering devices ({i} of {n})")
            status, _, raw = await pool.request("POST", "/api/v1/devices", auth, body, left)
            while status == 503 and time.monotonic() < deadline:  # busy: retry, as clients do
                await asyncio.sleep(0.5)
                left = deadline - time.monotonic()
                status, _, raw = await pool.request("POST", "/api/v1/devices", auth, body, left)
            if status != 201:
                raise HarnessError(f"register device: HTTP {status}: {raw[:300]!r}")
            tokens[i] = str(orjson.loads(raw)["device_token"])

    try:
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    finally:
        pool.close()
    return tokens


# --------------------------------------------------------------------------------------------
# The raw baseline: a minimal asyncio WebSocket server in its own process
# --------------------------------------------------------------------------------------------


def server_frame(payload: bytes) -> bytes:
    """An unmasked text frame, as a server sends it."""
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n < 65536:
        return bytes((0x81, 126)) + n.to_bytes(2, "big") + payload
    return bytes((0x81, 127)) + n.to_bytes(8, "big") + payload


def round_message(r: int, t_ns: int, notification_id: int) -> bytes:
    """A notification of the shape and size Pushgate sends for the bench event."""
    now = t_ns // 1_000_000
    return notification_message(
        notification_id=notification_id,
        app_key="b" * 32,
        event=EVENT,
        title=EVENT,
        message=f"{EVENT} {r} at {t_ns}",
        data_json=orjson.dumps({"seq": str(r), "t": str(t_ns)}).decode(),
        created_ms=now,
        expires_ms=now + 86_400_000,
    )


class _RawWs(asyncio.Protocol):
    def __init__(self, conns: set[asyncio.Transport]) -> None:
        self.conns = conns
        self.transport: asyncio.Transport | None = None
        self.buf: bytearray | None = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.buf is None:  # upgraded: acks and pongs are read and dropped
            return
        self.buf += data
        i = self.buf.find(b"\r\n\r\n")
        if i < 0:
            return
        key = header(bytes(self.buf[:i]).lower(), b"sec-websocket-key")
        self.buf = None
        assert self.transport is not None
        if key is None:
            self.transport.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            self.transport.close()
            return
        accept = base64.b64encode(hashlib.sha1(key.encode() + WS_GUID).digest())
        ready = server_frame(b'{"type":"ready","device_id":0,"backlog":0}')
        self.transport.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n" + ready
        )
        self.conns.add(self.transport)

    def connection_lost(self, exc: BaseException | None) -> None:
        if self.transport is not None:
            self.conns.discard(self.transport)


async def _raw_server_main(pipe: Any) -> None:
    loop = asyncio.get_running_loop()
    conns: set[asyncio.Transport] = set()
    server = await loop.create_server(lambda: _RawWs(conns), "127.0.0.1", 0, backlog=4096)
    port = server.sockets[0].getsockname()[1]
    pipe.send(("ok", port))
    done = loop.create_future()

    def on_cmd() -> None:
        os.set_blocking(pipe.fileno(), True)
        try:
            cmd, args = pipe.recv()
        except (EOFError, OSError):
            if not done.done():
                done.set_result(None)
            return
        if cmd == "go":  # (round, t_ns): one frame, written to every connection
            r, t_ns = args
            t0 = time.perf_counter()
            frame = server_frame(round_message(r, t_ns, r + 1))
            for transport in conns:
                transport.write(frame)
            pipe.send(("ok", {"written": len(conns), "write_s": time.perf_counter() - t0}))
        elif cmd == "count":
            pipe.send(("ok", len(conns)))
        elif cmd == "close":
            pipe.send(("ok", None))
            if not done.done():
                done.set_result(None)
        else:
            pipe.send(("error", f"unknown command {cmd!r}"))

    loop.add_reader(pipe.fileno(), on_cmd)
    try:
        await done
    finally:
        loop.remove_reader(pipe.fileno())
        server.close()
        for transport in list(conns):
            transport.abort()


class RawWsServer(Child):
    """The baseline server process."""

    def __init__(self) -> None:
        super().__init__("raw WebSocket server", _raw_server_entry)
        self.port: int = self.result(30, "start")


def _raw_server_entry(pipe: Any) -> None:
    run_loop(_raw_server_main(pipe))


# --------------------------------------------------------------------------------------------
# Receivers: ingest.py's raw WebSocket devices, with two more questions
# --------------------------------------------------------------------------------------------


class _FanoutReceivers(_Receivers):
    """ingest's receivers; per-device counters sized for the rounds up front (ingest grows them
    64 KiB at a time, which would cost every device an allocation in the first round)."""

    def __init__(self, pipe: Any, ack_interval: float, batch: bool, slots: int) -> None:
        super().__init__(pipe, ack_interval, batch)
        self.slots = slots

    async def connect(self, host: str, port: int, tokens: list[str], timeout: float) -> dict:
        out = await super().connect(host, port, tokens, timeout)
        for d in self.devices:
            if len(d.counts) < self.slots:
                d.counts.extend(bytes(self.slots - len(d.counts)))
        return out

    async def _do(self, cmd: str, args: tuple) -> None:
        if cmd == "got":  # how many deliveries of round ``seq`` arrived (first copies)
            self.pipe.send(("ok", self.rec.lat_seq.count(args[0])))
        elif cmd == "lat":  # the raw latencies (ns) of round ``seq``
            (seq,) = args
            lat = array(
                "q", (v for s, v in zip(self.rec.lat_seq, self.rec.lat_ns, strict=True) if s == seq)
            )
            self.pipe.send(("ok", lat.tobytes()))
        else:
            await super()._do(cmd, args)


def _fanout_receivers_entry(pipe: Any, ack_interval: float, batch: bool, slots: int) -> None:
    run_loop(_FanoutReceivers(pipe, ack_interval, batch, slots).serve())


class FanoutReceiverProcess(ReceiverProcess):
    """ingest's receiver process, running ``entry`` (default: ``_FanoutReceivers``)."""

    def __init__(
        self, ack_interval: float, slots: int, batch: bool = True, entry: Any = None
    ) -> None:
        Child.__init__(
            self,
            "device receivers",
            entry or _fanout_receivers_entry,
            ack_interval,
            batch,
            slots,
        )


class ReceiverGroup:
    """Several receiver processes, asked the same question at once."""

    def __init__(self, procs: int, ack_interval: float, slots: int, entry: Any = None) -> None:
        self.rxs = [FanoutReceiverProcess(ack_interval, slots, entry=entry) for _ in range(procs)]

    def ask(self, cmd: str, per_rx_args: list[tuple], timeout: float) -> list[Any]:
        return ask_all(self.rxs, cmd, per_rx_args, timeout)

    def all(self, cmd: str, *args: Any, timeout: float = 60.0) -> list[Any]:
        return self.ask(cmd, [args] * len(self.rxs), timeout)

    def connect(self, port: int, tokens: list[str], timeout: float) -> dict[str, Any]:
        k = len(self.rxs)
        parts = [tokens[i::k] for i in range(k)]
        t0 = time.perf_counter()
        outs = self.ask(
            "connect", [("127.0.0.1", port, p, timeout) for p in parts], timeout=timeout + 30
        )
        return {
            "connected": sum(o["connected"] for o in outs),
            "backlog": sum(o["backlog"] for o in outs),
            "seconds": round(time.perf_counter() - t0, 2),
        }

    def got(self, seq: int) -> int:
        return sum(self.all("got", seq, timeout=30))

    def latencies(self, seq: int) -> array:
        lat = array("q")
        for raw in self.all("lat", seq, timeout=60):
            lat.frombytes(raw)
        return lat

    def count(self, accepted: bytes) -> dict[str, Any]:
        return sum_counts(self.all("count", accepted, timeout=120))

    def cpu(self) -> float:
        return float(sum(self.all("cpu", timeout=30)))

    def close(self) -> None:
        for rx in self.rxs:
            rx.close()


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------


def _wait_round(
    group: ReceiverGroup, seq: int, n: int, timeout: float, poll: float = 0.02
) -> tuple[int, float]:
    """Until every device has round ``seq`` (or timeout); (devices that have it, waited s)."""
    t0 = time.perf_counter()
    while True:
        got = group.got(seq)
        waited = time.perf_counter() - t0
        if got >= n or waited >= timeout:
            return got, waited
        time.sleep(poll)


def _cpu_snapshot(pids: list[int | None], group: ReceiverGroup) -> tuple:
    return (
        [(cpu_seconds_pid(p) if p else None) for p in pids],
        group.cpu(),
        machine_busy(),
        time.perf_counter(),
    )


def _cpu_delta(a: tuple, b: tuple) -> dict[str, float | None]:
    wall = b[3] - a[3]

    def pct(v: float | None) -> float | None:
        return None if v is None or wall <= 0 else round(100 * v / wall, 1)

    servers = [
        (y - x) if x is not None and y is not None else None
        for x, y in zip(a[0], b[0], strict=True)
    ]
    server = servers[0]
    rx = b[1] - a[1]
    machine = (b[2] - a[2]) if a[2] is not None and b[2] is not None else None
    others = None
    if machine is not None and server is not None:
        others = machine - server - rx
    return {
        "server_cpu_pct": pct(server),
        "receivers_cpu_pct": pct(rx),
        "machine_busy_pct": pct(machine),
        "other_processes_cpu_pct": pct(others),
    }


def _round_summary(lat: array, n: int, t_to_last_s: float | None) -> dict[str, Any]:
    p = percentiles(lat)
    last = p["max"]
    rate = (len(lat) / (last / 1000)) if last else None
    return {
        "received": len(lat),
        "devices": n,
        "first_ms": round(min(lat) / 1e6, 3) if lat else None,
        "p50_ms": round(p["p50"], 3) if p["p50"] is not None else None,
        "p99_ms": round(p["p99"], 3) if p["p99"] is not None else None,
        "last_ms": round(last, 3) if last is not None else None,
        "deliveries_per_s": round(rate, 1) if rate else None,
        "waited_s": round(t_to_last_s, 3) if t_to_last_s is not None else None,
    }


def _memory(before: int | None, after: int | None, n: int) -> dict[str, Any]:
    per = ((after - before) / n) if before is not None and after is not None and n else None
    return {
        "rss_before_kib": before,
        "rss_after_kib": after,
        "kib_per_connection": round(per, 2) if per is not None else None,
    }


def run_baseline(
    args: argparse.Namespace, n: int, procs: int, clock: Clock, log: Any
) -> dict[str, Any]:
    raw = RawWsServer()
    group: ReceiverGroup | None = None
    out: dict[str, Any] = {"rounds": []}
    try:
        group = ReceiverGroup(procs, args.ack_interval, args.rounds + 1)
        rss0 = rss_kib(raw.pid)
        log(f"baseline: connecting {n:,} devices to the raw WebSocket server ...")
        tokens = [f"dvt_raw{i}" for i in range(n)]
        out["connect"] = group.connect(raw.port, tokens, clock.need("baseline connect", 10))
        held = raw.call("count")
        if held != n:
            raise HarnessError(f"raw server holds {held} connections, expected {n}")
        time.sleep(min(args.idle_wait, 5.0, max(0.0, clock.left() - 5)))
        out["memory"] = _memory(rss0, rss_kib(raw.pid), n)
        for r in range(args.rounds):
            left = clock.left()
            if left < 5:
                out["stopped_early"] = f"time limit: {r} of {args.rounds} rounds"
                break
            c0 = _cpu_snapshot([raw.pid], group)
            t_ns = time.time_ns()
            info = raw.call("go", r, t_ns)
            got, waited = _wait_round(group, r, n, min(args.round_timeout, left - 2))
            c1 = _cpu_snapshot([raw.pid], group)
            s = _round_summary(group.latencies(r), n, waited)
            s["server_write_ms"] = round(info["write_s"] * 1000, 3)
            s["cpu"] = _cpu_delta(c0, c1)
            out["rounds"].append(s)
            log(
                f"  raw round {r + 1}: {got:,}/{n:,} devices, last after {s['last_ms']} ms "
                f"({fmt(s['deliveries_per_s'])} deliveries/s; server write loop "
                f"{s['server_write_ms']} ms)"
            )
            time.sleep(args.pause)
        accepted = bytes([1] * len(out["rounds"]))
        out["check"] = group.count(accepted) if accepted else {}
    finally:
        if group is not None:
            group.close()
        raw.close()
    return out


def _notification_counts(base: str, user_token: str, ids: set[int]) -> dict[int, dict[str, int]]:
    auth = {"Authorization": f"Bearer {user_token}"}
    status, data = http_request(
        "GET", base, f"/api/v1/notifications?limit={max(1, len(ids) + 5)}", auth, None
    )
    check(status, data, "list notifications", ok=(200,))
    return {int(n["id"]): n["deliveries"] for n in data["notifications"] if int(n["id"]) in ids}


def _wait_delivered(
    base: str, user_token: str, nid: int, n: int, timeout: float
) -> tuple[dict[str, int], float]:
    t0 = time.perf_counter()
    while True:
        counts = _notification_counts(base, user_token, {nid}).get(nid, {})
        waited = time.perf_counter() - t0
        if counts.get("delivered", 0) >= n or waited >= timeout:
            return counts, waited
        time.sleep(0.25)


def run_pushgate(
    args: argparse.Namespace,
    server: OwnServer,
    user_token: str,
    creds: dict[str, str],
    tokens: list[str],
    procs: int,
    clock: Clock,
    setup_limit: float,
    log: Any,
) -> dict[str, Any]:
    n = len(tokens)
    assert server.proc is not None
    pid = server.proc.pid
    base = server.url
    out: dict[str, Any] = {"rounds": []}
    group = ReceiverGroup(procs, args.ack_interval, args.rounds + 1)
    try:
        time.sleep(1.0)  # let registration's status writes settle
        rss0 = rss_kib(pid)
        out["server_fds_before"] = fd_count(pid)
        log(f"pushgate: connecting {n:,} devices ...")
        out["connect"] = group.connect(server.port, tokens, setup_limit)
        out["connect"]["per_s"] = round(n / max(out["connect"]["seconds"], 1e-9), 1)
        clock.deadline += out["connect"]["seconds"]  # setup, bounded by --setup-limit instead
        log(
            f"  connected {out['connect']['connected']:,} in {out['connect']['seconds']} s; "
            f"idle {args.idle_wait} s ..."
        )
        rss_connected = rss_kib(pid)
        cpu0, w0 = cpu_seconds_pid(pid), time.perf_counter()
        time.sleep(min(args.idle_wait, max(0.0, clock.left() - 5)))
        cpu1, w1 = cpu_seconds_pid(pid), time.perf_counter()
        out["memory"] = _memory(rss0, rss_kib(pid), n)
        # an idle server with N connections is not idle: keep-alive pings, status writes
        out["idle_cpu_pct"] = (
            round(100 * (cpu1 - cpu0) / (w1 - w0), 1)
            if cpu0 is not None and cpu1 is not None and w1 > w0
            else None
        )
        out["memory"]["rss_right_after_connect_kib"] = rss_connected
        out["server_fds_connected"] = fd_count(pid)

        ids: dict[int, int] = {}
        spy = _start_py_spy(args.py_spy, pid, log) if args.py_spy else None
        try:
            for r in range(args.rounds):
                left = clock.left()
                if left < 5:
                    out["stopped_early"] = f"time limit: {r} of {args.rounds} rounds"
                    break
                c0 = _cpu_snapshot([pid], group)
                # connected before the clock starts (the server closes idle keep-alives)
                conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
                conn.connect()
                conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                t_ns = time.time_ns()
                body = orjson.dumps({"event": EVENT, "trackers": {"seq": str(r), "t": str(t_ns)}})
                t0 = time.perf_counter()
                try:
                    conn.request(
                        "POST", "/v1/post", body, {**creds, "Content-Type": "application/json"}
                    )
                    resp = conn.getresponse()
                    resp_body = resp.read()
                except (OSError, http.client.HTTPException) as exc:
                    raise HarnessError(f"post failed: {exc!r}") from exc
                finally:
                    conn.close()
                accept_ms = (time.perf_counter() - t0) * 1000
                if resp.status != 201:
                    raise HarnessError(f"post: HTTP {resp.status}: {resp_body[:300]!r}")
                nid = int(resp.getheader("X-Pushgate-Notification-Id") or 0)
                ids[r] = nid
                got, waited = _wait_round(group, r, n, min(args.round_timeout, left - 2))
                c1 = _cpu_snapshot([pid], group)
                s = _round_summary(group.latencies(r), n, waited)
                s["accept_ms"] = round(accept_ms, 3)
                s["notification_id"] = nid
                s["cpu"] = _cpu_delta(c0, c1)
                counts, settle = _wait_delivered(
                    base, user_token, nid, n, min(args.settle_timeout, max(1.0, clock.left() - 3))
                )
                s["delivered_after_s"] = round(settle, 3)
                s["statuses_at_settle"] = counts
                out["rounds"].append(s)
                log(
                    f"  pushgate round {r + 1}: {got:,}/{n:,} devices, last after {s['last_ms']} "
                    f"ms ({fmt(s['deliveries_per_s'])} deliveries/s; accepted in "
                    f"{accept_ms:.1f} ms); all delivered in storage {settle:.2f} s later"
                )
                time.sleep(args.pause)
        finally:
            if spy is not None:
                spy.send_signal(signal.SIGINT)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    spy.wait(60)
        accepted = bytes([1] * len(out["rounds"]))
        out["check"] = group.count(accepted) if accepted else {}
        final = _notification_counts(base, user_token, set(ids.values()))
        out["statuses"] = {str(r): final.get(nid, {}) for r, nid in ids.items()}
        out["server_fds_after"] = fd_count(pid)
    finally:
        group.close()
    return out


def _start_py_spy(out: Path, pid: int, log: Any) -> subprocess.Popen[bytes] | None:
    """py-spy (if installed) sampling the server during the Pushgate rounds, raw format."""
    exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(exe).exists():
        log("py-spy not found; no profile")
        return None
    spy = subprocess.Popen(
        [exe, "record", "-p", str(pid), "-o", str(out), "--format", "raw", "-r", "250",
         "--nonblocking"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    time.sleep(1.0)
    log(f"py-spy recording the server into {out}")
    return spy


def run(args: argparse.Namespace, log: Any) -> dict[str, Any]:
    setup_clock = Clock(args.setup_limit)
    soft, hard = raise_nofile()
    result: dict[str, Any] = {
        "benchmark": "fanout",
        "date": utc_now(),
        "source": source_version(),
        "machine": machine_info(LOOP),
        "config": {
            "devices_requested": args.devices,
            "rounds": args.rounds,
            "time_limit_s": args.time_limit,
            "setup_limit_s": args.setup_limit,
            "ack_interval_s": args.ack_interval,
            "idle_wait_s": args.idle_wait,
            "ws_batch": True,
            "nofile": [soft, hard],
        },
    }
    server: OwnServer | None = None
    try:
        log("starting server ...")
        server = OwnServer(keep_dir=args.keep_data)
        server.start()
        assert server.proc is not None
        pid = server.proc.pid
        user_token = server.create_account()
        st = setup_account(server.url, user_token, 0)
        creds = {"x-instapush-appid": st.app_id, "x-instapush-appsecret": st.app_secret}

        n, cap_note = device_room(pid, args.devices, args.fd_margin, (soft, hard))
        if cap_note:
            log("NOTE: " + cap_note)
        per_proc = max(1, hard - RECEIVER_FD_OVERHEAD)
        procs = max(args.receivers, math.ceil(n / per_proc))
        result["config"].update(
            devices=n,
            device_cap_note=cap_note,
            receiver_processes=procs,
            server_nofile=list(nofile_of(pid) or (soft, hard)),
            server_fds_idle=fd_count(pid),
        )

        log(f"registering {n:,} channel devices ({args.register_concurrency} at a time) ...")
        t0 = time.perf_counter()
        tokens = run_loop(
            register_devices(
                "127.0.0.1", server.port, user_token, n, args.register_concurrency,
                setup_clock.deadline, "fan",
            )
        )  # fmt: skip
        reg_s = time.perf_counter() - t0
        result["registration"] = {"devices": n, "seconds": round(reg_s, 2),
                                  "per_s": round(n / reg_s, 1)}  # fmt: skip
        log(f"  registered in {reg_s:.1f} s ({n / reg_s:,.0f}/s)")

        clock = Clock(args.time_limit)
        result["baseline"] = run_baseline(args, n, procs, clock, log)
        result["pushgate"] = run_pushgate(
            args, server, user_token, creds, tokens, procs, clock,
            max(10.0, setup_clock.left()), log,
        )  # fmt: skip
        result["summary"] = _summarize(result, n)
        result["targets"] = _targets(result, n)
    finally:
        if server is not None:
            if server.proc is not None and server.proc.poll() is not None:
                result["server_exit"] = server.proc.returncode
                result["server_log_tail"] = server.log_tail()
            server.stop()
            result["server_log_dir"] = str(server.dir) if args.keep_data else None
    return result


def _summarize(r: dict[str, Any], n: int) -> dict[str, Any]:
    base = [x["deliveries_per_s"] for x in r["baseline"]["rounds"]]
    pg = [x["deliveries_per_s"] for x in r["pushgate"]["rounds"]]
    bm, pm = median(base), median(pg)
    return {
        "baseline_median_deliveries_per_s": bm,
        "pushgate_median_deliveries_per_s": pm,
        "pushgate_best_deliveries_per_s": max((v for v in pg if v), default=None),
        "ratio_median": round(pm / bm, 3) if pm and bm else None,
        "baseline_median_last_ms": median([x["last_ms"] for x in r["baseline"]["rounds"]]),
        "pushgate_median_last_ms": median([x["last_ms"] for x in r["pushgate"]["rounds"]]),
    }


def _targets(r: dict[str, Any], n: int) -> list[dict[str, Any]]:
    pg = r["pushgate"]
    summ = r["summary"]
    notes = []
    if r["config"].get("device_cap_note"):
        notes.append(r["config"]["device_cap_note"])
    kib = pg["memory"]["kib_per_connection"]
    rate = summ["pushgate_median_deliveries_per_s"]
    chk = pg.get("check") or {}
    expected = chk.get("expected", 0)
    missing = expected - chk.get("received", 0)
    dups = chk.get("duplicates", 0)
    statuses = pg.get("statuses") or {}
    not_delivered = {
        k: {s: c for s, c in v.items() if s != "delivered" and c} for k, v in statuses.items()
    }
    not_delivered = {k: v for k, v in not_delivered.items() if v}
    delivered = sum(v.get("delivered", 0) for v in statuses.values())
    rounds_done = len(pg["rounds"])
    return [
        {
            "target": f"server memory per idle connection <= {TARGET_KIB_PER_CONNECTION:.0f} KiB",
            "measured": f"{kib:.1f} KiB ({n:,} connections; raw baseline "
            f"{r['baseline']['memory']['kib_per_connection']} KiB)"
            if kib is not None
            else "not measured",
            "value": kib,
            "pass": kib is not None and kib <= TARGET_KIB_PER_CONNECTION,
            "notes": notes,
        },
        {
            "target": f"deliveries/s >= {TARGET_RATIO} x the raw ceiling (one post to all devices)",
            "measured": (
                f"median {fmt(rate)}/s over {rounds_done} rounds = "
                f"{summ['ratio_median']} x raw ceiling "
                f"{fmt(summ['baseline_median_deliveries_per_s'])}/s"
            )
            if rate
            else "no complete round",
            "value": summ["ratio_median"],
            "pass": bool(rate) and (summ["ratio_median"] or 0) >= TARGET_RATIO,
            "notes": notes,
        },
        {
            "target": f"server CPU with every device connected and idle <= {TARGET_IDLE_CPU_PCT}"
            " % of one core",
            "measured": f"{pg.get('idle_cpu_pct')} % over {r['config'].get('idle_wait_s')} s "
            f"({n:,} connections)",
            "value": pg.get("idle_cpu_pct"),
            "pass": pg.get("idle_cpu_pct") is not None
            and pg["idle_cpu_pct"] <= TARGET_IDLE_CPU_PCT,
            "notes": notes,
        },
        {
            "target": "every device got every notification exactly once",
            "measured": f"{chk.get('received', 0):,} of {expected:,} received, missing "
            f"{missing}, duplicates {dups}, unexpected {chk.get('unexpected', 0)}, "
            f"reconnects {chk.get('reconnects', 0)}",
            "value": missing + dups,
            "pass": expected > 0 and missing == 0 and dups == 0,
        },
        {
            "target": "every delivery reaches `delivered`",
            "measured": f"{delivered:,} of {n * rounds_done:,} delivered"
            + (f"; not delivered: {not_delivered}" if not_delivered else ""),
            "value": delivered,
            "pass": rounds_done > 0 and delivered == n * rounds_done,
        },
    ]


def print_table(r: dict[str, Any]) -> None:
    c = r["config"]
    m = r["machine"]
    print(
        f"\nPushgate channel fan-out benchmark  {r['date']}  nproc={m['nproc']}  "
        f"python {m['python']} ({m['loop']})  source {r.get('source')}"
    )
    print(
        f"devices={c['devices']:,} (requested {c['devices_requested']:,})  rounds={c['rounds']}  "
        f"receiver processes={c['receiver_processes']}  RLIMIT_NOFILE={c['nofile'][0]}/"
        f"{c['nofile'][1]}  ack-interval={c['ack_interval_s']}s  ws batch=1"
    )
    if c.get("device_cap_note"):
        print(f"NOTE: {c['device_cap_note']}")
    reg = r["registration"]
    print(
        f"setup: registered {reg['devices']:,} devices in {reg['seconds']} s "
        f"({fmt(reg['per_s'])}/s)"
    )
    b, p = r["baseline"], r["pushgate"]
    print(
        f"connect: raw {b['connect']['seconds']} s, pushgate {p['connect']['seconds']} s "
        f"({fmt(p['connect'].get('per_s'))}/s; backlog {p['connect']['backlog']})\n"
    )
    hdr = f"{'server RSS':<22}{'before':>12}{'after idle':>12}{'per conn':>12}"
    print(hdr)
    print("-" * len(hdr))
    for name, mem in (("raw baseline", b["memory"]), ("pushgate", p["memory"])):
        print(
            f"{name:<22}{fmt((mem['rss_before_kib'] or 0) / 1024, ' MiB'):>12}"
            f"{fmt((mem['rss_after_kib'] or 0) / 1024, ' MiB'):>12}"
            f"{fmt(mem['kib_per_connection'], ' KiB'):>12}"
        )
    print()
    hdr = (
        f"{'round':<7}{'raw last':>10}{'raw del/s':>11}{'pg accept':>11}{'pg first':>10}"
        f"{'pg p50':>9}{'pg last':>10}{'pg del/s':>10}{'ratio':>7}{'stored':>9}{'srv CPU':>9}"
        f"{'others':>8}"
    )
    print(hdr)
    print("-" * len(hdr))
    for i in range(max(len(b["rounds"]), len(p["rounds"]))):
        br = b["rounds"][i] if i < len(b["rounds"]) else {}
        pr = p["rounds"][i] if i < len(p["rounds"]) else {}
        ratio = (
            pr["deliveries_per_s"] / br["deliveries_per_s"]
            if pr.get("deliveries_per_s") and br.get("deliveries_per_s")
            else None
        )
        cpu = pr.get("cpu") or {}
        print(
            f"{i + 1:<7}{fmt(br.get('last_ms'), 'ms'):>10}{fmt(br.get('deliveries_per_s')):>11}"
            f"{fmt(pr.get('accept_ms'), 'ms'):>11}{fmt(pr.get('first_ms'), 'ms'):>10}"
            f"{fmt(pr.get('p50_ms'), 'ms'):>9}"
            f"{fmt(pr.get('last_ms'), 'ms'):>10}{fmt(pr.get('deliveries_per_s')):>10}"
            f"{(f'{ratio:.2f}' if ratio else '-'):>7}"
            f"{fmt(pr.get('delivered_after_s'), 's'):>9}"
            f"{fmt(cpu.get('server_cpu_pct'), '%'):>9}"
            f"{fmt(cpu.get('other_processes_cpu_pct'), '%'):>8}"
        )
    s = r["summary"]
    print(
        f"{'median':<7}{fmt(s['baseline_median_last_ms'], 'ms'):>10}"
        f"{fmt(s['baseline_median_deliveries_per_s']):>11}{'':>11}{'':>10}{'':>9}"
        f"{fmt(s['pushgate_median_last_ms'], 'ms'):>10}"
        f"{fmt(s['pushgate_median_deliveries_per_s']):>10}"
        f"{(str(s['ratio_median']) if s['ratio_median'] else '-'):>7}"
    )
    print(
        "(last: time from the command (raw) / the post (pushgate) to the last device receiving\n"
        " it; del/s = devices / last; first / p50: the first / half the devices had it; accept:\n"
        " post answered 201; stored: further time until storage shows every delivery\n"
        " `delivered`; srv CPU: server process over the round in % of one core; others: every\n"
        " other process on the machine)"
    )
    others = [
        x["cpu"].get("other_processes_cpu_pct") for x in b["rounds"] + p["rounds"] if x.get("cpu")
    ]
    if any(o is not None and o > 25 for o in others):
        print(
            "WARNING: other processes used more than 25% CPU during some rounds: the machine was "
            "not quiet, figures are disturbed"
        )
    for name, part in (("raw", b), ("pushgate", p)):
        if part.get("stopped_early"):
            print(f"{name}: stopped early ({part['stopped_early']})")
    chk = b.get("check") or {}
    print(
        f"raw check: {chk.get('received', 0):,} of {chk.get('expected', 0):,} received, "
        f"duplicates {chk.get('duplicates', 0)}"
    )
    print(
        f"pushgate server descriptors: idle {c['server_fds_idle']}, with devices "
        f"{p.get('server_fds_connected')}, limit {c['server_nofile'][0]}; server CPU with "
        f"{c['devices']:,} idle connections: {fmt(p.get('idle_cpu_pct'), '%')} of one core"
    )
    print_targets(r["targets"], notes_at_end=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--devices", type=int, default=20_000, help="connected devices (20000)")
    ap.add_argument("--rounds", type=int, default=5, help="notifications, one at a time (5)")
    ap.add_argument(
        "--time-limit", type=float, default=300.0,
        help="seconds for the measured phases (300): baseline, Pushgate rounds and checks",
    )  # fmt: skip
    ap.add_argument(
        "--setup-limit", type=float, default=900.0,
        help="seconds for the setup paced by the server (900): starting it, registering the "
        "devices and connecting them to Pushgate",
    )  # fmt: skip
    ap.add_argument(
        "--receivers", type=int, default=2, help="receiver processes (at least; default 2)"
    )
    ap.add_argument("--ack-interval", type=float, default=0.05, help="device ack batching (s)")
    ap.add_argument(
        "--register-concurrency", type=int, default=32, help="registrations in flight (32)"
    )
    ap.add_argument(
        "--idle-wait",
        type=float,
        default=60.0,
        help="idle seconds with every device connected: the server's RSS and CPU are read "
        "over them (60)",
    )
    ap.add_argument("--round-timeout", type=float, default=60.0, help="max wait per round (s)")
    ap.add_argument(
        "--settle-timeout", type=float, default=30.0,
        help="max wait per round until storage shows every delivery delivered (s)",
    )  # fmt: skip
    ap.add_argument("--pause", type=float, default=0.5, help="pause between rounds (s)")
    ap.add_argument(
        "--fd-margin", type=int, default=128,
        help="descriptors the server keeps free besides device sockets (128)",
    )  # fmt: skip
    ap.add_argument(
        "--py-spy", type=Path, metavar="OUT",
        help="profile the server with py-spy (if installed) during the Pushgate rounds",
    )  # fmt: skip
    add_output_options(ap)
    args = ap.parse_args(argv)
    if args.devices < 1 or args.rounds < 1 or args.time_limit <= 0 or args.receivers < 1:
        ap.error("devices, rounds, time-limit and receivers must be positive")
    return run_and_report(args, run, print_table)


if __name__ == "__main__":
    sys.exit(main())
