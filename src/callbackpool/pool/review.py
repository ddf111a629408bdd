"""Operators' decisions: the review queue, attributing an ambiguous return or ending a payment
in review, and taking a slot out of rotation or putting it back.

Each decision names who took it and why; a review is recorded with every status change it
made, and the transition table governs each of them.
"""

from __future__ import annotations

from collections.abc import Callable

from ..domain.errors import (
    InvalidReview,
    NotUnderReview,
    UnknownCallback,
    UnknownPayment,
    UnknownSlot,
)
from ..domain.events import PoolEvent, SlotRestored, SlotSidelined
from ..domain.model import (
    CallbackOutcome,
    PaymentStatus,
    Review,
    ReviewChange,
    ReviewDecision,
)
from ..store.tx import NewReview, PaymentChange, Tx
from .core import MAX_ID, PoolCore, log, log_fields, short
from .results import ReviewItem, ReviewQueue
from .settlement import Settlement

MAX_REASON_CHARS = 500
MAX_OPERATOR_CHARS = 100
# What the other candidates of a return may become when an operator attributes it.
REVIEW_OTHERS = (PaymentStatus.EXPIRED, PaymentStatus.FAILED, PaymentStatus.NEEDS_REVIEW)
# What a payment in review may become without a return (a return is what completes one).
REVIEW_ENDINGS = (PaymentStatus.EXPIRED, PaymentStatus.FAILED)


class Reviews:
    """What operators decide, and the queue of what waits for them."""

    def __init__(self, core: PoolCore, settlement: Settlement) -> None:
        self.core = core
        self.settlement = settlement

    def queue(self, limit: int) -> ReviewQueue:
        with self.core.store.read() as tx:
            items = []
            for record in tx.open_review_callbacks(limit):
                found = (tx.get_payment(token) for token in record.candidates)
                items.append(
                    ReviewItem(record=record, candidates=tuple(p for p in found if p is not None))
                )
            in_review = tx.payments(statuses=[PaymentStatus.NEEDS_REVIEW], limit=limit)
        named = {token for item in items for token in item.record.candidates}
        return ReviewQueue(
            returns=tuple(items), payments=tuple(p for p in in_review if p.token not in named)
        )

    def reviews(self, limit: int) -> list[Review]:
        with self.core.store.read() as tx:
            return tx.reviews(limit=limit)

    def resolve_review(
        self,
        callback_id: int,
        *,
        payment_token: str | None,
        others: PaymentStatus,
        by: str,
        reason: str,
    ) -> Review:
        by, reason = _operator(by), _reason(reason)
        if others not in REVIEW_OTHERS:
            allowed = ", ".join(s.value for s in REVIEW_OTHERS)
            raise InvalidReview("others", f"must be one of {allowed}")
        if not 0 < callback_id <= MAX_ID:
            raise UnknownCallback()
        with self.core.writing() as (tx, work):
            record = tx.get_callback(callback_id)
            if record is None:
                raise UnknownCallback()
            tx.slot_by_path(record.path)  # serialises with returns on the same slot
            if record.outcome is not CallbackOutcome.AMBIGUOUS or record.settled_at is not None:
                raise NotUnderReview(
                    f"{record.ref} is {record.outcome.value}"
                    + (f", settled by {record.settled_by}" if record.settled_by else "")
                    + ": there is nothing to decide"
                )
            if payment_token is not None and payment_token not in record.candidates:
                raise InvalidReview("paymentToken", f"is not a candidate of {record.ref}")
            label = f"review of {record.ref} by {by}"
            changes: list[ReviewChange] = []
            if payment_token is not None:
                changes.append(self.settlement.attribute(tx, work, record, payment_token, label))
            for token in record.candidates:
                if token == payment_token or others is PaymentStatus.NEEDS_REVIEW:
                    continue
                payment = tx.get_payment(token)
                if payment is None or payment.status is not PaymentStatus.NEEDS_REVIEW:
                    continue  # settled by another return meanwhile: nothing to decide
                change = PaymentChange(status=others, error_message=f"{label}: {reason}")
                self.core.transition(tx, work, payment, change, label)
                changes.append(ReviewChange(token=token, previous=payment.status, status=others))
            review = tx.insert_review(
                NewReview(
                    decision=ReviewDecision.ATTRIBUTED if payment_token else ReviewDecision.NONE,
                    callback_id=callback_id,
                    payment_token=payment_token,
                    others=others,
                    decided_by=by,
                    reason=reason,
                    changes=tuple(changes),
                )
            )
            if review is None:
                raise NotUnderReview(f"{record.ref} was decided meanwhile")
            tx.settle_callback(callback_id, payment_token, f"review {review.ref} by {by}")
        log.warning(
            "review %s: %s %s (%s; others %s) by %s: %s",
            review.ref,
            record.ref,
            f"attributed to payment {short(payment_token)}" if payment_token else "to none",
            ", ".join(f"{short(c.token)} {c.previous.value} → {c.status.value}" for c in changes)
            or "no change",
            others.value,
            by,
            reason,
            extra=log_fields(
                "review", record.path, None, payment_token, review=review.ref, by=by, reason=reason
            ),
        )
        return review

    def resolve_payment(self, token: str, *, status: PaymentStatus, by: str, reason: str) -> Review:
        by, reason = _operator(by), _reason(reason)
        if status not in REVIEW_ENDINGS:
            raise InvalidReview(
                "status",
                "must be expired or failed (a payment is completed only by a return: "
                "attribute the return to it)",
            )
        with self.core.writing() as (tx, work):
            payment = tx.get_payment(token)
            if payment is None:
                raise UnknownPayment()
            if payment.status is not PaymentStatus.NEEDS_REVIEW:
                raise NotUnderReview(f"the payment is {payment.status.value}, not in review")
            label = f"review by {by}"
            change = PaymentChange(status=status, error_message=f"{label}: {reason}")
            self.core.transition(tx, work, payment, change, label)
            review = tx.insert_review(
                NewReview(
                    decision=ReviewDecision.PAYMENT,
                    callback_id=None,
                    payment_token=token,
                    others=None,
                    decided_by=by,
                    reason=reason,
                    changes=(ReviewChange(token=token, previous=payment.status, status=status),),
                )
            )
            assert review is not None  # only a return's decision can be taken twice
        log.warning(
            "review %s: payment %s needs_review → %s by %s: %s",
            review.ref,
            short(token),
            status.value,
            by,
            reason,
            extra=log_fields("review", payment.callback_path, payment.lease_id, token, by=by),
        )
        return review

    # --- slots out of rotation -------------------------------------------------------------

    def sideline_slot(self, path: str, *, by: str, reason: str) -> bool:
        by, reason = _operator(by), _reason(reason)
        done = self._change_slot(
            path,
            lambda tx, slot_id: tx.sideline_slot(slot_id, by=by, reason=reason),
            SlotSidelined(path=path, by=by, reason=reason),
        )
        if done:
            log.warning(
                "slot %s taken out of rotation by %s: %s",
                path,
                by,
                reason,
                extra=log_fields("slot_sidelined", path, None, None, by=by, reason=reason),
            )
        return done

    def restore_slot(self, path: str, *, by: str) -> bool:
        by = _operator(by)
        done = self._change_slot(
            path, lambda tx, slot_id: tx.restore_slot(slot_id), SlotRestored(path=path, by=by)
        )
        if done:
            log.warning(
                "slot %s put back in rotation by %s",
                path,
                by,
                extra=log_fields("slot_restored", path, None, None, by=by),
            )
        return done

    def _change_slot(self, path: str, change: Callable[[Tx, int], bool], event: PoolEvent) -> bool:
        """Apply ``change`` to the slot of ``path``; announce ``event`` if it changed it."""
        with self.core.writing() as (tx, work):
            slot = tx.slot_by_path(path)
            if slot is None:
                raise UnknownSlot()
            done = change(tx, slot.id)
            if done:
                work.events.append(event)
        return done


def _operator(name: str) -> str:
    name = " ".join(str(name).split())
    if not name:
        raise InvalidReview("operator", "name who decides")
    if len(name) > MAX_OPERATOR_CHARS:
        raise InvalidReview("operator", f"must not exceed {MAX_OPERATOR_CHARS} characters")
    return name


def _reason(text: str) -> str:
    text = str(text).strip()
    if not text:
        raise InvalidReview("reason", "say why (it is kept with the decision)")
    if len(text) > MAX_REASON_CHARS:
        raise InvalidReview("reason", f"must not exceed {MAX_REASON_CHARS} characters")
    return text
