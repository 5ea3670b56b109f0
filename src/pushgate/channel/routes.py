"""Device channel endpoints: WebSocket, Server-Sent Events, poll and ack (docs/channel.md)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Query, Request, WebSocket
from pydantic import BaseModel, Field
from starlette.responses import Response, StreamingResponse

from pushgate.api.native.deps import bearer
from pushgate.api.native.errors import native_error
from pushgate.channel.messages import batch_message
from pushgate.channel.session import READY, DeviceSession, SlowConsumer
from pushgate.domain.errors import MAX_ID, InvalidInput, Unauthorized
from pushgate.runtime import Runtime
from pushgate.services.devices import Device

SSE_KEEPALIVE_SECONDS = 15.0
MAX_ACK_IDS = 1000
INVALID_DEVICE_TOKEN = (
    "Missing or invalid device token: send 'Authorization: Bearer <device_token>' or "
    "'?token=<device_token>' (POST /api/v1/devices issues one)"
)


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


class PollOut(BaseModel):
    notifications: list[dict[str, Any]]


def _ack_ids(message: Any) -> list[int]:
    if not isinstance(message, dict) or message.get("type") != "ack":
        raise InvalidInput('Expected {"type": "ack", "ids": [<notification id>, ...]}')
    ids = message.get("ids")
    if not isinstance(ids, list) or len(ids) > MAX_ACK_IDS:
        raise InvalidInput(f"ids must be a list of at most {MAX_ACK_IDS} notification ids")
    if not all(isinstance(i, int) and not isinstance(i, bool) and 0 < i <= MAX_ID for i in ids):
        raise InvalidInput("ids must be positive integers")
    return ids


def channel_router(rt: Runtime) -> APIRouter:
    router = APIRouter(prefix="/api/v1/channel", tags=["device channel"])

    async def device_of(token: str | None) -> Device | None:
        device = await rt.devices.authenticate(token)
        return device if device is not None and device.enabled else None

    async def require_device(request: Request) -> Device:
        device = await device_of(bearer(request) or request.query_params.get("token"))
        if device is None:
            raise Unauthorized(INVALID_DEVICE_TOKEN)
        return device

    def session(device: Device) -> DeviceSession:
        return DeviceSession(device.id, rt.hub, rt.notifications, rt.pipeline)

    @router.websocket("/ws")
    async def websocket_channel(
        websocket: WebSocket, since: Since = None, batch: bool = False
    ) -> None:
        device = await device_of(bearer(websocket) or websocket.query_params.get("token"))
        if device is None:
            await websocket.send_denial_response(native_error(INVALID_DEVICE_TOKEN, 401))
            return
        await websocket.accept()
        device_session = session(device)

        async def read_acks() -> None:
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    return
                raw = message.get("text") or message.get("bytes") or b""
                try:
                    device_session.acknowledged(_ack_ids(orjson.loads(raw)))
                except (orjson.JSONDecodeError, InvalidInput) as exc:
                    error = {"type": "error", "message": getattr(exc, "message", str(exc))}
                    await websocket.send_text(orjson.dumps(error).decode())

        async def write_messages() -> None:
            async for items in device_session.batches(since):
                assert items is not None
                if batch and len(items) > 1:
                    payload = batch_message([item.payload for item in items])
                    await websocket.send_text(payload.decode())
                else:
                    for item in items:
                        await websocket.send_text(item.payload.decode())
                device_session.sent_batch(items)

        reader = asyncio.create_task(read_acks())
        writer = asyncio.create_task(write_messages())
        done, pending = await asyncio.wait({reader, writer}, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        for task in done:
            task.exception()  # retrieve it: a closed connection is the normal way out
        if writer in done and isinstance(writer.exception(), SlowConsumer):
            with contextlib.suppress(Exception):
                await websocket.close(code=1013, reason="too far behind; reconnect to catch up")

    @router.get(
        "/sse",
        response_class=StreamingResponse,
        responses={200: {"content": {"text/event-stream": {}}}},
    )
    async def sse_channel(request: Request, since: Since = None) -> Response:
        """Server-Sent Events: `ready`, then one `notification` event per notification."""
        device = await require_device(request)
        last_event_id = request.headers.get("last-event-id")
        if since is None and last_event_id and last_event_id.isdigit() and len(last_event_id) < 19:
            since = int(last_event_id)
        device_session = session(device)

        async def events() -> AsyncIterator[bytes]:
            batches = device_session.batches(since, idle_timeout=SSE_KEEPALIVE_SECONDS)
            try:
                async for items in batches:
                    if items is None:
                        yield b": keepalive\n\n"
                    elif items[0].notification_id == READY:
                        yield b"event: ready\ndata: " + items[0].payload + b"\n\n"
                    else:
                        yield b"".join(
                            b"id: %d\nevent: notification\ndata: %s\n\n"
                            % (item.notification_id, item.payload)
                            for item in items
                        )
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
        request: Request,
        since: Since = None,
        limit: int = Query(100, ge=1, le=1000),
    ) -> Response:
        """What the device is owed right now (see docs/channel.md for `since`)."""
        device = await require_device(request)
        rt.pipeline.record_seen(device.id)
        device_session = session(device)
        items = [item async for item in device_session.owed(since, limit)]
        device_session.sent_batch(items)
        body = b'{"notifications":[' + b",".join(item.payload for item in items) + b"]}"
        return Response(body, media_type="application/json")

    @router.post("/ack", response_model=AckOut)
    async def ack(body: AckIn, request: Request) -> AckOut:
        """Acknowledge notifications the device has shown; their deliveries become
        `delivered`. Answers how many of the ids were notifications of this device."""
        device = await require_device(request)
        owned = await rt.notifications.of_device(device.id, body.ids)
        session(device).acknowledged(owned)
        return AckOut(acknowledged=len(owned))

    return router
