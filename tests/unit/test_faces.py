"""Errors find their face: the matched route's, else the longest declared prefix, else the
default."""

from __future__ import annotations

from collections.abc import Mapping

from starlette.requests import Request
from starlette.responses import Response

from pushgate.api.dialects.base import Face, Faces


def writer(name: str):  # type: ignore[no-untyped-def]
    def write(message: str, status: int, headers: Mapping[str, str] | None = None) -> Response:
        return Response(f"{name}:{message}", status_code=status, headers=headers)

    return write


DEFAULT = Face("default", writer("default"), ("/v1/",))
NATIVE = Face("native", writer("native"), ("/api/v1/",))
VENDOR = Face("vendor", writer("vendor"), ("/api/v2/notification/",))


def request(path: str) -> Request:
    return Request(
        {"type": "http", "method": "GET", "path": path, "headers": [], "query_string": b""}
    )


def faces() -> Faces:
    registry = Faces(DEFAULT)
    registry.add(NATIVE)
    registry.add(VENDOR)
    return registry


def test_the_longest_prefix_wins_and_the_default_takes_the_rest() -> None:
    registry = faces()
    assert registry.of(request("/api/v1/devices")) is NATIVE
    assert registry.of(request("/api/v2/notification/user")) is VENDOR
    assert registry.of(request("/api/v2/other")) is DEFAULT
    assert registry.of(request("/nope")) is DEFAULT


def test_a_matched_route_s_face_wins_over_prefixes() -> None:
    registry = faces()
    matched = request("/api/v1/devices")
    Faces.mark(matched.scope, VENDOR)
    answer = registry.error(matched, "wrong", 418, {"X-A": "b"})
    assert answer.body == b"vendor:wrong" and answer.status_code == 418
    assert answer.headers["x-a"] == "b"
