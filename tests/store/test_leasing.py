"""Leasing (docs/design.md#leasing), through the pool, on every store."""

from __future__ import annotations

from datetime import timedelta

import pytest

from callbackpool.domain.errors import (
    InvalidPayment,
    NothingToRelease,
    PaymentNotPending,
    PoolExhausted,
    UnknownPayment,
)
from callbackpool.domain.model import LeaseEnd, PaymentStatus, StatusChange
from callbackpool.pool import CallbackPool
from callbackpool.testing import FakeClock

from ..conftest import PoolFactory
from ..support import PATHS, paygistix_return


def fill(pool: CallbackPool, count: int, amount: int = 1000) -> list[str]:
    return [pool.create_payment(amount=amount).payment.token for _ in range(count)]


def test_a_payment_leases_a_path_and_its_callback_url(pool: CallbackPool) -> None:
    checkout = pool.create_payment(amount=1000, customer={"email": "a@example.com"})
    payment = pool.get_payment(checkout.payment.token)
    assert payment.status is PaymentStatus.PENDING
    assert payment.callback_path == checkout.lease.path == PATHS[0]
    assert payment.lease_id == checkout.lease.id
    assert payment.customer == {"email": "a@example.com"}
    assert checkout.form.callback_url == f"https://shop.example{PATHS[0]}"
    assert checkout.form.fields["ReturnURL"] == checkout.form.callback_url
    assert payment.expires_at == checkout.lease.acquired_at + timedelta(minutes=10)


def test_tokens_are_long_and_distinct(pool: CallbackPool) -> None:
    tokens = fill(pool, 10)
    assert len(set(tokens)) == 10
    assert all(len(token) >= 32 for token in tokens)


def test_lease_ids_strictly_increase(pool: CallbackPool) -> None:
    ids = []
    for _ in range(25):
        checkout = pool.create_payment(amount=500)
        ids.append(checkout.lease.id)
        pool.handle_callback(
            checkout.lease.path, paygistix_return(amount="5.00", pn_ref=f"P{len(ids)}")
        )
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)


def test_the_eleventh_payment_on_ten_slots_is_refused(pool: CallbackPool) -> None:
    tokens = fill(pool, 10)
    with pytest.raises(PoolExhausted) as refused:
        pool.create_payment(amount=1000)
    # Retry-After: until the earliest lease can end (10 minutes from now, none has aged).
    assert refused.value.retry_after_seconds == 600
    assert "No payment forms are available" in refused.value.message
    assert pool.status().locked == 10
    # The refused attempt left nothing behind: every slot is held by one of the ten.
    assert {s.lease.token for s in pool.status().slots if s.lease} == set(tokens)


def test_retry_after_counts_down_to_the_earliest_expiry(
    pool: CallbackPool, clock: FakeClock
) -> None:
    fill(pool, 1)
    clock.advance(timedelta(minutes=4))
    fill(pool, 9)
    clock.advance(timedelta(seconds=30))
    with pytest.raises(PoolExhausted) as refused:
        pool.create_payment(amount=1000)
    assert refused.value.retry_after_seconds == 330


def test_slots_go_least_recently_released_first(pool: CallbackPool, clock: FakeClock) -> None:
    # Lease all ten, then return them in the order 3, 1, 2, 4..10 (by release time).
    checkouts = [pool.create_payment(amount=1000 + i) for i in range(10)]
    order = [2, 0, 1, *range(3, 10)]
    for n, index in enumerate(order):
        clock.advance(1)
        c = checkouts[index]
        pool.handle_callback(
            c.lease.path, paygistix_return(amount=f"{(1000 + index) / 100:.2f}", pn_ref=f"R{n}")
        )
    clock.advance(1)
    next_paths = [pool.create_payment(amount=700).lease.path for _ in range(3)]
    assert next_paths == [PATHS[2], PATHS[0], PATHS[1]]


def test_lru_is_by_release_not_by_acquisition(pool: CallbackPool, clock: FakeClock) -> None:
    # handler-1 acquired first but released last: the seed (LRU by acquisition) would hand
    # out handler-1 next; least recently *released* hands out handler-2.
    first = pool.create_payment(amount=100)
    clock.advance(1)
    second = pool.create_payment(amount=200)
    fill(pool, 8, amount=300)
    clock.advance(1)
    pool.handle_callback(second.lease.path, paygistix_return(amount="2.00", pn_ref="A"))
    clock.advance(1)
    pool.handle_callback(first.lease.path, paygistix_return(amount="1.00", pn_ref="B"))
    assert pool.create_payment(amount=400).lease.path == second.lease.path


def test_clean_slots_before_tainted_ones(pool: CallbackPool, clock: FakeClock) -> None:
    cancelled = pool.create_payment(amount=1000)
    pool.cancel_payment(cancelled.payment.token)  # handler-1 now tainted (released first)
    clock.advance(1)
    nxt = pool.create_payment(amount=2000)
    assert nxt.lease.path != cancelled.lease.path


def test_tainted_slots_without_this_amount_before_same_amount_ones(
    pool: CallbackPool, clock: FakeClock
) -> None:
    a = pool.create_payment(amount=1000)
    b = pool.create_payment(amount=2000)
    fill(pool, 8, amount=5000)  # every other slot busy
    pool.cancel_payment(a.payment.token)  # handler-1 tainted by 10.00
    clock.advance(1)
    pool.cancel_payment(b.payment.token)  # handler-2 tainted by 20.00
    clock.advance(1)
    # Both free slots are tainted; handler-1 is the least recently released, but its taint
    # has this payment's amount, so handler-2 comes first.
    assert pool.create_payment(amount=1000).lease.path == b.lease.path


def test_same_amount_tainted_slots_are_last_and_optional(
    make_pool: PoolFactory, clock: FakeClock
) -> None:
    strict = make_pool(reuse_same_amount_tainted=False)
    a = strict.create_payment(amount=1000)
    fill(strict, 9, amount=5000)
    strict.cancel_payment(a.payment.token)
    with pytest.raises(PoolExhausted):
        strict.create_payment(amount=1000)
    # Another amount may use the tainted slot.
    assert strict.create_payment(amount=1234).lease.path == a.lease.path


def test_same_amount_tainted_slot_is_used_when_allowed(pool: CallbackPool) -> None:
    a = pool.create_payment(amount=1000)
    fill(pool, 9, amount=5000)
    pool.cancel_payment(a.payment.token)
    assert pool.create_payment(amount=1000).lease.path == a.lease.path


def test_an_expired_lease_is_taken_over_and_its_payment_expires(
    pool: CallbackPool, clock: FakeClock
) -> None:
    changes: list[StatusChange] = []
    pool.add_status_hook(changes.append)
    old = fill(pool, 10)
    clock.advance(timedelta(minutes=10))
    newcomer = pool.create_payment(amount=2000)
    assert newcomer.lease.path == PATHS[0]
    assert pool.get_payment(old[0]).status is PaymentStatus.EXPIRED
    # Expiry is "we stopped waiting": every lease that ran out ended, not only the one reused.
    assert all(pool.get_payment(t).status is PaymentStatus.EXPIRED for t in old)
    assert {c.token for c in changes if c.status is PaymentStatus.EXPIRED} == set(old)


def test_a_lease_is_live_until_the_instant_it_expires(pool: CallbackPool, clock: FakeClock) -> None:
    fill(pool, 10)
    clock.advance(timedelta(minutes=10) - timedelta(microseconds=1))
    with pytest.raises(PoolExhausted):
        pool.create_payment(amount=1000)
    clock.advance(timedelta(microseconds=1))
    pool.create_payment(amount=1000)


def test_fractional_lock_timeouts(make_pool: PoolFactory, clock: FakeClock) -> None:
    pool = make_pool(lock_timeout_minutes=0.5)
    token = pool.create_payment(amount=100).payment.token
    clock.advance(29)
    assert pool.get_payment(token).status is PaymentStatus.PENDING
    clock.advance(1)
    assert pool.get_payment(token).status is PaymentStatus.EXPIRED


def test_cancel_frees_the_slot_with_a_taint(pool: CallbackPool) -> None:
    checkout = pool.create_payment(amount=1000)
    cancelled = pool.cancel_payment(checkout.payment.token)
    assert cancelled.status is PaymentStatus.CANCELLED
    slot = next(s for s in pool.status().slots if s.path == checkout.lease.path)
    assert slot.lease is None
    assert slot.taints == 1


def test_cancel_twice_or_after_the_end_is_refused(pool: CallbackPool) -> None:
    checkout = pool.create_payment(amount=1000)
    pool.cancel_payment(checkout.payment.token)
    with pytest.raises(PaymentNotPending, match="cancelled"):
        pool.cancel_payment(checkout.payment.token)
    paid = pool.create_payment(amount=1000)
    pool.handle_callback(paid.lease.path, paygistix_return(amount="10.00"))
    with pytest.raises(PaymentNotPending, match="completed"):
        pool.cancel_payment(paid.payment.token)
    with pytest.raises(UnknownPayment):
        pool.cancel_payment("no-such-token")


def test_cancel_of_a_lease_past_expiry_reports_expired(
    pool: CallbackPool, clock: FakeClock
) -> None:
    token = pool.create_payment(amount=1000).payment.token
    clock.advance(timedelta(minutes=11))
    with pytest.raises(PaymentNotPending, match="expired"):
        pool.cancel_payment(token)
    assert pool.get_payment(token).status is PaymentStatus.EXPIRED


def test_taints_fade_after_the_late_callback_window(pool: CallbackPool, clock: FakeClock) -> None:
    checkout = pool.create_payment(amount=1000)
    pool.cancel_payment(checkout.payment.token)
    clock.advance(timedelta(minutes=59))
    assert pool.status().tainted == 1
    clock.advance(timedelta(minutes=1))
    assert pool.status().tainted == 0
    report = pool.sweep()
    assert report.taints_dropped == 1


def test_manual_release_by_path_and_by_token(pool: CallbackPool) -> None:
    a = pool.create_payment(amount=1000)
    b = pool.create_payment(amount=2000)
    released = pool.release(path=a.lease.path)
    assert released.id == a.lease.id
    assert pool.release(token=b.payment.token).id == b.lease.id
    for checkout in (a, b):
        payment = pool.get_payment(checkout.payment.token)
        assert payment.status is PaymentStatus.EXPIRED
        assert payment.error_message == "released by an operator"
    assert pool.status().locked == 0
    assert pool.status().tainted == 2
    with pytest.raises(NothingToRelease):
        pool.release(path=a.lease.path)
    with pytest.raises(NothingToRelease):
        pool.release(token="nope")


def test_release_all_is_the_guides_manual_cleanup(pool: CallbackPool) -> None:
    tokens = fill(pool, 4)
    released = pool.release_all()
    assert sorted(lease.token for lease in released) == sorted(tokens)
    assert pool.status().available == 10
    assert pool.release_all() == []


def test_sweep_expires_due_leases_once(pool: CallbackPool, clock: FakeClock) -> None:
    fill(pool, 3)
    clock.advance(timedelta(minutes=10))
    assert len(pool.stuck_leases()) == 3
    assert pool.status().stuck == 3
    assert pool.sweep().expired == 3
    assert pool.sweep().expired == 0
    assert pool.stuck_leases() == []


def test_orphaned_payments_report(pool: CallbackPool, clock: FakeClock) -> None:
    # A pending payment far past its timeout exists only where nothing sweeps or acquires;
    # the report finds pending payments older than the threshold.
    token = pool.create_payment(amount=1000).payment.token
    clock.advance(timedelta(minutes=5))
    assert pool.orphaned_payments(older_than=timedelta(minutes=4))[0].token == token
    assert pool.orphaned_payments() == []


def test_usage_distribution(pool: CallbackPool, clock: FakeClock) -> None:
    for n in range(3):
        checkout = pool.create_payment(amount=1000)
        pool.handle_callback(checkout.lease.path, paygistix_return(pn_ref=f"U{n}"))
        clock.advance(1)
    pool.create_payment(amount=1000)
    clock.advance(timedelta(minutes=10))
    pool.sweep()
    usage = {row.path: row for row in pool.usage()}
    assert sum(row.usage_count for row in usage.values()) == 4
    assert sum(row.callbacks for row in usage.values()) == 3
    assert sum(row.expiries for row in usage.values()) == 1
    # Three returns went to three different slots (LRU spreads use).
    assert sorted(row.usage_count for row in usage.values())[-4:] == [1, 1, 1, 1]


def test_paths_removed_from_the_configuration_are_deactivated_not_deleted(
    make_pool: PoolFactory,
) -> None:
    full = make_pool()
    checkout = full.create_payment(amount=1000)
    full.handle_callback(checkout.lease.path, paygistix_return())
    smaller = make_pool(callback_paths=PATHS[1:])
    status = smaller.status()
    assert status.total == 9
    removed = next(s for s in status.slots if s.path == PATHS[0])
    assert not removed.active
    assert removed.usage_count == 1  # its history stays
    assert smaller.create_payment(amount=1000).lease.path != PATHS[0]
    # Put back, it is active again.
    assert make_pool().sync_slots().reactivated == ()
    assert make_pool().status().total == 10


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({}, "amount"),
        ({"amount": 0}, "amount"),
        ({"amount": -5}, "amount"),
        ({"amount": 10.5}, "amount"),
        ({"amount": True}, "amount"),
        ({"amount": "1000"}, "amount"),
        ({"amount": 1000, "currency": "XYZ"}, "currency"),
        ({"amount": 1000, "currency": "EUR"}, "currency"),
        ({"items": {"NOPE": 1}}, "items"),
        ({"items": {"WDF": 0}}, "items"),
        ({"items": {"WDF": 1.5}}, "items"),
        ({"items": {"WDF": 2}, "amount": 300}, "amount"),
    ],
)
def test_invalid_payments_name_the_field(
    pool: CallbackPool, kwargs: dict[str, object], field: str
) -> None:
    with pytest.raises(InvalidPayment) as invalid:
        pool.create_payment(**kwargs)  # type: ignore[arg-type]
    assert invalid.value.field == field
    assert pool.status().locked == 0


def test_max_amount(make_pool: PoolFactory) -> None:
    pool = make_pool(max_amount=50_000)
    pool.create_payment(amount=50_000)
    with pytest.raises(InvalidPayment, match="must not exceed 50000"):
        pool.create_payment(amount=50_001)


def test_amounts_beyond_what_json_clients_hold_exactly_are_refused(
    make_pool: PoolFactory,
) -> None:
    # Under a maximum set higher too: such an amount would overflow a store's integers.
    pool = make_pool(max_amount=10**18)
    for amount in (2**53, 2**63, 10**30):
        with pytest.raises(InvalidPayment, match="must not exceed") as invalid:
            pool.create_payment(amount=amount)
        assert invalid.value.field == "amount"
    assert pool.create_payment(amount=2**53 - 1).payment.amount == 2**53 - 1


def test_items_price_the_payment_and_fill_the_form(pool: CallbackPool) -> None:
    checkout = pool.create_payment(items={"WDF": 3, "BAG": 1})
    assert checkout.payment.amount == 3 * 125 + 1000
    fields = checkout.form.fields
    assert (fields["pxCode1"], fields["pxPrice1"], fields["pxQty1"]) == ("WDF", "1.25", "3")
    assert (fields["pxCode2"], fields["pxQty2"]) == ("BAG", "1")
    assert (fields["pxCode3"], fields["pxQty3"]) == ("AMT", "0")
    # An amount alone goes on the open-amount item, priced one cent.
    assert pool.create_payment(amount=1234).form.fields["pxQty3"] == "1234"


def test_leases_end_with_the_reason_they_ended(pool: CallbackPool, clock: FakeClock) -> None:
    paid = pool.create_payment(amount=1000)
    pool.handle_callback(paid.lease.path, paygistix_return())
    cancelled = pool.create_payment(amount=2000)
    pool.cancel_payment(cancelled.payment.token)
    expired = pool.create_payment(amount=3000)
    clock.advance(timedelta(minutes=10))
    pool.sweep()
    with pool.store.read() as tx:
        ended = {
            c.lease.token: c.lease.end_reason
            for slot in tx.slot_views()
            for c in tx.candidates(slot.id)
        }
    # Only the tainted ones remain candidates; the paid lease ended clean.
    assert ended == {
        cancelled.payment.token: LeaseEnd.CANCELLED,
        expired.payment.token: LeaseEnd.EXPIRED,
    }


def test_releasing_a_stuck_lease_ends_it_as_expired(pool: CallbackPool, clock: FakeClock) -> None:
    checkout = pool.create_payment(amount=1000)
    clock.advance(timedelta(minutes=11))
    assert pool.release(path=checkout.lease.path).id == checkout.lease.id
    payment = pool.get_payment(checkout.payment.token)
    assert payment.status is PaymentStatus.EXPIRED
    assert payment.error_message is None  # it ran out; no operator had to end it
    assert pool.status().locked == 0
