"""The targeting model: which devices of an app a notification goes to.

One ``Audience`` says it for every face: Insider's ``target {attribute, values}``, Push.express
``filters``, Push API v2's user identifiers, the native API's audience and Instapush's "every
device of the app". It is pure data: ``storage/audience_sql.py`` compiles it to SQL that runs
inside the fan-out's ``INSERT ... SELECT`` (never device by device in Python), and
``matches`` below is the plain Python reading of the same rules, which the property tests
compare the SQL with.

The rules, each an AND with the others (an empty list is no restriction):

- the device is enabled and belongs to the notification's app, or is one of the account's
  personal channel devices (app-less) when ``personal`` is set;
- ``platforms``/``exclude_platforms``: the device's platform is (not) one of them;
- ``countries``/``exclude_countries``: the device's country, else its subscriber's (ISO 3166
  alpha-2, upper case); a device with neither matches no include list and every exclude list;
- ``languages``/``exclude_languages``: the device's language, else its subscriber's; a filter
  language matches that language and its regional forms (``en`` matches ``en-US``);
- ``tags``/``exclude_tags``, ``events``/``exclude_events``: the subscriber has any of them
  (include), none of them (exclude);
- ``attributes``: every condition holds for the subscriber (see ``Condition``);
- ``subscribers``: the subscriber is one of these ids (identifiers resolved by the caller);
- ``timezones``/``without_timezone``: the device's timezone, else its subscriber's, is one of
  them, or there is none and ``without_timezone`` is set (one offset of a local-time sending);
- ``optin_required``: the subscriber has not withdrawn push opt-in;
- ``engaged_only``: the subscriber was active (or created) within the engagement window;
- ``last_active_device_only``: only each subscriber's most recently active device among those
  that pass every other rule.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Literal

import orjson

from pushgate.domain.errors import InvalidInput

Operator = Literal["in", "not_in", "exists", "missing", "gt", "gte", "lt", "lte"]
OPERATORS: tuple[str, ...] = ("in", "not_in", "exists", "missing", "gt", "gte", "lt", "lte")
COMPARISONS = ("gt", "gte", "lt", "lte")
AttributeValue = str | float | bool
MAX_VALUES = 1000
MAX_CONDITIONS = 50


@dataclass(frozen=True, slots=True)
class Condition:
    """One attribute condition on the subscriber.

    - ``in``: one of the attribute's values (a list attribute: any element) equals one of
      ``values`` (strings compare as text, numbers, booleans and dates as numbers);
    - ``not_in``: none does (a subscriber without the attribute passes);
    - ``exists`` / ``missing``: the attribute has a value / has none;
    - ``gt``, ``gte``, ``lt``, ``lte``: one of its numeric or date values compares so with
      ``values[0]`` (a date as milliseconds since the epoch).
    """

    name: str
    op: Operator
    values: tuple[AttributeValue, ...] = ()

    def __post_init__(self) -> None:
        if not self.name or len(self.name) > 64:
            raise InvalidInput("an attribute name is 1 to 64 characters")
        if self.op not in OPERATORS:
            raise InvalidInput(f"attribute operator must be one of {', '.join(OPERATORS)}")
        if self.op in ("in", "not_in") and not self.values:
            raise InvalidInput(f"attribute {self.name}: '{self.op}' needs at least one value")
        one_number = len(self.values) == 1 and _is_number(self.values[0])
        if self.op in COMPARISONS and not one_number:
            raise InvalidInput(
                f"attribute {self.name}: '{self.op}' compares with one number (a date as "
                "milliseconds since the epoch)"
            )
        if len(self.values) > MAX_VALUES:
            raise InvalidInput(f"attribute {self.name}: at most {MAX_VALUES} values")


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True, slots=True)
class Audience:
    platforms: tuple[str, ...] = ()
    exclude_platforms: tuple[str, ...] = ()
    countries: tuple[str, ...] = ()
    exclude_countries: tuple[str, ...] = ()
    languages: tuple[str, ...] = ()
    exclude_languages: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    exclude_tags: tuple[str, ...] = ()
    events: tuple[str, ...] = ()
    exclude_events: tuple[str, ...] = ()
    attributes: tuple[Condition, ...] = ()
    subscribers: tuple[int, ...] | None = None
    timezones: tuple[str, ...] = ()
    without_timezone: bool = False
    optin_required: bool = False
    engaged_only: bool = False
    last_active_device_only: bool = False
    personal: bool = False

    def __post_init__(self) -> None:
        pairs = (
            ("platforms", self.platforms, self.exclude_platforms),
            ("countries", self.countries, self.exclude_countries),
            ("languages", self.languages, self.exclude_languages),
            ("tags", self.tags, self.exclude_tags),
            ("events", self.events, self.exclude_events),
        )
        for name, include, exclude in pairs:
            shared = set(include) & set(exclude)
            if shared:
                raise InvalidInput(
                    f"{name}: {', '.join(sorted(shared))} cannot be both included and excluded"
                )
            if len(include) > MAX_VALUES or len(exclude) > MAX_VALUES:
                raise InvalidInput(f"{name}: at most {MAX_VALUES} values")
        if len(self.attributes) > MAX_CONDITIONS:
            raise InvalidInput(f"at most {MAX_CONDITIONS} attribute conditions")

    def one_subscriber(self) -> tuple[int, bool] | None:
        """(the subscriber, whether only their last active device) when this audience is
        exactly one opted-in user's devices: ``one_user``'s, or all of them (``all_of_user``:
        a Push API v2 send); else None."""
        if self.subscribers is None or len(self.subscribers) != 1:
            return None
        subscriber = self.subscribers[0]
        if self == one_user(subscriber):
            return subscriber, True
        if self == all_of_user(subscriber):
            return subscriber, False
        return None

    # -- storage ---------------------------------------------------------------------------

    def to_json(self) -> str:
        """The rules given (empty, ``None`` and ``False`` left out), in field order; orjson
        writes tuples as lists and each ``Condition`` as an object of its fields."""
        given = {}
        for name in _AUDIENCE_FIELDS:
            value = getattr(self, name)
            if value not in _NOT_GIVEN:
                given[name] = value
        return orjson.dumps(given).decode()

    @classmethod
    def from_json(cls, text: str) -> Audience:
        raw: dict[str, Any] = orjson.loads(text)
        values: dict[str, Any] = {}
        for key, value in raw.items():
            if key == "attributes":
                values[key] = tuple(
                    Condition(c["name"], c["op"], tuple(c.get("values", ()))) for c in value
                )
            elif isinstance(value, list):
                values[key] = tuple(value)
            else:
                values[key] = value
        return cls(**values)


_AUDIENCE_FIELDS = tuple(f.name for f in fields(Audience))
_NOT_GIVEN = ((), None, False)


def one_user(subscriber_id: int) -> Audience:
    """One subscriber's most recently active device of the app, unless they withdrew push
    opt-in."""
    return Audience(subscribers=(subscriber_id,), optin_required=True, last_active_device_only=True)


def all_of_user(subscriber_id: int) -> Audience:
    """Every enabled device of one subscriber in the app, unless they withdrew push opt-in."""
    return Audience(subscribers=(subscriber_id,), optin_required=True)


# -- the plain reading of the rules (the reference the SQL is tested against) -----------


@dataclass(frozen=True, slots=True)
class SubscriberFacts:
    id: int
    country: str | None = None
    language: str | None = None
    timezone: str | None = None
    optin_push: bool = True
    last_active_ms: int | None = None
    created_ms: int = 0
    tags: frozenset[str] = frozenset()
    events: frozenset[str] = frozenset()
    # name -> values (a scalar attribute has one); strings, numbers, booleans
    attributes: Mapping[str, Sequence[AttributeValue]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DeviceFacts:
    id: int
    subscriber: SubscriberFacts
    app_id: int | None
    account_id: int
    platform: str
    enabled: bool = True
    country: str | None = None
    language: str | None = None
    timezone: str | None = None
    last_active_ms: int | None = None


def language_matches(filter_language: str, language: str | None) -> bool:
    if language is None:
        return False
    wanted, have = filter_language.lower(), language.lower()
    return have == wanted or have.startswith(wanted + "-")


def _numeric(value: AttributeValue) -> float | None:
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int | float):
        return float(value)
    return None


def _equal(have: AttributeValue, wanted: AttributeValue) -> bool:
    if isinstance(wanted, str) or isinstance(have, str):
        return isinstance(wanted, str) and isinstance(have, str) and have == wanted
    return _numeric(have) == _numeric(wanted)


def condition_holds(condition: Condition, values: Sequence[AttributeValue]) -> bool:
    op = condition.op
    if op == "exists":
        return bool(values)
    if op == "missing":
        return not values
    if op == "in":
        return any(_equal(v, w) for v in values for w in condition.values)
    if op == "not_in":
        return not any(_equal(v, w) for v in values for w in condition.values)
    bound = _numeric(condition.values[0])
    assert bound is not None
    numbers = [n for n in (_numeric(v) for v in values if not isinstance(v, str)) if n is not None]
    if op == "gt":
        return any(n > bound for n in numbers)
    if op == "gte":
        return any(n >= bound for n in numbers)
    if op == "lt":
        return any(n < bound for n in numbers)
    return any(n <= bound for n in numbers)


def _included(value: str | None, include: Iterable[str], exclude: Iterable[str]) -> bool:
    include, exclude = list(include), list(exclude)
    if include and value not in include:
        return False
    return not (exclude and value in exclude)


def matches(
    audience: Audience,
    device: DeviceFacts,
    *,
    app_id: int,
    account_id: int,
    engaged_since_ms: int,
) -> bool:
    """Whether ``device`` passes every rule but ``last_active_device_only`` (see ``select``)."""
    if not device.enabled or device.account_id != account_id:
        return False
    if device.app_id != app_id and not (audience.personal and device.app_id is None):
        return False
    s = device.subscriber
    if not _included(device.platform, audience.platforms, audience.exclude_platforms):
        return False
    country = device.country or s.country
    if not _included(country, audience.countries, audience.exclude_countries):
        return False
    language = device.language or s.language
    if audience.languages and not any(language_matches(f, language) for f in audience.languages):
        return False
    if any(language_matches(f, language) for f in audience.exclude_languages):
        return False
    if audience.tags and not s.tags & set(audience.tags):
        return False
    if s.tags & set(audience.exclude_tags):
        return False
    if audience.events and not s.events & set(audience.events):
        return False
    if s.events & set(audience.exclude_events):
        return False
    for condition in audience.attributes:
        if not condition_holds(condition, s.attributes.get(condition.name, ())):
            return False
    if audience.subscribers is not None and s.id not in audience.subscribers:
        return False
    if audience.timezones or audience.without_timezone:
        timezone = device.timezone or s.timezone
        if not ((timezone is None and audience.without_timezone) or timezone in audience.timezones):
            return False
    if audience.optin_required and not s.optin_push:
        return False
    active = s.last_active_ms if s.last_active_ms is not None else s.created_ms
    return not (audience.engaged_only and active < engaged_since_ms)


def select(
    audience: Audience,
    devices: Iterable[DeviceFacts],
    *,
    app_id: int,
    account_id: int,
    engaged_since_ms: int,
) -> set[int]:
    """The ids of the devices the audience selects (the reference for the SQL)."""
    chosen = [
        d
        for d in devices
        if matches(
            audience, d, app_id=app_id, account_id=account_id, engaged_since_ms=engaged_since_ms
        )
    ]
    if not audience.last_active_device_only:
        return {d.id for d in chosen}
    best: dict[int, DeviceFacts] = {}
    for device in chosen:
        current = best.get(device.subscriber.id)
        if current is None or _recency(device) > _recency(current):
            best[device.subscriber.id] = device
    return {d.id for d in best.values()}


def _recency(device: DeviceFacts) -> tuple[int, int]:
    return (device.last_active_ms or 0, device.id)
