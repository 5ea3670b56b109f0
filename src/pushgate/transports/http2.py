"""A small HTTP/2 client for APNs: its own framing over asyncio and TLS, HPACK by ``hpack``.

Why our own: APNs speaks HTTP/2 only and wants many requests multiplexed over few long-lived
connections; the general clients we measured were far too slow on this machine (httpx2 ran
~790 HTTP/1.1 requests/s). ``Http2Sender`` implements the ``HttpSender`` protocol:

- per origin (scheme, host, port) a pool of up to ``connections`` connections (default 1),
  opened on demand, each negotiated with ALPN ``h2``;
- many requests in flight per connection, at most the smaller of ``max_streams`` and the
  server's ``SETTINGS_MAX_CONCURRENT_STREAMS``; a request waits for a free stream slot rather
  than failing;
- flow control both ways: request bodies wait for window, received data is acknowledged;
- GOAWAY: the connection takes no new streams; streams above its ``last_stream_id`` were never
  processed and are retried on another connection, streams at or below it finish;
- a connection that drops fails its in-flight requests with ``Http2ConnectionLost`` (a
  ``ConnectionError``), and the next request opens a new connection;
- a timeout per request (``TimeoutError``), covering the wait for a slot and the answer;
- writes are batched: the frames of up to 64 requests (``WRITE_EVERY``), or of one loop turn,
  go out in one ``transport.write``. Writing everything once per loop turn made client and
  server take turns (each idle while the other worked through a burst of hundreds); with
  bursts of 64 they overlap, which doubled the throughput against the fake APNs.

The frames are written and read here (``_Connection``), not by ``h2``: a client that only
sends requests and reads their answers needs SETTINGS, HEADERS (+ CONTINUATION), DATA,
WINDOW_UPDATE, RST_STREAM, PING and GOAWAY, a few struct calls each, where ``h2``'s general
state machines cost ~45 us of CPU per request even with our fixes (most of the APNs transport's
time; docs/performance.md, "Provider delivery"). Header blocks are coded by ``hpack`` through
``h2_overrides.PlainEncoder`` / ``CachingDecoder``: no Huffman, the repeated headers encoded and
decoded once. The ``authorization`` header is HPACK-indexed like any other: an APNs provider
token is the same on every request of a connection, and sending it as a one-byte index instead
of ~200 bytes per request matters at thousands of requests/s. The server side of the fake APNs
stays on ``h2`` (``h2_overrides.H2Protocol``), so the tests check this framing against h2's.
"""

from __future__ import annotations

import asyncio
import ssl
import struct
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import cast

from hpack import HPACKError, NeverIndexedHeaderTuple

from pushgate.transports.base import send_one_by_one
from pushgate.transports.h2_overrides import CachingDecoder, PlainEncoder
from pushgate.transports.http import ProviderRequest, ProviderResponse, provider_ssl_context

RECEIVE_WINDOW = 1 << 20  # per stream
CONNECTION_RECEIVE_WINDOW = 1 << 24
WRITE_EVERY = 64  # requests per write at most: the server starts on them while we go on
MAX_RETRIES = 3  # transparent retries of one request (GOAWAY, REFUSED_STREAM)


class Http2Error(ConnectionError):
    """No answer came over HTTP/2 (the transports count it as ``RetryLater``)."""


class Http2ConnectionLost(Http2Error):
    """The connection closed while the request was in flight."""


class Http2NotOffered(Http2Error):
    """The server chose another protocol than ``h2`` in ALPN (``protocol``: its choice, or
    None when it chose none): it speaks HTTP/1.1 there."""

    def __init__(self, message: str, protocol: str | None) -> None:
        super().__init__(message)
        self.protocol = protocol


class Http2StreamReset(Http2Error):
    """The server reset the request's stream."""


class _Retry(Exception):
    """The request was not processed by the server; send it again on another connection."""


# -- framing (RFC 9113 section 4 and 6) -----------------------------------------------------

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS = 0x0, 0x1, 0x2, 0x3, 0x4
PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = 0x5, 0x6, 0x7, 0x8, 0x9
END_STREAM = ACK = 0x1
END_HEADERS = 0x4
PADDED = 0x8
PRIORITY_FLAG = 0x20
SETTINGS_HEADER_TABLE_SIZE = 0x1
SETTINGS_ENABLE_PUSH = 0x2
SETTINGS_MAX_CONCURRENT_STREAMS = 0x3
SETTINGS_INITIAL_WINDOW_SIZE = 0x4
SETTINGS_MAX_FRAME_SIZE = 0x5
NO_ERROR, PROTOCOL_ERROR, REFUSED_STREAM, CANCEL = 0x0, 0x1, 0x7, 0x8
DEFAULT_WINDOW = 65_535
DEFAULT_MAX_FRAME = 16_384  # ours (we never raise it) and the server's until it says more
MAX_STREAM_ID = (1 << 31) - 1
_ERROR_NAMES = {
    0x0: "NO_ERROR",
    0x1: "PROTOCOL_ERROR",
    0x2: "INTERNAL_ERROR",
    0x3: "FLOW_CONTROL_ERROR",
    0x4: "SETTINGS_TIMEOUT",
    0x5: "STREAM_CLOSED",
    0x6: "FRAME_SIZE_ERROR",
    0x7: "REFUSED_STREAM",
    0x8: "CANCEL",
    0x9: "COMPRESSION_ERROR",
    0xA: "CONNECT_ERROR",
    0xB: "ENHANCE_YOUR_CALM",
    0xC: "INADEQUATE_SECURITY",
    0xD: "HTTP_1_1_REQUIRED",
}

_HEAD = struct.Struct(">IBI")  # (length << 8 | type), flags, stream id: the 9-byte header
_U32 = struct.Struct(">I")
_TWO_U32 = struct.Struct(">II")
_SETTING = struct.Struct(">HI")
_pack_head = _HEAD.pack
_unpack_head = _HEAD.unpack_from


def frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    """One frame: its 9-byte header and ``payload``."""
    return _pack_head(len(payload) << 8 | kind, flags, stream_id) + payload


def settings_frame(values: dict[int, int]) -> bytes:
    return frame(SETTINGS, 0, 0, b"".join(_SETTING.pack(k, v) for k, v in values.items()))


def error_name(code: int) -> str:
    return _ERROR_NAMES.get(code, str(code))


class _ProtocolError(Exception):
    """The server broke the protocol: the connection is dropped."""


# -- one connection -------------------------------------------------------------------------


class _Stream:
    __slots__ = ("future", "deadline", "status", "headers", "body", "window", "unacked")

    def __init__(
        self, future: asyncio.Future[ProviderResponse], deadline: float, window: int
    ) -> None:
        self.future = future
        self.deadline = deadline
        self.status = 0
        self.headers: dict[str, str] = {}
        self.body = b""
        self.window = window  # what the server lets us send on it
        self.unacked = 0  # received on it and not yet given back (WINDOW_UPDATE)


class _Connection(asyncio.Protocol):
    """One HTTP/2 connection: its framing, its streams, its writes."""

    def __init__(self, pool: _Pool, max_streams: int) -> None:
        self._pool = pool
        self._loop = pool.loop
        self._max_streams = max_streams
        self.transport: asyncio.Transport | None = None
        self.streams: dict[int, _Stream] = {}
        self.capacity = 1  # until the server's SETTINGS say more
        self.accepting = False  # takes new streams
        self.closed = False
        self.goaway_received = False
        self.settled: asyncio.Future[None] = self._loop.create_future()
        self.lost: asyncio.Future[None] = self._loop.create_future()
        self._encoder = PlainEncoder()
        self._decoder = CachingDecoder()
        self._out: list[bytes] = []  # frames to write at the next flush
        self._next_stream_id = 1
        # the server's settings, and what it lets us send
        self._peer_max_streams = 1 << 32
        self._peer_window = DEFAULT_WINDOW  # a new stream's window
        self._peer_max_frame = DEFAULT_MAX_FRAME
        self._send_window = DEFAULT_WINDOW  # the connection's
        self._unacked = 0  # received on the connection and not yet given back
        self._buffer = b""
        self._block: bytearray | None = None  # a header block waiting for CONTINUATION
        self._block_stream = 0
        self._block_end = False
        self._blocked: dict[int, memoryview] = {}  # request bodies waiting for window
        self._flush_scheduled = False
        self._unsent = 0  # requests started since the last write
        self._sweep: asyncio.TimerHandle | None = None  # expires streams past their deadline
        self._sweep_at = 0.0

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # (uvloop's is not a subclass)
        self.transport.write(
            PREFACE
            + settings_frame(
                {
                    SETTINGS_ENABLE_PUSH: 0,
                    SETTINGS_INITIAL_WINDOW_SIZE: RECEIVE_WINDOW,
                    SETTINGS_MAX_CONCURRENT_STREAMS: 0,  # we accept no pushed streams
                }
            )
            + frame(WINDOW_UPDATE, 0, 0, _U32.pack(CONNECTION_RECEIVE_WINDOW))
        )

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer + data if self._buffer else data
        size = len(buffer)
        at = 0
        try:
            while size - at >= 9:
                kind_length, flags, stream_id = _unpack_head(buffer, at)
                length = kind_length >> 8
                if length > DEFAULT_MAX_FRAME:
                    raise _ProtocolError(f"a frame of {length} bytes (FRAME_SIZE_ERROR)")
                end = at + 9 + length
                if end > size:
                    break
                self._frame(
                    kind_length & 0xFF, flags, stream_id & MAX_STREAM_ID, buffer[at + 9 : end]
                )
                at = end
                if self.closed:
                    return
        except (_ProtocolError, HPACKError, struct.error) as exc:
            self._abort(f"HTTP/2 protocol error from the server: {exc}")
            return
        self._buffer = buffer[at:] if at < size else b""
        if self._unacked >= CONNECTION_RECEIVE_WINDOW // 2:
            self._out.append(frame(WINDOW_UPDATE, 0, 0, _U32.pack(self._unacked)))
            self._unacked = 0
        self._flush()

    def _frame(self, kind: int, flags: int, stream_id: int, payload: bytes) -> None:
        if self._block is not None and kind != CONTINUATION:
            raise _ProtocolError("a header block without its CONTINUATION")
        if kind == HEADERS:
            if not stream_id:
                raise _ProtocolError("HEADERS on stream 0")
            start, stop = 0, len(payload)
            if flags & PADDED:
                start, stop = 1, stop - payload[0]
            if flags & PRIORITY_FLAG:
                start += 5
            if start > stop:
                raise _ProtocolError("HEADERS padding larger than the frame")
            fragment = payload[start:stop]
            if flags & END_HEADERS:
                self._headers(stream_id, fragment, bool(flags & END_STREAM))
            else:
                self._block = bytearray(fragment)
                self._block_stream = stream_id
                self._block_end = bool(flags & END_STREAM)
        elif kind == DATA:
            self._data(flags, stream_id, payload)
        elif kind == CONTINUATION:
            block = self._block
            if block is None or stream_id != self._block_stream:
                raise _ProtocolError("an unexpected CONTINUATION")
            block += payload
            if flags & END_HEADERS:
                self._block = None
                self._headers(stream_id, bytes(block), self._block_end)
        elif kind == RST_STREAM:
            if len(payload) != 4:
                raise _ProtocolError("RST_STREAM of the wrong size")
            self._on_reset(stream_id, _U32.unpack(payload)[0])
        elif kind == SETTINGS:
            if not flags & ACK:
                self._settings(payload)
        elif kind == WINDOW_UPDATE:
            if len(payload) != 4:
                raise _ProtocolError("WINDOW_UPDATE of the wrong size")
            increment = _U32.unpack(payload)[0] & MAX_STREAM_ID
            if not stream_id:
                self._send_window += increment
            else:
                stream = self.streams.get(stream_id)
                if stream is None:
                    return
                stream.window += increment
            if self._blocked:
                self._send_blocked()
        elif kind == PING:
            if len(payload) != 8:
                raise _ProtocolError("PING of the wrong size")
            if not flags & ACK:
                self._out.append(frame(PING, ACK, 0, payload))
        elif kind == GOAWAY:
            if len(payload) < 8:
                raise _ProtocolError("GOAWAY too short")
            self._on_goaway(_TWO_U32.unpack_from(payload)[0] & MAX_STREAM_ID)
        elif kind == PUSH_PROMISE:
            raise _ProtocolError("PUSH_PROMISE, with push disabled")
        # PRIORITY and unknown kinds are ignored (RFC 9113 section 4.1 and 5.5)

    def _headers(self, stream_id: int, block: bytes, end_stream: bool) -> None:
        headers = self._decoder.decode(block, raw=True)  # always: the HPACK state moves on
        stream = self.streams.get(stream_id)
        if stream is None:
            return
        for name, value in headers:
            if name == b":status":
                status = int(value)
                if status < 200:  # an informational answer (1xx): the real one follows
                    return
                stream.status = status
            else:
                stream.headers[bytes(name).decode("latin-1")] = bytes(value).decode("latin-1")
        if end_stream:
            self._on_end(stream_id)

    def _data(self, flags: int, stream_id: int, payload: bytes) -> None:
        if not stream_id:
            raise _ProtocolError("DATA on stream 0")
        length = len(payload)
        self._unacked += length
        stream = self.streams.get(stream_id)
        if stream is None:
            return
        if flags & PADDED:
            if not length or payload[0] >= length:
                raise _ProtocolError("DATA padding larger than the frame")
            payload = payload[1 : length - payload[0]]
        if payload:
            stream.body += payload
        if flags & END_STREAM:
            self._on_end(stream_id)
            return
        stream.unacked += length
        if stream.unacked >= RECEIVE_WINDOW // 2:
            self._out.append(frame(WINDOW_UPDATE, 0, stream_id, _U32.pack(stream.unacked)))
            stream.unacked = 0

    def _settings(self, payload: bytes) -> None:
        if len(payload) % 6:
            raise _ProtocolError("SETTINGS of the wrong size")
        for at in range(0, len(payload), 6):
            code, value = _SETTING.unpack_from(payload, at)
            if code == SETTINGS_MAX_CONCURRENT_STREAMS:
                self._peer_max_streams = value
            elif code == SETTINGS_INITIAL_WINDOW_SIZE:
                if value > MAX_STREAM_ID:
                    raise _ProtocolError("SETTINGS_INITIAL_WINDOW_SIZE too large")
                delta = value - self._peer_window
                self._peer_window = value
                for stream in self.streams.values():
                    stream.window += delta
            elif code == SETTINGS_MAX_FRAME_SIZE:
                if not DEFAULT_MAX_FRAME <= value <= (1 << 24) - 1:
                    raise _ProtocolError("SETTINGS_MAX_FRAME_SIZE out of range")
                self._peer_max_frame = value
            elif code == SETTINGS_HEADER_TABLE_SIZE:
                self._encoder.header_table_size = value
        self._out.append(frame(SETTINGS, ACK, 0))
        if self._blocked:
            self._send_blocked()
        self._on_settings()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(None)
        self._closed(f"the connection to the server closed{f' ({exc})' if exc else ''}")

    # requests
    def start(self, headers: list[tuple[bytes, bytes]], body: bytes, deadline: float) -> _Stream:
        """Open a stream for one request; its future answers."""
        stream_id = self._next_stream_id
        if stream_id > MAX_STREAM_ID:
            raise Http2Error("the connection has used all its stream ids")
        self._next_stream_id = stream_id + 2
        out = self._out
        block = self._encoder.encode(headers)
        flags = 0 if body else END_STREAM
        max_frame = self._peer_max_frame
        if len(block) <= max_frame:
            out.append(_pack_head(len(block) << 8 | HEADERS, flags | END_HEADERS, stream_id))
            out.append(block)
        else:
            chunks = [block[at : at + max_frame] for at in range(0, len(block), max_frame)]
            for index, chunk in enumerate(chunks):
                kind = HEADERS if index == 0 else CONTINUATION
                last = END_HEADERS if index == len(chunks) - 1 else 0
                out.append(frame(kind, (flags if index == 0 else 0) | last, stream_id, chunk))
        stream = _Stream(self._loop.create_future(), deadline, self._peer_window)
        self.streams[stream_id] = stream
        if stream_id + 2 > MAX_STREAM_ID:
            self.accepting = False
            self._pool.forget(self)
        if self._sweep is None or deadline < self._sweep_at:
            self._schedule_sweep(deadline)
        if body:
            size = len(body)
            if (
                not self._blocked
                and size <= max_frame
                and size <= stream.window
                and size <= self._send_window
            ):
                out.append(_pack_head(size << 8 | DATA, END_STREAM, stream_id))
                out.append(body)
                stream.window -= size
                self._send_window -= size
            else:
                self._blocked[stream_id] = memoryview(body)
                self._send_blocked()
        if len(self.streams) >= self.capacity:
            self.accepting = False
        self._unsent += 1
        if self._unsent >= WRITE_EVERY:
            self._flush()
        elif not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)
        return stream

    def cancel(self, stream: _Stream) -> None:
        """The caller gave up on ``stream`` (cancelled): reset it."""
        for stream_id, known in self.streams.items():
            if known is stream:
                self._finish(stream_id)
                self._reset(stream_id, CANCEL)
                return

    def _send_blocked(self) -> None:
        """Send what the flow-control windows allow of the request bodies still to send."""
        done = []
        for stream_id, rest in self._blocked.items():
            stream = self.streams.get(stream_id)
            if stream is None:
                done.append(stream_id)
                continue
            while rest:
                window = min(stream.window, self._send_window, self._peer_max_frame)
                if window <= 0:
                    break
                chunk = rest[:window]
                rest = rest[window:]
                self._out.append(frame(DATA, 0 if rest else END_STREAM, stream_id, chunk.tobytes()))
                stream.window -= len(chunk)
                self._send_window -= len(chunk)
            if rest:
                self._blocked[stream_id] = rest
            else:
                done.append(stream_id)
        for stream_id in done:
            del self._blocked[stream_id]

    def _flush(self) -> None:
        self._flush_scheduled = False
        self._unsent = 0
        out = self._out
        if not out:
            return
        data = b"".join(out)
        out.clear()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    # events
    def _on_end(self, stream_id: int) -> None:
        stream = self._finish(stream_id)
        if stream is not None and not stream.future.done():
            stream.future.set_result(ProviderResponse(stream.status, stream.headers, stream.body))

    def _on_reset(self, stream_id: int, code: int) -> None:
        stream = self._finish(stream_id)
        if stream is None or stream.future.done():
            return
        if code == REFUSED_STREAM:
            stream.future.set_exception(_Retry())
        else:
            stream.future.set_exception(
                Http2StreamReset(f"the server reset the stream ({error_name(code)})")
            )

    def _on_settings(self) -> None:
        self.capacity = max(1, min(self._max_streams, self._peer_max_streams))
        if not self.settled.done():
            self.settled.set_result(None)
        if not self.closed and not self.goaway_received and self._next_stream_id <= MAX_STREAM_ID:
            self.accepting = len(self.streams) < self.capacity
            if self.accepting:
                self._pool.wake(everyone=True)

    def _on_goaway(self, last: int) -> None:
        self.goaway_received = True
        self.accepting = False
        for stream_id in [sid for sid in self.streams if sid > last]:
            stream = self._finish(stream_id)
            if stream is not None and not stream.future.done():
                stream.future.set_exception(_Retry())
        self._pool.forget(self)
        if not self.streams:
            self.close()
        if not self.settled.done():
            self.settled.set_exception(Http2Error("the server refused the connection (GOAWAY)"))
            self.settled.exception()

    def _schedule_sweep(self, when: float) -> None:
        if self._sweep is not None:
            self._sweep.cancel()
        self._sweep_at = when
        self._sweep = self._loop.call_at(when, self._expire)

    def _expire(self) -> None:
        """Fail the streams past their deadline (one timer per connection, not per stream:
        it fires at the earliest deadline)."""
        self._sweep = None
        now = self._loop.time()
        late = [stream_id for stream_id, s in self.streams.items() if s.deadline <= now]
        for stream_id in late:
            stream = self._finish(stream_id)
            if stream is not None:
                self._reset(stream_id, CANCEL)
                if not stream.future.done():
                    stream.future.set_exception(TimeoutError("no answer in time"))
        if self.streams:
            self._schedule_sweep(min(stream.deadline for stream in self.streams.values()))

    def _reset(self, stream_id: int, code: int) -> None:
        self._out.append(frame(RST_STREAM, 0, stream_id, _U32.pack(code)))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _finish(self, stream_id: int) -> _Stream | None:
        """Forget a stream; a slot is free again."""
        stream = self.streams.pop(stream_id, None)
        if stream is None:
            return None
        if self._blocked and self._blocked.pop(stream_id, None) is not None:
            self._reset(stream_id, CANCEL)  # its body will not be sent: close it
        if self.goaway_received or self.closed or self._next_stream_id > MAX_STREAM_ID:
            if not self.streams:
                self.close()
        elif len(self.streams) < self.capacity and self._next_stream_id <= MAX_STREAM_ID:
            if not self.accepting:
                self.accepting = True
            self._pool.wake()
        return stream

    # closing
    def _abort(self, why: str) -> None:
        if self.transport is not None:
            self.transport.abort()
        self._closed(why)

    def _closed(self, why: str) -> None:
        if self.closed:
            return
        self.closed = True
        self.accepting = False
        self._pool.discard(self)
        if not self.settled.done():
            self.settled.set_exception(Http2ConnectionLost(why))
            self.settled.exception()  # retrieved: the opener may have given up already
        streams, self.streams = self.streams, {}
        self._blocked.clear()
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        for stream in streams.values():
            if not stream.future.done():
                stream.future.set_exception(Http2ConnectionLost(why))

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            if not self.goaway_received:
                self._out.append(frame(GOAWAY, 0, 0, _TWO_U32.pack(0, NO_ERROR)))
            self._flush()
            self.transport.close()
        self._closed("the sender closed the connection")


# -- a pool per origin ----------------------------------------------------------------------


class _Pool:
    """The connections to one origin."""

    def __init__(self, sender: Http2Sender, scheme: str, authority: str) -> None:
        self.loop = asyncio.get_running_loop()
        self._sender = sender
        self.authority = authority.encode("ascii")
        self.scheme = scheme.encode("ascii")
        host, _, port = authority.rpartition(":")
        if not host or not port.isdigit():
            host, port = authority, "443" if scheme == "https" else "80"
        self._host = host.strip("[]")
        self._port = int(port)
        self._tls = scheme == "https"
        self.connections: list[_Connection] = []
        self._all: set[_Connection] = set()  # including those draining after GOAWAY
        self._connecting: asyncio.Future[None] | None = None
        self._waiters: deque[asyncio.Future[None]] = deque()

    def pick(self) -> _Connection | None:
        """A connection with a free stream slot, if one is at hand now."""
        connections = self.connections
        if len(connections) == 1:
            connection = connections[0]
            if connection.accepting:
                return connection
            return None
        best = None
        for connection in connections:
            if connection.accepting and (
                best is None or len(connection.streams) < len(best.streams)
            ):
                best = connection
        return best

    async def acquire(self) -> _Connection:
        """A connection with a free stream slot: at hand, newly opened, or once one frees."""
        woken = False
        while True:
            connection = self.pick()
            if connection is not None and not self.should_grow(connection):
                return connection
            if self._connecting is None and len(self.connections) < (
                self._sender.connections_per_origin
            ):
                connecting = self._connecting = self.loop.create_future()
                try:
                    await self._connect()
                except BaseException as exc:
                    if isinstance(exc, asyncio.CancelledError):
                        exc = Http2Error("opening the connection was abandoned")
                    connecting.set_exception(exc)
                    connecting.exception()  # retrieved: nobody else may be waiting
                    raise
                else:
                    connecting.set_result(None)
                finally:
                    self._connecting = None
                self.wake(everyone=True)
                continue
            if connection is not None:
                return connection
            if self._connecting is not None:
                await asyncio.shield(self._connecting)
                continue
            waiter = self.loop.create_future()
            if woken:  # woken before but the slot went elsewhere: first in line again
                self._waiters.appendleft(waiter)
            else:
                self._waiters.append(waiter)
            try:
                await waiter
            finally:
                if not waiter.done():
                    waiter.cancel()
            woken = True

    async def _connect(self) -> None:
        sender = self._sender
        connection = _Connection(self, sender.max_streams)
        await self.loop.create_connection(
            lambda: connection,
            self._host,
            self._port,
            ssl=sender.ssl_context if self._tls else None,
            server_hostname=self._host if self._tls else None,
        )
        transport = connection.transport
        assert transport is not None
        self._all.add(connection)
        if self._tls:
            ssl_object = transport.get_extra_info("ssl_object")
            protocol = ssl_object.selected_alpn_protocol() if ssl_object is not None else None
            if protocol != "h2":
                connection.close()
                raise Http2NotOffered(
                    f"{self._host}:{self._port} does not speak HTTP/2 (ALPN chose {protocol!r})",
                    protocol,
                )
        try:
            await connection.settled
        except BaseException:
            connection.close()
            raise
        if connection.closed:
            raise Http2ConnectionLost("the connection closed while opening")
        self.connections.append(connection)

    def should_grow(self, connection: _Connection) -> bool:
        """Open another connection rather than add a stream to this busy one."""
        return (
            self._connecting is None
            and len(self.connections) < self._sender.connections_per_origin
            and bool(connection.streams)
        )

    @property
    def waiting(self) -> bool:
        """Requests wait for a slot (new ones queue behind them)."""
        return bool(self._waiters)

    def discard(self, connection: _Connection) -> None:
        """``connection`` is closed."""
        self.forget(connection)
        self._all.discard(connection)

    def wake(self, *, everyone: bool = False) -> None:
        """A stream slot is free (``everyone``: many may be, or a connection went)."""
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                if not everyone:
                    return

    def forget(self, connection: _Connection) -> None:
        """``connection`` takes no more streams (GOAWAY, closed)."""
        if connection in self.connections:
            self.connections.remove(connection)
        self.wake(everyone=True)  # they may open a new connection

    def close(self) -> list[asyncio.Future[None]]:
        """Close every connection; the futures resolve when they are closed."""
        connections = list(self._all)
        for connection in connections:
            connection.close()
        self.connections.clear()
        self._all.clear()
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(Http2Error("the sender closed"))
        return [connection.lost for connection in connections]


def split_url(url: str) -> tuple[str, str, str]:
    """(scheme, authority, path) of a URL; the pools are per (scheme, authority)."""
    scheme, _, rest = url.partition("://")
    slash = rest.find("/")
    authority, path = (rest, "/") if slash < 0 else (rest[:slash], rest[slash:])
    return scheme, authority, path


class Http2Sender:
    """HTTP/2 with TLS (ALPN ``h2``) and multiplexed requests; see the module docstring.

    ``ssl_context`` (default: ``provider_ssl_context(ca_file)``) gets ALPN ``h2`` set on it, so
    do not share it with HTTP/1.1 clients. ``connections``: the pool size per origin;
    ``max_streams``: requests in flight per connection at most (also never more than the
    server allows); ``timeout_seconds``: per request, from ``send`` to the answer; ``alpn``:
    the protocols offered in the TLS handshake, ``h2`` first (a server that picks another
    one fails the connection with ``Http2NotOffered``)."""

    def __init__(
        self,
        *,
        ca_file: Path | None = None,
        ssl_context: ssl.SSLContext | None = None,
        timeout_seconds: float = 10.0,
        connections: int = 1,
        max_streams: int = 1000,
        alpn: Sequence[str] = ("h2",),
    ) -> None:
        if connections < 1 or max_streams < 1:
            raise ValueError("connections and max_streams must be at least 1")
        if not alpn or alpn[0] != "h2":
            raise ValueError("alpn must offer h2 first")
        context = ssl_context or provider_ssl_context(ca_file)
        context.set_alpn_protocols(list(alpn))
        self.ssl_context = context
        self.timeout_seconds = timeout_seconds
        self.connections_per_origin = connections
        self.max_streams = max_streams
        self._pools: dict[tuple[str, str], _Pool] = {}
        self._fields: dict[tuple[tuple[str, str], ...], list[tuple[bytes, bytes]]] = {}

    def _prepare(self, request: ProviderRequest) -> tuple[_Pool, list[tuple[bytes, bytes]]]:
        """The request's pool (made on first use) and its header list."""
        url = request.url
        scheme, authority, path = split_url(url)
        pool = self._pools.get((scheme, authority))
        if pool is None:
            if scheme not in ("https", "http"):
                raise ValueError(f"not an http(s) URL: {url}")
            pool = self._pools[(scheme, authority)] = _Pool(self, scheme, authority)
        fields_key = tuple(request.headers.items())
        fields = self._fields.get(fields_key)
        if fields is None:  # (a batch's requests share their headers: encoded once)
            fields = [
                (name.lower().encode("ascii"), value.encode("utf-8")) for name, value in fields_key
            ]
            if len(self._fields) >= 64:
                self._fields.clear()
            self._fields[fields_key] = fields
        headers = [
            (b":method", request.method.encode("ascii")),
            (b":scheme", pool.scheme),
            (b":authority", pool.authority),
            NeverIndexedHeaderTuple(b":path", path.encode("ascii")),
            *fields,
        ]
        return pool, headers

    async def send(self, request: ProviderRequest) -> ProviderResponse:
        pool, headers = self._prepare(request)
        deadline = pool.loop.time() + self.timeout_seconds
        return await self._send(pool, headers, request.body, deadline, MAX_RETRIES + 1)

    async def _send(
        self,
        pool: _Pool,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        deadline: float,
        tries: int,
    ) -> ProviderResponse:
        for _ in range(tries):
            connection = pool.pick()
            if connection is None or pool.waiting or pool.should_grow(connection):
                async with asyncio.timeout_at(deadline):
                    connection = await pool.acquire()
            stream = connection.start(headers, body, deadline)
            try:
                return await stream.future
            except _Retry:
                continue
            except asyncio.CancelledError:
                connection.cancel(stream)
                raise
        raise Http2Error("the server refused the request on every try (GOAWAY/REFUSED_STREAM)")

    async def send_all(
        self, requests: Sequence[ProviderRequest], concurrency: int
    ) -> list[ProviderResponse | Exception]:
        """Each request's answer, or the exception ``send`` raises for it, in order. The
        requests that find a free stream slot now are started at once, with no task or
        coroutine of their own (a batch of APNs pushes: one per device); the others go
        through ``send``, at most ``concurrency`` at a time."""
        results: list[ProviderResponse | Exception | None] = [None] * len(requests)
        started: list[tuple[int, _Connection, _Stream, _Pool, list[tuple[bytes, bytes]]]] = []
        later: list[int] = []
        for index, request in enumerate(requests):
            if later:  # no slot for an earlier one: none for this one either
                later.append(index)
                continue
            try:
                pool, headers = self._prepare(request)
            except Exception as exc:
                results[index] = exc
                continue
            connection = pool.pick()
            if connection is None or pool.waiting or pool.should_grow(connection):
                later.append(index)
                continue
            deadline = pool.loop.time() + self.timeout_seconds
            stream = connection.start(headers, request.body, deadline)
            started.append((index, connection, stream, pool, headers))

        rest = (
            asyncio.ensure_future(
                send_one_by_one(self.send, [requests[index] for index in later], concurrency)
            )
            if later
            else None
        )
        try:
            for index, _connection, stream, pool, headers in started:
                try:
                    results[index] = await stream.future
                except _Retry:  # not processed (GOAWAY, REFUSED_STREAM): the tries left
                    try:
                        results[index] = await self._send(
                            pool, headers, requests[index].body, stream.deadline, MAX_RETRIES
                        )
                    except Exception as exc:
                        results[index] = exc
                except Exception as exc:
                    results[index] = exc
            if rest is not None:
                for index, answer in zip(later, await rest, strict=True):
                    results[index] = answer
        except asyncio.CancelledError:
            for _, connection, stream, _, _ in started:
                future = stream.future
                if future.done() and not future.cancelled():
                    future.exception()  # retrieved: nobody will await it now
                else:  # (the one awaited was cancelled with this task)
                    connection.cancel(stream)
            if rest is not None:
                rest.cancel()
            raise
        return [result if result is not None else Http2Error("no answer") for result in results]

    def streams_in_flight(self) -> int:
        """Requests sent and not answered yet, over every connection (for monitoring)."""
        return sum(
            len(connection.streams)
            for pool in self._pools.values()
            for connection in pool.connections
        )

    async def close(self) -> None:
        pools, self._pools = self._pools, {}
        closing = [lost for pool in pools.values() for lost in pool.close()]
        if closing:
            await asyncio.wait(closing, timeout=2.0)


__all__ = [
    "Http2ConnectionLost",
    "Http2Error",
    "Http2NotOffered",
    "Http2Sender",
    "Http2StreamReset",
]
