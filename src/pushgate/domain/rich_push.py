"""Rich pushes: a carousel or slider of items the app shows instead of one plain alert.

Each item has an image, a headline, a description, an id and key/value ``links`` for the app
(Insider's ``advanced_push_payload``). Providers carry the items as data for the app's own
code: APNs with ``mutable-content`` for a notification service extension, FCM and HMS in the
data payload. Platforms without rich pushes (web, the device channel) get the first item's
image and link instead (``fallback_image``/``fallback_link``). docs/insider.md has the mapping.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pushgate.domain.errors import InvalidInput

RichKind = Literal["carousel", "slider"]
RICH_KINDS: tuple[str, ...] = ("carousel", "slider")
MAX_ITEMS = 20
MAX_TEXT_CHARS = 1000
MAX_URL_CHARS = 2048
MAX_LINKS = 20
MAX_LINK_KEY_CHARS = 64


def check_links(links: Mapping[str, str], where: str) -> dict[str, str]:
    """Key/value links for the app: at most ``MAX_LINKS`` keys of at most 64 characters,
    values of at most 2048; a key ``aps`` would clash with APNs's own dictionary."""
    if len(links) > MAX_LINKS:
        raise InvalidInput(f"{where}: at most {MAX_LINKS} keys")
    checked: dict[str, str] = {}
    for key, value in links.items():
        if not isinstance(key, str) or not 0 < len(key) <= MAX_LINK_KEY_CHARS:
            raise InvalidInput(f"{where}: keys are 1 to {MAX_LINK_KEY_CHARS} characters")
        if key == "aps":
            raise InvalidInput(f"{where}: the key 'aps' is reserved by APNs")
        if not isinstance(value, str) or not 0 < len(value) <= MAX_URL_CHARS:
            raise InvalidInput(f"{where}.{key}: a value is 1 to {MAX_URL_CHARS} characters")
        checked[key] = value
    return checked


@dataclass(frozen=True, slots=True)
class RichItem:
    id: int
    image_url: str
    headline: str
    description: str
    links: Mapping[str, str]

    def __post_init__(self) -> None:
        if not self.image_url.startswith("https://") or len(self.image_url) > MAX_URL_CHARS:
            raise InvalidInput(f"item {self.id}: image_url must be an https:// URL")
        for name in ("headline", "description"):
            if len(getattr(self, name)) > MAX_TEXT_CHARS:
                raise InvalidInput(f"item {self.id}: {name} is at most {MAX_TEXT_CHARS} characters")
        check_links(self.links, f"item {self.id} deep_links")

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "image_url": self.image_url,
            "headline": self.headline,
            "description": self.description,
            "deep_links": dict(self.links),
        }


@dataclass(frozen=True, slots=True)
class RichPush:
    kind: RichKind
    items: tuple[RichItem, ...]

    def __post_init__(self) -> None:
        if self.kind not in RICH_KINDS:
            raise InvalidInput("a rich push is a carousel or a slider")
        if not 0 < len(self.items) <= MAX_ITEMS:
            raise InvalidInput(f"a rich push has 1 to {MAX_ITEMS} items")

    def to_dict(self) -> dict[str, Any]:
        """What the app receives (``pushgate_rich``): the kind and the items."""
        return {"type": self.kind, "items": [item.to_dict() for item in self.items]}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> RichPush:
        return cls(
            raw["type"],
            tuple(
                RichItem(
                    int(item["id"]),
                    item["image_url"],
                    item["headline"],
                    item["description"],
                    dict(item.get("deep_links") or {}),
                )
                for item in raw["items"]
            ),
        )

    @property
    def fallback_image(self) -> str:
        return self.items[0].image_url

    @property
    def fallback_link(self) -> str | None:
        """The first item's first https:// link, for platforms that open one URL on tap."""
        for value in self.items[0].links.values():
            if value.startswith("https://"):
                return value
        return None
