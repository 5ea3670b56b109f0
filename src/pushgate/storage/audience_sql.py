"""An ``Audience`` (domain/audience.py) compiled to SQL: the device selection inside the
fan-out's ``INSERT ... SELECT``, the same text on SQLite and PostgreSQL but for parameter
markers and booleans. Every value travels as a bound parameter.

``select_devices`` gives ``SELECT d.id, d.platform FROM devices d JOIN subscribers s ... WHERE
...`` (wrapped in a window over each subscriber's devices when only the last active one is
wanted); ``tests/integration/test_audience_contract.py`` checks it against
``domain.audience.select`` on random data, on both databases.
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
    subquery = (
        "SELECT 1 FROM subscriber_attributes a WHERE a.subscriber_id = s.id "
        f"AND a.name = {p(condition.name)}"
    )
    op = condition.op
    if op == "exists":
        return f"EXISTS ({subquery})"
    if op == "missing":
        return f"NOT EXISTS ({subquery})"
    if op in COMPARISONS:
        bound = float(condition.values[0])
        return f"EXISTS ({subquery} AND a.num_value {_COMPARE[op]} {p(bound)})"
    texts, numbers = _split(condition.values)
    either = []
    if texts:
        either.append(_in(p, "a.text_value", texts))
    if numbers:
        either.append(_in(p, "a.num_value", numbers))
    matching = f"EXISTS ({subquery} AND ({' OR '.join(either)}))"
    return matching if op == "in" else f"NOT {matching}"


def _has_any(p: Params, table: str, column: str, values: Sequence[str]) -> str:
    return (
        f"EXISTS (SELECT 1 FROM {table} x WHERE x.subscriber_id = s.id "
        f"AND {_in(p, f'x.{column}', values)})"
    )


def conditions(
    p: Params, audience: Audience, *, app_id: int, account_id: int, engaged_since_ms: int
) -> list[str]:
    """The WHERE conditions on ``devices d JOIN subscribers s``."""
    where = [f"d.account_id = {p(account_id)}", p.true("d.enabled")]
    if audience.personal:
        where.append(f"(d.app_id = {p(app_id)} OR d.app_id IS NULL)")
    else:
        where.append(f"d.app_id = {p(app_id)}")
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
        where.append(_in(p, "s.id", audience.subscribers) if audience.subscribers else "1 = 0")
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
    base = "FROM devices d JOIN subscribers s ON s.id = d.subscriber_id WHERE " + where
    if not audience.last_active_device_only:
        return f"SELECT d.id AS id, d.platform AS platform {base}"
    ranked = (
        "SELECT d.id AS id, d.platform AS platform, ROW_NUMBER() OVER (PARTITION BY s.id "
        f"ORDER BY coalesce(d.last_active_ms, 0) DESC, d.id DESC) AS rank {base}"
    )
    return f"SELECT r.id AS id, r.platform AS platform FROM ({ranked}) r WHERE r.rank = 1"
