"""A notification's text in several languages, and which one a device gets.

Each device gets the translation of its language (the device's, else its subscriber's),
else of its base language (``pt-BR`` gets ``pt``), else the default language's. Languages
are BCP 47 tags compared without letter case.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import orjson

from pushgate.domain import addresses
from pushgate.domain.errors import InvalidInput

MAX_TRANSLATIONS = 100


@dataclass(frozen=True, slots=True)
class Translation:
    language: str
    title: str | None
    message: str
    image_url: str | None = None
    icon_url: str | None = None
    link: str | None = None


@dataclass(frozen=True, slots=True)
class Translations:
    default_language: str
    items: tuple[Translation, ...]

    def __post_init__(self) -> None:
        languages = [item.language.lower() for item in self.items]
        if len(set(languages)) != len(languages):
            raise InvalidInput("translations: each language may appear once")
        if self.default_language.lower() not in languages:
            raise InvalidInput(
                f"translations must include the default language {self.default_language}"
            )
        if len(self.items) > MAX_TRANSLATIONS:
            raise InvalidInput(f"at most {MAX_TRANSLATIONS} translations")

    def choose(self, language: str | None) -> Translation:
        by_language = {item.language.lower(): item for item in self.items}
        if language:
            wanted = language.lower()
            found = by_language.get(wanted) or by_language.get(wanted.split("-", 1)[0])
            if found is not None:
                return found
        return by_language[self.default_language.lower()]

    def to_json(self) -> str:
        return orjson.dumps(
            {
                "default": self.default_language,
                "items": [
                    {k: v for k, v in vars_of(item).items() if v is not None} for item in self.items
                ],
            }
        ).decode()

    @classmethod
    def from_json(cls, text: str) -> Translations:
        raw = orjson.loads(text)
        return cls(raw["default"], tuple(Translation(**item) for item in raw["items"]))


def vars_of(item: Translation) -> dict[str, str | None]:
    return dict(asdict(item))


def translation(
    language: object,
    *,
    title: object = None,
    message: object,
    image_url: object = None,
    icon_url: object = None,
    link: object = None,
    where: str = "translation",
) -> Translation:
    """A checked translation (the language in standard BCP 47 form)."""
    tag = addresses.language_tag(language, f"{where}.language")
    for name, value in (("title", title), ("image_url", image_url), ("icon_url", icon_url)):
        if value is not None and (not isinstance(value, str) or "\x00" in value):
            raise InvalidInput(f"{where}.{name} must be text")
    if not isinstance(message, str) or not message or "\x00" in message:
        raise InvalidInput(f"{where}: the message text is required")
    for name, value in (("image_url", image_url), ("icon_url", icon_url)):
        if value is not None and not str(value).startswith("https://"):
            raise InvalidInput(f"{where}.{name} must be an https:// URL")
    if link is not None and (not isinstance(link, str) or not link or len(link) > 2048):
        raise InvalidInput(f"{where}.link must be a URL of at most 2048 characters")
    return Translation(
        tag,
        title if isinstance(title, str) else None,
        message,
        image_url if isinstance(image_url, str) else None,
        icon_url if isinstance(icon_url, str) else None,
        link,
    )
