"""The native API's error format, also the device channel's:
``{"error": {"code": ..., "message": ...}}``."""

from __future__ import annotations

from collections.abc import Mapping

import orjson
from starlette.responses import Response

CODES = {
    400: "invalid_input",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    429: "too_many_requests",
    500: "internal",
    503: "unavailable",
}


def error_body(message: str, status: int) -> bytes:
    """``{"error": {"code", "message"}}`` for an answer of ``status``."""
    return orjson.dumps({"error": {"code": CODES.get(status, "error"), "message": message}})


def native_error(message: str, status: int, headers: Mapping[str, str] | None = None) -> Response:
    body = error_body(message, status)
    return Response(body, status_code=status, media_type="application/json", headers=headers)
