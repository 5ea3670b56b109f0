"""The HTTP and WebSocket protocols ``pushgate serve`` runs: uvicorn's, with the limits an
Internet-facing server needs, and a quiet refusal of WebSocket handshakes.

uvicorn (0.54) has a keep-alive timeout between requests but nothing else: a connection that
never sends a request, or sends its headers a byte at a time, stays open for ever, headers
of any size are read, and nothing caps the number of connections. ``LimitedHttpProtocol``
adds, per connection:

- a header deadline: a request's headers must be complete within ``header_timeout`` seconds
  of the connection opening, of the previous response, or of the request's first byte
  (otherwise 408 and close; a connection that has said nothing is just closed);
- a body deadline: the body must be complete within ``body_timeout`` seconds of the headers
  (otherwise the connection closes, and the application sees the client disconnect);
- a header size limit: request line and headers together at most ``max_header_bytes``
  (otherwise 431 and close);
- a connection limit: past ``max_connections`` open connections (HTTP and WebSocket alike),
  a new one gets 503 and is closed.

An upgraded WebSocket connection leaves these rules behind: it keeps its own ping and
timeout rules (``websocket_ping_seconds``). Upgrades to the device channel's path go to the
channel's own server (``channel.server``, given as ``channel``), the others to uvicorn's.

This module overrides internals of uvicorn's ``HttpToolsProtocol`` and
``WebSocketsSansIOProtocol`` (the parser callbacks, ``data_received``,
``handle_websocket_upgrade``, ``on_response_complete``, ``send``); tests/unit/test_serving.py
pins the behaviour they rely on against the pinned uvicorn.
"""

from __future__ import annotations

import asyncio
import http
import logging
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import httptools
from uvicorn._types import ASGISendEvent
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.frames import CloseCode

log = logging.getLogger("pushgate.serving")

REFUSAL_LOG_SECONDS = 10.0


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    max_connections: int
    header_timeout: float
    body_timeout: float
    max_header_bytes: int


class WebSocketTakeover(Protocol):
    """A server of its own for WebSocket upgrades to ``path`` (``channel.server``)."""

    path: str

    def upgrade(self, transport: asyncio.Transport, scope: Any, connections: set[Any]) -> None: ...


class _HeadersTooLarge(Exception):
    """Raised from a parser callback to stop reading a request whose headers are too big."""


def _response(status: int, message: str) -> bytes:
    body = message.encode()
    phrase = http.HTTPStatus(status).phrase
    return (
        f"HTTP/1.1 {status} {phrase}\r\ncontent-type: text/plain; charset=utf-8\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    ).encode() + body


class LimitedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the limits above; ``limits`` is set per server by
    ``http_protocol``."""

    limits: ClassVar[ConnectionLimits]
    # Takes over WebSocket upgrades to its path (the device channel), if any.
    channel: ClassVar[WebSocketTakeover | None] = None
    _last_refusal_log: ClassVar[float] = 0.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        self._header_bytes = 0
        self._headers_too_large = False
        self._message_begun = False
        self._refused = False

    # -- the connection ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        limit = self.limits.max_connections
        if len(self.connections) >= limit:
            self._refused = True
            transport.write(
                _response(503, "The server is at its connection limit; retry in a moment.")
            )
            transport.close()
            now = time.monotonic()
            if now - LimitedHttpProtocol._last_refusal_log >= REFUSAL_LOG_SECONDS:
                LimitedHttpProtocol._last_refusal_log = now
                log.warning(
                    "refusing new connections: %d are open, the limit (max_connections) is %d",
                    len(self.connections),
                    limit,
                )
            return
        super().connection_made(transport)
        self._arm(self.limits.header_timeout, self._header_deadline_passed)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._refused:
            return
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        # uvicorn's own, with one more answer: 431 for headers over the limit.
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self._headers_too_large:
                self._answer_and_close(
                    431,
                    "Request header fields too large: request line and headers may take at "
                    f"most {self.limits.max_header_bytes} bytes.",
                )
            else:
                message = "Invalid HTTP request received."
                self.logger.warning(message)
                self.send_400_response(message)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()

    def handle_websocket_upgrade(self) -> None:
        self._disarm()  # the WebSocket protocol has its own rules from here on
        channel = self.channel
        if channel is not None:
            # uvicorn leaves an upgrade request's URL unparsed in its scope.
            url = httptools.parse_url(self.url)
            path = urllib.parse.unquote(url.path.decode("ascii"))
            if path == channel.path:
                self.connections.discard(self)
                scope = {**self.scope, "path": path, "query_string": url.query or b""}
                channel.upgrade(self.transport, scope, self.connections)
                return
        super().handle_websocket_upgrade()

    # -- the parser callbacks ------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_bytes = 0
        self._message_begun = True
        self._arm(self.limits.header_timeout, self._header_deadline_passed)

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._message_begun = False
        self._disarm()
        super().on_headers_complete()
        if not (self.parser.should_upgrade() and self._should_upgrade()):
            self._arm(self.limits.body_timeout, self._body_deadline_passed)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        if self.cycle is not None and self.cycle.response_complete:
            self._await_next_request()  # it was answered before its body was over
        else:
            self._disarm()

    def on_response_complete(self) -> None:
        pipelined = bool(self.pipeline)
        super().on_response_complete()
        if not pipelined and not self.cycle.more_body and not self._message_begun:
            self._await_next_request()

    def _await_next_request(self) -> None:
        """Between requests: the next one's headers are due within the header timeout
        (uvicorn's keep-alive timeout closes a silent connection sooner)."""
        if not self.transport.is_closing():
            self._arm(self.limits.header_timeout, self._header_deadline_passed)

    # -- limits --------------------------------------------------------------------------

    def _count(self, size: int) -> None:
        self._header_bytes += size
        if self._header_bytes > self.limits.max_header_bytes:
            self._headers_too_large = True
            raise _HeadersTooLarge

    def _arm(self, seconds: float, callback: Callable[[], None]) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, callback)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _header_deadline_passed(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        if self._message_begun:
            self._answer_and_close(
                408,
                "Request timeout: the request's headers did not arrive within "
                f"{self.limits.header_timeout:g} s.",
            )
        else:
            self.transport.close()

    def _body_deadline_passed(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            log.info(
                "closed a connection from %s: its request body did not arrive within %g s",
                self.client[0] if self.client else "?",
                self.limits.body_timeout,
            )
            self.transport.close()

    def _answer_and_close(self, status: int, message: str) -> None:
        self.transport.write(_response(status, message))
        self.transport.close()


def http_protocol(
    limits: ConnectionLimits, channel: WebSocketTakeover | None = None
) -> type[LimitedHttpProtocol]:
    """The protocol class for one server, with its limits, and the server that takes over
    WebSocket upgrades to its path."""
    return type(
        "ServerHttpProtocol", (LimitedHttpProtocol,), {"limits": limits, "channel": channel}
    )


class QuietWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's sans-I/O WebSocket protocol, where an application that refuses a handshake
    with an HTTP answer (``websocket.http.response.*``, e.g. 401 for a wrong device token)
    has completed the handshake: uvicorn would otherwise log an ERROR ("ASGI callable
    returned without completing handshake") for every refusal."""

    def shutdown(self) -> None:
        """The server is stopping: close with 1001 "going away" (uvicorn says 1012, "service
        restart"), so that devices reconnect, to another server if there is one."""
        if self.handshake_complete and not self.close_sent:
            self.stop_keepalive()
            self.queue.put_nowait({"type": "websocket.disconnect", "code": CloseCode.GOING_AWAY})
            self.conn.send_close(CloseCode.GOING_AWAY, "server shutting down")
            self.close_sent = True
            self.transport.write(b"".join(self.conn.data_to_send()))
            self.transport.close()
            return
        super().shutdown()

    async def send(self, message: ASGISendEvent) -> None:
        await super().send(message)
        if message["type"] == "websocket.http.response.body" and not message.get(
            "more_body", False
        ):
            self.handshake_complete = True
