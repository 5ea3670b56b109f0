"""What a transport reports for one delivery: the fixed set of outcomes.

- ``Delivered``: the provider (or the device channel) accepted the notification.
- ``RetryLater``: a passing failure (rate limit, provider outage, dropped connection); try again,
  not before ``after_seconds`` when the provider said so (``Retry-After``).
- ``TokenInvalid``: the device's address is dead (uninstalled app, expired subscription); the
  device is disabled with ``reason`` and later sends skip it.
- ``PermanentFailure``: this notification can never reach this device as it is (payload too
  large, bad credentials); ``reason`` is the provider's.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Delivered:
    pass


@dataclass(frozen=True, slots=True)
class RetryLater:
    reason: str
    after_seconds: float | None = None


@dataclass(frozen=True, slots=True)
class TokenInvalid:
    reason: str


@dataclass(frozen=True, slots=True)
class PermanentFailure:
    reason: str


Outcome = Delivered | RetryLater | TokenInvalid | PermanentFailure

MAX_REASON_CHARS = 200


def short_reason(reason: str) -> str:
    """A provider reason cut to what the delivery row keeps."""
    return reason if len(reason) <= MAX_REASON_CHARS else reason[: MAX_REASON_CHARS - 1] + "…"
