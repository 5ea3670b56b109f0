"""Device channel endpoints: WebSocket, Server-Sent Events, poll, ack and opened
(docs/channel.md)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field
from starlette.responses import Response, StreamingResponse

from pushgate.channel.session import READY, DeviceSession, SlowConsumer
from pushgate.channel.websocket import (
    INVALID_DEVICE_TOKEN,
    MAX_ACK_IDS,
    connecting_device,
    device_session,
)
from pushgate.domain.errors import MAX_ID, Unauthorized
from pushgate.runtime import Runtime
from pushgate.services.devices import Device
from pushgate.web.route import GuardedRoute, authenticator

SSE_KEEPALIVE_SECONDS = 15.0
KEEPALIVE = b": keepalive\n\n"


NotificationId = Annotated[int, Field(ge=1, le=MAX_ID)]
Since = Annotated[
    int | None,
    Query(ge=0, le=MAX_ID, description="Send what is newer than this notification id."),
]


class AckIn(BaseModel):
    ids: list[NotificationId] = Field(
        max_length=MAX_ACK_IDS, description="Notification ids to acknowledge."
    )


class AckOut(BaseModel):
    acknowledged: int


class OpenedOut(BaseModel):
    opened: int


class PollOut(BaseModel):
    notifications: list[dict[str, Any]]


def channel_router(rt: Runtime) -> APIRouter:
    router = APIRouter(prefix="/api/v1/channel", tags=["device channel"], route_class=GuardedRoute)

    @authenticator
    async def require_device(request: Request) -> Device:
        found: Device | None = getattr(request.state, "device", None)
        if found is not None:
            return found
        device = await connecting_device(rt, request)
        if device is None:
            raise Unauthorized(INVALID_DEVICE_TOKEN)
        request.state.device = device
        return device

    current_device = Depends(require_device)

    def session(device: Device) -> DeviceSession:
        return device_session(rt, device)

    @router.get(
        "/sse",
        response_class=StreamingResponse,
        responses={200: {"content": {"text/event-stream": {}}}},
    )
    async def sse_channel(
        request: Request, since: Since = None, device: Device = current_device
    ) -> Response:
        """Server-Sent Events: `ready`, then one `notification` event per notification."""
        last_event_id = request.headers.get("last-event-id")
        if since is None and last_event_id and last_event_id.isdigit() and len(last_event_id) < 19:
            since = int(last_event_id)
        device_session = session(device)
        count_sent = rt.hub.count_sent

        async def events() -> AsyncIterator[bytes]:
            batches = device_session.batches(since, idle_timeout=SSE_KEEPALIVE_SECONDS)
            try:
                async for items in batches:
                    if items is None:
                        count_sent(1, len(KEEPALIVE))
                        yield KEEPALIVE
                    elif items[0].notification_id == READY:
                        ready = b"event: ready\ndata: " + items[0].payload + b"\n\n"
                        count_sent(1, len(ready))
                        yield ready
                    else:
                        chunk = b"".join(
                            b"id: %d\nevent: notification\ndata: %s\n\n"
                            % (item.notification_id, item.payload)
                            for item in items
                        )
                        count_sent(len(items), len(chunk))
                        yield chunk
                        device_session.sent_batch(items)
            except SlowConsumer:
                return

        return StreamingResponse(
            events(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    @router.get("/poll", response_model=PollOut)
    async def poll(
        since: Since = None,
        limit: int = Query(100, ge=1, le=1000),
        device: Device = current_device,
    ) -> Response:
        """What the device is owed right now (see docs/channel.md for `since`)."""
        rt.pipeline.record_seen(device.id)
        device_session = session(device)
        items = [item async for item in device_session.owed(since, limit)]
        device_session.sent_batch(items)
        body = b'{"notifications":[' + b",".join(item.payload for item in items) + b"]}"
        return Response(body, media_type="application/json")

    @router.post("/ack", response_model=AckOut)
    async def ack(body: AckIn, device: Device = current_device) -> AckOut:
        """Acknowledge notifications the device has shown; their deliveries become
        `delivered`. Answers how many of the ids were notifications of this device."""
        owned = await rt.notifications.of_device(device.id, body.ids)
        session(device).acknowledged(owned)
        return AckOut(acknowledged=len(owned))

    @router.post("/opened", response_model=OpenedOut)
    async def opened(body: AckIn, device: Device = current_device) -> OpenedOut:
        """Report that the user opened (tapped) these notifications on the device; their
        deliveries become `opened`. Answers how many did (not: notifications of other
        devices, or already opened)."""
        return OpenedOut(opened=await rt.stats.opened_on_device(device.id, body.ids))

    return router
