"""Reconnect storm: kill -9 and restart a server whose N channel devices all owe a backlog.

One run, all on loopback, one data directory (SQLite, the embedded default):

1. setup     - start ``pushgate serve``, an account, an app, an event and N channel devices
               (``POST /api/v1/devices``, many at once; not measured);
2. baseline  - fanout.py's minimal asyncio WebSocket server (handshake, nothing else); the
               storm receivers connect all N devices to it, ``--connect-concurrency`` handshakes
               in flight per receiver process: the raw connects/s of this machine with these
               clients;
3. connect   - the same receivers connect all N devices to Pushgate (``batch=1``, token in the
               ``Authorization`` header, as ``pushgate listen`` does) the same way: Pushgate's
               connects/s with nothing owed;
4. backlog   - the devices stop acknowledging; ``--backlog`` (5) Instapush posts reach every
               device, unacknowledged, so after a restart each device is owed all of them
               (storage is checked: no delivery may be ``delivered``);
5. storm     - SIGKILL the server; every device sees its connection drop and reconnects on
               its own with ``pushgate listen``'s policy (sleep 0.5 s x a random 0.8-1.2, the
               base doubling after every failed try up to 10 s, back to 0.5 s once connected);
               after ``--down`` seconds the server restarts on the same data directory and
               port. From the moment it answers ``/api/v1/ping`` ("ready"): the time until every
               device is connected, connects/s (peak over any 1 s window, mean), handshake
               latency, the time until every device has its whole backlog (without ``since``:
               everything unacknowledged) exactly once, and the server's CPU meanwhile;
6. check     - each device got each backlog notification exactly once after the restart, and
               storage shows every delivery ``delivered`` once the devices acknowledged.

Targets (issue 13): every backlog drained within 60 s of the restart; >= 1,000 new WebSocket
connections per second. Exit code 0 when it measured (PASS or FAIL), 2 on a harness error.

    .venv/bin/python -m benchmarks.reconnect                     # 20,000 devices
    .venv/bin/python -m benchmarks.reconnect --devices 2000 --json
    .venv/bin/python -m benchmarks.reconnect --py-spy storm.txt  # profile the restarted server
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import bisect
import contextlib
import datetime as dt
import http.client
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from array import array
from collections import Counter
from pathlib import Path
from typing import Any

import orjson

from benchmarks.fanout import (
    RECEIVER_FD_OVERHEAD,
    RawWsServer,
    ReceiverGroup,
    _notification_counts,
)
from benchmarks.harness import HarnessError
from benchmarks.harness.http import HttpPool
from benchmarks.harness.machine import (
    cpu_seconds_pid,
    cpu_seconds_self,
    device_room,
    fd_count,
    machine_info,
    raise_nofile,
    source_version,
)
from benchmarks.harness.report import add_output_options, run_and_report
from benchmarks.harness.server import LOOP, Clock, OwnServer, run_loop
from benchmarks.harness.stats import percentiles
from benchmarks.ingest import EVENT, _Device, _Receivers, _WsConn, setup_account
from pushgate.cli.listen import BACKOFF_MAX, BACKOFF_START

TARGET_DRAIN_S = 60.0
TARGET_CONNECTS_PER_S = 1000.0
JITTER = (0.8, 1.2)  # pushgate listen: delay = backoff * random.uniform(0.8, 1.2)
OPEN_TIMEOUT = 10.0  # websockets' default open_timeout, which pushgate listen keeps


# --------------------------------------------------------------------------------------------
# Receivers: ingest's raw WebSocket devices, reconnecting like `pushgate listen`
# --------------------------------------------------------------------------------------------


class _StormDevice(_Device):
    def __init__(self, token: str, slots: int) -> None:
        super().__init__(token)
        self.counts = bytearray(slots)
        self.backoff = BACKOFF_START
        self.ready_ns = 0  # first "ready" after the kill (wall clock)
        self.drained_ns = 0  # whole backlog received after the kill
        self.backlog = -1  # what the server's "ready" said


def _retrieve(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()


class _StormConn(_WsConn):
    def __init__(self, dev: _StormDevice, rx: _StormReceivers) -> None:
        super().__init__(dev, rx.rec)
        self.rx = rx
        # the HTTP 101 (what websockets' open_timeout, and so pushgate listen, waits for)
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # a connection given up on still fails its ``ready``: retrieve that error, or asyncio
        # logs "exception was never retrieved" for each one (tens of thousands in a storm)
        self.ready.add_done_callback(_retrieve)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        # upgraded, or refused (the error is in ``ready``)
        if not self.opened.done() and (self.upgraded or self.ready.done()):
            self.opened.set_result(None)

    def connection_lost(self, exc: BaseException | None) -> None:
        super().connection_lost(exc)
        if not self.opened.done():
            self.opened.set_result(None)

    def _on_notification(self, msg: Any, now: int) -> None:
        super()._on_notification(msg, now)
        dev = self.dev
        rx = self.rx
        if dev.pending_acks:
            rx.dirty.add(dev)  # type: ignore[arg-type]
        if rx.armed and dev.unique >= rx.expected and not dev.drained_ns:  # type: ignore[attr-defined]
            dev.drained_ns = time.time_ns()  # type: ignore[attr-defined]


class _StormReceivers(_Receivers):
    """Devices that hold their connections, reconnect with jittered exponential backoff when
    they drop, can stop acknowledging (to leave a backlog owed), and time their reconnection."""

    def __init__(self, pipe: Any, ack_interval: float, batch: bool, slots: int) -> None:
        super().__init__(pipe, ack_interval, batch)
        self.slots = slots
        self.sdevices: list[_StormDevice] = []
        self.dirty: set[_StormDevice] = set()
        self.hold = False
        self.armed = False
        self.expected = 0
        self.attempt_ns = array("q")
        self.handshake_ns = array("q")
        self.failures: Counter[str] = Counter()

    async def _open(self, dev: _Device, open_timeout: float | None = None) -> dict[str, Any]:
        """Connect; ``open_timeout`` bounds the TCP connect and the HTTP 101 (as websockets'
        ``open_timeout`` does for pushgate listen), not the backlog and ``ready`` after it."""
        loop = asyncio.get_running_loop()
        t_end = None if open_timeout is None else loop.time() + open_timeout
        key = base64.b64encode(os.urandom(16)).decode()
        conn: _StormConn
        _, conn = await asyncio.wait_for(
            loop.create_connection(
                lambda: _StormConn(dev, self),  # type: ignore[arg-type]
                self.host,
                self.port,
            ),
            open_timeout,
        )
        dev.conn = conn
        dev.connects += 1
        query = "?batch=1" if self.batch else ""
        assert conn.transport is not None
        conn.transport.write(
            f"GET /api/v1/channel/ws{query} HTTP/1.1\r\n"
            f"Host: {self.host}:{self.port}\r\nAuthorization: Bearer {dev.token}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        if t_end is not None:
            try:
                await asyncio.wait_for(asyncio.shield(conn.opened), max(0.0, t_end - loop.time()))
            except TimeoutError:
                if conn.transport is not None:
                    conn.transport.abort()
                raise
        return await conn.ready

    async def _attempt(self, dev: _StormDevice, timeout: float) -> bool:
        """One connection attempt; True once the server said "ready"."""
        t0 = time.time_ns()
        if self.armed:
            self.attempt_ns.append(t0)
        dev.conn = None
        try:
            msg = await self._open(dev, timeout)
        except TimeoutError:
            self.failures["timeout"] += 1
            return False
        except ConnectionRefusedError:
            self.failures["refused"] += 1
            return False
        except ConnectionError as exc:
            text = str(exc)
            if "upgrade refused" in text:
                i = text.find("HTTP/1.1 ")
                self.failures["HTTP " + text[i + 9 : i + 12] if i >= 0 else "refused upgrade"] += 1
            else:
                self.failures["closed"] += 1
            return False
        except OSError as exc:
            self.failures[type(exc).__name__] += 1
            return False
        now = time.time_ns()
        if self.armed and not dev.ready_ns:
            dev.ready_ns = now
            self.handshake_ns.append(now - t0)
        dev.backlog = int(msg.get("backlog", -1) or 0)
        if not self.hold:
            dev.flush_acks()
        return True

    async def _keep(self, dev: _Device) -> None:
        """`pushgate listen`'s loop: after a drop or a failed try, sleep backoff x jitter,
        double the backoff (up to 10 s); a connection that reaches "ready" resets it."""
        assert isinstance(dev, _StormDevice)
        while not self.stopping:
            conn = dev.conn
            if conn is not None:
                await conn.lost
            if self.stopping:
                return
            await asyncio.sleep(dev.backoff * random.uniform(*JITTER))
            dev.backoff = min(dev.backoff * 2, BACKOFF_MAX)
            if self.stopping:
                return
            if await self._attempt(dev, OPEN_TIMEOUT):
                dev.backoff = BACKOFF_START

    async def connect_all(
        self, host: str, port: int, tokens: list[str], timeout: float, concurrency: int
    ) -> dict[str, Any]:
        """Connect every device once, ``concurrency`` handshakes in flight; then keep them."""
        self.host, self.port = host, port
        self.sdevices = [_StormDevice(t, self.slots) for t in tokens]
        self.devices = list(self.sdevices)
        sem = asyncio.Semaphore(concurrency)
        done_ns = array("q")

        async def one(dev: _StormDevice) -> None:
            async with sem:
                await self._open(dev)
                done_ns.append(time.time_ns())

        t0 = time.time_ns()
        await asyncio.wait_for(asyncio.gather(*(one(d) for d in self.sdevices)), timeout)
        self.keepers = [asyncio.ensure_future(self._keep(d)) for d in self.sdevices]
        return {"connected": len(self.sdevices), "t0_ns": t0, "done_ns": done_ns.tobytes()}

    async def ack_loop(self) -> None:
        while True:
            await asyncio.sleep(self.ack_interval)
            if self.hold or not self.dirty:
                continue
            dirty, self.dirty = self.dirty, set()
            for d in dirty:
                d.flush_acks()

    def arm(self, expected: int) -> None:
        """Forget what arrived before the kill (it was not acknowledged: it is owed again)."""
        self.expected = expected
        for d in self.sdevices:
            d.counts = bytearray(self.slots)
            d.unique = 0
            d.pending_acks = []
            d.ready_ns = 0
            d.drained_ns = 0
            d.backlog = -1
        self.dirty.clear()
        self.rec.duplicates = 0
        self.rec.lat_seq = array("q")
        self.rec.lat_ns = array("q")
        self.attempt_ns = array("q")
        self.handshake_ns = array("q")
        self.failures.clear()
        self.hold = False
        self.armed = True

    def progress(self, expected: int) -> dict[str, int]:
        return {
            "live": sum(1 for d in self.sdevices if d.conn is not None and d.conn.live),
            "complete": sum(1 for d in self.sdevices if d.unique >= expected),
            "ready": sum(1 for d in self.sdevices if d.ready_ns),
        }

    def storm(self) -> dict[str, Any]:
        exp = self.expected
        return {
            "ready_ns": array("q", (d.ready_ns for d in self.sdevices)).tobytes(),
            "drained_ns": array("q", (d.drained_ns for d in self.sdevices)).tobytes(),
            "attempt_ns": self.attempt_ns.tobytes(),
            "handshake_ns": self.handshake_ns.tobytes(),
            "failures": dict(self.failures),
            "duplicates": self.rec.duplicates,
            "missing": sum(
                max(0, exp - sum(1 for c in d.counts[:exp] if c)) for d in self.sdevices
            ),
            "unexpected": sum(1 for d in self.sdevices for c in d.counts[exp:] if c),
            "ready_backlog": dict(Counter(d.backlog for d in self.sdevices)),
            "bad_messages": self.rec.bad_messages,
            "other_messages": dict(self.rec.other_types),
            "close_reasons": dict(Counter(r for d in self.sdevices for r in d.close_reasons)),
        }

    async def _do(self, cmd: str, args: tuple) -> None:
        try:
            if cmd == "connect_all":
                out: Any = await self.connect_all(*args)
            elif cmd == "hold":
                self.hold = True
                out = None
            elif cmd == "arm":
                self.arm(*args)
                out = None
            elif cmd == "progress":
                out = self.progress(*args)
            elif cmd == "storm":
                out = self.storm()
            elif cmd == "cpu":
                out = cpu_seconds_self() - self.cpu0
            elif cmd == "close":
                assert self.done is not None
                self.done.set_result(None)
                out = None
            else:
                raise ValueError(cmd)
            self.pipe.send(("ok", out))
        except BaseException as exc:
            self.pipe.send(("error", f"{type(exc).__name__}: {exc}"))


def _storm_entry(pipe: Any, ack_interval: float, batch: bool, slots: int) -> None:
    run_loop(_StormReceivers(pipe, ack_interval, batch, slots).serve())


class StormGroup(ReceiverGroup):
    def __init__(self, procs: int, ack_interval: float, slots: int) -> None:
        super().__init__(procs, ack_interval, slots, entry=_storm_entry)

    def connect_all(
        self, port: int, tokens: list[str], timeout: float, concurrency: int
    ) -> dict[str, Any]:
        k = len(self.rxs)
        parts = [tokens[i::k] for i in range(k)]
        t0 = time.time_ns()
        outs = self.ask(
            "connect_all",
            [("127.0.0.1", port, p, timeout, concurrency) for p in parts],
            timeout=timeout + 30,
        )
        done = array("q")
        for o in outs:
            done.frombytes(o["done_ns"])
        return _rate_summary(done, t0)

    def progress(self, expected: int) -> dict[str, int]:
        total: Counter[str] = Counter()
        for p in self.all("progress", expected, timeout=120):
            total.update(p)
        return dict(total)

    def storm(self) -> dict[str, Any]:
        out: dict[str, Any] = {k: array("q") for k in ("ready_ns", "drained_ns", "attempt_ns",
                                                       "handshake_ns")}  # fmt: skip
        counters = ("failures", "ready_backlog", "other_messages", "close_reasons")
        for k in counters:
            out[k] = Counter()
        for k in ("duplicates", "missing", "unexpected", "bad_messages"):
            out[k] = 0
        for part in self.all("storm", timeout=120):
            for k in ("ready_ns", "drained_ns", "attempt_ns", "handshake_ns"):
                out[k].frombytes(part[k])
            for k in counters:
                out[k].update(part[k])
            for k in ("duplicates", "missing", "unexpected", "bad_messages"):
                out[k] += part[k]
        return out


# --------------------------------------------------------------------------------------------
# Rates
# --------------------------------------------------------------------------------------------


def _peak_window(times_ns: list[int], window_ns: int = 1_000_000_000) -> int:
    """Most events in any window of ``window_ns`` (times sorted)."""
    best = 0
    for i, t in enumerate(times_ns):
        j = bisect.bisect_right(times_ns, t + window_ns - 1, lo=i)
        best = max(best, j - i)
    return best


def _rate_summary(done_ns: array, t0_ns: int) -> dict[str, Any]:
    times = sorted(done_ns)
    n = len(times)
    if not n:
        return {"connected": 0}
    span = (times[-1] - t0_ns) / 1e9
    return {
        "connected": n,
        "seconds": round(span, 3),
        "mean_per_s": round(n / span, 1) if span > 0 else None,
        "peak_1s": _peak_window(times),
    }


def _per_second(times_ns: list[int], t0_ns: int, seconds: int) -> list[int]:
    bins = [0] * max(1, seconds)
    for t in times_ns:
        i = int((t - t0_ns) // 1_000_000_000)
        if 0 <= i < len(bins):
            bins[i] += 1
        elif i < 0:
            bins[0] += 1
    return bins


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------


async def _register(
    port: int, user_token: str, n: int, concurrency: int, deadline: float
) -> tuple[list[str], int]:
    """fanout.register_devices, but a 503 (SQLite busy on a loaded machine) is retried after a
    short pause instead of ending the run; (tokens, retries)."""
    pool = HttpPool("127.0.0.1", port, concurrency)
    auth = {"Authorization": f"Bearer {user_token}"}
    tokens = [""] * n
    todo = iter(range(n))
    retries = 0

    async def worker() -> None:
        nonlocal retries
        for i in todo:
            body = orjson.dumps({"platform": "channel", "name": f"storm-{i}"})
            for attempt in range(20):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise HarnessError(f"time limit reached while registering ({i} of {n})")
                status, _, raw = await pool.request("POST", "/api/v1/devices", auth, body, left)
                if status == 201:
                    tokens[i] = str(orjson.loads(raw)["device_token"])
                    break
                if status != 503 or attempt == 19:
                    raise HarnessError(f"register device: HTTP {status}: {raw[:300]!r}")
                retries += 1
                await asyncio.sleep(0.2 * (attempt + 1))

    try:
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    finally:
        pool.close()
    return tokens, retries


def _post(port: int, creds: dict[str, str], seq: int) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    body = orjson.dumps({"event": EVENT, "trackers": {"seq": str(seq), "t": str(time.time_ns())}})
    try:
        conn.request("POST", "/v1/post", body, {**creds, "Content-Type": "application/json"})
        resp = conn.getresponse()
        raw = resp.read()
    except (OSError, http.client.HTTPException) as exc:
        raise HarnessError(f"post failed: {exc!r}") from exc
    finally:
        conn.close()
    if resp.status != 201:
        raise HarnessError(f"post: HTTP {resp.status}: {raw[:300]!r}")
    return int(resp.getheader("X-Pushgate-Notification-Id") or 0)


def _wait_progress(
    group: StormGroup, expected: int, key: str, n: int, timeout: float, on_tick: Any = None
) -> tuple[dict[str, int], float]:
    t0 = time.perf_counter()
    while True:
        p = group.progress(expected)
        if on_tick is not None:
            on_tick(p)
        waited = time.perf_counter() - t0
        if p[key] >= n or waited >= timeout:
            return p, waited
        time.sleep(0.1)


def _start_py_spy(out: Path, pid: int, log: Any) -> subprocess.Popen[bytes] | None:
    exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(exe).exists():
        log("py-spy not found (PATH or next to this Python); no profile")
        return None
    log(f"py-spy recording the restarted server into {out}")
    return subprocess.Popen(
        [exe, "record", "-p", str(pid), "-o", str(out), "--format", "raw", "-r", "200",
         "--nonblocking", "--threads", "--idle"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def _restart(server: OwnServer, timeout: float) -> tuple[int, int]:
    """Start the server again on its data dir and port; (spawn, ready) wall-clock ns."""
    server.log_path = server.dir / "server-restart.log"
    spawn = time.time_ns()
    server.start(timeout=timeout)
    return spawn, time.time_ns()


def run(args: argparse.Namespace, log: Any) -> dict[str, Any]:
    setup_clock = Clock(args.setup_limit)
    soft, hard = raise_nofile()
    result: dict[str, Any] = {
        "benchmark": "reconnect",
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "source": source_version(),
        "machine": machine_info(LOOP),
        "config": {
            "devices_requested": args.devices,
            "backlog": args.backlog,
            "down_s": args.down,
            "connect_concurrency": args.connect_concurrency,
            "ack_interval_s": args.ack_interval,
            "backoff": {"start_s": BACKOFF_START, "max_s": BACKOFF_MAX, "jitter": list(JITTER)},
            "open_timeout_s": OPEN_TIMEOUT,
            "nofile": [soft, hard],
        },
    }
    server: OwnServer | None = None
    group: StormGroup | None = None
    spy: subprocess.Popen[bytes] | None = None
    slots = args.backlog + 1
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
        procs = max(args.receivers, math.ceil(n / max(1, hard - RECEIVER_FD_OVERHEAD)))
        result["config"].update(devices=n, device_cap_note=cap_note, receiver_processes=procs)

        log(f"registering {n:,} channel devices ({args.register_concurrency} at a time) ...")
        t0 = time.perf_counter()
        tokens, retries = run_loop(
            _register(server.port, user_token, n, args.register_concurrency, setup_clock.deadline)
        )
        reg_s = time.perf_counter() - t0
        result["registration"] = {"devices": n, "seconds": round(reg_s, 2),
                                  "per_s": round(n / reg_s, 1), "retried_503": retries}  # fmt: skip
        log(f"  registered in {reg_s:.1f} s ({n / reg_s:,.0f}/s)")

        # -- baseline: raw connects/s ---------------------------------------------------------
        raw = RawWsServer()
        raw_group = StormGroup(procs, args.ack_interval, slots)
        try:
            log(f"baseline: connecting {n:,} devices to the raw WebSocket server ...")
            c0 = cpu_seconds_pid(raw.pid)
            result["baseline"] = raw_group.connect_all(
                raw.port, [f"raw{i}" for i in range(n)], setup_clock.need("baseline", 10),
                args.connect_concurrency,
            )  # fmt: skip
            c1 = cpu_seconds_pid(raw.pid)
            if c0 is not None and c1 is not None:
                result["baseline"]["server_cpu_s"] = round(c1 - c0, 2)
            log(f"  {_fmt_rate(result['baseline'])}")
        finally:
            raw_group.close()
            raw.close()

        # -- Pushgate: connect everything, nothing owed ----------------------------------------
        group = StormGroup(procs, args.ack_interval, slots)
        log(f"pushgate: connecting {n:,} devices (nothing owed) ...")
        if args.py_spy and args.py_spy_phase == "connect":
            spy = _start_py_spy(args.py_spy, pid, log)
            time.sleep(0.5)
        c0 = cpu_seconds_pid(pid)
        result["initial_connect"] = group.connect_all(
            server.port, tokens, setup_clock.need("connect", 10), args.connect_concurrency
        )
        c1 = cpu_seconds_pid(pid)
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                spy.wait(60)
            spy = None
        if c0 is not None and c1 is not None:
            result["initial_connect"]["server_cpu_s"] = round(c1 - c0, 2)
        log(f"  {_fmt_rate(result['initial_connect'])}")

        # -- the backlog -----------------------------------------------------------------------
        group.all("hold")
        ids = []
        log(f"backlog: {args.backlog} posts to every device, not acknowledged ...")
        for r in range(args.backlog):
            ids.append(_post(server.port, creds, r))
        p, waited = _wait_progress(
            group, args.backlog, "complete", n, setup_clock.need("backlog", 10)
        )
        if p["complete"] < n:
            raise HarnessError(f"only {p['complete']:,} of {n:,} devices got the backlog")
        time.sleep(args.settle)  # let the server write the "sent" statuses
        owed = _notification_counts(server.url, user_token, set(ids))
        result["backlog"] = {
            "notification_ids": ids,
            "fanned_out_s": round(waited, 2),
            "statuses_before_kill": {str(k): v for k, v in owed.items()},
        }
        delivered = sum(v.get("delivered", 0) for v in owed.values())
        if delivered:
            raise HarnessError(f"{delivered} deliveries already delivered before the kill")
        log(f"  every device has {args.backlog} unacknowledged notifications ({waited:.1f} s)")

        # -- kill -9, restart ------------------------------------------------------------------
        fds_connected = fd_count(pid)
        log("SIGKILL ...")
        kill_ns = time.time_ns()
        os.kill(pid, signal.SIGKILL)
        server.proc.wait(30)
        group.all("arm", args.backlog)
        time.sleep(args.down)
        clock = Clock(args.time_limit)
        log(f"restarting on the same data directory and port after {args.down} s down ...")
        result["source_at_restart"] = source_version()
        spawn_ns, ready_ns = _restart(server, min(120.0, clock.need("restart", 10)))
        pid = server.proc.pid
        cpu_ready = cpu_seconds_pid(pid)
        if args.py_spy and args.py_spy_phase == "storm":
            spy = _start_py_spy(args.py_spy, pid, log)
        ticks: list[dict[str, Any]] = []

        def tick(p: dict[str, int]) -> None:
            ticks.append({"t_s": round((time.time_ns() - ready_ns) / 1e9, 2),
                          "cpu_s": cpu_seconds_pid(pid), **p})  # fmt: skip

        log(f"  ready after {(ready_ns - spawn_ns) / 1e9:.2f} s; waiting for the storm ...")
        p, waited = _wait_progress(
            group, args.backlog, "complete", n, min(args.drain_timeout, clock.left() - 5), tick
        )
        cpu_drained = cpu_seconds_pid(pid)
        wall_drained = time.time_ns()
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                spy.wait(60)
            spy = None
        time.sleep(args.settle)
        s = group.storm()
        counts = _wait_delivered(server.url, user_token, ids, n,
                                 min(args.settle_timeout, max(1.0, clock.left() - 3)))  # fmt: skip
        result["storm"] = _storm_summary(
            s, n, args.backlog, kill_ns, spawn_ns, ready_ns, ticks,
            (cpu_ready, cpu_drained, wall_drained),
        )  # fmt: skip
        result["storm"]["server_fds_before_kill"] = fds_connected
        result["storm"]["statuses"] = {str(k): v for k, v in counts.items()}
        result["targets"] = _targets(result, n)
    finally:
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                spy.wait(30)
        if group is not None:
            group.close()
        if server is not None:
            if server.proc is not None and server.proc.poll() is not None:
                result["server_exit"] = server.proc.returncode
                result["server_log_tail"] = server.log_tail()
            server.stop()
            result["server_log_dir"] = str(server.dir) if args.keep_data else None
    return result


def _wait_delivered(
    base: str, user_token: str, ids: list[int], n: int, timeout: float
) -> dict[int, dict[str, int]]:
    t0 = time.perf_counter()
    while True:
        counts = _notification_counts(base, user_token, set(ids))
        done = all(counts.get(i, {}).get("delivered", 0) >= n for i in ids)
        if done or time.perf_counter() - t0 >= timeout:
            return counts
        time.sleep(0.25)


def _storm_summary(
    s: dict[str, Any], n: int, backlog: int, kill_ns: int, spawn_ns: int, ready_ns: int,
    ticks: list[dict[str, Any]], cpu: tuple[float | None, float | None, int],
) -> dict[str, Any]:  # fmt: skip
    ready = sorted(t for t in s["ready_ns"] if t)
    drained = sorted(t for t in s["drained_ns"] if t)
    attempts = sorted(s["attempt_ns"])
    last_connect = (ready[-1] - ready_ns) / 1e9 if ready else None
    last_drain = (drained[-1] - ready_ns) / 1e9 if drained else None
    secs = int(math.ceil(max(last_connect or 0, last_drain or 0))) + 1
    span = (ready[-1] - ready[0]) / 1e9 if len(ready) > 1 else None
    cpu_ready, cpu_drained, wall_drained = cpu
    cpu_s = cpu_drained - cpu_ready if cpu_ready is not None and cpu_drained is not None else None
    wall = (wall_drained - ready_ns) / 1e9
    series = []
    prev = None
    for t in ticks:
        if prev is not None and t["cpu_s"] is not None and prev["cpu_s"] is not None:
            dt_s = t["t_s"] - prev["t_s"]
            if dt_s > 0:
                t = {**t, "cpu_pct": round(100 * (t["cpu_s"] - prev["cpu_s"]) / dt_s, 1)}
        series.append(t)
        prev = t
    hs = percentiles(s["handshake_ns"])
    return {
        "down_s": round((spawn_ns - kill_ns) / 1e9, 3),
        "restart_to_ready_s": round((ready_ns - spawn_ns) / 1e9, 3),
        "connected": len(ready),
        "drained": len(drained),
        "all_connected_s": round(last_connect, 3) if last_connect is not None else None,
        "all_drained_s": round(last_drain, 3) if last_drain is not None else None,
        "connected_before_ready": sum(1 for t in ready if t < ready_ns),
        "connects_mean_per_s_from_ready": round(len(ready) / last_connect, 1)
        if last_connect
        else None,
        "connects_mean_per_s_first_to_last": round(len(ready) / span, 1) if span else None,
        "connects_peak_1s": _peak_window(ready),
        "connects_per_second": _per_second(ready, ready_ns, secs),
        "attempts_per_second": _per_second(attempts, ready_ns, secs),
        "attempts_after_kill": len(attempts),
        "drained_per_second": _per_second(drained, ready_ns, secs),
        "handshake_ms": {k: (round(v, 1) if isinstance(v, float) else v) for k, v in hs.items()},
        "failures": dict(s["failures"]),
        "ready_backlog": {str(k): v for k, v in sorted(s["ready_backlog"].items())},
        "received_missing": s["missing"],
        "duplicates": s["duplicates"],
        "unexpected": s["unexpected"],
        "bad_messages": s["bad_messages"],
        "other_messages": dict(s["other_messages"]),
        "close_reasons": dict(s["close_reasons"]),
        "server_cpu_s": round(cpu_s, 2) if cpu_s is not None else None,
        "server_cpu_pct": round(100 * cpu_s / wall, 1) if cpu_s is not None and wall > 0 else None,
        "progress": series,
        "expected_per_device": backlog,
        "devices": n,
    }


def _targets(r: dict[str, Any], n: int) -> list[dict[str, Any]]:
    s = r["storm"]
    drain = s["all_drained_s"]
    complete = s["drained"] == n and s["received_missing"] == 0
    peak = s["connects_peak_1s"]
    statuses = s["statuses"]
    delivered = sum(v.get("delivered", 0) for v in statuses.values())
    notes = [r["config"]["device_cap_note"]] if r["config"].get("device_cap_note") else []
    return [
        {
            "target": f"every backlog drained within {TARGET_DRAIN_S:.0f} s of the restart",
            "measured": f"{s['drained']:,} of {n:,} devices drained, the last {drain} s after "
            f"ready (all connected after {s['all_connected_s']} s)",
            "value": drain,
            "pass": complete and drain is not None and drain <= TARGET_DRAIN_S,
            "notes": notes,
        },
        {
            "target": f">= {TARGET_CONNECTS_PER_S:,.0f} new WebSocket connections/s",
            "measured": f"peak {peak:,} in 1 s, mean {s['connects_mean_per_s_from_ready']}/s "
            f"from ready; burst connect (nothing owed) {r['initial_connect'].get('mean_per_s')}/s"
            f" vs raw {r['baseline'].get('mean_per_s')}/s",
            "value": peak,
            "pass": peak >= TARGET_CONNECTS_PER_S,
            "notes": notes,
        },
        {
            "target": "every backlog notification exactly once after the restart",
            "measured": f"missing {s['received_missing']}, duplicates {s['duplicates']}, "
            f"unexpected {s['unexpected']}",
            "value": s["received_missing"] + s["duplicates"],
            "pass": s["received_missing"] == 0 and s["duplicates"] == 0 and not s["unexpected"],
        },
        {
            "target": "every delivery `delivered` in storage",
            "measured": f"{delivered:,} of {n * len(statuses):,}",
            "value": delivered,
            "pass": delivered == n * s["expected_per_device"],
        },
    ]


def _fmt_rate(c: dict[str, Any]) -> str:
    return (
        f"{c.get('connected', 0):,} connected in {c.get('seconds')} s: mean "
        f"{c.get('mean_per_s')}/s, peak {c.get('peak_1s')} in 1 s"
    )


def print_table(r: dict[str, Any]) -> None:
    c, m = r["config"], r["machine"]
    print(
        f"\nPushgate reconnect storm  {r['date']}  nproc={m['nproc']}  python {m['python']} "
        f"({m['loop']})  source {r.get('source')}"
    )
    print(
        f"devices={c['devices']:,} (requested {c['devices_requested']:,})  backlog={c['backlog']}"
        f" per device  down={c['down_s']} s  receiver processes={c['receiver_processes']}  "
        f"backoff {c['backoff']['start_s']}-{c['backoff']['max_s']} s x {c['backoff']['jitter']}"
    )
    if c.get("device_cap_note"):
        print(f"NOTE: {c['device_cap_note']}")
    reg = r["registration"]
    print(f"setup: registered {reg['devices']:,} devices in {reg['seconds']} s")
    print(f"burst connect, {c['connect_concurrency']} in flight per receiver process:")
    print(f"  raw asyncio server: {_fmt_rate(r['baseline'])}")
    print(f"  pushgate (nothing owed): {_fmt_rate(r['initial_connect'])}")
    s = r["storm"]
    print(
        f"storm: down {s['down_s']} s, restart to ready {s['restart_to_ready_s']} s; from "
        f"ready: all {s['connected']:,} connected after {s['all_connected_s']} s, all "
        f"{s['drained']:,} drained after {s['all_drained_s']} s"
    )
    print(
        f"  connects/s: peak {s['connects_peak_1s']:,} (any 1 s), mean "
        f"{s['connects_mean_per_s_from_ready']} from ready, "
        f"{s['connects_mean_per_s_first_to_last']} first to last"
    )
    print(f"  handshake (attempt -> ready) ms: {s['handshake_ms']}")
    print(f"  attempts after the kill {s['attempts_after_kill']:,}; failures {s['failures']}")
    print(
        f"  server CPU ready -> drained: {s['server_cpu_s']} s = {s['server_cpu_pct']}% of a core"
    )
    print("  per second from ready (attempts / connects / drained):")
    for i, (a, k, d) in enumerate(
        zip(s["attempts_per_second"], s["connects_per_second"], s["drained_per_second"],
            strict=True)
    ):  # fmt: skip
        print(f"    {i:>3} s  {a:>7,} {k:>7,} {d:>7,}")
    print(f"  'ready' said backlog: {s['ready_backlog']}")
    print("\ntargets:")
    for t in r["targets"]:
        mark = ("PASS" if t["pass"] else "FAIL") + ("*" if t.get("notes") else "")
        print(f"  [{mark}] {t['target']}: {t['measured']}")
    for note in {x for t in r["targets"] for x in t.get("notes") or []}:
        print(f"  * {note}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--devices", type=int, default=20_000, help="channel devices (20000)")
    ap.add_argument("--backlog", type=int, default=5, help="notifications owed per device (5)")
    ap.add_argument("--down", type=float, default=1.0, help="seconds between kill and restart")
    ap.add_argument(
        "--connect-concurrency", type=int, default=64,
        help="handshakes in flight per receiver process for the burst connects (64)",
    )  # fmt: skip
    ap.add_argument("--receivers", type=int, default=2, help="receiver processes (at least)")
    ap.add_argument("--ack-interval", type=float, default=0.05, help="device ack batching (s)")
    ap.add_argument("--register-concurrency", type=int, default=32, help="registrations in flight")
    ap.add_argument("--settle", type=float, default=1.0, help="pause for status writes (s)")
    ap.add_argument("--drain-timeout", type=float, default=180.0, help="max wait for the storm")
    ap.add_argument("--settle-timeout", type=float, default=60.0, help="max wait for delivered")
    ap.add_argument("--time-limit", type=float, default=300.0, help="seconds from the restart")
    ap.add_argument("--setup-limit", type=float, default=900.0, help="seconds for the setup")
    ap.add_argument("--fd-margin", type=int, default=128, help="descriptors kept free (128)")
    ap.add_argument("--py-spy", type=Path, metavar="OUT", help="py-spy the server (raw format)")
    ap.add_argument(
        "--py-spy-phase", choices=("storm", "connect"), default="storm",
        help="what --py-spy records: the storm after the restart (default) or the burst "
        "connect before the kill (nothing owed)",
    )  # fmt: skip
    add_output_options(ap)
    args = ap.parse_args(argv)
    if args.devices < 1 or args.backlog < 1 or args.receivers < 1:
        ap.error("devices, backlog and receivers must be positive")
    return run_and_report(args, run, print_table)


if __name__ == "__main__":
    sys.exit(main())
