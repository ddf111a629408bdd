"""Checkout: a new payment leased a callback path, or a place in the waiting room.

``create`` prices the request (``pricing.py``), checks the customer's cap and, in one write
transaction, leases a slot, puts the reserve in rotation when the load calls for it
(``reserve.py``), or gives the request a ticket. A waiting ticket is served by priority,
then arrival, when it polls and a slot is free. Every request is counted for the capacity
window.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from ..domain.errors import (
    InvalidPayment,
    PoolExhausted,
    TicketEnded,
    TooManyLeases,
    UnknownTicket,
)
from ..domain.events import CreateRefused, LeaseStarted
from ..domain.model import (
    Admission,
    Lease,
    LineItem,
    Payment,
    PaymentStatus,
    Ticket,
    TicketStatus,
    customer_key,
)
from ..domain.transitions import check_ticket_transition
from ..ports import NewTicket, Tx
from .core import PoolCore, log, log_fields, lookup_key, short
from .pricing import checked_priority, customer_data, price
from .reserve import activate_reserve
from .results import Checkout, FormConfig, Waiting

TOKEN_BYTES = 24  # 192 bits from the operating system's CSPRNG


class Checkouts:
    """Creating payments, leasing them slots, and the waiting room."""

    def __init__(self, core: PoolCore) -> None:
        self.core = core

    def create(
        self,
        *,
        amount: int | None,
        currency: str | None,
        items: Mapping[str, int] | None,
        customer: Mapping[str, Any] | None,
        priority: int,
        wait: bool,
    ) -> Checkout | Waiting:
        try:
            line_items, total, currency = price(
                self.core.gateway, self.core.policy, amount, currency, items
            )
            customer = customer_data(customer)
            priority = checked_priority(self.core.policy, priority)
        except InvalidPayment:
            self.core.emit([CreateRefused(reason="invalid")])
            raise
        token = secrets.token_urlsafe(TOKEN_BYTES)
        started = time.perf_counter()
        try:
            return self._lease_new_payment(
                token, total, currency, line_items, customer, priority, wait, started
            )
        except PoolExhausted:
            self.core.emit([CreateRefused(reason="pool_exhausted")])
            raise
        except TooManyLeases:
            self.core.emit([CreateRefused(reason="customer_cap")])
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
        policy = self.core.policy
        refusal: PoolExhausted | None = None
        result: Checkout | Waiting
        lease: Lease | None
        with self.core.writing() as (tx, work):
            self.core.expire_due(tx, work)
            self._check_customer_cap(tx, customer_key(customer))
            lease = self._admit(tx, token, total, priority)
            if lease is None and activate_reserve(policy, tx):
                lease = self._admit(tx, token, total, priority)
            if lease is not None:
                payment = self._open_payment(
                    tx, token, total, currency, line_items, customer, lease
                )
                self._count(tx, Admission.LEASED)
                result = self._checkout(payment, lease)
            elif wait and policy.max_waiting > 0 and tx.waiting_ahead(0, None) < policy.max_waiting:
                ticket = tx.insert_ticket(
                    NewTicket(
                        ticket=secrets.token_urlsafe(TOKEN_BYTES),
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
        """Lease a slot to ``token`` if this request may have one now: the free slots must
        outnumber the waiting tickets served before it, plus the slots kept for higher
        priorities. A request without a ticket never jumps the queue."""
        policy = self.core.policy
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

    def _checkout(self, payment: Payment, lease: Lease) -> Checkout:
        url = self.core.policy.callback_url(lease.path)
        form = FormConfig(
            action_url=self.core.gateway.action_url,
            callback_path=lease.path,
            callback_url=url,
            fields=self.core.gateway.form_fields(
                return_url=url, items=payment.items, token=lease.token
            ),
        )
        return Checkout(payment=payment, lease=lease, form=form)

    def _announce_lease(self, lease: Lease, amount: int, started: float) -> None:
        """Once the lease has committed: observers hear of it (timed to the commit), the log
        says."""

        def announce() -> None:
            self.core.emit([LeaseStarted(lease=lease, seconds=time.perf_counter() - started)])
            log.info(
                "lease %d started on %s for payment %s (amount %d, until %s)",
                lease.id,
                lease.path,
                short(lease.token),
                amount,
                lease.expires_at.isoformat(),
                extra=log_fields("lease_started", lease.path, lease.id, lease.token, amount=amount),
            )

        self.core.store.after_commit(announce)

    def _count(self, tx: Tx, admission: Admission) -> None:
        # The peak of busy slots is only needed to decide when a reserve may drain.
        busy = (
            tx.busy_slot_count()
            if self.core.policy.reserve_paths and admission in (Admission.LEASED, Admission.GRANTED)
            else None
        )
        tx.record_admission(admission, busy)

    def _check_customer_cap(self, tx: Tx, key: str | None) -> None:
        cap = self.core.policy.max_live_leases_per_customer
        if key is None or cap <= 0:
            return
        held = tx.customer_claims(key)
        if len(held) >= cap:
            log.warning("create refused: a customer already holds %d leases or tickets", len(held))
            raise TooManyLeases(min(held), tx.now)

    # --- the waiting room ------------------------------------------------------------------

    def poll_ticket(self, ticket: str) -> Checkout | Waiting:
        ticket = self._known_ticket(ticket)
        failure: UnknownTicket | TicketEnded | None = None
        result: Checkout | Waiting | None = None
        fresh: Lease | None = None  # a lease granted by this poll
        started = time.perf_counter()
        with self.core.writing() as (tx, work):
            self.core.expire_due(tx, work)
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

    def cancel_ticket(self, ticket: str) -> None:
        ticket = self._known_ticket(ticket)
        failure: UnknownTicket | TicketEnded | None = None
        with self.core.store.transaction() as tx:
            found = tx.get_ticket(ticket)
            if found is None:
                failure = UnknownTicket()
            elif found.status is not TicketStatus.WAITING:
                failure = TicketEnded(found.status.value)
            else:
                self._end_ticket(tx, found, TicketStatus.CANCELLED)
        if failure is not None:
            raise failure

    def _known_ticket(self, ticket: str) -> str:
        """``ticket`` if it names a ticket; UnknownTicket, from a read, if it does not (so that
        guessing tickets takes no write turn, and a malformed one is answered alike)."""
        ticket = lookup_key(ticket)
        with self.core.store.read() as tx:
            if tx.get_ticket(ticket) is None:
                raise UnknownTicket()
        return ticket

    def _take_turn(self, tx: Tx, ticket: Ticket) -> Checkout | Waiting:
        token = secrets.token_urlsafe(TOKEN_BYTES)
        lease = self._admit(tx, token, ticket.amount, ticket.priority, ticket.id)
        if lease is None:
            expires_at = tx.now + self.core.policy.ticket_timeout
            tx.touch_ticket(ticket.id, expires_at)
            return self._waiting(tx, replace(ticket, expires_at=expires_at))
        payment = self._open_payment(
            tx, token, ticket.amount, ticket.currency, ticket.items, ticket.customer, lease
        )
        self._end_ticket(tx, ticket, TicketStatus.GRANTED, token)
        self._count(tx, Admission.GRANTED)
        return self._checkout(payment, lease)

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
            retry_after_seconds=max(1, round(self.core.policy.ticket_poll.total_seconds())),
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
