"""Operators' side of the pool: the sweep and manual release, the reports (each one read
transaction: what it shows stood together), and decisions on returns in review and on slots
out of rotation, each naming who took it and why (docs/design.md#the-sweeper, #review)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from ..analytics import WINDOWS
from ..domain.errors import (
    InvalidReview,
    NothingToRelease,
    NotUnderReview,
    UnknownCallback,
    UnknownPayment,
    UnknownSlot,
)
from ..domain.events import SlotRestored, SlotSidelined, SweepRan
from ..domain.model import (
    CallbackOutcome,
    CallbackRecord,
    Lease,
    LeaseEnd,
    NewReview,
    Payment,
    PaymentStatus,
    Review,
    ReviewChange,
    ReviewDecision,
    callback_ref,
)
from ..store.tx import PaymentChange, SlotSync, Tx, UsageRow
from .core import MAX_ID, Work, log, log_fields, short
from .leasing import drain_reserve
from .results import (
    CapacityReport,
    PoolHistory,
    PoolStatus,
    ReserveStatus,
    ReviewItem,
    ReviewQueue,
    SweepReport,
)
from .returns import Returns

UNRESOLVED_GRACE = timedelta(seconds=30)
# How long admission counts are kept: the capacity window reads the latest of them, and the
# dashboard's turn-away chart reads their refusals over its longest window.
ADMISSIONS_KEPT = max(WINDOWS.values())
MAX_REASON_CHARS = 500
MAX_OPERATOR_CHARS = 100
# What the other candidates of a return may become when an operator attributes it.
REVIEW_OTHERS = (PaymentStatus.EXPIRED, PaymentStatus.FAILED, PaymentStatus.NEEDS_REVIEW)
# What a payment in review may become without a return (a return is what completes one).
REVIEW_ENDINGS = (PaymentStatus.EXPIRED, PaymentStatus.FAILED)


class Operations(Returns):
    """Housekeeping, reports and operators' decisions."""

    def sync_slots(self) -> SlotSync:
        """Load the configured paths into the pool, deactivating removed ones."""
        with self._store.transaction() as tx:
            sync = tx.sync_slots(self._policy.callback_paths, self._policy.reserve_paths)
        for path in sync.deactivated:
            log.warning("slot %s deactivated: it is no longer in the configuration", path)
        return sync

    # --- housekeeping ----------------------------------------------------------------------

    def expire_due(self) -> int:
        """End leases past their expiry; their payments become ``expired``."""
        with self._writing() as (tx, work):
            return self._expire_due(tx, work)

    def sweep(self) -> SweepReport:
        """The cleanup job (docs/design.md#the-sweeper); safe on several instances at once."""
        policy = self._policy
        try:
            with self._writing() as (tx, work):
                expired = self._expire_due(tx, work)
                self._expire_open(tx, work)
                dropped = tx.drop_stale_taints()
                tickets = tx.expire_stale_tickets()
                reserve = drain_reserve(policy, tx)
                tx.drop_admissions_before(tx.now - max(ADMISSIONS_KEPT, policy.capacity_window))
                tx.drop_expired_sign_outs()
                tx.drop_events_before(tx.now - policy.event_retention)
                leftovers = tx.unresolved_callbacks(tx.now - UNRESOLVED_GRACE)
        except Exception:
            self._emit([SweepRan(failed=True)])
            raise
        resolved = 0
        for callback_id in leftovers:
            try:
                self._resolve(callback_id)
            except Exception:
                # It stays ``received`` for the next sweep, and must not hold back the others.
                log.exception("callback %s could not be resolved", callback_ref(callback_id))
            else:
                resolved += 1
        if self._status_query is not None:
            self._ask_again()
        self._emit([SweepRan(failed=False, expired=expired)])
        return SweepReport(
            expired=expired,
            taints_dropped=dropped,
            callbacks_resolved=resolved,
            tickets_expired=tickets,
            reserve=reserve,
        )

    # --- the dashboard's sessions ----------------------------------------------------------

    def sign_out_session(self, session_id: str, expires_at: datetime) -> None:
        """Revoke a dashboard session (its operator signed out) until it would expire, for
        every instance on this database."""
        with self._store.transaction() as tx:
            tx.sign_out_session(session_id, expires_at)

    def session_signed_out(self, session_id: str) -> bool:
        with self._store.read() as tx:
            return tx.session_signed_out(session_id)

    def release(self, *, path: str | None = None, token: str | None = None) -> Lease:
        """End a live lease by hand (an operator's decision). It leaves a taint; its
        payment becomes ``expired``. Raises NothingToRelease."""
        if (path is None) == (token is None):
            raise ValueError("name either a path or a token")
        with self._writing() as (tx, work):
            lease = (
                tx.live_lease_on_path(path)
                if path is not None
                else tx.live_lease_of_payment(token or "")
            )
            if lease is not None and not self._expire_due(tx, work, lease.slot_id):
                self._release_by_operator(tx, work, lease)
            # A lease already past its expiry has just been ended as expired instead.
        if lease is None:
            raise NothingToRelease()
        return lease

    def release_all(self) -> list[Lease]:
        """End every live lease (the guide's manual cleanup), each leaving a taint."""
        with self._writing() as (tx, work):
            # The leases (and their slots, all at once) before the expiry: taking slots one by
            # one after it held some could deadlock two of these.
            leases = tx.live_leases()
            self._expire_due(tx, work)
            leases = [lease for lease in leases if lease.expires_at > tx.now]  # not expired
            for lease in leases:
                self._release_by_operator(tx, work, lease)
        return leases

    def _release_by_operator(self, tx: Tx, work: Work, lease: Lease) -> None:
        self._end_lease(tx, work, lease, LeaseEnd.ADMIN, taint=True)
        released = "released by an operator"
        self._expire_payment(tx, work, lease.token, released, error_message=released)

    # --- reports ---------------------------------------------------------------------------

    def status(self) -> PoolStatus:
        """The slots, the waiting room, the reserve and the capacity window, at one moment."""
        policy = self._policy
        with self._store.read() as tx:
            slots = tuple(tx.slot_views())
            since = tx.now - policy.capacity_window
            return PoolStatus(
                at=tx.now,
                slots=slots,
                waiting=tx.waiting_ahead(0, None),
                reserve=ReserveStatus(
                    paths=policy.reserve_paths,
                    in_rotation=sum(1 for s in slots if s.reserve and s.in_rotation),
                    draining=sum(1 for s in slots if s.reserve and s.standby and s.lease),
                    events=tuple(tx.reserve_events(limit=10)),
                ),
                capacity=CapacityReport(
                    window=policy.capacity_window,
                    target=policy.capacity_target,
                    slots=sum(1 for s in slots if s.in_rotation),
                    counts=tx.admissions_since(since),
                    holding=tx.holding_times_since(since),
                ),
            )

    def stuck_leases(self) -> list[Lease]:
        """Live leases past their expiry that no sweep has ended yet."""
        with self._store.read() as tx:
            return [lease for lease in tx.live_leases() if lease.expires_at <= tx.now]

    def orphaned_payments(self, older_than: timedelta | None = None) -> list[Payment]:
        """Payments still pending long after they should have ended (default: three lock
        timeouts): a sign that nothing is sweeping."""
        age = older_than if older_than is not None else 3 * self._policy.lock_timeout
        with self._store.read() as tx:
            return tx.payments(statuses=[PaymentStatus.PENDING], created_before=tx.now - age)

    def usage(self) -> list[UsageRow]:
        with self._store.read() as tx:
            return tx.usage()

    def has_path(self, path: str) -> bool:
        """Whether ``path`` is (or was) one of the pool's callback paths."""
        with self._store.read() as tx:
            return tx.slot_id(path) is not None

    def slot_path(self, name: str) -> str:
        """A slot's full path from its full path or its last segment (``handler-3``).
        Raises UnknownSlot (naming the problem)."""
        with self._store.read() as tx:
            paths = [slot.path for slot in tx.slot_views()]
        matches = [
            p
            for p in paths
            if p == name or (not name.startswith("/") and p.rstrip("/").rsplit("/", 1)[-1] == name)
        ]
        if len(matches) == 1:
            return matches[0]
        if not matches:
            raise UnknownSlot(f"no callback path {name!r} in the pool")
        raise UnknownSlot(f"{name!r} names several paths ({', '.join(matches)}): give it in full")

    def payment_counts(self) -> dict[PaymentStatus, int]:
        """Payments by status, every status present (0 where none)."""
        with self._store.read() as tx:
            counts = tx.payment_counts()
        return {status: counts.get(status, 0) for status in PaymentStatus}

    def callback_counts(self) -> dict[CallbackOutcome, int]:
        """Stored returns by outcome, every outcome present (0 where none)."""
        with self._store.read() as tx:
            counts = tx.callback_counts()
        return {outcome: counts.get(outcome, 0) for outcome in CallbackOutcome}

    def callbacks(
        self,
        *,
        outcomes: Sequence[CallbackOutcome] = (),
        limit: int = 50,
        before_id: int | None = None,
    ) -> list[CallbackRecord]:
        """Stored returns, newest first; page on with a page's smallest id as ``before_id``."""
        if before_id is not None:
            before_id = min(before_id, MAX_ID)
        with self._store.read() as tx:
            return tx.callbacks(outcomes=outcomes, limit=limit, before_id=before_id)

    def get_callback(self, callback_id: int) -> CallbackRecord:
        """A stored return. Raises UnknownCallback."""
        with self._store.read() as tx:
            record = tx.get_callback(callback_id) if 0 < callback_id <= MAX_ID else None
        if record is None:
            raise UnknownCallback()
        return record

    def history(self, window: timedelta) -> PoolHistory:
        """The leases that held a slot in the last ``window``, and turn-aways per minute."""
        with self._store.read() as tx:
            since = tx.now - window
            return PoolHistory(
                now=tx.now,
                spans=tuple(tx.lease_spans(since)),
                turn_aways=tuple(tx.turn_aways_since(since)),
            )

    def now(self) -> datetime:
        """The time the pool decides by (the store's clock)."""
        with self._store.read() as tx:
            return tx.now

    # --- review ----------------------------------------------------------------------------

    def review_queue(self, limit: int = 100) -> ReviewQueue:
        """What waits for an operator: approved returns that could belong to several
        payments, with their candidates, and payments in review that no open return names."""
        with self._store.read() as tx:
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

    def reviews(self, limit: int = 100) -> list[Review]:
        """Operators' decisions, newest first."""
        with self._store.read() as tx:
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
        """An operator's decision on an ambiguous return (docs/design.md#review): it belongs
        to ``payment_token``, one of its candidates, or to none (None); every other candidate
        still in review becomes ``others`` (``needs_review`` leaves it for another return).

        Raises UnknownCallback, NotUnderReview (no longer ambiguous, or decided already),
        InvalidReview or IllegalTransition (a candidate has moved on meanwhile)."""
        by, reason = _operator(by), _reason(reason)
        if others not in REVIEW_OTHERS:
            allowed = ", ".join(s.value for s in REVIEW_OTHERS)
            raise InvalidReview("others", f"must be one of {allowed}")
        if not 0 < callback_id <= MAX_ID:
            raise UnknownCallback()
        with self._writing() as (tx, work):
            record = tx.get_callback(callback_id)
            if record is None:
                raise UnknownCallback()
            tx.slot_id(record.path)  # serialises with returns on the same slot
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
                changes.append(self._attribute(tx, work, record, payment_token, label))
            for token in record.candidates:
                if token == payment_token or others is PaymentStatus.NEEDS_REVIEW:
                    continue
                payment = tx.get_payment(token)
                if payment is None or payment.status is not PaymentStatus.NEEDS_REVIEW:
                    continue  # settled by another return meanwhile: nothing to decide
                change = PaymentChange(status=others, error_message=f"{label}: {reason}")
                self._transition(tx, work, payment, change, label)
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
        """End a payment in review without a return: ``expired`` (the customer did not
        pay) or ``failed``. Only a return completes a payment: attribute one instead.
        Raises UnknownPayment, NotUnderReview, InvalidReview or IllegalTransition."""
        by, reason = _operator(by), _reason(reason)
        if status not in REVIEW_ENDINGS:
            raise InvalidReview(
                "status",
                "must be expired or failed (a payment is completed only by a return: "
                "attribute the return to it)",
            )
        with self._writing() as (tx, work):
            payment = tx.get_payment(token)
            if payment is None:
                raise UnknownPayment()
            if payment.status is not PaymentStatus.NEEDS_REVIEW:
                raise NotUnderReview(f"the payment is {payment.status.value}, not in review")
            label = f"review by {by}"
            change = PaymentChange(status=status, error_message=f"{label}: {reason}")
            self._transition(tx, work, payment, change, label)
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
        """Take a slot out of rotation by hand: it is leased no more until restored; its
        live lease and taints still take their returns. False if it was out already.
        Raises UnknownSlot."""
        by, reason = _operator(by), _reason(reason)
        with self._writing() as (tx, work):
            done = tx.sideline_slot(_slot_id(tx, path), by=by, reason=reason)
            if done:
                work.events.append(SlotSidelined(path=path, by=by, reason=reason))
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
        """Put a slot back in rotation (with a fresh expiry streak). False if it was in.
        Raises UnknownSlot."""
        by = _operator(by)
        with self._writing() as (tx, work):
            done = tx.restore_slot(_slot_id(tx, path))
            if done:
                work.events.append(SlotRestored(path=path, by=by))
        if done:
            log.warning(
                "slot %s put back in rotation by %s",
                path,
                by,
                extra=log_fields("slot_restored", path, None, None, by=by),
            )
        return done


def _slot_id(tx: Tx, path: str) -> int:
    slot_id = tx.slot_id(path)
    if slot_id is None:
        raise UnknownSlot()
    return slot_id


def _operator(name: str) -> str:
    name = " ".join(str(name).split())
    if not name:
        raise InvalidReview("operator", "name who decides")
    if len(name) > MAX_OPERATOR_CHARS:
        raise InvalidReview("operator", f"must not exceed {MAX_OPERATOR_CHARS} characters")
    if "\x00" in name:  # PostgreSQL's text refuses NUL
        raise InvalidReview("operator", "must not contain a NUL character")
    return name


def _reason(text: str) -> str:
    text = str(text).strip()
    if not text:
        raise InvalidReview("reason", "say why (it is kept with the decision)")
    if len(text) > MAX_REASON_CHARS:
        raise InvalidReview("reason", f"must not exceed {MAX_REASON_CHARS} characters")
    if "\x00" in text:
        raise InvalidReview("reason", "must not contain a NUL character")
    return text
