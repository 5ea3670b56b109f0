"""Per-request observation, as the outermost ASGI layer: a request id, one access line, and
the request metrics.

- **Request id.** An incoming ``X-Request-Id`` of at most 64 safe characters
  (``[A-Za-z0-9._:-]``) is kept, otherwise one is generated; it is answered in the
  ``X-Request-Id`` header and carried on every log line written while the request runs, as
  ``request_id`` (``observability.logs.REQUEST_ID``: each request runs in a task of its own,
  so the value needs no reset).
- **Access line.** One line per request on the ``pushgate.access`` logger at INFO: method,
  path (redacted), status, duration in ms, face, and the notification it accepted if any.
  ``log_levels = "pushgate.access=warning"`` turns it off, and then it costs nothing.
- **Metrics.** ``pushgate_http_request_duration_seconds`` by face, route *template* (never
  the raw path: ``/api/v1/devices/{device_id}``; ``unmatched`` for a request no route took),
  method and status class. The labelled children are cached per (route, method, status).

WebSocket and lifespan scopes pass through untouched (the channel has its own metrics).
"""

from __future__ import annotations

import itertools
import os
import re
import time
from collections.abc import Callable, Sequence

from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pushgate.observability.histogram import Series
from pushgate.observability.logs import NOTIFICATION_ID, REQUEST_ID, AccessLog
from pushgate.observability.metrics import Metrics

HEADER = b"x-request-id"
_SAFE_ID = re.compile(rb"[A-Za-z0-9._:-]{1,64}")
_STATUS_CLASSES = {n: f"{n}xx" for n in range(1, 6)}
UNMATCHED = "unmatched"


class RequestIds:
    """Request ids unique across processes and restarts: a random prefix per process and a
    counter (cheaper than a random id per request)."""

    def __init__(self) -> None:
        self._prefix = os.urandom(5).hex()
        self._count = itertools.count(1)

    def __call__(self) -> str:
        return f"{self._prefix}{next(self._count):06x}"


def incoming_request_id(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The client's ``X-Request-Id`` when it is safe to log and echo, else None."""
    for name, value in headers:
        if name == HEADER:
            return value.decode("ascii") if _SAFE_ID.fullmatch(value) else None
    return None


class RequestObserver:
    """ASGI middleware: see the module docstring. ``face_of(route_path)`` names the face of a
    route template; ``access`` is the access logger, or None when the line is off."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        metrics: Metrics,
        routes: Sequence[BaseRoute],
        face_of: Callable[[str], str],
        access: AccessLog | None,
        redact: Callable[[str], str],
    ) -> None:
        """``routes``: the application's routes (read when a request's route is first seen,
        so routes added after this middleware count)."""
        self.app = app
        self._metrics = metrics
        self._routes = routes
        self._face_of = face_of
        self._access = access
        self._redact = redact
        self._children: dict[tuple[int, str, str, int], tuple[Series, str]] = {}
        # By id(): Starlette's routes are not hashable; they live as long as the app.
        self._templates: dict[int, str] = {}
        self._new_id = RequestIds()

    def _template(self, matched: object) -> str:
        """The path template of the route that took the request: ``matched`` is the route
        (FastAPI's routes) or its endpoint (plain Starlette routes)."""
        template = self._templates.get(id(matched))
        if template is None and isinstance(path := getattr(matched, "path", None), str):
            template = self._templates[id(matched)] = path
        if template is None:
            for route in self._routes:
                path = getattr(route, "path", None)
                if isinstance(path, str):
                    self._templates[id(route)] = path
                    self._templates[id(getattr(route, "endpoint", route))] = path
            template = self._templates.setdefault(id(matched), UNMATCHED)
        return template

    def _child(self, scope: Scope, method: str, status: int) -> tuple[Series, str]:
        matched = scope.get("route") or scope.get("endpoint")
        # A request no route took (404) is counted under its face's name.
        face = "" if matched is not None else self._face_of(scope["path"])
        key = (id(matched), face, method, status)
        found = self._children.get(key)
        if found is None:
            template = UNMATCHED if matched is None else self._template(matched)
            face = face or self._face_of(template)
            status_class = _STATUS_CLASSES.get(status // 100, "other")
            child = self._metrics.requests.labels(face, template, method, status_class)
            found = self._children[key] = (child, face)
        return found

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = incoming_request_id(scope["headers"]) or self._new_id()
        header = (HEADER, request_id.encode("ascii"))
        status = 500
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        REQUEST_ID.set(request_id)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            method = scope["method"]
            child, face = self._child(scope, method, status)
            child.observe(elapsed)
            if self._access is not None:
                path = scope["path"]
                if scope.get("query_string"):
                    path = self._redact(f"{path}?{scope['query_string'].decode('latin-1')}")
                elif "dvt_" in path:
                    path = self._redact(path)
                line = {
                    "event": "request",
                    "request_id": request_id,
                    "method": method,
                    "path": path,
                    "status": status,
                    "ms": round(elapsed * 1000, 2),
                    "face": face,
                }
                notification_id = NOTIFICATION_ID.get()
                if notification_id is not None:
                    line["notification_id"] = notification_id
                self._access.write(line)
