"""The operator's figures (issue 6): counts, pages of stored returns, lease spans and the
events observers hear. Through the pool, on every store."""

from __future__ import annotations

from datetime import timedelta

import pytest

from callbackpool.analytics import WINDOWS
from callbackpool.domain.errors import InvalidPayment, PoolExhausted
from callbackpool.domain.events import (
    CallbackResolved,
    CreateRefused,
    LeaseEnded,
    LeaseStarted,
    PoolEvent,
    SweepRan,
)
from callbackpool.domain.model import CallbackOutcome, LeaseEnd, PaymentStatus
from callbackpool.pool import CallbackPool
from callbackpool.testing import FakeClock

from ..support import CountingStore, paygistix_return


def test_payment_and_callback_counts_cover_every_status_and_outcome(pool: CallbackPool) -> None:
    paid = pool.create_payment(amount=1000)
    pool.handle_callback(paid.lease.path, paygistix_return(pn_ref="1"))
    pool.handle_callback(paid.lease.path, paygistix_return(pn_ref="1"))  # duplicate
    declined = pool.create_payment(amount=2000)
    pool.handle_callback(
        declined.lease.path, paygistix_return(amount="20.00", pn_ref="2", result="12")
    )
    pool.cancel_payment(pool.create_payment(amount=3000).payment.token)
    pool.create_payment(amount=4000)
    pool.handle_callback(paid.lease.path, paygistix_return(pn_ref="3", merchant="x"))  # rejected

    assert pool.payment_counts() == {
        PaymentStatus.OPEN: 0,
        PaymentStatus.PENDING: 1,
        PaymentStatus.COMPLETED: 1,
        PaymentStatus.FAILED: 1,
        PaymentStatus.CANCELLED: 1,
        PaymentStatus.EXPIRED: 0,
        PaymentStatus.NEEDS_REVIEW: 0,
    }
    assert pool.callback_counts() == {
        CallbackOutcome.RECEIVED: 0,
        CallbackOutcome.APPLIED: 2,
        CallbackOutcome.DUPLICATE: 1,
        CallbackOutcome.UNMATCHED: 0,
        CallbackOutcome.AMBIGUOUS: 0,
        CallbackOutcome.REJECTED: 1,
    }


def test_stored_returns_page_newest_first_and_filter_by_outcome(pool: CallbackPool) -> None:
    ids = [
        pool.handle_callback(
            pool.create_payment(amount=1000).lease.path, paygistix_return(pn_ref=f"P{i}")
        ).callback_id
        for i in range(5)
    ]
    ids.append(
        pool.handle_callback("/api/v1/payments/callback/handler-1", [("x", "1")]).callback_id
    )
    first = pool.callbacks(limit=4)
    assert [r.id for r in first] == ids[::-1][:4]
    rest = pool.callbacks(limit=4, before_id=first[-1].id)
    assert [r.id for r in rest] == ids[::-1][4:]
    assert pool.callbacks(limit=4, before_id=rest[-1].id) == []
    applied = pool.callbacks(outcomes=[CallbackOutcome.APPLIED], limit=2, before_id=ids[3])
    assert [r.id for r in applied] == [ids[2], ids[1]]
    assert dict(first[1].params)["ExpDate"] == "0329"  # raw as stored (views mask it)


def test_lease_spans_cover_the_window_and_the_live_leases(
    pool: CallbackPool, clock: FakeClock
) -> None:
    old = pool.create_payment(amount=1000)
    pool.handle_callback(old.lease.path, paygistix_return(pn_ref="old"))
    clock.advance(timedelta(hours=2))
    since = clock.now()
    clock.advance(timedelta(minutes=1))
    paid = pool.create_payment(amount=1000)
    clock.advance(timedelta(minutes=3))
    pool.handle_callback(paid.lease.path, paygistix_return(pn_ref="new"))
    live = pool.create_payment(amount=2000)

    history = pool.history(clock.now() - since)
    now, spans = history.now, history.spans
    assert now == clock.now()
    assert [(s.lease_id, s.end_reason) for s in spans] == [
        (paid.lease.id, LeaseEnd.CALLBACK),
        (live.lease.id, None),
    ]
    assert spans[0].ended_at is not None
    assert spans[0].ended_at - spans[0].acquired_at == timedelta(minutes=3)
    assert spans[1].ended_at is None


def test_observers_hear_what_committed(pool: CallbackPool, clock: FakeClock) -> None:
    events: list[PoolEvent] = []
    pool.add_observer(events.append)
    checkouts = [pool.create_payment(amount=1000 + i) for i in range(10)]
    with pytest.raises(PoolExhausted):
        pool.create_payment(amount=1000)
    with pytest.raises(InvalidPayment):
        pool.create_payment(amount=-1)
    pool.handle_callback(checkouts[0].lease.path, paygistix_return(pn_ref="1"))
    pool.cancel_payment(checkouts[1].payment.token)
    clock.advance(timedelta(minutes=11))
    pool.sweep()

    started = [e for e in events if isinstance(e, LeaseStarted)]
    assert [e.lease.id for e in started] == [c.lease.id for c in checkouts]
    assert all(e.seconds >= 0 for e in started)
    assert [e.reason for e in events if isinstance(e, CreateRefused)] == [
        "pool_exhausted",
        "invalid",
    ]
    ended = [e.lease.end_reason for e in events if isinstance(e, LeaseEnded)]
    assert ended == [LeaseEnd.CALLBACK, LeaseEnd.CANCELLED] + [LeaseEnd.EXPIRED] * 8
    assert [e.outcome for e in events if isinstance(e, CallbackResolved)] == [
        CallbackOutcome.APPLIED
    ]
    assert [e for e in events if isinstance(e, SweepRan)] == [SweepRan(failed=False, expired=8)]


def test_a_failing_observer_changes_nothing(pool: CallbackPool) -> None:
    def broken(event: PoolEvent) -> None:
        raise RuntimeError("metrics backend down")

    pool.add_observer(broken)
    checkout = pool.create_payment(amount=1000)
    pool.handle_callback(checkout.lease.path, paygistix_return())
    assert pool.get_payment(checkout.payment.token).status is PaymentStatus.COMPLETED


def test_turn_aways_are_counted_per_minute(pool: CallbackPool, clock: FakeClock) -> None:
    for i in range(10):
        pool.create_payment(amount=1000 + i)
    start = clock.now()
    for seconds in (0, 10, 59, 60, 185):
        clock.set(start + timedelta(seconds=seconds))
        with pytest.raises(PoolExhausted):
            pool.create_payment(amount=1000)
    history = pool.history(timedelta(minutes=5))
    minute = timedelta(minutes=1)
    assert history.turn_aways == ((start, 3), (start + minute, 1), (start + 3 * minute, 1))
    assert pool.history(timedelta(seconds=30)).turn_aways == ((start + 3 * minute, 1),)


def test_a_refusal_is_one_write_and_one_count(pool: CallbackPool, clock: FakeClock) -> None:
    # Under a flood of create-tokens on a full pool, each refusal costs the one transaction
    # that found no slot, and counts there: the turn-away chart reads the same count.
    for i in range(10):
        pool.create_payment(amount=1000 + i)
    counting = CountingStore(pool.store)
    instance = CallbackPool(counting, pool.gateway, pool.policy)  # type: ignore[arg-type]
    start = clock.now()
    for _ in range(4):
        with pytest.raises(PoolExhausted):
            instance.create_payment(amount=1000)
    assert counting.writes == 4
    with pool.store.read() as tx:
        assert tx.admissions_since(start).refused == 4
    assert pool.history(timedelta(minutes=1)).turn_aways == ((start, 4),)


def test_the_week_chart_keeps_its_refusals_through_a_sweep(
    pool: CallbackPool, clock: FakeClock
) -> None:
    week = WINDOWS["7d"]
    minute = timedelta(minutes=1)
    for i in range(10):
        pool.create_payment(amount=1000 + i)
    first = clock.now()
    for moment in (first, first + minute):
        clock.set(moment)
        with pytest.raises(PoolExhausted):
            pool.create_payment(amount=1000)
    clock.set(first + minute + week)  # the second refusal is a week old, the first older
    assert pool.history(week + minute).turn_aways == ((first, 1), (first + minute, 1))
    pool.sweep()
    assert pool.history(week).turn_aways == ((first + minute, 1),)
    assert pool.history(week + minute).turn_aways == ((first + minute, 1),)  # swept
