"""The pool over time, for the dashboard's charts: utilisation, turn-aways, how leases
ended and how long they held their slots. Pure functions over what the store recorded."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from .domain.model import LeaseEnd, LeaseSpan

WINDOWS: Mapping[str, timedelta] = {
    "1h": timedelta(hours=1),
    "6h": timedelta(hours=6),
    "24h": timedelta(hours=24),
    "7d": timedelta(days=7),
}
DEFAULT_WINDOW = "1h"
BUCKETS = 30


@dataclass(frozen=True, kw_only=True)
class PoolSeries:
    """Figures per bucket of time, oldest bucket first."""

    since: datetime
    bucket: timedelta
    slots: int
    # The mean share of the slots leased over each bucket (0 to 1).
    utilisation: tuple[float, ...]
    # Leases that ended in each bucket, by how they ended.
    ended: Mapping[LeaseEnd, tuple[int, ...]]
    # The median and 95th percentile of how long the leases ended in a bucket had held
    # their slot, in seconds (None where none ended).
    duration_p50: tuple[float | None, ...]
    duration_p95: tuple[float | None, ...]
    # Requests for a slot turned away in each bucket (None where nothing records them).
    turned_away: tuple[int, ...] | None

    @property
    def starts(self) -> tuple[datetime, ...]:
        return tuple(self.since + i * self.bucket for i in range(len(self.utilisation)))


def pool_series(
    *,
    now: datetime,
    window: timedelta,
    spans: Sequence[LeaseSpan],
    slots: int,
    buckets: int = BUCKETS,
    turned_away_at: Sequence[tuple[datetime, int]] | None = None,
) -> PoolSeries:
    """The series of the ``window`` that ends ``now``, in ``buckets`` buckets, from the leases
    that held a slot in it and (time, count) pairs of requests turned away."""
    bucket = window / buckets
    since = now - window
    size = bucket.total_seconds()
    busy = [0.0] * buckets
    ended = {reason: [0] * buckets for reason in LeaseEnd}
    durations: list[list[float]] = [[] for _ in range(buckets)]

    def index(moment: datetime) -> int | None:
        if moment < since or moment > now:
            return None
        return min(int((moment - since) / bucket), buckets - 1)

    for span in spans:
        start = max(span.acquired_at, since)
        end = min(span.ended_at or now, now)
        first, last = index(start), index(end)
        if first is not None and last is not None and end > start:
            for i in range(first, last + 1):
                left = max(start, since + i * bucket)
                right = min(end, since + (i + 1) * bucket)
                busy[i] += max((right - left).total_seconds(), 0.0)
        if span.ended_at is not None and span.end_reason is not None:
            at = index(span.ended_at)
            if at is not None:
                ended[span.end_reason][at] += 1
                durations[at].append((span.ended_at - span.acquired_at).total_seconds())

    turned: tuple[int, ...] | None = None
    if turned_away_at is not None:
        counts = [0] * buckets
        for moment, count in turned_away_at:
            at = index(moment)
            if at is not None:
                counts[at] += count
        turned = tuple(counts)

    return PoolSeries(
        since=since,
        bucket=bucket,
        slots=slots,
        utilisation=tuple(min(b / size / slots, 1.0) if slots else 0.0 for b in busy),
        ended={reason: tuple(counts) for reason, counts in ended.items()},
        duration_p50=tuple(percentile(d, 50) for d in durations),
        duration_p95=tuple(percentile(d, 95) for d in durations),
        turned_away=turned,
    )


def percentile(values: Sequence[float], rank: float) -> float | None:
    """The nearest-rank percentile (None of nothing)."""
    if not values:
        return None
    ordered = sorted(values)
    position = max(math.ceil(rank / 100 * len(ordered)), 1)
    return ordered[position - 1]
