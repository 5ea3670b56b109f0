"""HTTP/2 for ``FakeHttpServer`` (``http2=True``): the same handler answers requests that
arrive over HTTP/2, on connections whose TLS handshake chose ``h2`` in ALPN; the others stay
HTTP/1.1. Framing by ``h2`` (``h2_overrides.H2Protocol``), so a client's own framing is checked
against h2's. The requests whose streams ended in one read are answered in order by one task;
the answers of one loop turn go out in one write."""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

from h2.events import (
    ConnectionTerminated,
    DataReceived,
    Event,
    RequestReceived,
    StreamEnded,
    StreamReset,
)
from h2.exceptions import H2Error
from h2.settings import SettingCodes

from pushgate.testing.fake_server import Drop, FakeRequest, FakeResponse, _Http1Connection
from pushgate.transports.h2_overrides import H2Protocol, h2_config

if TYPE_CHECKING:
    from pushgate.testing.fake_server import FakeHttpServer

MAX_CONCURRENT_STREAMS = 1000


def server_h2(max_concurrent_streams: int) -> H2Protocol:
    """The server side of a new HTTP/2 connection, its preface queued: the stream limit, 1 MiB
    of window per stream and 16 MiB more for the connection (the fakes never throttle)."""
    h2 = H2Protocol(h2_config(client_side=False))
    h2.initiate_connection()
    h2.update_settings(
        {
            SettingCodes.MAX_CONCURRENT_STREAMS: max_concurrent_streams,
            SettingCodes.INITIAL_WINDOW_SIZE: 1 << 20,
        }
    )
    h2.increment_flow_control_window(1 << 24)
    return h2


def received(h2: H2Protocol, data: bytes) -> list[Event] | None:
    """h2's events for ``data``; None when the client broke the protocol (h2 has queued its
    GOAWAY: flush it, then close the connection)."""
    try:
        return list(h2.receive_data(data))
    except H2Error:
        return None


class Http2Connection(asyncio.Protocol):
    def __init__(self, server: FakeHttpServer) -> None:
        self._server = server
        self._h2 = server_h2(MAX_CONCURRENT_STREAMS)
        self._transport: Any = None  # asyncio.Transport, or uvloop's
        self._pending: dict[int, tuple[dict[str, str], bytearray]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._flush_soon = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport
        self._server._connections.add(transport)
        self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._transport is not None:
            self._server._connections.discard(self._transport)
        self._transport = None
        for task in self._tasks:
            task.cancel()

    def data_received(self, data: bytes) -> None:
        h2 = self._h2
        events = received(h2, data)
        if events is None:
            self._flush()
            self._close()
            return
        ended: list[tuple[int, FakeRequest]] = []
        for event in events:
            if isinstance(event, RequestReceived):
                headers = {
                    bytes(name).decode("latin-1").lower(): bytes(value).decode("latin-1")
                    for name, value in event.headers or ()
                }
                self._pending[event.stream_id] = (headers, bytearray())
            elif isinstance(event, DataReceived):
                pending = self._pending.get(event.stream_id)
                if pending is not None and event.data:
                    pending[1].extend(event.data)
                if event.flow_controlled_length:
                    h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, StreamEnded):
                request = self._request(event.stream_id)
                if request is not None:
                    ended.append((event.stream_id, request))
            elif isinstance(event, StreamReset):
                self._pending.pop(event.stream_id, None)
                h2.stream_closed(event.stream_id)
            elif isinstance(event, ConnectionTerminated):
                self._flush()
                self._close()
                return
        if ended:
            task = asyncio.get_running_loop().create_task(self._answer(ended))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        self._flush()

    def _request(self, stream_id: int) -> FakeRequest | None:
        pending = self._pending.pop(stream_id, None)
        if pending is None:
            return None
        headers, body = pending
        self._server.http2_requests += 1
        return FakeRequest(
            headers.pop(":method", "GET"),
            headers.pop(":path", "/"),
            {name: value for name, value in headers.items() if not name.startswith(":")},
            bytes(body),
        )

    async def _answer(self, requests: list[tuple[int, FakeRequest]]) -> None:
        """Answer the requests that ended in one read, in order."""
        for stream_id, request in requests:
            try:
                answer = await self._server._handler(request)
            except Exception as exc:  # noqa: BLE001 - a fake answers 500 like a broken server
                answer = FakeResponse(500, f"fake server error: {exc!r}".encode())
            if self._transport is None:
                return
            if isinstance(answer, Drop):
                self._close()
                return
            self._respond(stream_id, answer)

    def _respond(self, stream_id: int, answer: FakeResponse) -> None:
        h2 = self._h2
        fields = [(":status", str(answer.status)), ("content-length", str(len(answer.body)))]
        fields += [(name.lower(), value) for name, value in answer.headers.items()]
        with contextlib.suppress(H2Error):  # the client reset the stream meanwhile
            h2.send_headers(stream_id, fields, end_stream=not answer.body)
            if answer.body:
                h2.send_data(stream_id, answer.body, end_stream=True)
        h2.stream_closed(stream_id)  # (H2Protocol counts open streams by these)
        if not self._flush_soon:
            self._flush_soon = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_soon = False
        data = self._h2.data_to_send()
        if data and self._transport is not None:
            self._transport.write(data)

    def _close(self) -> None:
        if self._transport is not None:
            self._transport.close()


class ByAlpn(asyncio.Protocol):
    """Serves a connection over HTTP/2 when its TLS handshake chose ``h2``, else HTTP/1.1."""

    def __init__(self, server: FakeHttpServer) -> None:
        self._server = server
        self._inner: asyncio.Protocol | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        ssl_object = transport.get_extra_info("ssl_object")
        chosen = ssl_object.selected_alpn_protocol() if ssl_object is not None else None
        inner: asyncio.Protocol = (
            Http2Connection(self._server) if chosen == "h2" else _Http1Connection(self._server)
        )
        self._inner = inner
        inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._inner is not None:
            self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._inner is not None else None

    def connection_lost(self, exc: Exception | None) -> None:
        if self._inner is not None:
            self._inner.connection_lost(exc)
