"""Reading request bodies with a size cap, and parsing JSON in one fast pass."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request

from pushgate.domain.errors import InvalidInput, PayloadTooLarge


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"Request body too large: the limit is {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"Request body too large: the limit is {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def parse_json_object(raw: bytes) -> dict[str, Any]:
    if not raw.strip():
        raise InvalidInput("Request body is empty: send a JSON object")
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"Request body is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise InvalidInput("Request body must be a JSON object")
    if b"\\u0000" in raw and _contains_nul(value):
        raise InvalidInput("Strings must not contain the NUL character (\\u0000)")
    return value


def no_nul(value: str | None) -> str | None:
    """A field validator for text that PostgreSQL must store: NUL is refused."""
    if value is not None and "\x00" in value:
        raise ValueError("must not contain the NUL character")
    return value


def _contains_nul(value: Any) -> bool:
    """PostgreSQL cannot store NUL in text; refuse it up front rather than fail at commit."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_contains_nul(k) or _contains_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_contains_nul(item) for item in value)
    return False
