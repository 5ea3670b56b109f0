"""Subscribers: how they are identified, and what their profile holds. Pure validation.

**Identifiers** find a subscriber among the app's: ``external_id`` (your id of the user; also
Push API v2's ``UserExternalId``), ``user_id`` (Push API v2's ``UserId``), ``uuid``, ``email``
(its domain in lower case) and ``phone_number`` (E.164), each unique per app, plus custom
keys of your own (``member_no``...), unique per app too. The vendor prefix ``INSIDER.`` is
accepted on every key and means the same identifier (``INSIDER.email`` is ``email``).

**Profile**: language (BCP 47), country (ISO 3166-1 alpha-2), time zone, opt-ins (push,
email, sms, location), typed attributes, tags and named events.

Attributes are named ``d_<name>`` (default attributes, e.g. ``d_wp_browser``) or
``c_<name>`` (custom ones). A value is a string, a number, a boolean, a date given as
``{"date": "2026-05-01T12:00:00Z"}`` (ISO 8601; a date alone means midnight UTC), or a list of
one of those kinds; ``null`` removes the attribute.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from pushgate.domain import addresses
from pushgate.domain.errors import InvalidInput

VENDOR_PREFIX = "INSIDER."
STANDARD = ("external_id", "user_id", "uuid", "email", "phone_number")
MAX_CUSTOM = 20
MAX_ATTRIBUTES = 200
MAX_LIST = 100
MAX_TEXT = 1000
MAX_TAGS = 200
OPTINS = ("push", "email", "sms", "location")
_CUSTOM_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")
_ATTRIBUTE_NAME = re.compile(r"^[dc]_[A-Za-z0-9_.-]{1,62}$")
_TAG = re.compile(r"^[^\x00-\x1f\x7f]{1,100}$")

_CHECKS = {
    "external_id": addresses.external_id,
    "user_id": addresses.external_id,
    "uuid": addresses.subscriber_uuid,
    "email": addresses.email_address,
    "phone_number": addresses.phone_number,
}


def identifier_name(key: str) -> str:
    """A request's identifier key without the vendor prefix."""
    return key[len(VENDOR_PREFIX) :] if key.startswith(VENDOR_PREFIX) else key


@dataclass(frozen=True, slots=True)
class Identifiers:
    external_id: str | None = None
    user_id: str | None = None
    uuid: str | None = None
    email: str | None = None
    phone_number: str | None = None
    custom: tuple[tuple[str, str], ...] = ()

    def standard(self) -> dict[str, str]:
        """The standard identifiers given, in the order they find a subscriber."""
        values = {name: getattr(self, name) for name in STANDARD}
        return {name: value for name, value in values.items() if value is not None}

    def __bool__(self) -> bool:
        return bool(self.standard() or self.custom)

    def shown(self) -> dict[str, str]:
        """The identifiers as a caller gave them back (custom keys by their own name)."""
        return {**self.standard(), **dict(self.custom)}


def _text_value(value: object, field: str) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise InvalidInput(f"{field} must be a string")
    return str(value)


def parse_identifiers(
    raw: Mapping[str, object], *, field: str = "identifiers", lenient: bool = False
) -> Identifiers:
    """The identifiers of a request (any key, with or without ``INSIDER.``).

    ``lenient``: an identifier that is not valid (a phone number that is not one) cannot
    name any subscriber and is left out rather than refused (a look-up, not a registration)."""
    if not isinstance(raw, Mapping):
        raise InvalidInput(f'{field} must be an object of identifiers, e.g. {{"email": ...}}')
    standard: dict[str, str] = {}
    custom: dict[str, str] = {}
    for key, value in raw.items():
        if value is None:
            continue
        name = identifier_name(str(key))
        where = f"{field}.{key}" if field else str(key)
        if name in _CHECKS:
            try:
                standard[name] = _CHECKS[name](_text_value(value, where), where)
            except InvalidInput:
                if not lenient:
                    raise
            continue
        if not _CUSTOM_NAME.match(name):
            raise InvalidInput(
                f"{where}: an identifier name is a letter then up to 63 letters, digits, "
                "'_', '.' or '-'"
            )
        custom[name] = addresses.external_id(_text_value(value, where), where)
    if len(custom) > MAX_CUSTOM:
        raise InvalidInput(f"{field}: at most {MAX_CUSTOM} custom identifiers")
    return Identifiers(**standard, custom=tuple(sorted(custom.items())))


# -- attributes ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AttributeRow:
    """One stored value of an attribute (see storage/models.py ``subscriber_attributes``)."""

    position: int
    kind: str
    text_value: str | None
    num_value: float | None


def _date_ms(text: object, field: str) -> float:
    if not isinstance(text, str):
        raise InvalidInput(f'{field}: a date is {{"date": "2026-05-01T12:00:00Z"}}')
    try:
        if len(text) == 10:
            moment = datetime.combine(date.fromisoformat(text), datetime.min.time(), UTC)
        else:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise InvalidInput(f"{field}: {text!r} is not an ISO 8601 date") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return float(int(moment.timestamp() * 1000))


def _scalar(value: object, field: str) -> tuple[str, str | None, float | None]:
    """(kind, text, number) of one attribute value."""
    if isinstance(value, bool):
        return "bool", None, 1.0 if value else 0.0
    if isinstance(value, int | float):
        if not math.isfinite(value) or abs(value) > 2**53:
            raise InvalidInput(f"{field}: numbers must be finite and at most 2**53")
        return "number", None, float(value)
    if isinstance(value, str):
        if len(value) > MAX_TEXT or "\x00" in value:
            raise InvalidInput(f"{field}: text is at most {MAX_TEXT} characters, without NUL")
        return "string", value, None
    if isinstance(value, Mapping) and set(value) == {"date"}:
        return "date", None, _date_ms(value["date"], field)
    raise InvalidInput(
        f'{field}: a value is a string, a number, a boolean, {{"date": "<ISO 8601>"}} or '
        "a list of one of these"
    )


def attribute_rows(name: str, value: object) -> list[AttributeRow]:
    """The stored rows of one attribute value (none for ``None``: the attribute is
    removed)."""
    field = f"attributes.{name}"
    if not _ATTRIBUTE_NAME.match(name):
        raise InvalidInput(
            f"{field}: attribute names are d_<name> (default) or c_<name> (custom), with "
            "letters, digits, '_', '.' or '-'"
        )
    if value is None:
        return []
    if isinstance(value, list):
        if len(value) > MAX_LIST:
            raise InvalidInput(f"{field}: a list holds at most {MAX_LIST} values")
        scalars = [_scalar(item, field) for item in value]
        kinds = {kind for kind, _, _ in scalars}
        if len(kinds) > 1:
            raise InvalidInput(f"{field}: a list holds values of one kind")
        kind = "list:" + (kinds.pop() if kinds else "string")
        return [
            AttributeRow(position, kind, text, number)
            for position, (_, text, number) in enumerate(scalars)
        ]
    kind, text, number = _scalar(value, field)
    return [AttributeRow(0, kind, text, number)]


def attribute_value(rows: Iterable[AttributeRow]) -> Any:
    """The API form of an attribute's stored rows."""
    ordered = sorted(rows, key=lambda row: row.position)
    values = [_shown(row) for row in ordered]
    if ordered and ordered[0].kind.startswith("list:"):
        return values
    return values[0] if values else None


def _shown(row: AttributeRow) -> Any:
    kind = row.kind.removeprefix("list:")
    if kind == "string":
        return row.text_value
    if kind == "bool":
        return bool(row.num_value)
    if kind == "date":
        moment = datetime.fromtimestamp((row.num_value or 0) / 1000, UTC)
        return {"date": moment.isoformat().replace("+00:00", "Z")}
    number = row.num_value or 0.0
    return int(number) if number.is_integer() else number


# -- the profile -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Profile:
    """What an upsert sets; ``None`` (and absent keys) leave a field as it is."""

    language: str | None = None
    country: str | None = None
    timezone: str | None = None
    optins: Mapping[str, bool] = field(default_factory=dict)
    attributes: Mapping[str, list[AttributeRow]] = field(default_factory=dict)
    tags: tuple[str, ...] | None = None  # the whole set, replacing the earlier one
    add_tags: tuple[str, ...] = ()
    events: tuple[tuple[str, int | None], ...] = ()  # (name, at ms or now)


def _tags(value: object, field: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
        raise InvalidInput(f"{field} must be a list of tags (strings)")
    if len(value) > MAX_TAGS or not all(_TAG.match(t) for t in value):
        raise InvalidInput(f"{field}: at most {MAX_TAGS} tags of 1 to 100 printable characters")
    return tuple(dict.fromkeys(value))


def parse_profile(raw: Mapping[str, Any]) -> Profile:
    """A subscriber profile from a request: ``language``, ``country``, ``timezone``,
    ``optins`` ({push, email, sms, location}: booleans), ``attributes``, ``tags`` (replace),
    ``add_tags``, ``events`` (names, or {"name", "at"} with an ISO 8601 time)."""
    optins = raw.get("optins") or {}
    if not isinstance(optins, Mapping) or not set(optins) <= set(OPTINS):
        raise InvalidInput(f"optins is an object with any of {', '.join(OPTINS)}")
    for name, value in optins.items():
        if not isinstance(value, bool):
            raise InvalidInput(f"optins.{name} must be true or false")
    attributes_raw = raw.get("attributes") or {}
    if not isinstance(attributes_raw, Mapping):
        raise InvalidInput("attributes must be an object of d_<name> / c_<name> values")
    if len(attributes_raw) > MAX_ATTRIBUTES:
        raise InvalidInput(f"at most {MAX_ATTRIBUTES} attributes at once")
    attributes = {str(name): attribute_rows(str(name), v) for name, v in attributes_raw.items()}
    events: list[tuple[str, int | None]] = []
    for number, item in enumerate(raw.get("events") or []):
        where = f"events[{number}]"
        if isinstance(item, str):
            name, at = item, None
        elif isinstance(item, Mapping) and isinstance(item.get("name"), str):
            name = item["name"]
            at = int(_date_ms(item["at"], where)) if item.get("at") is not None else None
        else:
            raise InvalidInput(f'{where} is an event name, or {{"name", "at"}}')
        if not _TAG.match(name):
            raise InvalidInput(f"{where}: an event name is 1 to 100 printable characters")
        events.append((name, at))
    tags = raw.get("tags")
    return Profile(
        language=addresses.optional(addresses.language_tag, raw.get("language"), "language"),
        country=addresses.optional(addresses.country_code, raw.get("country"), "country"),
        timezone=addresses.optional(addresses.timezone_name, raw.get("timezone"), "timezone"),
        optins=dict(optins),
        attributes=attributes,
        tags=None if tags is None else _tags(tags, "tags"),
        add_tags=_tags(raw.get("add_tags") or [], "add_tags"),
        events=tuple(events),
    )
