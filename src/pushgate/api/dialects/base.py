"""What every API face declares once: its name, how it writes an error, and the paths that are
its own; and how an error finds the face it belongs to.

An error (400 to 500, 404 and 405 included) is written by the face of the route the request
matched: each face's endpoints mark the request's scope with their face (``Faces.mark``). A
request that matched no route (404) belongs to the face whose declared path prefix is the
longest match, else to the default face. So a face under ``/api/`` answers its errors in its
own format, never in the native one just because of where it lives.

Authentication is each face's own (a header, a bearer token, a body field or an XML element)
and always yields a ``services.api_keys.Principal`` (or an account, for the user-token
faces); bodies are read through ``web.body`` (size-capped).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from starlette.requests import HTTPConnection
from starlette.responses import Response
from starlette.types import Scope

ErrorWriter = Callable[[str, int, Mapping[str, str] | None], Response]
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
        path = connection.url.path
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
