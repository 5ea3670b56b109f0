"""Reading request bodies with a size cap, and parsing JSON in one fast pass."""

from __future__ import annotations

import json
import math
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


MAX_DEPTH = 32
MIN_INT, MAX_INT = -(2**63), 2**64 - 1


def _no_constant(name: str) -> Any:
    raise InvalidInput(f"Request body is not valid JSON: {name} is not a JSON number")


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise InvalidInput(f"Request body holds the number {text[:40]}, too large for a double")
    return value


def _int(text: str) -> int:
    if len(text) > 21 or not MIN_INT <= (value := int(text)) <= MAX_INT:
        raise InvalidInput(f"Request body holds the integer {text[:40]}, outside the 64-bit range")
    return value


def strict_json(raw: bytes) -> Any:
    """The JSON value of ``raw``, or ``InvalidInput`` for what JSON (or a 64-bit integer, or
    a double) cannot hold: ``NaN``, ``Infinity``, numbers that overflow, integers outside
    -2**63..2**64-1, and nesting deeper than ``MAX_DEPTH``."""
    try:
        value = json.loads(raw, parse_constant=_no_constant, parse_float=_float, parse_int=_int)
    except RecursionError as exc:
        raise InvalidInput(f"Request body is nested more than {MAX_DEPTH} levels deep") from exc
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        raise InvalidInput(f"Request body is not valid JSON: {exc}") from exc
    if _depth_over(value, MAX_DEPTH):
        raise InvalidInput(f"Request body is nested more than {MAX_DEPTH} levels deep")
    return value


def _depth_over(value: Any, limit: int) -> bool:
    """Whether objects and arrays nest more than ``limit`` levels deep in ``value``."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item
        if isinstance(item, dict | list):
            if depth > limit:
                return True
            stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def is_json(content_type: str | None) -> bool:
    """Whether a Content-Type names JSON (``application/json``, ``application/*+json``)."""
    if not content_type:
        return False
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


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


def no_nul_inside(value: Any) -> Any:
    """A field validator for JSON data PostgreSQL must store: NUL is refused in every key and
    string inside."""
    if _contains_nul(value):
        raise ValueError("must not contain the NUL character in any key or value")
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
