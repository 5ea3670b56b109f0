"""How a notification is presented on a device, beyond its title and message.

Every field is optional; each transport maps them to its provider's payload in its own
``payload`` function (``transports/apns.py``, ``fcm.py``, ``hms.py``, ``webpush.py``).
``ios`` and ``android`` override the common fields on their platforms (``android`` covers
FCM's Android devices and Huawei): a transport reads ``for_platform(...)``. Stored as one
JSON object in ``notifications.options``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any, Literal

import orjson

from pushgate.domain.errors import InvalidInput
from pushgate.domain.rich_push import RichPush, check_links

Priority = Literal["high", "normal"]

MAX_URL_CHARS = 2048
MAX_KEY_CHARS = 64


def _check_key(name: str, value: str | None) -> None:
    if value is not None and not 0 < len(value) <= MAX_KEY_CHARS:
        raise InvalidInput(f"{name} must be 1 to {MAX_KEY_CHARS} characters")


def _check_badge(value: int | None) -> None:
    if value is not None and not 0 <= value <= 999_999:
        raise InvalidInput("badge must be a whole number from 0 to 999999")


@dataclass(frozen=True, slots=True)
class PlatformOptions:
    """What one platform does differently; None keeps the common value."""

    sound: str | None = None
    badge: int | None = None
    thread_id: str | None = None
    channel_id: str | None = None
    mutable_content: bool | None = None
    content_available: bool | None = None
    silent: bool | None = None
    links: Mapping[str, str] | None = None

    def __post_init__(self) -> None:
        _check_key("sound", self.sound)
        _check_badge(self.badge)
        _check_key("thread_id", self.thread_id)
        _check_key("channel_id", self.channel_id)
        if self.links is not None:
            check_links(self.links, "deep links")

    def given(self) -> dict[str, Any]:
        return {
            f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None
        }


@dataclass(frozen=True, slots=True)
class PushOptions:
    image_url: str | None = None  # an https image shown with the notification
    deep_link: str | None = None  # URL or app route opened when the notification is tapped
    sound: str | None = None  # sound file name on the device, or "default"
    badge: int | None = None  # the app icon's badge count (iOS, Huawei)
    collapse_key: str | None = None  # a newer notification with the same key replaces this one
    priority: Priority = "high"
    icon_url: str | None = None  # the small icon of a web notification (https)
    thread_id: str | None = None  # groups notifications on iOS (aps.thread-id)
    channel_id: str | None = None  # the Android notification channel
    mutable_content: bool = False  # iOS: a notification service extension may change it
    content_available: bool = False  # iOS: also wake the app in the background
    silent: bool = False  # a background push: nothing is shown, the app gets the data
    links: Mapping[str, str] | None = None  # key/value deep links passed to the app
    rich: RichPush | None = None  # a carousel or slider (domain/rich_push.py)
    ios: PlatformOptions | None = None
    android: PlatformOptions | None = None

    def __post_init__(self) -> None:
        for name in ("image_url", "deep_link", "icon_url"):
            value = getattr(self, name)
            if value is not None and (not value or len(value) > MAX_URL_CHARS):
                raise InvalidInput(f"{name} must be 1 to {MAX_URL_CHARS} characters")
        for name in ("image_url", "icon_url"):
            value = getattr(self, name)
            if value is not None and not value.startswith("https://"):
                raise InvalidInput(f"{name} must be an https:// URL")
        _check_key("sound", self.sound)
        _check_badge(self.badge)
        _check_key("collapse_key", self.collapse_key)
        _check_key("thread_id", self.thread_id)
        _check_key("channel_id", self.channel_id)
        if self.priority not in ("high", "normal"):
            raise InvalidInput("priority must be 'high' or 'normal'")
        if self.links is not None:
            check_links(self.links, "deep links")

    def for_platform(self, platform: str) -> PushOptions:
        """The options a device of ``platform`` gets: its platform's overrides applied."""
        overrides = self.ios if platform == "ios" else None
        if platform in ("android", "huawei"):
            overrides = self.android
        if self.ios is None and self.android is None:
            return self
        return replace(self, ios=None, android=None, **(overrides.given() if overrides else {}))

    def to_json(self) -> str | None:
        """The stored form; None when every field has its default."""
        given: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value == f.default:
                continue
            if isinstance(value, RichPush):
                value = value.to_dict()
            elif isinstance(value, PlatformOptions):
                value = value.given()
            given[f.name] = value
        if not given:
            return None
        return orjson.dumps(given).decode()

    @classmethod
    def from_json(cls, text: str | None) -> PushOptions:
        if not text:
            return DEFAULT_OPTIONS
        raw: dict[str, Any] = orjson.loads(text)
        if "rich" in raw:
            raw["rich"] = RichPush.from_dict(raw["rich"])
        for name in ("ios", "android"):
            if name in raw:
                raw[name] = PlatformOptions(**raw[name])
        return cls(**raw)


DEFAULT_OPTIONS = PushOptions()
