"""``pushgate.serving``: uvicorn with Pushgate's connection limits and WebSocket protocol, on
real sockets. These tests pin the uvicorn internals ``serving/protocols.py`` overrides."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import uvicorn
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from pushgate.observability.logs import logging_config
from pushgate.serving.protocols import ConnectionLimits, QuietWebSocketProtocol, http_protocol
from pushgate.testing.server import free_port

Scope = dict[str, Any]


async def app(scope: Scope, receive: Callable[[], Awaitable[Any]], send: Any) -> None:
    """Echoes the body's length; WebSockets: /deny answers 401, others are accepted and sent
    one message after a pause."""
    if scope["type"] == "lifespan":
        while (message := await receive())["type"] != "lifespan.shutdown":
            await send({"type": message["type"] + ".complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    if scope["type"] == "websocket":
        await receive()
        if scope["path"] == "/deny":
            await send({"type": "websocket.http.response.start", "status": 401, "headers": []})
            await send({"type": "websocket.http.response.body", "body": b"no"})
            return
        await send({"type": "websocket.accept"})
        await asyncio.sleep(float(scope["query_string"] or b"0"))
        await send({"type": "websocket.send", "text": "still here"})
        await receive()
        return
    size = 0
    while scope["path"] != "/early":  # /early answers without reading the body
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        size += len(message.get("body", b""))
        if not message.get("more_body"):
            break
    body = str(size).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


LIMITS = ConnectionLimits(
    max_connections=50, header_timeout=0.6, body_timeout=0.6, max_header_bytes=2048
)


@contextlib.asynccontextmanager
async def serving(limits: ConnectionLimits = LIMITS) -> AsyncIterator[int]:
    port = free_port()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        http=http_protocol(limits),
        ws=QuietWebSocketProtocol,
        timeout_keep_alive=5,
        log_config=logging_config("info"),
        lifespan="on",
    )
    server = uvicorn.Server(config)
    server.capture_signals = contextlib.nullcontext  # type: ignore[assignment,method-assign]
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        yield port
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


async def opened(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


async def close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()


async def read_all(reader: asyncio.StreamReader, timeout: float = 5.0) -> bytes:
    return await asyncio.wait_for(reader.read(), timeout)


async def test_a_connection_that_says_nothing_is_closed() -> None:
    async with serving() as port:
        reader, writer = await opened(port)
        started = time.monotonic()
        assert await read_all(reader) == b""
        assert time.monotonic() - started < 4
        await close(writer)


async def test_headers_sent_too_slowly_get_408() -> None:
    async with serving() as port:
        reader, writer = await opened(port)
        writer.write(b"GET / HTTP/1.1\r\nhost: x\r\n")
        for _ in range(4):  # a header line every 0.1 s, for less than the 0.6 s allowed
            await asyncio.sleep(0.1)
            writer.write(b"x-slow: 1\r\n")
        answer = await read_all(reader)
        assert answer.startswith(b"HTTP/1.1 408 "), answer
        assert b"headers did not arrive within 0.6 s" in answer
        await close(writer)


async def test_headers_over_the_limit_get_431_and_a_body_does_not_count() -> None:
    async with serving() as port:
        reader, writer = await opened(port)
        writer.write(b"GET / HTTP/1.1\r\nhost: x\r\nauthorization: " + b"a" * 3000 + b"\r\n\r\n")
        answer = await read_all(reader)
        assert answer.startswith(b"HTTP/1.1 431 "), answer
        await close(writer)
        reader, writer = await opened(port)
        body = b"b" * 10_000
        writer.write(
            b"POST / HTTP/1.1\r\nhost: x\r\nx-pad: "
            + b"p" * 1500
            + b"\r\ncontent-length: 10000\r\nconnection: close\r\n\r\n"
            + body
        )
        answer = await read_all(reader)
        assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b"10000"), answer
        await close(writer)


async def test_a_body_that_stalls_closes_the_connection() -> None:
    async with serving() as port:
        reader, writer = await opened(port)
        writer.write(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n0123456789")
        assert await read_all(reader) == b""
        await close(writer)


async def test_keep_alive_requests_and_a_trickle_between_them() -> None:
    async with serving() as port:
        reader, writer = await opened(port)
        for _ in range(3):
            writer.write(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert head.startswith(b"HTTP/1.1 200 ")
            assert await reader.readexactly(1) == b"0"
        # Empty lines keep uvicorn's keep-alive timer from firing, not the header deadline.
        closed = False
        for _ in range(30):
            await asyncio.sleep(0.1)
            try:
                writer.write(b"\r\n")
                await writer.drain()
            except ConnectionError:
                closed = True
                break
            if reader.at_eof():
                closed = True
                break
        assert closed or await read_all(reader) == b""
        await close(writer)


async def test_a_body_finished_after_an_early_answer_leaves_a_deadline() -> None:
    async with serving() as port:
        reader, writer = await opened(port)
        writer.write(b"POST /early HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 200 ")
        assert await reader.readexactly(1) == b"0"
        writer.write(b"0123456789")  # the rest of the body: uvicorn's keep-alive timer stops
        assert await read_all(reader) == b""
        await close(writer)


async def test_connections_past_the_limit_get_503() -> None:
    limits = ConnectionLimits(
        max_connections=3, header_timeout=30, body_timeout=30, max_header_bytes=2048
    )
    async with serving(limits) as port:
        held = [await opened(port) for _ in range(3)]
        await asyncio.sleep(0.1)
        reader, writer = await opened(port)
        answer = await read_all(reader)
        assert answer.startswith(b"HTTP/1.1 503 "), answer
        assert b"connection limit" in answer
        await close(writer)
        _, held_writer = held.pop()
        await close(held_writer)
        await asyncio.sleep(0.1)
        reader, writer = await opened(port)
        writer.write(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        assert (await read_all(reader)).startswith(b"HTTP/1.1 200 ")
        await close(writer)
        for _, w in held:
            await close(w)


async def test_websockets_outlive_the_header_deadline() -> None:
    async with serving() as port, connect(f"ws://127.0.0.1:{port}/ws?1.5", proxy=None) as ws:
        assert await asyncio.wait_for(ws.recv(), 5) == "still here"


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


async def test_a_refused_handshake_is_one_quiet_line() -> None:
    records = Records()
    async with serving() as port:
        logging.getLogger("uvicorn").addHandler(records)
        try:
            with pytest.raises(InvalidStatus) as refused:
                async with connect(f"ws://127.0.0.1:{port}/deny?token=dvt_abcdefgh", proxy=None):
                    pass
            assert refused.value.response.status_code == 401
            await asyncio.sleep(0.2)
        finally:
            logging.getLogger("uvicorn").removeHandler(records)
    messages = [(r.levelname, r.getMessage()) for r in records.records]
    assert len(messages) == 1, messages
    level, message = messages[0]
    assert level == "INFO" and '"WebSocket /deny?token=[redacted]" 401' in message
