"""Per-slot health (issue 6): a path whose returns never arrive is taken out of rotation
after K expiries in a row and leased no more until an operator restores it. Every store."""

from __future__ import annotations

from datetime import timedelta

import pytest

from callbackpool.domain.errors import UnknownSlot
from callbackpool.domain.events import PoolEvent, SlotRestored, SlotSidelined
from callbackpool.domain.model import CallbackOutcome, PaymentStatus
from callbackpool.pool import CallbackPool
from callbackpool.pool.core import SLOT_HEALTH
from callbackpool.testing import FakeClock

from ..conftest import PoolFactory
from ..support import PATHS, paygistix_return

BROKEN = PATHS[2]  # handler-3: the gateway no longer knows it
# A short late-callback window, so that the broken slot's taints pass and LRU brings it back
# about every tenth payment (a tainted slot waits behind clean ones).
WINDOW_MINUTES = 1
WINDOW = timedelta(minutes=WINDOW_MINUTES)


def slot(pool: CallbackPool, path: str):  # type: ignore[no-untyped-def]
    return next(s for s in pool.status().slots if s.path == path)


def run_traffic(pool: CallbackPool, clock: FakeClock, payments: int, start: int = 0) -> list[str]:
    """One payment at a time: paid at once, except on the broken path, where the customer's
    return never arrives and the lease runs out its ten minutes. The paths leased, in order."""
    leased = []
    for n in range(start, start + payments):
        checkout = pool.create_payment(amount=1000)
        leased.append(checkout.lease.path)
        if checkout.lease.path == BROKEN:
            clock.advance(timedelta(minutes=10))
            pool.expire_due()
        else:
            result = pool.handle_callback(
                checkout.lease.path, paygistix_return(amount="10.00", pn_ref=f"PN{n}")
            )
            assert result.outcome is CallbackOutcome.APPLIED
        clock.advance(timedelta(seconds=30))
    return leased


def test_a_broken_path_is_taken_out_of_rotation_after_k_expiries_and_the_rest_keeps_serving(
    make_pool: PoolFactory, clock: FakeClock
) -> None:
    pool = make_pool(
        late_callback_window_minutes=WINDOW_MINUTES, slot_health_expiries_to_sideline=3
    )
    events: list[PoolEvent] = []
    pool.add_observer(events.append)

    # Three visits to the broken path: three expiries in a row.
    leased = run_traffic(pool, clock, 40)
    assert leased.count(BROKEN) == 3
    broken = slot(pool, BROKEN)
    assert broken.sidelined
    assert broken.sidelined_by == SLOT_HEALTH
    assert broken.sidelined_reason == "3 leases in a row expired without a return on this path"
    assert broken.health.expiry_streak == 3
    assert broken.health.silent_expiries == 3
    assert broken.health.last_return_at is None
    assert [e for e in events if isinstance(e, SlotSidelined)] == [
        SlotSidelined(path=BROKEN, by=SLOT_HEALTH, reason=broken.sidelined_reason)
    ]
    status = pool.status()
    assert (status.total, status.available, status.out_of_rotation) == (10, 9, 1)

    # Not leased again, however many payments come; the nine others serve them all.
    later = run_traffic(pool, clock, 40, start=100)
    assert BROKEN not in later
    assert set(later) == set(PATHS) - {BROKEN}
    assert pool.payment_counts()[PaymentStatus.COMPLETED] == 37 + 40

    # Nine payments at once fill the nine slots in rotation: the tenth is turned away.
    for _ in range(9):
        assert pool.create_payment(amount=2000).lease.path != BROKEN


def test_an_operator_puts_a_sidelined_slot_back_and_it_serves_again(
    make_pool: PoolFactory, clock: FakeClock
) -> None:
    pool = make_pool(
        late_callback_window_minutes=WINDOW_MINUTES, slot_health_expiries_to_sideline=2
    )
    run_traffic(pool, clock, 20)
    assert slot(pool, BROKEN).sidelined
    events: list[PoolEvent] = []
    pool.add_observer(events.append)

    assert pool.restore_slot(BROKEN, by="alice") is True
    assert pool.restore_slot(BROKEN, by="alice") is False  # in rotation already
    assert events == [SlotRestored(path=BROKEN, by="alice")]
    restored = slot(pool, BROKEN)
    assert not restored.sidelined
    assert restored.sidelined_by is None
    assert restored.health.expiry_streak == 0  # a fresh start
    assert restored.health.silent_expiries == 2  # the history stays
    # Its taint passed: ten payments at once take every slot, the restored one included.
    clock.advance(WINDOW)
    leased = {pool.create_payment(amount=1000).lease.path for _ in range(10)}
    assert leased == set(PATHS)


def test_a_return_on_the_path_resets_the_streak(make_pool: PoolFactory, clock: FakeClock) -> None:
    pool = make_pool(
        late_callback_window_minutes=WINDOW_MINUTES, slot_health_expiries_to_sideline=4
    )
    run_traffic(pool, clock, 20)  # two expiries on the broken path
    assert slot(pool, BROKEN).health.expiry_streak == 2
    # The next visit to it expires too (three in a row)...
    n = 0
    while (checkout := pool.create_payment(amount=1000)).lease.path != BROKEN:
        pool.handle_callback(checkout.lease.path, paygistix_return(pn_ref=f"X{n}"))
        n += 1
    clock.advance(timedelta(minutes=10))
    pool.expire_due()
    assert slot(pool, BROKEN).health.expiry_streak == 3
    # ...but that customer's return was merely late, and arrives: the path works.
    clock.advance(timedelta(seconds=20))
    result = pool.handle_callback(BROKEN, paygistix_return(amount="10.00", pn_ref="LATE"))
    assert result.outcome is CallbackOutcome.APPLIED
    assert result.payment_token == checkout.payment.token
    health = slot(pool, BROKEN).health
    assert health.expiry_streak == 0
    assert health.approvals == 1
    assert health.silent_expiries == 2  # that lease's expiry was not silent after all
    assert health.last_return_at == clock.now()
    run_traffic(pool, clock, 30, start=50)  # more expiries, fewer than 4 in a row
    assert slot(pool, BROKEN).health.expiry_streak == 3
    assert not slot(pool, BROKEN).sidelined


def test_the_rule_can_be_turned_off(make_pool: PoolFactory, clock: FakeClock) -> None:
    pool = make_pool(
        late_callback_window_minutes=WINDOW_MINUTES, slot_health_expiries_to_sideline=0
    )
    leased = run_traffic(pool, clock, 60)
    assert leased.count(BROKEN) == 6
    assert not slot(pool, BROKEN).sidelined
    assert slot(pool, BROKEN).health.expiry_streak == 6


def test_no_slot_is_sidelined_when_no_path_gets_returns(
    make_pool: PoolFactory, clock: FakeClock
) -> None:
    """A gateway that sends no return at all is an outage, not a broken path: sidelining
    every slot would turn every customer away once it is back."""
    pool = make_pool(
        late_callback_window_minutes=WINDOW_MINUTES, slot_health_expiries_to_sideline=2
    )
    for _ in range(3):
        for _ in range(10):
            pool.create_payment(amount=1000)
        clock.advance(timedelta(minutes=11))
        pool.expire_due()
    status = pool.status()
    assert status.out_of_rotation == 0
    assert {s.health.expiry_streak for s in status.slots} == {3}


def test_a_sidelined_slot_still_resolves_its_live_lease_and_taints(
    make_pool: PoolFactory, clock: FakeClock
) -> None:
    pool = make_pool(
        late_callback_window_minutes=WINDOW_MINUTES, slot_health_expiries_to_sideline=5
    )
    # A return on another path, so that sidelining by hand is as the rule would do it.
    holder = pool.create_payment(amount=1000)  # leases handler-1
    tainted = pool.create_payment(amount=2500)  # handler-2
    pool.cancel_payment(tainted.payment.token)  # handler-2 keeps a taint for 2500
    assert pool.sideline_slot(holder.lease.path, by="bob", reason="gateway says unknown URL")
    assert pool.sideline_slot(tainted.lease.path, by="bob", reason="checking") is True
    assert pool.sideline_slot(tainted.lease.path, by="bob", reason="again") is False

    paid = pool.handle_callback(holder.lease.path, paygistix_return(amount="10.00", pn_ref="A"))
    late = pool.handle_callback(tainted.lease.path, paygistix_return(amount="25.00", pn_ref="B"))
    assert (paid.payment_token, late.payment_token) == (
        holder.payment.token,
        tainted.payment.token,
    )
    assert pool.get_payment(holder.payment.token).status is PaymentStatus.COMPLETED
    assert pool.get_payment(tainted.payment.token).status is PaymentStatus.COMPLETED
    # Still out of rotation: a return does not put a slot back, an operator does.
    leased = {pool.create_payment(amount=500).lease.path for _ in range(8)}
    assert not leased & {holder.lease.path, tainted.lease.path}
    sidelined = slot(pool, holder.lease.path)
    assert (sidelined.sidelined_by, sidelined.sidelined_reason) == (
        "bob",
        "gateway says unknown URL",
    )


def test_declines_are_counted_apart_from_approvals(pool: CallbackPool) -> None:
    first = pool.create_payment(amount=1000)
    pool.handle_callback(first.lease.path, paygistix_return(pn_ref="1", result="12"))
    second = pool.create_payment(amount=1000)
    assert second.lease.path != first.lease.path
    pool.handle_callback(first.lease.path, paygistix_return(pn_ref="1", result="12"))  # repeat
    pool.handle_callback(first.lease.path, paygistix_return(pn_ref="2"))  # unmatched, approved
    pool.handle_callback(first.lease.path, paygistix_return(pn_ref="3", merchant="forger"))
    health = slot(pool, first.lease.path).health
    # The repeat is not counted twice; the forged return (rejected) not at all.
    assert (health.approvals, health.declines) == (1, 1)


def test_unknown_paths_are_refused(pool: CallbackPool) -> None:
    with pytest.raises(UnknownSlot):
        pool.sideline_slot("/nowhere", by="bob", reason="x")
    with pytest.raises(UnknownSlot):
        pool.restore_slot("/nowhere", by="bob")
