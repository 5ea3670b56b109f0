"""A histogram for the per-request hot path, cheaper than ``prometheus_client.Histogram``.

``prometheus_client``'s ``observe`` takes a lock and walks every bucket (about 1.3 µs); here a
labelled ``Series`` keeps one count per bucket, found by bisection, and a sum (about 0.3 µs),
and the registry collects them into the same Prometheus histogram exposition
(``_bucket{le=...}`` cumulative, ``_sum``, ``_count``). One event loop thread observes, so no
lock is needed; a scrape on the same loop sees a consistent state.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Sequence

from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry


class Series:
    __slots__ = ("_bounds", "counts", "total")

    def __init__(self, bounds: Sequence[float]) -> None:
        self._bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.total = 0.0

    def observe(self, value: float) -> None:
        # le semantics: a value equal to a bound falls into that bucket.
        self.counts[bisect_left(self._bounds, value)] += 1
        self.total += value


class FastHistogram(Collector):
    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        buckets: Sequence[float],
        registry: CollectorRegistry,
    ) -> None:
        self._name = name
        self._documentation = documentation
        self._labelnames = list(labelnames)
        self._bounds = sorted(buckets)
        self._series: dict[tuple[str, ...], Series] = {}
        registry.register(self)

    def labels(self, *values: str) -> Series:
        if len(values) != len(self._labelnames):
            raise ValueError(f"{self._name} takes labels {self._labelnames}")
        series = self._series.get(values)
        if series is None:
            series = self._series[values] = Series(self._bounds)
        return series

    def describe(self) -> list[HistogramMetricFamily]:
        return [HistogramMetricFamily(self._name, self._documentation, labels=self._labelnames)]

    def collect(self) -> Iterator[HistogramMetricFamily]:
        family = HistogramMetricFamily(self._name, self._documentation, labels=self._labelnames)
        for values, series in list(self._series.items()):
            cumulative = 0
            buckets: list[tuple[str, float]] = []
            for bound, count in zip([*map(_le, self._bounds), "+Inf"], series.counts, strict=True):
                cumulative += count
                buckets.append((bound, cumulative))
            family.add_metric(list(values), buckets, series.total)
        yield family


def _le(bound: float) -> str:
    return repr(float(bound))
