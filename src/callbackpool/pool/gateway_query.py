"""The gateway's status query: settling the returns a callback path cannot attribute.

A return left ``ambiguous`` or ``unmatched`` is put to the gateway (outside any transaction,
within the query's timeout). A record that agrees with the return in every fact both carry,
and names an open payment of the return's path and amount, gives the return to that payment.
A query that failed or found nothing is asked again by the sweeper, a few times at most.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from ..domain.gateway import GatewayReturn, GatewayTransaction, StatusQueryFailed
from ..domain.model import CallbackOutcome, CallbackRecord, Payment, PaymentStatus, callback_ref
from ..store.tx import PaymentChange, Tx
from .core import PoolCore, Work, log, lookup_key, short
from .settlement import Settlement

# Returns the query may settle, how often one is asked in all (the first time and by the
# sweeper), and how many the sweeper asks about each time.
_QUERYABLE = (CallbackOutcome.AMBIGUOUS, CallbackOutcome.UNMATCHED)
QUERY_ATTEMPTS = 3
QUERIES_PER_SWEEP = 20


@dataclass(frozen=True, kw_only=True)
class GatewayAnswer:
    """What the status query said: the gateway's record (None: it has none), or why it
    could not be asked."""

    found: GatewayTransaction | None = None
    failure: str | None = None


class AskGatewayFirst(Exception):
    """Rolls a resolution back, so that the gateway's status query is asked first."""

    def __init__(self, pn_ref: str) -> None:
        super().__init__(pn_ref)
        self.pn_ref = pn_ref


class GatewayQueries:
    """Asking the gateway about a return, and applying what it says."""

    def __init__(self, core: PoolCore, settlement: Settlement) -> None:
        self.core = core
        self.settlement = settlement

    def ask(self, pn_ref: str) -> GatewayAnswer:
        assert self.core.status_query is not None
        try:
            return GatewayAnswer(found=self.core.status_query.transaction(pn_ref))
        except StatusQueryFailed as exc:
            log.warning("status query for PNRef %s failed: %s", pn_ref, exc.message)
            return GatewayAnswer(failure=exc.message)

    def apply(
        self,
        tx: Tx,
        work: Work,
        record: CallbackRecord,
        parsed: GatewayReturn,
        answer: GatewayAnswer,
    ) -> Payment | None:
        """Give the return to the payment the gateway's record names, if it may have it (the
        payment as it was), or None: nothing changed but the note of what the gateway said."""
        if answer.failure is not None:
            tx.note_status_query(record.id, f"the query failed: {answer.failure}", None)
            return None
        note, payment = self._attribution(tx, record, parsed, answer.found)
        # Attributed, the return's answer becomes its payment's page (a repeat gets it too).
        redirect = self.settlement.answer(parsed, record) if payment else None
        tx.note_status_query(record.id, note, redirect)
        log.log(
            logging.INFO if payment else logging.WARNING, "status query, %s: %s", record.ref, note
        )
        if payment is not None:
            # As an operator's attribution would (its lease, live or tainted or long over).
            label = f"return {record.ref} (status query)"
            self.settlement.attribute(tx, work, record, payment.token, label)
        return payment

    def _attribution(
        self,
        tx: Tx,
        record: CallbackRecord,
        parsed: GatewayReturn,
        found: GatewayTransaction | None,
    ) -> tuple[str, Payment | None]:
        """Which payment the gateway's record gives the return to, and what was found. The
        record must agree with the return in every fact both carry; it names a payment of
        the return's path and amount, never one that reached its final status."""
        if found is None:
            return "the gateway has no record of this transaction", None
        amount = parsed.amount if parsed.amount is not None else found.amount
        disagreements = [
            name
            for name, agrees in (
                ("PNRef", found.pn_ref == parsed.pn_ref),
                ("Result", found.result_code == parsed.result_code),
                ("Amount", found.amount is None or found.amount == amount),
                ("MerchantID", found.merchant_id in (None, parsed.merchant_id)),
            )
            if not agrees
        ]
        if disagreements:
            return f"the gateway's record disagrees ({', '.join(disagreements)})", None
        if not found.payment_token:
            return "the gateway's record names no payment", None
        payment = tx.get_payment(lookup_key(found.payment_token))
        if payment is None:
            return "the gateway's record names no payment of this pool", None
        if payment.callback_path != record.path or (
            amount is not None and payment.amount != amount
        ):
            return "the gateway's record names a payment of another path or amount", None
        if payment.status.is_final:
            # A payment that reached its final status is never given another return.
            return f"the gateway's record names a payment already {payment.status.value}", None
        return f"the gateway's record names payment {short(payment.token)}", payment

    def ask_again(self) -> None:
        """The sweeper's part: an ambiguous or unmatched return whose query failed (or found
        nothing yet) is asked about again, a few times at most, and settled if it can be."""
        with self.core.store.read() as tx:
            waiting = tx.callbacks_to_query(QUERY_ATTEMPTS, QUERIES_PER_SWEEP)
        for callback_id in waiting:
            try:
                self._settle(callback_id)
            except Exception:
                log.exception("status query for %s failed", callback_ref(callback_id))

    def _settle(self, callback_id: int) -> None:
        with self.core.store.read() as tx:
            record = tx.get_callback(callback_id)
        if record is None or record.pn_ref is None or not _open_to_query(record):
            return
        answer = self.ask(record.pn_ref)  # no transaction open meanwhile
        with self.core.writing() as (tx, work):
            record = tx.get_callback(callback_id)
            slot = tx.slot_by_path(record.path) if record is not None else None
            if record is None or slot is None or not _open_to_query(record):
                return  # settled meanwhile
            self.core.expire_due(tx, work, slot.id)
            parsed = self.core.gateway.parse_return(record.params)
            payment = self.apply(tx, work, record, parsed, answer)
            if payment is None:
                return
            tx.settle_callback(record.id, payment.token, "status query")
            self._release_from_review(tx, work, record, parsed, payment.token)

    def _release_from_review(
        self, tx: Tx, work: Work, record: CallbackRecord, parsed: GatewayReturn, token: str
    ) -> None:
        """The others an ambiguous return had sent to review, now that it is known to be
        another's, go back to where the pool had left them: their leases ended when they
        went to review, so they are ``expired`` (their taints stay: their own returns still
        find them). One still in another open ambiguity stays in review."""
        still_open = {
            candidate
            for ambiguity in (
                self.settlement.open_ambiguities(tx, record.path, parsed.amount)
                if parsed.amount
                else []
            )
            for candidate in ambiguity.candidates
        }
        for other_token in record.candidates:
            other = tx.get_payment(other_token)
            if (
                other_token != token
                and other_token not in still_open
                and other is not None
                and other.status is PaymentStatus.NEEDS_REVIEW
            ):
                change = PaymentChange(
                    status=PaymentStatus.EXPIRED,
                    error_message=f"return {record.ref} was another payment's",
                )
                self.core.transition(tx, work, other, change, f"return {record.ref} was another's")


def _open_to_query(record: CallbackRecord) -> bool:
    """An ambiguous or unmatched return that nothing has settled yet."""
    return record.outcome in _QUERYABLE and record.settled_at is None
