"""ASGI middleware capping request bodies on the native API (``/api/``).

The Instapush dialect reads its bodies itself (``api.body.read_body``) so that it can answer in
its own error format; this middleware covers the FastAPI routes, whose bodies FastAPI reads.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pushgate.api.native.errors import native_error
from pushgate.domain.errors import PayloadTooLarge


class NativeBodyLimit:
    def __init__(self, app: ASGIApp, limit: int) -> None:
        self._app = app
        self._limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/api/"):
            await self._app(scope, receive, send)
            return
        limit = self._limit
        message = f"Request body too large: the limit is {limit} bytes"
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                await native_error(message, 413)(scope, receive, send)
                return
        received = 0

        async def capped_receive() -> Message:
            nonlocal received
            item = await receive()
            if item["type"] == "http.request":
                received += len(item.get("body", b""))
                if received > limit:
                    raise PayloadTooLarge(message)
            return item

        await self._app(scope, capped_receive, send)
