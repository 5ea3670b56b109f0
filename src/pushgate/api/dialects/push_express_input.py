"""Push.express request bodies read into the core's words: ``filters`` into an
``AppSelection`` and an ``Audience`` (domain), ``push`` into ``Translations``.

Filter keys (every one optional; null and empty lists mean no restriction):

- apps: ``all_apps``, ``app_ids_include``/``app_ids_exclude`` (app numbers),
  ``app_groups_include``/``app_groups_exclude`` (app group ids);
- ``all_countries``, ``countries_include``/``countries_exclude`` (ISO 3166-1 alpha-2);
- ``all_languages``, ``languages_include``/``languages_exclude``;
- ``all_audiences``, ``audiences_include``/``audiences_exclude`` (subscriber tags),
  ``audience_groups_include``/``audience_groups_exclude`` (audience group ids);
- ``event_include``/``event_exclude``: recorded events (a string or a list).

An include list and its exclude list share no element, and ``all_X: true`` forbids the
``X`` include lists.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pushgate.domain import addresses
from pushgate.domain.errors import InvalidInput
from pushgate.domain.schedules import AppSelection
from pushgate.domain.translations import MAX_TRANSLATIONS, Translations, translation

MAX_LIST = 1000
MAX_TITLE = 200
MAX_TEXT = 4000

FILTER_KEYS = (
    "all_apps",
    "app_ids_include",
    "app_ids_exclude",
    "app_groups_include",
    "app_groups_exclude",
    "all_countries",
    "countries_include",
    "countries_exclude",
    "all_languages",
    "languages_include",
    "languages_exclude",
    "all_audiences",
    "audiences_include",
    "audiences_exclude",
    "audience_groups_include",
    "audience_groups_exclude",
    "event_include",
    "event_exclude",
)
# For each "all_X": the include lists it forbids.
_ALL = {
    "all_apps": ("app_ids_include", "app_groups_include"),
    "all_countries": ("countries_include",),
    "all_languages": ("languages_include",),
    "all_audiences": ("audiences_include", "audience_groups_include"),
}
_PAIRS = (
    ("app_ids_include", "app_ids_exclude"),
    ("app_groups_include", "app_groups_exclude"),
    ("countries_include", "countries_exclude"),
    ("languages_include", "languages_exclude"),
    ("audiences_include", "audiences_exclude"),
    ("audience_groups_include", "audience_groups_exclude"),
    ("event_include", "event_exclude"),
)
TRANSLATION_KEYS = ("language", "title", "text", "image", "icon", "link")


@dataclass(frozen=True, slots=True)
class Filters:
    """The filters, read: the apps, and the audience's lists (tags of audience groups are
    looked up by the caller)."""

    apps: AppSelection
    countries: tuple[str, ...] = ()
    exclude_countries: tuple[str, ...] = ()
    languages: tuple[str, ...] = ()
    exclude_languages: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    exclude_tags: tuple[str, ...] = ()
    tag_groups: tuple[int, ...] = ()
    exclude_tag_groups: tuple[int, ...] = ()
    events: tuple[str, ...] = ()
    exclude_events: tuple[str, ...] = ()


def _list(raw: Mapping[str, Any], key: str, *, one_string: bool = False) -> list[Any]:
    value = raw.get(key)
    if value is None:
        return []
    if one_string and isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise InvalidInput(f"filters.{key} must be a list" + (" or a string" if one_string else ""))
    if len(value) > MAX_LIST:
        raise InvalidInput(f"filters.{key} has more than {MAX_LIST} elements")
    return list(dict.fromkeys(value))


def _ids(raw: Mapping[str, Any], key: str) -> tuple[int, ...]:
    values = _list(raw, key)
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise InvalidInput(f"filters.{key} must be a list of positive integer ids")
    return tuple(values)


def _texts(raw: Mapping[str, Any], key: str, *, one_string: bool = False) -> tuple[str, ...]:
    values = _list(raw, key, one_string=one_string)
    for value in values:
        if not isinstance(value, str) or not 0 < len(value) <= 200 or "\x00" in value:
            raise InvalidInput(f"filters.{key} must be a list of strings of 1 to 200 characters")
    return tuple(values)


def _flag(raw: Mapping[str, Any], key: str) -> bool:
    value = raw.get(key)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise InvalidInput(f"filters.{key} must be true, false or null")
    return value


def read_filters(raw: object) -> Filters:
    if not isinstance(raw, dict):
        raise InvalidInput("filters must be an object")
    unknown = sorted(set(raw) - set(FILTER_KEYS))
    if unknown:
        raise InvalidInput(
            f"filters has unknown keys: {', '.join(unknown)}; the keys are {', '.join(FILTER_KEYS)}"
        )
    for flag, includes in _ALL.items():
        if _flag(raw, flag):
            given = [key for key in includes if raw.get(key)]
            if given:
                raise InvalidInput(f"filters.{flag} is true: leave out {' and '.join(given)}")
    for include, exclude in _PAIRS:
        one_string = include.startswith("event")
        shared = set(_list(raw, include, one_string=one_string)) & set(
            _list(raw, exclude, one_string=one_string)
        )
        if shared:
            listed = ", ".join(sorted(str(x) for x in shared))
            raise InvalidInput(f"filters.{include} and filters.{exclude} share {listed}")
    countries = tuple(
        addresses.country_code(c, "filters.countries_include")
        for c in _texts(raw, "countries_include")
    )
    exclude_countries = tuple(
        addresses.country_code(c, "filters.countries_exclude")
        for c in _texts(raw, "countries_exclude")
    )
    languages = tuple(
        addresses.language_tag(x, "filters.languages_include")
        for x in _texts(raw, "languages_include")
    )
    exclude_languages = tuple(
        addresses.language_tag(x, "filters.languages_exclude")
        for x in _texts(raw, "languages_exclude")
    )
    return Filters(
        apps=AppSelection(
            all_apps=_flag(raw, "all_apps"),
            include=_ids(raw, "app_ids_include"),
            exclude=_ids(raw, "app_ids_exclude"),
            include_groups=_ids(raw, "app_groups_include"),
            exclude_groups=_ids(raw, "app_groups_exclude"),
        ),
        countries=countries,
        exclude_countries=exclude_countries,
        languages=languages,
        exclude_languages=exclude_languages,
        tags=_texts(raw, "audiences_include"),
        exclude_tags=_texts(raw, "audiences_exclude"),
        tag_groups=_ids(raw, "audience_groups_include"),
        exclude_tag_groups=_ids(raw, "audience_groups_exclude"),
        events=_texts(raw, "event_include", one_string=True),
        exclude_events=_texts(raw, "event_exclude", one_string=True),
    )


def _optional_text(raw: Mapping[str, Any], key: str, where: str, limit: int) -> str | None:
    value = raw.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > limit:
        raise InvalidInput(f"{where}.{key} must be a string of at most {limit} characters")
    return value


def read_push(raw: object) -> Translations:
    """``push``: ``default_lang`` and ``translations``."""
    if not isinstance(raw, dict):
        raise InvalidInput("push must be an object with default_lang and translations")
    unknown = sorted(set(raw) - {"default_lang", "translations"})
    if unknown:
        raise InvalidInput(f"push has unknown keys: {', '.join(unknown)}")
    default = raw.get("default_lang")
    if not isinstance(default, str) or len(default) != 2 or not default.isalpha():
        raise InvalidInput("push.default_lang is required: a 2-letter language code such as en")
    default = addresses.language_tag(default.lower(), "push.default_lang")
    items = raw.get("translations")
    if not isinstance(items, list) or not items:
        raise InvalidInput("push.translations must be a non-empty list")
    if len(items) > MAX_TRANSLATIONS:
        raise InvalidInput(f"push.translations has at most {MAX_TRANSLATIONS} elements")
    read = []
    for index, item in enumerate(items):
        where = f"push.translations[{index}]"
        if not isinstance(item, dict):
            raise InvalidInput(f"{where} must be an object")
        unknown = sorted(set(item) - set(TRANSLATION_KEYS))
        if unknown:
            raise InvalidInput(
                f"{where} has unknown keys: {', '.join(unknown)}; the keys are "
                f"{', '.join(TRANSLATION_KEYS)}"
            )
        if "language" not in item:
            raise InvalidInput(f"{where}.language is required")
        title = _optional_text(item, "title", where, MAX_TITLE)
        text = _optional_text(item, "text", where, MAX_TEXT)
        if not text:
            raise InvalidInput(f"{where}.text is required")
        read.append(
            translation(
                item["language"],
                title=title,
                message=text,
                image_url=_optional_text(item, "image", where, 2048),
                icon_url=_optional_text(item, "icon", where, 2048),
                link=_optional_text(item, "link", where, 2048),
                where=where,
            )
        )
    languages = {t.language.lower() for t in read}
    if default.lower() not in languages:
        raise InvalidInput(f"push.translations must contain the default language {default}")
    return Translations(default, tuple(read))
