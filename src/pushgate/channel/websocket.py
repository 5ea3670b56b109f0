"""The device channel's WebSocket endpoint, ``/api/v1/channel/ws`` (docs/channel.md).

It is a plain ASGI handler that ``ChannelSocketDispatch`` calls before the FastAPI stack: a
device connection lives for hours, and the framework's per-request machinery (dependency
resolution, exit stacks, exception middleware) would otherwise stay alive with every idle
connection, about a quarter of its memory.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping

import orjson
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket

from pushgate.channel.hub import Outgoing
from pushgate.channel.messages import batch_message
from pushgate.channel.session import DeviceSession, SlowConsumer
from pushgate.domain.errors import MAX_ID, InvalidInput, TooManyRequests
from pushgate.runtime import Runtime
from pushgate.services.devices import Device
from pushgate.web.auth import bearer
from pushgate.web.errors import native_error

PATH = "/api/v1/channel/ws"
MAX_ACK_IDS = 1000
INVALID_DEVICE_TOKEN = (
    "Missing or invalid device token: send a channel device's token as 'Authorization: "
    "Bearer <device_token>' or '?token=<device_token>' (POST /api/v1/devices with platform "
    "channel issues one; devices of other platforms are reached through their provider)"
)
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


async def connecting_device(rt: Runtime, connection: HTTPConnection) -> Device | None:
    """The enabled channel device whose token the request carries (``Authorization: Bearer``
    or ``?token=``), for every channel endpoint: a device of a push platform is not one (its
    deliveries are its provider's to report). Failures count towards the client's throttle
    (``TooManyRequests`` while it is throttled)."""
    token = bearer(connection) or connection.query_params.get("token")

    async def check() -> Device | None:
        device = await rt.devices.authenticate(token)
        if device is None or not device.enabled or device.platform != "channel":
            return None
        return device

    client = connection.client
    return await rt.throttle.authenticate(client.host if client else None, None, check)


def device_session(rt: Runtime, device: Device) -> DeviceSession:
    return DeviceSession(device.id, rt.hub, rt.notifications, rt.pipeline)


REPORTS = ("ack", "opened")


def report_ids(message: object) -> tuple[str, list[int]]:
    """A device's report: ``{"type": "ack" | "opened", "ids": [<notification id>, ...]}``."""
    kind = message.get("type") if isinstance(message, dict) else None
    if kind not in REPORTS or not isinstance(message, dict):
        raise InvalidInput(
            'Expected {"type": "ack", "ids": [<notification id>, ...]} (shown) or '
            '{"type": "opened", "ids": [...]} (the user opened them)'
        )
    ids = message.get("ids")
    if not isinstance(ids, list) or len(ids) > MAX_ACK_IDS:
        raise InvalidInput(f"ids must be a list of at most {MAX_ACK_IDS} notification ids")
    if not all(isinstance(i, int) and not isinstance(i, bool) and 0 < i <= MAX_ID for i in ids):
        raise InvalidInput("ids must be positive integers")
    return str(kind), ids


def parse_options(query: Mapping[str, str]) -> tuple[int | None, bool]:
    """``since`` and ``batch`` from the query string; ``InvalidInput`` says what is wrong."""
    since: int | None = None
    raw_since = query.get("since")
    if raw_since is not None:
        if not raw_since.isdigit() or len(raw_since) > 19 or int(raw_since) > MAX_ID:
            raise InvalidInput(f"since must be a notification id from 0 to {MAX_ID}")
        since = int(raw_since)
    raw_batch = query.get("batch", "").lower()
    if raw_batch not in _TRUE | _FALSE:
        raise InvalidInput("batch must be 1 or 0 (true or false)")
    return since, raw_batch in _TRUE


class ChannelWebSocket:
    def __init__(self, rt: Runtime) -> None:
        self._rt = rt

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        websocket = WebSocket(scope, receive, send)
        try:
            since, batch = parse_options(websocket.query_params)
        except InvalidInput as exc:
            await websocket.send_denial_response(native_error(exc.message, 400))
            return
        try:
            device = await connecting_device(self._rt, websocket)
        except TooManyRequests as exc:
            await websocket.send_denial_response(native_error(exc.message, 429, exc.headers))
            return
        if device is None:
            await websocket.send_denial_response(native_error(INVALID_DEVICE_TOKEN, 401))
            return
        await websocket.accept()
        session = device_session(self._rt, device)
        reader = asyncio.create_task(self._read_reports(websocket, session))
        writer = asyncio.create_task(self._write(websocket, session, since, batch))
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

    async def _read_reports(self, websocket: WebSocket, session: DeviceSession) -> None:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            raw = message.get("text") or message.get("bytes") or b""
            try:
                kind, ids = report_ids(orjson.loads(raw))
            except (orjson.JSONDecodeError, InvalidInput) as exc:
                error = {"type": "error", "message": getattr(exc, "message", str(exc))}
                await websocket.send_text(orjson.dumps(error).decode())
                continue
            if kind == "ack":
                session.acknowledged(ids)
            else:
                await self._rt.stats.opened_on_device(session.device_id, ids)

    async def _send(
        self, websocket: WebSocket, session: DeviceSession, items: list[Outgoing], batch: bool
    ) -> None:
        # Counted as they are handed to the connection (before a reader could see them).
        if batch and len(items) > 1:
            message = batch_message([item.payload for item in items])
            self._rt.hub.count_sent(1, len(message))
            await websocket.send_text(message.decode())
        else:
            self._rt.hub.count_sent(len(items), sum(len(item.payload) for item in items))
            for item in items:
                await websocket.send_text(item.payload.decode())
        session.sent_batch(items)

    async def _write(
        self, websocket: WebSocket, session: DeviceSession, since: int | None, batch: bool
    ) -> None:
        async for items in session.batches(since):
            assert items is not None
            await self._send(websocket, session, items, batch)
            del items  # an idle connection keeps nothing it has sent


class ChannelSocketDispatch:
    """ASGI middleware: WebSocket connections to ``PATH`` go straight to ``handler``."""

    def __init__(self, app: ASGIApp, handler: ASGIApp) -> None:
        self.app = app
        self.handler = handler

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" and scope["path"] == PATH:
            await self.handler(scope, receive, send)
        else:
            await self.app(scope, receive, send)
