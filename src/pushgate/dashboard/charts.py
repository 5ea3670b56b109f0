"""Charts drawn on the server as SVG (no script, no inline style: the page's CSP allows
neither): a campaign's deliveries over time."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from pushgate.services.stats import STATUSES, Timeline, TimelineBucket

WIDTH = 720
HEIGHT = 220
PAD = 30
SERIES = ("targeted", *STATUSES)


@dataclass(frozen=True, slots=True)
class Line:
    name: str
    points: str  # the polyline's "x,y x,y ..."
    total: int
    dots: tuple[tuple[float, float], ...]  # the same points, drawn (one bucket is a dot)


@dataclass(frozen=True, slots=True)
class TimelineChart:
    width: int
    height: int
    lines: tuple[Line, ...]
    top: int
    labels: tuple[tuple[float, str], ...]  # (x, time) under the axis
    rows: tuple[tuple[str, dict[str, int]], ...]  # the same numbers as a table
    reasons: tuple[str, ...] = ()  # the failure reasons, each a line of its own

    @property
    def empty(self) -> bool:
        return not self.rows


def _when(ms: int, bucket_ms: int) -> str:
    moment = datetime.fromtimestamp(ms / 1000, UTC)
    return moment.strftime("%Y-%m-%d" if bucket_ms >= 86_400_000 else "%m-%d %H:%M")


def timeline_chart(timeline: Timeline) -> TimelineChart:
    """One line per series (targeted and each status) over the timeline's buckets."""
    buckets = timeline.buckets
    if not buckets:
        return TimelineChart(WIDTH, HEIGHT, (), 0, (), ())
    first = buckets[0].start_ms
    steps = max(1, (buckets[-1].start_ms - first) // timeline.bucket_ms)
    top = max(max(b.counts.values()) for b in buckets) or 1

    def x(start_ms: int) -> float:
        return round(PAD + (start_ms - first) / timeline.bucket_ms * (WIDTH - 2 * PAD) / steps, 1)

    def y(value: int) -> float:
        return round(HEIGHT - PAD - value * (HEIGHT - 2 * PAD) / top, 1)

    reasons = sorted({r for b in buckets for r in b.failed_by_reason})
    lines = []

    def line(name: str, value: Callable[[TimelineBucket], int]) -> None:
        if not any(value(b) for b in buckets):
            return
        dots = tuple((x(b.start_ms), y(value(b))) for b in buckets)
        points = " ".join(f"{px},{py}" for px, py in dots)
        lines.append(Line(name, points, sum(value(b) for b in buckets), dots))

    for name in SERIES:
        line(name, lambda b, name=name: b.counts.get(name, 0))  # type: ignore[misc]
    for reason in reasons:
        line(f"failed: {reason}", lambda b, r=reason: b.failed_by_reason.get(r, 0))  # type: ignore[misc]
    shown = buckets if len(buckets) <= 6 else buckets[:: max(1, len(buckets) // 6)]
    labels = tuple((x(b.start_ms), _when(b.start_ms, timeline.bucket_ms)) for b in shown)
    rows = tuple(
        (
            _when(b.start_ms, timeline.bucket_ms),
            {**b.counts, **{f"failed: {r}": b.failed_by_reason.get(r, 0) for r in reasons}},
        )
        for b in buckets
    )
    return TimelineChart(WIDTH, HEIGHT, tuple(lines), top, labels, rows, tuple(reasons))
