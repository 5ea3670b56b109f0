"""The transport interface for provider platforms (ios, android, huawei, web).

A transport sends one notification to a batch of devices and reports one ``Outcome`` per
device, in order. It never touches storage: the delivery worker records outcomes, retries, and
disables devices whose address is dead. The device channel is the exception: see
``transports/channel.py``.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Generic, Protocol, TypeVar, cast

import orjson

from pushgate.domain.credentials import Credentials
from pushgate.domain.outcomes import Outcome, PermanentFailure
from pushgate.domain.push_options import DEFAULT_OPTIONS, PushOptions
from pushgate.domain.translations import Translations
from pushgate.transports.http import HttpSender, ProviderRequest, ProviderResponse

# What a send to a provider raises when no answer came (refused, reset, timed out): each
# transport turns it into ``RetryLater`` for the targets of that request.
CONNECTION_ERRORS = (OSError, TimeoutError)

MAX_FIELD_CHARS = 100


def short_text(value: object, limit: int = MAX_FIELD_CHARS) -> str:
    """A provider's error code or message as it may go into a stored reason: a string
    field only (never a whole body), printable characters, one line, at most ``limit``
    characters."""
    if not isinstance(value, str | int) or isinstance(value, bool):
        return ""
    text = "".join(char if char.isprintable() else " " for char in str(value)[: limit * 2])
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


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
    options: PushOptions = DEFAULT_OPTIONS
    # The notification's text in other languages; ``localized`` picks a device's.
    translations: Translations | None = None

    @property
    def data(self) -> dict[str, Any]:
        """The notification's data: string keys, JSON values."""
        value = orjson.loads(self.data_json) if self.data_json else {}
        return value if isinstance(value, dict) else {}

    def localized(self, language: str | None) -> Content:
        """The content a device of ``language`` gets: its translation's title, message,
        image, icon and link (see ``domain.translations``)."""
        if self.translations is None:
            return self
        chosen = self.translations.choose(language)
        options = replace(
            self.options,
            image_url=chosen.image_url or self.options.image_url,
            deep_link=chosen.link or self.options.deep_link,
            icon_url=chosen.icon_url or self.options.icon_url,
        )
        return replace(
            self, title=chosen.title, message=chosen.message, options=options, translations=None
        )

    def variant(self, language: str | None) -> str | None:
        """Which translation a device of ``language`` gets (None: there are none)."""
        if self.translations is None:
            return None
        return self.translations.choose(language).language

    def ttl_seconds(self, now_ms: int) -> int:
        """Seconds left until the notification expires (0 when it has)."""
        return max(0, (self.expires_ms - now_ms) // 1000)

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
            options=PushOptions.from_json(row[9]),
            translations=(Translations.from_json(row[12]) if len(row) > 12 and row[12] else None),
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


def no_credentials(platform: str, app_key: str | None) -> PermanentFailure:
    """The outcome of a send for an app without credentials for this platform: it fails with
    the reason ``InvalidCertificate``, as a provider answers a request without valid ones."""
    whose = f"app {app_key}" if app_key else "a notification without an app"
    return PermanentFailure(
        f"InvalidCertificate: no {platform} provider credentials are configured for {whose}"
    )


class CredentialSource(Protocol):
    """Where transports find an app's provider credentials (decrypted, cached briefly)."""

    async def get(self, app_key: str | None, platform: str) -> Credentials | None: ...


C = TypeVar("C", bound=Credentials)


async def for_each_bounded(
    count: int, concurrency: int, step: Callable[[int], Awaitable[None]]
) -> None:
    """``await step(index)`` for every index below ``count``, at most ``concurrency`` at a
    time: that many workers take the next index until none is left (``step`` records its own
    result, by index). With one worker, no task is created."""
    indexes = iter(range(count))

    async def worker() -> None:
        for index in indexes:
            await step(index)

    workers = min(max(1, concurrency), count)
    if workers == 1:
        await worker()
    elif workers > 1:
        async with asyncio.TaskGroup() as group:
            for _ in range(workers):
                group.create_task(worker())


async def send_each(
    sender: HttpSender, requests: Sequence[ProviderRequest], concurrency: int
) -> list[ProviderResponse | Exception]:
    """Each request's answer, or the exception its send raised, in order. A sender with a
    ``send_all`` of its own (HTTP/2: many requests in flight per connection, no task per
    request) takes the whole batch; any other sends them one by one, at most
    ``concurrency`` at a time."""
    send_all = getattr(sender, "send_all", None)
    if send_all is not None:
        return cast(list[ProviderResponse | Exception], await send_all(requests, concurrency))
    return await send_one_by_one(sender.send, requests, concurrency)


async def send_one_by_one(
    send: Callable[[ProviderRequest], Awaitable[ProviderResponse]],
    requests: Sequence[ProviderRequest],
    concurrency: int,
) -> list[ProviderResponse | Exception]:
    """Each request's answer through ``send``, or the exception it raised, in order; at most
    ``concurrency`` requests at a time."""
    results: list[ProviderResponse | Exception] = [OSError("not sent")] * len(requests)

    async def step(index: int) -> None:
        try:
            results[index] = await send(requests[index])
        except Exception as exc:  # noqa: BLE001 - the caller decides, per request
            results[index] = exc

    await for_each_bounded(len(requests), concurrency, step)
    return results


class ProviderTransport(Transport, Generic[C]):
    """A transport that sends with the credentials of the notification's app, through the
    ``HttpSender`` it owns (``close`` closes it).

    Subclasses implement ``send_with``; a notification whose app has no credentials for the
    platform fails with ``InvalidCertificate`` without any request."""

    def __init__(self, credentials: CredentialSource, sender: HttpSender) -> None:
        self._credentials = credentials
        self._sender = sender

    async def send(self, content: Content, targets: Sequence[Target]) -> list[Outcome]:
        found = await self._credentials.get(content.app_key, self.platform)
        if found is None:
            failure = no_credentials(self.platform, content.app_key)
            return [failure for _ in targets]
        return await self.send_with(found, content, targets)  # type: ignore[arg-type]

    @abstractmethod
    async def send_with(
        self, credentials: C, content: Content, targets: Sequence[Target]
    ) -> list[Outcome]:
        """One outcome per target, in order; the provider's answers mapped to outcomes."""

    def streams_in_flight(self) -> int | None:
        """HTTP/2 requests in flight, when the sender multiplexes them (for monitoring)."""
        count = getattr(self._sender, "streams_in_flight", None)
        return None if count is None else int(count())

    async def close(self) -> None:
        await self._sender.close()
