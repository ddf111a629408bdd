"""Leasing: a new payment leased a callback path or given a place in the waiting room, and a
payment read, polled by its checkout page, or cancelled (docs/design.md#leasing). Lookups
that name nothing are answered from a read: guessing never takes a write turn."""

from __future__ import annotations

import hmac
import json
import secrets
import time
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, Literal, overload

from ..domain.errors import (
    InvalidPayment,
    PaymentNotPending,
    PoolExhausted,
    TicketEnded,
    TooManyLeases,
    UnknownPayment,
    UnknownTicket,
)
from ..domain.events import CreateRefused, LeaseStarted
from ..domain.gateway import Gateway
from ..domain.model import (
    Admission,
    Lease,
    LeaseEnd,
    LineItem,
    NewTicket,
    Payment,
    PaymentStatus,
    ReserveAction,
    ReserveEvent,
    Ticket,
    TicketStatus,
    callback_id_of,
    customer_key,
)
from ..domain.money import is_known_currency
from ..domain.transitions import check_ticket_transition
from ..store.tx import PaymentChange, Tx
from .core import PoolCore, Work, log, log_fields, lookup_key, short
from .policy import PoolPolicy
from .results import Checkout, FormConfig, Waiting

TOKEN_BYTES = 24  # 192 bits from the operating system's CSPRNG
MAX_QUANTITY = 10_000
# The largest amount any payment may have, configured maximum or not: the largest integer a
# JSON client in JavaScript holds exactly (and far inside what every store's integers hold).
AMOUNT_CEILING = 2**53 - 1
MAX_CUSTOMER_BYTES = 16_384


def new_token() -> str:
    """A payment token or ticket: 192 random bits, URL-safe. Never one that starts with
    ``-``, which a command line would take for an option (``callbackpool review close``)."""
    token = secrets.token_urlsafe(TOKEN_BYTES)
    while token.startswith("-"):
        token = secrets.token_urlsafe(TOKEN_BYTES)
    return token


def new_payment_id() -> str:
    """The name the shop knows a payment by: not a secret (only a merchant key reads it)."""
    return f"pay_{secrets.token_hex(12)}"


class Leasing(PoolCore):
    """Checkout, the waiting room, and a payment after checkout."""

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
        """Create a pending payment and lease it a callback path, in one transaction; when
        no slot may be had, a place in the waiting room (``Waiting``) with ``wait``, else
        PoolExhausted. Raises InvalidPayment (naming the field) and TooManyLeases."""
        try:
            line_items, total, currency = _price(
                self._gateway, self._policy, amount, currency, items
            )
            customer = _customer_data(customer)
            if type(priority) is not int or not 0 <= priority <= self._policy.max_priority:
                limit = self._policy.max_priority
                raise InvalidPayment("priority", f"must be an integer from 0 to {limit}")
        except InvalidPayment:
            self._emit([CreateRefused(reason="invalid")])
            raise
        try:
            return self._lease_new_payment(total, currency, line_items, customer, priority, wait)
        except (PoolExhausted, TooManyLeases) as refused:
            reason = "pool_exhausted" if isinstance(refused, PoolExhausted) else "customer_cap"
            self._emit([CreateRefused(reason=reason)])
            raise

    def _lease_new_payment(
        self,
        total: int,
        currency: str,
        line_items: tuple[LineItem, ...],
        customer: dict[str, Any],
        priority: int,
        wait: bool,
    ) -> Checkout | Waiting:
        token = new_token()
        started = time.perf_counter()
        policy = self._policy
        refusal: PoolExhausted | None = None
        result: Checkout | Waiting
        with self._writing() as (tx, work):
            self._expire_due(tx, work)
            self._check_customer_cap(tx, customer_key(customer))
            lease = self._admit(tx, token, total, priority)
            if lease is None and _activate_reserve(policy, tx):
                lease = self._admit(tx, token, total, priority)
            if lease is not None:
                result = self._open_checkout(tx, lease, currency, line_items, customer)
                self._count(tx, Admission.LEASED)
            elif wait and tx.waiting_ahead(0, None) < policy.max_waiting_tickets:
                ticket = tx.insert_ticket(
                    NewTicket(
                        ticket=new_token(),
                        priority=priority,
                        amount=total,
                        currency=currency,
                        items=line_items,
                        customer=customer,
                        expires_at=tx.now + policy.ticket_timeout,
                    )
                )
                self._count(tx, Admission.WAITED)
                result = self._waiting(tx, ticket)
                log.info(
                    "ticket %s waits at position %d (priority %d, amount %d)",
                    short(ticket.ticket),
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

    def _admit(
        self, tx: Tx, token: str, amount: int, priority: int, ticket_id: int | None = None
    ) -> Lease | None:
        """Lease a slot to ``token`` if the free slots outnumber the waiting tickets served
        before this request plus the slots kept for higher priorities."""
        policy = self._policy
        kept = policy.reserved_slots_for_priority if priority < policy.priority_threshold else 0
        ahead = tx.waiting_ahead(priority, ticket_id)
        if ahead or kept:
            tx.lock_admission()
            ahead = tx.waiting_ahead(priority, ticket_id)  # again, now that it is our turn
            if tx.free_slot_count() - ahead <= kept:
                return None
        return tx.acquire_slot(
            token=token,
            amount=amount,
            expires_at=tx.now + policy.lock_timeout,
            allow_same_amount_tainted=policy.reuse_same_amount_tainted,
        )

    def _open_checkout(
        self,
        tx: Tx,
        lease: Lease,
        currency: str,
        items: tuple[LineItem, ...],
        customer: Mapping[str, Any],
    ) -> Checkout:
        payment = Payment(
            token=lease.token,
            id=new_payment_id(),
            amount=lease.amount,
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
        return self._checkout(payment, lease)

    def _checkout(self, payment: Payment, lease: Lease) -> Checkout:
        url = self._policy.callback_url(lease.path)
        form = FormConfig(
            action_url=self._gateway.action_url,
            callback_path=lease.path,
            callback_url=url,
            fields=self._gateway.form_fields(
                return_url=url, items=payment.items, token=lease.token
            ),
        )
        return Checkout(payment=payment, lease=lease, form=form)

    def _announce_lease(self, lease: Lease, amount: int, started: float) -> None:
        """Once the lease has committed: tell the observers (timed to the commit) and the log."""
        self._emit([LeaseStarted(lease=lease, seconds=time.perf_counter() - started)])
        log.info(
            "lease %d started on %s for payment %s (amount %d, until %s)",
            lease.id,
            lease.path,
            short(lease.token),
            amount,
            lease.expires_at.isoformat(),
            extra=log_fields("lease_started", lease.path, lease.id, lease.token, amount=amount),
        )

    def _count(self, tx: Tx, admission: Admission) -> None:
        # The peak of busy slots is only needed to decide when a reserve may drain.
        busy = (
            tx.busy_slot_count()
            if self._policy.reserve_paths and admission in (Admission.LEASED, Admission.GRANTED)
            else None
        )
        tx.record_admission(admission, busy)

    def _check_customer_cap(self, tx: Tx, key: str | None) -> None:
        cap = self._policy.max_live_leases_per_customer
        if key is None or cap <= 0:
            return
        held = tx.customer_claims(key)
        if len(held) >= cap:
            log.warning("create refused: a customer already holds %d leases or tickets", len(held))
            raise TooManyLeases(min(held), tx.now)

    # --- the waiting room ------------------------------------------------------------------

    def poll_ticket(self, ticket: str) -> Checkout | Waiting:
        """A waiting customer's poll: the granted payment once the ticket's turn has come
        and a slot is free (again on every later poll), else its place in the queue; it
        keeps the ticket alive for ``ticket_timeout``. Raises UnknownTicket or TicketEnded.
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
            elif not self._still_open(tx, found.open_payment):
                # The shop's payment it waits for ended meanwhile (cancelled, expired).
                self._end_ticket(tx, found, TicketStatus.CANCELLED)
                failure = TicketEnded(TicketStatus.CANCELLED.value)
            else:
                result = self._take_turn(tx, work, found)
                if isinstance(result, Checkout):
                    fresh = result.lease
        if failure is not None:
            raise failure
        if fresh is not None:
            self._announce_lease(fresh, fresh.amount, started)
        assert result is not None
        return result

    def cancel_ticket(self, ticket: str) -> None:
        """Leave the waiting room (the customer gave up). Raises UnknownTicket, or
        TicketEnded if the ticket is no longer waiting (a granted ticket's payment is
        cancelled with ``cancel_payment``)."""
        ticket = self._known_ticket(ticket)
        with self._store.transaction() as tx:  # it writes nothing before it may raise
            found = tx.get_ticket(ticket)
            if found is None:
                raise UnknownTicket()
            if found.status is not TicketStatus.WAITING:
                raise TicketEnded(found.status.value)
            self._end_ticket(tx, found, TicketStatus.CANCELLED)

    def _known_ticket(self, ticket: str) -> str:
        """``ticket`` if it names a ticket; UnknownTicket, from a read, if it does not."""
        ticket = lookup_key(ticket)
        with self._store.read() as tx:
            if tx.get_ticket(ticket) is None:
                raise UnknownTicket()
        return ticket

    def _take_turn(self, tx: Tx, work: Work, ticket: Ticket) -> Checkout | Waiting:
        waiting_payment = tx.get_payment(ticket.open_payment) if ticket.open_payment else None
        token = ticket.open_payment or new_token()
        lease = self._admit(tx, token, ticket.amount, ticket.priority, ticket.id)
        if lease is None:
            expires_at = tx.now + self._policy.ticket_timeout
            tx.touch_ticket(ticket.id, expires_at)
            return self._waiting(tx, replace(ticket, expires_at=expires_at))
        self._end_ticket(tx, ticket, TicketStatus.GRANTED, token)
        self._count(tx, Admission.GRANTED)
        if waiting_payment is not None:
            return self._start_attempt(tx, work, waiting_payment, lease)
        return self._open_checkout(tx, lease, ticket.currency, ticket.items, ticket.customer)

    def _still_open(self, tx: Tx, token: str | None) -> bool:
        payment = tx.get_payment(token) if token is not None else None
        return token is None or (payment is not None and payment.status is PaymentStatus.OPEN)

    def _start_attempt(self, tx: Tx, work: Work, payment: Payment, lease: Lease) -> Checkout:
        """A shop's open payment becomes pending on ``lease``: one attempt at the gateway."""
        change = PaymentChange(
            status=PaymentStatus.PENDING, lease_id=lease.id, callback_path=lease.path
        )
        self._transition(tx, work, payment, change, f"attempt on lease {lease.id}")
        pending = replace(
            payment, status=PaymentStatus.PENDING, lease_id=lease.id, callback_path=lease.path
        )
        return self._checkout(pending, lease)

    def _granted(self, tx: Tx, ticket: Ticket) -> Checkout:
        assert ticket.payment_token is not None
        payment = tx.get_payment(ticket.payment_token)
        assert payment is not None
        assert payment.lease_id is not None
        lease = tx.get_lease(payment.lease_id)
        assert lease is not None
        return self._checkout(payment, lease)

    def _waiting(self, tx: Tx, ticket: Ticket) -> Waiting:
        return Waiting(
            ticket=ticket.ticket,
            position=tx.waiting_ahead(ticket.priority, ticket.id) + 1,
            priority=ticket.priority,
            retry_after_seconds=self._policy.ticket_poll_seconds,
            expires_at=ticket.expires_at,
        )

    def _end_ticket(
        self, tx: Tx, ticket: Ticket, status: TicketStatus, token: str | None = None
    ) -> None:
        check_ticket_transition(ticket.status, status)
        if tx.end_ticket(ticket.id, status, token):
            log.info(
                "ticket %s %s%s",
                short(ticket.ticket),
                status.value,
                f": payment {short(token)}" if token else "",
            )

    # --- a payment after checkout ----------------------------------------------------------

    def get_payment(self, token: str) -> Payment:
        """The payment as it stands (a lease past its expiry is expired first)."""
        token = lookup_key(token)
        with self._store.read() as tx:
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
        if payment.status is PaymentStatus.OPEN and _due(payment.expires_at, now):
            with self._writing() as (tx, work):
                self._expire_open(tx, work)  # a shop's payment nobody paid in time
            return self.get_payment(token)
        return payment

    def receipt(self, ref: str, key: str) -> Payment | None:
        """The payment a gateway return was applied to, for the return's success page; None,
        alike, for an unknown reference, a wrong key and a return applied to no payment."""
        callback_id = callback_id_of(ref)
        with self._store.read() as tx:
            record = tx.get_callback(callback_id) if callback_id is not None else None
        expected = (record.receipt or "") if record is not None else ""
        # Compared even when nothing is expected, so that no answer comes back quicker.
        matches = hmac.compare_digest(expected.encode(), key.encode()) and bool(expected)
        if record is None or not matches or record.payment_token is None:
            return None
        return self.get_payment(record.payment_token)

    def poll_payment(self, token: str) -> Payment:
        """The checkout page's status poll: the payment as it stands, and its heartbeat
        (docs/design.md#heartbeat): a poll writes only when the recorded heartbeat is older
        than ``heartbeat_slack``."""
        token = lookup_key(token)
        with self._store.read() as tx:
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
        timeout = self._policy.heartbeat_timeout
        if timeout > timedelta(0) and (
            lease.heartbeat_until is None or lease.heartbeat_until < now + timeout
        ):
            with self._store.transaction() as tx:
                tx.record_heartbeat(lease.id, tx.now + timeout + self._policy.heartbeat_slack)
        return payment

    def cancel_payment(self, token: str) -> Payment:
        """Cancel a pending (or open) payment: its lease ends and leaves a taint, for the
        customer may still be paying on the gateway's page. Raises UnknownPayment or
        PaymentNotPending."""
        token = lookup_key(token)
        with self._store.read() as tx:
            if tx.get_payment(token) is None:
                raise UnknownPayment()
        with self._writing() as (tx, work):
            lease = tx.live_lease_of_payment(token)
            if lease is not None:
                self._expire_due(tx, work, lease.slot_id)  # a lease past expiry has ended
            payment = tx.get_payment(token)
            if payment is None:
                raise UnknownPayment()
            hosted = payment.hosted
            if payment.status not in (PaymentStatus.PENDING, PaymentStatus.OPEN):
                current = payment.status
            else:
                live = tx.live_lease_of_payment(token)
                if live is not None:
                    self._end_lease(tx, work, live, LeaseEnd.CANCELLED, taint=True)
                change = PaymentChange(status=PaymentStatus.CANCELLED)
                self._transition(tx, work, payment, change, "cancelled")
                cancelled = tx.get_payment(token)
                assert cancelled is not None
                return cancelled
        # Raised after the transaction committed, so an expiry it made is kept.
        raise PaymentNotPending(current.value, "open or pending" if hosted else "pending")


def _due(moment: datetime | None, now: datetime) -> bool:
    return moment is not None and moment <= now


# --- a request checked and priced ------------------------------------------------------------


def _price(
    gateway: Gateway,
    policy: PoolPolicy,
    amount: int | None,
    currency: str | None,
    items: Mapping[str, int] | None,
) -> tuple[tuple[LineItem, ...], int, str]:
    """The line items, their total and the currency of a payment request."""
    currency = gateway.currency if currency is None else currency
    if not isinstance(currency, str) or not is_known_currency(currency):
        raise InvalidPayment("currency", f"unknown currency {currency!r}")
    if currency != gateway.currency:
        raise InvalidPayment("currency", f"this payment form takes {gateway.currency}")
    if amount is not None and (type(amount) is not int or amount <= 0):
        raise InvalidPayment("amount", "must be a positive integer of minor units")
    if items:
        for code, quantity in items.items():
            if type(quantity) is not int or not 1 <= quantity <= MAX_QUANTITY:
                raise InvalidPayment(
                    "items", f"quantity of {code!r} must be an integer from 1 to {MAX_QUANTITY}"
                )
        line_items = gateway.price_items(items)
        total = sum(item.total for item in line_items)
        if amount is not None and amount != total:
            raise InvalidPayment("amount", f"does not match the items, which total {total}")
    elif amount is None:
        raise InvalidPayment("amount", "is required (or name the items)")
    else:
        found = gateway.items_for_amount(amount)
        if found is None:
            raise InvalidPayment("items", "this payment form charges by line items: name them")
        line_items, total = found, amount
    if total <= 0:
        raise InvalidPayment("amount", "must be greater than zero")
    if total > policy.max_amount:
        raise InvalidPayment("amount", f"must not exceed {policy.max_amount}")
    if total > AMOUNT_CEILING:
        raise InvalidPayment("amount", f"must not exceed {AMOUNT_CEILING}")
    return line_items, total, currency


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


# --- reserve paths (docs/design.md#reserve-paths-and-slot-health), in the caller's write -----


def _activate_reserve(policy: PoolPolicy, tx: Tx) -> bool:
    """Put the reserve in rotation if this request, which found no slot, takes the share
    of requests not served at once past the target. True if it did."""
    if not policy.reserve_paths or _activated_at(tx) is not None:
        return False
    counts = tx.admissions_since(tx.now - policy.capacity_window)
    counts = replace(counts, refused=counts.refused + 1)  # this request
    if counts.not_served_at_once <= policy.capacity_target:
        return False
    paths = tx.set_reserve_standby(False)
    if not paths:
        return False
    reason = (
        f"{counts.waited + counts.refused} of {counts.requests} requests in the last "
        f"{_minutes(policy.capacity_window)} found no slot at once "
        f"({counts.not_served_at_once:.1%}, target {policy.capacity_target:.1%})"
    )
    event = tx.insert_reserve_event(ReserveAction.ACTIVATED, paths, reason)
    log.warning("reserve paths activated: %s (%s)", ", ".join(paths), event.reason)
    return True


def drain_reserve(policy: PoolPolicy, tx: Tx) -> ReserveEvent | None:
    """The sweeper's part: take the reserve out of rotation once the load has fallen."""
    activated_at = _activated_at(tx) if policy.reserve_paths else None
    since = tx.now - policy.capacity_window
    if activated_at is None or activated_at > since:
        return None
    counts = tx.admissions_since(since)
    main = len(policy.callback_paths)
    if counts.waited or counts.refused or counts.peak_busy >= main:
        return None
    paths = tx.set_reserve_standby(True)
    reason = (
        f"the last {_minutes(policy.capacity_window)}: nobody waited or was turned "
        f"away, at most {counts.peak_busy} slots busy at once for {main} main paths"
    )
    event = tx.insert_reserve_event(ReserveAction.DRAINED, paths, reason)
    log.warning("reserve paths drained: %s (%s)", ", ".join(paths) or "-", event.reason)
    return event


def _activated_at(tx: Tx) -> datetime | None:
    """When the reserve was put in rotation, if it is in rotation now."""
    latest = tx.reserve_events(limit=1)
    return latest[0].at if latest and latest[0].action is ReserveAction.ACTIVATED else None


def _minutes(span: timedelta) -> str:
    return f"{span.total_seconds() / 60:g} min"
