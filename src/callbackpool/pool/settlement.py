"""A return settled onto a payment, and the page it sends the customer's browser to.

However a return comes to belong to a payment — its path and amount alone, the gateway's
status query, or an operator's review — it is applied here: the payment takes the return's
status and facts, and the lease ends (or its taint is dropped). A return that several
payments could own sends them to review instead.
"""

from __future__ import annotations

from urllib.parse import urlencode

from ..domain.errors import InvalidReview
from ..domain.gateway import GatewayReturn
from ..domain.model import (
    CallbackRecord,
    Candidate,
    LeaseEnd,
    PaymentStatus,
    ReviewChange,
    callback_ref,
)
from ..domain.resolution import OpenAmbiguity
from ..domain.transitions import check_transition, is_late
from ..store.tx import PaymentChange, Tx
from .core import PoolCore, Work


class Settlement:
    """Applying returns to payments, and the redirects that answer them."""

    def __init__(self, core: PoolCore) -> None:
        self.core = core

    def settle(
        self,
        tx: Tx,
        work: Work,
        candidate: Candidate,
        status: PaymentStatus,
        parsed: GatewayReturn,
        callback_id: int,
        *,
        reason: str | None = None,
    ) -> None:
        lease = candidate.lease
        late = status is PaymentStatus.COMPLETED and (
            is_late(candidate.payment.status, status)
            or lease.end_reason not in (None, LeaseEnd.CALLBACK)
        )
        change = PaymentChange(
            status=status,
            late=late,
            pn_ref=parsed.pn_ref,
            order_id=parsed.order_id,
            auth_code=parsed.auth_code,
            card_type=parsed.card_type,
            last4=parsed.last4,
            result_code=parsed.result_code,
            error_message=None if parsed.approved else f"declined (Result {parsed.result_code})",
            callback_id=callback_id,
        )
        reason = reason or f"return {callback_ref(callback_id)}"
        self.core.transition(tx, work, candidate.payment, change, reason)
        if lease.is_live:
            self.core.end_lease(tx, work, lease, LeaseEnd.CALLBACK, taint=False)
        else:
            tx.drop_taint(lease.id)
            if lease.end_reason is LeaseEnd.EXPIRED:
                tx.record_late_return(lease.slot_id)  # that expiry was not silent after all

    def attribute(
        self, tx: Tx, work: Work, record: CallbackRecord, token: str, label: str
    ) -> ReviewChange:
        """Settle ``record`` onto the payment ``token`` names, whatever its lease's state (live,
        tainted or long over), as an operator's decision or the gateway's record does."""
        payment = tx.get_payment(token)
        if payment is None:
            raise InvalidReview("paymentToken", "no such payment")
        parsed = self.core.gateway.parse_return(record.params)
        status = PaymentStatus.COMPLETED if parsed.approved else PaymentStatus.FAILED
        check_transition(payment.status, status)
        lease = tx.get_lease(payment.lease_id) if payment.lease_id is not None else None
        if lease is None:
            raise InvalidReview("paymentToken", "the payment never held a lease")
        candidate = Candidate(lease=lease, payment=payment)
        self.settle(tx, work, candidate, status, parsed, record.id, reason=label)
        return ReviewChange(token=token, previous=payment.status, status=status)

    def send_to_review(self, tx: Tx, work: Work, candidate: Candidate, callback_id: int) -> None:
        if candidate.payment.status is not PaymentStatus.NEEDS_REVIEW:
            self.core.transition(
                tx,
                work,
                candidate.payment,
                PaymentChange(status=PaymentStatus.NEEDS_REVIEW),
                f"ambiguous return {callback_ref(callback_id)}",
            )
        if candidate.lease.is_live:
            # The return may be this customer's or not: the lease ends, its taint stays.
            self.core.end_lease(tx, work, candidate.lease, LeaseEnd.CALLBACK, taint=True)

    def open_ambiguities(self, tx: Tx, path: str, amount: int) -> list[OpenAmbiguity]:
        """The earlier unattributed returns of ``amount`` on ``path`` whose candidates may still
        be candidates: their taints run out a late-callback window after the return was
        resolved (within seconds of its receipt, or at the next sweep). Twice the window
        leaves ample room, and keeps the list from growing for ever on a busy same-amount
        slot."""
        return tx.open_ambiguities(path, amount, tx.now - 2 * self.core.policy.late_callback_window)

    def answer(self, parsed: GatewayReturn, record: CallbackRecord) -> str:
        """Where an attributed return sends the browser. The success page is named by the
        return's receipt, never by a payment token: whoever holds the return (a replay, a
        forgery where returns are unverified) must not learn the token from the redirect."""
        if parsed.approved:
            query = urlencode({"ref": record.ref, "receipt": record.receipt or ""})
            return f"{self.core.policy.success_url}?{query}"
        return self.error_page("Payment declined", record.id)

    def error_page(self, message: str, callback_id: int) -> str:
        query = urlencode({"message": message, "ref": callback_ref(callback_id)})
        return f"{self.core.policy.error_url}?{query}"
