"""A store in the process's memory: the simulator's, and a reference for the port.

It keeps the pool's tables as dictionaries of frozen value objects. Transactions are
serialised by one lock; a write transaction keeps an undo log and rolls every change back
if it raises, so it commits whole or not at all like the others. Nothing survives the
process. It passes the same behaviour suite as SQLite (tests/store).
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from ..clock import Clock, SystemClock
from ..domain.model import (
    Admission,
    AdmissionCounts,
    CallbackOutcome,
    CallbackRecord,
    Candidate,
    HoldingTimes,
    Lease,
    LeaseEnd,
    LeaseSpan,
    Payment,
    PaymentStatus,
    ReserveAction,
    ReserveEvent,
    Review,
    SlotHealth,
    SlotView,
    Ticket,
    TicketStatus,
)
from ..domain.model import customer_key as _customer_key
from ..domain.resolution import OpenAmbiguity
from ..ports import (
    CallbackResolution,
    NewCallback,
    NewReview,
    NewTicket,
    PaymentChange,
    SlotRow,
    SlotSync,
    UsageRow,
)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MINUTE = timedelta(minutes=1)
_ABSENT = object()
_V = TypeVar("_V")


@dataclass(frozen=True, kw_only=True)
class _Slot:
    id: int
    path: str
    active: bool = True
    reserve: bool = False
    standby: bool = False
    live_lease_id: int | None = None
    usage_count: int = 0
    last_acquired_at: datetime | None = None
    last_released_at: datetime | None = None
    health: SlotHealth = field(default_factory=SlotHealth)
    sidelined_at: datetime | None = None
    sidelined_by: str | None = None
    sidelined_reason: str | None = None


class _Tables:
    """Everything the store holds. Every dictionary is changed through ``MemoryTx._put``
    and ``MemoryTx._drop`` only, so that the undo log sees every change."""

    def __init__(self) -> None:
        self.sequences: dict[str, int] = {}
        self.slots: dict[int, _Slot] = {}
        self.slot_ids: dict[str, int] = {}
        self.leases: dict[int, Lease] = {}
        self.live_by_token: dict[str, int] = {}
        # Leases with a taint (past or not), by slot: the candidates beside the live lease.
        self.tainted: dict[int, dict[int, None]] = {}
        self.payments: dict[str, Payment] = {}
        self.callbacks: dict[int, CallbackRecord] = {}
        self.received: dict[int, None] = {}
        self.pn_refs: dict[str, tuple[int, str]] = {}
        # Approved ambiguous returns not settled yet, by path and amount.
        self.open_ambiguous: dict[tuple[str, int | None], dict[int, None]] = {}
        self.tickets: dict[int, Ticket] = {}
        self.ticket_ids: dict[str, int] = {}
        self.waiting: dict[int, None] = {}
        self.admissions: dict[int, tuple[int, int, int, int, int]] = {}
        self.reserve_events: dict[int, ReserveEvent] = {}
        self.reviews: dict[int, Review] = {}
        self.review_by_callback: dict[int, int] = {}


class MemoryStore:
    """The pool's tables in this process's memory."""

    def __init__(self, *, clock: Clock | None = None) -> None:
        self.clock: Clock = clock or SystemClock()
        self._tables = _Tables()
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        return "MemoryStore()"

    def migrate(self) -> list[str]:
        return []  # nothing to migrate: the tables are built with the store

    def pending_migrations(self) -> list[tuple[str, str]]:
        return []

    def transaction(self, *, durable: bool = True) -> AbstractContextManager[MemoryTx]:
        # Nothing here outlives the process: every commit is as durable as it gets.
        return _Transaction(self, writable=True)

    def read(self) -> AbstractContextManager[MemoryTx]:
        return _Transaction(self, writable=False)

    def after_commit(self, announce: Callable[[], None]) -> None:
        announce()  # a transaction has committed when it returns

    def loop_calls(self) -> None:
        return None  # every call runs on a worker thread

    def close(self) -> None:
        pass


class _Transaction:
    """Holds the store's lock for one transaction; rolls it back if it raises. (A class,
    not a generator: the simulator opens hundreds of thousands of these.)"""

    __slots__ = ("_store", "_tx", "_writable")

    def __init__(self, store: MemoryStore, *, writable: bool) -> None:
        self._store = store
        self._writable = writable

    def __enter__(self) -> MemoryTx:
        self._store._lock.acquire()
        self._tx = MemoryTx(self._store._tables, self._store.clock.now(), writable=self._writable)
        return self._tx

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        try:
            if kind is not None:
                self._tx.rollback()
        finally:
            self._store._lock.release()


class MemoryTx:
    """One transaction on the memory store, speaking the ``Tx`` port."""

    def __init__(self, tables: _Tables, now: datetime, *, writable: bool) -> None:
        self._t = tables
        self.now = now
        self._writable = writable
        self._undo: list[tuple[dict[Any, Any], Any, Any]] = []

    # --- the undo log ----------------------------------------------------------------------

    def _put(self, table: dict[Any, Any], key: Any, value: Any) -> None:
        assert self._writable, "a read transaction changed the store"
        self._undo.append((table, key, table.get(key, _ABSENT)))
        table[key] = value

    def _drop(self, table: dict[Any, Any], key: Any) -> None:
        if key in table:
            self._put(table, key, _ABSENT)
            del table[key]

    def rollback(self) -> None:
        for table, key, old in reversed(self._undo):
            if old is _ABSENT:
                table.pop(key, None)
            else:
                table[key] = old
        self._undo.clear()

    def _next_id(self, name: str) -> int:
        value = self._t.sequences.get(name, 0) + 1
        self._put(self._t.sequences, name, value)
        return value

    # --- slots -----------------------------------------------------------------------------

    def sync_slots(self, paths: Sequence[str], reserve_paths: Sequence[str] = ()) -> SlotSync:
        slots = self._t.slots
        reserve_in_rotation = any(s.active and s.reserve and not s.standby for s in slots.values())
        wanted = dict.fromkeys(paths, False) | dict.fromkeys(reserve_paths, True)
        added, reactivated, deactivated = [], [], []
        for path, reserve in wanted.items():
            standby = reserve and not reserve_in_rotation
            slot_id = self._t.slot_ids.get(path)
            if slot_id is None:
                slot_id = self._next_id("slots")
                self._put(
                    slots, slot_id, _Slot(id=slot_id, path=path, reserve=reserve, standby=standby)
                )
                self._put(self._t.slot_ids, path, slot_id)
                added.append(path)
                continue
            slot = slots[slot_id]
            if slot.reserve != reserve:
                slot = _changed(slot, reserve=reserve, standby=standby)
            if not slot.active:
                slot = _changed(slot, active=True)
                reactivated.append(path)
            self._put(slots, slot_id, slot)
        for slot in list(slots.values()):
            if slot.active and slot.path not in wanted:
                self._put(slots, slot.id, _changed(slot, active=False))
                deactivated.append(slot.path)
        return SlotSync(
            added=tuple(added), reactivated=tuple(reactivated), deactivated=tuple(deactivated)
        )

    def slot_by_path(self, path: str) -> SlotRow | None:
        slot_id = self._t.slot_ids.get(path)
        if slot_id is None:
            return None
        slot = self._t.slots[slot_id]
        return SlotRow(id=slot.id, path=slot.path, active=slot.active)

    def slot_views(self) -> list[SlotView]:
        return [
            SlotView(
                id=slot.id,
                path=slot.path,
                active=slot.active,
                usage_count=slot.usage_count,
                last_acquired_at=slot.last_acquired_at,
                last_released_at=slot.last_released_at,
                lease=None if slot.live_lease_id is None else self._t.leases[slot.live_lease_id],
                taints=len(self._taints(slot.id)),
                reserve=slot.reserve,
                standby=slot.standby,
                sidelined_at=slot.sidelined_at,
                sidelined_by=slot.sidelined_by,
                sidelined_reason=slot.sidelined_reason,
                health=slot.health,
            )
            for slot in sorted(self._t.slots.values(), key=lambda s: s.id)
        ]

    def usage(self) -> list[UsageRow]:
        ended: dict[int, dict[LeaseEnd, int]] = {}
        for lease in self._t.leases.values():
            if lease.end_reason is not None:
                counts = ended.setdefault(lease.slot_id, {})
                counts[lease.end_reason] = counts.get(lease.end_reason, 0) + 1
        return [
            UsageRow(
                path=slot.path,
                active=slot.active,
                usage_count=slot.usage_count,
                callbacks=ended.get(slot.id, {}).get(LeaseEnd.CALLBACK, 0),
                expiries=ended.get(slot.id, {}).get(LeaseEnd.EXPIRED, 0),
                last_acquired_at=slot.last_acquired_at,
                last_released_at=slot.last_released_at,
            )
            for slot in sorted(self._t.slots.values(), key=lambda s: s.id)
        ]

    # --- slot health -----------------------------------------------------------------------

    def _health(self, slot_id: int, **changes: Any) -> _Slot:
        slot = self._t.slots[slot_id]
        updated = _changed(slot, health=_changed(slot.health, **changes))
        self._put(self._t.slots, slot_id, updated)
        return updated

    def record_slot_return(self, slot_id: int, *, approved: bool) -> None:
        health = self._t.slots[slot_id].health
        self._health(
            slot_id,
            approvals=health.approvals + approved,
            declines=health.declines + (not approved),
            expiry_streak=0,
            last_return_at=self.now,
        )

    def record_late_return(self, slot_id: int) -> None:
        health = self._t.slots[slot_id].health
        self._health(slot_id, silent_expiries=max(health.silent_expiries - 1, 0))

    def record_slot_expiry(self, slot_id: int) -> int:
        health = self._t.slots[slot_id].health
        slot = self._health(
            slot_id,
            silent_expiries=health.silent_expiries + 1,
            expiry_streak=health.expiry_streak + 1,
        )
        return slot.health.expiry_streak

    def sideline_slot(self, slot_id: int, *, by: str, reason: str) -> bool:
        slot = self._t.slots[slot_id]
        if slot.sidelined_at is not None:
            return False
        sidelined = _changed(slot, sidelined_at=self.now, sidelined_by=by, sidelined_reason=reason)
        self._put(self._t.slots, slot_id, sidelined)
        return True

    def restore_slot(self, slot_id: int) -> bool:
        slot = self._t.slots[slot_id]
        if slot.sidelined_at is None:
            return False
        restored = _changed(
            slot,
            sidelined_at=None,
            sidelined_by=None,
            sidelined_reason=None,
            health=_changed(slot.health, expiry_streak=0),
        )
        self._put(self._t.slots, slot_id, restored)
        return True

    def free_slot_count(self) -> int:
        return sum(1 for slot in self._t.slots.values() if _free(slot))

    def busy_slot_count(self) -> int:
        return sum(1 for slot in self._t.slots.values() if slot.live_lease_id is not None)

    def set_reserve_standby(self, standby: bool) -> list[str]:
        changed = []
        for slot in sorted(self._t.slots.values(), key=lambda s: s.id):
            if slot.reserve and slot.active and slot.standby != standby:
                self._put(self._t.slots, slot.id, _changed(slot, standby=standby))
                changed.append(slot.path)
        return changed

    # --- leases ----------------------------------------------------------------------------

    def _live_leases(self, slot_id: int | None) -> list[Lease]:
        if slot_id is not None:
            live_id = self._t.slots[slot_id].live_lease_id
            return [] if live_id is None else [self._t.leases[live_id]]
        return [self._t.leases[lease_id] for lease_id in self._t.live_by_token.values()]

    def expire_due_leases(self, taint_window: timedelta, slot_id: int | None = None) -> list[Lease]:
        due = sorted(
            (lease for lease in self._live_leases(slot_id) if lease.expires_at <= self.now),
            key=lambda lease: lease.id,
        )
        return [
            self._end(lease, LeaseEnd.EXPIRED, lease.expires_at, lease.expires_at + taint_window)
            for lease in due
        ]

    def abandon_silent_leases(
        self, taint_window: timedelta, slot_id: int | None = None
    ) -> list[Lease]:
        silent = sorted(
            (
                lease
                for lease in self._live_leases(slot_id)
                if lease.heartbeat_until is not None
                and lease.heartbeat_until <= self.now
                and lease.heartbeat_until < lease.expires_at
            ),
            key=lambda lease: lease.id,
        )
        return [
            self._end(
                lease,
                LeaseEnd.ABANDONED,
                _given(lease.heartbeat_until),
                _given(lease.heartbeat_until) + taint_window,
            )
            for lease in silent
        ]

    def record_heartbeat(self, lease_id: int, until: datetime) -> bool:
        lease = self._t.leases.get(lease_id)
        if lease is None or not lease.is_live:
            return False
        current = lease.heartbeat_until
        if current is not None and not (self.now < current < until):
            return False
        self._put(self._t.leases, lease_id, _changed(lease, heartbeat_until=until))
        return True

    def get_lease(self, lease_id: int) -> Lease | None:
        return self._t.leases.get(lease_id)

    def acquire_slot(
        self, *, token: str, amount: int, expires_at: datetime, allow_same_amount_tainted: bool
    ) -> Lease | None:
        free = sorted((s for s in self._t.slots.values() if _free(s)), key=_lru)
        slot = next((s for s in free if not self._taints(s.id)), None)
        if slot is None:
            slot = next(
                (s for s in free if all(t.amount != amount for t in self._taints(s.id))), None
            )
        if slot is None and allow_same_amount_tainted and free:
            slot = free[0]
        if slot is None:
            return None
        lease = Lease(
            id=self._next_id("leases"),
            slot_id=slot.id,
            path=slot.path,
            token=token,
            amount=amount,
            acquired_at=self.now,
            expires_at=expires_at,
        )
        self._put(self._t.leases, lease.id, lease)
        self._put(self._t.live_by_token, token, lease.id)
        self._put(
            self._t.slots,
            slot.id,
            _changed(
                slot,
                live_lease_id=lease.id,
                usage_count=slot.usage_count + 1,
                last_acquired_at=self.now,
            ),
        )
        return lease

    def earliest_lease_end(self) -> datetime | None:
        return min((lease.expires_at for lease in self._live_leases(None)), default=None)

    def customer_claims(self, customer_key: str) -> list[datetime]:
        # One transaction at a time: counting and leasing are atomic here as they are.
        claims = [
            lease.expires_at
            for token, lease_id in self._t.live_by_token.items()
            if (lease := self._t.leases[lease_id]).expires_at > self.now
            and (payment := self._t.payments.get(token)) is not None
            and payment.customer_key == customer_key
        ]
        claims += [
            ticket.expires_at
            for ticket_id in self._t.waiting
            if (ticket := self._t.tickets[ticket_id]).expires_at > self.now
            and _customer_key(ticket.customer) == customer_key
        ]
        return claims

    def live_lease_of_payment(self, token: str) -> Lease | None:
        lease_id = self._t.live_by_token.get(token)
        return None if lease_id is None else self._t.leases[lease_id]

    def live_lease_on_path(self, path: str) -> Lease | None:
        slot_id = self._t.slot_ids.get(path)
        if slot_id is None:
            return None
        live_id = self._t.slots[slot_id].live_lease_id
        return None if live_id is None else self._t.leases[live_id]

    def live_leases(self) -> list[Lease]:
        return sorted(self._live_leases(None), key=lambda lease: lease.id)

    def lease_spans(self, since: datetime, limit: int = 100_000) -> list[LeaseSpan]:
        spans = [
            LeaseSpan(
                lease_id=lease.id,
                path=lease.path,
                acquired_at=lease.acquired_at,
                ended_at=lease.ended_at,
                end_reason=lease.end_reason,
            )
            for lease in self._t.leases.values()
            if lease.ended_at is None or lease.ended_at >= since
        ]
        return sorted(spans, key=lambda span: (span.acquired_at, span.lease_id))[:limit]

    def end_lease(
        self, lease_id: int, reason: LeaseEnd, taint_until: datetime | None
    ) -> Lease | None:
        lease = self._t.leases.get(lease_id)
        if lease is None or not lease.is_live:
            return None
        return self._end(lease, reason, self.now, taint_until)

    def _end(
        self, lease: Lease, reason: LeaseEnd, at: datetime, taint_until: datetime | None
    ) -> Lease:
        ended = _changed(lease, ended_at=at, end_reason=reason, taint_until=taint_until)
        self._put(self._t.leases, lease.id, ended)
        self._drop(self._t.live_by_token, lease.token)
        if taint_until is not None:
            taints = self._t.tainted.get(lease.slot_id)
            if taints is None:
                taints = {}
                self._put(self._t.tainted, lease.slot_id, taints)
            self._put(taints, lease.id, None)
        slot = self._t.slots[lease.slot_id]
        if slot.live_lease_id == lease.id:
            self._put(
                self._t.slots, slot.id, _changed(slot, live_lease_id=None, last_released_at=at)
            )
        return ended

    def _taints(self, slot_id: int) -> list[Lease]:
        """The slot's leases whose taint has not passed."""
        taints = self._t.tainted.get(slot_id)
        if not taints:
            return []
        leases = (self._t.leases[lease_id] for lease_id in taints)
        return [
            lease
            for lease in leases
            if lease.taint_until is not None and lease.taint_until > self.now
        ]

    def drop_taint(self, lease_id: int) -> None:
        lease = self._t.leases.get(lease_id)
        if lease is None or lease.taint_until is None:
            return
        self._put(self._t.leases, lease_id, _changed(lease, taint_until=None))
        self._drop(self._t.tainted.get(lease.slot_id, {}), lease_id)

    def drop_stale_taints(self) -> int:
        dropped = 0
        for taints in self._t.tainted.values():
            for lease_id in list(taints):
                lease = self._t.leases[lease_id]
                if lease.taint_until is not None and lease.taint_until <= self.now:
                    self._put(self._t.leases, lease_id, _changed(lease, taint_until=None))
                    self._drop(taints, lease_id)
                    dropped += 1
        return dropped

    def candidates(self, slot_id: int) -> list[Candidate]:
        leases = self._taints(slot_id) + self._live_leases(slot_id)
        return [
            Candidate(lease=lease, payment=self._t.payments[lease.token])
            for lease in sorted(leases, key=lambda lease: lease.id)
        ]

    # --- payments --------------------------------------------------------------------------

    def insert_payment(self, payment: Payment) -> None:
        if payment.token in self._t.payments:
            raise ValueError(f"payment {payment.token[:8]}… exists already")
        self._put(self._t.payments, payment.token, payment)

    def get_payment(self, token: str) -> Payment | None:
        return self._t.payments.get(token)

    def update_payment(self, token: str, expected: PaymentStatus, change: PaymentChange) -> bool:
        payment = self._t.payments.get(token)
        if payment is None or payment.status is not expected:
            return False
        fields = {
            name: getattr(change, name)
            for name in (
                "late",
                "pn_ref",
                "order_id",
                "auth_code",
                "card_type",
                "last4",
                "result_code",
                "error_message",
                "callback_id",
            )
            if getattr(change, name) is not None
        }
        updated = _changed(payment, status=change.status, updated_at=self.now, **fields)
        self._put(self._t.payments, token, updated)
        return True

    def payments(
        self,
        *,
        statuses: Sequence[PaymentStatus] = (),
        created_before: datetime | None = None,
        limit: int = 100,
    ) -> list[Payment]:
        found = [
            p
            for p in self._t.payments.values()
            if (not statuses or p.status in statuses)
            and (created_before is None or p.created_at < created_before)
        ]
        return sorted(found, key=lambda p: p.created_at)[:limit]

    # --- the waiting room ------------------------------------------------------------------

    def lock_admission(self) -> None:
        pass  # every transaction holds the store's one lock already

    def insert_ticket(self, ticket: NewTicket) -> Ticket:
        if ticket.ticket in self._t.ticket_ids:
            raise ValueError("ticket exists already")
        queued = Ticket(
            id=self._next_id("tickets"),
            ticket=ticket.ticket,
            priority=ticket.priority,
            amount=ticket.amount,
            currency=ticket.currency,
            items=ticket.items,
            customer=ticket.customer,
            status=TicketStatus.WAITING,
            created_at=self.now,
            expires_at=ticket.expires_at,
        )
        self._put(self._t.tickets, queued.id, queued)
        self._put(self._t.ticket_ids, queued.ticket, queued.id)
        self._put(self._t.waiting, queued.id, None)
        return queued

    def get_ticket(self, ticket: str) -> Ticket | None:
        ticket_id = self._t.ticket_ids.get(ticket)
        return None if ticket_id is None else self._t.tickets[ticket_id]

    def waiting_ahead(self, priority: int, ticket_id: int | None) -> int:
        ahead = 0
        for waiting_id in self._t.waiting:
            other = self._t.tickets[waiting_id]
            if other.expires_at > self.now and (
                other.priority > priority
                or (other.priority == priority and (ticket_id is None or other.id < ticket_id))
            ):
                ahead += 1
        return ahead

    def touch_ticket(self, ticket_id: int, expires_at: datetime) -> None:
        ticket = self._t.tickets[ticket_id]
        if ticket.status is TicketStatus.WAITING:
            self._put(self._t.tickets, ticket_id, _changed(ticket, expires_at=expires_at))

    def end_ticket(
        self, ticket_id: int, status: TicketStatus, payment_token: str | None = None
    ) -> bool:
        ticket = self._t.tickets.get(ticket_id)
        if ticket is None or ticket.status is not TicketStatus.WAITING:
            return False
        self._finish_ticket(ticket, status, self.now, payment_token)
        return True

    def _finish_ticket(
        self, ticket: Ticket, status: TicketStatus, at: datetime, payment_token: str | None
    ) -> None:
        ended = _changed(ticket, status=status, ended_at=at, payment_token=payment_token)
        self._put(self._t.tickets, ticket.id, ended)
        self._drop(self._t.waiting, ticket.id)

    def expire_stale_tickets(self) -> int:
        stale = [
            self._t.tickets[ticket_id]
            for ticket_id in self._t.waiting
            if self._t.tickets[ticket_id].expires_at <= self.now
        ]
        for ticket in stale:
            self._finish_ticket(ticket, TicketStatus.EXPIRED, ticket.expires_at, None)
        return len(stale)

    # --- capacity figures ------------------------------------------------------------------

    def record_admission(self, admission: Admission, busy: int | None = None) -> None:
        minute = _minute(self.now)
        leased, waited, refused, granted, peak = self._t.admissions.get(minute, (0, 0, 0, 0, 0))
        self._put(
            self._t.admissions,
            minute,
            (
                leased + (admission is Admission.LEASED),
                waited + (admission is Admission.WAITED),
                refused + (admission is Admission.REFUSED),
                granted + (admission is Admission.GRANTED),
                max(peak, busy or 0),
            ),
        )

    def admissions_since(self, since: datetime) -> AdmissionCounts:
        first = _minute(since)
        rows = [row for minute, row in self._t.admissions.items() if minute >= first]
        return AdmissionCounts(
            leased=sum(row[0] for row in rows),
            waited=sum(row[1] for row in rows),
            refused=sum(row[2] for row in rows),
            granted=sum(row[3] for row in rows),
            peak_busy=max((row[4] for row in rows), default=0),
        )

    def drop_admissions_before(self, before: datetime) -> int:
        # Minutes only grow: walk from the oldest one kept to the first one to keep.
        first = _minute(before)
        floor = self._t.sequences.get("admissions_floor")
        if floor is None:
            floor = min(self._t.admissions, default=first)
        dropped = 0
        for minute in range(floor, first):
            if minute in self._t.admissions:
                self._drop(self._t.admissions, minute)
                dropped += 1
        if first > floor:
            self._put(self._t.sequences, "admissions_floor", first)
        return dropped

    def holding_times_since(self, since: datetime) -> HoldingTimes:
        held = [
            (lease.ended_at - lease.acquired_at).total_seconds()
            for lease in self._t.leases.values()
            if lease.ended_at is not None and lease.ended_at >= since
        ]
        return HoldingTimes(ended=len(held), total_seconds=sum(held))

    def insert_reserve_event(
        self, action: ReserveAction, paths: Sequence[str], reason: str
    ) -> ReserveEvent:
        event = ReserveEvent(at=self.now, action=action, paths=tuple(paths), reason=reason)
        self._put(self._t.reserve_events, self._next_id("reserve_events"), event)
        return event

    def reserve_events(self, limit: int = 20) -> list[ReserveEvent]:
        newest = sorted(self._t.reserve_events.items(), reverse=True)[:limit]
        return [event for _, event in newest]

    def turn_aways_since(self, since: datetime) -> list[tuple[datetime, int]]:
        first = _minute(since)
        return sorted(
            (_EPOCH + minute * _MINUTE, row[2])
            for minute, row in self._t.admissions.items()
            if minute >= first and row[2]
        )

    def payment_counts(self) -> dict[PaymentStatus, int]:
        counts: dict[PaymentStatus, int] = {}
        for payment in self._t.payments.values():
            counts[payment.status] = counts.get(payment.status, 0) + 1
        return counts

    # --- callbacks -------------------------------------------------------------------------

    def insert_callback(self, callback: NewCallback) -> int:
        callback_id = self._next_id("callbacks")
        record = CallbackRecord(
            id=callback_id,
            path=callback.path,
            method=callback.method,
            params=callback.params,
            client_addr=callback.client_addr,
            received_at=self.now,
            outcome=CallbackOutcome.RECEIVED,
            receipt=callback.receipt,
        )
        self._put(self._t.callbacks, callback_id, record)
        self._put(self._t.received, callback_id, None)
        return callback_id

    def get_callback(self, callback_id: int) -> CallbackRecord | None:
        return self._t.callbacks.get(callback_id)

    def pn_ref_holder(self, pn_ref: str) -> tuple[int, str] | None:
        return self._t.pn_refs.get(pn_ref)

    def claim_pn_ref(
        self, pn_ref: str, callback_id: int, fingerprint: str
    ) -> tuple[int, str] | None:
        holder = self._t.pn_refs.get(pn_ref)
        if holder is not None:
            return holder
        self._put(self._t.pn_refs, pn_ref, (callback_id, fingerprint))
        return None

    def finish_callback(self, callback_id: int, resolution: CallbackResolution) -> None:
        record = _changed(
            self._t.callbacks[callback_id],
            outcome=resolution.outcome,
            redirect=resolution.redirect,
            pn_ref=resolution.pn_ref,
            amount=resolution.amount,
            approved=resolution.approved,
            payment_token=resolution.payment_token,
            detail=resolution.detail,
            candidates=resolution.candidates,
            duplicate_of=resolution.duplicate_of,
        )
        self._put(self._t.callbacks, callback_id, record)
        if record.outcome is not CallbackOutcome.RECEIVED:
            self._drop(self._t.received, callback_id)
        if record.outcome is CallbackOutcome.AMBIGUOUS and record.approved:
            key = (record.path, record.amount)
            open_ones = self._t.open_ambiguous.get(key)
            if open_ones is None:
                open_ones = {}
                self._put(self._t.open_ambiguous, key, open_ones)
            self._put(open_ones, callback_id, None)

    def open_ambiguities(
        self, path: str, amount: int, received_after: datetime
    ) -> list[OpenAmbiguity]:
        open_ones = self._t.open_ambiguous.get((path, amount), {})
        found = []
        # Newest first, as far back as asked: ids grow with the time of receipt.
        for callback_id in sorted(open_ones, reverse=True):
            record = self._t.callbacks[callback_id]
            if record.received_at <= received_after:
                break
            found.append(
                OpenAmbiguity(callback_id=callback_id, candidates=frozenset(record.candidates))
            )
        return found[::-1]

    def settle_callback(self, callback_id: int, token: str | None, settled_by: str) -> None:
        record = _changed(
            self._t.callbacks[callback_id],
            payment_token=token,
            settled_at=self.now,
            settled_by=settled_by,
        )
        self._put(self._t.callbacks, callback_id, record)
        self._drop(self._t.open_ambiguous.get((record.path, record.amount), {}), callback_id)

    def callbacks(
        self,
        *,
        outcomes: Sequence[CallbackOutcome] = (),
        limit: int = 100,
        before_id: int | None = None,
    ) -> list[CallbackRecord]:
        found = [
            record
            for callback_id, record in sorted(self._t.callbacks.items(), reverse=True)
            if (not outcomes or record.outcome in outcomes)
            and (before_id is None or callback_id < before_id)
        ]
        return found[:limit]

    def callback_counts(self) -> dict[CallbackOutcome, int]:
        counts: dict[CallbackOutcome, int] = {}
        for record in self._t.callbacks.values():
            counts[record.outcome] = counts.get(record.outcome, 0) + 1
        return counts

    def open_review_callbacks(self, limit: int = 100) -> list[CallbackRecord]:
        ids = sorted(i for open_ones in self._t.open_ambiguous.values() for i in open_ones)
        return [self._t.callbacks[callback_id] for callback_id in ids[:limit]]

    # --- reviews ---------------------------------------------------------------------------

    def insert_review(self, review: NewReview) -> Review | None:
        if review.callback_id is not None and review.callback_id in self._t.review_by_callback:
            return None
        recorded = Review(
            id=self._next_id("reviews"),
            decision=review.decision,
            callback_id=review.callback_id,
            payment_token=review.payment_token,
            others=review.others,
            decided_by=review.decided_by,
            reason=review.reason,
            decided_at=self.now,
            changes=review.changes,
        )
        self._put(self._t.reviews, recorded.id, recorded)
        if review.callback_id is not None:
            self._put(self._t.review_by_callback, review.callback_id, recorded.id)
        return recorded

    def review_of_callback(self, callback_id: int) -> Review | None:
        review_id = self._t.review_by_callback.get(callback_id)
        return None if review_id is None else self._t.reviews[review_id]

    def reviews(self, *, limit: int = 100) -> list[Review]:
        return [review for _, review in sorted(self._t.reviews.items(), reverse=True)][:limit]

    def note_status_query(self, callback_id: int, answer: str, redirect: str | None) -> None:
        record = self._t.callbacks[callback_id]
        changed = _changed(
            record,
            query_attempts=record.query_attempts + 1,
            query_answer=answer,
            redirect=redirect if redirect is not None else record.redirect,
        )
        self._put(self._t.callbacks, callback_id, changed)

    def callbacks_to_query(self, max_attempts: int, limit: int) -> list[int]:
        waiting = (
            record.id
            for _, record in sorted(self._t.callbacks.items())
            if record.outcome in (CallbackOutcome.AMBIGUOUS, CallbackOutcome.UNMATCHED)
            and record.settled_at is None
            and record.pn_ref is not None
            and record.query_attempts < max_attempts
        )
        return list(itertools.islice(waiting, limit))

    def unresolved_callbacks(self, received_before: datetime) -> list[int]:
        return sorted(
            callback_id
            for callback_id in self._t.received
            if self._t.callbacks[callback_id].received_at < received_before
        )


def _changed(value: _V, **changes: Any) -> _V:
    """A copy of a frozen value object with some fields changed: ``dataclasses.replace``
    without its per-call field introspection and validation (none of these objects validates
    itself), which the simulator would otherwise spend a fifth of its time in."""
    copy = object.__new__(type(value))
    fields = copy.__dict__
    fields.update(value.__dict__)
    fields.update(changes)
    return copy


def _free(slot: _Slot) -> bool:
    return (
        slot.live_lease_id is None
        and slot.active
        and not slot.standby
        and slot.sidelined_at is None
    )


def _lru(slot: _Slot) -> tuple[bool, bool, datetime, int]:
    """Main before reserve, then least recently released (never released first), as the
    SQL stores order them."""
    released = slot.last_released_at
    return (slot.reserve, released is not None, released or _EPOCH, slot.id)


def _minute(moment: datetime) -> int:
    return (moment - _EPOCH) // _MINUTE


def _given(moment: datetime | None) -> datetime:
    assert moment is not None
    return moment
