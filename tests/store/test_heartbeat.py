"""Early release by heartbeat (issue 7): the checkout page's status polling keeps a lease;
silence after the first poll releases it with a taint. On every store."""

from __future__ import annotations

from datetime import timedelta

import pytest

from callbackpool.domain.errors import PoolExhausted, UnknownPayment
from callbackpool.domain.model import CallbackOutcome, Lease, LeaseEnd, PaymentStatus
from callbackpool.pool import CallbackPool
from callbackpool.testing import FakeClock

from ..conftest import PoolFactory
from ..support import paygistix_return

TIMEOUT = timedelta(seconds=60)
SLACK = TIMEOUT / 4  # polls within it only read


def lease_of(pool: CallbackPool, lease_id: int) -> Lease:
    with pool.store.read() as tx:
        lease = tx.get_lease(lease_id)
    assert lease is not None
    return lease


def poll_every(pool: CallbackPool, clock: FakeClock, token: str, seconds: int, times: int) -> None:
    """The reference checkout page: a status poll every few seconds."""
    for _ in range(times):
        clock.advance(seconds)
        assert pool.poll_payment(token).status is PaymentStatus.PENDING


def test_a_page_that_never_polls_keeps_its_lease_to_the_lock_timeout(
    pool: CallbackPool, clock: FakeClock
) -> None:
    token = pool.create_payment(amount=1000).payment.token
    clock.advance(timedelta(minutes=9, seconds=59))
    pool.sweep()
    assert pool.get_payment(token).status is PaymentStatus.PENDING
    clock.advance(1)
    pool.sweep()
    assert pool.get_payment(token).status is PaymentStatus.EXPIRED


def test_silence_after_the_first_poll_releases_the_lease_with_a_taint(
    pool: CallbackPool, clock: FakeClock
) -> None:
    checkout = pool.create_payment(amount=1000)
    token = checkout.payment.token
    poll_every(pool, clock, token, 3, 10)  # the page polls for 30 s, then is closed
    last_poll = clock.now()

    clock.advance(TIMEOUT)
    pool.sweep()
    assert pool.get_payment(token).status is PaymentStatus.PENDING  # never before the timeout

    clock.advance(SLACK)
    report = pool.sweep()
    assert report.expired == 1
    payment = pool.get_payment(token)
    assert payment.status is PaymentStatus.EXPIRED
    assert payment.error_message == "the checkout page stopped polling"
    lease = lease_of(pool, checkout.lease.id)
    assert lease.end_reason is LeaseEnd.ABANDONED
    assert lease.ended_at is not None
    assert last_poll + TIMEOUT <= lease.ended_at <= last_poll + TIMEOUT + SLACK
    slot = next(s for s in pool.status().slots if s.path == checkout.lease.path)
    assert slot.lease is None
    assert slot.taints == 1


def test_a_polling_page_keeps_its_lease_until_the_lock_timeout(
    pool: CallbackPool, clock: FakeClock
) -> None:
    token = pool.create_payment(amount=1000).payment.token
    poll_every(pool, clock, token, 3, 199)  # 9 min 57 s of polling
    pool.sweep()
    assert pool.get_payment(token).status is PaymentStatus.PENDING
    clock.advance(3)
    assert pool.poll_payment(token).status is PaymentStatus.EXPIRED
    assert pool.get_payment(token).error_message is None  # expired, not abandoned


def test_polls_within_the_slack_do_not_write(pool: CallbackPool, clock: FakeClock) -> None:
    checkout = pool.create_payment(amount=1000)
    token = checkout.payment.token
    assert lease_of(pool, checkout.lease.id).heartbeat_until is None  # not armed yet

    pool.poll_payment(token)
    armed = lease_of(pool, checkout.lease.id).heartbeat_until
    assert armed == clock.now() + TIMEOUT + SLACK

    poll_every(pool, clock, token, 3, 5)  # 15 s: within the slack, nothing written
    assert lease_of(pool, checkout.lease.id).heartbeat_until == armed
    clock.advance(1)
    pool.poll_payment(token)  # 16 s: the recorded heartbeat is stale enough to renew
    assert lease_of(pool, checkout.lease.id).heartbeat_until == clock.now() + TIMEOUT + SLACK


def test_a_lapsed_heartbeat_is_not_revived_by_a_late_poll(
    pool: CallbackPool, clock: FakeClock
) -> None:
    token = pool.create_payment(amount=1000).payment.token
    pool.poll_payment(token)
    clock.advance(TIMEOUT + SLACK)  # nothing swept yet
    assert pool.poll_payment(token).status is PaymentStatus.EXPIRED


def test_an_acquisition_takes_over_an_abandoned_lease_without_a_sweep(
    pool: CallbackPool, clock: FakeClock
) -> None:
    checkouts = [pool.create_payment(amount=1000 + n) for n in range(10)]
    with pytest.raises(PoolExhausted):
        pool.create_payment(amount=5000)
    pool.poll_payment(checkouts[3].payment.token)
    clock.advance(TIMEOUT + SLACK)

    newcomer = pool.create_payment(amount=5000)
    assert newcomer.lease.path == checkouts[3].lease.path
    assert pool.get_payment(checkouts[3].payment.token).status is PaymentStatus.EXPIRED


def test_a_late_return_after_an_early_release_still_completes_its_payment(
    pool: CallbackPool, clock: FakeClock
) -> None:
    # The customer closed the checkout tab but paid in the payment window: the taint keeps
    # the return attributable, even with another payment on the slot.
    first = pool.create_payment(amount=1000)
    pool.poll_payment(first.payment.token)
    clock.advance(TIMEOUT + SLACK)
    pool.sweep()
    second = pool.create_payment(amount=2000)
    fill = [pool.create_payment(amount=3000) for _ in range(9)]  # every slot, handler-1 last
    assert first.lease.path in {second.lease.path, *(c.lease.path for c in fill)}

    result = pool.handle_callback(first.lease.path, paygistix_return(amount="10.00"))
    assert result.outcome is CallbackOutcome.APPLIED
    assert result.payment_token == first.payment.token
    payment = pool.get_payment(first.payment.token)
    assert (payment.status, payment.late) == (PaymentStatus.COMPLETED, True)


def test_a_zero_timeout_turns_early_release_off(make_pool: PoolFactory, clock: FakeClock) -> None:
    pool = make_pool(heartbeat_timeout_seconds=0)
    checkout = pool.create_payment(amount=1000)
    pool.poll_payment(checkout.payment.token)
    clock.advance(timedelta(minutes=9))
    pool.sweep()
    assert pool.get_payment(checkout.payment.token).status is PaymentStatus.PENDING
    assert lease_of(pool, checkout.lease.id).heartbeat_until is None


def test_polling_an_ended_or_unknown_payment(pool: CallbackPool) -> None:
    checkout = pool.create_payment(amount=1000)
    pool.handle_callback(checkout.lease.path, paygistix_return(amount="10.00"))
    assert pool.poll_payment(checkout.payment.token).status is PaymentStatus.COMPLETED
    with pytest.raises(UnknownPayment):
        pool.poll_payment("no-such-token")
