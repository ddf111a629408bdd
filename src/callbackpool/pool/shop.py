"""Payments created by the shop's server (docs/integrating.md): created ``open`` with the
shop's order reference and return URLs, leased a slot only when the customer presses Pay on
the hosted payment page, and read back by the id the shop keeps."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import quote

from ..domain.errors import (
    IdempotencyConflict,
    InvalidPayment,
    PaymentNotPending,
    PoolExhausted,
    UnknownPayment,
)
from ..domain.model import (
    Admission,
    Event,
    Lease,
    NewTicket,
    Payment,
    PaymentStatus,
)
from ..store.tx import Tx
from .core import log
from .documents import AttemptResult, attempt_results
from .leasing import Leasing, _customer_data, _price, new_payment_id, new_token
from .policy import shop_origin
from .results import Checkout, Waiting

MAX_ORDER_REFERENCE = 200
MAX_METADATA_KEYS = 20
MAX_METADATA_BYTES = 4096
MAX_EXPIRY_MINUTES = 7 * 24 * 60
PAGE_LIMIT = 100


@dataclass(frozen=True, kw_only=True)
class ShopPaymentRequest:
    """What the shop's server asks for; checked by ``create_shop_payment``."""

    order_reference: str
    success_url: str
    cancel_url: str
    amount: int | None = None
    currency: str | None = None
    items: Mapping[str, int] | None = None
    metadata: Mapping[str, str] | None = None
    customer: Mapping[str, Any] | None = None
    expires_in_minutes: int = 60


@dataclass(frozen=True, kw_only=True)
class PaymentPage:
    """Payments newest first, each with its attempts; ``next_cursor`` names the last one
    when more follow."""

    payments: tuple[tuple[Payment, tuple[AttemptResult, ...]], ...]
    next_cursor: str | None


class ShopPayments(Leasing):
    """The shop's server's payments and the hosted page's attempts."""

    def create_shop_payment(
        self, request: ShopPaymentRequest, *, idempotency_key: str | None = None
    ) -> tuple[Payment, bool]:
        """An ``open`` payment, and True; or, for an ``idempotency_key`` seen before with
        the same request, that payment again and False. Raises InvalidPayment naming the
        field, IdempotencyConflict for a key seen with another request."""
        line_items, total, currency = _price(
            self._gateway, self._policy, request.amount, request.currency, request.items
        )
        reference = request.order_reference
        if not 1 <= len(reference) <= MAX_ORDER_REFERENCE:
            raise InvalidPayment("orderReference", f"must be 1 to {MAX_ORDER_REFERENCE} characters")
        _storable("orderReference", reference)
        metadata = _metadata(request.metadata)
        customer = _customer_data(request.customer)
        success_url = self._shop_url("successUrl", request.success_url)
        cancel_url = self._shop_url("cancelUrl", request.cancel_url)
        minutes = request.expires_in_minutes
        if type(minutes) is not int or not 1 <= minutes <= MAX_EXPIRY_MINUTES:
            raise InvalidPayment(
                "expiresInMinutes", f"must be an integer from 1 to {MAX_EXPIRY_MINUTES}"
            )
        fingerprint = _request_hash(
            reference, metadata, customer, success_url, cancel_url, minutes, total, line_items
        )
        with self._store.transaction() as tx:
            if idempotency_key is not None:
                earlier = tx.payment_by_idempotency_key(idempotency_key)
                if earlier is not None:
                    if earlier.request_hash != fingerprint:
                        raise IdempotencyConflict()
                    return earlier, False
            payment = Payment(
                token=new_token(),
                id=new_payment_id(),
                amount=total,
                currency=currency,
                status=PaymentStatus.OPEN,
                created_at=tx.now,
                updated_at=tx.now,
                items=line_items,
                customer=customer,
                expires_at=tx.now + timedelta(minutes=minutes),
                order_reference=reference,
                metadata=metadata,
                success_url=success_url,
                cancel_url=cancel_url,
                max_attempts=self._policy.max_attempts,
                idempotency_key=idempotency_key,
                request_hash=fingerprint,
            )
            tx.insert_payment(payment)
        log.info("payment %s created open for order %r (amount %d)", payment.id, reference, total)
        return payment, True

    def shop_payment(self, payment_id: str) -> tuple[Payment, tuple[AttemptResult, ...]]:
        """The payment the shop names by ``payment_id``, and its attempts, oldest first."""
        return self.payment_and_attempts(self._payment_by_id(payment_id).token)

    def payment_and_attempts(self, token: str) -> tuple[Payment, tuple[AttemptResult, ...]]:
        payment = self.get_payment(token)
        with self._store.read() as tx:
            return payment, self._attempts(tx, payment)

    def _attempts(self, tx: Tx, payment: Payment) -> tuple[AttemptResult, ...]:
        return attempt_results(self._gateway, tx.payment_attempts(payment.token))

    def shop_payments(
        self,
        *,
        order_reference: str | None = None,
        status: PaymentStatus | None = None,
        limit: int = 20,
        after: str | None = None,
    ) -> PaymentPage:
        """Payments newest first, ``limit`` at a time, after the cursor ``after``."""
        if type(limit) is not int or not 1 <= limit <= PAGE_LIMIT:
            raise InvalidPayment("limit", f"must be an integer from 1 to {PAGE_LIMIT}")
        _storable("orderReference", order_reference or "")
        _storable("after", after or "")
        with self._store.read() as tx:
            cursor = tx.payment_by_id(after) if after is not None else None
            if after is not None and cursor is None:
                raise InvalidPayment("after", "names no payment")
            found = tx.newest_payments(
                order_reference=order_reference, status=status, after=cursor, limit=limit + 1
            )
            page = tuple((p, self._attempts(tx, p)) for p in found[:limit])
        more = len(found) > limit
        return PaymentPage(payments=page, next_cursor=found[limit - 1].id if more else None)

    def events(self, *, after: str | None = None, limit: int = PAGE_LIMIT) -> tuple[Event, ...]:
        """The outbox's events oldest first, ``limit`` at a time, after the event ``after``
        (from the oldest kept, without). Raises InvalidPayment naming ``after`` for an id
        that names no event (never one, or one past ``eventRetentionDays``)."""
        if type(limit) is not int or not 1 <= limit <= PAGE_LIMIT:
            raise InvalidPayment("limit", f"must be an integer from 1 to {PAGE_LIMIT}")
        with self._store.read() as tx:
            seq = 0
            if after is not None:
                found = tx.event_seq(after) if after.startswith("evt_") else None
                if found is None:
                    raise InvalidPayment("after", "names no event")
                seq = found
            return tuple(tx.events_after(seq, limit))

    def cancel_shop_payment(self, payment_id: str) -> Payment:
        """Cancel an ``open`` or ``pending`` payment (a leased slot keeps its taint)."""
        return self.cancel_payment(self._payment_by_id(payment_id).token)

    def pay(self, token: str, *, wait: bool = False) -> Checkout | Waiting:
        """The hosted page's Pay: lease the open payment a slot for one attempt at the
        gateway; when none may be had, a place in the waiting room with ``wait`` (its turn
        leases this payment), else PoolExhausted. Raises UnknownPayment and
        PaymentNotPending (not open: paid, in progress, ended, or no attempt left)."""
        started = time.perf_counter()
        refusal: PoolExhausted | UnknownPayment | PaymentNotPending | None = None
        lease: Lease | None = None
        result: Checkout | Waiting | None = None
        policy = self._policy
        with self._writing() as (tx, work):
            self._expire_due(tx, work)
            self._expire_open(tx, work)
            tx.lock_payment(token)
            payment = tx.get_payment(token)
            if payment is None or not payment.hosted:
                refusal = UnknownPayment()
            elif payment.status is not PaymentStatus.OPEN:
                refusal = PaymentNotPending(payment.status.value, "open")
            elif (lease := self._admit(tx, token, payment.amount, 0)) is not None:
                self._count(tx, Admission.LEASED)
                result = self._start_attempt(tx, work, payment, lease)
            elif wait and tx.waiting_ahead(0, None) < policy.max_waiting_tickets:
                ticket = tx.insert_ticket(
                    NewTicket(
                        ticket=new_token(),
                        priority=0,
                        amount=payment.amount,
                        currency=payment.currency,
                        items=payment.items,
                        customer=payment.customer,
                        expires_at=tx.now + policy.ticket_timeout,
                        open_payment=token,
                    )
                )
                self._count(tx, Admission.WAITED)
                result = self._waiting(tx, ticket)
            else:
                self._count(tx, Admission.REFUSED)
                refusal = PoolExhausted(tx.earliest_lease_end(), tx.now)
        # Raised after the transaction committed, so that what it expired stays expired.
        if refusal is not None:
            raise refusal
        assert result is not None
        if lease is not None:
            self._announce_lease(lease, lease.amount, started)
        return result

    def _payment_by_id(self, payment_id: str) -> Payment:
        with self._store.read() as tx:
            payment = tx.payment_by_id(payment_id) if payment_id.startswith("pay_") else None
        if payment is None:
            raise UnknownPayment()
        return payment

    def _shop_url(self, field: str, url: str) -> str:
        """``url`` if it is absolute, https (http for loopback), on a listed shop origin."""
        if not isinstance(url, str) or len(url) > 2000:
            raise InvalidPayment(field, "must be a URL of at most 2000 characters")
        checked = url.replace("{PAYMENT_ID}", "x").replace("{ORDER_REFERENCE}", "x")
        origin = shop_origin(checked)
        if origin is None:
            raise InvalidPayment(field, "must be an absolute https URL (http only for loopback)")
        if origin not in self._policy.shop_origins:
            raise InvalidPayment(field, f"its origin {origin} is not listed in shopOrigins")
        return url


def shop_redirect(url: str, payment: Payment) -> str:
    """A shop's return URL with the payment's id and order reference filled in."""
    return url.replace("{PAYMENT_ID}", quote(payment.id, safe="")).replace(
        "{ORDER_REFERENCE}", quote(payment.order_reference or "", safe="")
    )


def _storable(field: str, text: str) -> None:
    """Text a database column can hold: PostgreSQL's text refuses NUL."""
    if "\x00" in text:
        raise InvalidPayment(field, "must not contain a NUL character")


def _metadata(metadata: Mapping[str, str] | None) -> dict[str, str]:
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise InvalidPayment("metadata", "must be an object of string values")
    if len(metadata) > MAX_METADATA_KEYS:
        raise InvalidPayment("metadata", f"must have at most {MAX_METADATA_KEYS} keys")
    if len(json.dumps(dict(metadata)).encode()) > MAX_METADATA_BYTES:
        raise InvalidPayment("metadata", f"must not exceed {MAX_METADATA_BYTES} bytes as JSON")
    return dict(metadata)


def _request_hash(*parts: object) -> str:
    """What an idempotency key is compared by: the request as it was checked."""
    encoded = json.dumps(parts, sort_keys=True, default=repr, separators=(",", ":"))
    return hashlib.sha256(encoded.encode()).hexdigest()
