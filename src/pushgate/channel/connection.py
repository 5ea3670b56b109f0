"""One open device channel WebSocket connection (docs/channel.md, "How the server holds a
connection").

A device connection lives for hours and mostly idles, so once open it is a plain asyncio
protocol of a few slots: no task, no queue and no framework objects of its own. The hub hands
each live notification straight to ``deliver``, which takes the notification's frame (built
once for every connection, by ``ChannelServer.frame_of``); the frames a connection was given
in one turn of the event loop are written to its socket together, by ``write_out``.

The WebSocket protocol is websockets' sans-I/O layer: a bare server-side ``Protocol`` parses
the device's frames, answers its pings and runs the closing handshake; Pushgate writes no
framing of its own. ``ChannelServer`` opens connections (token, handshake, backlog) and pings
them.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

import orjson
from websockets.frames import CloseCode, Frame, Opcode
from websockets.protocol import Protocol, Side, State

from pushgate.channel.hub import Outgoing, Subscription
from pushgate.channel.messages import batch_message
from pushgate.channel.session import MAX_BATCH, DeviceSession
from pushgate.channel.websocket import report_ids
from pushgate.domain.errors import InvalidInput

if TYPE_CHECKING:
    from pushgate.channel.server import ChannelServer

log = logging.getLogger("pushgate.channel")

# A device's report of 1,000 ids takes ~20 KB; anything larger is a protocol error (1009).
MAX_MESSAGE_BYTES = 64 * 1024
# A connection whose unsent frames pass this is too far behind: closed with 1013, and it
# catches up from storage when it reconnects.
MAX_BUFFERED_BYTES = 4 * 1024 * 1024
# After Pushgate sends a close frame, how long the device has to answer before the socket
# is cut.
CLOSE_TIMEOUT_SECONDS = 10.0
TOO_FAR_BEHIND = "too far behind; reconnect to catch up"
_DATA = (Opcode.TEXT, Opcode.BINARY)


class ChannelConnection(asyncio.Protocol):
    """A device's WebSocket, from the 101 answer on. ``ws`` is ``None`` while it opens."""

    __slots__ = (
        "server",
        "transport",
        "connections",
        "ws",
        "session",
        "subscription",
        "batch",
        "heard",
        "pinged",
        "_partial",
        "_writable",
        "_cut",
        "_out",
    )

    def __init__(
        self, server: ChannelServer, transport: asyncio.Transport, connections: set[object]
    ) -> None:
        self.server = server
        self.transport = transport
        # The HTTP server's set of open connections: the connection limit counts this one,
        # and a stopping server calls ``shutdown`` on it.
        self.connections = connections
        self.ws: Protocol | None = None
        self.session: DeviceSession | None = None
        self.subscription: Subscription | None = None
        self.batch = False
        self.heard = False  # anything received since the last ping round
        self.pinged = False  # a ping is out and unanswered
        self._partial: bytearray | None = None  # a fragmented message being received
        self._writable: asyncio.Future[None] | None = None
        self._cut: asyncio.TimerHandle | None = None
        # Live frames given since the loop last ran ``write_out``: written together, in one
        # system call (a fan-out of several notifications to a device costs one write).
        self._out: list[bytes] | None = None

    # -- opening (driven by ChannelServer) -----------------------------------------------------

    def opened(self, answer: bytes, session: DeviceSession, batch: bool) -> None:
        """The handshake's 101 ``answer`` is written; frames may flow. Subscribes the device
        (the backlog is read after this)."""
        self.transport.write(answer)
        self.ws = Protocol(Side.SERVER, max_size=MAX_MESSAGE_BYTES, logger=log)
        self.session = session
        self.batch = batch
        self.subscription = session.open()
        self.transport.resume_reading()

    def send_page(self, items: list[Outgoing]) -> None:
        """Backlog notifications (or the ``ready`` message), in one batch frame when the
        device asked for batches."""
        assert self.ws is not None and self.session is not None
        if self.batch and len(items) > 1:
            message = batch_message([item.payload for item in items])
            self.server.hub.count_sent(1, len(message))
            self.ws.send_text(message)
        else:
            self.server.hub.count_sent(len(items), sum(len(item.payload) for item in items))
            for item in items:
                self.ws.send_text(item.payload)
        self._flush()
        self.session.sent_batch(items)

    async def writable(self) -> None:
        """Wait while the socket's write buffer is over its high-water mark."""
        waiter = self._writable
        if waiter is not None:
            await waiter

    def go_live(self) -> None:
        """After the backlog: what arrived meanwhile, then every live notification is written
        as the hub hands it over."""
        subscription, session = self.subscription, self.session
        if subscription is None or session is None or self.closing:
            return
        if subscription.overflowed:
            self.close(CloseCode.TRY_AGAIN_LATER, TOO_FAR_BEHIND)
            return
        waiting = session.unseen(subscription.drain(subscription.qsize()))
        for start in range(0, len(waiting), MAX_BATCH):
            self.send_page(waiting[start : start + MAX_BATCH])
        subscription.sink = self.deliver

    @property
    def closing(self) -> bool:
        ws = self.ws
        return self.transport.is_closing() or (ws is not None and ws.state is not State.OPEN)

    # -- live ---------------------------------------------------------------------------------

    def deliver(self, item: Outgoing) -> None:
        """The hub's sink: write one live notification now."""
        transport = self.transport
        if transport.get_write_buffer_size() > MAX_BUFFERED_BYTES:
            self.close(CloseCode.TRY_AGAIN_LATER, TOO_FAR_BEHIND)
            return
        if self.ws is None or self.ws.state is not State.OPEN:
            return
        server = self.server
        frame = server.frame_of(item)
        out = self._out
        if out is None:
            self._out = [frame]
            server.write_soon(self)
        else:
            out.append(frame)
        assert self.session is not None
        server.sent(self.session.device_id, item)

    def write_out(self) -> None:
        """Write the live frames given since the last call, in one write."""
        out, self._out = self._out, None
        if out and not self.transport.is_closing():
            self.transport.write(out[0] if len(out) == 1 else b"".join(out))

    def sweep(self) -> None:
        """One ping round (``ChannelServer`` calls it every ``websocket_ping_seconds``): a
        device heard from since the last round is alive; otherwise it is pinged, and one that
        left the previous ping unanswered is cut."""
        if self.heard:
            self.heard = False
            self.pinged = False
            return
        ws = self.ws
        if ws is None or ws.state is not State.OPEN:
            return
        if self.pinged:
            self.transport.abort()
            return
        ws.send_ping(b"")
        self._flush()
        self.pinged = True

    def close(self, code: int, reason: str) -> None:
        """Start the closing handshake (the device answers, then the socket closes)."""
        ws = self.ws
        if ws is None:
            self.transport.abort()
            return
        if ws.state is State.OPEN:
            ws.send_close(code, reason)
            self._flush()

    def shutdown(self) -> None:
        """The server is stopping (uvicorn calls this on every open connection): close with
        1001 "going away", so that devices reconnect, to another server if there is one."""
        self.close(CloseCode.GOING_AWAY, "server shutting down")

    # -- asyncio.Protocol ----------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        self.heard = True
        ws = self.ws
        if ws is None:
            return  # reading is paused until the 101; a client may not send before it
        ws.receive_data(data)
        for event in ws.events_received():
            if isinstance(event, Frame):
                self._received(event)
        self._flush()

    def eof_received(self) -> bool | None:
        if self.ws is not None:
            self.ws.receive_eof()
            self._flush()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.connections.discard(self)
        self.server.forget(self)
        if self._cut is not None:
            self._cut.cancel()
            self._cut = None
        subscription, session = self.subscription, self.session
        if subscription is not None and session is not None:
            self.subscription = None
            subscription.sink = None
            session.close(subscription)
        waiter = self._writable
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def pause_writing(self) -> None:
        if self._writable is None:
            self._writable = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        waiter, self._writable = self._writable, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- frames in and out ----------------------------------------------------------------------

    def _received(self, frame: Frame) -> None:
        opcode = frame.opcode
        if opcode in _DATA:
            if frame.fin:
                self._report(frame.data)
            else:
                self._partial = bytearray(frame.data)
        elif opcode is Opcode.CONT and self._partial is not None:
            # websockets' Protocol checks the order of fragments and the message size.
            self._partial += frame.data
            if frame.fin:
                message, self._partial = bytes(self._partial), None
                self._report(message)

    def _report(self, raw: bytes | bytearray | memoryview) -> None:
        """An ``ack`` or ``opened`` report; anything else gets an ``error`` message."""
        assert self.session is not None
        try:
            kind, ids = report_ids(orjson.loads(raw))
        except (orjson.JSONDecodeError, InvalidInput) as exc:
            message = exc.message if isinstance(exc, InvalidInput) else "Invalid JSON"
            self._message(orjson.dumps({"type": "error", "message": message}))
            return
        if kind == "ack":
            self.session.acknowledged(ids)
        else:
            self.server.opened(self.session.device_id, ids)

    def _message(self, payload: bytes) -> None:
        ws = self.ws
        if ws is not None and ws.state is State.OPEN:
            self.server.hub.count_sent(1, len(payload))
            ws.send_text(payload)

    def _flush(self) -> None:
        ws = self.ws
        assert ws is not None
        if self._out is not None:
            self.write_out()  # frames given earlier go first
        transport = self.transport
        for chunk in ws.data_to_send():
            if chunk:
                transport.write(chunk)
            else:  # websockets' "end of stream": the server closes the TCP connection
                transport.close()
                return
        if ws.close_expected() and self._cut is None and not transport.is_closing():
            self._cut = asyncio.get_running_loop().call_later(
                CLOSE_TIMEOUT_SECONDS, transport.abort
            )
