"""Import entries: what ``pushgate subscribers import`` reads, checked by the API's rules
before anything is written (no I/O).

An **entry** is the body of ``PUT /api/v1/apps/{app_id}/subscribers`` (``identifiers``,
``language``, ``country``, ``timezone``, ``optins``, ``attributes``, ``tags``, ``add_tags``)
plus ``devices``: device registration bodies of ``POST /api/v1/devices`` (``platform``,
``token`` or ``subscription``, ``name``, ``language``, ``country``, ``timezone``, ``model``,
``os_version``, ``app_version``) that the entry's subscriber owns. The domain's rules check
every field, with the API's messages (``InvalidInput``): the import rejects an entry that
breaks one, with its line and the reason, and goes on.

Two kinds of field are refused, because running an import again must change nothing:
``events`` (each run would count them again) and channel devices (no provider address would
find them again).

How entries are found in and written to the database: ``services/import_batch.py``; the
import as a whole: ``services/subscriber_import.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from pushgate.domain import addresses
from pushgate.domain.errors import InvalidInput
from pushgate.domain.subscribers import (
    STANDARD,
    Identifiers,
    Profile,
    parse_identifiers,
    parse_profile,
)

SUBSCRIBER_FIELDS = (
    "identifiers",
    "language",
    "country",
    "timezone",
    "optins",
    "attributes",
    "tags",
    "add_tags",
    "devices",
)
DEVICE_FIELDS = (
    "platform",
    "token",
    "subscription",
    "app_id",
    "name",
    "language",
    "country",
    "timezone",
    "model",
    "os_version",
    "app_version",
)
_SUBSCRIBER_KEYS = frozenset((*SUBSCRIBER_FIELDS, "events"))
_DEVICE_KEYS = frozenset(DEVICE_FIELDS)
DEVICE_PROFILE = ("name", "language", "country", "timezone", "model", "os_version", "app_version")
# What a registration allows of the free-text fields (``DeviceService.register``).
_TEXT_LIMITS = {"name": 200, "model": 100, "os_version": 50, "app_version": 50}
_OWNER_FIELDS = (*STANDARD, "identifiers")
_PLACE = ("language", "country", "timezone")
_PLACE_CHECKS: dict[str, Callable[[object, str], str]] = {
    "language": addresses.language_tag,
    "country": addresses.country_code,
    "timezone": addresses.timezone_name,
}
NO_IDENTIFIERS = (
    "identifiers are required: at least one of external_id, user_id, uuid, email, "
    "phone_number or a custom key"
)


@dataclass(frozen=True, slots=True)
class SourceRow:
    """An entry as read from a file: the line it starts on, and its body (an object), or why
    the line could not be read."""

    line: int
    body: object = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class DeviceEntry:
    platform: str
    # The normalized provider address (``addresses.push_address``).
    address: str
    # The profile fields given, validated; those left out stay as they are.
    profile: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class Entry:
    line: int
    identifiers: Identifiers
    profile: Profile
    devices: tuple[DeviceEntry, ...]
    # ``identifiers.standard()`` as pairs, then the custom ones: what finds the subscriber.
    named: tuple[tuple[str, str], ...] = ()


@lru_cache(maxsize=4096)
def _checked(check: Callable[[object, str], str], value: str, field: str) -> str:
    return check(value, field)


def _place(raw: Mapping[str, Any]) -> Profile:
    """``language``, ``country`` and ``timezone`` as ``parse_profile`` checks them; a file
    holds few different ones, so each is checked once."""
    values = tuple(raw.get(name) for name in _PLACE)
    if all(value is None or isinstance(value, str) for value in values):
        return _place_of(*values)
    return parse_profile(dict(zip(_PLACE, values, strict=True)))


@lru_cache(maxsize=4096)
def _place_of(language: str | None, country: str | None, timezone: str | None) -> Profile:
    return parse_profile({"language": language, "country": country, "timezone": timezone})


def _text(value: object, field: str, limit: int) -> str:
    if not isinstance(value, str):
        raise InvalidInput(f"{field} must be a string")
    if not value or len(value) > limit or "\x00" in value:
        raise InvalidInput(f"{field} must be 1 to {limit} characters")
    return value


def parse_device(raw: object, where: str, app_key: str) -> DeviceEntry:
    """A device of an entry, checked as a registration is (``where`` names it in messages)."""
    if not isinstance(raw, Mapping):
        raise InvalidInput(f"{where} must be an object: a device registration")
    for key in raw:
        if key in _DEVICE_KEYS:
            continue
        if key in _OWNER_FIELDS:
            raise InvalidInput(
                f"{where}.{key}: a device belongs to the subscriber of its entry; give the "
                "owner's identifiers in identifiers"
            )
        raise InvalidInput(f"{where}.{key} is not a field of a device: {', '.join(DEVICE_FIELDS)}")
    platform = raw.get("platform")
    if platform == "channel":
        raise InvalidInput(
            f"{where}.platform: channel devices are not imported; they have no provider "
            "address, and register themselves when they connect"
        )
    if not isinstance(platform, str) or platform not in addresses.PUSH_PLATFORMS:
        raise InvalidInput(f"{where}.platform must be one of {', '.join(addresses.PUSH_PLATFORMS)}")
    app = raw.get("app_id")
    if app is not None and app != app_key:
        raise InvalidInput(
            f"{where}.app_id is {app!r}, but this import is into app {app_key}: leave it out"
        )
    address = addresses.push_address(
        platform,
        raw.get("token"),
        raw.get("subscription"),
        token_field=f"{where}.token",
        subscription_field=f"{where}.subscription",
    )
    if address is None:  # not for a push platform; kept for the type checker
        raise InvalidInput(f"{where}: a {platform} device needs its provider address")
    profile: dict[str, str] = {}
    for name in DEVICE_PROFILE:
        value = raw.get(name)
        if value is None:
            continue
        where_field = f"{where}.{name}"
        check = _PLACE_CHECKS.get(name)
        if check is None:
            profile[name] = _text(value, where_field, _TEXT_LIMITS[name])
        elif isinstance(value, str):
            profile[name] = _checked(check, value, where_field)
        else:
            profile[name] = check(value, where_field)
    return DeviceEntry(platform, address, profile)


def parse_entry(line: int, body: object, app_key: str) -> Entry:
    """An entry checked by the rules of an upsert and of device registration."""
    if not isinstance(body, Mapping):
        raise InvalidInput('an entry is an object: a subscriber, {"identifiers": {...}, ...}')
    if body.get("events"):
        raise InvalidInput(
            "events are not imported: every run of an import would count them again; record "
            "them with PUT /api/v1/apps/{app_id}/subscribers"
        )
    for key in body:
        if key not in _SUBSCRIBER_KEYS:
            raise InvalidInput(
                f"{key} is not a field of a subscriber: {', '.join(SUBSCRIBER_FIELDS)}"
            )
    raw = {key: value for key, value in body.items() if value is not None and key != "events"}
    identifiers = parse_identifiers(raw.pop("identifiers", {}))
    if not identifiers:
        raise InvalidInput(NO_IDENTIFIERS)
    listed = raw.pop("devices", [])
    if not isinstance(listed, list):
        raise InvalidInput("devices must be a list of device registrations")
    place = _place(raw)
    rest = parse_profile({key: value for key, value in raw.items() if key not in _PLACE})
    profile = Profile(
        place.language,
        place.country,
        place.timezone,
        rest.optins,
        rest.attributes,
        rest.tags,
        rest.add_tags,
        rest.events,
    )
    found = tuple(
        parse_device(item, f"devices[{number}]", app_key) for number, item in enumerate(listed)
    )
    named = (*identifiers.standard().items(), *identifiers.custom)
    return Entry(line, identifiers, profile, found, named)
