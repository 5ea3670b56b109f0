"""The ground the fake provider servers stand on: a server on a loopback port, served from its
own event loop in a background thread (so sync and async tests can use it alike), with TLS
from ``pushgate.testing.tls``; and a small HTTP/1.1 server for fakes that answer one request at
a time with full control over the connection (answer, or drop it without a word).

    async def handle(request: FakeRequest) -> FakeResponse | Drop:
        return FakeResponse(200, b'{"ok":true}', {"content-type": "application/json"})

    with FakeHttpServer(handle) as server:
        server.url      # https://127.0.0.1:PORT
        server.ca_file  # trust this CA to reach it
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import httptools

from pushgate.testing.tls import local_ca


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop comes with uvicorn[standard]
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class BackgroundServer(ABC):
    """Runs ``_start_server`` on a loop of its own in a daemon thread; ``start``/``stop`` (or
    ``with``) from any thread. ``call`` runs a coroutine on the server's loop."""

    alpn: tuple[str, ...] = ("http/1.1",)

    def __init__(self, *, tls: bool = True, port: int = 0) -> None:
        self._tls = tls
        self._port = port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.AbstractServer | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self.port = 0

    @property
    def url(self) -> str:
        scheme = "https" if self._tls else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    @property
    def ca_file(self) -> Path:
        return local_ca().ca_file

    def ssl_context(self) -> ssl.SSLContext | None:
        return local_ca().server_context(self.alpn) if self._tls else None

    @abstractmethod
    async def _start_server(self, ssl_context: ssl.SSLContext | None) -> asyncio.AbstractServer:
        """Listen on 127.0.0.1:self._port."""

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name=type(self).__name__, daemon=True)
        self._thread.start()
        self._ready.wait(10)
        if self._error is not None:
            raise RuntimeError(f"{type(self).__name__} did not start") from self._error
        if not self._ready.is_set():
            raise RuntimeError(f"{type(self).__name__} did not start within 10 s")

    def _run(self) -> None:
        loop = self._loop = _new_loop()
        asyncio.set_event_loop(loop)
        try:
            self._server = loop.run_until_complete(self._start_server(self.ssl_context()))
            sockets: Any = getattr(self._server, "sockets", ())
            self.port = sockets[0].getsockname()[1]
        except BaseException as exc:  # noqa: BLE001 - reported to start()
            self._error = exc
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            self._server.close()
            with contextlib.suppress(Exception):
                loop.run_until_complete(self._shutdown())
            # Handlers still running (a slow answer in a test) end here, not at close.
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _shutdown(self) -> None:  # noqa: B027 - optional hook
        """Close open connections; called on the server's loop when stopping."""

    def stop(self) -> None:
        if self._thread is None or self._loop is None:
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._thread = None

    def call(self, coroutine: Awaitable[Any], timeout: float = 10.0) -> Any:
        """Run ``coroutine`` on the server's loop and wait for its result."""
        assert self._loop is not None, "the server is not running"
        future = asyncio.run_coroutine_threadsafe(_awaited(coroutine), self._loop)
        return future.result(timeout)

    def __enter__(self) -> Any:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> Any:
        await asyncio.to_thread(self.start)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await asyncio.to_thread(self.stop)


async def _awaited(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


def wait_until(
    predicate: Callable[[], bool], timeout: float = 10.0, interval: float = 0.01
) -> bool:
    """Poll ``predicate`` until it holds (True) or ``timeout`` passes (False)."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


async def wait_until_async(
    predicate: Callable[[], bool],
    timeout: float = 10.0,  # noqa: ASYNC109
    interval: float = 0.01,
) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(interval)


# -- HTTP/1.1 ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FakeRequest:
    method: str
    target: str  # path and query as sent
    headers: dict[str, str]  # lower-case names
    body: bytes

    @property
    def path(self) -> str:
        return urlsplit(self.target).path

    @property
    def query(self) -> str:
        return urlsplit(self.target).query


@dataclass(frozen=True, slots=True)
class FakeResponse:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


class Drop:
    """Returned by a handler: close the connection without answering."""


DROP = Drop()

Handler = Callable[[FakeRequest], Awaitable[FakeResponse | Drop]]


class _Http1Connection(asyncio.Protocol):
    def __init__(self, server: FakeHttpServer) -> None:
        self._server = server
        self._parser = httptools.HttpRequestParser(self)
        self._transport: Any = None  # asyncio.Transport, or uvloop's
        self._url = bytearray()
        self._headers: dict[str, str] = {}
        self._body = bytearray()
        self._requests: asyncio.Queue[FakeRequest | None] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport
        self._server._connections.add(transport)
        self._worker = asyncio.get_running_loop().create_task(self._answer())

    def connection_lost(self, exc: Exception | None) -> None:
        if self._transport is not None:
            self._server._connections.discard(self._transport)
        self._requests.put_nowait(None)

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            self._write(FakeResponse(400, b"bad request"), close=True)

    # httptools callbacks
    def on_message_begin(self) -> None:
        self._url = bytearray()
        self._headers = {}
        self._body = bytearray()

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_body(self, body: bytes) -> None:
        self._body += body

    def on_message_complete(self) -> None:
        method = self._parser.get_method().decode("ascii")
        self._requests.put_nowait(
            FakeRequest(method, self._url.decode("latin-1"), self._headers, bytes(self._body))
        )

    async def _answer(self) -> None:
        while True:
            request = await self._requests.get()
            if request is None or self._transport is None or self._transport.is_closing():
                return
            try:
                answer = await self._server._handler(request)
            except Exception as exc:  # noqa: BLE001 - a fake answers 500 like a broken server
                answer = FakeResponse(500, f"fake server error: {exc!r}".encode())
            if isinstance(answer, Drop):
                self._transport.close()
                return
            closing = request.headers.get("connection", "").lower() == "close"
            self._write(answer, close=closing)
            if closing:
                return

    def _write(self, response: FakeResponse, *, close: bool) -> None:
        if self._transport is None or self._transport.is_closing():
            return
        try:
            phrase = HTTPStatus(response.status).phrase
        except ValueError:
            phrase = "Unknown"
        head = [f"HTTP/1.1 {response.status} {phrase}", f"content-length: {len(response.body)}"]
        head.extend(f"{name}: {value}" for name, value in response.headers.items())
        if close:
            head.append("connection: close")
        self._transport.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + response.body)
        if close:
            self._transport.close()


class FakeHttpServer(BackgroundServer):
    """An HTTP/1.1 server (keep-alive, TLS by default) answering with ``handler``; with
    ``http2`` it offers ``h2`` too and answers over HTTP/2 the connections that choose it
    (``testing/fake_h2.py``)."""

    def __init__(
        self, handler: Handler, *, tls: bool = True, port: int = 0, http2: bool = False
    ) -> None:
        super().__init__(tls=tls, port=port)
        self._handler = handler
        self._connections: set[Any] = set()
        self.http2 = http2 and tls
        self.http2_requests = 0  # requests that arrived over HTTP/2
        if self.http2:
            self.alpn = ("h2", "http/1.1")

    async def _start_server(self, ssl_context: ssl.SSLContext | None) -> asyncio.AbstractServer:
        loop = asyncio.get_running_loop()
        factory: Callable[[], asyncio.Protocol] = lambda: _Http1Connection(self)  # noqa: E731
        if self.http2:
            from pushgate.testing.fake_h2 import ByAlpn

            factory = lambda: ByAlpn(self)  # noqa: E731
        return await loop.create_server(
            factory, "127.0.0.1", self._port, ssl=ssl_context, backlog=1024
        )

    async def _shutdown(self) -> None:
        for transport in list(self._connections):
            transport.close()

    def drop_connections(self) -> None:
        """Close every open connection now (a provider restarting)."""

        async def close_all() -> None:
            await self._shutdown()

        self.call(close_all())
