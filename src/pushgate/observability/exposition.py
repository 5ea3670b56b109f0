"""Where ``/metrics`` is served, and who may read it.

Off by default. Two settings turn it on, alone or together:

- ``metrics_token``: ``GET /metrics`` on the server's own port, with
  ``Authorization: Bearer <metrics_token>`` (401 without it);
- ``metrics_port`` (with ``metrics_host``, default 127.0.0.1): a listener of its own that
  serves only ``GET /metrics``, so it can be kept off the public interface; it also asks for
  the bearer token when ``metrics_token`` is set. ``pushgate worker`` serves its metrics this
  way (it has no other port).

The listener is a few lines of asyncio, not a second web framework: one request per
connection, answered and closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
from collections.abc import Awaitable, Callable
from typing import Protocol

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from pushgate.config import Settings
from pushgate.observability.metrics import Metrics
from pushgate.web.auth import bearer

Refresh = Callable[[], Awaitable[None]]
MAX_REQUEST_BYTES = 8192
READ_TIMEOUT_SECONDS = 5.0


def token_matches(presented: str | None, token: str | None) -> bool:
    if token is None:
        return True
    return presented is not None and hmac.compare_digest(presented.encode(), token.encode())


async def scrape(metrics: Metrics, refresh: Refresh) -> bytes:
    await refresh()
    return metrics.render()


def metrics_route(metrics: Metrics, refresh: Refresh, token: str) -> Route:
    async def endpoint(request: Request) -> Response:
        if not token_matches(bearer(request), token):
            return Response(
                b"metrics need Authorization: Bearer <metrics_token>\n",
                status_code=401,
                media_type="text/plain",
                headers={"www-authenticate": "Bearer"},
            )
        return Response(await scrape(metrics, refresh), media_type=CONTENT_TYPE_LATEST)

    return Route("/metrics", endpoint, methods=["GET"], include_in_schema=False)


def _answer(status: str, body: bytes, content_type: str = "text/plain") -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body


def _authorization(head: bytes) -> str | None:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"authorization":
            text = value.strip().decode("latin-1")
            if text[:7].lower() == "bearer ":
                return text[7:].strip()
    return None


async def _handle(
    metrics: Metrics,
    refresh: Refresh,
    token: str | None,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
) -> None:
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT_SECONDS)
        parts = head.split(b"\r\n", 1)[0].split(b" ")
        if len(parts) != 3 or parts[0] != b"GET" or parts[1].split(b"?")[0] != b"/metrics":
            answer = _answer("404 Not Found", b"only GET /metrics is served here\n")
        elif not token_matches(_authorization(head), token):
            answer = _answer("401 Unauthorized", b"metrics need Authorization: Bearer\n")
        else:
            answer = _answer("200 OK", await scrape(metrics, refresh), CONTENT_TYPE_LATEST)
        writer.write(answer)
        await writer.drain()
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, OSError):
        pass
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def start_listener(
    host: str, port: int, metrics: Metrics, refresh: Refresh, token: str | None
) -> asyncio.Server:
    """Serve ``GET /metrics`` on ``host:port`` until the returned server is closed."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _handle(metrics, refresh, token, reader, writer)

    return await asyncio.start_server(handle, host, port, limit=MAX_REQUEST_BYTES)


class _Observed(Protocol):
    metrics: Metrics

    async def refresh_metrics(self) -> None: ...


async def metrics_listener(settings: Settings, runtime: _Observed) -> asyncio.Server | None:
    """The ``metrics_port`` listener of this process, started; None when it is not set."""
    if settings.metrics_port is None:
        return None
    return await start_listener(
        settings.metrics_host,
        settings.metrics_port,
        runtime.metrics,
        runtime.refresh_metrics,
        settings.metrics_token,
    )
