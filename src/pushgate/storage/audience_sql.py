"""An ``Audience`` (domain/audience.py) compiled to SQL: the device selection inside the
fan-out's ``INSERT ... SELECT``, the same text on SQLite and PostgreSQL but for parameter
markers and booleans. Every value travels as a bound parameter.

``select_devices`` gives ``SELECT d.id, d.platform FROM devices d WHERE ...`` (joined to
``subscribers s`` only when a rule reads the subscriber's own columns; wrapped in a window over
each subscriber's devices when only the last active one is wanted);
``tests/integration/test_audience_contract.py`` checks it against ``domain.audience.select`` on
random data, on both databases.

The shape is chosen so that a selective filter drives the selection instead of a scan of the
app's devices (``benchmarks/audience.py``, docs/performance.md "Audience selection"):

- an attribute condition that a subscriber must meet (``in``, ``exists``, comparisons) is
  ``d.subscriber_id IN (SELECT a.subscriber_id FROM subscriber_attributes a WHERE ...)``,
  which both databases can start from: the index ``(name, text_value | num_value,
  subscriber_id)`` yields the matching subscribers, and ``(subscriber_id, ..., app_id,
  account_id, enabled, platform)`` on devices their devices without reading device rows. One
  that a subscriber must not meet is a correlated ``NOT EXISTS``, a single look-up per device
  in the same index (or the primary key);
- PostgreSQL chooses between that and a scan from its statistics. SQLite has none (Pushgate
  does not run ANALYZE), and without them it estimates ``d.app_id = ?`` as very selective, so
  it would read every device of the app and probe the filter for each. When the audience names
  attribute values (``in``) or subscribers, the app and account terms are therefore marked
  ``likelihood(..., 0.9)``: the app is assumed to be most of the account's devices, and the
  named values or subscribers are where the selection starts. That costs the most when the
  named values are common among the subscribers of the account's *other* apps; the work then
  grows with those subscribers rather than with this app's devices.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pushgate.domain.audience import COMPARISONS, AttributeValue, Audience, Condition

_COMPARE = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}


@dataclass
class Params:
    """Collects bound parameters and hands out their numbered markers."""

    postgres: bool
    values: list[Any] = field(default_factory=list)
    start: int = 1

    def __call__(self, value: Any) -> str:
        self.values.append(value)
        number = self.start + len(self.values) - 1
        return f"${number}" if self.postgres else f"?{number}"

    def many(self, values: Sequence[Any]) -> str:
        return ", ".join(self(value) for value in values)

    def true(self, column: str) -> str:
        return column if self.postgres else f"{column} = 1"


def _in(p: Params, expression: str, values: Sequence[Any]) -> str:
    return f"{expression} IN ({p.many(values)})"


def _include_exclude(
    p: Params, expression: str, include: Sequence[str], exclude: Sequence[str]
) -> list[str]:
    where = []
    if include:
        where.append(_in(p, expression, include))
    if exclude:
        where.append(f"({expression} IS NULL OR NOT {_in(p, expression, exclude)})")
    return where


def _language(p: Params, expression: str, wanted: str) -> str:
    """``expression`` (lower case) is ``wanted`` or one of its regional forms."""
    base = wanted.lower()
    return (
        f"({expression} = {p(base)} OR substr({expression}, 1, {len(base) + 1}) = {p(base + '-')})"
    )


def _split(values: Sequence[AttributeValue]) -> tuple[list[str], list[float]]:
    texts = [v for v in values if isinstance(v, str)]
    numbers = [float(v) for v in values if not isinstance(v, str)]
    return texts, numbers


def _condition(p: Params, condition: Condition) -> str:
    op = condition.op
    where = f"a.name = {p(condition.name)}"
    if op in COMPARISONS:
        where += f" AND a.num_value {_COMPARE[op]} {p(float(condition.values[0]))}"
    elif op in ("in", "not_in"):
        texts, numbers = _split(condition.values)
        either = []
        if texts:
            either.append(_in(p, "a.text_value", texts))
        if numbers:
            either.append(_in(p, "a.num_value", numbers))
        where += f" AND ({' OR '.join(either)})"
    if op in ("not_in", "missing"):
        return (
            "NOT EXISTS (SELECT 1 FROM subscriber_attributes a "
            f"WHERE a.subscriber_id = d.subscriber_id AND {where})"
        )
    return f"d.subscriber_id IN (SELECT a.subscriber_id FROM subscriber_attributes a WHERE {where})"


def _has_any(p: Params, table: str, column: str, values: Sequence[str]) -> str:
    return (
        f"EXISTS (SELECT 1 FROM {table} x WHERE x.subscriber_id = d.subscriber_id "
        f"AND {_in(p, f'x.{column}', values)})"
    )


def _reads_subscriber(audience: Audience) -> bool:
    """Whether a rule reads the subscriber's own columns (the others need only its id, which
    is ``d.subscriber_id``)."""
    return bool(
        audience.countries
        or audience.exclude_countries
        or audience.languages
        or audience.exclude_languages
        or audience.optin_required
        or audience.engaged_only
        or audience.timezones
        or audience.without_timezone
    )


def _named(p: Params, audience: Audience) -> bool:
    """Whether SQLite should start from named attribute values or subscribers."""
    return not p.postgres and (
        any(condition.op == "in" for condition in audience.attributes) or bool(audience.subscribers)
    )


def _likely(term: str, hint: bool) -> str:
    """``term``, marked for SQLite's planner as true for most rows when ``hint`` is set."""
    return f"likelihood({term}, 0.9)" if hint else term


def conditions(
    p: Params, audience: Audience, *, app_id: int, account_id: int, engaged_since_ms: int
) -> list[str]:
    """The WHERE conditions on ``devices d`` (``JOIN subscribers s`` when ``_reads_subscriber``)."""
    # See the module's docstring: on SQLite, start from the named values or subscribers.
    named = _named(p, audience)
    where = [_likely(f"d.account_id = {p(account_id)}", named), p.true("d.enabled")]
    if audience.personal:
        # Each side marked: SQLite would otherwise read both through their indexes.
        app, personal = (
            _likely(f"d.app_id = {p(app_id)}", named),
            _likely("d.app_id IS NULL", named),
        )
        where.append(f"({app} OR {personal})")
    else:
        where.append(_likely(f"d.app_id = {p(app_id)}", named))
    where += _include_exclude(p, "d.platform", audience.platforms, audience.exclude_platforms)
    country = "coalesce(d.country, s.country)"
    where += _include_exclude(p, country, audience.countries, audience.exclude_countries)
    language = "lower(coalesce(d.language, s.language))"
    if audience.languages:
        where.append("(" + " OR ".join(_language(p, language, w) for w in audience.languages) + ")")
    if audience.exclude_languages:
        excluded = " OR ".join(_language(p, language, w) for w in audience.exclude_languages)
        where.append(f"({language} IS NULL OR NOT ({excluded}))")
    if audience.tags:
        where.append(_has_any(p, "subscriber_tags", "tag", audience.tags))
    if audience.exclude_tags:
        where.append("NOT " + _has_any(p, "subscriber_tags", "tag", audience.exclude_tags))
    if audience.events:
        where.append(_has_any(p, "subscriber_events", "name", audience.events))
    if audience.exclude_events:
        where.append("NOT " + _has_any(p, "subscriber_events", "name", audience.exclude_events))
    where += [_condition(p, condition) for condition in audience.attributes]
    if audience.subscribers is not None:
        where.append(
            _in(p, "d.subscriber_id", audience.subscribers) if audience.subscribers else "1 = 0"
        )
    if audience.timezones or audience.without_timezone:
        timezone = "coalesce(d.timezone, s.timezone)"
        either = [_in(p, timezone, audience.timezones)] if audience.timezones else []
        if audience.without_timezone:
            either.append(f"{timezone} IS NULL")
        where.append(f"({' OR '.join(either)})")
    if audience.optin_required:
        where.append(p.true("s.optin_push"))
    if audience.engaged_only:
        where.append(f"coalesce(s.last_active_ms, s.created_ms) >= {p(engaged_since_ms)}")
    return where


def select_devices(
    p: Params, audience: Audience, *, app_id: int, account_id: int, engaged_since_ms: int
) -> str:
    """``SELECT id, platform`` of the devices the audience selects (a subquery ``x``)."""
    where = " AND ".join(
        conditions(
            p, audience, app_id=app_id, account_id=account_id, engaged_since_ms=engaged_since_ms
        )
    )
    joined = " JOIN subscribers s ON s.id = d.subscriber_id" if _reads_subscriber(audience) else ""
    base = f"FROM devices d{joined} WHERE {where}"
    if not audience.last_active_device_only:
        return f"SELECT d.id AS id, d.platform AS platform {base}"
    ranked = (
        "SELECT d.id AS id, d.platform AS platform, ROW_NUMBER() OVER (PARTITION BY "
        "d.subscriber_id ORDER BY coalesce(d.last_active_ms, 0) DESC, d.id DESC) AS rank "
        f"{base}"
    )
    return f"SELECT r.id AS id, r.platform AS platform FROM ({ranked}) r WHERE r.rank = 1"


def select_timezones(p: Params, audience: Audience, *, app_id: int, account_id: int) -> str:
    """``SELECT DISTINCT`` the timezones (the device's, else its subscriber's) of the devices
    the audience selects; the engagement rule is left out (a local-time sending reads which
    offsets it must run at: leaving it out can only add an offset nobody is at)."""
    chosen = select_devices(p, audience, app_id=app_id, account_id=account_id, engaged_since_ms=0)
    return (
        "SELECT DISTINCT coalesce(d.timezone, s.timezone) FROM devices d "
        "JOIN subscribers s ON s.id = d.subscriber_id "
        f"WHERE d.id IN (SELECT c.id FROM ({chosen}) c)"
    )


def count_devices(
    p: Params, audience: Audience, *, app_id: int, account_id: int, engaged_since_ms: int
) -> str:
    """``SELECT count(*)`` of the devices the audience selects: one query, the selection of
    ``select_devices`` counted by the database."""
    devices_sql = select_devices(
        p, audience, app_id=app_id, account_id=account_id, engaged_since_ms=engaged_since_ms
    )
    return f"SELECT count(*) FROM ({devices_sql}) x"
