"""The live page: delivery outcomes of the account as they change, streamed with Server-Sent
Events (``/dashboard/live/stream``) and drawn by ``static/live.js``.

The stream polls the account's deliveries changed since its last look (``OverviewService
.feed``: those of its latest notifications) once a second. Each event's id is the time of its
change, so a browser that reconnects (``Last-Event-ID``) goes on from there. A stream ends
after ``STREAM_SECONDS`` (the browser reconnects) or when the server stops.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import orjson
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from pushgate.dashboard.web import PREFIX, Dashboard, Page
from pushgate.services.overview import DeliveryLine
from pushgate.storage.database import now_ms
from pushgate.web.timestamps import iso_ms

POLL_SECONDS = 1.0
KEEPALIVE_SECONDS = 15.0
STREAM_SECONDS = 300.0


def _position(header: str | None) -> int | None:
    """The time (ms) of a ``Last-Event-ID``; None when it is not one."""
    if not header or not header.isdigit() or len(header) > 18:
        return None
    return int(header)


def _event(line: DeliveryLine) -> bytes:
    data = orjson.dumps(
        {
            "notification_id": line.notification_id,
            "device_id": line.device_id,
            "app_id": line.app_key,
            "title": line.title,
            "message": line.message[:200],
            "transport": line.transport,
            "status": line.status,
            "reason": line.reason,
            "attempts": line.attempts,
            "updated_at": iso_ms(line.updated_ms),
        }
    )
    return b"id: %d\nevent: delivery\ndata: %s\n\n" % (line.updated_ms, data)


def routes(dash: Dashboard) -> list[Route]:
    async def live(page: Page) -> Response:
        return dash.show(page, "live.html")

    async def stream(page: Page) -> Response:
        account_id = page.account_id
        request = page.request
        position = _position(request.headers.get("last-event-id"))
        after = now_ms() if position is None else position

        async def events() -> AsyncIterator[bytes]:
            nonlocal after
            yield b"retry: 2000\n: connected\n\n"
            started = last_sent = time.monotonic()
            while not dash.rt.stopping and time.monotonic() - started < STREAM_SECONDS:
                lines = await dash.overview.feed(account_id, after)
                for line in lines:
                    after = max(after, line.updated_ms)
                    yield _event(line)
                if lines:
                    last_sent = time.monotonic()
                elif time.monotonic() - last_sent > KEEPALIVE_SECONDS:
                    last_sent = time.monotonic()
                    yield b": keep-alive\n\n"
                if await request.is_disconnected():
                    return
                await asyncio.sleep(POLL_SECONDS)

        return StreamingResponse(
            events(),
            media_type="text/event-stream",
            headers={"X-Accel-Buffering": "no"},
        )

    return [
        Route(f"{PREFIX}/live", dash.page(live), methods=["GET"]),
        Route(f"{PREFIX}/live/stream", dash.page(stream), methods=["GET"]),
    ]
