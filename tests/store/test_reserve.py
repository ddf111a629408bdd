"""Reserve paths and the capacity window (issue 7): idle until requests start finding no
slot, then in rotation; drained when the main paths carry the load again. On every store."""

from __future__ import annotations

from datetime import timedelta

import pytest

from callbackpool.domain.errors import PoolExhausted
from callbackpool.domain.model import PaymentStatus, ReserveAction
from callbackpool.pool import CallbackPool, Checkout, Waiting
from callbackpool.testing import FakeClock

from ..conftest import PoolFactory
from ..support import PATHS, paygistix_return

RESERVE = ("/api/v1/payments/callback/handler-11", "/api/v1/payments/callback/handler-12")
WINDOW = timedelta(minutes=15)


@pytest.fixture
def reserve_pool(make_pool: PoolFactory) -> CallbackPool:
    # Leases outlast the window here, so that what is busy stays busy across it.
    return make_pool(reserve_paths=RESERVE, lock_timeout_minutes=30)


def fill(pool: CallbackPool, count: int) -> list[Checkout]:
    return [pool.create_payment(amount=5000 + n) for n in range(count)]


def pay(pool: CallbackPool, checkout: Checkout, pn_ref: str) -> None:
    amount = f"{checkout.payment.amount / 100:.2f}"
    pool.handle_callback(checkout.lease.path, paygistix_return(amount=amount, pn_ref=pn_ref))


def test_reserve_paths_idle_until_someone_finds_no_slot(reserve_pool: CallbackPool) -> None:
    status = reserve_pool.status()
    assert status.total == 10
    assert status.standby == 2
    assert status.reserve is not None
    assert status.reserve.state == "idle"
    held = fill(reserve_pool, 10)
    assert {c.lease.path for c in held} == set(PATHS)

    # The 11th finds every main path busy: the reserve comes into rotation for it.
    eleventh = reserve_pool.create_payment(amount=1000)
    assert eleventh.lease.path in RESERVE
    status = reserve_pool.status()
    assert (status.total, status.standby) == (12, 0)
    assert status.reserve is not None
    assert status.reserve.state == "active"
    (event,) = status.reserve.events
    assert event.action is ReserveAction.ACTIVATED
    assert set(event.paths) == set(RESERVE)
    assert "1 of 11 requests" in event.reason


def test_the_reserve_waits_for_the_share_to_pass_the_target(make_pool: PoolFactory) -> None:
    pool = make_pool(reserve_paths=RESERVE, capacity_target=0.2)
    held = fill(pool, 10)
    for n, checkout in enumerate(held[:5]):  # 15 requests served at once in the window
        pay(pool, checkout, f"R{n}")
    fill(pool, 5)
    with pytest.raises(PoolExhausted):  # 1 of 16 = 6% ≤ 20%: not yet
        pool.create_payment(amount=1000)
    with pytest.raises(PoolExhausted):  # 2 of 17 = 12%
        pool.create_payment(amount=1000)
    with pytest.raises(PoolExhausted):  # 3 of 18 = 17%
        pool.create_payment(amount=1000)
    assert pool.create_payment(amount=1000).lease.path in RESERVE  # 4 of 19 = 21%


def test_waiting_counts_towards_the_reserve(reserve_pool: CallbackPool) -> None:
    fill(reserve_pool, 10)
    result = reserve_pool.create_payment(amount=1000, wait=True)
    assert isinstance(result, Checkout)
    assert result.lease.path in RESERVE


def test_the_reserve_drains_when_the_main_paths_carry_the_load(
    reserve_pool: CallbackPool, clock: FakeClock
) -> None:
    held = fill(reserve_pool, 10)
    on_reserve = reserve_pool.create_payment(amount=1000)
    for n, checkout in enumerate(held):
        pay(reserve_pool, checkout, f"R{n}")
    # Main slots come first while the reserve is in rotation, so that it drains.
    assert reserve_pool.create_payment(amount=2000).lease.path in PATHS

    clock.advance(WINDOW - timedelta(seconds=1))
    assert reserve_pool.sweep().reserve is None  # not a whole window since activation
    clock.advance(timedelta(seconds=61))  # the window now holds only the quiet minutes
    report = reserve_pool.sweep()
    assert report.reserve is not None
    assert report.reserve.action is ReserveAction.DRAINED
    assert "nobody waited or was turned away" in report.reserve.reason
    status = reserve_pool.status()
    assert status.reserve is not None
    assert [e.action for e in status.reserve.events] == [
        ReserveAction.DRAINED,
        ReserveAction.ACTIVATED,
    ]
    assert status.standby == 2
    # The lease on a reserve path runs on, and its return resolves as ever.
    slot = next(s for s in status.slots if s.path == on_reserve.lease.path)
    assert slot.lease is not None
    assert slot.standby
    assert status.reserve.state == "draining"
    pay(reserve_pool, on_reserve, "R-reserve")
    assert reserve_pool.get_payment(on_reserve.payment.token).status is PaymentStatus.COMPLETED
    assert reserve_pool.sweep().reserve is None  # drained once


def test_no_drain_while_the_main_paths_are_all_busy(
    reserve_pool: CallbackPool, clock: FakeClock
) -> None:
    held = fill(reserve_pool, 10)
    reserve_pool.create_payment(amount=1000)  # activates
    clock.advance(WINDOW + timedelta(minutes=1))
    pay(reserve_pool, held[0], "R0")
    fill(reserve_pool, 1)  # ten busy again, in the window
    assert reserve_pool.sweep().reserve is None
    assert reserve_pool.status().standby == 0


def test_the_capacity_window_counts_requests_and_holding_times(
    pool: CallbackPool, clock: FakeClock
) -> None:
    held = fill(pool, 10)
    assert isinstance(pool.create_payment(amount=1000, wait=True), Waiting)
    with pytest.raises(PoolExhausted):
        pool.create_payment(amount=1000)
    clock.advance(timedelta(minutes=3))
    for n, checkout in enumerate(held[:4]):
        pay(pool, checkout, f"R{n}")

    capacity = pool.status().capacity
    assert capacity is not None
    assert (capacity.counts.leased, capacity.counts.waited, capacity.counts.refused) == (10, 1, 1)
    assert capacity.holding.ended == 4
    assert capacity.holding.mean_seconds == 180
    # 12 requests in 15 minutes, 3 minutes each: 48 an hour, 2.4 erlangs.
    assert capacity.arrivals_per_hour == pytest.approx(48)
    assert capacity.offered_erlangs == pytest.approx(2.4)
    assert capacity.slots_needed == 7
    assert capacity.predicted_turned_away == pytest.approx(0.000159, abs=1e-6)


def test_the_capacity_window_forgets_old_minutes(pool: CallbackPool, clock: FakeClock) -> None:
    fill(pool, 3)
    clock.advance(timedelta(minutes=16))
    capacity = pool.status().capacity
    assert capacity is not None
    assert capacity.counts.requests == 0
    assert capacity.offered_erlangs is None  # no lease ended in the window
