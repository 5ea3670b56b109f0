"""Small statistics over measured values: percentiles, medians, ratios."""

from __future__ import annotations

import statistics
from array import array
from collections.abc import Iterable
from typing import Any


def percentiles(values: list[int] | array, scale: float = 1e-6) -> dict[str, float | None]:
    """p50/p90/p99/max/mean of the values times ``scale`` (by default nanoseconds in
    milliseconds), nearest rank; ``n`` is how many values there were."""
    if not values:
        return {"p50": None, "p90": None, "p99": None, "max": None, "mean": None, "n": 0}
    s = sorted(values)
    n = len(s)

    def rank(q: float) -> float:
        return s[min(n - 1, max(0, int(q * n + 0.999999) - 1))] * scale

    return {
        "p50": rank(0.50),
        "p90": rank(0.90),
        "p99": rank(0.99),
        "max": s[-1] * scale,
        "mean": sum(s) / n * scale,
        "n": n,
    }


def median(values: Iterable[float | None], ndigits: int | None = None) -> float | None:
    """Median of the values that are not None (rounded to ``ndigits`` when given), or None."""
    vals = [v for v in values if v is not None]
    if not vals:
        return None
    m = statistics.median(vals)
    return m if ndigits is None else round(m, ndigits)


def ratio(a: float | None, b: float | None) -> float | None:
    """a / b, or None when either is missing or b is 0."""
    return a / b if a is not None and b else None


def summary_ms(values: list[float]) -> dict[str, Any]:
    """Median, min and max of durations in seconds, in milliseconds, and every round's."""
    ms = [v * 1000 for v in values]
    if not ms:
        return {"median_ms": None, "min_ms": None, "max_ms": None, "rounds_ms": []}
    return {
        "median_ms": statistics.median(ms),
        "min_ms": min(ms),
        "max_ms": max(ms),
        "rounds_ms": [round(v, 3) for v in ms],
    }


def sum_counts(parts: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Add up count dicts (e.g. one per receiver process): int values are summed, dict values
    (of ints) summed key by key; other values are left out."""
    total: dict[str, Any] = {}
    for part in parts:
        for k, v in part.items():
            if isinstance(v, int):
                total[k] = total.get(k, 0) + v
            elif isinstance(v, dict):
                d = total.setdefault(k, {})
                for kk, vv in v.items():
                    d[kk] = d.get(kk, 0) + vv
    return total
