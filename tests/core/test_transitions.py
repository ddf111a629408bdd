"""The payment status table (docs/design.md#payment-states)."""

from __future__ import annotations

import pytest

from callbackpool.domain.errors import IllegalTransition
from callbackpool.domain.model import PaymentStatus as P
from callbackpool.domain.transitions import TRANSITIONS, check_transition, is_late

ALLOWED = {
    (P.OPEN, P.PENDING), (P.OPEN, P.CANCELLED), (P.OPEN, P.EXPIRED),
    (P.OPEN, P.COMPLETED), (P.OPEN, P.NEEDS_REVIEW), (P.PENDING, P.OPEN),
    (P.PENDING, P.COMPLETED), (P.PENDING, P.FAILED), (P.PENDING, P.CANCELLED),
    (P.PENDING, P.EXPIRED), (P.PENDING, P.NEEDS_REVIEW),
    (P.CANCELLED, P.COMPLETED), (P.CANCELLED, P.FAILED), (P.CANCELLED, P.NEEDS_REVIEW),
    (P.EXPIRED, P.COMPLETED), (P.EXPIRED, P.FAILED), (P.EXPIRED, P.NEEDS_REVIEW),
    (P.NEEDS_REVIEW, P.COMPLETED), (P.NEEDS_REVIEW, P.FAILED), (P.NEEDS_REVIEW, P.EXPIRED),
}  # fmt: skip


def test_the_table_covers_every_status() -> None:
    assert set(TRANSITIONS) == set(P)


@pytest.mark.parametrize("current", list(P))
@pytest.mark.parametrize("requested", list(P))
def test_exactly_the_designed_transitions_are_allowed(current: P, requested: P) -> None:
    if (current, requested) in ALLOWED:
        check_transition(current, requested)
    else:
        with pytest.raises(IllegalTransition, match=f"from {current} to {requested}"):
            check_transition(current, requested)


@pytest.mark.parametrize("final", [P.COMPLETED, P.FAILED])
def test_final_statuses_have_no_way_out(final: P) -> None:
    assert final.is_final
    assert not TRANSITIONS[final]


def test_only_a_success_after_we_stopped_waiting_is_late() -> None:
    assert is_late(P.CANCELLED, P.COMPLETED)
    assert is_late(P.EXPIRED, P.COMPLETED)
    assert not is_late(P.PENDING, P.COMPLETED)
    assert not is_late(P.EXPIRED, P.FAILED)
