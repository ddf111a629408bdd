"""Review resolution (issue 6): an operator decides which payment an ambiguous return
belongs to, or none, and what becomes of the others; recorded with who, why and when.
Through the pool, on every store."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from callbackpool.domain.errors import (
    IllegalTransition,
    InvalidReview,
    NotUnderReview,
    UnknownCallback,
    UnknownPayment,
)
from callbackpool.domain.model import (
    CallbackOutcome,
    PaymentStatus,
    ReviewChange,
    ReviewDecision,
    StatusChange,
)
from callbackpool.pool import CallbackPool, CallbackResult, Checkout
from callbackpool.testing import FakeClock

from ..support import paygistix_return

P = PaymentStatus


@dataclass
class Ambiguity:
    first: Checkout  # cancelled, then the slot went to ...
    second: Checkout  # ... a payment of the same amount
    result: CallbackResult  # an approved return on that slot: it could be either's


def ambiguous_pair(pool: CallbackPool, pn_ref: str = "A1") -> Ambiguity:
    first = pool.create_payment(amount=1000)
    for i in range(9):
        pool.create_payment(amount=5000 + i)
    pool.cancel_payment(first.payment.token)
    second = pool.create_payment(amount=1000)  # the same-amount tainted slot
    assert second.lease.path == first.lease.path
    result = pool.handle_callback(first.lease.path, paygistix_return(pn_ref=pn_ref))
    assert result.outcome is CallbackOutcome.AMBIGUOUS
    return Ambiguity(first=first, second=second, result=result)


def status(pool: CallbackPool, checkout: Checkout) -> PaymentStatus:
    return pool.get_payment(checkout.payment.token).status


def test_the_queue_shows_the_ambiguous_return_and_its_candidates(pool: CallbackPool) -> None:
    pair = ambiguous_pair(pool)
    queue = pool.review_queue()
    assert len(queue) == 1
    assert [item.record.id for item in queue.returns] == [pair.result.callback_id]
    assert queue.payments == ()
    candidates = queue.returns[0].candidates
    assert {c.token for c in candidates} == {pair.first.payment.token, pair.second.payment.token}
    assert {c.status for c in candidates} == {P.NEEDS_REVIEW}


def test_resolving_to_one_payment_completes_it_and_leaves_the_other_as_chosen(
    pool: CallbackPool, clock: FakeClock
) -> None:
    pair = ambiguous_pair(pool)
    changes: list[StatusChange] = []
    pool.add_status_hook(changes.append)

    review = pool.resolve_review(
        pair.result.callback_id,
        payment_token=pair.second.payment.token,
        others=P.EXPIRED,
        by="alice",
        reason="gateway back office: order 55016041050 is the second customer's",
    )

    chosen = pool.get_payment(pair.second.payment.token)
    assert chosen.status is P.COMPLETED
    assert (chosen.pn_ref, chosen.last4, chosen.card_type) == ("A1", "0309", "VISA")
    assert chosen.callback_id == pair.result.callback_id
    other = pool.get_payment(pair.first.payment.token)
    assert other.status is P.EXPIRED
    assert other.error_message == (
        f"review of {pair.result.ref} by alice: "
        "gateway back office: order 55016041050 is the second customer's"
    )
    # The record: who, why, when, and every change made.
    assert review.decision is ReviewDecision.ATTRIBUTED
    assert (review.callback_id, review.payment_token) == (
        pair.result.callback_id,
        pair.second.payment.token,
    )
    assert (review.decided_by, review.decided_at, review.others) == (
        "alice",
        clock.now(),
        P.EXPIRED,
    )
    assert review.changes == (
        ReviewChange(token=pair.second.payment.token, previous=P.NEEDS_REVIEW, status=P.COMPLETED),
        ReviewChange(token=pair.first.payment.token, previous=P.NEEDS_REVIEW, status=P.EXPIRED),
    )
    assert pool.reviews() == [review]
    record = pool.get_callback(pair.result.callback_id)
    assert record.payment_token == pair.second.payment.token
    assert record.settled_by == f"review {review.ref} by alice"
    assert [(c.previous, c.status, c.reason) for c in changes] == [
        (P.NEEDS_REVIEW, P.COMPLETED, f"review of {pair.result.ref} by alice"),
        (P.NEEDS_REVIEW, P.EXPIRED, f"review of {pair.result.ref} by alice"),
    ]
    # Nothing is left to review; the slot's taint for the completed payment is gone, the
    # expired one's stays (that customer may still pay late).
    assert len(pool.review_queue()) == 0
    slot = next(s for s in pool.status().slots if s.path == pair.first.lease.path)
    assert slot.taints == 1


def test_an_expired_payment_can_still_be_paid_late_after_the_review(pool: CallbackPool) -> None:
    pair = ambiguous_pair(pool)
    pool.resolve_review(
        pair.result.callback_id,
        payment_token=pair.second.payment.token,
        others=P.EXPIRED,
        by="alice",
        reason="second one",
    )
    late = pool.handle_callback(pair.first.lease.path, paygistix_return(pn_ref="A2"))
    assert late.outcome is CallbackOutcome.APPLIED
    assert late.payment_token == pair.first.payment.token
    assert pool.get_payment(pair.first.payment.token).late


def test_resolving_to_none_changes_the_candidates_as_chosen(pool: CallbackPool) -> None:
    pair = ambiguous_pair(pool)
    review = pool.resolve_review(
        pair.result.callback_id,
        payment_token=None,
        others=P.FAILED,
        by="bob",
        reason="refunded at the gateway: a test transaction",
    )
    assert review.decision is ReviewDecision.NONE
    assert [status(pool, pair.first), status(pool, pair.second)] == [P.FAILED, P.FAILED]
    assert pool.get_callback(pair.result.callback_id).payment_token is None


def test_others_may_stay_in_review_and_are_then_decided_one_by_one(pool: CallbackPool) -> None:
    pair = ambiguous_pair(pool)
    pool.resolve_review(
        pair.result.callback_id,
        payment_token=pair.first.payment.token,
        others=P.NEEDS_REVIEW,
        by="carol",
        reason="first one; the second customer says they paid too: checking",
    )
    assert [status(pool, pair.first), status(pool, pair.second)] == [P.COMPLETED, P.NEEDS_REVIEW]
    queue = pool.review_queue()
    assert queue.returns == ()
    assert [p.token for p in queue.payments] == [pair.second.payment.token]

    review = pool.resolve_payment(
        pair.second.payment.token, status=P.EXPIRED, by="carol", reason="no such charge"
    )
    assert review.decision is ReviewDecision.PAYMENT
    assert review.callback_id is None
    assert status(pool, pair.second) is P.EXPIRED
    assert len(pool.review_queue()) == 0
    assert [r.decided_by for r in pool.reviews()] == ["carol", "carol"]


def test_a_payment_is_completed_only_by_a_return(pool: CallbackPool) -> None:
    pair = ambiguous_pair(pool)
    with pytest.raises(InvalidReview) as refused:
        pool.resolve_payment(pair.first.payment.token, status=P.COMPLETED, by="x", reason="y")
    assert refused.value.field == "status"
    assert status(pool, pair.first) is P.NEEDS_REVIEW


def test_a_choice_outside_the_candidates_is_refused_and_nothing_changes(
    pool: CallbackPool,
) -> None:
    pair = ambiguous_pair(pool)
    stranger = pool.create_payment(amount=1000)
    with pytest.raises(InvalidReview) as refused:
        pool.resolve_review(
            pair.result.callback_id,
            payment_token=stranger.payment.token,
            others=P.EXPIRED,
            by="mallory",
            reason="why not",
        )
    assert refused.value.field == "paymentToken"
    assert [status(pool, pair.first), status(pool, pair.second), status(pool, stranger)] == [
        P.NEEDS_REVIEW,
        P.NEEDS_REVIEW,
        P.PENDING,
    ]
    assert pool.reviews() == []


@pytest.mark.parametrize(
    ("others", "by", "reason", "field"),
    [
        (P.COMPLETED, "alice", "both paid", "others"),
        (P.PENDING, "alice", "start over", "others"),
        (P.EXPIRED, "   ", "who?", "operator"),
        (P.EXPIRED, "alice", "  ", "reason"),
        (P.EXPIRED, "alice", "x" * 501, "reason"),
    ],
)
def test_an_invalid_decision_is_refused_naming_what_is_wrong(
    pool: CallbackPool, others: PaymentStatus, by: str, reason: str, field: str
) -> None:
    pair = ambiguous_pair(pool)
    with pytest.raises(InvalidReview) as refused:
        pool.resolve_review(
            pair.result.callback_id, payment_token=None, others=others, by=by, reason=reason
        )
    assert refused.value.field == field
    assert pool.reviews() == []


def test_a_return_is_decided_once(pool: CallbackPool) -> None:
    pair = ambiguous_pair(pool)
    pool.resolve_review(
        pair.result.callback_id, payment_token=None, others=P.EXPIRED, by="a", reason="b"
    )
    with pytest.raises(NotUnderReview):
        pool.resolve_review(
            pair.result.callback_id,
            payment_token=pair.first.payment.token,
            others=P.EXPIRED,
            by="a",
            reason="changed my mind",
        )
    assert status(pool, pair.first) is P.EXPIRED
    assert len(pool.reviews()) == 1


def test_a_return_settled_by_a_second_return_is_no_longer_to_decide(pool: CallbackPool) -> None:
    pair = ambiguous_pair(pool)
    second = pool.handle_callback(pair.first.lease.path, paygistix_return(pn_ref="A2"))
    assert second.outcome is CallbackOutcome.APPLIED  # both paid: the pair settled
    with pytest.raises(NotUnderReview, match="settled by"):
        pool.resolve_review(
            pair.result.callback_id, payment_token=None, others=P.FAILED, by="a", reason="b"
        )
    assert [status(pool, pair.first), status(pool, pair.second)] == [P.COMPLETED, P.COMPLETED]


def test_a_candidate_that_moved_on_is_an_illegal_transition_and_nothing_is_applied(
    pool: CallbackPool,
) -> None:
    pair = ambiguous_pair(pool)
    # An operator ends the second payment first (it failed, says the gateway).
    pool.resolve_payment(pair.second.payment.token, status=P.FAILED, by="a", reason="declined")
    with pytest.raises(IllegalTransition):
        pool.resolve_review(
            pair.result.callback_id,
            payment_token=pair.second.payment.token,
            others=P.EXPIRED,
            by="a",
            reason="it was the second after all",
        )
    # Refused whole: the first is still in review, the return still open.
    assert [status(pool, pair.first), status(pool, pair.second)] == [P.NEEDS_REVIEW, P.FAILED]
    assert [item.record.id for item in pool.review_queue().returns] == [pair.result.callback_id]


def test_only_ambiguous_returns_and_payments_in_review_can_be_decided(pool: CallbackPool) -> None:
    checkout = pool.create_payment(amount=1000)
    applied = pool.handle_callback(checkout.lease.path, paygistix_return())
    with pytest.raises(NotUnderReview):
        pool.resolve_review(
            applied.callback_id, payment_token=None, others=P.EXPIRED, by="a", reason="b"
        )
    with pytest.raises(NotUnderReview):
        pool.resolve_payment(checkout.payment.token, status=P.FAILED, by="a", reason="b")
    with pytest.raises(UnknownCallback):
        pool.resolve_review(10_000, payment_token=None, others=P.EXPIRED, by="a", reason="b")
    with pytest.raises(UnknownPayment):
        pool.resolve_payment("nope", status=P.FAILED, by="a", reason="b")
