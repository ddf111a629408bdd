"""The pure rules that attribute a verified return to a payment
(docs/design.md#resolving-a-return)."""

from __future__ import annotations

from datetime import UTC, datetime

from callbackpool.domain.model import Candidate, Lease, LeaseEnd, Payment, PaymentStatus
from callbackpool.domain.resolution import (
    Ambiguous,
    Apply,
    OpenAmbiguity,
    SettleAll,
    Unmatched,
    decide,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def candidate(
    lease_id: int, amount: int, status: PaymentStatus = PaymentStatus.PENDING
) -> Candidate:
    live = status is PaymentStatus.PENDING
    lease = Lease(
        id=lease_id, slot_id=1, path="/h-1", token=f"t{lease_id}", amount=amount,
        acquired_at=T0, expires_at=T0,
        ended_at=None if live else T0, end_reason=None if live else LeaseEnd.CANCELLED,
        taint_until=None if live else T0,
    )  # fmt: skip
    payment = Payment(
        token=f"t{lease_id}", amount=amount, currency="USD", status=status,
        created_at=T0, updated_at=T0,
    )  # fmt: skip
    return Candidate(lease=lease, payment=payment)


def test_no_candidate_is_unmatched() -> None:
    assert decide(approved=True, amount=1000, candidates=[]) == Unmatched()


def test_one_candidate_of_the_amount_is_applied() -> None:
    live = candidate(2, 1000)
    tainted = candidate(1, 500, PaymentStatus.CANCELLED)
    decision = decide(approved=True, amount=1000, candidates=[tainted, live])
    assert decision == Apply(candidate=live, status=PaymentStatus.COMPLETED)
    declined = decide(approved=False, amount=500, candidates=[tainted, live])
    assert declined == Apply(candidate=tainted, status=PaymentStatus.FAILED)


def test_the_wrong_amount_matches_nobody() -> None:
    assert decide(approved=True, amount=999, candidates=[candidate(1, 1000)]) == Unmatched()


def test_final_payments_are_never_candidates() -> None:
    done = candidate(1, 1000, PaymentStatus.COMPLETED)
    assert decide(approved=True, amount=1000, candidates=[done]) == Unmatched()


def test_same_amount_candidates_are_ambiguous() -> None:
    pair = [candidate(1, 1000, PaymentStatus.EXPIRED), candidate(2, 1000)]
    assert decide(approved=True, amount=1000, candidates=pair) == Ambiguous(
        candidates=tuple(pair), review=True
    )
    assert decide(approved=False, amount=1000, candidates=pair) == Ambiguous(
        candidates=tuple(pair), review=False
    )


def test_no_amount_keeps_all_candidates() -> None:
    pair = [candidate(1, 1000, PaymentStatus.EXPIRED), candidate(2, 2000)]
    decision = decide(approved=True, amount=None, candidates=pair)
    assert decision == Ambiguous(candidates=tuple(pair), review=True)


def test_as_many_approved_returns_as_candidates_settle_them_all() -> None:
    pair = [
        candidate(1, 1000, PaymentStatus.NEEDS_REVIEW),
        candidate(2, 1000, PaymentStatus.NEEDS_REVIEW),
    ]
    earlier = OpenAmbiguity(callback_id=7, candidates=frozenset({"t1", "t2"}))
    decision = decide(approved=True, amount=1000, candidates=pair, open_ambiguities=[earlier])
    assert decision == SettleAll(assignments=((7, pair[0]), (None, pair[1])))


def test_an_earlier_ambiguity_about_other_payments_does_not_count() -> None:
    pair = [candidate(3, 1000, PaymentStatus.NEEDS_REVIEW), candidate(4, 1000)]
    stale = OpenAmbiguity(callback_id=7, candidates=frozenset({"t1", "t2"}))
    decision = decide(approved=True, amount=1000, candidates=pair, open_ambiguities=[stale])
    assert isinstance(decision, Ambiguous)


def test_fewer_returns_than_candidates_stay_ambiguous() -> None:
    trio = [candidate(i, 1000, PaymentStatus.NEEDS_REVIEW) for i in (1, 2, 3)]
    earlier = OpenAmbiguity(callback_id=7, candidates=frozenset({"t1", "t2"}))
    decision = decide(approved=True, amount=1000, candidates=trio, open_ambiguities=[earlier])
    assert isinstance(decision, Ambiguous)
    assert decision.review
