"""Running the ASGI application on uvicorn with Pushgate's protocols, limits and logging."""

from __future__ import annotations

import resource
import socket
from collections.abc import Callable

import uvicorn
from starlette.types import ASGIApp

from pushgate.config import Settings
from pushgate.egress import parse_networks
from pushgate.serving.protocols import (
    ConnectionLimits,
    QuietWebSocketProtocol,
    WebSocketTakeover,
    http_protocol,
)

# Descriptors kept free for everything but client connections: database, provider and Redis
# connections, files.
RESERVED_DESCRIPTORS = 512
MIN_CONNECTIONS = 64


def open_files_limit() -> int:
    """Raise this process's soft limit of open files to its hard limit (a server holds one
    descriptor per device connection); the limit it has now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1_048_576
    if soft == resource.RLIM_INFINITY or soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return int(soft)


def connection_limits(settings: Settings) -> ConnectionLimits:
    """The limits of ``settings``; ``max_connections`` 0 means what the open-files limit
    leaves after ``RESERVED_DESCRIPTORS``."""
    most = settings.max_connections or max(
        MIN_CONNECTIONS, open_files_limit() - RESERVED_DESCRIPTORS
    )
    return ConnectionLimits(
        max_connections=most,
        header_timeout=settings.header_timeout_seconds,
        body_timeout=settings.body_timeout_seconds,
        max_header_bytes=settings.max_header_bytes,
    )


def server_config(
    settings: Settings, application: ASGIApp, channel: WebSocketTakeover | None = None
) -> uvicorn.Config:
    return uvicorn.Config(
        application,
        host=settings.host,
        port=settings.port,
        # Logging is configured by the command (observability.logs.configure_logging).
        log_config=None,
        http=http_protocol(connection_limits(settings), channel),
        # The sans-I/O implementation keeps no tasks of its own per connection (the legacy
        # one runs three): about a third of the memory per idle device connection.
        ws=QuietWebSocketProtocol,
        ws_per_message_deflate=False,
        ws_ping_interval=settings.websocket_ping_seconds or None,
        ws_ping_timeout=settings.websocket_ping_seconds or None,
        timeout_keep_alive=int(settings.keep_alive_seconds),
        # The client's address from X-Forwarded-For only for requests from trusted proxies:
        # uvicorn rewrites the connection's client address (the last untrusted hop).
        proxy_headers=bool(settings.trusted_proxies),
        forwarded_allow_ips=[str(n) for n in parse_networks(settings.trusted_proxies)] or None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=max(1, int(settings.shutdown_timeout_seconds)),
    )


class GracefulServer(uvicorn.Server):
    """uvicorn's server that calls ``on_ready`` once it accepts connections (after the
    application's startup: migrations, workers), and tells the application as soon as it is
    asked to stop (``on_stop``), so that delivery workers wind down while requests in flight
    finish.

    On SIGTERM or SIGINT: the listening socket closes (no new requests); requests in flight
    finish within ``shutdown_timeout_seconds``; device channel WebSockets are closed with
    1001 "going away"; meanwhile workers take no new jobs and finish those in hand; then the
    application's shutdown flushes the status writes (``Runtime.stop``)."""

    def __init__(
        self,
        config: uvicorn.Config,
        on_stop: Callable[[], None],
        on_ready: Callable[[], None] | None,
    ) -> None:
        super().__init__(config)
        self._on_stop = on_stop
        self._on_ready = on_ready

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started and not self.should_exit and self._on_ready is not None:
            self._on_ready()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self._on_stop()
        await super().shutdown(sockets)


def run(
    settings: Settings,
    application: ASGIApp,
    on_stop: Callable[[], None],
    *,
    sock: socket.socket | None = None,
    on_ready: Callable[[], None] | None = None,
    channel: WebSocketTakeover | None = None,
) -> None:
    """Serve ``application``: on ``sock`` when given (bound by ``serving.bind``), else on
    the settings' host and port; ``on_ready`` is called once connections are accepted,
    ``on_stop`` as soon as a stop is asked for. WebSocket upgrades to ``channel``'s path go
    to it (the device channel, on the same port)."""
    server = GracefulServer(server_config(settings, application, channel), on_stop, on_ready)
    server.run(sockets=None if sock is None else [sock])
