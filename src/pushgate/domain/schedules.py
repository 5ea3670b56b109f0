"""Sendings due later: when each part of a sending runs, and which apps it reaches.

A sending is due at a wall-clock date and time. Either at one offset (``local_time`` false:
the moment is that wall time at the sending's offset), or at that wall time in each device's
own timezone (``local_time`` true): it then runs once per UTC offset present in its audience,
earliest offset first (+14:00 is the first to reach a wall time), and devices without a
timezone count as being at the sending's fallback offset.

Everything here is pure: ``services/scheduler.py`` reads the audience's timezones and the
apps, and asks these functions what is due.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pushgate.domain.errors import InvalidInput

SendingState = Literal["waiting", "running", "done", "cancelled"]
STATES: tuple[SendingState, ...] = ("waiting", "running", "done", "cancelled")
# Offsets in use lie between -12:00 and +14:00.
MIN_OFFSET = -12 * 60
MAX_OFFSET = 14 * 60
# Above every offset: a local-time sending whose cursor is here has run no offset yet.
NO_OFFSET_RUN = MAX_OFFSET + 1
MINUTE_MS = 60_000
_OFFSET = re.compile(r"([+-])(\d{2}):(\d{2})")


def parse_offset(text: object, field: str = "timezone") -> int:
    """A ``+HH:MM`` / ``-HH:MM`` offset in minutes east of UTC, -12:00 to +14:00."""
    found = _OFFSET.fullmatch(text) if isinstance(text, str) else None
    if found is None:
        raise InvalidInput(f'{field} must be an offset such as "+03:00" or "-05:30"')
    sign, hours, minutes = found.group(1), int(found.group(2)), int(found.group(3))
    total = (hours * 60 + minutes) * (-1 if sign == "-" else 1)
    if minutes >= 60 or not MIN_OFFSET <= total <= MAX_OFFSET:
        raise InvalidInput(f"{field} must lie between -12:00 and +14:00, got {text}")
    return total


def format_offset(minutes: int) -> str:
    sign = "-" if minutes < 0 else "+"
    hours, rest = divmod(abs(minutes), 60)
    return f"{sign}{hours:02d}:{rest:02d}"


def parse_wall_time(day: object, clock: object) -> datetime:
    """A naive wall-clock moment from ``YYYY-MM-DD`` and ``HH:MM``."""
    if not isinstance(day, str) or not re.fullmatch(r"\d{4}-\d{2}-\d{2}", day):
        raise InvalidInput("date must be a date as YYYY-MM-DD")
    if not isinstance(clock, str) or not re.fullmatch(r"\d{2}:\d{2}", clock):
        raise InvalidInput("time must be a time as HH:MM")
    try:
        return datetime.combine(date.fromisoformat(day), time.fromisoformat(clock))
    except ValueError as exc:
        raise InvalidInput(f"date and time do not name a moment: {exc}") from None


def wall_ms(wall: datetime) -> int:
    """A naive wall time as milliseconds, read as if it were UTC (the moment at offset 0)."""
    return int(wall.replace(tzinfo=UTC).timestamp() * 1000)


def wall_of(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC).replace(tzinfo=None)


def moment_ms(wall_time_ms: int, offset_minutes: int) -> int:
    """When a wall time is reached at an offset."""
    return wall_time_ms - offset_minutes * MINUTE_MS


@lru_cache(maxsize=4096)
def _zone(name: str) -> ZoneInfo | None:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def zone_offset(timezone: str | None, wall_time_ms: int) -> int | None:
    """The UTC offset (minutes) of ``timezone`` when its clocks show the wall time; None for
    no timezone or one that is not known (those go to the fallback offset)."""
    if not timezone:
        return None
    if _OFFSET.fullmatch(timezone):
        try:
            return parse_offset(timezone)
        except InvalidInput:
            return None
    zone = _zone(timezone)
    if zone is None:
        return None
    shift = wall_of(wall_time_ms).replace(tzinfo=zone).utcoffset()
    return None if shift is None else int(shift / timedelta(minutes=1))


@dataclass(frozen=True, slots=True)
class OffsetGroup:
    """The devices at one offset: their timezones, and whether devices without a (known)
    timezone belong to it (it is the fallback offset)."""

    offset: int
    timezones: tuple[str, ...]
    without_timezone: bool

    def due_ms(self, wall_time_ms: int) -> int:
        return moment_ms(wall_time_ms, self.offset)


def offset_groups(
    timezones: Iterable[str | None], wall_time_ms: int, fallback_offset: int
) -> list[OffsetGroup]:
    """The audience's timezones grouped by their offset at the wall time, earliest moment
    (largest offset) first. The fallback offset's group holds the devices without a known
    timezone, so it is always there."""
    zones: dict[int, set[str]] = defaultdict(set)
    zones[fallback_offset]
    for name in timezones:
        offset = zone_offset(name, wall_time_ms)
        if offset is None:
            if name:
                zones[fallback_offset].add(name)  # not a zone we know: the fallback's
            continue
        zones[offset].add(name or "")
    return [
        OffsetGroup(offset, tuple(sorted(names)), offset == fallback_offset)
        for offset, names in sorted(zones.items(), reverse=True)
    ]


@dataclass(frozen=True, slots=True)
class LocalRun:
    """What a local-time sending does now: the groups due, the cursor after them, and when it
    must run again (None: every group has run)."""

    due: list[OffsetGroup]
    cursor: int
    next_ms: int | None


def local_run(groups: Sequence[OffsetGroup], wall_time_ms: int, cursor: int, now: int) -> LocalRun:
    """The groups at offsets below ``cursor`` (offsets at or above it have run) whose moment
    has come; the new cursor, and the moment of the next group."""
    due = [g for g in groups if g.offset < cursor and g.due_ms(wall_time_ms) <= now]
    new_cursor = min((g.offset for g in due), default=cursor)
    later = [g.due_ms(wall_time_ms) for g in groups if g.offset < new_cursor]
    return LocalRun(due, new_cursor, min(later) if later else None)


# -- which apps a sending reaches ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AppSelection:
    """The apps of the account a sending reaches: every app or the included ones (by id or
    by app group), less the excluded ones. Groups are read when the sending runs."""

    all_apps: bool = False
    include: tuple[int, ...] = ()
    exclude: tuple[int, ...] = ()
    include_groups: tuple[int, ...] = ()
    exclude_groups: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        for name, first, second in (
            ("apps", self.include, self.exclude),
            ("app groups", self.include_groups, self.exclude_groups),
        ):
            shared = set(first) & set(second)
            if shared:
                listed = ", ".join(str(x) for x in sorted(shared))
                raise InvalidInput(f"{name} {listed} cannot be both included and excluded")

    def named_apps(self) -> set[int]:
        return {*self.include, *self.exclude}

    def named_groups(self) -> set[int]:
        return {*self.include_groups, *self.exclude_groups}

    def resolve(
        self, account_apps: Iterable[int], groups: Mapping[int, Iterable[int]]
    ) -> list[int]:
        """The apps reached, given the account's apps and the named groups' members. Without
        any include (and without ``all_apps``), every app of the account."""
        apps = set(account_apps)
        chosen = set(apps)
        if not self.all_apps and (self.include or self.include_groups):
            chosen = set(self.include)
            for group in self.include_groups:
                chosen.update(groups.get(group, ()))
        chosen -= set(self.exclude)
        for group in self.exclude_groups:
            chosen -= set(groups.get(group, ()))
        return sorted(chosen & apps)

    def to_json(self) -> dict[str, object]:
        return {
            "all_apps": self.all_apps,
            "include": list(self.include),
            "exclude": list(self.exclude),
            "include_groups": list(self.include_groups),
            "exclude_groups": list(self.exclude_groups),
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, object]) -> AppSelection:
        def ids(key: str) -> tuple[int, ...]:
            value = raw.get(key) or []
            assert isinstance(value, list)
            return tuple(int(x) for x in value)

        return cls(
            bool(raw.get("all_apps")),
            ids("include"),
            ids("exclude"),
            ids("include_groups"),
            ids("exclude_groups"),
        )
