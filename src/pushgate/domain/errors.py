"""Errors raised by domain rules and services; dialect routers translate them."""

from __future__ import annotations


class PushgateError(Exception):
    """Base of every error a caller can fix; ``status`` is the HTTP status it maps to."""

    status = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    @property
    def headers(self) -> dict[str, str] | None:
        """Headers the answer carries (e.g. ``Retry-After``)."""
        return None


class InvalidInput(PushgateError):
    status = 400


class Unauthorized(PushgateError):
    status = 401


class Forbidden(PushgateError):
    status = 403


class NotFound(PushgateError):
    status = 404


class Conflict(PushgateError):
    status = 409


class PayloadTooLarge(PushgateError):
    status = 413


class UnsupportedMediaType(PushgateError):
    status = 415


class TooManyRequests(PushgateError):
    """Answered 429 with ``Retry-After: retry_after`` (seconds)."""

    status = 429

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    @property
    def headers(self) -> dict[str, str] | None:
        return {"Retry-After": str(self.retry_after)}


# Largest id a client may name (ids are signed 64-bit integers in storage).
MAX_ID = 2**63 - 1
