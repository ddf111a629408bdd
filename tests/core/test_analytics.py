"""The dashboard's series, on hand-made lease spans (pure functions)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from callbackpool.analytics import percentile, pool_series
from callbackpool.domain.model import LeaseEnd, LeaseSpan

NOW = datetime(2026, 1, 1, 13, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)


def span(
    lease_id: int, start: int, end: int | None, reason: LeaseEnd | None = LeaseEnd.CALLBACK
) -> LeaseSpan:
    """A lease from ``start`` to ``end`` minutes before NOW (None: still live)."""
    return LeaseSpan(
        lease_id=lease_id,
        path=f"/cb/{lease_id}",
        acquired_at=NOW - start * MINUTE,
        ended_at=None if end is None else NOW - end * MINUTE,
        end_reason=None if end is None else reason,
    )


def test_utilisation_is_the_share_of_slot_time_leased_per_bucket() -> None:
    series = pool_series(
        now=NOW,
        window=timedelta(minutes=10),
        buckets=5,  # two minutes each
        slots=2,
        spans=[
            span(1, 15, 8),  # from before the window to the end of bucket 0
            span(2, 4, 2, LeaseEnd.EXPIRED),  # bucket 3, whole
            span(3, 1, None),  # live in the last minute
        ],
    )
    assert series.since == NOW - 10 * MINUTE
    assert series.bucket == 2 * MINUTE
    assert series.utilisation == (0.5, 0.0, 0.0, 0.5, 0.25)
    # Ended in bucket 1 (8 minutes ago) and bucket 4 (2 minutes ago: the bucket's start).
    assert series.ended[LeaseEnd.CALLBACK] == (0, 1, 0, 0, 0)
    assert series.ended[LeaseEnd.EXPIRED] == (0, 0, 0, 0, 1)
    assert series.duration_p50 == (None, 420.0, None, None, 120.0)
    assert series.turned_away is None


def test_overlapping_leases_add_up_and_turn_aways_are_bucketed() -> None:
    series = pool_series(
        now=NOW,
        window=timedelta(minutes=4),
        buckets=2,
        slots=4,
        spans=[span(i, 4, 2) for i in range(3)] + [span(9, 30, 0)],
        turned_away_at=[(NOW - 3 * MINUTE, 2), (NOW - MINUTE, 1), (NOW - 90 * MINUTE, 7)],
    )
    assert series.utilisation == (1.0, 0.25)
    assert series.turned_away == (2, 1)
    assert series.duration_p95 == (None, 1800.0)  # the three short ones ended at bucket 1's start
    assert series.ended[LeaseEnd.CALLBACK] == (0, 4)


def test_percentiles_by_nearest_rank() -> None:
    assert percentile([], 50) is None
    assert percentile([3.0], 95) == 3.0
    values = [float(v) for v in range(1, 101)]
    assert (percentile(values, 50), percentile(values, 95)) == (50.0, 95.0)
