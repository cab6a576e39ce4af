"""Latency summaries shared by the bench scripts: p50, p99 and max of a list of seconds, in ms."""

from __future__ import annotations

import statistics


def ms_summary(values: list[float]) -> dict[str, float]:
    """``{"p50_ms", "p99_ms", "max_ms"}`` of ``values`` (seconds); p99 is the nearest-rank value."""
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return {
        "p50_ms": round(statistics.median(ordered) * 1000, 1),
        "p99_ms": round(p99 * 1000, 1),
        "max_ms": round(ordered[-1] * 1000, 1),
    }
