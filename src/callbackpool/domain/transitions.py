"""Every legal payment status change, in one table (docs/design.md#payment-states)."""

from __future__ import annotations

from .errors import IllegalTransition
from .model import PaymentStatus, TicketStatus

P = PaymentStatus

TRANSITIONS: dict[PaymentStatus, frozenset[PaymentStatus]] = {
    # The customer presses Pay on the hosted page; or the shop cancels, or nobody paid; or
    # an earlier attempt's approval arrives after all (the money was taken: it wins).
    P.OPEN: frozenset({P.PENDING, P.CANCELLED, P.EXPIRED, P.COMPLETED, P.NEEDS_REVIEW}),
    # OPEN again: a declined card on the hosted page, with attempts left.
    P.PENDING: frozenset({P.OPEN, P.COMPLETED, P.FAILED, P.CANCELLED, P.EXPIRED, P.NEEDS_REVIEW}),
    # The customer may still pay after we stopped waiting (docs/design.md#payment-states).
    P.CANCELLED: frozenset({P.COMPLETED, P.FAILED, P.NEEDS_REVIEW}),
    P.EXPIRED: frozenset({P.COMPLETED, P.FAILED, P.NEEDS_REVIEW}),
    P.NEEDS_REVIEW: frozenset({P.COMPLETED, P.FAILED, P.EXPIRED}),
    P.COMPLETED: frozenset(),
    P.FAILED: frozenset(),
}


T = TicketStatus

# A ticket waits until it is granted, given up or left unpolled; then it is done.
TICKET_TRANSITIONS: dict[TicketStatus, frozenset[TicketStatus]] = {
    T.WAITING: frozenset({T.GRANTED, T.EXPIRED, T.CANCELLED}),
    T.GRANTED: frozenset(),
    T.EXPIRED: frozenset(),
    T.CANCELLED: frozenset(),
}


def check_ticket_transition(current: TicketStatus, requested: TicketStatus) -> None:
    """Raise IllegalTransition unless ``current`` → ``requested`` is in the ticket table."""
    if requested not in TICKET_TRANSITIONS[current]:
        raise IllegalTransition(current.value, requested.value, subject="ticket")


def check_transition(current: PaymentStatus, requested: PaymentStatus) -> None:
    """Raise IllegalTransition unless the table allows ``current`` → ``requested``."""
    if requested not in TRANSITIONS[current]:
        raise IllegalTransition(current.value, requested.value)


def is_late(current: PaymentStatus, requested: PaymentStatus) -> bool:
    """A success that arrives after we stopped waiting is flagged ``late``."""
    return requested is P.COMPLETED and current in (P.CANCELLED, P.EXPIRED)
