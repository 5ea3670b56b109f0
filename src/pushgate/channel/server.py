"""The device channel's WebSocket server, ``/api/v1/channel/ws`` (docs/channel.md).

It shares the HTTP API's port: the HTTP protocol hands a WebSocket upgrade for the channel's
path to ``ChannelServer.upgrade`` instead of the ASGI application (``serving.protocols``).
From then on the connection is a ``ChannelConnection``. Opening it takes one short task:
the options and the device's token are checked (400, 401 or 429 with the native error body),
websockets' ``ServerProtocol`` checks the handshake and builds the 101 answer, and the
device's backlog is written before it goes live.

Pings: connections are spread over one bucket per second of ``websocket_ping_seconds``, and
one timer visits a bucket a second, so a server with many connections pings a steady trickle
of them instead of all at once, and an idle server wakes once a second at most (never, with
no connection).
"""

from __future__ import annotations

import asyncio
import http
import logging
from collections.abc import Awaitable, MutableMapping
from typing import Any

from starlette.requests import HTTPConnection
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware
from websockets.datastructures import Headers
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.server import ServerProtocol

from pushgate.channel.connection import ChannelConnection
from pushgate.channel.hub import Hub, Outgoing
from pushgate.channel.websocket import (
    INVALID_DEVICE_TOKEN,
    PATH,
    connecting_device,
    device_session,
    parse_options,
)
from pushgate.domain.errors import InvalidInput, TooManyRequests
from pushgate.runtime import Runtime
from pushgate.web.errors import error_body

log = logging.getLogger("pushgate.channel")

Scope = MutableMapping[str, Any]

# Connections being opened at once (token, handshake, backlog): past this, an upgrade request
# is answered 503 with Retry-After at once. Devices back off and retry (``pushgate listen``
# does), so after a restart the fleet comes back at the rate the server opens connections,
# instead of every handshake waiting on the same database and timing out together.
MAX_OPENING = 256
BUSY = "The server is opening many device connections right now; retry in a moment."


def text_frame(payload: bytes) -> bytes:
    """``payload`` as one unmasked text frame (websockets' framing)."""
    return Frame(Opcode.TEXT, payload).serialize(mask=False)


def refusal(status: int, message: str, headers: dict[str, str] | None = None) -> bytes:
    """An HTTP answer refusing the handshake, with the native error body."""
    body = error_body(message, status)
    fields = Headers(
        [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(body))),
            ("Connection", "close"),
            *(headers or {}).items(),
        ]
    )
    return Response(status, http.HTTPStatus(status).phrase, fields, body).serialize()


async def _nothing(*_: Any) -> None:
    return None


class ChannelServer:
    path = PATH

    def __init__(self, rt: Runtime, ping_seconds: float, trusted_proxies: list[str]) -> None:
        self._rt = rt
        self.hub: Hub = rt.hub
        self._tasks: set[asyncio.Task[Any]] = set()
        self._opening = 0  # connections between the upgrade request and going live
        self._proxy = (
            ProxyHeadersMiddleware(_nothing, trusted_hosts=trusted_proxies)
            if trusted_proxies
            else None
        )
        # Ping rounds: ``_buckets[i]`` is visited at second i of every ping interval.
        self._buckets: list[set[ChannelConnection]] = (
            [set() for _ in range(max(1, round(ping_seconds)))] if ping_seconds > 0 else []
        )
        self._tick = ping_seconds / len(self._buckets) if self._buckets else 0.0
        self._bucket_of: dict[ChannelConnection, int] = {}
        self._placed = 0
        self._cursor = 0
        self._timer: asyncio.TimerHandle | None = None
        # The frame of the notification being fanned out: built once for every connection.
        self._frame_item: Outgoing | None = None
        self._frame = b""
        # The notification being fanned out and the devices it was written to so far.
        self._sent_item: Outgoing | None = None
        self._sent_to: list[int] = []
        # Connections with live frames to write at the loop's next turn (``write_soon``).
        self._to_write: list[ChannelConnection] = []

    # -- connections ---------------------------------------------------------------------------

    def upgrade(self, transport: asyncio.Transport, scope: Scope, connections: set[Any]) -> None:
        """Take over an upgrade request's connection (``scope``: its HTTP request)."""
        if self._opening >= MAX_OPENING:
            # A reconnect storm: refused at once, before any work, so that the connections
            # being opened finish quickly instead of all timing out together.
            self._refuse(transport, 503, refusal(503, BUSY, {"Retry-After": "1"}))
            return
        connection = ChannelConnection(self, transport, connections)
        transport.set_protocol(connection)
        connections.add(connection)
        transport.pause_reading()
        self._opening += 1
        self._spawn(self._open(connection, scope))

    def forget(self, connection: ChannelConnection) -> None:
        bucket = self._bucket_of.pop(connection, None)
        if bucket is not None:
            self._buckets[bucket].discard(connection)

    def frame_of(self, item: Outgoing) -> bytes:
        if item is not self._frame_item:
            self._frame_item = item
            self._frame = text_frame(item.payload)
        return self._frame

    def write_soon(self, connection: ChannelConnection) -> None:
        """``connection`` has live frames to write: written at the loop's next turn, with
        the frames of every notification handed over before it."""
        if not self._to_write:
            asyncio.get_running_loop().call_soon(self._write_out)
        self._to_write.append(connection)

    def _write_out(self) -> None:
        connections, self._to_write = self._to_write, []
        for connection in connections:
            connection.write_out()

    def sent(self, device_id: int, item: Outgoing) -> None:
        """``item`` was written to a device's connection: recorded (status ``sent``, the
        frame counters) once for all the devices of a fan-out, right after it."""
        if item is not self._sent_item:
            self._record_sent()
            self._sent_item = item
            # Runs before the loop reads the devices' next frames (their acks).
            asyncio.get_running_loop().call_soon(self._record_sent)
        self._sent_to.append(device_id)

    def _record_sent(self) -> None:
        item, device_ids = self._sent_item, self._sent_to
        self._sent_item, self._sent_to = None, []
        if item is None or not device_ids:
            return
        self.hub.count_sent(len(device_ids), len(item.payload) * len(device_ids))
        self._rt.pipeline.record_sent_to(device_ids, item.notification_id)

    def opened(self, device_id: int, notification_ids: list[int]) -> None:
        """An ``opened`` report: written in a task of its own."""
        self._spawn(self._rt.stats.opened_on_device(device_id, notification_ids))

    # -- opening -------------------------------------------------------------------------------

    async def _open(self, connection: ChannelConnection, scope: Scope) -> None:
        transport = connection.transport
        try:
            request = HTTPConnection(await self._client_of(scope))
            try:
                since, batch = parse_options(request.query_params)
                device = await connecting_device(self._rt, request)
            except InvalidInput as exc:
                return self._refuse(transport, 400, refusal(400, exc.message))
            except TooManyRequests as exc:
                return self._refuse(transport, 429, refusal(429, exc.message, exc.headers))
            if device is None:
                return self._refuse(transport, 401, refusal(401, INVALID_DEVICE_TOKEN))
            handshake = Request(
                path=scope["path"],
                headers=Headers(
                    (name.decode("latin-1"), value.decode("latin-1"))
                    for name, value in scope["headers"]
                ),
            )
            answer = ServerProtocol().accept(handshake)
            if answer.status_code != 101:
                return self._refuse(transport, answer.status_code, answer.serialize())
            if transport.is_closing():
                return None
            connection.opened(answer.serialize(), device_session(self._rt, device), batch)
            log.debug("WebSocket of device %d open", device.id)
            self._place(connection)
            session = connection.session
            assert session is not None
            async for page in session.catch_up(since):
                if connection.closing:
                    return None
                connection.send_page(page)
                await connection.writable()
            connection.go_live()
        except Exception:
            log.exception("opening a device channel connection failed")
            transport.abort()
        finally:
            self._opening -= 1
        return None

    async def _client_of(self, scope: Scope) -> Scope:
        """``scope`` with the client a trusted proxy names (setting ``trusted_proxies``)."""
        if self._proxy is None:
            return scope
        rewritten = dict(scope)  # the middleware sets its "client" in place
        await self._proxy(rewritten, _nothing, _nothing)  # type: ignore[arg-type]
        return rewritten

    @staticmethod
    def _refuse(transport: asyncio.Transport, status: int, answer: bytes) -> None:
        log.debug("WebSocket handshake refused with %d", status)
        if not transport.is_closing():
            transport.write(answer)
            transport.close()

    def _spawn(self, work: Awaitable[Any]) -> None:
        task: asyncio.Task[Any] = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- ping rounds ---------------------------------------------------------------------------

    def _place(self, connection: ChannelConnection) -> None:
        if not self._buckets:
            return
        bucket = self._placed % len(self._buckets)
        self._placed += 1
        self._buckets[bucket].add(connection)
        self._bucket_of[connection] = bucket
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._tick, self._round)

    def _round(self) -> None:
        bucket = self._buckets[self._cursor]
        self._cursor = (self._cursor + 1) % len(self._buckets)
        for connection in list(bucket):
            connection.sweep()
        if self._bucket_of:
            self._timer = asyncio.get_running_loop().call_later(self._tick, self._round)
        else:
            self._timer = None
