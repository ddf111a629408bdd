"""The gateway's status query (issue 5), on every store: it settles ambiguous and unmatched
returns by the custom field that carried the payment's token; it never overrides a verified
rule; when it fails, nothing changes but the note of the attempt."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import pytest

from callbackpool.domain.gateway import GatewayTransaction, StatusQueryFailed
from callbackpool.domain.model import CallbackOutcome, CallbackRecord, PaymentStatus
from callbackpool.pool import CallbackPool, Checkout
from callbackpool.pool.returns import QUERY_ATTEMPTS
from callbackpool.store.port import Store
from callbackpool.testing import FakeClock

from ..support import POLICY, make_gateway, paygistix_return


class FakeQuery:
    """The gateway's records, by PNRef; ``failing`` makes every question fail."""

    def __init__(self) -> None:
        self.records: dict[str, GatewayTransaction] = {}
        self.asked: list[str] = []
        self.failing = False
        self.probe: Store | None = None

    def transaction(self, pn_ref: str) -> GatewayTransaction | None:
        self.asked.append(pn_ref)
        if self.probe is not None:
            # Fails (or waits for ever) if the pool asked with a write transaction open.
            with self.probe.transaction():
                pass
        if self.failing:
            raise StatusQueryFailed("timed out after 5 s")
        return self.records.get(pn_ref)

    def paid(self, asked: str, checkout: Checkout, *, result: str = "0", **changes: Any) -> None:
        """The gateway's record of a payment of ``checkout``'s, as the query for ``asked``
        answers it (``changes`` make it disagree)."""
        record = GatewayTransaction(
            pn_ref=asked,
            result_code=result,
            amount=checkout.payment.amount,
            merchant_id="demoMerchantWEB",
            payment_token=checkout.payment.token,
        )
        self.records[asked] = replace(record, **changes)


@pytest.fixture
def query() -> FakeQuery:
    return FakeQuery()


@pytest.fixture
def pool(store: Store, query: FakeQuery) -> CallbackPool:
    pool = CallbackPool(store, make_gateway(token_field="custom1"), POLICY, status_query=query)
    pool.sync_slots()
    return pool


def record_of(pool: CallbackPool, callback_id: int) -> CallbackRecord:
    with pool.store.read() as tx:
        record = tx.get_callback(callback_id)
    assert record is not None
    return record


def same_amount_pair(pool: CallbackPool) -> tuple[Checkout, Checkout]:
    """Two pending-or-cancelled payments of 10.00 on one slot: a return there is ambiguous."""
    first = pool.create_payment(amount=1000)
    for i in range(9):
        pool.create_payment(amount=5000 + i)
    pool.cancel_payment(first.payment.token)
    second = pool.create_payment(amount=1000)
    assert second.lease.path == first.lease.path
    return first, second


def statuses(pool: CallbackPool, *checkouts: Checkout) -> list[PaymentStatus]:
    return [pool.get_payment(c.payment.token).status for c in checkouts]


def test_the_hosted_form_posts_the_token_in_the_custom_field(pool: CallbackPool) -> None:
    checkout = pool.create_payment(amount=1000)
    assert checkout.form.fields["custom1"] == checkout.payment.token
    plain = make_gateway().form_fields(return_url="https://x/cb", items=(), token="t")
    assert "custom1" not in plain  # without a status query nothing extra is posted


def test_an_ambiguous_return_goes_to_the_payment_the_gateway_names(
    pool: CallbackPool, query: FakeQuery
) -> None:
    first, second = same_amount_pair(pool)
    query.paid("804322218", second)
    result = pool.handle_callback(first.lease.path, paygistix_return())
    assert (result.outcome, result.payment_token) == (
        CallbackOutcome.APPLIED,
        second.payment.token,
    )
    assert result.detail == "attributed by the gateway's status query"
    assert urlsplit(result.redirect).path == "/payment-success"
    # The gateway was asked before anything changed: the other payment was never disturbed.
    assert statuses(pool, first, second) == [PaymentStatus.CANCELLED, PaymentStatus.COMPLETED]
    assert pool.get_payment(second.payment.token).pn_ref == "804322218"
    record = record_of(pool, result.callback_id)
    assert record.query_attempts == 1
    assert record.query_answer == f"the gateway's record names payment {second.payment.token[:8]}…"
    repeat = pool.handle_callback(first.lease.path, paygistix_return())
    assert (repeat.outcome, repeat.redirect) == (CallbackOutcome.DUPLICATE, result.redirect)
    assert query.asked == ["804322218"]  # a repeat is not put to the gateway again
    # The other payment's own late return still finds it.
    late = pool.handle_callback(first.lease.path, paygistix_return(pn_ref="77"))
    assert (late.outcome, late.payment_token) == (CallbackOutcome.APPLIED, first.payment.token)
    assert pool.get_payment(first.payment.token).late


def test_the_gateway_is_asked_with_no_transaction_open(
    pool: CallbackPool, query: FakeQuery
) -> None:
    first, second = same_amount_pair(pool)
    query.paid("804322218", second)
    query.probe = pool.store  # it opens a write transaction of its own when asked
    assert pool.handle_callback(first.lease.path, paygistix_return()).outcome is (
        CallbackOutcome.APPLIED
    )
    assert query.asked == ["804322218"]


def test_nothing_is_written_before_the_gateway_is_asked(
    pool: CallbackPool, query: FakeQuery
) -> None:
    """The first step is a read: when the gateway is asked, the return is stored and
    nothing else (its PNRef unclaimed, the candidates untouched)."""
    first, second = same_amount_pair(pool)
    query.paid("804322218", second)
    seen: list[object] = []
    ask = query.transaction

    def look_then_ask(pn_ref: str) -> GatewayTransaction | None:
        with pool.store.read() as tx:
            stored = tx.callbacks(limit=1)[0]
            seen.append((stored.outcome, tx.pn_ref_holder(pn_ref)))
        seen.append(statuses(pool, first, second))
        return ask(pn_ref)

    query.transaction = look_then_ask  # type: ignore[method-assign]
    result = pool.handle_callback(first.lease.path, paygistix_return())
    assert result.payment_token == second.payment.token
    assert seen == [
        (CallbackOutcome.RECEIVED, None),
        [PaymentStatus.CANCELLED, PaymentStatus.PENDING],
    ]


class MovingOn:
    """Wraps a store to run ``then`` once, right after the next read transaction ends."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.then: Callable[[], object] | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    @contextmanager
    def read(self) -> Iterator[Any]:
        with self._store.read() as tx:
            yield tx
        then, self.then = self.then, None
        if then is not None:
            then()


def test_a_pool_that_moved_on_since_the_read_is_asked_about_by_the_sweeper(
    store: Store, query: FakeQuery
) -> None:
    """The read finds one candidate, so nobody asks the gateway; before the write, that
    payment is cancelled and its slot leased to another of the same amount. The write
    decides on what stands (ambiguous), and the sweeper then puts the return to the
    gateway."""
    moving = MovingOn(store)
    pool = CallbackPool(moving, make_gateway(token_field="custom1"), POLICY, status_query=query)  # type: ignore[arg-type]
    pool.sync_slots()
    first = pool.create_payment(amount=1000)
    for i in range(9):
        pool.create_payment(amount=5000 + i)
    later: list[Checkout] = []

    def cancel_and_lease_again() -> None:
        pool.cancel_payment(first.payment.token)
        later.append(pool.create_payment(amount=1000))

    moving.then = cancel_and_lease_again
    query.paid("804322218", first)
    result = pool.handle_callback(first.lease.path, paygistix_return())
    (second,) = later
    assert second.lease.path == first.lease.path
    assert result.outcome is CallbackOutcome.AMBIGUOUS
    assert query.asked == []
    assert statuses(pool, first, second) == [PaymentStatus.NEEDS_REVIEW] * 2
    pool.sweep()
    assert query.asked == ["804322218"]
    assert statuses(pool, first, second) == [PaymentStatus.COMPLETED, PaymentStatus.EXPIRED]
    assert record_of(pool, result.callback_id).settled_by == "status query"


def test_an_unmatched_return_past_the_taint_window_goes_to_its_payment(
    pool: CallbackPool, query: FakeQuery, clock: FakeClock
) -> None:
    checkout = pool.create_payment(amount=1000)
    clock.advance(timedelta(minutes=10 + 61))  # expired, and its taint lapsed
    pool.sweep()
    query.paid("804322218", checkout)
    result = pool.handle_callback(checkout.lease.path, paygistix_return())
    assert (result.outcome, result.payment_token) == (
        CallbackOutcome.APPLIED,
        checkout.payment.token,
    )
    payment = pool.get_payment(checkout.payment.token)
    assert (payment.status, payment.late) == (PaymentStatus.COMPLETED, True)


def test_a_declined_ambiguous_return_fails_only_the_payment_named(
    pool: CallbackPool, query: FakeQuery
) -> None:
    first, second = same_amount_pair(pool)
    query.paid("804322218", first, result="12")
    result = pool.handle_callback(first.lease.path, paygistix_return(result="12"))
    assert result.payment_token == first.payment.token
    assert urlsplit(result.redirect).path == "/payment-error"
    assert statuses(pool, first, second) == [PaymentStatus.FAILED, PaymentStatus.PENDING]


@pytest.mark.parametrize(
    "changes",
    [
        {"amount": 2000},
        {"result_code": "12"},
        {"merchant_id": "someoneElse"},
        {"pn_ref": "999"},
        {"payment_token": None},
        {"payment_token": "no-such-token"},
        {"payment_token": "x" * 10_000},
    ],
    ids=lambda c: next(iter(c)),
)
def test_a_record_that_does_not_agree_with_the_return_settles_nothing(
    pool: CallbackPool, query: FakeQuery, changes: dict[str, object]
) -> None:
    first, second = same_amount_pair(pool)
    query.paid("804322218", second, **changes)
    result = pool.handle_callback(first.lease.path, paygistix_return())
    assert (result.outcome, result.payment_token) == (CallbackOutcome.AMBIGUOUS, None)
    assert statuses(pool, first, second) == [PaymentStatus.NEEDS_REVIEW] * 2
    record = record_of(pool, result.callback_id)
    assert record.settled_at is None
    assert record.query_attempts == 1
    assert record.query_answer is not None
    assert record.query_answer.startswith("the gateway")


def test_it_never_gives_a_return_to_a_payment_already_final(
    pool: CallbackPool, query: FakeQuery
) -> None:
    paid = pool.create_payment(amount=1000)
    assert pool.handle_callback(paid.lease.path, paygistix_return(pn_ref="1")).outcome is (
        CallbackOutcome.APPLIED
    )
    # A second approved return of that amount on the path, which the gateway says is paid's.
    query.paid("2", paid)
    result = pool.handle_callback(paid.lease.path, paygistix_return(pn_ref="2"))
    assert result.outcome is CallbackOutcome.UNMATCHED
    assert result.payment_token is None
    payment = pool.get_payment(paid.payment.token)
    assert (payment.status, payment.pn_ref) == (PaymentStatus.COMPLETED, "1")
    assert record_of(pool, result.callback_id).query_answer == (
        "the gateway's record names a payment already completed"
    )


def test_a_payment_of_another_path_is_not_given_the_return(
    pool: CallbackPool, query: FakeQuery
) -> None:
    here = pool.create_payment(amount=2000)
    elsewhere = pool.create_payment(amount=1000)
    query.paid("804322218", elsewhere)
    result = pool.handle_callback(here.lease.path, paygistix_return())
    assert result.outcome is CallbackOutcome.UNMATCHED
    assert statuses(pool, here, elsewhere) == [PaymentStatus.PENDING] * 2


def test_verified_rules_are_never_put_to_the_query(pool: CallbackPool, query: FakeQuery) -> None:
    checkout = pool.create_payment(amount=1000)
    other = pool.create_payment(amount=1000)
    query.paid("804322218", other)  # the gateway would say otherwise: it is not asked
    applied = pool.handle_callback(checkout.lease.path, paygistix_return())
    duplicate = pool.handle_callback(checkout.lease.path, paygistix_return())
    rejected = pool.handle_callback(checkout.lease.path, paygistix_return(merchant="x"))
    assert [applied.outcome, duplicate.outcome, rejected.outcome] == [
        CallbackOutcome.APPLIED,
        CallbackOutcome.DUPLICATE,
        CallbackOutcome.REJECTED,
    ]
    assert query.asked == []
    assert statuses(pool, checkout, other) == [PaymentStatus.COMPLETED, PaymentStatus.PENDING]


def test_when_the_query_fails_nothing_changes_and_the_sweeper_asks_again(
    pool: CallbackPool, query: FakeQuery
) -> None:
    first, second = same_amount_pair(pool)
    query.failing = True
    result = pool.handle_callback(first.lease.path, paygistix_return())
    assert result.outcome is CallbackOutcome.AMBIGUOUS
    assert result.payment_token is None
    assert urlsplit(result.redirect).path == "/payment-error"
    assert statuses(pool, first, second) == [PaymentStatus.NEEDS_REVIEW] * 2
    record = record_of(pool, result.callback_id)
    assert (record.query_attempts, record.query_answer) == (
        1,
        "the query failed: timed out after 5 s",
    )
    assert record.redirect == result.redirect
    # The gateway answers again: the next sweep settles the return, and the other payment
    # it had sent to review goes back to where the pool had left it (its lease is over).
    query.failing = False
    query.paid("804322218", first)
    pool.sweep()
    assert statuses(pool, first, second) == [PaymentStatus.COMPLETED, PaymentStatus.EXPIRED]
    settled = record_of(pool, result.callback_id)
    assert (settled.settled_by, settled.payment_token) == ("status query", first.payment.token)
    assert settled.query_attempts == 2
    assert urlsplit(settled.redirect or "").path == "/payment-success"
    # A repeat of the return now gets its payment's page, and the other payment's own
    # return still finds it.
    repeat = pool.handle_callback(first.lease.path, paygistix_return())
    assert repeat.redirect == settled.redirect
    own = pool.handle_callback(first.lease.path, paygistix_return(pn_ref="78"))
    assert (own.outcome, own.payment_token) == (CallbackOutcome.APPLIED, second.payment.token)


def test_the_sweeper_gives_up_after_a_few_attempts(pool: CallbackPool, query: FakeQuery) -> None:
    first, _ = same_amount_pair(pool)
    query.failing = True
    result = pool.handle_callback(first.lease.path, paygistix_return())
    for _ in range(5):
        pool.sweep()
    assert query.asked == ["804322218"] * QUERY_ATTEMPTS
    assert record_of(pool, result.callback_id).query_attempts == QUERY_ATTEMPTS


def test_without_a_status_query_nothing_is_asked(store: Store) -> None:
    pool = CallbackPool(store, make_gateway(), POLICY)
    pool.sync_slots()
    first, second = same_amount_pair(pool)
    result = pool.handle_callback(first.lease.path, paygistix_return())
    assert result.outcome is CallbackOutcome.AMBIGUOUS
    assert record_of(pool, result.callback_id).query_attempts == 0
    pool.sweep()
    assert statuses(pool, first, second) == [PaymentStatus.NEEDS_REVIEW] * 2
