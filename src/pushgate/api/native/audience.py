"""The native API's audience, translations and campaign: request models and their
translation into the core's ``Audience``, ``Translations`` and ``Campaign``
(docs/audience.md)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from pushgate.domain import addresses
from pushgate.domain.audience import Audience, Condition
from pushgate.domain.errors import InvalidInput
from pushgate.domain.subscribers import Identifiers, parse_identifiers
from pushgate.domain.translations import Translations, translation
from pushgate.services.send import Campaign

Platform = Literal["ios", "android", "huawei", "web", "channel"]
Values = list[str | float | bool]


class ConditionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64, description="`d_<name>` or `c_<name>`.")
    op: Literal["in", "not_in", "exists", "missing", "gt", "gte", "lt", "lte"] = Field(
        "in",
        description="`in`/`not_in` one of `values`; `exists`/`missing`; `gt`, `gte`, `lt`, "
        "`lte` compare with one number (a date: milliseconds since the epoch).",
    )
    values: Values = Field(default_factory=list, max_length=1000)


class AudienceIn(BaseModel):
    """Which of the app's devices get the notification: every rule must hold (an empty list
    is no restriction). See docs/audience.md."""

    model_config = ConfigDict(extra="forbid")

    platforms: list[Platform] = Field(default_factory=list)
    exclude_platforms: list[Platform] = Field(default_factory=list)
    countries: list[str] = Field(default_factory=list, max_length=300)
    exclude_countries: list[str] = Field(default_factory=list, max_length=300)
    languages: list[str] = Field(default_factory=list, max_length=300)
    exclude_languages: list[str] = Field(default_factory=list, max_length=300)
    tags: list[str] = Field(default_factory=list, max_length=1000)
    exclude_tags: list[str] = Field(default_factory=list, max_length=1000)
    events: list[str] = Field(default_factory=list, max_length=1000)
    exclude_events: list[str] = Field(default_factory=list, max_length=1000)
    attributes: list[ConditionIn] = Field(default_factory=list, max_length=50)
    subscribers: list[dict[str, str]] | None = Field(
        None,
        max_length=1000,
        description="Only these subscribers, each by its identifiers, e.g. "
        '`[{"external_id": "u-1"}, {"email": "ann@example.com"}]`.',
    )
    optin_required: bool = Field(False, description="Leave out who withdrew push opt-in.")
    engaged_only: bool = Field(
        False, description="Leave out subscribers not active within `unengaged_after_days`."
    )
    last_active_device_only: bool = Field(
        False, description="Only each subscriber's most recently active device."
    )
    personal: bool = Field(
        False, description="Also the account's personal channel devices (no app)."
    )

    def identifiers(self) -> list[Identifiers]:
        return [
            parse_identifiers(item, field=f"audience.subscribers[{n}]")
            for n, item in enumerate(self.subscribers or [])
        ]

    def to_audience(self, subscriber_ids: tuple[int, ...] | None) -> Audience:
        def upper(items: list[str], field: str) -> tuple[str, ...]:
            return tuple(addresses.country_code(c, field) for c in items)

        def tags(items: list[str]) -> tuple[str, ...]:
            return tuple(dict.fromkeys(items))

        def languages(items: list[str], field: str) -> tuple[str, ...]:
            return tuple(addresses.language_tag(item, field) for item in items)

        try:
            conditions = tuple(Condition(c.name, c.op, tuple(c.values)) for c in self.attributes)
        except InvalidInput as exc:
            raise InvalidInput(f"audience.attributes: {exc.message}") from exc
        return Audience(
            platforms=tuple(self.platforms),
            exclude_platforms=tuple(self.exclude_platforms),
            countries=upper(self.countries, "audience.countries"),
            exclude_countries=upper(self.exclude_countries, "audience.exclude_countries"),
            languages=languages(self.languages, "audience.languages"),
            exclude_languages=languages(self.exclude_languages, "audience.exclude_languages"),
            tags=tags(self.tags),
            exclude_tags=tags(self.exclude_tags),
            events=tags(self.events),
            exclude_events=tags(self.exclude_events),
            attributes=conditions,
            subscribers=subscriber_ids,
            optin_required=self.optin_required,
            engaged_only=self.engaged_only,
            last_active_device_only=self.last_active_device_only,
            personal=self.personal,
        )


class TranslationIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    language: str = Field(min_length=2, max_length=35, description="BCP 47, e.g. `en`, `pt-BR`.")
    title: str | None = Field(None, max_length=200)
    message: str = Field(min_length=1, max_length=16_384)
    image_url: str | None = Field(None, max_length=2048)
    link: str | None = Field(None, max_length=2048, description="Opened on tap (deep link).")


class TranslationsIn(BaseModel):
    """The text in several languages: each device gets its language's, else its base
    language's (`pt` for `pt-BR`), else the default's."""

    model_config = ConfigDict(extra="forbid")

    default_language: str = Field(min_length=2, max_length=35)
    items: list[TranslationIn] = Field(min_length=1, max_length=100)

    def to_translations(self) -> Translations:
        items = tuple(
            translation(
                t.language,
                title=t.title,
                message=t.message,
                image_url=t.image_url,
                link=t.link,
                where=f"translations.items[{n}]",
            )
            for n, t in enumerate(self.items)
        )
        default = addresses.language_tag(self.default_language, "translations.default_language")
        return Translations(default, items)


class CampaignIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(
        None,
        min_length=1,
        max_length=64,
        description="Your id of the campaign (per app); sends with the same id count together.",
    )
    name: str | None = Field(None, min_length=1, max_length=200)

    def to_campaign(self) -> Campaign:
        return Campaign(self.id, self.name)
