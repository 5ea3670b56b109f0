"""What every API face declares once: its name, how it writes an error, and the paths that are
its own; and how an error finds the face it belongs to.

An error (400 to 500, 404 and 405 included) is written by the face of the route the request
matched: each face's endpoints mark the request's scope with their face (``Faces.mark``). A
request that matched no route (404) belongs to the face whose declared path prefix is the
longest match, else to the default face. So a face under ``/api/`` answers its errors in its
own format, never in the native one just because of where it lives.

Authentication is declared once per face too: a ``KeyAuthenticator`` of one key kind reads
the key from a header, a bearer token, a body field or an XML element (``KeySource``) and
yields a ``services.api_keys.Principal`` (Instapush and the native API authenticate their
own tokens). Bodies are read through ``web.documents`` / ``web.body`` (size-capped; JSON or
XML without DTDs).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Scope

from pushgate.domain.errors import Unauthorized
from pushgate.services.api_keys import ApiKeyService, Principal
from pushgate.throttle import AuthThrottle
from pushgate.web.auth import bearer, client_address
from pushgate.web.documents import Document

ErrorWriter = Callable[[str, int, Mapping[str, str] | None], Response]


def json_response(body: Any, status: int, headers: Mapping[str, str] | None = None) -> Response:
    """``body`` as a JSON answer (the faces' bodies are written exactly as given)."""
    return Response(
        orjson.dumps(body), status_code=status, media_type="application/json", headers=headers
    )


SCOPE_KEY = "pushgate.face"


@dataclass(frozen=True, slots=True)
class Face:
    name: str
    error: ErrorWriter
    # Paths that belong to the face even when no route matched (a mistyped endpoint).
    prefixes: tuple[str, ...] = ()


class Faces:
    """The faces of one application."""

    def __init__(self, default: Face) -> None:
        self.default = default
        self._faces: list[Face] = [default]

    def add(self, face: Face) -> Face:
        self._faces.append(face)
        return face

    @staticmethod
    def mark(scope: Scope, face: Face) -> None:
        """The request matched a route of ``face``: its errors are ``face``'s."""
        scope[SCOPE_KEY] = face

    def of(self, connection: HTTPConnection) -> Face:
        marked = connection.scope.get(SCOPE_KEY)
        if isinstance(marked, Face):
            return marked
        return self.for_path(connection.url.path)

    def for_path(self, path: str) -> Face:
        """The face whose declared prefix is the longest match of ``path``, else the default."""
        best, length = self.default, -1
        for face in self._faces:
            for prefix in face.prefixes:
                if path.startswith(prefix) and len(prefix) > length:
                    best, length = face, len(prefix)
        return best

    def error(
        self,
        connection: HTTPConnection,
        message: str,
        status: int,
        headers: Mapping[str, str] | None = None,
    ) -> Response:
        return self.of(connection).error(message, status, headers)


@dataclass(frozen=True, slots=True)
class KeySource:
    """Where a face's requests carry their API key: ``Authorization: Bearer``, a header, or a
    field of the body document (a JSON member, or a child element of the XML root)."""

    bearer: bool = False
    header: str | None = None
    field: str | None = None

    def presented(self, connection: HTTPConnection, document: Document | None) -> str | None:
        if self.bearer and (token := bearer(connection)):
            return token
        if self.header is not None and (value := connection.headers.get(self.header)):
            return value.strip()
        if self.field is not None and document is not None:
            return document.field(self.field)
        return None


class KeyAuthenticator:
    """A face's authentication with API keys of one kind, declared once per face: the key
    from its ``KeySource``, checked by ``ApiKeyService`` (allowlist and quota included), with
    failures counted by the failed-authentication throttle. Yields the ``Principal``."""

    def __init__(
        self,
        kind: str,
        source: KeySource,
        keys: ApiKeyService,
        throttle: AuthThrottle,
        missing: str,
    ) -> None:
        """``missing``: the face's message for a request without a valid key."""
        self.kind = kind
        self.source = source
        self._keys = keys
        self._throttle = throttle
        self._missing = missing

    async def principal(
        self, connection: HTTPConnection, document: Document | None = None
    ) -> Principal:
        """``Unauthorized`` without a valid key of the kind; ``Forbidden`` from an address
        outside the key's allowlist; ``TooManyRequests`` past its quota or while the client
        is throttled for failed attempts."""
        presented = self.source.presented(connection, document)
        address = client_address(connection)

        async def check() -> Principal | None:
            return await self._keys.authenticate(self.kind, presented, address)

        found = await self._throttle.authenticate(address, None, check)
        if found is None:
            raise Unauthorized(self._missing)
        return found


Handler = Callable[[Request], Awaitable[Response]]
ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


def face_route(path: str, face: Face, method: str, handler: Handler) -> Route:
    """A route of ``face``: its requests are marked as the face's (so every error, raised
    anywhere, is written in the face's format), and another method is the face's 405."""
    return face_methods(path, face, {method: handler})


def face_methods(path: str, face: Face, handlers: Mapping[str, Handler]) -> Route:
    """``face_route`` with a handler per method."""
    allowed = ", ".join(handlers)
    spoken = " or ".join(handlers)

    async def endpoint(request: Request) -> Response:
        Faces.mark(request.scope, face)
        handler = handlers.get(request.method)
        if handler is None:
            return face.error(
                f"Method {request.method} is not allowed here; use {spoken}",
                405,
                {"Allow": allowed},
            )
        return await handler(request)

    return Route(path, endpoint, methods=ALL_METHODS, include_in_schema=False)
