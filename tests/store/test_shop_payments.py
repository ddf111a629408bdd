"""Payments created by the shop's server (docs/integrating.md), through the pool, on every
store: created open without a slot, one lease an attempt, back to open after a declined
card, idempotent creation, and expiry of the open ones nobody paid."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from callbackpool.domain.errors import (
    IdempotencyConflict,
    InvalidPayment,
    PaymentNotPending,
    PoolExhausted,
    TicketEnded,
    UnknownPayment,
)
from callbackpool.domain.model import PaymentStatus
from callbackpool.pool import CallbackPool, Checkout, Waiting
from callbackpool.pool.shop import ShopPaymentRequest
from callbackpool.store.port import Store
from callbackpool.testing import FakeClock

from ..conftest import PoolFactory
from ..support import PATHS, make_gateway, paygistix_return, policy_with
from .test_status_query import FakeQuery

SHOP = "https://shop.example"
REQUEST = ShopPaymentRequest(
    amount=1000,
    order_reference="1001",
    metadata={"cart": "c-1"},
    success_url=SHOP + "/thanks/{PAYMENT_ID}?order={ORDER_REFERENCE}",
    cancel_url=SHOP + "/cart",
)


@pytest.fixture
def shop(make_pool: PoolFactory) -> CallbackPool:
    return make_pool(shop_origins=[SHOP])


def create(pool: CallbackPool, **changes: Any) -> str:
    payment, created = pool.create_shop_payment(replace(REQUEST, **changes))
    assert created
    return payment.token


def live_leases(pool: CallbackPool) -> int:
    return sum(1 for slot in pool.status().slots if slot.lease is not None)


def test_an_open_payment_holds_no_slot_until_pay(shop: CallbackPool) -> None:
    token = create(shop)
    payment = shop.get_payment(token)
    assert payment.status is PaymentStatus.OPEN
    assert payment.lease_id is None
    assert live_leases(shop) == 0
    checkout = shop.pay(token)
    assert live_leases(shop) == 1
    assert checkout.form.fields["ReturnURL"] == f"{SHOP}{checkout.lease.path}"
    paid = shop.get_payment(token)
    assert (paid.status, paid.lease_id) == (PaymentStatus.PENDING, checkout.lease.id)
    with pytest.raises(PaymentNotPending):
        shop.pay(token)  # one attempt at a time
    assert live_leases(shop) == 1


def test_a_declined_card_reopens_the_payment_and_the_next_approval_completes_it(
    shop: CallbackPool,
) -> None:
    token = create(shop)
    first = shop.pay(token)
    declined = shop.handle_callback(first.lease.path, paygistix_return(pn_ref="1", result="12"))
    assert declined.redirect == f"{SHOP}/pay/{token}"
    assert shop.get_payment(token).status is PaymentStatus.OPEN
    second = shop.pay(token)
    approved = shop.handle_callback(second.lease.path, paygistix_return(pn_ref="2"))
    payment, attempts = shop.payment_and_attempts(token)
    assert approved.redirect == f"{SHOP}/thanks/{payment.id}?order=1001"
    assert payment.status is PaymentStatus.COMPLETED
    assert payment.pn_ref == "2"
    assert [(a.number, a.outcome, a.pn_ref) for a in attempts] == [
        (1, "declined", "1"),
        (2, "approved", "2"),
    ]


def test_the_last_attempt_fails_the_payment(make_pool: PoolFactory) -> None:
    pool = make_pool(shop_origins=[SHOP], max_attempts=2)
    token = create(pool)
    for pn_ref, result in (("1", "1000"), ("2", "12")):
        checkout = pool.pay(token)
        pool.handle_callback(checkout.lease.path, paygistix_return(pn_ref=pn_ref, result=result))
    payment, attempts = pool.payment_and_attempts(token)
    assert payment.status is PaymentStatus.FAILED
    assert [a.outcome for a in attempts] == ["error", "declined"]
    with pytest.raises(PaymentNotPending):
        pool.pay(token)


def test_the_same_idempotency_key_gives_the_same_payment(shop: CallbackPool) -> None:
    first, created = shop.create_shop_payment(REQUEST, idempotency_key="k-1")
    again, created_again = shop.create_shop_payment(REQUEST, idempotency_key="k-1")
    assert (created, created_again) == (True, False)
    assert again == first
    with pytest.raises(IdempotencyConflict):
        shop.create_shop_payment(replace(REQUEST, amount=2000), idempotency_key="k-1")
    other, _ = shop.create_shop_payment(REQUEST, idempotency_key="k-2")
    assert other.id != first.id
    assert len(shop.shop_payments().payments) == 2


def test_an_open_payment_nobody_paid_expires_at_its_time(
    shop: CallbackPool, clock: FakeClock
) -> None:
    token = create(shop, expires_in_minutes=30)
    clock.advance(timedelta(minutes=29))
    shop.sweep()
    assert shop.get_payment(token).status is PaymentStatus.OPEN
    clock.advance(timedelta(minutes=2))
    shop.sweep()
    assert shop.get_payment(token).status is PaymentStatus.EXPIRED
    with pytest.raises(PaymentNotPending):
        shop.pay(token)


def test_reading_it_past_the_expiry_finds_it_expired_without_a_sweep(
    shop: CallbackPool, clock: FakeClock
) -> None:
    token = create(shop, expires_in_minutes=5)
    clock.advance(timedelta(minutes=6))
    payment, _ = shop.shop_payment(shop.get_payment(token).id)
    assert payment.status is PaymentStatus.EXPIRED


def test_pay_past_the_expiry_finds_it_expired_without_a_sweep(
    shop: CallbackPool, clock: FakeClock
) -> None:
    token = create(shop, expires_in_minutes=5)
    clock.advance(timedelta(minutes=6))
    with pytest.raises(PaymentNotPending, match="expired"):
        shop.pay(token)
    assert shop.get_payment(token).status is PaymentStatus.EXPIRED
    assert live_leases(shop) == 0


def test_a_late_approval_of_an_attempt_whose_lease_ran_out_completes_it_late(
    shop: CallbackPool, clock: FakeClock
) -> None:
    token = create(shop)
    checkout = shop.pay(token)
    clock.advance(timedelta(minutes=11))  # past the 10-minute lease
    shop.sweep()
    assert shop.get_payment(token).status is PaymentStatus.EXPIRED
    late = shop.handle_callback(checkout.lease.path, paygistix_return(pn_ref="9"))
    payment = shop.get_payment(token)
    assert (payment.status, payment.late) == (PaymentStatus.COMPLETED, True)
    assert late.redirect.startswith(f"{SHOP}/thanks/{payment.id}")


def test_cancelling_open_and_pending_payments(shop: CallbackPool) -> None:
    still_open = create(shop)
    assert shop.cancel_shop_payment(shop.get_payment(still_open).id).status is (
        PaymentStatus.CANCELLED
    )
    leased = create(shop, order_reference="1002")
    shop.pay(leased)
    payment = shop.cancel_shop_payment(shop.get_payment(leased).id)
    assert payment.status is PaymentStatus.CANCELLED
    assert live_leases(shop) == 0
    with pytest.raises(PaymentNotPending):
        shop.cancel_shop_payment(payment.id)
    with pytest.raises(UnknownPayment):
        shop.shop_payment("pay_000000000000000000000000")


def test_pay_on_a_full_pool_is_refused_and_the_payment_stays_open(
    shop: CallbackPool,
) -> None:
    for _ in PATHS:
        shop.create_payment(amount=500)
    token = create(shop)
    with pytest.raises(PoolExhausted):
        shop.pay(token)
    assert shop.get_payment(token).status is PaymentStatus.OPEN


def test_pay_on_a_full_pool_waits_in_line_and_its_turn_leases_this_payment(
    shop: CallbackPool,
) -> None:
    others = [shop.create_payment(amount=500).payment.token for _ in PATHS]
    token = create(shop)
    waiting = shop.pay(token, wait=True)
    assert isinstance(waiting, Waiting)
    assert waiting.position == 1
    assert isinstance(shop.poll_ticket(waiting.ticket), Waiting)
    shop.cancel_payment(others[0])
    granted = shop.poll_ticket(waiting.ticket)
    assert isinstance(granted, Checkout)
    assert granted.payment.token == token
    payment = shop.get_payment(token)
    assert (payment.status, payment.lease_id) == (PaymentStatus.PENDING, granted.lease.id)
    assert shop.poll_ticket(waiting.ticket).lease.id == granted.lease.id  # asked again


def test_a_payment_cancelled_while_in_line_ends_its_ticket(shop: CallbackPool) -> None:
    others = [shop.create_payment(amount=500).payment.token for _ in PATHS]
    token = create(shop)
    waiting = shop.pay(token, wait=True)
    assert isinstance(waiting, Waiting)
    shop.cancel_shop_payment(shop.get_payment(token).id)
    shop.cancel_payment(others[0])
    with pytest.raises(TicketEnded):
        shop.poll_ticket(waiting.ticket)
    assert live_leases(shop) == len(PATHS) - 1


def test_pages_of_payments_newest_first(shop: CallbackPool, clock: FakeClock) -> None:
    tokens = []
    for index in range(5):
        tokens.append(create(shop, order_reference=f"o{index % 2}"))
        clock.advance(timedelta(seconds=1))
    ids = [shop.get_payment(t).id for t in tokens][::-1]
    first = shop.shop_payments(limit=2)
    second = shop.shop_payments(limit=2, after=first.next_cursor)
    third = shop.shop_payments(limit=2, after=second.next_cursor)
    pages = [first, second, third]
    assert [p.id for page in pages for p, _ in page.payments] == ids
    assert third.next_cursor is None
    evens = shop.shop_payments(order_reference="o0")
    assert [p.order_reference for p, _ in evens.payments] == ["o0"] * 3
    assert shop.shop_payments(status=PaymentStatus.OPEN, limit=100).next_cursor is None


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"success_url": "https://elsewhere.example/"}, "successUrl"),
        ({"cancel_url": "http://shop.example/cart"}, "cancelUrl"),
        ({"cancel_url": "/cart"}, "cancelUrl"),
        ({"order_reference": "x" * 201}, "orderReference"),
        ({"metadata": {str(i): "v" for i in range(21)}}, "metadata"),
        ({"expires_in_minutes": 0}, "expiresInMinutes"),
        ({"amount": 100_000_000}, "amount"),  # over the default maxAmount
    ],
)
def test_a_bad_request_names_its_field(
    shop: CallbackPool, changes: dict[str, Any], field: str
) -> None:
    with pytest.raises(InvalidPayment) as refused:
        shop.create_shop_payment(replace(REQUEST, **changes))
    assert refused.value.field == field
    assert shop.shop_payments().payments == ()


def test_loopback_shops_may_use_http(make_pool: PoolFactory) -> None:
    pool = make_pool(shop_origins=["http://127.0.0.1:8123"])
    token = create(
        pool, success_url="http://127.0.0.1:8123/ok", cancel_url="http://127.0.0.1:8123/no"
    )
    assert pool.get_payment(token).success_url == "http://127.0.0.1:8123/ok"


def test_the_default_ceiling_refuses_an_amount_the_gateway_would(pool: CallbackPool) -> None:
    with pytest.raises(InvalidPayment, match="99999999"):
        pool.create_payment(amount=10**15)
    assert live_leases(pool) == 0
    assert pool.create_payment(amount=99_999_999).lease.amount == 99_999_999


def test_an_earlier_attempts_approval_still_completes_a_reopened_payment(
    store: Store,
) -> None:
    """The customer, declined, sends the old gateway form again and is approved: the
    status query names the payment; money was taken, so the open payment completes (and a
    decline of an earlier attempt would leave it open)."""
    query = FakeQuery()
    pool = CallbackPool(
        store,
        make_gateway(token_field="custom1"),
        policy_with(shop_origins=[SHOP]),
        status_query=query,
    )
    pool.sync_slots()
    token = create(pool)
    first = pool.pay(token)
    pool.handle_callback(first.lease.path, paygistix_return(pn_ref="1", result="12"))
    assert pool.get_payment(token).status is PaymentStatus.OPEN
    query.paid("2", first)
    again = pool.handle_callback(first.lease.path, paygistix_return(pn_ref="2"))
    payment = pool.get_payment(token)
    assert (payment.status, payment.pn_ref) == (PaymentStatus.COMPLETED, "2")
    assert again.redirect.startswith(f"{SHOP}/thanks/{payment.id}")
