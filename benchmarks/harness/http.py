"""HTTP clients for benchmarks: one blocking request for set-up, and raw asyncio keep-alive
connections (pre-formatted HTTP/1.1 requests, responses with Content-Length) for load."""

from __future__ import annotations

import asyncio
import http.client
import socket
import time
import urllib.parse
from collections import Counter
from typing import Any

import orjson

from benchmarks.harness import HarnessError
from benchmarks.harness.machine import cpu_seconds_pid


def http_request(
    method: str, base: str, path: str, headers: dict[str, str], body: bytes | None,
    timeout: float = 30,
) -> tuple[int, Any]:  # fmt: skip
    """One request on a fresh connection: (status, JSON body, or its text, or None). A body
    is sent as ``application/json``."""
    u = urllib.parse.urlsplit(base)
    conn = http.client.HTTPConnection(u.hostname or "127.0.0.1", u.port or 80, timeout=timeout)
    try:
        hdrs = {"Content-Type": "application/json", **headers} if body is not None else headers
        conn.request(method, path, body=body, headers=hdrs)
        resp = conn.getresponse()
        raw = resp.read()
        try:
            data: Any = orjson.loads(raw) if raw else None
        except ValueError:
            data = raw.decode(errors="replace")
        return resp.status, data
    finally:
        conn.close()


def check(status: int, data: Any, what: str, ok: tuple[int, ...] = (200, 201)) -> Any:
    """``data`` when ``status`` is one of ``ok`` and the body is no error; else HarnessError:
    ``check(*http_request(...), "what it was")``."""
    if status not in ok:
        raise HarnessError(f"{what}: HTTP {status}: {data!r}")
    if isinstance(data, dict) and data.get("error") is True:
        raise HarnessError(f"{what}: {data!r}")
    return data


def post_json(base: str, path: str, headers: dict[str, str], body: Any, timeout: float = 30) -> Any:
    """POST ``body`` as JSON; the answer's JSON, checked with ``check``."""
    return check(*http_request("POST", base, path, headers, orjson.dumps(body), timeout), path)


def header(head: bytes, name: bytes) -> str | None:
    """Value of a header in a lower-cased response head, or None."""
    key = b"\r\n" + name.lower() + b":"
    i = head.find(key)
    if i < 0:
        return None
    j = head.find(b"\r\n", i + len(key))
    return head[i + len(key) : j if j >= 0 else len(head)].strip().decode("latin-1")


def raw_post(path: str, headers: dict[str, str], body: bytes) -> bytes:
    """A complete ``POST`` request to send on a ``StatusConn`` (JSON unless ``headers`` name
    another Content-Type)."""
    head = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1"]
    if not any(k.lower() == "content-type" for k in headers):
        head.append("Content-Type: application/json")
    head += [f"{k}: {v}" for k, v in headers.items()]
    head.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


class _Conn(asyncio.Protocol):
    """One HTTP/1.1 keep-alive connection with at most one request in flight."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.waiter: asyncio.Future[Any] | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        i = buf.find(b"\r\n\r\n")
        if i >= 0:
            self._response(i, bytes(buf[:i]).lower())

    def _response(self, i: int, head: bytes) -> None:
        """The head of a response (lower-cased) has come, ending at ``buf[i]``; answer when
        the body is complete too."""
        raise NotImplementedError

    def _answer(self, result: Any) -> None:
        w, self.waiter = self.waiter, None
        if w is not None and not w.done():
            w.set_result(result)

    def _fail(self, exc: BaseException) -> None:
        self.closed = True
        w, self.waiter = self.waiter, None
        if w is not None and not w.done():
            w.set_exception(exc)
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._fail(exc or ConnectionError("connection closed by server"))

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class StatusConn(_Conn):
    """The load generators' connection: ``request(raw)`` resolves to the status only (the
    least parsing per response, so the client costs little next to the server)."""

    def _response(self, i: int, head: bytes) -> None:
        buf = self.buf
        j = head.find(b"\ncontent-length:")
        if j < 0:
            self._fail(ConnectionError(f"response without content-length: {head[:200]!r}"))
            return
        k = head.find(b"\r", j + 16)
        length = int(head[j + 16 : k if k >= 0 else len(head)])
        total = i + 4 + length
        if len(buf) < total:
            return
        status = int(head[9:12])
        del buf[:total]
        if b"\nconnection: close" in head:
            self.closed = True
        self._answer(status)

    def request(self, data: bytes) -> asyncio.Future[int]:
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.waiter = fut
        assert self.transport is not None
        self.transport.write(data)
        return fut


class ResponseConn(_Conn):
    """``request(raw)`` resolves to (status, lower-cased head, body)."""

    def _response(self, i: int, head: bytes) -> None:
        buf = self.buf
        length = header(head, b"content-length")
        if length is None:
            self._fail(ConnectionError(f"response without content-length: {head[:200]!r}"))
            return
        total = i + 4 + int(length)
        if len(buf) < total:
            return
        body = bytes(buf[i + 4 : total])
        del buf[:total]
        if header(head, b"connection") == "close":
            self.closed = True
        self._answer((int(head[9:12]), head, body))

    def request(self, data: bytes) -> asyncio.Future[tuple[int, bytes, bytes]]:
        if self.closed or self.transport is None:
            raise ConnectionError("connection closed")
        fut: asyncio.Future[tuple[int, bytes, bytes]] = asyncio.get_running_loop().create_future()
        self.waiter = fut
        self.transport.write(data)
        return fut


class HttpPool:
    """At most ``size`` keep-alive ``ResponseConn`` connections to one loopback server."""

    def __init__(self, host: str, port: int, size: int) -> None:
        self.host = host
        self.port = port
        self.idle: list[ResponseConn] = []
        self.sem = asyncio.Semaphore(size)
        self.opened = 0

    async def _conn(self) -> ResponseConn:
        while self.idle:
            conn = self.idle.pop()
            if not conn.closed:
                return conn
        _, proto = await asyncio.get_running_loop().create_connection(
            ResponseConn, self.host, self.port
        )
        self.opened += 1
        return proto

    def build(self, method: str, path: str, headers: dict[str, str], body: bytes | None) -> bytes:
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        if body is not None:
            lines.append("Content-Type: application/json")
            lines.append(f"Content-Length: {len(body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")

    async def send(self, raw: bytes, timeout: float = 30.0) -> tuple[int, bytes, bytes]:
        async with self.sem:
            conn = await self._conn()
            try:
                result = await asyncio.wait_for(conn.request(raw), timeout)
            except BaseException:
                conn.close()
                raise
            if conn.closed:
                conn.close()
            else:
                self.idle.append(conn)
            return result

    async def request(
        self,
        method: str,
        path: str,
        headers: dict[str, str],
        body: bytes | None = None,
        timeout: float = 30.0,
    ) -> tuple[int, bytes, bytes]:
        return await self.send(self.build(method, path, headers, body), timeout)

    def close(self) -> None:
        for conn in self.idle:
            conn.close()
        self.idle = []


async def closed_loop(
    port: int, requests: list[bytes], concurrency: int, duration: float, max_requests: int
) -> tuple[Counter[int], float]:
    """Send the raw requests round-robin on ``concurrency`` keep-alive connections to
    127.0.0.1:port, each as soon as the previous answer came, for ``duration`` seconds or
    ``max_requests`` requests; the status counts (0: connection failed) and the seconds."""
    loop = asyncio.get_running_loop()
    statuses: Counter[int] = Counter()
    state = {"next": 0}
    started = time.perf_counter()
    deadline = started + duration

    async def worker() -> None:
        _, conn = await loop.create_connection(StatusConn, "127.0.0.1", port)
        while time.perf_counter() < deadline and state["next"] < max_requests:
            n = state["next"]
            state["next"] += 1
            try:
                status = await asyncio.wait_for(conn.request(requests[n % len(requests)]), 30)
            except (ConnectionError, OSError, TimeoutError):
                statuses[0] += 1
                _, conn = await loop.create_connection(StatusConn, "127.0.0.1", port)
                continue
            statuses[status] += 1
        if conn.transport is not None:
            conn.transport.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return statuses, time.perf_counter() - started


def closed_loop_phase(
    port: int,
    pid: int | None,
    requests: list[bytes],
    concurrency: int,
    duration: float,
    max_requests: int,
) -> tuple[Counter[int], float, float, int]:
    """``closed_loop`` in an event loop of its own, with the CPU the server (``pid``) used
    meanwhile: (statuses, seconds, server CPU seconds, answers 200 or 201)."""
    cpu_before = cpu_seconds_pid(pid) or 0.0
    statuses, elapsed = asyncio.run(
        closed_loop(port, requests, concurrency, duration, max_requests)
    )
    cpu = (cpu_seconds_pid(pid) or 0.0) - cpu_before
    return statuses, elapsed, cpu, statuses.get(200, 0) + statuses.get(201, 0)
