"""A payment after checkout: read, polled by its checkout page, cancelled, and the receipt
that a return's success page shows.

Lookups that name nothing are answered from a read, so that guessing tokens never takes a
write turn from the pool's real work; a lease found past its expiry (or its heartbeat) is
ended first, in a write transaction, so that what is answered is what now stands.
"""

from __future__ import annotations

import hmac
from datetime import datetime, timedelta

from ..domain.errors import PaymentNotPending, UnknownPayment
from ..domain.model import LeaseEnd, Payment, PaymentStatus, callback_id_of
from ..store.tx import PaymentChange
from .core import PoolCore, lookup_key


class Payments:
    """Reading, polling and cancelling payments."""

    def __init__(self, core: PoolCore) -> None:
        self.core = core

    def get(self, token: str) -> Payment:
        token = lookup_key(token)
        with self.core.store.read() as tx:
            payment = tx.get_payment(token)
            now = tx.now
        if payment is None:
            raise UnknownPayment()
        if payment.status is PaymentStatus.PENDING and _due(payment.expires_at, now):
            with self.core.writing() as (tx, work):
                lease = tx.live_lease_of_payment(token)
                if lease is not None:
                    self.core.expire_due(tx, work, lease.slot_id)
            return self.get(token)
        return payment

    def receipt(self, ref: str, key: str) -> Payment | None:
        callback_id = callback_id_of(ref)
        with self.core.store.read() as tx:
            record = tx.get_callback(callback_id) if callback_id is not None else None
        expected = (record.receipt or "") if record is not None else ""
        # Compared even when nothing is expected, so that no answer comes back quicker.
        matches = hmac.compare_digest(expected.encode(), key.encode()) and bool(expected)
        if record is None or not matches or record.payment_token is None:
            return None
        return self.get(record.payment_token)

    def poll(self, token: str) -> Payment:
        token = lookup_key(token)
        with self.core.store.read() as tx:
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
            with self.core.writing() as (tx, work):
                self.core.expire_due(tx, work, lease.slot_id)
            return self.get(token)
        policy = self.core.policy
        timeout = policy.heartbeat_timeout
        if timeout > timedelta(0) and (
            lease.heartbeat_until is None or lease.heartbeat_until < now + timeout
        ):
            with self.core.store.transaction() as tx:
                tx.record_heartbeat(lease.id, tx.now + timeout + policy.heartbeat_slack)
        return payment

    def cancel(self, token: str) -> Payment:
        token = lookup_key(token)
        # A token that names nothing is answered from a read: guessing tokens here must not
        # take the write turn from the pool's real work.
        with self.core.store.read() as tx:
            if tx.get_payment(token) is None:
                raise UnknownPayment()
        with self.core.writing() as (tx, work):
            lease = tx.live_lease_of_payment(token)
            if lease is not None:
                self.core.expire_due(tx, work, lease.slot_id)  # a lease past expiry has ended
            payment = tx.get_payment(token)
            if payment is None:
                raise UnknownPayment()
            if payment.status is not PaymentStatus.PENDING:
                current = payment.status
            else:
                self.core.end_live_lease(tx, work, token, LeaseEnd.CANCELLED)
                self.core.transition(
                    tx, work, payment, PaymentChange(status=PaymentStatus.CANCELLED), "cancelled"
                )
                cancelled = tx.get_payment(token)
                assert cancelled is not None
                return cancelled
        # Raised after the transaction committed, so an expiry it made is kept.
        raise PaymentNotPending(current.value)


def _due(moment: datetime | None, now: datetime) -> bool:
    return moment is not None and moment <= now
