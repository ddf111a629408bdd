"""Gateway returns: stored first, then verified and resolved to a payment (DESIGN.md §6).

``handle`` commits the raw return before anything acts on it; ``resolve`` then decides, in
one write transaction that locks the return's slot, what it is: rejected (unknown path,
malformed, failed verification), a duplicate of an earlier return, or applied to the one
payment it can belong to (``settlement.py``). One the path alone cannot attribute is rolled
back and put to the gateway's status query first (``gateway_query.py``), where there is one.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import secrets
from collections.abc import Sequence
from dataclasses import replace
from typing import assert_never

from ..domain.events import CallbackResolved
from ..domain.gateway import GatewayReturn, MalformedReturn, Params
from ..domain.model import CallbackOutcome, CallbackRecord, PaymentStatus, callback_ref
from ..domain.resolution import Ambiguous, Apply, SettleAll, Unmatched, decide
from ..ports import CallbackResolution, NewCallback, Tx
from .core import PoolCore, Work, log, log_fields, short
from .gateway_query import AskGatewayFirst, GatewayAnswer, GatewayQueries
from .policy import IPNetwork
from .results import CallbackResult
from .settlement import Settlement

RECEIPT_BYTES = 16  # 128 bits: the key of a return's success page


class Callbacks:
    """Storing gateway returns and resolving them."""

    def __init__(self, core: PoolCore, settlement: Settlement, queries: GatewayQueries) -> None:
        self.core = core
        self.settlement = settlement
        self.queries = queries

    def handle(
        self, path: str, params: Params, *, method: str, client_addr: str | None
    ) -> CallbackResult:
        return self.resolve(self.record(path, params, method=method, client_addr=client_addr))

    def record(self, path: str, params: Params, *, method: str, client_addr: str | None) -> int:
        # Not waiting for the disk here is safe: the resolution's durable commit, right
        # after, makes this record durable too (see Store.transaction).
        with self.core.store.transaction(durable=False) as tx:
            return tx.insert_callback(
                NewCallback(
                    path=path,
                    method=method.upper(),
                    params=tuple(params),
                    client_addr=client_addr,
                    receipt=secrets.token_urlsafe(RECEIPT_BYTES),
                )
            )

    def resolve(self, callback_id: int, answer: GatewayAnswer | None = None) -> CallbackResult:
        try:
            with self.core.writing() as (tx, work):
                record = tx.get_callback(callback_id)
                assert record is not None, f"callback {callback_id} vanished"
                if record.outcome is not CallbackOutcome.RECEIVED:
                    resolution = None
                else:
                    resolution = self._decide(tx, work, record, answer)
                    tx.finish_callback(callback_id, resolution)
                    work.events.append(
                        CallbackResolved(
                            callback_id=callback_id, path=record.path, outcome=resolution.outcome
                        )
                    )
        except AskGatewayFirst as ask:
            # Rolled back: the gateway is asked with no transaction open, then the return is
            # resolved anew, knowing its answer (the pool may have moved on meanwhile).
            return self.resolve(callback_id, self.queries.ask(ask.pn_ref))
        if resolution is None:  # resolved meanwhile by another worker
            return CallbackResult(
                callback_id=callback_id,
                outcome=record.outcome,
                redirect=record.redirect
                or self.settlement.error_page("Processing error", callback_id),
                payment_token=record.payment_token,
                detail=record.detail,
            )
        log_level = (
            logging.INFO if resolution.outcome is CallbackOutcome.APPLIED else logging.WARNING
        )
        log.log(
            log_level,
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
        return CallbackResult(
            callback_id=callback_id,
            outcome=resolution.outcome,
            redirect=resolution.redirect,
            payment_token=resolution.payment_token,
            detail=resolution.detail,
        )

    def _decide(
        self, tx: Tx, work: Work, record: CallbackRecord, answer: GatewayAnswer | None
    ) -> CallbackResolution:
        callback_id, path, params = record.id, record.path, record.params
        slot = tx.slot_by_path(path)
        if slot is None:
            return self._rejected(callback_id, "unknown callback path")
        try:
            parsed = self.core.gateway.parse_return(params)
        except MalformedReturn as exc:
            return self._rejected(callback_id, exc.message)
        # Every check runs before the PNRef is claimed, repeats included: a forgery cannot
        # block the genuine return, and a replay from outside the allowlist is rejected.
        refusal = self._verify(params, parsed, record.client_addr)
        if refusal is not None:
            return self._rejected(callback_id, refusal, parsed)
        fingerprint = _fingerprint(parsed)
        holder = tx.claim_pn_ref(parsed.pn_ref, callback_id, fingerprint)
        if holder is not None:
            return self._duplicate(tx, callback_id, parsed, fingerprint, holder)

        # A verified return on the path: the path works (slot health).
        tx.record_slot_return(slot.id, approved=parsed.approved)
        # A lease past its expiry has ended: its payment is a taint now, not the live lease.
        self.core.expire_due(tx, work, slot.id)
        candidates = tx.candidates(slot.id)
        # Earlier unattributed returns matter only where several payments compete.
        open_ambiguities = (
            self.settlement.open_ambiguities(tx, path, parsed.amount)
            if parsed.approved and parsed.amount is not None and len(candidates) > 1
            else []
        )
        decision = decide(
            approved=parsed.approved,
            amount=parsed.amount,
            candidates=candidates,
            open_ambiguities=open_ambiguities,
        )
        seen = _seen(parsed)
        applied = replace(
            seen,
            outcome=CallbackOutcome.APPLIED,
            redirect=self.settlement.answer(parsed, record),
        )
        if isinstance(decision, Ambiguous | Unmatched) and self.core.status_query is not None:
            if answer is None:
                raise AskGatewayFirst(parsed.pn_ref)
            payment = self.queries.apply(tx, work, record, parsed, answer)
            if payment is not None:
                return replace(
                    applied,
                    payment_token=payment.token,
                    lease_id=payment.lease_id,
                    detail="attributed by the gateway's status query",
                )
        match decision:
            case Apply(candidate=candidate, status=status):
                self.settlement.settle(tx, work, candidate, status, parsed, callback_id)
                return replace(
                    applied,
                    payment_token=candidate.payment.token,
                    lease_id=candidate.lease.id,
                )
            case SettleAll(assignments=assignments):
                own_token = ""
                own_lease: int | None = None
                for earlier_id, candidate in assignments:
                    if earlier_id is None:
                        self.settlement.settle(
                            tx, work, candidate, PaymentStatus.COMPLETED, parsed, callback_id
                        )
                        own_token = candidate.payment.token
                        own_lease = candidate.lease.id
                    else:
                        earlier = tx.get_callback(earlier_id)
                        assert earlier is not None
                        earlier_return = self.core.gateway.parse_return(earlier.params)
                        self.settlement.settle(
                            tx, work, candidate, PaymentStatus.COMPLETED, earlier_return, earlier_id
                        )
                        tx.settle_callback(
                            earlier_id, candidate.payment.token, callback_ref(callback_id)
                        )
                return replace(
                    applied,
                    payment_token=own_token,
                    detail=f"settled {len(assignments)} same-amount payments on {path}",
                    candidates=tuple(c.payment.token for _, c in assignments),
                    lease_id=own_lease,
                )
            case Ambiguous(candidates=matching, review=review):
                if review:
                    for candidate in matching:
                        self.settlement.send_to_review(tx, work, candidate, callback_id)
                    message = "Payment received; we are confirming it"
                else:
                    message = "Payment declined"
                return replace(
                    seen,
                    outcome=CallbackOutcome.AMBIGUOUS,
                    redirect=self.settlement.error_page(message, callback_id),
                    detail=f"{len(matching)} payments could own this return",
                    candidates=tuple(c.payment.token for c in matching),
                )
            case Unmatched():
                return replace(
                    seen,
                    outcome=CallbackOutcome.UNMATCHED,
                    redirect=self.settlement.error_page("Payment not found", callback_id),
                    detail="no payment on this path has this amount",
                )
            case _:
                assert_never(decision)

    def _verify(self, params: Params, parsed: GatewayReturn, client_addr: str | None) -> str | None:
        """Why the return cannot be trusted (DESIGN.md §6, step 4), or None."""
        if parsed.approved and parsed.amount is None:
            # An approved sale always names what was charged: without it the amount check,
            # the one thing a forger must guess, would be skipped.
            return "an approved return must carry its Amount"
        refusal = self.core.gateway.verify(params, parsed)
        if refusal is not None:
            return refusal
        sources = self.core.policy.return_networks
        if sources and not _admitted(client_addr, sources):
            return f"source address {client_addr or '(unknown)'} is not in the allowlist"
        return None

    def _duplicate(
        self,
        tx: Tx,
        callback_id: int,
        parsed: GatewayReturn,
        fingerprint: str,
        holder: tuple[int, str],
    ) -> CallbackResolution:
        holder_id, holder_fingerprint = holder
        if holder_fingerprint != fingerprint:
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
            redirect=first.redirect or self.settlement.error_page("Processing error", callback_id),
            payment_token=first.payment_token,
            duplicate_of=holder_id,
            detail=f"repeat of {callback_ref(holder_id)}",
        )

    def _rejected(
        self, callback_id: int, reason: str, parsed: GatewayReturn | None = None
    ) -> CallbackResolution:
        seen = (
            _seen(parsed)
            if parsed is not None
            else CallbackResolution(outcome=CallbackOutcome.RECEIVED, redirect="")
        )
        return replace(
            seen,
            outcome=CallbackOutcome.REJECTED,
            redirect=self.settlement.error_page("Payment could not be verified", callback_id),
            detail=reason,
        )


def _seen(parsed: GatewayReturn) -> CallbackResolution:
    """What the return itself says, before anything is decided about it."""
    return CallbackResolution(
        outcome=CallbackOutcome.RECEIVED,
        redirect="",
        pn_ref=parsed.pn_ref,
        amount=parsed.amount,
        approved=parsed.approved,
    )


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
