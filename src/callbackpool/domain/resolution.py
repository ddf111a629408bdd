"""Which payment a verified gateway return belongs to (docs/design.md#resolving-a-return).
Pure rules."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .model import Candidate, PaymentStatus


@dataclass(frozen=True, kw_only=True)
class OpenAmbiguity:
    """An earlier approved return on the slot that could not be attributed yet."""

    callback_id: int
    candidates: frozenset[str]


@dataclass(frozen=True, kw_only=True)
class Apply:
    """Exactly one payment can own the return: move it to ``status``."""

    candidate: Candidate
    status: PaymentStatus


@dataclass(frozen=True, kw_only=True)
class SettleAll:
    """As many approved returns as candidates: every candidate paid. ``assignments`` pairs
    each return (earlier ones by id, then this one as None) with a candidate, in no
    meaningful order: each paid the same amount."""

    assignments: tuple[tuple[int | None, Candidate], ...]


@dataclass(frozen=True, kw_only=True)
class Ambiguous:
    """Several payments could own the return. ``review``: send them all to review."""

    candidates: tuple[Candidate, ...]
    review: bool


@dataclass(frozen=True, kw_only=True)
class Unmatched:
    """No payment on the slot can own the return."""


Decision = Apply | SettleAll | Ambiguous | Unmatched


def decide(
    *,
    approved: bool,
    amount: int | None,
    candidates: Sequence[Candidate],
    open_ambiguities: Sequence[OpenAmbiguity] = (),
) -> Decision:
    """Decide what a verified return on a slot does, never guessing between payments.
    ``open_ambiguities``: the slot's earlier unattributed approved returns of the amount."""
    matching = tuple(
        c
        for c in candidates
        if not c.payment.status.is_final and (amount is None or c.payment.amount == amount)
    )
    if not matching:
        return Unmatched()
    if len(matching) == 1:
        status = PaymentStatus.COMPLETED if approved else PaymentStatus.FAILED
        return Apply(candidate=matching[0], status=status)
    if not approved:
        # A declined return moves no money: if it cannot be attributed it changes nothing.
        return Ambiguous(candidates=matching, review=False)
    if amount is not None:
        tokens = frozenset(c.payment.token for c in matching)
        earlier = sorted(a.callback_id for a in open_ambiguities if a.candidates <= tokens)
        if len(earlier) + 1 == len(matching):
            ordered = sorted(matching, key=lambda c: c.lease.id)
            returns: list[int | None] = [*earlier, None]
            return SettleAll(assignments=tuple(zip(returns, ordered, strict=True)))
    return Ambiguous(candidates=matching, review=True)
