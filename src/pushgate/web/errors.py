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


def native_error(message: str, status: int, headers: Mapping[str, str] | None = None) -> Response:
    code = CODES.get(status, "error")
    body = orjson.dumps({"error": {"code": code, "message": message}})
    return Response(body, status_code=status, media_type="application/json", headers=headers)
