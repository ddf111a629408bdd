"""The storage port's own promises, on every store: atomic transactions, migrations."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import pytest

from callbackpool.domain.errors import InvalidPayment, PaymentChanged, PoolExhausted
from callbackpool.domain.model import CallbackOutcome, LeaseEnd, Payment, PaymentStatus
from callbackpool.pool import CallbackPool
from callbackpool.store.port import Store
from callbackpool.store.tx import PaymentChange
from callbackpool.testing import FakeClock

from ..support import paygistix_return


def test_migrating_again_changes_nothing(store: Store) -> None:
    assert store.migrate() == []
    assert store.pending_migrations() == []


class FailingInsert:
    """Wraps a store so that writing a payment fails after the slot was leased."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    @contextmanager
    def transaction(self) -> Iterator[Any]:
        with self._store.transaction() as tx:

            def insert_payment(payment: Payment) -> None:
                assert tx.live_lease_of_payment(payment.token) is not None  # leased already
                raise RuntimeError("disk full")

            tx.insert_payment = insert_payment  # type: ignore[method-assign]
            yield tx


def test_a_failed_payment_insert_leaves_no_slot_locked(pool: CallbackPool) -> None:
    failing = CallbackPool(FailingInsert(pool.store), pool.gateway, pool.policy)  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="disk full"):
        failing.create_payment(amount=1000)
    status = pool.status()
    assert status.locked == 0
    assert all(slot.usage_count == 0 for slot in status.slots)
    with pool.store.read() as tx:
        assert tx.live_leases() == []
        assert tx.payments() == []


def test_lease_ids_keep_increasing_across_rollbacks(pool: CallbackPool) -> None:
    before = pool.create_payment(amount=1000).lease.id
    failing = CallbackPool(FailingInsert(pool.store), pool.gateway, pool.policy)  # type: ignore[arg-type]
    with pytest.raises(RuntimeError):
        failing.create_payment(amount=1000)
    after = pool.create_payment(amount=1000).lease.id
    assert after > before


def test_customer_data_must_be_plain_json(pool: CallbackPool) -> None:
    with pytest.raises(InvalidPayment, match="customer: must be plain JSON"):
        pool.create_payment(amount=1000, customer={"x": object()})
    with pytest.raises(InvalidPayment, match="must not exceed"):
        pool.create_payment(amount=1000, customer={"note": "x" * 20_000})
    assert pool.status().locked == 0


def test_a_transaction_that_raises_writes_nothing(pool: CallbackPool) -> None:
    checkout = pool.create_payment(amount=1000)

    def release_then_fail() -> None:
        with pool.store.transaction() as tx:
            lease = tx.live_lease_of_payment(checkout.payment.token)
            assert lease is not None
            tx.end_lease(lease.id, LeaseEnd.ADMIN, None)
            raise RuntimeError("changed my mind")

    with pytest.raises(RuntimeError):
        release_then_fail()
    with pool.store.read() as tx:
        live = tx.live_lease_of_payment(checkout.payment.token)
    assert live is not None
    assert live.id == checkout.lease.id


def test_a_conditional_transition_does_nothing_when_repeated(pool: CallbackPool) -> None:
    from callbackpool.store.tx import PaymentChange

    token = pool.create_payment(amount=1000).payment.token
    change = PaymentChange(status=PaymentStatus.COMPLETED, pn_ref="1")
    with pool.store.transaction() as tx:
        assert tx.update_payment(token, PaymentStatus.PENDING, change)
        assert not tx.update_payment(token, PaymentStatus.PENDING, change)
        assert not tx.update_payment(
            token, PaymentStatus.PENDING, PaymentChange(status=PaymentStatus.FAILED)
        )
    assert pool.get_payment(token).status is PaymentStatus.COMPLETED


def test_concurrent_acquisitions_never_share_a_slot(pool: CallbackPool) -> None:
    def attempt(n: int) -> str | None:
        try:
            return pool.create_payment(amount=1000 + n).lease.path
        except PoolExhausted:
            return None

    with ThreadPoolExecutor(max_workers=8) as workers:
        paths = list(workers.map(attempt, range(40)))
    leased = [p for p in paths if p is not None]
    assert len(leased) == 10
    assert len(set(leased)) == 10


def test_concurrent_identical_returns_apply_once(pool: CallbackPool) -> None:
    checkout = pool.create_payment(amount=1000)
    with ThreadPoolExecutor(max_workers=6) as workers:
        results = list(
            workers.map(
                lambda _: pool.handle_callback(checkout.lease.path, paygistix_return()), range(12)
            )
        )
    outcomes = sorted(r.outcome.value for r in results)
    assert outcomes == ["applied"] + ["duplicate"] * 11
    # Every repeat gets the first's answer: one success page, of the return that applied.
    [applied] = [r for r in results if r.outcome.value == "applied"]
    assert {r.redirect for r in results} == {applied.redirect}
    assert applied.redirect.startswith(f"/payment-success?ref={applied.ref}&receipt=")


def test_the_same_pnref_on_two_slots_at_once_applies_once(pool: CallbackPool) -> None:
    a = pool.create_payment(amount=1000)
    b = pool.create_payment(amount=1000)
    with ThreadPoolExecutor(max_workers=2) as workers:
        results = list(
            workers.map(
                lambda path: pool.handle_callback(path, paygistix_return()),
                [a.lease.path, b.lease.path] * 4,
            )
        )
    assert sorted(r.outcome.value for r in results) == ["applied"] + ["duplicate"] * 7
    statuses = sorted(pool.get_payment(c.payment.token).status.value for c in (a, b))
    assert statuses == ["completed", "pending"]


def test_time_comes_from_the_transaction(pool: CallbackPool) -> None:
    with pool.store.transaction() as first:
        start = first.now
    checkout = pool.create_payment(amount=1000)
    assert checkout.payment.created_at >= start
    assert checkout.payment.expires_at == checkout.payment.created_at + timedelta(minutes=10)


def test_open_ambiguities_are_listed_as_far_back_as_asked(
    pool: CallbackPool, clock: FakeClock
) -> None:
    first = pool.create_payment(amount=1000)
    pool.cancel_payment(first.payment.token)  # handler-1 tainted by 10.00
    fill = [pool.create_payment(amount=5000 + n) for n in range(9)]
    second = pool.create_payment(amount=1000)  # the last free slot: handler-1
    assert second.lease.path == first.lease.path
    ambiguous = pool.handle_callback(first.lease.path, paygistix_return(pn_ref="A1"))
    assert ambiguous.outcome is CallbackOutcome.AMBIGUOUS
    received = clock.now()
    assert fill

    clock.advance(timedelta(minutes=1))
    with pool.store.read() as tx:
        recent = tx.open_ambiguities(first.lease.path, 1000, received - timedelta(seconds=1))
        later = tx.open_ambiguities(first.lease.path, 1000, received)
        other_amount = tx.open_ambiguities(first.lease.path, 2000, received - timedelta(days=1))
    assert [a.callback_id for a in recent] == [ambiguous.callback_id]
    assert recent[0].candidates == {first.payment.token, second.payment.token}
    assert later == []
    assert other_amount == []


class RacingWriter:
    """Wraps a store so that, inside the next write transaction, another writer has already
    moved the payment on when the pool's conditional update runs (a race the stores'
    locking should prevent; the core must not report success on it)."""

    def __init__(self, store: Store, token: str) -> None:
        self._store = store
        self._token = token

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    @contextmanager
    def transaction(self, **options: Any) -> Iterator[Any]:
        with self._store.transaction(**options) as tx:
            real_update = tx.update_payment

            def update_payment(token: str, expected: PaymentStatus, change: Any) -> bool:
                if token == self._token:
                    real_update(
                        token, PaymentStatus.PENDING, PaymentChange(status=PaymentStatus.COMPLETED)
                    )
                return real_update(token, expected, change)

            tx.update_payment = update_payment  # type: ignore[method-assign]
            yield tx


def test_a_status_changed_under_a_decision_undoes_the_decision(pool: CallbackPool) -> None:
    checkout = pool.create_payment(amount=1000)
    racing = CallbackPool(
        RacingWriter(pool.store, checkout.payment.token), pool.gateway, pool.policy
    )  # type: ignore[arg-type]
    with pytest.raises(PaymentChanged):
        racing.cancel_payment(checkout.payment.token)
    # Nothing of the cancel (nor of the simulated racer, in the same transaction) was kept.
    payment = pool.get_payment(checkout.payment.token)
    assert payment.status is PaymentStatus.PENDING
    with pool.store.read() as tx:
        assert tx.live_lease_of_payment(checkout.payment.token) is not None
