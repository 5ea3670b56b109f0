"""A small HTTP/2 client for APNs, on the ``h2`` protocol library over asyncio and TLS.

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

The ``authorization`` header is HPACK-indexed like any other (h2 marks it never-indexed by
default): an APNs provider token is the same on every request of a connection, and sending it
as a one-byte index instead of ~200 bytes per request matters at thousands of requests/s.

``H2Protocol`` is h2's connection with fixes shared with ``pushgate.testing.fake_apns``:
counting open streams without scanning every stream on each new one (h2 scans, which costs
O(streams in flight) per request); GOAWAY that lets in-flight streams finish (h2 closes its
whole state machine on GOAWAY, sent or received); and HPACK that encodes a request's repeated
headers once and decodes them once (they are the same table indexes on every request). These
override h2 4.4 internals (``_open_streams``, ``_receive_goaway_frame``, ``_closed_streams``,
``_data_to_send``); ``tests/unit/test_http2.py`` checks them against h2 and hpack.

Measured on the project's 2-core machine, 250 requests in flight: h2's own work per request
on the client side ~46 us with these fixes, ~90 us without; end to end against ``FakeApns``
in another process ~70 us of client CPU per request.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections import deque
from pathlib import Path
from typing import Any, cast

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    Event,
    RemoteSettingsChanged,
    ResponseReceived,
    StreamEnded,
    StreamReset,
    TrailersReceived,
    WindowUpdated,
)
from h2.exceptions import H2Error
from h2.settings import SettingCodes
from hpack import Decoder, Encoder, NeverIndexedHeaderTuple
from hyperframe.frame import Frame, GoAwayFrame

from pushgate.transports.http import ProviderRequest, ProviderResponse, provider_ssl_context

RECEIVE_WINDOW = 1 << 20  # per stream
CONNECTION_RECEIVE_WINDOW = 1 << 24
WRITE_EVERY = 64  # requests per write at most: the server starts on them while we go on
MAX_RETRIES = 3  # transparent retries of one request (GOAWAY, REFUSED_STREAM)


class Http2Error(ConnectionError):
    """No answer came over HTTP/2 (the transports count it as ``RetryLater``)."""


class Http2ConnectionLost(Http2Error):
    """The connection closed while the request was in flight."""


class Http2StreamReset(Http2Error):
    """The server reset the request's stream."""


class _Retry(Exception):
    """The request was not processed by the server; send it again on another connection."""


# -- h2 with two fixes ----------------------------------------------------------------------


class _PlainEncoder(Encoder):
    """HPACK without Huffman coding of literals: the only literals left are values unique to
    one message (a request's path, a response's ``apns-id``), sent once, so coding them costs
    more time than the few bytes it saves. Send those as ``NeverIndexedHeaderTuple`` so they
    stay out of the dynamic table, which then holds the repeated headers only."""

    def __init__(self) -> None:
        super().__init__()
        self._last: tuple[Any, ...] | None = None
        self._parts = (b"", b"")
        self._table_mark: tuple[int, int] = (0, 0)

    def encode(self, headers: Any, huffman: bool = True) -> bytes:
        """As HPACK does; a block like the previous one but for its one never-indexed header
        reuses the previous encoding of the others when the dynamic table has not changed
        since (then they are all table indexes, the same bytes again)."""
        items = list(headers)
        position = -1
        for index, item in enumerate(items):
            if isinstance(item, NeverIndexedHeaderTuple):
                if position >= 0:
                    self._last = None
                    return super().encode(items, huffman=False)
                position = index
        if position < 0 or self.header_table.resized:  # (a size change must lead the block)
            self._last = None
            return super().encode(items, huffman=False)
        unique = super().encode([items[position]], huffman=False)  # changes no table
        key = (position, *items[:position], *items[position + 1 :])
        mark = self._mark()
        if key == self._last and self._table_mark == mark:
            before, after = self._parts
            return before + unique + after
        # Encoded in two parts around the unique header (the same block as in one go); when
        # that changed nothing in the table, the parts are what the next such block sends.
        before = super().encode(items[:position], huffman=False)
        after = super().encode(items[position + 1 :], huffman=False)
        if self._mark() == mark:
            self._last, self._parts, self._table_mark = key, (before, after), mark
        else:
            self._last = None
        return before + unique + after

    def _mark(self) -> tuple[int, int]:
        entries = self.header_table.dynamic_entries
        return (len(entries), id(entries[0]) if entries else 0)


class _CachingDecoder(Decoder):
    """HPACK decoding with a shortcut for the blocks ``_PlainEncoder`` sends: one-byte table
    indexes around at most one never-indexed literal. Indexes are decoded once and reused
    while the dynamic table stays the same; anything else is decoded as HPACK does."""

    def __init__(self) -> None:
        super().__init__()
        self._indexed: dict[int, Any] = {}
        self._indexed_mark: tuple[int, int, int] = (0, 0, 0)

    def decode(self, data: Any, raw: bool = False) -> Any:
        if raw:
            fast = self._shortcut(bytes(data))
            if fast is not None:
                return fast
        return super().decode(data, raw)

    def _shortcut(self, block: bytes) -> list[Any] | None:
        table = self.header_table
        entries = table.dynamic_entries
        mark = (len(entries), id(entries[0]) if entries else 0, table.maxsize)
        if mark != self._indexed_mark:
            self._indexed.clear()
            self._indexed_mark = mark
        indexed = self._indexed
        headers: list[Any] = []
        literal = False
        size = len(block)
        at = 0
        while at < size:
            byte = block[at]
            if byte >= 0x80:  # an indexed field, its index in one byte unless 0xFF
                if byte == 0xFF:
                    return None
                header = indexed.get(byte)
                if header is None:
                    [header] = super().decode(block[at : at + 1], raw=True)
                    indexed[byte] = header
                headers.append(header)
                at += 1
                continue
            # One never-indexed literal (0001xxxx; it changes no table): its name index in
            # one byte (0: the name follows as a string), then its value as a string.
            if literal or byte & 0xF0 != 0x10 or byte == 0x1F:
                return None
            end = at + 1
            for _ in range(2 if byte == 0x10 else 1):  # (name and) value
                if end >= size or block[end] & 0x7F == 0x7F:
                    return None
                end += 1 + (block[end] & 0x7F)
            if end > size:
                return None
            headers.extend(super().decode(block[at:end], raw=True))
            literal = True
            at = end
        return headers


class H2Protocol(H2Connection):
    """``H2Connection`` that counts open streams cheaply and survives GOAWAY gracefully.

    Call ``stream_closed(stream_id)`` for every stream that has ended or been reset (both
    sides did: the stream is closed); ``_open_streams`` then counts the remaining ones without
    a scan. A full scan still runs every 256 counts, so a stream closed some other way is
    forgotten eventually (until then the count is too high, never too low)."""

    def __init__(self, config: H2Configuration) -> None:
        super().__init__(config)
        self.encoder = _PlainEncoder()
        self.decoder = _CachingDecoder()
        self.decoder.max_header_list_size = self.DEFAULT_MAX_HEADER_LIST_SIZE
        self._maybe_closed: list[int] = []
        self._counts = 0
        self.goaway_received: ConnectionTerminated | None = None

    def stream_closed(self, stream_id: int) -> None:
        self._maybe_closed.append(stream_id)

    def _open_streams(self, remainder: int) -> int:
        self._counts += 1
        streams = self.streams
        if len(streams) < 32 or not self._counts & 255:
            self._maybe_closed.clear()
            return super()._open_streams(remainder)
        if self._maybe_closed:
            closed = self._closed_streams
            for stream_id in self._maybe_closed:
                stream = streams.get(stream_id)
                if stream is not None and stream.closed:
                    del streams[stream_id]
                    closed[stream_id] = stream.closed_by
            self._maybe_closed.clear()
        # Each side here opens streams of one parity only (no server push): every stream in
        # the table is of the kind being counted, open or closed in a way not yet seen.
        return len(streams)

    def _receive_goaway_frame(self, frame: GoAwayFrame) -> tuple[list[Frame], list[Event]]:
        # h2 moves the connection to CLOSED here, which refuses the answers of the streams
        # the server promised to finish. Report the GOAWAY and keep the streams going; the
        # caller opens no new streams.
        event = ConnectionTerminated()
        try:
            event.error_code = ErrorCodes(frame.error_code)
        except ValueError:
            event.error_code = frame.error_code
        event.last_stream_id = frame.last_stream_id
        event.additional_data = frame.additional_data or None
        self.goaway_received = event
        return [], [event]

    def graceful_goaway(self, last_stream_id: int, error_code: int = 0) -> None:
        """Queue a GOAWAY frame without closing h2's state, so streams up to
        ``last_stream_id`` can still be answered (server side)."""
        frame = GoAwayFrame(stream_id=0, last_stream_id=last_stream_id, error_code=error_code)
        self._data_to_send += frame.serialize()


def h2_config(*, client_side: bool) -> H2Configuration:
    """Headers as bytes, no per-header normalisation or validation (we build them lower-case
    and well-formed; it is a large share of h2's time per request)."""
    return H2Configuration(
        client_side=client_side,
        header_encoding=None,
        validate_outbound_headers=False,
        normalize_outbound_headers=False,
        validate_inbound_headers=False,
        normalize_inbound_headers=False,
    )


# -- one connection -------------------------------------------------------------------------


class _Stream:
    __slots__ = ("future", "deadline", "status", "headers", "body")

    def __init__(self, future: asyncio.Future[ProviderResponse], deadline: float) -> None:
        self.future = future
        self.deadline = deadline
        self.status = 0
        self.headers: dict[str, str] = {}
        self.body = b""


class _Connection(asyncio.Protocol):
    """One HTTP/2 connection: its h2 state, its streams, its writes."""

    def __init__(self, pool: _Pool, max_streams: int) -> None:
        self._pool = pool
        self._loop = pool.loop
        self._max_streams = max_streams
        self.h2 = H2Protocol(h2_config(client_side=True))
        self.transport: asyncio.Transport | None = None
        self.streams: dict[int, _Stream] = {}
        self.capacity = 1  # until the server's SETTINGS say more
        self.accepting = False  # takes new streams
        self.closed = False
        self.settled: asyncio.Future[None] = self._loop.create_future()
        self.lost: asyncio.Future[None] = self._loop.create_future()
        self._blocked: dict[int, memoryview] = {}  # request bodies waiting for window
        self._flush_scheduled = False
        self._unsent = 0  # requests started since the last write
        self._sweep: asyncio.TimerHandle | None = None  # expires streams past their deadline
        self._sweep_at = 0.0

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # (uvloop's is not a subclass)
        h2 = self.h2
        h2.initiate_connection()
        h2.update_settings(
            {
                SettingCodes.ENABLE_PUSH: 0,
                SettingCodes.INITIAL_WINDOW_SIZE: RECEIVE_WINDOW,
                SettingCodes.MAX_CONCURRENT_STREAMS: 0,  # we accept no pushed streams
            }
        )
        h2.increment_flow_control_window(CONNECTION_RECEIVE_WINDOW)
        self.transport.write(h2.data_to_send())

    def data_received(self, data: bytes) -> None:
        try:
            events = self.h2.receive_data(data)
        except H2Error as exc:
            self._abort(f"HTTP/2 protocol error from the server: {exc}")
            return
        h2 = self.h2
        for event in events:
            kind = type(event)
            if kind is ResponseReceived or kind is TrailersReceived:
                self._on_headers(event)  # type: ignore[arg-type]
            elif kind is DataReceived:
                assert isinstance(event, DataReceived)
                stream = self.streams.get(event.stream_id)
                if stream is not None and event.data:
                    stream.body += event.data
                if event.flow_controlled_length:
                    h2.acknowledge_received_data(
                        event.flow_controlled_length,
                        event.stream_id,
                    )
            elif kind is StreamEnded:
                self._on_end(event.stream_id)  # type: ignore[attr-defined]
            elif kind is StreamReset:
                self._on_reset(event)  # type: ignore[arg-type]
            elif kind is WindowUpdated:
                if self._blocked:
                    self._send_blocked()
            elif kind is RemoteSettingsChanged:
                self._on_settings()
            elif kind is ConnectionTerminated:
                self._on_goaway(event)  # type: ignore[arg-type]
        self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(None)
        self._closed(f"the connection to the server closed{f' ({exc})' if exc else ''}")

    # requests
    def start(self, headers: list[tuple[bytes, bytes]], body: bytes, deadline: float) -> _Stream:
        """Open a stream for one request; its future answers."""
        h2 = self.h2
        stream_id = h2.get_next_available_stream_id()
        h2.send_headers(stream_id, headers, end_stream=not body)
        stream = _Stream(self._loop.create_future(), deadline)
        self.streams[stream_id] = stream
        if self._sweep is None or deadline < self._sweep_at:
            self._schedule_sweep(deadline)
        if body:
            if (
                not self._blocked
                and len(body) <= h2.max_outbound_frame_size
                and len(body) <= h2.local_flow_control_window(stream_id)
            ):
                h2.send_data(stream_id, body, end_stream=True)
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
                self._reset(stream_id, ErrorCodes.CANCEL)
                return

    def _send_blocked(self) -> None:
        """Send what the flow-control windows allow of the request bodies still to send."""
        h2 = self.h2
        done = []
        failed = []
        for stream_id, rest in self._blocked.items():
            try:
                while rest:
                    window = min(
                        h2.local_flow_control_window(stream_id), h2.max_outbound_frame_size
                    )
                    if window <= 0:
                        break
                    chunk = rest[:window]
                    rest = rest[window:]
                    h2.send_data(stream_id, chunk.tobytes(), end_stream=not rest)
            except H2Error as error:  # the server closed the stream meanwhile
                failed.append((stream_id, error))
                continue
            if rest:
                self._blocked[stream_id] = rest
            else:
                done.append(stream_id)
        for stream_id in done:
            del self._blocked[stream_id]
        for stream_id, why in failed:
            stream = self._finish(stream_id)
            if stream is not None and not stream.future.done():
                stream.future.set_exception(
                    Http2StreamReset(f"the request body could not be sent ({why})")
                )

    def _flush(self) -> None:
        self._flush_scheduled = False
        self._unsent = 0
        data = self.h2.data_to_send()
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    # events
    def _on_headers(self, event: ResponseReceived | TrailersReceived) -> None:
        stream = self.streams.get(event.stream_id)
        if stream is None or event.headers is None:
            return
        for name, value in event.headers:
            if name == b":status":
                stream.status = int(value)
            else:
                stream.headers[bytes(name).decode("latin-1")] = bytes(value).decode("latin-1")

    def _on_end(self, stream_id: int) -> None:
        stream = self._finish(stream_id)
        if stream is not None and not stream.future.done():
            stream.future.set_result(ProviderResponse(stream.status, stream.headers, stream.body))

    def _on_reset(self, event: StreamReset) -> None:
        stream_id: int = event.stream_id
        stream = self._finish(stream_id)
        if stream is None or stream.future.done():
            return
        if event.error_code == ErrorCodes.REFUSED_STREAM:
            stream.future.set_exception(_Retry())
        else:
            code = event.error_code
            name = code.name if isinstance(code, ErrorCodes) else str(code)
            stream.future.set_exception(Http2StreamReset(f"the server reset the stream ({name})"))

    def _on_settings(self) -> None:
        limit = self.h2.remote_settings.max_concurrent_streams
        self.capacity = max(1, min(self._max_streams, limit))
        if not self.settled.done():
            self.settled.set_result(None)
        if not self.closed and self.h2.goaway_received is None:
            self.accepting = len(self.streams) < self.capacity
            if self.accepting:
                self._pool.wake(everyone=True)

    def _on_goaway(self, event: ConnectionTerminated) -> None:
        self.accepting = False
        last = event.last_stream_id or 0
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
                self._reset(stream_id, ErrorCodes.CANCEL)
                if not stream.future.done():
                    stream.future.set_exception(TimeoutError("no answer in time"))
        if self.streams:
            self._schedule_sweep(min(stream.deadline for stream in self.streams.values()))

    def _reset(self, stream_id: int, code: ErrorCodes) -> None:
        with contextlib.suppress(H2Error, KeyError):
            self.h2.reset_stream(stream_id, code)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _finish(self, stream_id: int) -> _Stream | None:
        """Forget a stream; a slot is free again."""
        stream = self.streams.pop(stream_id, None)
        if stream is None:
            return None
        self.h2.stream_closed(stream_id)
        if self._blocked and self._blocked.pop(stream_id, None) is not None:
            self._reset(stream_id, ErrorCodes.CANCEL)  # its body will not be sent: close it
        if self.h2.goaway_received is not None or self.closed:
            if not self.streams:
                self.close()
        elif len(self.streams) < self.capacity:
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
            if self.h2.goaway_received is None:
                with contextlib.suppress(H2Error):
                    self.h2.close_connection()
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
                raise Http2Error(
                    f"{self._host}:{self._port} does not speak HTTP/2 (ALPN chose {protocol!r})"
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


class Http2Sender:
    """HTTP/2 with TLS (ALPN ``h2``) and multiplexed requests; see the module docstring.

    ``ssl_context`` (default: ``provider_ssl_context(ca_file)``) gets ALPN ``h2`` set on it, so
    do not share it with HTTP/1.1 clients. ``connections``: the pool size per origin;
    ``max_streams``: requests in flight per connection at most (also never more than the
    server allows); ``timeout_seconds``: per request, from ``send`` to the answer."""

    def __init__(
        self,
        *,
        ca_file: Path | None = None,
        ssl_context: ssl.SSLContext | None = None,
        timeout_seconds: float = 10.0,
        connections: int = 1,
        max_streams: int = 1000,
    ) -> None:
        if connections < 1 or max_streams < 1:
            raise ValueError("connections and max_streams must be at least 1")
        context = ssl_context or provider_ssl_context(ca_file)
        context.set_alpn_protocols(["h2"])
        self.ssl_context = context
        self.timeout_seconds = timeout_seconds
        self.connections_per_origin = connections
        self.max_streams = max_streams
        self._pools: dict[tuple[str, str], _Pool] = {}
        self._fields: dict[tuple[tuple[str, str], ...], list[tuple[bytes, bytes]]] = {}

    async def send(self, request: ProviderRequest) -> ProviderResponse:
        url = request.url
        scheme, _, rest = url.partition("://")
        slash = rest.find("/")
        authority, path = (rest, "/") if slash < 0 else (rest[:slash], rest[slash:])
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
        loop = pool.loop
        deadline = loop.time() + self.timeout_seconds
        for _ in range(MAX_RETRIES + 1):
            connection = pool.pick()
            if connection is None or pool.waiting or pool.should_grow(connection):
                async with asyncio.timeout_at(deadline):
                    connection = await pool.acquire()
            try:
                stream = connection.start(headers, request.body, deadline)
            except H2Error as exc:
                raise Http2Error(f"HTTP/2 state refused the request: {exc}") from exc
            try:
                return await stream.future
            except _Retry:
                continue
            except asyncio.CancelledError:
                connection.cancel(stream)
                raise
        raise Http2Error("the server refused the request on every try (GOAWAY/REFUSED_STREAM)")

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
    "H2Protocol",
    "Http2ConnectionLost",
    "Http2Error",
    "Http2Sender",
    "Http2StreamReset",
    "h2_config",
]
