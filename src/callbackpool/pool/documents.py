"""The shop's view of a payment as JSON, in one place: the document ``GET
/api/v1/payments/{id}`` answers (``views.ShopPaymentOut`` is built from it) and the ``data``
each event of the outbox keeps, so that the two never differ. camelCase keys, times in ISO
8601 UTC. Plain values only: no I/O, no web framework."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ..domain.gateway import Gateway, GatewayReturn
from ..domain.model import Attempt, Event, LeaseEnd, Payment


def iso(moment: datetime | None) -> str | None:
    """``2026-01-01T12:00:00.000Z`` (what a JavaScript client's ``Date`` reads), or None."""
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True, kw_only=True)
class AttemptResult:
    """One attempt as the shop reads it: ``approved``, ``declined``, ``error`` (the gateway
    could not process the card), ``in_progress``, ``no_return`` (its lease ran out),
    ``cancelled``, ``released`` (by an operator) or ``in_review``; the return's facts."""

    number: int
    outcome: str
    started_at: datetime
    returned_at: datetime | None = None
    pn_ref: str | None = None
    auth_code: str | None = None
    last4: str | None = None
    card_type: str | None = None


_WITHOUT_RETURN = {
    None: "in_progress",
    LeaseEnd.EXPIRED: "no_return",
    LeaseEnd.ABANDONED: "no_return",
    LeaseEnd.CANCELLED: "cancelled",
    LeaseEnd.ADMIN: "released",
    LeaseEnd.CALLBACK: "in_review",  # a return several payments could own ended it
}


def return_outcome(parsed: GatewayReturn) -> str:
    """``approved``, ``declined`` or ``error``. The gateway documents only ``Result`` 0
    (approved); codes from 1000 up are taken as processing errors, as the sandbox's are."""
    if parsed.approved:
        return "approved"
    code = parsed.result_code
    return "error" if not code.isdigit() or int(code) >= 1000 else "declined"


def attempt_results(gateway: Gateway, attempts: Sequence[Attempt]) -> tuple[AttemptResult, ...]:
    """A payment's attempts (``Tx.payment_attempts``, oldest first) as the shop reads them."""
    return tuple(_attempt(gateway, n, a) for n, a in enumerate(attempts, start=1))


def _attempt(gateway: Gateway, number: int, attempt: Attempt) -> AttemptResult:
    if attempt.callback_id is None:
        outcome = _WITHOUT_RETURN[attempt.end_reason]
        return AttemptResult(number=number, outcome=outcome, started_at=attempt.started_at)
    parsed = gateway.parse_return(attempt.params)
    return AttemptResult(
        number=number,
        outcome=return_outcome(parsed),
        started_at=attempt.started_at,
        returned_at=attempt.returned_at,
        pn_ref=parsed.pn_ref,
        auth_code=parsed.auth_code,
        last4=parsed.last4,
        card_type=parsed.card_type,
    )


def payment_document(payment: Payment, attempts: Sequence[AttemptResult]) -> dict[str, Any]:
    """The payment as ``GET /api/v1/payments/{id}`` shows it (without ``success``); never
    its token."""
    return {
        "id": payment.id,
        "status": payment.status.value,
        "amount": payment.amount,
        "currency": payment.currency,
        "orderReference": payment.order_reference,
        "metadata": dict(payment.metadata),
        "late": payment.late,
        "attempts": [
            {
                "number": a.number,
                "outcome": a.outcome,
                "startedAt": iso(a.started_at),
                "returnedAt": iso(a.returned_at),
                "pnRef": a.pn_ref,
                "authCode": a.auth_code,
                "last4": a.last4,
                "cardType": a.card_type,
            }
            for a in attempts
        ],
        "createdAt": iso(payment.created_at),
        "updatedAt": iso(payment.updated_at),
        "expiresAt": iso(payment.expires_at),
    }


def event_document(event: Event) -> dict[str, Any]:
    """An event as the shop reads it (docs/integrating.md#events)."""
    return {
        "id": event.id,
        "type": event.type,
        "createdAt": iso(event.created_at),
        "sequence": event.sequence,
        "reason": event.reason,
        "data": dict(event.data),
    }
