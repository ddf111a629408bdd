"""``CallbackPool``: leasing callback paths to payments and resolving gateway returns."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import re
import secrets
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Literal, assert_never, overload
from urllib.parse import urlencode

from ..domain.errors import (
    InvalidPayment,
    InvalidReview,
    NothingToRelease,
    NotUnderReview,
    PaymentChanged,
    PaymentNotPending,
    PoolExhausted,
    TicketEnded,
    TooManyLeases,
    UnknownCallback,
    UnknownPayment,
    UnknownSlot,
    UnknownTicket,
)
from ..domain.events import (
    CallbackResolved,
    CreateRefused,
    LeaseEnded,
    LeaseStarted,
    PoolEvent,
    SlotRestored,
    SlotSidelined,
    SweepRan,
)
from ..domain.gateway import (
    Gateway,
    GatewayReturn,
    GatewayTransaction,
    MalformedReturn,
    Params,
    StatusQuery,
    StatusQueryFailed,
)
from ..domain.model import (
    Admission,
    CallbackOutcome,
    CallbackRecord,
    Candidate,
    Lease,
    LeaseEnd,
    LineItem,
    Payment,
    PaymentStatus,
    ReserveAction,
    ReserveEvent,
    Review,
    ReviewChange,
    ReviewDecision,
    StatusChange,
    Ticket,
    TicketStatus,
    callback_id_of,
    callback_ref,
    customer_key,
)
from ..domain.money import is_known_currency
from ..domain.resolution import Ambiguous, Apply, SettleAll, Unmatched, decide
from ..domain.transitions import check_ticket_transition, check_transition, is_late
from ..ports import (
    CallbackResolution,
    NewCallback,
    NewReview,
    NewTicket,
    PaymentChange,
    SlotSync,
    Store,
    Tx,
    UsageRow,
)
from .policy import IPNetwork, PoolPolicy
from .results import (
    CallbackResult,
    CapacityReport,
    Checkout,
    FormConfig,
    PoolHistory,
    PoolStatus,
    ReserveStatus,
    ReviewItem,
    ReviewQueue,
    SweepReport,
    Waiting,
)

log = logging.getLogger("callbackpool")

StatusHook = Callable[[StatusChange], None]
Observer = Callable[[PoolEvent], None]

TOKEN_BYTES = 24  # 192 bits from the operating system's CSPRNG
RECEIPT_BYTES = 16  # 128 bits: the key of a return's success page
MAX_QUANTITY = 10_000
# The largest amount any payment may have, configured maximum or not: the largest integer a
# JSON client in JavaScript holds exactly (and far inside what every store's integers hold).
AMOUNT_CEILING = 2**53 - 1
MAX_CUSTOMER_BYTES = 16_384
UNRESOLVED_GRACE = timedelta(seconds=30)
MAX_ID = 2**63 - 1  # the largest id a store holds: a larger one names nothing
# The gateway's status query: returns it may settle, how often one is asked in all (the
# first time and by the sweeper), and how many the sweeper asks about each time.
_QUERYABLE = (CallbackOutcome.AMBIGUOUS, CallbackOutcome.UNMATCHED)
QUERY_ATTEMPTS = 3
QUERIES_PER_SWEEP = 20
# What a payment token may look like (``secrets.token_urlsafe``), with room to spare.
_TOKEN_SHAPE = re.compile(r"[A-Za-z0-9_-]{1,128}")
# How long admission counts are kept (the capacity window reads the latest of them).
ADMISSIONS_KEPT = timedelta(hours=24)
MAX_REASON_CHARS = 500
MAX_OPERATOR_CHARS = 100
SLOT_HEALTH = "slot health"  # who takes a slot out of rotation when the rule does
# What the other candidates of a return may become when an operator attributes it.
REVIEW_OTHERS = (PaymentStatus.EXPIRED, PaymentStatus.FAILED, PaymentStatus.NEEDS_REVIEW)
# What a payment in review may become without a return (a return is what completes one).
REVIEW_ENDINGS = (PaymentStatus.EXPIRED, PaymentStatus.FAILED)


@dataclass(kw_only=True)
class _Work:
    """What a transaction did that must be announced once it has committed."""

    changes: list[StatusChange] = field(default_factory=list)
    events: list[PoolEvent] = field(default_factory=list)


@dataclass(frozen=True, kw_only=True)
class _GatewayAnswer:
    """What the status query said: the gateway's record (None: it has none), or why it
    could not be asked."""

    found: GatewayTransaction | None = None
    failure: str | None = None


class _AskGatewayFirst(Exception):
    """Rolls a resolution back, so that the gateway's status query is asked first."""

    def __init__(self, pn_ref: str) -> None:
        super().__init__(pn_ref)
        self.pn_ref = pn_ref


class CallbackPool:
    """Leases callback paths to payments and turns gateway returns into payment outcomes.

    ``on_status_change`` is called after every committed payment status change (a final
    status, review, cancellation or expiry); an exception it raises is logged, not raised.
    ``status_query``, for a gateway that offers one, settles the returns that the callback
    path alone cannot attribute (``ambiguous`` and ``unmatched`` ones).
    """

    def __init__(
        self,
        store: Store,
        gateway: Gateway,
        policy: PoolPolicy,
        *,
        on_status_change: StatusHook | None = None,
        status_query: StatusQuery | None = None,
    ) -> None:
        self.store = store
        self.gateway = gateway
        self.policy = policy
        self.status_query = status_query
        self._hooks: list[StatusHook] = [on_status_change] if on_status_change else []
        self._observers: list[Observer] = []

    def add_status_hook(self, hook: StatusHook) -> None:
        self._hooks.append(hook)

    def add_observer(self, observer: Observer) -> None:
        """Call ``observer`` with every event (domain/events.py) once it has committed; an
        exception it raises is logged, not raised."""
        self._observers.append(observer)

    # --- set-up ----------------------------------------------------------------------------

    def sync_slots(self) -> SlotSync:
        """Load the configured callback paths (and reserve paths) into the pool,
        deactivating removed ones."""
        with self.store.transaction() as tx:
            sync = tx.sync_slots(self.policy.callback_paths, self.policy.reserve_paths)
        for path in sync.deactivated:
            log.warning("slot %s deactivated: it is no longer in the configuration", path)
        return sync

    # --- payments --------------------------------------------------------------------------

    @overload
    def create_payment(
        self,
        *,
        amount: int | None = None,
        currency: str | None = None,
        items: Mapping[str, int] | None = None,
        customer: Mapping[str, Any] | None = None,
        priority: int = 0,
        wait: Literal[False] = False,
    ) -> Checkout: ...

    @overload
    def create_payment(
        self,
        *,
        amount: int | None = None,
        currency: str | None = None,
        items: Mapping[str, int] | None = None,
        customer: Mapping[str, Any] | None = None,
        priority: int = 0,
        wait: bool,
    ) -> Checkout | Waiting: ...

    def create_payment(
        self,
        *,
        amount: int | None = None,
        currency: str | None = None,
        items: Mapping[str, int] | None = None,
        customer: Mapping[str, Any] | None = None,
        priority: int = 0,
        wait: bool = False,
    ) -> Checkout | Waiting:
        """Create a pending payment and lease it a callback path, in one transaction.

        When no slot may be had (none free, or the free ones are owed to waiting tickets
        or kept for higher priorities): with ``wait`` a place in the waiting room
        (``Waiting``), served by priority then arrival; without, PoolExhausted. Raises
        InvalidPayment (naming the field), and TooManyLeases when the customer already holds
        as many live leases and places in the waiting room as ``max_live_leases_per_customer``
        allows.
        """
        try:
            line_items, total, currency = self._price(amount, currency, items)
            customer = _customer_data(customer)
            priority = self._priority(priority)
        except InvalidPayment:
            self._emit([CreateRefused(reason="invalid")])
            raise
        token = secrets.token_urlsafe(TOKEN_BYTES)
        started = time.perf_counter()
        try:
            return self._lease_new_payment(
                token, total, currency, line_items, customer, priority, wait, started
            )
        except PoolExhausted:
            self._record_turn_away()
            self._emit([CreateRefused(reason="pool_exhausted")])
            raise
        except TooManyLeases:
            self._emit([CreateRefused(reason="customer_cap")])
            raise

    def _lease_new_payment(
        self,
        token: str,
        total: int,
        currency: str,
        line_items: tuple[LineItem, ...],
        customer: dict[str, Any],
        priority: int,
        wait: bool,
        started: float,
    ) -> Checkout | Waiting:
        refusal: PoolExhausted | None = None
        result: Checkout | Waiting
        lease: Lease | None
        with self._writing() as (tx, work):
            self._expire_due(tx, work)
            self._check_customer_cap(tx, customer_key(customer))
            lease = self._admit(tx, token, total, priority)
            if lease is None and self._activate_reserve(tx):
                lease = self._admit(tx, token, total, priority)
            if lease is not None:
                payment = self._open_payment(
                    tx, token, total, currency, line_items, customer, lease
                )
                self._count(tx, Admission.LEASED)
                result = Checkout(payment=payment, lease=lease, form=self._form(lease, line_items))
            elif (
                wait
                and self.policy.max_waiting > 0
                and tx.waiting_ahead(0, None) < self.policy.max_waiting
            ):
                ticket = tx.insert_ticket(
                    NewTicket(
                        ticket=secrets.token_urlsafe(TOKEN_BYTES),
                        priority=priority,
                        amount=total,
                        currency=currency,
                        items=line_items,
                        customer=customer,
                        expires_at=tx.now + self.policy.ticket_timeout,
                    )
                )
                self._count(tx, Admission.WAITED)
                result = self._waiting(tx, ticket)
                log.info(
                    "ticket %s waits at position %d (priority %d, amount %d)",
                    _short(ticket.ticket),
                    result.position,
                    priority,
                    total,
                )
            else:
                self._count(tx, Admission.REFUSED)
                refusal = PoolExhausted(tx.earliest_lease_end(), tx.now)
        # Raised after the transaction committed, so that the refusal is counted.
        if refusal is not None:
            raise refusal
        if lease is not None:
            self._announce_lease(lease, total, started)
        return result

    def _priority(self, priority: int) -> int:
        if type(priority) is not int or not 0 <= priority <= self.policy.max_priority:
            raise InvalidPayment(
                "priority", f"must be an integer from 0 to {self.policy.max_priority}"
            )
        return priority

    def _admit(
        self, tx: Tx, token: str, amount: int, priority: int, ticket_id: int | None = None
    ) -> Lease | None:
        """Lease a slot to ``token`` if this request may have one now: the free slots must
        outnumber the waiting tickets served before it, plus the slots kept for higher
        priorities. A request without a ticket never jumps the queue."""
        kept = (
            self.policy.reserved_slots_for_priority
            if priority < self.policy.priority_threshold
            else 0
        )
        ahead = tx.waiting_ahead(priority, ticket_id)
        if ahead or kept:
            tx.lock_admission()
            ahead = tx.waiting_ahead(priority, ticket_id)  # again, now that it is our turn
            if tx.free_slot_count() - ahead <= kept:
                return None
        return tx.acquire_slot(
            token=token,
            amount=amount,
            expires_at=tx.now + self.policy.lock_timeout,
            allow_same_amount_tainted=self.policy.reuse_same_amount_tainted,
        )

    def _open_payment(
        self,
        tx: Tx,
        token: str,
        amount: int,
        currency: str,
        items: tuple[LineItem, ...],
        customer: Mapping[str, Any],
        lease: Lease,
    ) -> Payment:
        payment = Payment(
            token=token,
            amount=amount,
            currency=currency,
            status=PaymentStatus.PENDING,
            created_at=tx.now,
            updated_at=tx.now,
            items=items,
            customer=customer,
            lease_id=lease.id,
            callback_path=lease.path,
            expires_at=lease.expires_at,
        )
        tx.insert_payment(payment)
        return payment

    def _announce_lease(self, lease: Lease, amount: int, started: float) -> None:
        """After the commit: observers hear of the lease (timed to the commit), the log says."""
        self._emit([LeaseStarted(lease=lease, seconds=time.perf_counter() - started)])
        log.info(
            "lease %d started on %s for payment %s (amount %d, until %s)",
            lease.id,
            lease.path,
            _short(lease.token),
            amount,
            lease.expires_at.isoformat(),
            extra=_fields("lease_started", lease.path, lease.id, lease.token, amount=amount),
        )

    def _count(self, tx: Tx, admission: Admission) -> None:
        # The peak of busy slots is only needed to decide when a reserve may drain.
        busy = (
            tx.busy_slot_count()
            if self.policy.reserve_paths and admission in (Admission.LEASED, Admission.GRANTED)
            else None
        )
        tx.record_admission(admission, busy)

    def _waiting(self, tx: Tx, ticket: Ticket) -> Waiting:
        return Waiting(
            ticket=ticket.ticket,
            position=tx.waiting_ahead(ticket.priority, ticket.id) + 1,
            priority=ticket.priority,
            retry_after_seconds=max(1, round(self.policy.ticket_poll.total_seconds())),
            expires_at=ticket.expires_at,
        )

    # --- the waiting room ------------------------------------------------------------------

    def poll_ticket(self, ticket: str) -> Checkout | Waiting:
        """A waiting customer's poll: the granted payment once the ticket's turn has come
        and a slot is free (again on every later poll), else its place in the queue.

        Every poll keeps the ticket alive for ``ticket_timeout``. Raises UnknownTicket, or
        TicketEnded for a ticket that expired or was cancelled.
        """
        ticket = self._known_ticket(ticket)
        failure: UnknownTicket | TicketEnded | None = None
        result: Checkout | Waiting | None = None
        fresh: Lease | None = None  # a lease granted by this poll
        started = time.perf_counter()
        with self._writing() as (tx, work):
            self._expire_due(tx, work)
            found = tx.get_ticket(ticket)
            if found is None:
                failure = UnknownTicket()
            elif found.status is TicketStatus.GRANTED:
                result = self._granted(tx, found)
            elif found.status is not TicketStatus.WAITING:
                failure = TicketEnded(found.status.value)
            elif found.expires_at <= tx.now:
                self._end_ticket(tx, found, TicketStatus.EXPIRED)
                failure = TicketEnded(TicketStatus.EXPIRED.value)
            else:
                result = self._take_turn(tx, found)
                if isinstance(result, Checkout):
                    fresh = result.lease
        if failure is not None:
            raise failure
        if fresh is not None:
            self._announce_lease(fresh, fresh.amount, started)
        assert result is not None
        return result

    def _known_ticket(self, ticket: str) -> str:
        """``ticket`` if it names a ticket; UnknownTicket, from a read, if it does not (so that
        guessing tickets takes no write turn, and a malformed one is answered alike)."""
        ticket = _lookup_key(ticket)
        with self.store.read() as tx:
            if tx.get_ticket(ticket) is None:
                raise UnknownTicket()
        return ticket

    def _take_turn(self, tx: Tx, ticket: Ticket) -> Checkout | Waiting:
        token = secrets.token_urlsafe(TOKEN_BYTES)
        lease = self._admit(tx, token, ticket.amount, ticket.priority, ticket.id)
        if lease is None:
            tx.touch_ticket(ticket.id, tx.now + self.policy.ticket_timeout)
            return self._waiting(
                tx, replace(ticket, expires_at=tx.now + self.policy.ticket_timeout)
            )
        payment = self._open_payment(
            tx, token, ticket.amount, ticket.currency, ticket.items, ticket.customer, lease
        )
        self._end_ticket(tx, ticket, TicketStatus.GRANTED, token)
        self._count(tx, Admission.GRANTED)
        return Checkout(payment=payment, lease=lease, form=self._form(lease, ticket.items))

    def _granted(self, tx: Tx, ticket: Ticket) -> Checkout:
        assert ticket.payment_token is not None
        payment = tx.get_payment(ticket.payment_token)
        assert payment is not None
        assert payment.lease_id is not None
        lease = tx.get_lease(payment.lease_id)
        assert lease is not None
        return Checkout(payment=payment, lease=lease, form=self._form(lease, payment.items))

    def cancel_ticket(self, ticket: str) -> None:
        """Leave the waiting room (the customer gave up). Raises UnknownTicket, or
        TicketEnded if the ticket is no longer waiting (a granted ticket's payment is
        cancelled with ``cancel_payment``)."""
        ticket = self._known_ticket(ticket)
        failure: UnknownTicket | TicketEnded | None = None
        with self.store.transaction() as tx:
            found = tx.get_ticket(ticket)
            if found is None:
                failure = UnknownTicket()
            elif found.status is not TicketStatus.WAITING:
                failure = TicketEnded(found.status.value)
            else:
                self._end_ticket(tx, found, TicketStatus.CANCELLED)
        if failure is not None:
            raise failure

    def _end_ticket(
        self, tx: Tx, ticket: Ticket, status: TicketStatus, token: str | None = None
    ) -> None:
        check_ticket_transition(ticket.status, status)
        if tx.end_ticket(ticket.id, status, token):
            log.info(
                "ticket %s %s%s",
                _short(ticket.ticket),
                status.value,
                f": payment {_short(token)}" if token else "",
            )

    # --- reserve paths ---------------------------------------------------------------------

    def _activate_reserve(self, tx: Tx) -> bool:
        """Put the reserve in rotation if this request, which found no slot, takes the
        window's share of requests not served at once past the target. True if it did."""
        if (
            not self.policy.reserve_paths
            or self._reserve_last_action(tx) is ReserveAction.ACTIVATED
        ):
            return False
        counts = tx.admissions_since(tx.now - self.policy.capacity_window)
        counts = replace(counts, refused=counts.refused + 1)  # this request
        if counts.not_served_at_once <= self.policy.capacity_target:
            return False
        paths = tx.set_reserve_standby(False)
        if not paths:
            return False
        reason = (
            f"{counts.waited + counts.refused} of {counts.requests} requests in the last "
            f"{_minutes(self.policy.capacity_window)} found no slot at once "
            f"({counts.not_served_at_once:.1%}, target {self.policy.capacity_target:.1%})"
        )
        event = tx.insert_reserve_event(ReserveAction.ACTIVATED, paths, reason)
        log.warning("reserve paths activated: %s (%s)", ", ".join(paths), event.reason)
        return True

    def _drain_reserve(self, tx: Tx) -> ReserveEvent | None:
        """Take the reserve out of rotation once a whole window since it was activated has
        seen nobody wait or turned away, and never more slots busy at once than the main
        paths less one: the main paths carry the load again. Running leases drain."""
        if not self.policy.reserve_paths:
            return None
        latest = tx.reserve_events(limit=1)
        if not latest or latest[0].action is not ReserveAction.ACTIVATED:
            return None
        since = tx.now - self.policy.capacity_window
        if latest[0].at > since:
            return None
        counts = tx.admissions_since(since)
        main = len(self.policy.callback_paths)
        if counts.waited or counts.refused or counts.peak_busy >= main:
            return None
        paths = tx.set_reserve_standby(True)
        reason = (
            f"the last {_minutes(self.policy.capacity_window)}: nobody waited or was turned "
            f"away, at most {counts.peak_busy} slots busy at once for {main} main paths"
        )
        event = tx.insert_reserve_event(ReserveAction.DRAINED, paths, reason)
        log.warning("reserve paths drained: %s (%s)", ", ".join(paths) or "-", event.reason)
        return event

    @staticmethod
    def _reserve_last_action(tx: Tx) -> ReserveAction | None:
        latest = tx.reserve_events(limit=1)
        return latest[0].action if latest else None

    def _check_customer_cap(self, tx: Tx, key: str | None) -> None:
        cap = self.policy.max_live_leases_per_customer
        if key is None or cap <= 0:
            return
        held = tx.customer_claims(key)
        if len(held) >= cap:
            log.warning("create refused: a customer already holds %d leases or tickets", len(held))
            raise TooManyLeases(min(held), tx.now)

    def _price(
        self, amount: int | None, currency: str | None, items: Mapping[str, int] | None
    ) -> tuple[tuple[LineItem, ...], int, str]:
        currency = self.gateway.currency if currency is None else currency
        if not isinstance(currency, str) or not is_known_currency(currency):
            raise InvalidPayment("currency", f"unknown currency {currency!r}")
        if currency != self.gateway.currency:
            raise InvalidPayment("currency", f"this payment form takes {self.gateway.currency}")
        if amount is not None and (type(amount) is not int or amount <= 0):
            raise InvalidPayment("amount", "must be a positive integer of minor units")
        if items:
            for code, quantity in items.items():
                if type(quantity) is not int or not 1 <= quantity <= MAX_QUANTITY:
                    raise InvalidPayment(
                        "items", f"quantity of {code!r} must be an integer from 1 to {MAX_QUANTITY}"
                    )
            line_items = self.gateway.price_items(items)
            total = sum(item.total for item in line_items)
            if amount is not None and amount != total:
                raise InvalidPayment("amount", f"does not match the items, which total {total}")
        elif amount is None:
            raise InvalidPayment("amount", "is required (or name the items)")
        else:
            found = self.gateway.items_for_amount(amount)
            if found is None:
                raise InvalidPayment("items", "this payment form charges by line items: name them")
            line_items, total = found, amount
        if total <= 0:
            raise InvalidPayment("amount", "must be greater than zero")
        if self.policy.max_amount is not None and total > self.policy.max_amount:
            raise InvalidPayment("amount", f"must not exceed {self.policy.max_amount}")
        if total > AMOUNT_CEILING:
            raise InvalidPayment("amount", f"must not exceed {AMOUNT_CEILING}")
        return line_items, total, currency

    def _form(self, lease: Lease, items: Sequence[LineItem]) -> FormConfig:
        url = self.policy.callback_url(lease.path)
        return FormConfig(
            action_url=self.policy.form_action_url,
            callback_path=lease.path,
            callback_url=url,
            fields=self.gateway.form_fields(return_url=url, items=items, token=lease.token),
        )

    def get_payment(self, token: str) -> Payment:
        """The payment as it stands (a lease past its expiry is expired first)."""
        token = _lookup_key(token)
        with self.store.read() as tx:
            payment = tx.get_payment(token)
            now = tx.now
        if payment is None:
            raise UnknownPayment()
        if payment.status is PaymentStatus.PENDING and _due(payment.expires_at, now):
            with self._writing() as (tx, work):
                lease = tx.live_lease_of_payment(token)
                if lease is not None:
                    self._expire_due(tx, work, lease.slot_id)
            return self.get_payment(token)
        return payment

    def receipt(self, ref: str, key: str) -> Payment | None:
        """The payment a gateway return was applied to, for the return's success page (the
        redirect names the return's reference and its receipt key). None, alike, for an
        unknown reference, a wrong key and a return applied to no payment."""
        callback_id = callback_id_of(ref)
        with self.store.read() as tx:
            record = tx.get_callback(callback_id) if callback_id is not None else None
        expected = (record.receipt or "") if record is not None else ""
        # Compared even when nothing is expected, so that no answer comes back quicker.
        matches = hmac.compare_digest(expected.encode(), key.encode()) and bool(expected)
        if record is None or not matches or record.payment_token is None:
            return None
        return self.get_payment(record.payment_token)

    def poll_payment(self, token: str) -> Payment:
        """The checkout page's status poll: the payment as it stands, and its heartbeat.

        The first poll arms the heartbeat: from then on the lease is released (tainted,
        the payment ``expired``) once no poll has come for ``heartbeat_timeout``. A poll
        writes only when the recorded heartbeat is older than ``heartbeat_slack``.
        """
        token = _lookup_key(token)
        with self.store.read() as tx:
            payment = tx.get_payment(token)
            now = tx.now
            lease = (
                tx.live_lease_of_payment(token)
                if payment is not None and payment.status is PaymentStatus.PENDING
                else None
            )
        if payment is None:
            raise UnknownPayment()
        if lease is None:
            return payment
        if _due(lease.expires_at, now) or _due(lease.heartbeat_until, now):
            with self._writing() as (tx, work):
                self._expire_due(tx, work, lease.slot_id)
            return self.get_payment(token)
        timeout = self.policy.heartbeat_timeout
        if timeout > timedelta(0) and (
            lease.heartbeat_until is None or lease.heartbeat_until < now + timeout
        ):
            with self.store.transaction() as tx:
                tx.record_heartbeat(lease.id, tx.now + timeout + self.policy.heartbeat_slack)
        return payment

    def cancel_payment(self, token: str) -> Payment:
        """Cancel a pending payment: its lease ends and leaves a taint, for the customer may
        still be paying on the gateway's page. Raises UnknownPayment or PaymentNotPending."""
        token = _lookup_key(token)
        # A token that names nothing is answered from a read: guessing tokens here must not
        # take the write turn from the pool's real work.
        with self.store.read() as tx:
            if tx.get_payment(token) is None:
                raise UnknownPayment()
        with self._writing() as (tx, work):
            lease = tx.live_lease_of_payment(token)
            if lease is not None:
                self._expire_due(tx, work, lease.slot_id)  # a lease past expiry has ended
            payment = tx.get_payment(token)
            if payment is None:
                raise UnknownPayment()
            if payment.status is not PaymentStatus.PENDING:
                current = payment.status
            else:
                self._end_live_lease(tx, work, token, LeaseEnd.CANCELLED)
                self._transition(
                    tx, work, payment, PaymentChange(status=PaymentStatus.CANCELLED), "cancelled"
                )
                cancelled = tx.get_payment(token)
                assert cancelled is not None
                return cancelled
        # Raised after the transaction committed, so an expiry it made is kept.
        raise PaymentNotPending(current.value)

    # --- gateway returns -------------------------------------------------------------------

    def handle_callback(
        self,
        path: str,
        params: Params,
        *,
        method: str = "GET",
        client_addr: str | None = None,
    ) -> CallbackResult:
        """Store a gateway return, then resolve it (DESIGN.md §6).

        The return is committed before anything acts on it, so even a crash in between
        leaves it on record (``received``); the sweeper resolves such leftovers. A return
        that its path cannot attribute is put to the gateway's status query, if there is
        one, before anything changes (outside any transaction, within its timeout).
        """
        # Not waiting for the disk here is safe: the resolution's durable commit, right
        # after, makes this record durable too (see Store.transaction).
        with self.store.transaction(durable=False) as tx:
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

    def _resolve(self, callback_id: int, answer: _GatewayAnswer | None = None) -> CallbackResult:
        try:
            with self._writing() as (tx, work):
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
        except _AskGatewayFirst as ask:
            # Rolled back: the gateway is asked with no transaction open, then the return is
            # resolved anew, knowing its answer (the pool may have moved on meanwhile).
            return self._resolve(callback_id, self._query(ask.pn_ref))
        if resolution is None:  # resolved meanwhile by another worker
            return CallbackResult(
                callback_id=callback_id,
                outcome=record.outcome,
                redirect=record.redirect or self._error_page("Processing error", callback_id),
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
            f" to payment {_short(resolution.payment_token)}" if resolution.payment_token else "",
            f" (lease {resolution.lease_id})" if resolution.lease_id is not None else "",
            f" ({resolution.detail})" if resolution.detail else "",
            extra=_fields(
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
        self, tx: Tx, work: _Work, record: CallbackRecord, answer: _GatewayAnswer | None
    ) -> CallbackResolution:
        callback_id, path, params = record.id, record.path, record.params
        slot = tx.slot_by_path(path)
        if slot is None:
            return self._rejected(callback_id, "unknown callback path")
        try:
            parsed = self.gateway.parse_return(params)
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
        self._expire_due(tx, work, slot.id)
        candidates = tx.candidates(slot.id)
        # Earlier unattributed returns matter only where several payments compete, and
        # only while their candidates are still candidates: their taints run out a
        # late-callback window after the return was resolved (within seconds of its
        # receipt, or at the next sweep). Twice the window leaves ample room, and keeps the
        # list from growing for ever on a busy same-amount slot.
        open_ambiguities = (
            tx.open_ambiguities(path, parsed.amount, tx.now - 2 * self.policy.late_callback_window)
            if parsed.approved and parsed.amount is not None and len(candidates) > 1
            else []
        )
        decision = decide(
            approved=parsed.approved,
            amount=parsed.amount,
            candidates=candidates,
            open_ambiguities=open_ambiguities,
        )
        seen = CallbackResolution(
            outcome=CallbackOutcome.RECEIVED,
            redirect="",
            pn_ref=parsed.pn_ref,
            amount=parsed.amount,
            approved=parsed.approved,
        )
        if isinstance(decision, Ambiguous | Unmatched) and self.status_query is not None:
            if answer is None:
                raise _AskGatewayFirst(parsed.pn_ref)
            payment = self._by_gateway(tx, work, record, parsed, answer)
            if payment is not None:
                return replace(
                    seen,
                    outcome=CallbackOutcome.APPLIED,
                    redirect=self._answer(parsed, record),
                    payment_token=payment.token,
                    lease_id=payment.lease_id,
                    detail="attributed by the gateway's status query",
                )
        match decision:
            case Apply(candidate=candidate, status=status):
                self._settle(tx, work, candidate, status, parsed, callback_id)
                return replace(
                    seen,
                    outcome=CallbackOutcome.APPLIED,
                    redirect=self._answer(parsed, record),
                    payment_token=candidate.payment.token,
                    lease_id=candidate.lease.id,
                )
            case SettleAll(assignments=assignments):
                own_token = ""
                own_lease: int | None = None
                for earlier_id, candidate in assignments:
                    if earlier_id is None:
                        self._settle(
                            tx, work, candidate, PaymentStatus.COMPLETED, parsed, callback_id
                        )
                        own_token = candidate.payment.token
                        own_lease = candidate.lease.id
                    else:
                        earlier = tx.get_callback(earlier_id)
                        assert earlier is not None
                        earlier_return = self.gateway.parse_return(earlier.params)
                        self._settle(
                            tx, work, candidate, PaymentStatus.COMPLETED, earlier_return, earlier_id
                        )
                        tx.settle_callback(
                            earlier_id, candidate.payment.token, callback_ref(callback_id)
                        )
                return replace(
                    seen,
                    outcome=CallbackOutcome.APPLIED,
                    redirect=self._answer(parsed, record),
                    payment_token=own_token,
                    detail=f"settled {len(assignments)} same-amount payments on {path}",
                    candidates=tuple(c.payment.token for _, c in assignments),
                    lease_id=own_lease,
                )
            case Ambiguous(candidates=matching, review=review):
                if review:
                    for candidate in matching:
                        self._send_to_review(tx, work, candidate, callback_id)
                    message = "Payment received; we are confirming it"
                else:
                    message = "Payment declined"
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
                    redirect=self._error_page("Payment not found", callback_id),
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
        refusal = self.gateway.verify(params, parsed)
        if refusal is not None:
            return refusal
        if self.policy.return_sources and not _admitted(client_addr, self.policy.return_sources):
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
        return CallbackResolution(
            outcome=CallbackOutcome.DUPLICATE,
            redirect=first.redirect or self._error_page("Processing error", callback_id),
            pn_ref=parsed.pn_ref,
            amount=parsed.amount,
            approved=parsed.approved,
            payment_token=first.payment_token,
            duplicate_of=holder_id,
            detail=f"repeat of {callback_ref(holder_id)}",
        )

    def _rejected(
        self, callback_id: int, reason: str, parsed: GatewayReturn | None = None
    ) -> CallbackResolution:
        return CallbackResolution(
            outcome=CallbackOutcome.REJECTED,
            redirect=self._error_page("Payment could not be verified", callback_id),
            detail=reason,
            pn_ref=parsed.pn_ref if parsed else None,
            amount=parsed.amount if parsed else None,
            approved=parsed.approved if parsed else None,
        )

    def _settle(
        self,
        tx: Tx,
        work: _Work,
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
        self._transition(tx, work, candidate.payment, change, reason)
        if lease.is_live:
            self._end_lease(tx, work, lease, LeaseEnd.CALLBACK, taint=False)
        else:
            tx.drop_taint(lease.id)
            if lease.end_reason is LeaseEnd.EXPIRED:
                tx.record_late_return(lease.slot_id)  # that expiry was not silent after all

    def _send_to_review(self, tx: Tx, work: _Work, candidate: Candidate, callback_id: int) -> None:
        if candidate.payment.status is not PaymentStatus.NEEDS_REVIEW:
            self._transition(
                tx,
                work,
                candidate.payment,
                PaymentChange(status=PaymentStatus.NEEDS_REVIEW),
                f"ambiguous return {callback_ref(callback_id)}",
            )
        if candidate.lease.is_live:
            # The return may be this customer's or not: the lease ends, its taint stays.
            self._end_lease(tx, work, candidate.lease, LeaseEnd.CALLBACK, taint=True)

    # --- the gateway's status query -------------------------------------------------------

    def _query(self, pn_ref: str) -> _GatewayAnswer:
        assert self.status_query is not None
        try:
            return _GatewayAnswer(found=self.status_query.transaction(pn_ref))
        except StatusQueryFailed as exc:
            log.warning("status query for PNRef %s failed: %s", pn_ref, exc.message)
            return _GatewayAnswer(failure=exc.message)

    def _by_gateway(
        self,
        tx: Tx,
        work: _Work,
        record: CallbackRecord,
        parsed: GatewayReturn,
        answer: _GatewayAnswer,
    ) -> Payment | None:
        """Give the return to the payment the gateway's record names, if it may have it (the
        payment as it was), or None: nothing changed but the note of what the gateway said."""
        if answer.failure is not None:
            tx.note_status_query(record.id, f"the query failed: {answer.failure}", None)
            return None
        note, payment = self._gateway_attribution(tx, record, parsed, answer.found)
        # Attributed, the return's answer becomes its payment's page (a repeat gets it too).
        tx.note_status_query(record.id, note, self._answer(parsed, record) if payment else None)
        log.log(
            logging.INFO if payment else logging.WARNING, "status query, %s: %s", record.ref, note
        )
        if payment is not None:
            # As an operator's attribution would (its lease, live or tainted or long over).
            self._attribute(tx, work, record, payment.token, f"return {record.ref} (status query)")
        return payment

    def _gateway_attribution(
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
        payment = tx.get_payment(_lookup_key(found.payment_token))
        if payment is None:
            return "the gateway's record names no payment of this pool", None
        if payment.callback_path != record.path or (
            amount is not None and payment.amount != amount
        ):
            return "the gateway's record names a payment of another path or amount", None
        if payment.status.is_final:
            # A payment that reached its final status is never given another return.
            return f"the gateway's record names a payment already {payment.status.value}", None
        return f"the gateway's record names payment {_short(payment.token)}", payment

    def _ask_gateway_again(self) -> None:
        """The sweeper's part: an ambiguous or unmatched return whose query failed (or found
        nothing yet) is asked about again, a few times at most, and settled if it can be."""
        with self.store.read() as tx:
            waiting = tx.callbacks_to_query(QUERY_ATTEMPTS, QUERIES_PER_SWEEP)
        for callback_id in waiting:
            try:
                self._settle_by_gateway(callback_id)
            except Exception:
                log.exception("status query for %s failed", callback_ref(callback_id))

    def _settle_by_gateway(self, callback_id: int) -> None:
        with self.store.read() as tx:
            record = tx.get_callback(callback_id)
        if record is None or record.pn_ref is None or not _open_to_query(record):
            return
        answer = self._query(record.pn_ref)  # no transaction open meanwhile
        with self._writing() as (tx, work):
            record = tx.get_callback(callback_id)
            slot = tx.slot_by_path(record.path) if record is not None else None
            if record is None or slot is None or not _open_to_query(record):
                return  # settled meanwhile
            self._expire_due(tx, work, slot.id)
            parsed = self.gateway.parse_return(record.params)
            payment = self._by_gateway(tx, work, record, parsed, answer)
            if payment is None:
                return
            tx.settle_callback(record.id, payment.token, "status query")
            self._release_from_review(tx, work, record, parsed, payment.token)

    def _release_from_review(
        self, tx: Tx, work: _Work, record: CallbackRecord, parsed: GatewayReturn, token: str
    ) -> None:
        """The others an ambiguous return had sent to review, now that it is known to be
        another's, go back to where the pool had left them: their leases ended when they
        went to review, so they are ``expired`` (their taints stay: their own returns still
        find them). One still in another open ambiguity stays in review."""
        still_open = {
            candidate
            for ambiguity in (
                tx.open_ambiguities(
                    record.path, parsed.amount, tx.now - 2 * self.policy.late_callback_window
                )
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
                self._transition(tx, work, other, change, f"return {record.ref} was another's")

    def _answer(self, parsed: GatewayReturn, record: CallbackRecord) -> str:
        """Where an attributed return sends the browser. The success page is named by the
        return's receipt, never by a payment token: whoever holds the return (a replay, a
        forgery where returns are unverified) must not learn the token from the redirect."""
        if parsed.approved:
            query = urlencode({"ref": record.ref, "receipt": record.receipt or ""})
            return f"{self.policy.success_url}?{query}"
        return self._error_page("Payment declined", record.id)

    def _error_page(self, message: str, callback_id: int) -> str:
        query = urlencode({"message": message, "ref": callback_ref(callback_id)})
        return f"{self.policy.error_url}?{query}"

    # --- housekeeping ----------------------------------------------------------------------

    def expire_due(self) -> int:
        """End leases past their expiry; their payments become ``expired``."""
        with self._writing() as (tx, work):
            return self._expire_due(tx, work)

    def sweep(self) -> SweepReport:
        """The cleanup job: expire due leases and release abandoned ones, forget stale
        taints and unpolled tickets, drain the reserve when the load has fallen, and resolve
        returns that were stored but never resolved. Safe to run on several instances at
        once."""
        try:
            with self._writing() as (tx, work):
                expired = self._expire_due(tx, work)
                dropped = tx.drop_stale_taints()
                tickets = tx.expire_stale_tickets()
                reserve = self._drain_reserve(tx)
                tx.drop_admissions_before(
                    tx.now - max(ADMISSIONS_KEPT, self.policy.capacity_window)
                )
                leftovers = tx.unresolved_callbacks(tx.now - UNRESOLVED_GRACE)
        except Exception:
            self._emit([SweepRan(failed=True)])
            raise
        resolved = 0
        for callback_id in leftovers:
            try:
                self._resolve(callback_id)
            except Exception:
                # It stays ``received``: shown to operators and tried again by the next sweep.
                # One return that cannot be resolved must not hold back the others.
                log.exception("callback %s could not be resolved", callback_ref(callback_id))
            else:
                resolved += 1
        if self.status_query is not None:
            self._ask_gateway_again()
        self._emit([SweepRan(failed=False, expired=expired)])
        return SweepReport(
            expired=expired,
            taints_dropped=dropped,
            callbacks_resolved=resolved,
            tickets_expired=tickets,
            reserve=reserve,
        )

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
            # The leases (and, on PostgreSQL, their slots, all in one order) before the
            # expiry: taking slots one by one after it held some could deadlock two of these.
            leases = tx.live_leases()
            self._expire_due(tx, work)
            leases = [lease for lease in leases if lease.expires_at > tx.now]  # not expired
            for lease in leases:
                self._release_by_operator(tx, work, lease)
        return leases

    def _release_by_operator(self, tx: Tx, work: _Work, lease: Lease) -> None:
        self._end_lease(tx, work, lease, LeaseEnd.ADMIN, taint=True)
        payment = tx.get_payment(lease.token)
        if payment is not None and payment.status is PaymentStatus.PENDING:
            change = PaymentChange(
                status=PaymentStatus.EXPIRED, error_message="released by an operator"
            )
            self._transition(tx, work, payment, change, "released by an operator")

    # --- reports ---------------------------------------------------------------------------

    def status(self) -> PoolStatus:
        """The slots, the waiting room, the reserve and the capacity window, at one moment."""
        with self.store.read() as tx:
            slots = tuple(tx.slot_views())
            since = tx.now - self.policy.capacity_window
            return PoolStatus(
                at=tx.now,
                slots=slots,
                waiting=tx.waiting_ahead(0, None),
                reserve=ReserveStatus(
                    paths=self.policy.reserve_paths,
                    in_rotation=sum(1 for s in slots if s.reserve and s.in_rotation),
                    draining=sum(1 for s in slots if s.reserve and s.standby and s.lease),
                    events=tuple(tx.reserve_events(limit=10)),
                ),
                capacity=CapacityReport(
                    window=self.policy.capacity_window,
                    target=self.policy.capacity_target,
                    slots=sum(1 for s in slots if s.in_rotation),
                    counts=tx.admissions_since(since),
                    holding=tx.holding_times_since(since),
                ),
            )

    def stuck_leases(self) -> list[Lease]:
        """Live leases past their expiry that no sweep has ended yet."""
        with self.store.read() as tx:
            return [lease for lease in tx.live_leases() if lease.expires_at <= tx.now]

    def orphaned_payments(self, older_than: timedelta | None = None) -> list[Payment]:
        """Payments still pending long after they should have ended (default: three lock
        timeouts): a sign that nothing is sweeping."""
        age = older_than if older_than is not None else 3 * self.policy.lock_timeout
        with self.store.read() as tx:
            return tx.payments(statuses=[PaymentStatus.PENDING], created_before=tx.now - age)

    def usage(self) -> list[UsageRow]:
        with self.store.read() as tx:
            return tx.usage()

    def has_path(self, path: str) -> bool:
        """Whether ``path`` is (or was) one of the pool's callback paths."""
        with self.store.read() as tx:
            return tx.slot_by_path(path) is not None

    def payment_counts(self) -> dict[PaymentStatus, int]:
        """Payments by status, every status present (0 where none)."""
        with self.store.read() as tx:
            counts = tx.payment_counts()
        return {status: counts.get(status, 0) for status in PaymentStatus}

    def callback_counts(self) -> dict[CallbackOutcome, int]:
        """Stored returns by outcome, every outcome present (0 where none)."""
        with self.store.read() as tx:
            counts = tx.callback_counts()
        return {outcome: counts.get(outcome, 0) for outcome in CallbackOutcome}

    def callbacks(
        self,
        *,
        outcomes: Sequence[CallbackOutcome] = (),
        limit: int = 50,
        before_id: int | None = None,
    ) -> list[CallbackRecord]:
        """Stored returns, newest first, with their raw parameters; page on with the
        smallest id of a page as ``before_id``."""
        if before_id is not None:
            before_id = min(before_id, MAX_ID)
        with self.store.read() as tx:
            return tx.callbacks(outcomes=outcomes, limit=limit, before_id=before_id)

    def history(self, window: timedelta) -> PoolHistory:
        """What the dashboard's charts are drawn from: the leases that held a slot in the
        last ``window``, and the turn-aways per minute."""
        with self.store.read() as tx:
            since = tx.now - window
            return PoolHistory(
                now=tx.now,
                spans=tuple(tx.lease_spans(since)),
                turn_aways=tuple(tx.turn_aways_since(since)),
            )

    def _record_turn_away(self) -> None:
        try:
            with self.store.transaction() as tx:
                tx.record_turn_away()
        except Exception:  # a figure for the charts; the refusal itself stands
            log.exception("a turn-away could not be recorded")

    def now(self) -> datetime:
        """The time the pool decides by (the store's clock)."""
        with self.store.read() as tx:
            return tx.now

    def slot_path(self, name: str) -> str:
        """A slot's full path from its full path or its last segment (``handler-3``).
        Raises UnknownSlot (naming the problem)."""
        with self.store.read() as tx:
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

    # --- slots out of rotation -------------------------------------------------------------

    def sideline_slot(self, path: str, *, by: str, reason: str) -> bool:
        """Take a slot out of rotation by hand: it is leased no more until restored; its
        live lease and taints still take their returns. False if it was out already.
        Raises UnknownSlot."""
        by, reason = _operator(by), _reason(reason)
        with self._writing() as (tx, work):
            slot = tx.slot_by_path(path)
            if slot is None:
                raise UnknownSlot()
            done = tx.sideline_slot(slot.id, by=by, reason=reason)
            if done:
                work.events.append(SlotSidelined(path=path, by=by, reason=reason))
        if done:
            log.warning(
                "slot %s taken out of rotation by %s: %s",
                path,
                by,
                reason,
                extra=_fields("slot_sidelined", path, None, None, by=by, reason=reason),
            )
        return done

    def restore_slot(self, path: str, *, by: str) -> bool:
        """Put a slot back in rotation (with a fresh expiry streak). False if it was in.
        Raises UnknownSlot."""
        by = _operator(by)
        with self._writing() as (tx, work):
            slot = tx.slot_by_path(path)
            if slot is None:
                raise UnknownSlot()
            done = tx.restore_slot(slot.id)
            if done:
                work.events.append(SlotRestored(path=path, by=by))
        if done:
            log.warning(
                "slot %s put back in rotation by %s",
                path,
                by,
                extra=_fields("slot_restored", path, None, None, by=by),
            )
        return done

    def _check_slot_health(self, tx: Tx, work: _Work, lease: Lease) -> None:
        """The slot-health rule, after one of the slot's leases expired with no return."""
        streak = tx.record_slot_expiry(lease.slot_id)
        limit = self.policy.slot_health_expiries_to_sideline
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
                extra=_fields("slot_sidelined", lease.path, lease.id, lease.token, by=SLOT_HEALTH),
            )

    # --- review ------------------------------------------------------------------------------

    def review_queue(self, limit: int = 100) -> ReviewQueue:
        """What waits for an operator: approved returns that could belong to several
        payments (each with its candidates), and payments in review that no open return
        names (left in review by an earlier decision)."""
        with self.store.read() as tx:
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

    def get_callback(self, callback_id: int) -> CallbackRecord:
        """A stored return. Raises UnknownCallback."""
        if not 0 < callback_id <= MAX_ID:
            raise UnknownCallback()
        with self.store.read() as tx:
            record = tx.get_callback(callback_id)
        if record is None:
            raise UnknownCallback()
        return record

    def reviews(self, limit: int = 100) -> list[Review]:
        """Operators' decisions, newest first."""
        with self.store.read() as tx:
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
        """An operator's decision on an ambiguous return: it belongs to ``payment_token``
        (one of its candidates: completed, or failed for a declined return) or to none of
        them (None); every other candidate still in review becomes ``others`` (``expired``,
        ``failed``, or ``needs_review`` to leave it for another return). Recorded with who,
        why and when; the transition table governs every change.

        Raises UnknownCallback, NotUnderReview (no longer ambiguous, or decided already),
        InvalidReview (a payment that is not a candidate, an ``others`` status not
        allowed, no reason) or IllegalTransition (a candidate has moved on meanwhile).
        """
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
            f"attributed to payment {_short(payment_token)}" if payment_token else "to none",
            ", ".join(f"{_short(c.token)} {c.previous.value} → {c.status.value}" for c in changes)
            or "no change",
            others.value,
            by,
            reason,
            extra=_fields(
                "review", record.path, None, payment_token, review=review.ref, by=by, reason=reason
            ),
        )
        return review

    def _attribute(
        self, tx: Tx, work: _Work, record: CallbackRecord, token: str, label: str
    ) -> ReviewChange:
        payment = tx.get_payment(token)
        if payment is None:
            raise InvalidReview("paymentToken", "no such payment")
        parsed = self.gateway.parse_return(record.params)
        status = PaymentStatus.COMPLETED if parsed.approved else PaymentStatus.FAILED
        check_transition(payment.status, status)
        lease = tx.get_lease(payment.lease_id) if payment.lease_id is not None else None
        if lease is None:
            raise InvalidReview("paymentToken", "the payment never held a lease")
        candidate = Candidate(lease=lease, payment=payment)
        self._settle(tx, work, candidate, status, parsed, record.id, reason=label)
        return ReviewChange(token=token, previous=payment.status, status=status)

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
            _short(token),
            status.value,
            by,
            reason,
            extra=_fields("review", payment.callback_path, payment.lease_id, token, by=by),
        )
        return review

    # --- internals -------------------------------------------------------------------------

    @contextmanager
    def _writing(self) -> Iterator[tuple[Tx, _Work]]:
        """A write transaction; status hooks and observers run once it has committed."""
        work = _Work()
        with self.store.transaction() as tx:
            yield tx, work
        for change in work.changes:
            for hook in self._hooks:
                try:
                    hook(change)
                except Exception:
                    log.exception("status hook failed for payment %s", _short(change.token))
        self._emit(work.events)

    def _emit(self, events: Sequence[PoolEvent]) -> None:
        for event in events:
            for observer in self._observers:
                try:
                    observer(event)
                except Exception:
                    log.exception("observer failed on %s", type(event).__name__)

    def _expire_due(self, tx: Tx, work: _Work, slot_id: int | None = None) -> int:
        """End leases whose heartbeat lapsed, then leases past their expiry (only the
        slot's, if ``slot_id`` is given); their pending payments become ``expired``.
        Returns how many leases ended."""
        window = self.policy.late_callback_window
        abandoned = (
            tx.abandon_silent_leases(window, slot_id)
            if self.policy.heartbeat_timeout > timedelta(0)
            else []
        )
        for lease in abandoned:
            work.events.append(LeaseEnded(lease=lease))
            log.info(
                "lease %d on %s released: the checkout page stopped polling (payment %s)",
                lease.id,
                lease.path,
                _short(lease.token),
                extra=_fields("lease_ended", lease.path, lease.id, lease.token, reason="abandoned"),
            )
            payment = tx.get_payment(lease.token)
            if payment is not None and payment.status is PaymentStatus.PENDING:
                change = PaymentChange(
                    status=PaymentStatus.EXPIRED, error_message="the checkout page stopped polling"
                )
                self._transition(tx, work, payment, change, "checkout page stopped polling")
        ended = tx.expire_due_leases(window, slot_id)
        for lease in ended:
            work.events.append(LeaseEnded(lease=lease))
            log.info(
                "lease %d on %s expired (payment %s)",
                lease.id,
                lease.path,
                _short(lease.token),
                extra=_fields("lease_ended", lease.path, lease.id, lease.token, reason="expired"),
            )
            payment = tx.get_payment(lease.token)
            if payment is not None and payment.status is PaymentStatus.PENDING:
                self._transition(
                    tx, work, payment, PaymentChange(status=PaymentStatus.EXPIRED), "lease expired"
                )
            self._check_slot_health(tx, work, lease)
        return len(abandoned) + len(ended)

    def _end_live_lease(self, tx: Tx, work: _Work, token: str, reason: LeaseEnd) -> None:
        lease = tx.live_lease_of_payment(token)
        if lease is not None:
            self._end_lease(tx, work, lease, reason, taint=True)

    def _end_lease(
        self, tx: Tx, work: _Work, lease: Lease, reason: LeaseEnd, *, taint: bool
    ) -> None:
        taint_until = tx.now + self.policy.late_callback_window if taint else None
        ended = tx.end_lease(lease.id, reason, taint_until)
        if ended is not None:
            work.events.append(LeaseEnded(lease=ended))
            log.info(
                "lease %d on %s ended: %s%s (payment %s)",
                lease.id,
                lease.path,
                reason.value,
                " (tainted)" if taint else "",
                _short(lease.token),
                extra=_fields(
                    "lease_ended", lease.path, lease.id, lease.token, reason=reason.value
                ),
            )

    def _transition(
        self, tx: Tx, work: _Work, payment: Payment, change: PaymentChange, reason: str
    ) -> None:
        check_transition(payment.status, change.status)
        if not tx.update_payment(payment.token, payment.status, change):
            # Decided on a status another transaction has changed since: undo it all. (The
            # stores lock a payment's slot before acting on it, so this is a last guard.)
            raise PaymentChanged(payment.token)
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
            _short(payment.token),
            payment.status.value,
            change.status.value,
            reason,
            payment.lease_id if payment.lease_id is not None else "-",
            payment.callback_path or "-",
            extra=_fields(
                "transition",
                payment.callback_path,
                payment.lease_id,
                payment.token,
                previous=payment.status.value,
                status=change.status.value,
                reason=reason,
            ),
        )


def _customer_data(customer: Mapping[str, Any] | None) -> dict[str, Any]:
    """The customer's data as stored: a JSON object of bounded size."""
    if customer is None:
        return {}
    if not isinstance(customer, Mapping):
        raise InvalidPayment("customer", "must be an object")
    try:
        encoded = json.dumps(dict(customer), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidPayment("customer", f"must be plain JSON data ({exc})") from None
    if len(encoded) > MAX_CUSTOMER_BYTES:
        raise InvalidPayment("customer", f"must not exceed {MAX_CUSTOMER_BYTES} bytes as JSON")
    loaded: dict[str, Any] = json.loads(encoded)
    return loaded


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


def _open_to_query(record: CallbackRecord) -> bool:
    """An ambiguous or unmatched return that nothing has settled yet."""
    return record.outcome in _QUERYABLE and record.settled_at is None


def _lookup_key(token: str) -> str:
    """The token to look a payment up by: a string no token could be (too long, characters
    no token has) is looked up as the empty string, which names nothing either, so that
    unknown and malformed tokens are answered by the same work, and no store is handed a NUL
    or a megabyte."""
    return token if _TOKEN_SHAPE.fullmatch(token) else ""


def _minutes(span: timedelta) -> str:
    return f"{span.total_seconds() / 60:g} min"


def _due(moment: datetime | None, now: datetime) -> bool:
    return moment is not None and moment <= now


def _fields(
    event: str, slot: str | None, lease: int | None, token: str | None, **more: Any
) -> dict[str, Any]:
    """The structured fields of a log line (``extra``): what ``--log-format json`` prints
    beside the message. The token is shortened as in the message: logs carry no secrets."""
    return {
        "fields": {
            "event": event,
            "slot": slot,
            "lease": lease,
            "token": _short(token) if token else None,
            **more,
        }
    }


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


def _short(token: str | None) -> str:
    """Enough of a token to follow it through the logs, not enough to use it."""
    return f"{token[:8]}…" if token else "-"


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
