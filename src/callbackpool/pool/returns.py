"""Gateway returns: stored, then resolved to a payment (docs/design.md#resolving-a-return),
asking the gateway's status query first where the path alone cannot attribute one
(docs/design.md#the-status-query)."""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import assert_never
from urllib.parse import urlencode

from ..domain.errors import InvalidReview
from ..domain.events import CallbackResolved
from ..domain.gateway import (
    GatewayReturn,
    GatewayTransaction,
    MalformedReturn,
    Params,
    StatusQueryFailed,
)
from ..domain.model import (
    CallbackOutcome,
    CallbackRecord,
    Candidate,
    LeaseEnd,
    NewCallback,
    Payment,
    PaymentStatus,
    ReviewChange,
    callback_ref,
)
from ..domain.resolution import (
    Ambiguous,
    Apply,
    Decision,
    OpenAmbiguity,
    SettleAll,
    Unmatched,
    decide,
)
from ..domain.transitions import check_transition, is_late
from ..store.tx import CallbackResolution, PaymentChange, Tx
from .core import PoolCore, Work, log, log_fields, lookup_key, short
from .documents import return_outcome
from .policy import IPNetwork
from .results import CallbackResult
from .shop import shop_redirect

RECEIPT_BYTES = 16  # 128 bits: the key of a return's success page
# How often a return is put to the status query in all (the first time and by the
# sweeper), and how many the sweeper asks about each time.
QUERY_ATTEMPTS = 3
QUERIES_PER_SWEEP = 20
_QUERYABLE = (CallbackOutcome.AMBIGUOUS, CallbackOutcome.UNMATCHED)


@dataclass(frozen=True, kw_only=True)
class GatewayAnswer:
    """The status query's answer: the gateway's record (None: none), or why it failed."""

    found: GatewayTransaction | None = None
    failure: str | None = None


class Returns(PoolCore):
    """Storing gateway returns, resolving and settling them, and the status query."""

    def handle_callback(
        self, path: str, params: Params, *, method: str = "GET", client_addr: str | None = None
    ) -> CallbackResult:
        """Store a gateway return, then resolve it (docs/design.md#resolving-a-return): a
        crash in between leaves it ``received``, for the sweeper to resolve."""
        with self._store.transaction() as tx:
            callback_id = tx.insert_callback(
                NewCallback(
                    path=path,
                    method=method.upper(),
                    params=tuple(params),
                    client_addr=client_addr,
                    receipt=secrets.token_urlsafe(RECEIPT_BYTES),
                )
            )
        return self._resolve(callback_id)

    def _resolve(self, callback_id: int) -> CallbackResult:
        """Resolve a stored return (once: a return resolved already is answered as it was)."""
        answer = None
        if self._status_query is not None:
            pn_ref = self._pn_ref_to_ask(callback_id)
            if pn_ref is not None:
                answer = self._ask(pn_ref)  # no transaction open meanwhile
        return self._resolve_knowing(callback_id, answer)

    def _pn_ref_to_ask(self, callback_id: int) -> str | None:
        """The status query's first step, in a read: the PNRef to ask the gateway about if
        the return would be ambiguous or unmatched, else None. The write decides again."""
        with self._store.read() as tx:
            record = tx.get_callback(callback_id)
            if record is None or record.outcome is not CallbackOutcome.RECEIVED:
                return None
            screened = self._screen(tx, record)
            if isinstance(screened, CallbackResolution):
                return None
            slot_id, parsed = screened
            if tx.pn_ref_holder(parsed.pn_ref) is not None:
                return None  # a repeat: it is answered as the first one was
            # A lease past its end is still live here; the write ends it, then decides again.
            decision = self._decision(tx, slot_id, record.path, parsed)
        return parsed.pn_ref if isinstance(decision, Ambiguous | Unmatched) else None

    def _resolve_knowing(self, callback_id: int, answer: GatewayAnswer | None) -> CallbackResult:
        with self._writing() as (tx, work):
            record = tx.get_callback(callback_id)
            assert record is not None, f"callback {callback_id} vanished"
            if record.outcome is not CallbackOutcome.RECEIVED:  # resolved by another worker
                return self._result(callback_id, record)
            resolution = self._decide(tx, work, record, answer)
            tx.finish_callback(callback_id, resolution)
            event = CallbackResolved(
                callback_id=callback_id, path=record.path, outcome=resolution.outcome
            )
            work.events.append(event)
        log.log(
            logging.INFO if resolution.outcome is CallbackOutcome.APPLIED else logging.WARNING,
            "callback %s on %s: %s%s%s%s",
            callback_ref(callback_id),
            record.path,
            resolution.outcome.value,
            f" to payment {short(resolution.payment_token)}" if resolution.payment_token else "",
            f" (lease {resolution.lease_id})" if resolution.lease_id is not None else "",
            f" ({resolution.detail})" if resolution.detail else "",
            extra=log_fields(
                "callback",
                record.path,
                resolution.lease_id,
                resolution.payment_token,
                callback=callback_ref(callback_id),
                outcome=resolution.outcome.value,
                approved=resolution.approved,
                amount=resolution.amount,
            ),
        )
        return self._result(callback_id, resolution)

    def _result(
        self, callback_id: int, done: CallbackResolution | CallbackRecord
    ) -> CallbackResult:
        return CallbackResult(
            callback_id=callback_id,
            outcome=done.outcome,
            redirect=done.redirect or self._error_page("processing", callback_id),
            payment_token=done.payment_token,
            detail=done.detail,
        )

    def _screen(
        self, tx: Tx, record: CallbackRecord
    ) -> CallbackResolution | tuple[int, GatewayReturn]:
        """The return's slot and what it says, or why it is rejected. Reads only."""
        slot_id = tx.slot_id(record.path)
        if slot_id is None:
            return self._rejected(record.id, "unknown callback path")
        try:
            parsed = self._gateway.parse_return(record.params)
        except MalformedReturn as exc:
            return self._rejected(record.id, exc.message)
        refusal = self._verify(record.params, parsed, record.client_addr)
        if refusal is not None:
            return self._rejected(record.id, refusal, parsed)
        return slot_id, parsed

    def _decision(self, tx: Tx, slot_id: int, path: str, parsed: GatewayReturn) -> Decision:
        """What the path and the slot's candidates say about a verified return."""
        candidates = tx.candidates(slot_id)
        # Earlier unattributed returns matter only where several payments compete.
        open_ambiguities = (
            self._open_ambiguities(tx, path, parsed.amount)
            if parsed.approved and parsed.amount is not None and len(candidates) > 1
            else []
        )
        return decide(
            approved=parsed.approved,
            amount=parsed.amount,
            candidates=candidates,
            open_ambiguities=open_ambiguities,
        )

    def _decide(
        self, tx: Tx, work: Work, record: CallbackRecord, answer: GatewayAnswer | None
    ) -> CallbackResolution:
        callback_id = record.id
        screened = self._screen(tx, record)
        if isinstance(screened, CallbackResolution):
            return screened
        slot_id, parsed = screened
        # Claimed only after every check: a forgery cannot block the genuine return.
        holder = tx.claim_pn_ref(parsed.pn_ref, callback_id, _fingerprint(parsed))
        if holder is not None:
            return self._duplicate(tx, callback_id, parsed, holder)

        # A verified return on the path: the path works (slot health).
        tx.record_slot_return(slot_id, approved=parsed.approved)
        # A lease past its expiry has ended: its payment is a taint now, not the live lease.
        self._expire_due(tx, work, slot_id)
        decision = self._decision(tx, slot_id, record.path, parsed)
        seen = _seen(parsed)
        applied = replace(
            seen, outcome=CallbackOutcome.APPLIED, redirect=self._answer(parsed, record)
        )
        # Without an answer although a status query is configured, the pool moved on since
        # the read: the return resolves as its path says, and the sweeper asks the gateway.
        if isinstance(decision, Ambiguous | Unmatched) and answer is not None:
            payment = self._apply_answer(tx, work, record, parsed, answer)
            if payment is not None:
                return replace(
                    applied,
                    redirect=self._answer(parsed, record, payment),
                    payment_token=payment.token,
                    lease_id=payment.lease_id,
                    detail="attributed by the gateway's status query",
                )
        match decision:
            case Apply(candidate=candidate, status=status):
                self._settle(tx, work, candidate, status, parsed, callback_id)
                return replace(
                    applied,
                    redirect=self._answer(parsed, record, candidate.payment),
                    payment_token=candidate.payment.token,
                    lease_id=candidate.lease.id,
                )
            case SettleAll(assignments=assignments):
                for earlier_id, candidate in assignments:
                    if earlier_id is None:  # this return's own
                        own = candidate
                        self._settle(
                            tx, work, candidate, PaymentStatus.COMPLETED, parsed, callback_id
                        )
                        continue
                    earlier = tx.get_callback(earlier_id)
                    assert earlier is not None
                    token = candidate.payment.token
                    self._attribute(tx, work, earlier, token, f"return {earlier.ref}")
                    tx.settle_callback(earlier_id, token, callback_ref(callback_id))
                return replace(
                    applied,
                    redirect=self._answer(parsed, record, own.payment),
                    payment_token=own.payment.token,
                    detail=f"settled {len(assignments)} same-amount payments on {record.path}",
                    candidates=tuple(c.payment.token for _, c in assignments),
                    lease_id=own.lease.id,
                )
            case Ambiguous(candidates=matching, review=review):
                if review:
                    for candidate in matching:
                        self._send_to_review(tx, work, candidate, callback_id)
                    message = "confirming"
                else:
                    message = return_outcome(parsed)
                return replace(
                    seen,
                    outcome=CallbackOutcome.AMBIGUOUS,
                    redirect=self._error_page(message, callback_id),
                    detail=f"{len(matching)} payments could own this return",
                    candidates=tuple(c.payment.token for c in matching),
                )
            case Unmatched():
                return replace(
                    seen,
                    outcome=CallbackOutcome.UNMATCHED,
                    redirect=self._error_page("not_found", callback_id),
                    detail="no payment on this path has this amount",
                )
            case _:
                assert_never(decision)

    def _verify(self, params: Params, parsed: GatewayReturn, client_addr: str | None) -> str | None:
        """Why the return cannot be trusted (docs/security.md), or None."""
        if parsed.approved and parsed.amount is None:
            # An approved sale always names what was charged: without it the amount check,
            # the one thing a forger must guess, would be skipped.
            return "an approved return must carry its Amount"
        refusal = self._gateway.verify(params, parsed)
        if refusal is not None:
            return refusal
        sources = self._policy.return_networks
        if sources and not _admitted(client_addr, sources):
            return f"source address {client_addr or '(unknown)'} is not in the allowlist"
        return None

    def _duplicate(
        self, tx: Tx, callback_id: int, parsed: GatewayReturn, holder: tuple[int, str]
    ) -> CallbackResolution:
        """A repeat of the return that claimed the PNRef first, or a forgery reusing it."""
        holder_id, holder_fingerprint = holder
        if holder_fingerprint != _fingerprint(parsed):
            return self._rejected(
                callback_id,
                f"PNRef already used by a different return ({callback_ref(holder_id)})",
                parsed,
            )
        first = tx.get_callback(holder_id)
        assert first is not None
        return replace(
            _seen(parsed),
            outcome=CallbackOutcome.DUPLICATE,
            redirect=first.redirect or self._error_page("processing", callback_id),
            payment_token=first.payment_token,
            duplicate_of=holder_id,
            detail=f"repeat of {callback_ref(holder_id)}",
        )

    def _rejected(
        self, callback_id: int, reason: str, parsed: GatewayReturn | None = None
    ) -> CallbackResolution:
        return replace(
            _seen(parsed),
            outcome=CallbackOutcome.REJECTED,
            redirect=self._error_page("unverified", callback_id),
            detail=reason,
        )

    # --- settlement: a return applied to its payment, however it came to belong to it ------

    def _settle(
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
        """The payment takes the return's status and facts; its lease or taint ends."""
        lease = candidate.lease
        payment = candidate.payment
        if (
            status is PaymentStatus.FAILED
            and payment.hosted
            and payment.status is PaymentStatus.PENDING
            and len(tx.payment_attempts(payment.token)) < payment.max_attempts
        ):
            status = PaymentStatus.OPEN  # the hosted page lets the customer try another card
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
            error_message=None
            if parsed.approved
            else f"{return_outcome(parsed)} (Result {parsed.result_code})",
            callback_id=callback_id,
        )
        reason = reason or f"return {callback_ref(callback_id)}"
        # A decline of an earlier attempt leaves an open payment open: the customer may
        # still try again on the hosted page.
        if not (status is PaymentStatus.FAILED and payment.status is PaymentStatus.OPEN):
            self._transition(tx, work, payment, change, reason)
        if lease.is_live:
            self._end_lease(tx, work, lease, LeaseEnd.CALLBACK, taint=False)
        else:
            tx.drop_taint(lease.id)
            if lease.end_reason is LeaseEnd.EXPIRED:
                tx.record_late_return(lease.slot_id)  # that expiry was not silent after all

    def _attribute(
        self, tx: Tx, work: Work, record: CallbackRecord, token: str, label: str
    ) -> ReviewChange:
        """Settle ``record`` onto the payment ``token`` names, whatever its lease's state, as
        an operator's decision or the gateway's record does."""
        payment = tx.get_payment(token)
        if payment is None:
            raise InvalidReview("paymentToken", "no such payment")
        parsed = self._gateway.parse_return(record.params)
        status = PaymentStatus.COMPLETED if parsed.approved else PaymentStatus.FAILED
        if not (payment.status is PaymentStatus.OPEN and status is PaymentStatus.FAILED):
            check_transition(payment.status, status)  # (that one changes nothing: _settle)
        lease = tx.get_lease(payment.lease_id) if payment.lease_id is not None else None
        if lease is None:
            raise InvalidReview("paymentToken", "the payment never held a lease")
        candidate = Candidate(lease=lease, payment=payment)
        self._settle(tx, work, candidate, status, parsed, record.id, reason=label)
        return ReviewChange(token=token, previous=payment.status, status=status)

    def _send_to_review(self, tx: Tx, work: Work, candidate: Candidate, callback_id: int) -> None:
        if candidate.payment.status is not PaymentStatus.NEEDS_REVIEW:
            change = PaymentChange(status=PaymentStatus.NEEDS_REVIEW)
            reason = f"ambiguous return {callback_ref(callback_id)}"
            self._transition(tx, work, candidate.payment, change, reason)
        if candidate.lease.is_live:
            # The return may be this customer's or not: the lease ends, its taint stays.
            self._end_lease(tx, work, candidate.lease, LeaseEnd.CALLBACK, taint=True)

    def _open_ambiguities(self, tx: Tx, path: str, amount: int) -> list[OpenAmbiguity]:
        """The earlier unattributed returns of ``amount`` on ``path`` whose candidates may still
        be candidates: their taints run out a late-callback window after the return was
        resolved, and twice the window leaves ample room."""
        return tx.open_ambiguities(path, amount, tx.now - 2 * self._policy.late_callback_window)

    def _answer(
        self, parsed: GatewayReturn, record: CallbackRecord, payment: Payment | None = None
    ) -> str:
        """Where an attributed return sends the browser: the success page is named by the
        return's receipt, never by a payment token (a replay must not learn it). A shop's
        payment goes back to the shop on approval, to its hosted page otherwise."""
        if payment is not None and payment.hosted:
            assert payment.success_url is not None
            if parsed.approved:
                return shop_redirect(payment.success_url, payment)
            return self._policy.checkout_url(payment.token)
        if parsed.approved:
            query = urlencode({"ref": record.ref, "receipt": record.receipt or ""})
            return f"{self._policy.success_url}?{query}"
        return self._error_page(return_outcome(parsed), record.id)

    def _error_page(self, reason: str, callback_id: int) -> str:
        """The error page, saying one of its own messages (``reason``: web/routes/pages.py)."""
        query = urlencode({"reason": reason, "ref": callback_ref(callback_id)})
        return f"{self._policy.error_url}?{query}"

    # --- the gateway's status query -------------------------------------------------------

    def _ask(self, pn_ref: str) -> GatewayAnswer:
        assert self._status_query is not None
        try:
            return GatewayAnswer(found=self._status_query.transaction(pn_ref))
        except StatusQueryFailed as exc:
            log.warning("status query for PNRef %s failed: %s", pn_ref, exc.message)
            return GatewayAnswer(failure=exc.message)

    def _apply_answer(
        self,
        tx: Tx,
        work: Work,
        record: CallbackRecord,
        parsed: GatewayReturn,
        answer: GatewayAnswer,
    ) -> Payment | None:
        """Give the return to the payment the gateway's record names, if it may have it (the
        payment as it was), or None: nothing changed but the note of the answer."""
        if answer.failure is not None:
            tx.note_status_query(record.id, f"the query failed: {answer.failure}", None)
            return None
        note, payment = self._attribution(tx, record, parsed, answer.found)
        # Attributed, the return's answer becomes its payment's page (a repeat gets it too).
        redirect = self._answer(parsed, record, payment) if payment else None
        tx.note_status_query(record.id, note, redirect)
        log.log(
            logging.INFO if payment else logging.WARNING, "status query, %s: %s", record.ref, note
        )
        if payment is not None:
            # As an operator's attribution would (its lease, live or tainted or long over).
            self._attribute(tx, work, record, payment.token, f"return {record.ref} (status query)")
        return payment

    def _attribution(
        self,
        tx: Tx,
        record: CallbackRecord,
        parsed: GatewayReturn,
        found: GatewayTransaction | None,
    ) -> tuple[str, Payment | None]:
        """What the gateway's record says, and the payment it gives the return to: one of the
        return's path and amount, not final, named by a record that agrees with the return
        in every fact both carry."""
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
            return f"the gateway's record names a payment already {payment.status.value}", None
        return f"the gateway's record names payment {short(payment.token)}", payment

    def _ask_again(self) -> None:
        """The sweeper's part: open ambiguous or unmatched returns are put to the gateway
        again, ``QUERY_ATTEMPTS`` times in all, and settled if they can be."""
        with self._store.read() as tx:
            waiting = tx.callbacks_to_query(QUERY_ATTEMPTS, QUERIES_PER_SWEEP)
        for callback_id in waiting:
            try:
                self._settle_by_query(callback_id)
            except Exception:
                log.exception("status query for %s failed", callback_ref(callback_id))

    def _settle_by_query(self, callback_id: int) -> None:
        # As for a fresh return: a read, the gateway asked with no transaction open, a write.
        with self._store.read() as tx:
            record = tx.get_callback(callback_id)
        if record is None or record.pn_ref is None or not _open_to_query(record):
            return
        answer = self._ask(record.pn_ref)
        with self._writing() as (tx, work):
            record = tx.get_callback(callback_id)
            slot_id = tx.slot_id(record.path) if record is not None else None
            if record is None or slot_id is None or not _open_to_query(record):
                return  # settled meanwhile
            self._expire_due(tx, work, slot_id)
            parsed = self._gateway.parse_return(record.params)
            payment = self._apply_answer(tx, work, record, parsed, answer)
            if payment is None:
                return
            tx.settle_callback(record.id, payment.token, "status query")
            self._release_from_review(tx, work, record, parsed, payment.token)

    def _release_from_review(
        self, tx: Tx, work: Work, record: CallbackRecord, parsed: GatewayReturn, token: str
    ) -> None:
        """The others an ambiguous return had sent to review, now that it is known to be
        another's, become ``expired`` (their leases ended when they went to review; their
        taints stay). One still in another open ambiguity stays in review."""
        still_open = {
            candidate
            for ambiguity in (
                self._open_ambiguities(tx, record.path, parsed.amount) if parsed.amount else []
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
                self._transition(tx, work, other, change, f"return {record.ref} was another's")


def _open_to_query(record: CallbackRecord) -> bool:
    """An ambiguous or unmatched return that nothing has settled yet."""
    return record.outcome in _QUERYABLE and record.settled_at is None


def _seen(parsed: GatewayReturn | None) -> CallbackResolution:
    """What the return itself says (if it could be read), before anything is decided."""
    received = CallbackResolution(outcome=CallbackOutcome.RECEIVED, redirect="")
    if parsed is None:
        return received
    return replace(received, pn_ref=parsed.pn_ref, amount=parsed.amount, approved=parsed.approved)


def _admitted(client_addr: str | None, sources: Sequence[IPNetwork]) -> bool:
    """Whether ``client_addr`` lies in one of ``sources`` (an unknown address never does)."""
    if not client_addr:
        return False
    try:
        address = ipaddress.ip_address(client_addr)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in sources)


def _fingerprint(parsed: GatewayReturn) -> str:
    """What makes a repeat of a return the same return (and not a forgery reusing its PNRef)."""
    significant = (
        parsed.pn_ref,
        parsed.result_code,
        str(parsed.amount),
        parsed.merchant_id or "",
        parsed.order_id or "",
        parsed.auth_code or "",
    )
    return hashlib.sha256("\x1f".join(significant).encode()).hexdigest()
