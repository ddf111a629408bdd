"""What every concern of the pool shares: its state, the write transaction whose hooks and
observers run once it has committed, and the steps taken inside one: a status change, a
lease ended, the leases that ran out and slot health."""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from ..domain.errors import PaymentChanged
from ..domain.events import LeaseEnded, PoolEvent, SlotSidelined
from ..domain.gateway import Gateway, StatusQuery
from ..domain.model import Lease, LeaseEnd, Payment, PaymentStatus, StatusChange
from ..domain.transitions import check_transition
from ..store.port import Store
from ..store.tx import PaymentChange, Tx
from .documents import attempt_results, payment_document
from .policy import PoolPolicy

log = logging.getLogger("callbackpool")

StatusHook = Callable[[StatusChange], None]
Observer = Callable[[PoolEvent], None]

MAX_ID = 2**63 - 1  # the largest id a store holds: a larger one names nothing
SLOT_HEALTH = "slot health"  # who takes a slot out of rotation when the rule does
# What a payment token may look like (``secrets.token_urlsafe``), with room to spare.
_TOKEN_SHAPE = re.compile(r"[A-Za-z0-9_-]{1,128}")

# The statuses a change to is announced in the outbox, and the events' types (changes to
# ``pending`` or back to ``open`` are not announced).
EVENT_TYPES = {
    PaymentStatus.COMPLETED: "payment.completed",
    PaymentStatus.FAILED: "payment.failed",
    PaymentStatus.CANCELLED: "payment.cancelled",
    PaymentStatus.EXPIRED: "payment.expired",
    PaymentStatus.NEEDS_REVIEW: "payment.needs_review",
}
EVENT_ID_BYTES = 12


@dataclass(kw_only=True)
class Work:
    """What a transaction did that must be announced once it has committed."""

    changes: list[StatusChange] = field(default_factory=list)
    events: list[PoolEvent] = field(default_factory=list)
    # The outbox's events of the transaction not yet written: each payment's latest change
    # announced, by token (its type and reason), written once the payment's snapshot can be
    # taken.
    unwritten: dict[str, tuple[str, str]] = field(default_factory=dict)


class PoolCore:
    """The pool's state, and the steps its concerns share."""

    def __init__(
        self,
        store: Store,
        gateway: Gateway,
        policy: PoolPolicy,
        *,
        on_status_change: StatusHook | None = None,
        status_query: StatusQuery | None = None,
    ) -> None:
        self._store = store
        self._gateway = gateway
        self._policy = policy
        self._status_query = status_query
        self._hooks: list[StatusHook] = [on_status_change] if on_status_change else []
        self._observers: list[Observer] = []

    @property
    def store(self) -> Store:
        return self._store

    @property
    def gateway(self) -> Gateway:
        return self._gateway

    @property
    def policy(self) -> PoolPolicy:
        return self._policy

    def add_status_hook(self, hook: StatusHook) -> None:
        """Call ``hook`` after every committed payment status change (exceptions are logged)."""
        self._hooks.append(hook)

    def add_observer(self, observer: Observer) -> None:
        """Call ``observer`` with every event once it has committed (exceptions are logged)."""
        self._observers.append(observer)

    @contextmanager
    def _writing(self) -> Iterator[tuple[Tx, Work]]:
        """A write transaction; status hooks and observers run once it has committed."""
        work = Work()
        with self._store.transaction() as tx:
            yield tx, work
            for token in list(work.unwritten):
                self._write_event(tx, work, token)
        for change in work.changes:
            for hook in self._hooks:
                try:
                    hook(change)
                except Exception:
                    log.exception("status hook failed for payment %s", short(change.token))
        self._emit(work.events)

    def _emit(self, events: Sequence[PoolEvent]) -> None:
        """Tell the observers (the caller's writes have committed)."""
        for event in events:
            for observer in self._observers:
                try:
                    observer(event)
                except Exception:
                    log.exception("observer failed on %s", type(event).__name__)

    def _transition(
        self, tx: Tx, work: Work, payment: Payment, change: PaymentChange, reason: str
    ) -> None:
        check_transition(payment.status, change.status)
        if payment.token in work.unwritten:
            # This transaction changed the payment already: that change's event shows the
            # payment as it stands before this one, and comes first.
            self._write_event(tx, work, payment.token)
        if not tx.update_payment(payment.token, payment.status, change):
            # Decided on a status another transaction has changed since: undo it all. (The
            # stores lock a payment's slot before acting on it, so this is a last guard.)
            raise PaymentChanged()
        event_type = EVENT_TYPES.get(change.status)
        if event_type is not None:
            # The outbox, in the change's own transaction: the event commits with it or not
            # at all. It is written when the transaction's work on the payment is done (the
            # return's attempt and the lease end after the change), with the payment then.
            work.unwritten[payment.token] = (event_type, reason)
        work.changes.append(
            StatusChange(
                token=payment.token,
                previous=payment.status,
                status=change.status,
                at=tx.now,
                late=bool(change.late),
                callback_id=change.callback_id,
                reason=reason,
            )
        )
        log.info(
            "payment %s: %s → %s (%s; lease %s on %s)",
            short(payment.token),
            payment.status.value,
            change.status.value,
            reason,
            payment.lease_id if payment.lease_id is not None else "-",
            payment.callback_path or "-",
            extra=log_fields(
                "transition",
                payment.callback_path,
                payment.lease_id,
                payment.token,
                previous=payment.status.value,
                status=change.status.value,
                reason=reason,
            ),
        )

    def _write_event(self, tx: Tx, work: Work, token: str) -> None:
        """The payment's announced change into the outbox, with the payment as the shop
        reads it now; its sequence is the payment's last one's plus one."""
        event_type, reason = work.unwritten.pop(token)
        payment = tx.get_payment(token)
        assert payment is not None
        attempts = attempt_results(self._gateway, tx.payment_attempts(token))
        tx.insert_event(
            event_id=new_event_id(),
            type=event_type,
            payment_id=payment.id,
            reason=reason,
            data=payment_document(payment, attempts),
        )

    def _expire_payment(
        self, tx: Tx, work: Work, token: str, reason: str, *, error_message: str | None = None
    ) -> None:
        """The payment of a lease that has ended becomes ``expired``, if it was pending."""
        payment = tx.get_payment(token)
        if payment is not None and payment.status is PaymentStatus.PENDING:
            change = PaymentChange(status=PaymentStatus.EXPIRED, error_message=error_message)
            self._transition(tx, work, payment, change, reason)

    def _expire_due(self, tx: Tx, work: Work, slot_id: int | None = None) -> int:
        """End leases whose heartbeat lapsed, then those past their expiry (only the slot's,
        if given); their pending payments become ``expired``. How many ended."""
        window = self._policy.late_callback_window
        abandoned = (
            tx.abandon_silent_leases(window, slot_id)
            if self._policy.heartbeat_timeout > timedelta(0)
            else []
        )
        stopped = "the checkout page stopped polling"
        for lease in abandoned:
            _lease_ended(work, lease, f"released: {stopped}", "abandoned")
            self._expire_payment(
                tx, work, lease.token, "checkout page stopped polling", error_message=stopped
            )
        ended = tx.expire_due_leases(window, slot_id)
        for lease in ended:
            _lease_ended(work, lease, "expired", "expired")
            self._expire_payment(tx, work, lease.token, "lease expired")
            self._check_slot_health(tx, work, lease)
        return len(abandoned) + len(ended)

    def _expire_open(self, tx: Tx, work: Work) -> int:
        """Open payments nobody paid by their ``expires_at`` become ``expired``."""
        due = tx.due_open_payments()
        for token in due:
            payment = tx.get_payment(token)
            if payment is not None and payment.status is PaymentStatus.OPEN:
                change = PaymentChange(status=PaymentStatus.EXPIRED)
                self._transition(tx, work, payment, change, "nobody paid in time")
        return len(due)

    def _end_lease(
        self, tx: Tx, work: Work, lease: Lease, reason: LeaseEnd, *, taint: bool
    ) -> None:
        taint_until = tx.now + self._policy.late_callback_window if taint else None
        ended = tx.end_lease(lease.id, reason, taint_until)
        if ended is not None:
            tainted = " (tainted)" if taint else ""
            _lease_ended(work, ended, f"ended: {reason.value}{tainted}", reason.value)

    def _check_slot_health(self, tx: Tx, work: Work, lease: Lease) -> None:
        """The slot-health rule, after one of the slot's leases expired with no return."""
        streak = tx.record_slot_expiry(lease.slot_id)
        limit = self._policy.slot_health_expiries_to_sideline
        if limit <= 0 or streak < limit:
            return
        views = tx.slot_views()
        this = next((v for v in views if v.id == lease.slot_id), None)
        if this is None or not this.in_rotation:
            return
        others = [v for v in views if v.id != lease.slot_id]
        last_here = this.health.last_return_at
        # Returns must be arriving on other paths (a gateway that sends none at all is an
        # outage, not a broken path), and the pool must keep a slot to lease.
        returns_elsewhere = any(
            v.health.last_return_at is not None
            and (last_here is None or v.health.last_return_at > last_here)
            for v in others
        )
        if not returns_elsewhere or not any(v.in_rotation for v in others):
            return
        reason = f"{streak} leases in a row expired without a return on this path"
        if tx.sideline_slot(lease.slot_id, by=SLOT_HEALTH, reason=reason):
            work.events.append(SlotSidelined(path=lease.path, by=SLOT_HEALTH, reason=reason))
            log.warning(
                "slot %s taken out of rotation: %s",
                lease.path,
                reason,
                extra=log_fields(
                    "slot_sidelined", lease.path, lease.id, lease.token, by=SLOT_HEALTH
                ),
            )


def _lease_ended(work: Work, lease: Lease, what: str, reason: str) -> None:
    work.events.append(LeaseEnded(lease=lease))
    log.info(
        "lease %d on %s %s (payment %s)",
        lease.id,
        lease.path,
        what,
        short(lease.token),
        extra=log_fields("lease_ended", lease.path, lease.id, lease.token, reason=reason),
    )


def new_event_id() -> str:
    return f"evt_{secrets.token_hex(EVENT_ID_BYTES)}"


def lookup_key(token: str) -> str:
    """The token to look a payment up by: one no token could be is looked up as ``""``, so
    that unknown and malformed tokens take the same work, and no store sees a NUL or a
    megabyte."""
    return token if _TOKEN_SHAPE.fullmatch(token) else ""


def short(token: str | None) -> str:
    """Enough of a token to follow it through the logs, not enough to use it."""
    return f"{token[:8]}…" if token else "-"


def log_fields(
    event: str, slot: str | None, lease: int | None, token: str | None, **more: Any
) -> dict[str, Any]:
    """The structured fields of a log line (``extra``) that ``--log-format json`` prints;
    the token shortened as in the message."""
    token = short(token) if token else None
    return {"fields": {"event": event, "slot": slot, "lease": lease, "token": token, **more}}
