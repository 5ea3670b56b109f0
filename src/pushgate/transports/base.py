"""The transport interface for provider platforms (ios, android, huawei, web).

A transport sends one notification to a batch of devices and reports one ``Outcome`` per
device, in order. It never touches storage: the delivery worker records outcomes, retries, and
disables devices whose address is dead. The device channel is the exception: see
``transports/channel.py``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pushgate.domain.outcomes import Outcome, PermanentFailure

PUSH_PLATFORMS = ("ios", "android", "huawei", "web")


@dataclass(frozen=True, slots=True)
class Content:
    """What a notification says, as the transports need it."""

    notification_id: int
    account_id: int
    app_key: str | None
    event: str | None
    title: str | None
    message: str
    data_json: str
    created_ms: int
    expires_ms: int

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> Content:
        """From a row of ``DeliveryWrites.notifications_by_id``."""
        return cls(
            notification_id=int(row[0]),
            account_id=int(row[1]),
            app_key=row[2],
            event=row[3],
            title=row[4],
            message=row[5],
            data_json=row[6],
            created_ms=int(row[7]),
            expires_ms=int(row[8]),
        )


@dataclass(frozen=True, slots=True)
class Target:
    """One device to send to: its provider address (token, or Web Push subscription JSON)."""

    device_id: int
    address: str
    language: str | None = None
    timezone: str | None = None


class Transport(ABC):
    platform: str

    @abstractmethod
    async def send(self, content: Content, targets: Sequence[Target]) -> list[Outcome]:
        """One outcome per target, in the targets' order. Must not raise for a provider's
        answer; an unexpected exception counts as ``RetryLater`` for every target."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""


class UnconfiguredTransport(Transport):
    """A platform with no provider credentials: every delivery fails with the reason
    ``InvalidCertificate``, as a provider would answer a request without valid credentials."""

    def __init__(self, platform: str) -> None:
        self.platform = platform

    async def send(self, content: Content, targets: Sequence[Target]) -> list[Outcome]:
        reason = f"InvalidCertificate: no {self.platform} provider credentials are configured"
        return [PermanentFailure(reason) for _ in targets]


def default_transports() -> dict[str, Transport]:
    return {platform: UnconfiguredTransport(platform) for platform in PUSH_PLATFORMS}
