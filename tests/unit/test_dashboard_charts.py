"""The campaign timeline's buckets and its SVG lines (dashboard/charts.py)."""

from __future__ import annotations

from pushgate.dashboard.charts import HEIGHT, PAD, timeline_chart
from pushgate.services.stats import (
    BUCKET_SIZES_MS,
    HOUR_MS,
    Timeline,
    TimelineBucket,
    bucket_span,
)

T0 = 1_800_000_000_000  # a whole minute


def test_the_smallest_bucket_that_fits_the_span_is_chosen() -> None:
    assert bucket_span(T0, T0) == (T0, 60_000)
    assert bucket_span(T0, T0 + 47 * 60_000) == (T0, 60_000)
    assert bucket_span(T0, T0 + 48 * 60_000) == (T0 // 300_000 * 300_000, 300_000)
    assert bucket_span(T0, T0 + 10 * 86_400_000)[1] == 6 * HOUR_MS
    start, size = bucket_span(T0, T0 + 10_000 * 86_400_000)
    assert size == BUCKET_SIZES_MS[-1] and start % size == 0


def test_a_line_per_series_that_has_values_scaled_to_the_top() -> None:
    timeline = Timeline(
        T0,
        HOUR_MS,
        (
            TimelineBucket(T0, {"targeted": 4, "queued": 0, "delivered": 2}),
            TimelineBucket(
                T0 + 2 * HOUR_MS,
                {"targeted": 0, "delivered": 2, "failed": 1},
                {"BadDeviceToken": 1},
            ),
        ),
    )
    chart = timeline_chart(timeline)
    names = [line.name for line in chart.lines]
    assert names == ["targeted", "delivered", "failed", "failed: BadDeviceToken"]
    assert chart.rows[1][1]["failed: BadDeviceToken"] == 1
    assert chart.top == 4
    targeted = chart.lines[0]
    assert targeted.total == 4
    first, last = (tuple(map(float, p.split(","))) for p in targeted.points.split())
    assert first == (PAD, PAD) and last[1] == HEIGHT - PAD  # 4 at the top, 0 on the axis
    assert [when for when, _ in chart.rows] == ["01-15 08:00", "01-15 10:00"]
    assert timeline_chart(Timeline(0, HOUR_MS, ())).empty
