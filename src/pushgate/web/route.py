"""The route class of every native API and device-channel endpoint: authenticate first, then
read the body, size-capped and as strict JSON.

FastAPI reads and parses a route's body before it runs the route's dependencies, so an
unauthenticated client could make the server read (and answer about) a large body, and its
JSON reader takes ``NaN``, ``Infinity``, ``1e999`` and integers of any size. ``GuardedRoute``
runs first:

1. the route's authenticating dependencies (callables marked with ``authenticator``): a
   request without valid credentials gets 401 (or 429 while throttled) before one byte of its
   body is read; FastAPI later finds their result on ``request.state``;
2. the body, read up to the server's ``max_body_bytes`` (413 beyond: by its declared length
   at once, or as soon as a chunked body passes it);
3. a JSON body is checked strictly (``api.body.strict_json``): 400 for what JSON or a 64-bit
   integer cannot hold, or for nesting deeper than ``MAX_DEPTH``.

The route then runs as FastAPI made it, on a request whose body has already been read (a
Starlette ``Request`` keeps the body it read).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Message, Receive

from pushgate.domain.errors import PayloadTooLarge
from pushgate.web.body import is_json, strict_json

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


def authenticator(dependency: F) -> F:
    """Mark a dependency that authenticates the request (it takes the ``Request``): a
    ``GuardedRoute`` runs it before reading the body. It should keep its result on
    ``request.state``, as FastAPI runs it again."""
    dependency.pushgate_authenticator = True  # type: ignore[attr-defined]
    return dependency


def _capped(receive: Receive, limit: int) -> Receive:
    received = 0

    async def capped_receive() -> Message:
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise PayloadTooLarge(f"Request body too large: the limit is {limit} bytes")
        return message

    return capped_receive


class GuardedRoute(APIRoute):
    #: The largest body of the route's requests; None: the server's ``max_body_bytes``.
    body_bytes: int | None = None

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        first: list[Callable[[Request], Awaitable[Any]]] = [
            dependency.call
            for dependency in self.dependant.dependencies
            if dependency.call is not None
            and getattr(dependency.call, "pushgate_authenticator", False)
        ]

        async def guarded(request: Request) -> Response:
            for authenticate in first:
                await authenticate(request)
            limit: int = max(
                self.body_bytes or 0, request.app.state.runtime.settings.max_body_bytes
            )
            declared = request.headers.get("content-length")
            if declared is not None and declared.isdigit() and int(declared) > limit:
                raise PayloadTooLarge(f"Request body too large: the limit is {limit} bytes")
            reading = Request(request.scope, _capped(request.receive, limit))
            raw = await reading.body()
            if raw and is_json(request.headers.get("content-type")):
                strict_json(raw)
            return await handler(reading)

        return guarded


class BulkRoute(GuardedRoute):
    """A route that takes many items in one request: bodies up to 8 MiB (or the server's
    ``max_body_bytes`` when larger)."""

    body_bytes = 8 * 1024 * 1024
