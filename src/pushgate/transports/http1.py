"""A lean HTTP/1.1 client for the HTTP/1.1 providers (FCM, HMS, Web Push): ``Http1Sender``.

An ``HttpSender`` written straight on asyncio and ``httptools``, because aiohttp's request
machinery cost ~150-180 µs of CPU per request on this project's 2-core machine, about half of
what the server spent per delivery (it replaced aiohttp here).

- a keep-alive pool per origin (scheme, host, port), at most ``max_connections`` open per
  origin: a request takes the most recently used idle connection, else opens one while under
  the limit, else waits (first come, first served) until one is free;
- one request at a time per connection (no pipelining); a request goes out in one write of
  ``METHOD path HTTP/1.1``, ``host``, ``content-length``, the request's own headers, the body;
- the answer is read whole: status, lower-case header names (repeated headers joined with
  ``", "``), the body by ``content-length``, chunked, or until the server closes;
  ``Connection: close`` or an HTTP/1.0 answer closes the connection after it;
- one deadline per request (``timeout_seconds``) covers waiting for a connection, opening it
  and the answer: ``TimeoutError`` when it passes (the connection is dropped: its answer would
  belong to nobody). Answers and waits for a free connection are timed by one ticker per
  sender, every tenth of the timeout (at most every second), not by a timer per request (2 µs
  each with uvloop, more through ``asyncio.timeout``): a timeout fires up to that much late;
- a connection lost before the whole answer came raises ``Http1ConnectionLost`` (a
  ``ConnectionError``); when it was a reused keep-alive connection and not one byte of the
  answer had arrived, the server had most likely closed it while idle, and the request is
  sent again once on a fresh connection; a request on a new connection is never sent twice;
- connections idle for 60 s are closed; ``close()`` closes every connection (a later ``send``
  opens new ones);
- with an ``egress`` policy (for URLs that clients or credentials supply), a new connection
  resolves the host itself, checks every address against the policy (``EgressRefused``
  otherwise) and connects to a checked address, with TLS still verified for the host name.

Not supported, as no provider needs them: ``HEAD`` (its answer announces a body it does not
carry), ``Expect: 100-continue``, proxies, redirects (answers are returned as they are),
credentials in URLs.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ssl
from pathlib import Path
from urllib.parse import urlsplit

import httptools

from pushgate.egress import EgressPolicy
from pushgate.transports.http import ProviderRequest, ProviderResponse, provider_ssl_context

IDLE_SECONDS = 60.0
_TICK_SECONDS = 1.0  # at most; a tenth of the timeout when that is shorter
_CLOSE_WAIT_SECONDS = 2.0
_DEFAULT_PORTS = {"http": 80, "https": 443}
_SET_BY_SENDER = frozenset(("host", "content-length", "transfer-encoding"))


class Http1Error(ConnectionError):
    """No usable answer came: transports count it as a connection failure (RetryLater)."""


class Http1ConnectionLost(Http1Error):
    """The connection closed before the whole answer arrived."""

    def __init__(self, message: str, *, answer_started: bool) -> None:
        super().__init__(message)
        self.answer_started = answer_started


class Http1ProtocolError(Http1Error):
    """The server's answer was not valid HTTP/1.1."""


class _Connection(asyncio.Protocol):
    """One keep-alive connection; parses answers and hands them to the waiting request."""

    __slots__ = (
        "_body",
        "_headers",
        "_loop",
        "_lost_waiter",
        "_parser",
        "_pool",
        "_status",
        "answer_started",
        "usable",
        "deadline",
        "future",
        "idle_since",
        "lost",
        "requests",
        "transport",
    )

    def __init__(self, pool: _Pool) -> None:
        self._pool = pool
        self._loop = pool.loop
        self._parser = httptools.HttpResponseParser(self)
        self._headers: dict[str, str] = {}
        self._body: bytes | bytearray = b""
        self._status = 0
        self._lost_waiter: asyncio.Future[None] | None = None
        self.transport: asyncio.Transport | None = None
        self.future: asyncio.Future[ProviderResponse] | None = None
        self.answer_started = False
        self.usable = True  # holds one of the pool's slots; False once closing or lost
        self.lost = False
        self.requests = 0
        self.idle_since = 0.0
        self.deadline = 0.0

    # -- the request side -----------------------------------------------------------------

    def start(self, data: bytes, deadline: float) -> asyncio.Future[ProviderResponse]:
        future = self._loop.create_future()
        self.future = future
        self.answer_started = False
        self.requests += 1
        self.deadline = deadline  # watched by the sender's ticker: no timer per request
        self.transport.write(data)  # type: ignore[union-attr]
        return future

    def abandon(self) -> None:
        """The request was cancelled while in flight: its answer would belong to nobody."""
        self.future = None
        self._drop()

    def timed_out(self) -> None:
        self._fail(TimeoutError("no answer in time"))
        self._drop()

    def _fail(self, exc: BaseException) -> None:
        future, self.future = self.future, None
        if future is not None and not future.done():
            future.set_exception(exc)

    def _drop(self) -> None:
        if self.transport is not None:
            self.transport.abort()
        self._pool.forget(self)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
        self._pool.forget(self)

    async def closed(self) -> None:
        if not self.lost:
            self._lost_waiter = self._loop.create_future()
            await self._lost_waiter

    # -- asyncio.Protocol -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._pool.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        pool = self._pool
        pool.connections.discard(self)
        if self.future is None:
            with contextlib.suppress(ValueError):
                pool.idle.remove(self)
        elif self._status and self._reads_until_close():
            self._complete(keep_alive=False)
        else:
            why = f": {exc}" if exc is not None else ""
            self._fail(
                Http1ConnectionLost(
                    f"the server closed the connection before answering{why}",
                    answer_started=self.answer_started,
                )
            )
        pool.forget(self)
        if self._lost_waiter is not None and not self._lost_waiter.done():
            self._lost_waiter.set_result(None)

    def data_received(self, data: bytes) -> None:
        if self.future is None:  # nobody asked: the connection cannot be trusted any more
            self.close()
            return
        self.answer_started = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(Http1ProtocolError(f"invalid HTTP answer: {exc}"))
            self._drop()
        except httptools.HttpParserUpgrade:
            self._fail(Http1ProtocolError("the server switched protocols"))
            self._drop()

    def eof_received(self) -> bool | None:
        return None  # close the transport; connection_lost settles the request

    # -- httptools callbacks --------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.future is None:  # a second answer in the same read: the server is confused
            raise Http1ProtocolError("an answer nobody asked for")
        self._headers = {}
        self._body = b""
        self._status = 0

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        headers = self._headers
        if key in headers:
            headers[key] = f"{headers[key]}, {text}"
        else:
            headers[key] = text

    def on_headers_complete(self) -> None:
        self._status = self._parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        if not self._body:
            self._body = body
        elif isinstance(self._body, bytearray):
            self._body += body
        else:
            self._body = bytearray(self._body) + body

    def on_message_complete(self) -> None:
        if 100 <= self._status < 200:  # an interim answer; the real one follows
            return
        parser = self._parser
        self._complete(keep_alive=parser.should_keep_alive() and parser.get_http_version() != "1.0")

    def _complete(self, *, keep_alive: bool) -> None:
        future, self.future = self.future, None
        body = self._body
        response = ProviderResponse(
            self._status, self._headers, body if type(body) is bytes else bytes(body)
        )
        if future is not None and not future.done():
            future.set_result(response)
        if keep_alive and self.usable:
            self._pool.release(self)
        else:
            self.close()

    def _reads_until_close(self) -> bool:
        """The answer has no length: its body ends where the connection does."""
        headers = self._headers
        return (
            "content-length" not in headers
            and "transfer-encoding" not in headers
            and self._status not in (204, 304)
        )


class _Pool:
    """The connections to one origin, and the requests waiting for one of them."""

    __slots__ = (
        "closed",
        "connections",
        "egress",
        "host",
        "host_header",
        "idle",
        "limit",
        "loop",
        "open",
        "port",
        "server_hostname",
        "ssl",
        "waiters",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        origin: str,
        tls: ssl.SSLContext | None,
        limit: int,
        egress: EgressPolicy | None = None,
    ) -> None:
        parts = urlsplit(origin)
        scheme = parts.scheme.lower()
        if scheme not in _DEFAULT_PORTS:
            raise ValueError(f"not an http(s) URL: {origin!r}")
        if parts.hostname is None or parts.username is not None:
            raise ValueError(f"no usable host in {origin!r}")
        self.loop = loop
        self.host = parts.hostname
        self.port = parts.port or _DEFAULT_PORTS[scheme]
        self.host_header = parts.netloc
        self.ssl = tls if scheme == "https" else None
        self.server_hostname = self.host if self.ssl is not None else None
        self.limit = limit
        self.egress = egress
        self.closed = False
        self.open = 0  # connections open or being opened
        self.idle: list[_Connection] = []
        self.connections: set[_Connection] = set()
        # (deadline, waiter): the ticker fails a waiter past its deadline (``tick``).
        self.waiters: collections.deque[tuple[float, asyncio.Future[_Connection | None]]] = (
            collections.deque()
        )

    def release(self, connection: _Connection) -> None:
        """A connection finished its request and may serve the next one."""
        if self.closed:
            connection.close()
            return
        waiters = self.waiters
        while waiters:
            _, waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(connection)
                return
        connection.idle_since = self.loop.time()
        self.idle.append(connection)

    def forget(self, connection: _Connection) -> None:
        """A connection will serve no more requests: its slot goes to the next waiter."""
        if connection.usable:
            connection.usable = False
            self.open -= 1
            self.slot_freed()

    def slot_freed(self) -> None:
        waiters = self.waiters
        while waiters:
            _, waiter = waiters.popleft()
            if not waiter.done():
                self.open += 1
                waiter.set_result(None)  # None: open a connection of your own
                return

    def give_back(self, got: _Connection | None) -> None:
        """A waiter was granted a connection (or a slot) it will not use."""
        if got is None:
            self.open -= 1
            self.slot_freed()
        elif not got.usable:
            pass  # already forgotten
        else:
            self.release(got)

    async def acquire(self, deadline: float) -> _Connection:
        idle = self.idle
        while idle:
            connection = idle.pop()
            if connection.usable:
                return connection
        if self.open < self.limit:
            self.open += 1
            return await self.connect(deadline)
        waiter: asyncio.Future[_Connection | None] = self.loop.create_future()
        self.waiters.append((deadline, waiter))
        try:
            got = await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self.give_back(waiter.result())
            else:
                waiter.cancel()
            raise
        if got is None:
            return await self.connect(deadline)
        return got

    async def connect(self, deadline: float) -> _Connection:
        """Open a connection in a slot already counted in ``open``."""
        connection = _Connection(self)
        try:
            async with asyncio.timeout_at(deadline):
                if self.egress is None:
                    hosts = [self.host]
                else:
                    hosts = await self.egress.resolve(self.host, self.port)
                for number, host in enumerate(hosts, 1):
                    try:
                        await self.loop.create_connection(
                            lambda: connection,
                            host,
                            self.port,
                            ssl=self.ssl,
                            server_hostname=self.server_hostname,
                        )
                        break
                    except OSError:
                        if number == len(hosts):
                            raise
        except BaseException:
            self.forget(connection)  # gives the slot back, once, whatever became of it
            raise
        if self.closed:  # the sender was closed meanwhile
            connection.close()
            raise Http1Error("the sender was closed")
        return connection

    def tick(self, now: float) -> None:
        """Time out answers past their deadline; close connections idle for too long."""
        for connection in list(self.connections):
            if connection.future is not None and connection.deadline <= now:
                connection.timed_out()
        for deadline, waiter in self.waiters:
            if deadline <= now and not waiter.done():
                waiter.set_exception(TimeoutError("no connection came free in time"))
        before = now - IDLE_SECONDS
        if self.idle and self.idle[0].idle_since <= before:
            keep = []
            for connection in self.idle:
                if connection.idle_since <= before:
                    connection.close()
                else:
                    keep.append(connection)
            self.idle[:] = keep

    def fail_waiters(self, exc: BaseException) -> None:
        while self.waiters:
            _, waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_exception(exc)


class Http1Sender:
    """HTTP/1.1 with keep-alive, up to ``max_connections`` per origin; see the module doc."""

    def __init__(
        self,
        *,
        ca_file: Path | None,
        timeout_seconds: float,
        max_connections: int,
        egress: EgressPolicy | None = None,
    ) -> None:
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self._egress = egress
        self._ssl = provider_ssl_context(ca_file)
        self._ssl.set_alpn_protocols(["http/1.1"])
        self._timeout = timeout_seconds
        self._max_connections = max_connections
        self._pools: dict[str, _Pool] = {}
        self._ticker: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def send(self, request: ProviderRequest) -> ProviderResponse:
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout
        url = request.url
        origin, path = _split(url)
        pool = self._pools.get(origin)
        if pool is None:
            pool = self._pools[origin] = _Pool(
                loop, origin, self._ssl, self._max_connections, self._egress
            )
        if self._ticker is None:
            self._ticker = loop.call_later(self._tick_seconds(), self._tick)
        data = _encode(request, path, pool.host_header)
        retried = False
        while True:
            connection = await pool.acquire(deadline)
            if not connection.usable:  # closed while being handed over: nothing was sent
                continue
            future = connection.start(data, deadline)
            try:
                return await future
            except Http1ConnectionLost as exc:
                if retried or connection.requests < 2 or exc.answer_started:
                    raise
            except asyncio.CancelledError:
                if connection.future is future:
                    connection.abandon()
                raise
            retried = True  # a stale keep-alive connection: once more on another one

    async def close(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None
        pools, self._pools = list(self._pools.values()), {}
        self._loop = None
        connections: list[_Connection] = []
        for pool in pools:
            pool.closed = True
            pool.fail_waiters(Http1Error("the sender was closed"))
            pool.idle.clear()
            for connection in list(pool.connections):
                connection._fail(Http1ConnectionLost("the sender was closed", answer_started=True))
                connection.close()
                connections.append(connection)
        if connections:
            waits = [asyncio.ensure_future(c.closed()) for c in connections]
            _, pending = await asyncio.wait(waits, timeout=_CLOSE_WAIT_SECONDS)
            for waiting in pending:
                waiting.cancel()
            for connection in connections:
                if not connection.lost and connection.transport is not None:
                    connection.transport.abort()
            if pending:
                await asyncio.wait(pending)
                await asyncio.sleep(0)  # let the aborted transports report their loss

    def _tick_seconds(self) -> float:
        return max(0.01, min(_TICK_SECONDS, self._timeout / 10))

    def _tick(self) -> None:
        """Runs while any connection is open or being waited for, every tenth of the timeout
        (at most every second): a request's timeout fires up to that much late."""
        loop = self._loop
        assert loop is not None
        now = loop.time()
        busy = False
        for pool in self._pools.values():
            pool.tick(now)
            busy = busy or pool.open > 0 or bool(pool.waiters)
        self._ticker = loop.call_later(self._tick_seconds(), self._tick) if busy else None

    def open_connections(self, url: str) -> int:
        """Connections open (or being opened) to ``url``'s origin; for tests and metrics."""
        pool = self._pools.get(_split(url)[0])
        return 0 if pool is None else pool.open


def _split(url: str) -> tuple[str, str]:
    """``(origin, request target)``: ``https://h:1/p?q#f`` gives ``("https://h:1", "/p?q")``."""
    start = url.find("://")
    if start < 0:
        raise ValueError(f"not an absolute URL: {url!r}")
    start += 3
    end = len(url)
    for mark in "/?#":
        found = url.find(mark, start, end)
        if found >= 0:
            end = found
    path = url[end:]
    fragment = path.find("#")
    if fragment >= 0:
        path = path[:fragment]
    if not path.startswith("/"):
        path = "/" + path
    return url[:end], path


_HEADER_BLOCKS: dict[tuple[str, tuple[tuple[str, str], ...]], str] = {}
_HEADER_BLOCKS_MAX = 256


def _header_block(host: str, headers: dict[str, str]) -> str:
    """The caller's header lines (those the sender sets left out), checked for line breaks
    (and ``host`` too); kept for the next request with the same headers (a batch's requests
    share theirs: only the path and the body differ)."""
    key = (host, tuple(headers.items()))
    block = _HEADER_BLOCKS.get(key)
    if block is None:
        lines = [
            f"{name}: {value}\r\n"
            for name, value in headers.items()
            if name.lower() not in _SET_BY_SENDER
        ]
        block = "".join(lines)
        if (
            block.count("\n") != len(lines)
            or block.count("\r") != len(lines)
            or "\n" in host
            or "\r" in host
        ):
            raise ValueError("a line break in the request line or a header")
        if len(_HEADER_BLOCKS) >= _HEADER_BLOCKS_MAX:
            _HEADER_BLOCKS.clear()
        _HEADER_BLOCKS[key] = block
    return block


def _encode(request: ProviderRequest, path: str, host: str) -> bytes:
    body = request.body
    method = request.method
    if "\n" in path or "\r" in path or "\n" in method or "\r" in method:
        raise ValueError("a line break in the request line or a header")
    block = _header_block(host, request.headers)
    if body or method not in ("GET", "HEAD", "DELETE", "OPTIONS"):
        head = (
            f"{method} {path} HTTP/1.1\r\nhost: {host}\r\n"
            f"content-length: {len(body)}\r\n{block}\r\n"
        )
    else:
        head = f"{method} {path} HTTP/1.1\r\nhost: {host}\r\n{block}\r\n"
    return head.encode("latin-1") + body
