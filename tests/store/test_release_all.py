"""The operator's release of every lease, when some have run out meanwhile (on every store)."""

from __future__ import annotations

from datetime import timedelta

from callbackpool.domain.model import LeaseEnd, PaymentStatus
from callbackpool.pool import CallbackPool
from callbackpool.testing import FakeClock


def test_release_all_ends_stuck_leases_as_expired_and_releases_the_others(
    pool: CallbackPool, clock: FakeClock
) -> None:
    stuck = pool.create_payment(amount=1000)
    clock.advance(timedelta(minutes=6))
    live = pool.create_payment(amount=2000)
    clock.advance(timedelta(minutes=5))  # the first has run out, the second has not
    released = pool.release_all()
    assert [lease.id for lease in released] == [live.lease.id]
    assert pool.get_payment(stuck.payment.token).status is PaymentStatus.EXPIRED
    assert pool.get_payment(stuck.payment.token).error_message is None
    assert pool.get_payment(live.payment.token).error_message == "released by an operator"
    with pool.store.read() as tx:
        ended = {
            c.lease.id: c.lease.end_reason for s in tx.slot_views() for c in tx.candidates(s.id)
        }
    assert ended == {stuck.lease.id: LeaseEnd.EXPIRED, live.lease.id: LeaseEnd.ADMIN}
    assert pool.status().locked == 0
