"""The outbox (docs/integrating.md#events), through the pool, on every store: each announced
status change writes one event in its own transaction, numbered per payment, with the
payment as the shop read it then; the feed pages oldest first; old events are swept."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import pytest

from callbackpool.domain.model import Event, PaymentStatus
from callbackpool.pool import CallbackPool
from callbackpool.pool.documents import payment_document
from callbackpool.store.port import Store
from callbackpool.testing import FakeClock

from ..conftest import PoolFactory
from ..support import paygistix_return
from .test_shop_payments import SHOP, create


@pytest.fixture
def shop(make_pool: PoolFactory) -> CallbackPool:
    return make_pool(shop_origins=[SHOP])


def events_of(pool: CallbackPool, payment_id: str) -> list[Event]:
    return [e for e in pool.events() if e.payment_id == payment_id]


def kinds(events: list[Event]) -> list[tuple[str, int]]:
    return [(e.type, e.sequence) for e in events]


def test_a_completed_payment_has_one_event_showing_it_as_the_shop_reads_it(
    shop: CallbackPool,
) -> None:
    token = create(shop)
    checkout = shop.pay(token)  # open → pending: not announced
    assert shop.events() == ()
    shop.handle_callback(checkout.lease.path, paygistix_return(pn_ref="7"))
    [event] = shop.events()
    payment, attempts = shop.payment_and_attempts(token)
    assert (event.type, event.sequence, event.payment_id) == (
        "payment.completed",
        1,
        payment.id,
    )
    assert event.id.startswith("evt_")
    assert event.created_at == payment.updated_at
    # The snapshot is taken once the transaction's work is done: the attempt is approved.
    assert event.data == payment_document(payment, attempts)
    assert event.data["status"] == "completed"
    assert event.data["attempts"][0]["outcome"] == "approved"
    assert event.data["late"] is False
    assert token not in repr(event)


def test_failed_cancelled_and_expired_each_write_their_event(
    make_pool: PoolFactory, clock: FakeClock
) -> None:
    pool = make_pool(shop_origins=[SHOP], max_attempts=2)
    failing = create(pool)
    for pn_ref in ("1", "2"):
        checkout = pool.pay(failing)
        pool.handle_callback(checkout.lease.path, paygistix_return(pn_ref=pn_ref, result="12"))
    cancelled = create(pool)
    pool.cancel_shop_payment(pool.get_payment(cancelled).id)
    expiring = create(pool, expires_in_minutes=5)
    clock.advance(timedelta(minutes=6))
    pool.sweep()
    by_token = {
        token: kinds(events_of(pool, pool.get_payment(token).id))
        for token in (failing, cancelled, expiring)
    }
    # A declined card's way back to open is not announced; the last attempt's failure is.
    assert by_token == {
        failing: [("payment.failed", 1)],
        cancelled: [("payment.cancelled", 1)],
        expiring: [("payment.expired", 1)],
    }
    [failed] = events_of(pool, pool.get_payment(failing).id)
    assert [a["outcome"] for a in failed.data["attempts"]] == ["declined", "declined"]


def test_a_late_completion_is_the_payments_second_event_and_says_late(
    shop: CallbackPool, clock: FakeClock
) -> None:
    token = create(shop)
    checkout = shop.pay(token)
    clock.advance(timedelta(minutes=11))  # past the 10-minute lease
    shop.sweep()
    shop.handle_callback(checkout.lease.path, paygistix_return(pn_ref="9"))
    events = events_of(shop, shop.get_payment(token).id)
    assert kinds(events) == [("payment.expired", 1), ("payment.completed", 2)]
    expired, completed = events
    assert (expired.data["status"], expired.data["late"]) == ("expired", False)
    assert expired.data["attempts"][0]["outcome"] == "no_return"
    assert (completed.data["status"], completed.data["late"]) == ("completed", True)
    assert completed.reason.startswith("return CB-")  # how it was attributed


def test_expiry_and_a_late_return_in_one_transaction_are_two_events_each_as_it_was(
    shop: CallbackPool, clock: FakeClock
) -> None:
    # No sweep: the return's own transaction ends the lease that ran out, expiring the
    # payment, and then completes it late.
    token = create(shop)
    checkout = shop.pay(token)
    clock.advance(timedelta(minutes=11))
    shop.handle_callback(checkout.lease.path, paygistix_return(pn_ref="9"))
    payment, attempts = shop.payment_and_attempts(token)
    assert (payment.status, payment.late) == (PaymentStatus.COMPLETED, True)
    expired, completed = events_of(shop, payment.id)
    assert (expired.sequence, expired.data["status"]) == (1, "expired")
    assert (completed.sequence, completed.data["status"]) == (2, "completed")
    assert completed.data == payment_document(payment, attempts)


def test_the_browser_flows_payments_have_events_without_their_token(pool: CallbackPool) -> None:
    checkout = pool.create_payment(amount=1000)
    pool.handle_callback(checkout.lease.path, paygistix_return())
    [event] = pool.events()
    token = checkout.payment.token
    assert event.payment_id == pool.get_payment(token).id
    assert event.payment_id.startswith("pay_")
    assert event.type == "payment.completed"
    assert token not in repr(event.data)


def test_an_ambiguous_return_puts_both_in_review_and_the_next_settles_them(
    pool: CallbackPool,
) -> None:
    first = pool.create_payment(amount=1000)
    for i in range(9):
        pool.create_payment(amount=5000 + i)
    pool.cancel_payment(first.payment.token)
    second = pool.create_payment(amount=1000)  # the same-amount tainted slot
    pool.handle_callback(first.lease.path, paygistix_return(pn_ref="A1"))
    pool.handle_callback(first.lease.path, paygistix_return(pn_ref="A2"))
    one = events_of(pool, pool.get_payment(first.payment.token).id)
    two = events_of(pool, pool.get_payment(second.payment.token).id)
    assert kinds(one) == [
        ("payment.cancelled", 1),
        ("payment.needs_review", 2),
        ("payment.completed", 3),
    ]
    assert kinds(two) == [("payment.needs_review", 1), ("payment.completed", 2)]
    assert one[-1].data["late"] is True  # it had been cancelled


class FailingAfterTheChange:
    """Wraps a store: the transaction fails right after it has written its first event."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    @contextmanager
    def transaction(self) -> Iterator[Any]:
        with self._store.transaction() as tx:
            real = tx.insert_event

            def insert_event(**event: Any) -> Event:
                real(**event)
                raise RuntimeError("the disk is full")

            tx.insert_event = insert_event  # type: ignore[method-assign]
            yield tx


def test_a_change_that_rolls_back_leaves_no_event(pool: CallbackPool) -> None:
    checkout = pool.create_payment(amount=1000)
    failing = CallbackPool(
        FailingAfterTheChange(pool.store),  # type: ignore[arg-type]
        pool.gateway,
        pool.policy,
    )
    with pytest.raises(RuntimeError, match="disk"):
        failing.cancel_payment(checkout.payment.token)
    assert pool.get_payment(checkout.payment.token).status is PaymentStatus.PENDING
    assert pool.events() == ()
    pool.cancel_payment(checkout.payment.token)  # and the next change is number 1
    assert kinds(list(pool.events())) == [("payment.cancelled", 1)]


def test_the_feed_pages_oldest_first_by_cursor(pool: CallbackPool) -> None:
    for amount in (1000, 2000, 3000):
        checkout = pool.create_payment(amount=amount)
        pool.cancel_payment(checkout.payment.token)
    everything = pool.events()
    assert [e.data["amount"] for e in everything] == [1000, 2000, 3000]
    assert [e.seq for e in everything] == sorted(e.seq for e in everything)
    first = pool.events(limit=2)
    assert first == everything[:2]
    assert pool.events(after=first[-1].id, limit=2) == everything[2:]
    assert pool.events(after=everything[-1].id) == ()


def test_an_unknown_cursor_or_limit_is_refused_naming_it(pool: CallbackPool) -> None:
    from callbackpool.domain.errors import InvalidPayment

    for after in ("evt_nothing", "pay_x", ""):
        with pytest.raises(InvalidPayment) as refused:
            pool.events(after=after)
        assert refused.value.field == "after"
    for limit in (0, 101):
        with pytest.raises(InvalidPayment) as refused:
            pool.events(limit=limit)
        assert refused.value.field == "limit"


def test_the_sweeper_drops_events_past_their_retention(
    make_pool: PoolFactory, clock: FakeClock
) -> None:
    pool = make_pool(event_retention_days=2)
    old = pool.create_payment(amount=1000)
    pool.cancel_payment(old.payment.token)
    clock.advance(timedelta(days=1))
    recent = pool.create_payment(amount=2000)
    pool.cancel_payment(recent.payment.token)
    clock.advance(timedelta(days=1, seconds=1))
    pool.sweep()
    assert [e.data["amount"] for e in pool.events()] == [2000]
    clock.advance(timedelta(days=1))
    pool.sweep()
    assert pool.events() == ()


def test_the_retention_is_at_least_a_day() -> None:
    from pydantic import ValidationError

    from ..support import policy_with

    assert policy_with().event_retention_days == 30
    with pytest.raises(ValidationError, match="event_retention_days"):
        policy_with(event_retention_days=0)
