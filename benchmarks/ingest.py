"""Ingest benchmark: Instapush ``POST /v1/post`` with D connected channel devices.

One run, four phases, all against one server on loopback:

1. floor    - the same closed-loop load (same client, concurrency, duration) against
              ``POST /api/v1/ping``, a no-op endpoint of the same server stack;
2. ingest   - ``POST /v1/post`` as fast as possible with D WebSocket devices connected:
              accepted posts/s and p50/p99 accept latency (then wait for fan-out to drain);
3. latency  - ``POST /v1/post`` open-loop paced at --latency-rate posts/s (default: half the
              rate phase 2 reached, the saturating rate): p50/p99
              post-to-device latency (send time carried in the post's ``t`` tracker);
4. loss     - wait (bounded) until every device has every accepted (201) post of phases 2
              and 3; report lost and duplicated deliveries.

Targets (checked here, printed PASS/FAIL; the exit code is 0 whatever they say, non-zero only
when the harness itself fails): accepted posts/s >= 0.7 x floor; post-to-device p50 <= 10 ms
and p99 <= 50 ms at half the saturating rate with 100 devices (issue 13, target 8); nothing
accepted is lost.

The HTTP load and the device receivers each run in their own process (fork) with lean
raw-socket clients: HTTP/1.1 keep-alive connections writing pre-formatted request bytes, and
WebSocket clients that parse frames by hand, so the generator costs far less than the server.

    python -m benchmarks.ingest                     # starts its own server on a temp dir
    python -m benchmarks.ingest --json              # one JSON object on stdout
    python -m benchmarks.ingest --server http://127.0.0.1:8080 --user-token ut_...
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
from array import array
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import orjson

from benchmarks.harness import HarnessError
from benchmarks.harness.child import Child
from benchmarks.harness.http import StatusConn, check, http_request
from benchmarks.harness.machine import (
    cpu_seconds_self,
    machine_busy,
    machine_info,
    server_cpu,
    source_version,
)
from benchmarks.harness.report import (
    add_output_options,
    fmt,
    pct,
    print_targets,
    run_and_report,
    utc_now,
)
from benchmarks.harness.server import LOOP, OwnServer, require_loopback, run_loop
from benchmarks.harness.stats import percentiles

TARGET_RATIO = 0.7
TARGET_P99_MS = 50.0
TARGET_P50_MS = 10.0
TARGET_LOAD = 0.5  # the latency phase's rate, as a share of the saturating rate
TARGET_DEVICES = 100
EVENT = "bench"


# --------------------------------------------------------------------------------------------
# HTTP load generator (runs in its own process)
# --------------------------------------------------------------------------------------------


# Where a request's sequence number and send time go in the JSON given to ``body_parts``.
SEQ, SENT = "<seq>", "<t>"


def body_parts(document: Any) -> tuple[bytes, bytes, bytes]:
    """``document`` as JSON, in three parts around the ``SEQ`` and ``SENT`` in it: a
    request's body is ``parts[0] + seq + parts[1] + t + parts[2]`` (t: ns since the epoch)."""
    head, rest = orjson.dumps(document).split(SEQ.encode(), 1)
    middle, tail = rest.split(SENT.encode(), 1)
    return head, middle, tail


# Instapush's: the event's two trackers.
INSTAPUSH_BODY = body_parts({"event": EVENT, "trackers": {"seq": SEQ, "t": SENT}})


@dataclass
class LoadSpec:
    host: str
    port: int
    path: str
    headers: dict[str, str]
    concurrency: int
    duration: float
    max_posts: int
    rate: float  # posts/s, 0 = closed loop as fast as possible
    seq_start: int
    request_timeout: float = 10.0
    drain_grace: float = 10.0
    body: tuple[bytes, bytes, bytes] = INSTAPUSH_BODY
    accepted_status: int = 201  # the answer that says the request was accepted


@dataclass
class LoadResult:
    sent: int = 0
    ok: int = 0  # 2xx
    accepted: int = 0  # answered ``accepted_status`` (201)
    statuses: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    elapsed: float = 0.0
    latency_ms: dict[str, float | None] = field(default_factory=dict)
    accepted_map: bytes = b""  # byte per seq (seq_start + i): 1 when accepted
    max_lag_ms: float = 0.0  # paced mode: worst delay between intended and actual send
    not_sent: int = 0  # paced mode: due but not sent before the phase ended (client queue)
    cpu_seconds: float = 0.0


def _request_head(spec: LoadSpec) -> bytes:
    head = [f"POST {spec.path} HTTP/1.1", f"Host: {spec.host}:{spec.port}"]
    head += [f"{k}: {v}" for k, v in spec.headers.items()]
    head.append("Content-Type: application/json")
    return ("\r\n".join(head) + "\r\nContent-Length: ").encode()


async def _run_load(spec: LoadSpec) -> LoadResult:
    loop = asyncio.get_running_loop()
    prefix = _request_head(spec)
    body_a, body_b, body_c = spec.body
    res = LoadResult()
    lat = array("q")
    limit = spec.max_posts
    accepted = bytearray(limit)
    state = {"next": 0, "max_lag": 0}
    perf_ns = time.perf_counter_ns
    wall_ns = time.time_ns
    conns: list[StatusConn] = []

    async def connect() -> StatusConn:
        _, proto = await loop.create_connection(StatusConn, spec.host, spec.port)
        conns.append(proto)
        return proto

    def build(seq: int, t_ns: int) -> bytes:
        body = b"%s%d%s%d%s" % (body_a, seq, body_b, t_ns, body_c)
        return b"%s%d\r\n\r\n%s" % (prefix, len(body), body)

    async def one(conn: StatusConn, i: int, t_wall: int, t_start: int) -> StatusConn:
        """Send post i, record its outcome; return a usable connection."""
        req = build(spec.seq_start + i, t_wall)
        res.sent += 1
        try:
            status = await asyncio.wait_for(conn.request(req), spec.request_timeout)
        except (ConnectionError, OSError, TimeoutError) as exc:
            res.errors[type(exc).__name__] += 1
            if conn.transport is not None:
                conn.transport.close()
            return await connect()
        lat.append(perf_ns() - t_start)
        res.statuses[str(status)] += 1
        if 200 <= status < 300:
            res.ok += 1
        if status == spec.accepted_status:
            res.accepted += 1
            accepted[i] = 1
        if conn.closed:
            return await connect()
        return conn

    t0 = perf_ns()
    last_done = [t0]

    async def closed_worker() -> None:
        conn = await connect()
        deadline = t0 + int(spec.duration * 1e9)
        while True:
            now = perf_ns()
            i = state["next"]
            if now >= deadline or i >= limit:
                break
            state["next"] = i + 1
            conn = await one(conn, i, wall_ns(), now)
            last_done[0] = perf_ns()

    queue: asyncio.Queue[tuple[int, int] | None] = asyncio.Queue()
    wall0 = wall_ns()

    async def dispatcher() -> None:
        interval = 1e9 / spec.rate
        end = t0 + int(spec.duration * 1e9)
        i = 0
        while i < limit:
            now = perf_ns()
            if now >= end:
                break
            due = min(limit, int((now - t0) / interval) + 1)
            while i < due:
                queue.put_nowait((i, t0 + int(i * interval)))
                i += 1
            nxt = t0 + int(i * interval)
            await asyncio.sleep(max(0.0002, (nxt - perf_ns()) / 1e9))
        state["next"] = i
        for _ in range(spec.concurrency):
            queue.put_nowait(None)

    end_ns = t0 + int(spec.duration * 1e9)

    async def paced_worker() -> None:
        conn = await connect()
        while True:
            item = await queue.get()
            if item is None:
                break
            i, intended = item
            now = perf_ns()
            if now >= end_ns:  # the phase is over: what the client could not send is dropped
                res.not_sent += 1
                continue
            lag = now - intended
            if lag > state["max_lag"]:
                state["max_lag"] = lag
            # the post carries its intended send time: client queueing counts against latency
            conn = await one(conn, i, wall0 + (intended - t0), intended)
            last_done[0] = perf_ns()

    cpu0 = cpu_seconds_self()
    if spec.rate > 0:
        tasks = [asyncio.ensure_future(dispatcher())]
        tasks += [asyncio.ensure_future(paced_worker()) for _ in range(spec.concurrency)]
    else:
        tasks = [asyncio.ensure_future(closed_worker()) for _ in range(spec.concurrency)]
    _, pending = await asyncio.wait(
        tasks, timeout=spec.duration + spec.drain_grace + spec.request_timeout
    )
    for t in pending:
        t.cancel()
    if pending:
        res.errors["phase_timeout_tasks"] += len(pending)
        await asyncio.gather(*pending, return_exceptions=True)
    for t in tasks:
        if not t.cancelled() and t.exception() is not None:
            exc = t.exception()
            res.errors[f"task:{type(exc).__name__}:{exc}"[:200]] += 1
    res.cpu_seconds = cpu_seconds_self() - cpu0
    res.elapsed = (last_done[0] - t0) / 1e9
    res.latency_ms = percentiles(lat)
    res.accepted_map = bytes(accepted[: state["next"]])
    res.max_lag_ms = state["max_lag"] / 1e6
    for c in conns:
        if c.transport is not None:
            c.transport.close()
    return res


def _loadgen_entry(conn: Any, spec: LoadSpec) -> None:
    try:
        result = run_loop(_run_load(spec))
        conn.send(("ok", result))
    except BaseException as exc:  # report anything to the parent
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        conn.close()


def run_load(spec: LoadSpec) -> LoadResult:
    loadgen = Child("load generator", _loadgen_entry, spec)
    budget = spec.duration + spec.drain_grace + 2 * spec.request_timeout + 30
    try:
        return loadgen.result(budget, "load")  # type: ignore[no-any-return]
    finally:
        loadgen.join(5)


# --------------------------------------------------------------------------------------------
# Device receivers: D raw WebSocket clients in one process, driven over a pipe
# --------------------------------------------------------------------------------------------


def _ws_frame(opcode: int, payload: bytes) -> bytes:
    """A client frame; masked with the all-zero key (valid per RFC 6455, and free)."""
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, 0x80 | n))
    elif n < 65536:
        head = bytes((0x80 | opcode, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 0x80 | 127)) + n.to_bytes(8, "big")
    return head + b"\x00\x00\x00\x00" + payload


class _Recorder:
    """What all devices received: latency per delivery, duplicates, odd messages."""

    def __init__(self) -> None:
        self.lat_seq = array("q")
        self.lat_ns = array("q")
        self.duplicates = 0
        self.bad_messages = 0
        self.other_types: Counter[str] = Counter()


class _Device:
    """One registered device: what it has received, across reconnections."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.counts = bytearray()  # per seq: how often received
        self.unique = 0
        self.pending_acks: list[int] = []
        self.conn: _WsConn | None = None
        self.connects = 0
        self.close_reasons: list[str] = []

    def flush_acks(self) -> None:
        conn = self.conn
        if self.pending_acks and conn is not None and conn.live:
            ids = self.pending_acks
            self.pending_acks = []
            assert conn.transport is not None
            conn.transport.write(_ws_frame(0x1, orjson.dumps({"type": "ack", "ids": ids})))


class _WsConn(asyncio.Protocol):
    """One WebSocket connection of a device; frames parsed by hand."""

    def __init__(self, dev: _Device, rec: _Recorder) -> None:
        self.dev = dev
        self.rec = rec
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.upgraded = False
        self.ready: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.frag: bytearray | None = None
        self.live = False  # upgraded and not closed
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: BaseException | None) -> None:
        self.live = False
        if not self.ready.done():
            self.ready.set_exception(exc or ConnectionError("closed before ready"))
        if not self.lost.done():
            self.lost.set_result(None)

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        if not self.upgraded:
            i = buf.find(b"\r\n\r\n")
            if i < 0:
                return
            head = bytes(buf[:i])
            if not head.startswith(b"HTTP/1.1 101"):
                if not self.ready.done():
                    self.ready.set_exception(
                        ConnectionError(f"websocket upgrade refused: {head[:300]!r}")
                    )
                if self.transport is not None:
                    self.transport.close()
                return
            del buf[: i + 4]
            self.upgraded = True
            self.live = True
        now = time.time_ns()
        pos = 0
        n = len(buf)
        while n - pos >= 2:
            b0 = buf[pos]
            b1 = buf[pos + 1]
            ln = b1 & 0x7F
            hl = 2
            if ln == 126:
                if n - pos < 4:
                    break
                ln = int.from_bytes(buf[pos + 2 : pos + 4], "big")
                hl = 4
            elif ln == 127:
                if n - pos < 10:
                    break
                ln = int.from_bytes(buf[pos + 2 : pos + 10], "big")
                hl = 10
            if b1 & 0x80:
                hl += 4  # servers must not mask; tolerate it anyway
            if n - pos < hl + ln:
                break
            payload = bytes(buf[pos + hl : pos + hl + ln])
            if b1 & 0x80:
                mask = buf[pos + hl - 4 : pos + hl]
                payload = bytes(c ^ mask[k % 4] for k, c in enumerate(payload))
            pos += hl + ln
            opcode = b0 & 0x0F
            if opcode == 0:  # continuation
                if self.frag is not None:
                    self.frag += payload
                    if b0 & 0x80:
                        payload = bytes(self.frag)
                        self.frag = None
                        self._on_text(payload, now)
                continue
            if opcode == 1:
                if b0 & 0x80:
                    self._on_text(payload, now)
                else:
                    self.frag = bytearray(payload)
            elif opcode == 9 and self.transport is not None:
                self.transport.write(_ws_frame(0xA, payload))
            elif opcode == 8:
                code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
                reason = payload[2:].decode(errors="replace")
                self.dev.close_reasons.append(f"{code} {reason}".strip())
                self.live = False
                if self.transport is not None:
                    self.transport.write(_ws_frame(0x8, payload[:2]))
                    self.transport.close()
                break
        if pos:
            del buf[:pos]

    def _on_text(self, payload: bytes, now: int) -> None:
        rec = self.rec
        try:
            msg = orjson.loads(payload)
            kind = msg.get("type")
        except (ValueError, AttributeError):
            rec.bad_messages += 1
            return
        if kind == "notification":
            self._on_notification(msg, now)
        elif kind == "batch":  # several notifications in one frame (batch=1 connections)
            for item in msg.get("notifications") or ():
                self._on_notification(item, now)
        elif kind == "ready":
            if not self.ready.done():
                self.ready.set_result(msg)
        else:
            rec.other_types[str(kind)] += 1

    def _on_notification(self, msg: Any, now: int) -> None:
        rec = self.rec
        try:
            data = msg.get("data") or {}
            if "seq" in data and "t" in data:
                seq = int(data["seq"])
                t = int(data["t"])
            else:  # fall back to the rendered text "bench {seq} at {t}"
                parts = str(msg.get("message", "")).split()
                seq = int(parts[1])
                t = int(parts[3])
            self.dev.pending_acks.append(msg["id"])
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            rec.bad_messages += 1
            return
        counts = self.dev.counts
        if seq >= len(counts):
            counts.extend(bytes(seq - len(counts) + 65536))
        c = counts[seq]
        if c:
            rec.duplicates += 1
            if c < 255:
                counts[seq] = c + 1
            return
        counts[seq] = 1
        self.dev.unique += 1
        rec.lat_seq.append(seq)
        rec.lat_ns.append(now - t)


class _Receivers:
    """The device side: connects, keeps devices connected (reconnecting like a real client
    after the server closes one), acks in batches, answers the parent's questions."""

    def __init__(self, pipe: Any, ack_interval: float, batch: bool) -> None:
        self.pipe = pipe
        self.ack_interval = ack_interval
        self.batch = batch
        self.rec = _Recorder()
        self.devices: list[_Device] = []
        self.host = ""
        self.port = 0
        self.stopping = False
        self.keepers: list[asyncio.Task[None]] = []
        self.done: asyncio.Future[None] | None = None
        self.cpu0 = cpu_seconds_self()

    async def _open(self, dev: _Device) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        key = base64.b64encode(os.urandom(16)).decode()
        conn: _WsConn
        _, conn = await loop.create_connection(lambda: _WsConn(dev, self.rec), self.host, self.port)
        dev.conn = conn
        dev.connects += 1
        q = urllib.parse.quote(dev.token, safe="")
        query = "&batch=1" if self.batch else ""
        assert conn.transport is not None
        conn.transport.write(
            f"GET /api/v1/channel/ws?token={q}{query} HTTP/1.1\r\n"
            f"Host: {self.host}:{self.port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        return await conn.ready

    async def _keep(self, dev: _Device) -> None:
        """Reconnect (without since: the server resends what is unacknowledged)."""
        while not self.stopping:
            conn = dev.conn
            if conn is not None:
                await conn.lost
            if self.stopping:
                return
            await asyncio.sleep(0.2)
            with contextlib.suppress(OSError, ConnectionError):
                await asyncio.wait_for(self._open(dev), 10)
                dev.flush_acks()

    async def connect(self, host: str, port: int, tokens: list[str], timeout: float) -> dict:
        self.host, self.port = host, port
        self.devices = [_Device(t) for t in tokens]
        sem = asyncio.Semaphore(32)

        async def one(dev: _Device) -> dict[str, Any]:
            async with sem:
                return await self._open(dev)

        t0 = time.perf_counter()
        readies = await asyncio.wait_for(asyncio.gather(*(one(d) for d in self.devices)), timeout)
        backlog = sum(int(r.get("backlog", 0) or 0) for r in readies)
        self.keepers = [asyncio.ensure_future(self._keep(d)) for d in self.devices]
        return {"connected": len(self.devices), "backlog": backlog,
                "seconds": time.perf_counter() - t0}  # fmt: skip

    def count(self, accepted: bytes) -> dict:
        """How many (device, accepted post) pairs have arrived."""
        acc = int.from_bytes(accepted, "little")
        expected_per_device = accepted.count(1)
        got = 0
        unexpected = 0
        table = bytes([0] + [1] * 255)
        for d in self.devices:
            have = d.counts[: len(accepted)].translate(table)
            matched = (int.from_bytes(have, "little") & acc).bit_count()
            got += matched
            unexpected += d.unique - matched
        reasons: Counter[str] = Counter(r for d in self.devices for r in d.close_reasons)
        return {
            "devices": len(self.devices),
            "expected": expected_per_device * len(self.devices),
            "received": got,
            "unexpected": unexpected,
            "duplicates": self.rec.duplicates,
            "bad_messages": self.rec.bad_messages,
            "other_messages": dict(self.rec.other_types),
            "reconnects": sum(max(0, d.connects - 1) for d in self.devices),
            "disconnected_now": sum(1 for d in self.devices if d.conn is None or not d.conn.live),
            "close_reasons": dict(reasons),
        }

    def latency(self, lo: int, hi: int) -> dict:
        sel = [v for s, v in zip(self.rec.lat_seq, self.rec.lat_ns, strict=True) if lo <= s < hi]
        return percentiles(sel)

    async def ack_loop(self) -> None:
        while True:
            await asyncio.sleep(self.ack_interval)
            for d in self.devices:
                d.flush_acks()

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        self.done = loop.create_future()
        acker = asyncio.ensure_future(self.ack_loop())
        loop.add_reader(self.pipe.fileno(), self._on_cmd)
        try:
            await self.done
        finally:
            self.stopping = True
            loop.remove_reader(self.pipe.fileno())
            acker.cancel()
            for k in self.keepers:
                k.cancel()
            for d in self.devices:
                d.flush_acks()
                if d.conn is not None and d.conn.transport is not None:
                    if d.conn.live:
                        d.conn.transport.write(_ws_frame(0x8, (1000).to_bytes(2, "big")))
                    d.conn.transport.close()
            await asyncio.sleep(0.05)

    def _on_cmd(self) -> None:
        # the event loop makes the fd non-blocking; a command larger than the socket buffer
        # (the accepted-posts map) must still be read whole, and the parent sends it at once
        os.set_blocking(self.pipe.fileno(), True)
        try:
            cmd, args = self.pipe.recv()
        except (EOFError, OSError):
            assert self.done is not None
            if not self.done.done():
                self.done.set_result(None)
            return
        asyncio.ensure_future(self._do(cmd, args))

    async def _do(self, cmd: str, args: tuple) -> None:
        try:
            if cmd == "connect":
                out: Any = await self.connect(*args)
            elif cmd == "count":
                out = self.count(*args)
            elif cmd == "latency":
                out = self.latency(*args)
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


def _receivers_entry(pipe: Any, ack_interval: float, batch: bool) -> None:
    run_loop(_Receivers(pipe, ack_interval, batch).serve())


class ReceiverProcess(Child):
    def __init__(self, ack_interval: float, batch: bool) -> None:
        super().__init__("device receivers", _receivers_entry, ack_interval, batch)


# --------------------------------------------------------------------------------------------
# Server and setup
# --------------------------------------------------------------------------------------------


@dataclass
class Setup:
    app_id: str
    app_secret: str
    device_tokens: list[str]


def setup_account(base: str, user_token: str, devices: int) -> Setup:
    tok = {"x-instapush-token": user_token}
    app = check(
        *http_request("POST", base, "/v1/apps/add", tok, orjson.dumps({"title": "bench"})),
        "apps/add",
    )
    app_id, secret = str(app["id"]), str(app["secret"])
    creds = {"x-instapush-appid": app_id, "x-instapush-appsecret": secret}
    event = {"title": EVENT, "trackers": ["seq", "t"], "message": "bench {seq} at {t}"}
    check(*http_request("POST", base, "/v1/events/add", creds, orjson.dumps(event)), "events/add")
    tokens = []
    auth = {"Authorization": f"Bearer {user_token}"}
    for i in range(devices):
        body = orjson.dumps({"platform": "channel", "name": f"bench-{i}"})
        dev = check(*http_request("POST", base, "/api/v1/devices", auth, body), "register device")
        tokens.append(str(dev["device_token"]))
    return Setup(app_id, secret, tokens)


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------


def wrk_floor(base: str, path: str, concurrency: int, duration: float) -> dict[str, Any]:
    """Cross-check of the Python client: wrk -t1 on the same no-op endpoint, if installed."""
    wrk = shutil.which("wrk")
    if wrk is None:
        return {"available": False}
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(
            'wrk.method = "POST"\n'
            'wrk.body = \'{"event":"bench","trackers":{"seq":"1","t":"1"}}\'\n'
            'wrk.headers["Content-Type"] = "application/json"\n'
        )
        script = f.name
    try:
        cp = subprocess.run(
            [wrk, "-t1", f"-c{concurrency}", f"-d{max(1, round(duration))}s", "-s", script,
             base + path],
            capture_output=True, text=True, timeout=duration + 30, check=False,
        )  # fmt: skip
    finally:
        os.unlink(script)
    rps = None
    non2xx = 0
    for line in cp.stdout.splitlines():
        if line.startswith("Requests/sec:"):
            rps = float(line.split()[1])
        if "Non-2xx" in line:
            non2xx = int(line.split()[-1])
    return {"available": True, "requests_per_s": rps, "non_2xx": non2xx}


def measured_load(
    spec: LoadSpec, server_pid: int | None, rx: ReceiverProcess
) -> tuple[LoadResult, dict[str, float | None]]:
    """``run_load``, with the CPU each side used meanwhile (% of one core over the phase):
    the server (all threads, and its event-loop thread), the load generator, the device
    receivers, the whole machine and every other process."""
    srv0, rx0, m0 = server_cpu(server_pid), rx.call("cpu"), machine_busy()
    w0 = time.perf_counter()
    r = run_load(spec)
    wall = time.perf_counter() - w0
    srv1, rx1, m1 = server_cpu(server_pid), rx.call("cpu"), machine_busy()

    def pct(v: float) -> float:
        return round(100 * v / wall, 1)

    cpu: dict[str, float | None] = {
        "server_cpu_pct": pct(srv1[0] - srv0[0]) if srv0 and srv1 else None,
        "server_loop_thread_cpu_pct": pct(srv1[1] - srv0[1]) if srv0 and srv1 else None,
        "loadgen_cpu_pct": pct(r.cpu_seconds),
        "receivers_cpu_pct": pct(rx1 - rx0),
        "machine_busy_pct": pct(m1 - m0) if m0 is not None and m1 is not None else None,
    }
    known = [cpu["server_cpu_pct"], cpu["loadgen_cpu_pct"], cpu["receivers_cpu_pct"]]
    if cpu["machine_busy_pct"] is not None and None not in known:
        cpu["other_processes_cpu_pct"] = round(
            cpu["machine_busy_pct"] - sum(k for k in known if k is not None), 1
        )
    return r, cpu


def wait_delivered(
    rx: ReceiverProcess, accepted: bytes, timeout: float
) -> tuple[dict[str, Any], float]:
    t0 = time.perf_counter()
    deadline = t0 + timeout
    while True:
        c = rx.call("count", accepted)
        if c["received"] >= c["expected"] or time.perf_counter() >= deadline:
            return c, time.perf_counter() - t0
        time.sleep(0.1)


def phase_summary(r: LoadResult, cpu: dict[str, float | None]) -> dict[str, Any]:
    return {
        "sent": r.sent,
        "not_sent": r.not_sent,
        "ok_2xx": r.ok,
        "accepted_201": r.accepted,
        "statuses": dict(r.statuses),
        "errors": dict(r.errors),
        "elapsed_s": round(r.elapsed, 3),
        "ok_per_s": round(r.ok / r.elapsed, 1) if r.elapsed else 0.0,
        "accepted_per_s": round(r.accepted / r.elapsed, 1) if r.elapsed else 0.0,
        "latency_ms": {
            k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.latency_ms.items()
        },  # fmt: skip
        "cpu": cpu,
    }


def run(args: argparse.Namespace, log: Any) -> dict[str, Any]:
    server: OwnServer | None = None
    rx: ReceiverProcess | None = None
    result: dict[str, Any] = {
        "benchmark": "ingest",
        "date": utc_now(),
        "source": source_version(),
        "machine": machine_info(LOOP),
        "config": {
            "concurrency": args.concurrency,
            "devices": args.devices,
            "duration_s": args.duration,
            "max_posts": args.max_posts,
            "rate": args.rate,
            "latency_rate": args.latency_rate,
            "latency_duration_s": args.latency_duration,
            "ack_interval_s": args.ack_interval,
            "ws_batch": not args.single_frames,
        },
    }
    try:
        if args.server:
            host, port = require_loopback(args.server)
            base = args.server.rstrip("/")
            if not args.user_token:
                raise HarnessError("--server needs --user-token")
            user_token = args.user_token
            server_pid = None
        else:
            log("starting server ...")
            server = OwnServer(keep_dir=args.keep_data)
            server.start()
            host, port, base = "127.0.0.1", server.port, server.url
            user_token = server.create_account()
            server_pid = server.proc.pid if server.proc else None
            result["server_log_dir"] = str(server.dir) if args.keep_data else None

        log(f"setup: app, event, {args.devices} channel devices ...")
        st = setup_account(base, user_token, args.devices)
        rx = ReceiverProcess(args.ack_interval, not args.single_frames)
        conn_info = rx.call("connect", host, port, st.device_tokens, 60.0, timeout=90)
        log(f"connected {conn_info['connected']} devices in {conn_info['seconds']:.2f}s")
        result["devices_connected"] = conn_info

        creds = {"x-instapush-appid": st.app_id, "x-instapush-appsecret": st.app_secret}

        def load(
            path: str, rate: float, duration: float, seq_start: int
        ) -> tuple[LoadResult, dict[str, float | None]]:
            spec = LoadSpec(
                host=host, port=port, path=path, headers=creds, concurrency=args.concurrency,
                duration=duration, max_posts=args.max_posts, rate=rate, seq_start=seq_start,
            )  # fmt: skip
            assert rx is not None
            return measured_load(spec, server_pid, rx)

        # warm-up: a short burst on each endpoint so imports/caches are not measured
        log("warm-up ...")
        load("/api/v1/ping", 0, 1.0, 0)

        log(f"phase 1/4 floor: POST /api/v1/ping, c={args.concurrency}, {args.duration}s ...")
        floor, floor_cpu = load("/api/v1/ping", args.rate, args.duration, 0)
        result["floor"] = phase_summary(floor, floor_cpu)

        if args.wrk_check:
            log("cross-check: wrk -t1 on /api/v1/ping ...")
            result["floor"]["wrk"] = wrk_floor(
                base, "/api/v1/ping", args.concurrency, args.duration
            )

        log(f"phase 2/4 ingest: POST /v1/post, c={args.concurrency}, {args.duration}s ...")
        ingest, ingest_cpu = load("/v1/post", args.rate, args.duration, 0)
        result["ingest"] = phase_summary(ingest, ingest_cpu)
        acc2 = ingest.accepted_map
        n2 = len(acc2)
        log(f"  waiting for fan-out of {ingest.accepted} accepted posts to drain ...")
        c2, drain2 = wait_delivered(rx, acc2, args.drain_timeout)
        result["ingest"]["drain_after_s"] = round(drain2, 3)
        result["ingest"]["delivered_at_drain"] = c2
        result["ingest"]["post_to_device_ms"] = {
            k: (round(v, 3) if isinstance(v, float) else v)
            for k, v in rx.call("latency", 0, n2).items()
        }
        if ingest.elapsed:
            result["ingest"]["deliveries_per_s_incl_drain"] = round(
                c2["received"] / (ingest.elapsed + drain2), 1
            )

        if not args.latency_rate:  # half the saturating rate phase 2 measured
            args.latency_rate = round(TARGET_LOAD * result["ingest"]["accepted_per_s"], 1)
            result["config"]["latency_rate"] = args.latency_rate
        log(f"phase 3/4 latency: {args.latency_rate} posts/s paced, {args.latency_duration}s ...")
        lat, lat_cpu = load("/v1/post", args.latency_rate, args.latency_duration, n2)
        acc3 = lat.accepted_map
        n3 = len(acc3)
        result["latency"] = phase_summary(lat, lat_cpu)
        result["latency"]["target_rate"] = args.latency_rate
        result["latency"]["max_send_lag_ms"] = round(lat.max_lag_ms, 3)

        log("phase 4/4 loss check: waiting until every device has every accepted post ...")
        accepted_all = acc2 + acc3
        c, drain = wait_delivered(rx, accepted_all, args.drain_timeout)
        result["latency"]["post_to_device_ms"] = {
            k: (round(v, 3) if isinstance(v, float) else v)
            for k, v in rx.call("latency", n2, n2 + n3).items()
        }
        result["loss"] = {
            "accepted_posts": accepted_all.count(1),
            "devices": len(st.device_tokens),
            "expected_deliveries": c["expected"],
            "received": c["received"],
            "lost": c["expected"] - c["received"],
            "duplicates": c["duplicates"],
            "unexpected": c["unexpected"],
            "bad_messages": c["bad_messages"],
            "reconnects": c["reconnects"],
            "disconnected_now": c["disconnected_now"],
            "close_reasons": c["close_reasons"],
            "other_messages": c["other_messages"],
            "waited_s": round(drain, 3),
        }
        result["targets"] = _targets(result, args)
    finally:
        if rx is not None:
            rx.close()
        if server is not None:
            if server.proc is not None and server.proc.poll() is not None:
                result["server_exit"] = server.proc.returncode
            server.stop()
    return result


def _targets(r: dict[str, Any], args: argparse.Namespace) -> list[dict[str, Any]]:
    floor_rate = r["floor"]["ok_per_s"]
    ingest_rate = r["ingest"]["accepted_per_s"]
    ratio = ingest_rate / floor_rate if floor_rate else 0.0
    p50 = r["latency"]["post_to_device_ms"]["p50"]
    p99 = r["latency"]["post_to_device_ms"]["p99"]
    achieved = r["latency"]["accepted_per_s"]
    rate_ok = achieved >= 0.95 * args.latency_rate
    conditions = []
    share = args.latency_rate / ingest_rate if ingest_rate else 0.0
    if share < TARGET_LOAD - 0.05 or args.devices < TARGET_DEVICES:
        conditions.append(
            f"run at {args.latency_rate}/s ({share:.2f} x the saturating rate) with "
            f"{args.devices} devices; the target is stated for {TARGET_LOAD} x with "
            f"{TARGET_DEVICES} devices"
        )
    if not rate_ok:
        conditions.append(f"only {achieved:.0f} accepted posts/s reached of {args.latency_rate}")
    lost = r["loss"]["lost"]
    return [
        {
            "target": f"accepted posts/s >= {TARGET_RATIO} x floor",
            "measured": f"{ingest_rate:.0f}/s vs floor {floor_rate:.0f}/s = {ratio:.2f} x",
            "value": round(ratio, 3),
            "pass": ratio >= TARGET_RATIO,
        },
        {
            "target": f"post-to-device p50 <= {TARGET_P50_MS:.0f} ms and p99 <= "
            f"{TARGET_P99_MS:.0f} ms at {TARGET_LOAD} x the saturating rate, "
            f"{TARGET_DEVICES} devices",
            "measured": (
                f"p50 {p50:.1f} ms, p99 {p99:.1f} ms"
                if p50 is not None and p99 is not None
                else "no deliveries"
            )
            + f" at {achieved:.0f} accepted/s, {args.devices} devices",
            "value": p99,
            "pass": p50 is not None
            and p99 is not None
            and p50 <= TARGET_P50_MS
            and p99 <= TARGET_P99_MS
            and rate_ok,
            "notes": conditions,
        },
        {
            "target": "nothing accepted is lost",
            "measured": f"lost {lost} of {r['loss']['expected_deliveries']} deliveries "
            f"(duplicates {r['loss']['duplicates']})",
            "value": lost,
            "pass": lost == 0,
        },
    ]


def _fmt(v: Any, unit: str = "") -> str:
    if unit == "%" and isinstance(v, float):
        return pct(v)
    return fmt(v, unit, big=",.1f")


def print_table(r: dict[str, Any]) -> None:
    c = r["config"]
    print(
        f"\nPushgate ingest benchmark  {r['date']}  nproc={r['machine']['nproc']}  "
        f"python {r['machine']['python']} ({r['machine']['loop']})  source {r.get('source')}"
    )
    print(
        f"concurrency={c['concurrency']} devices={c['devices']} duration={c['duration_s']}s "
        f"latency-rate={c['latency_rate']}/s for {c['latency_duration_s']}s "
        f"ack-interval={c['ack_interval_s']}s ws-batch={c['ws_batch']}\n"
    )
    hdr = (
        f"{'phase':<10}{'ok/s':>10}{'2xx':>9}{'non-2xx':>9}{'errors':>8}{'acc p50':>10}"
        f"{'acc p99':>10}{'p2d p50':>10}{'p2d p99':>10}"
    )
    print(hdr)
    print("-" * len(hdr))
    for name in ("floor", "ingest", "latency"):
        p = r[name]
        lat = p["latency_ms"]
        p2d = p.get("post_to_device_ms") or {}
        non2xx = p["sent"] - p["ok_2xx"] - sum(p["errors"].values())
        print(
            f"{name:<10}{_fmt(p['ok_per_s']):>10}{p['ok_2xx']:>9}{max(0, non2xx):>9}"
            f"{sum(p['errors'].values()):>8}"
            f"{_fmt(lat['p50'], 'ms'):>10}{_fmt(lat['p99'], 'ms'):>10}"
            f"{_fmt(p2d.get('p50'), 'ms'):>10}{_fmt(p2d.get('p99'), 'ms'):>10}"
        )
    hdr = (
        f"\n{'CPU':<10}{'server':>9}{'s. loop':>9}{'loadgen':>9}{'devices':>9}"
        f"{'others':>9}{'machine':>9}"
    )
    print(hdr)
    print("-" * (len(hdr) - 1))
    for name in ("floor", "ingest", "latency"):
        c = r[name]["cpu"]
        print(
            f"{name:<10}{_fmt(c['server_cpu_pct'], '%'):>9}"
            f"{_fmt(c['server_loop_thread_cpu_pct'], '%'):>9}"
            f"{_fmt(c['loadgen_cpu_pct'], '%'):>9}{_fmt(c['receivers_cpu_pct'], '%'):>9}"
            f"{_fmt(c.get('other_processes_cpu_pct'), '%'):>9}"
            f"{_fmt(c['machine_busy_pct'], '%'):>9}"
        )
    print(
        "(ok/s: 2xx answers/s; acc: accept latency; p2d: post-to-device latency. CPU in % of\n"
        " one core over the phase: server process (all threads), its event-loop thread, HTTP\n"
        " load generator, device receivers, every other process, whole machine (max "
        f"{100 * (r['machine']['nproc'] or 1)}%))"
    )
    for name in ("floor", "ingest", "latency"):
        other = r[name]["cpu"].get("other_processes_cpu_pct")
        if other is not None and other > 25:
            print(
                f"WARNING: other processes used {other:.0f}% CPU during {name}: "
                "the machine was not quiet, figures are disturbed"
            )
    wrk = r["floor"].get("wrk")
    if wrk and wrk.get("available"):
        print(f"floor cross-check: wrk -t1 {_fmt(wrk['requests_per_s'])} req/s")
    ing = r["ingest"]
    print(
        f"\ningest: fan-out drained {ing['drain_after_s']}s after the load stopped; "
        f"{_fmt(ing.get('deliveries_per_s_incl_drain'))} deliveries/s overall"
    )
    la = r["latency"]
    print(
        f"latency: {la['accepted_per_s']:.0f} accepted/s of {la['target_rate']} paced; "
        f"worst send lag {la['max_send_lag_ms']} ms; {la['not_sent']} due posts not sent "
        "(all connections busy)"
    )
    lo = r["loss"]
    print(
        f"loss: {lo['accepted_posts']} accepted posts x {lo['devices']} devices = "
        f"{lo['expected_deliveries']} expected, {lo['received']} received, lost {lo['lost']}, "
        f"duplicates {lo['duplicates']}, unexpected {lo['unexpected']} "
        f"(waited {lo['waited_s']}s); device reconnects {lo['reconnects']}"
    )
    if lo["close_reasons"]:
        print(f"  server closed device connections: {lo['close_reasons']}")
    for name in ("floor", "ingest", "latency"):
        if r[name]["errors"] or set(r[name]["statuses"]) - {"200", "201"}:
            print(f"  {name}: statuses {r[name]['statuses']} errors {r[name]['errors']}")
    print_targets(r["targets"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--concurrency", type=int, default=64, help="HTTP connections (default 64)")
    ap.add_argument("--devices", type=int, default=100, help="connected channel devices")
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per load phase")
    ap.add_argument(
        "--max-posts", type=int, default=300_000, help="cap on posts per phase (default 300000)"
    )
    ap.add_argument(
        "--rate", type=float, default=0.0,
        help="posts/s for floor and ingest phases, open-loop paced; 0 = as fast as possible",
    )  # fmt: skip
    ap.add_argument(
        "--latency-rate",
        type=float,
        default=0.0,
        help="paced posts/s, phase 3 (0: half the rate phase 2 reached)",
    )
    ap.add_argument("--latency-duration", type=float, default=5.0, help="seconds of phase 3")
    ap.add_argument("--ack-interval", type=float, default=0.05, help="device ack batching (s)")
    ap.add_argument(
        "--single-frames",
        action="store_true",
        help="devices connect without batch=1: one WebSocket frame per notification",
    )
    ap.add_argument("--drain-timeout", type=float, default=30.0, help="max wait for fan-out")
    ap.add_argument("--server", help="URL of a running loopback server (else start one)")
    ap.add_argument("--user-token", help="account user token for --server")
    ap.add_argument(
        "--wrk-check", action="store_true",
        help="also measure the floor with wrk (if installed) to check the Python client",
    )  # fmt: skip
    add_output_options(ap)
    args = ap.parse_args(argv)
    if args.concurrency < 1 or args.devices < 1 or args.duration <= 0 or args.max_posts < 1:
        ap.error("concurrency, devices, duration and max-posts must be positive")
    if args.latency_rate < 0 or args.latency_duration <= 0:
        ap.error(
            "latency-rate must be 0 (half the saturating rate) or positive, and "
            "latency-duration positive"
        )
    return run_and_report(args, run, print_table)


if __name__ == "__main__":
    sys.exit(main())
