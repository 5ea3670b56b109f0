"""How a notification is presented on a device, beyond its title and message.

Every field is optional; each transport maps them to its provider's payload in its own
``payload`` function (``transports/apns.py``, ``fcm.py``, ``hms.py``, ``webpush.py``).
Stored as one JSON object in ``notifications.options``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

import orjson

from pushgate.domain.errors import InvalidInput

Priority = Literal["high", "normal"]

MAX_URL_CHARS = 2048
MAX_KEY_CHARS = 64


@dataclass(frozen=True, slots=True)
class PushOptions:
    image_url: str | None = None  # an https image shown with the notification
    deep_link: str | None = None  # URL or app route opened when the notification is tapped
    sound: str | None = None  # sound file name on the device, or "default"
    badge: int | None = None  # the app icon's badge count (iOS, Huawei)
    collapse_key: str | None = None  # a newer notification with the same key replaces this one
    priority: Priority = "high"

    def __post_init__(self) -> None:
        for name in ("image_url", "deep_link"):
            value = getattr(self, name)
            if value is not None and (not value or len(value) > MAX_URL_CHARS):
                raise InvalidInput(f"{name} must be 1 to {MAX_URL_CHARS} characters")
        if self.image_url is not None and not self.image_url.startswith("https://"):
            raise InvalidInput("image_url must be an https:// URL")
        if self.sound is not None and not 0 < len(self.sound) <= MAX_KEY_CHARS:
            raise InvalidInput(f"sound must be 1 to {MAX_KEY_CHARS} characters")
        if self.badge is not None and not 0 <= self.badge <= 999_999:
            raise InvalidInput("badge must be a whole number from 0 to 999999")
        if self.collapse_key is not None and not 0 < len(self.collapse_key) <= MAX_KEY_CHARS:
            raise InvalidInput(f"collapse_key must be 1 to {MAX_KEY_CHARS} characters")
        if self.priority not in ("high", "normal"):
            raise InvalidInput("priority must be 'high' or 'normal'")

    def to_json(self) -> str | None:
        """The stored form; None when every field has its default."""
        given = {key: value for key, value in asdict(self).items() if value is not None}
        if given == {"priority": "high"}:
            return None
        return orjson.dumps(given).decode()

    @classmethod
    def from_json(cls, text: str | None) -> PushOptions:
        if not text:
            return DEFAULT_OPTIONS
        raw: dict[str, Any] = orjson.loads(text)
        return cls(**raw)


DEFAULT_OPTIONS = PushOptions()
