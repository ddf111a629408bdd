"""The pool's storage operations, written once for every database.

A ``Tx`` is one transaction: each method runs named queries of ``sql/queries.sql`` (or the
dialect's own version of one, ``sql/<dialect>.sql``) on the transaction's ``Connection``. A
transaction from ``Store.transaction()`` commits whole or not at all; ``Store.read()`` gives
a consistent read-only view. ``Tx.now`` is the one clock the transaction decides time by.

Queries named ``lock_…`` take a lock on PostgreSQL, where write transactions run side by
side, and do nothing on SQLite, whose write transactions take turns anyway. Locks are taken
in one order, so that transactions wait for each other without deadlocking: a callback row,
then slot rows, then lease rows, then payment rows.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import TYPE_CHECKING, Any

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
    LineItem,
    Payment,
    PaymentStatus,
    ReserveAction,
    ReserveEvent,
    Review,
    ReviewChange,
    ReviewDecision,
    SlotHealth,
    SlotView,
    Ticket,
    TicketStatus,
    customer_key,
)
from ..domain.resolution import OpenAmbiguity

if TYPE_CHECKING:
    from .port import Connection, Row


@dataclass(frozen=True, kw_only=True)
class SlotRow:
    id: int
    path: str
    active: bool


@dataclass(frozen=True, kw_only=True)
class SlotSync:
    """What loading the configured paths changed."""

    added: tuple[str, ...] = ()
    reactivated: tuple[str, ...] = ()
    deactivated: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class PaymentChange:
    """A status change and the gateway's answer to record with it. None leaves a field be."""

    status: PaymentStatus
    late: bool | None = None
    pn_ref: str | None = None
    order_id: str | None = None
    auth_code: str | None = None
    card_type: str | None = None
    last4: str | None = None
    result_code: str | None = None
    error_message: str | None = None
    callback_id: int | None = None


@dataclass(frozen=True, kw_only=True)
class NewCallback:
    path: str
    method: str
    params: tuple[tuple[str, str], ...]
    client_addr: str | None
    receipt: str | None = None  # the key of the return's success page (pool.receipt)


@dataclass(frozen=True, kw_only=True)
class CallbackResolution:
    outcome: CallbackOutcome
    redirect: str
    pn_ref: str | None = None
    amount: int | None = None
    approved: bool | None = None
    payment_token: str | None = None
    detail: str | None = None
    candidates: tuple[str, ...] = ()
    duplicate_of: int | None = None
    # The lease of the payment the return went to (for the log line; not stored).
    lease_id: int | None = None


@dataclass(frozen=True, kw_only=True)
class NewReview:
    decision: ReviewDecision
    callback_id: int | None
    payment_token: str | None
    others: PaymentStatus | None
    decided_by: str
    reason: str
    changes: tuple[ReviewChange, ...]


@dataclass(frozen=True, kw_only=True)
class NewTicket:
    """A request for a slot that has to wait: the order it will become, and its rank."""

    ticket: str
    priority: int
    amount: int
    currency: str
    items: tuple[LineItem, ...]
    customer: Mapping[str, Any]
    expires_at: datetime

    @property
    def customer_key(self) -> str | None:
        return customer_key(self.customer)


@dataclass(frozen=True, kw_only=True)
class UsageRow:
    path: str
    active: bool
    usage_count: int
    callbacks: int
    expiries: int
    last_acquired_at: datetime | None
    last_released_at: datetime | None


class Tx:
    """One transaction, with the pool's storage operations."""

    def __init__(self, conn: Connection, *, writing: bool) -> None:
        self._conn = conn
        self._writing = writing
        self.now = conn.now

    def _one(self, query: str, **params: Any) -> Row | None:
        return self._conn.one(query, now=self.now, **params)

    def _all(self, query: str, **params: Any) -> list[Row]:
        return self._conn.all(query, now=self.now, **params)

    def _run(self, query: str, **params: Any) -> int:
        return self._conn.run(query, now=self.now, **params)

    def _locking(self, query: str) -> str:
        """The query to run: its locking version in a write transaction."""
        return f"{query}_locked" if self._writing else query

    def _count(self, query: str, **params: Any) -> int:
        """A query's ``count(*) AS n``."""
        row = self._one(query, **params)
        return 0 if row is None else int(row["n"])

    # --- slots ---------------------------------------------------------------------------

    def sync_slots(self, paths: Sequence[str], reserve_paths: Sequence[str] = ()) -> SlotSync:
        """Add new paths, reactivate listed ones, deactivate (never delete) the others.

        ``reserve_paths`` are slots too, marked ``reserve``; a new one starts on standby
        (out of rotation) unless the reserve is in rotation now. A path that moves between
        the two lists changes its mark; a main path is never on standby. Each change is
        conditional, so that instances starting together with the same configuration agree
        on what changed (only one of them reports it)."""
        wanted = dict.fromkeys(paths, False) | dict.fromkeys(reserve_paths, True)
        in_rotation = self._count("reserve_in_rotation") > 0
        added, reactivated = [], []
        for path, reserve in wanted.items():
            kind = {"path": path, "reserve": reserve, "standby": reserve and not in_rotation}
            if self._one("insert_slot", **kind) is not None:
                added.append(path)
                continue
            self._run("set_slot_kind", **kind)
            if self._one("reactivate_slot", path=path) is not None:
                reactivated.append(path)
        deactivated = [
            row["path"]
            for row in self._all("active_slots")
            if row["path"] not in wanted and self._one("deactivate_slot", path=row["path"])
        ]
        return SlotSync(
            added=tuple(added), reactivated=tuple(reactivated), deactivated=tuple(deactivated)
        )

    def free_slot_count(self) -> int:
        """Slots in rotation (active, not on standby) with no live lease."""
        return self._count("free_slot_count")

    def busy_slot_count(self) -> int:
        """Slots with a live lease, whether in rotation or not."""
        return self._count("busy_slot_count")

    def set_reserve_standby(self, standby: bool) -> list[str]:
        """Put every active reserve slot on standby (out of rotation) or back in rotation;
        the paths whose state changed. A slot on standby keeps its live lease, if any, to
        its end: it drains."""
        rows = self._all("set_reserve_standby", standby=standby)
        return [row["path"] for row in sorted(rows, key=lambda row: row["id"])]

    def slot_by_path(self, path: str) -> SlotRow | None:
        """The slot; in a write transaction, locked until it ends (callbacks on one slot
        take turns, each deciding on what the one before committed)."""
        row = self._one(self._locking("slot_by_path"), path=path)
        if row is None:
            return None
        return SlotRow(id=row["id"], path=row["path"], active=bool(row["active"]))

    def slot_views(self) -> list[SlotView]:
        return [
            SlotView(
                id=row["id"],
                path=row["path"],
                active=bool(row["active"]),
                usage_count=row["usage_count"],
                last_acquired_at=row["last_acquired_at"],
                last_released_at=row["last_released_at"],
                lease=None if row["l_id"] is None else _lease(row, "l_"),
                taints=row["taints"],
                reserve=bool(row["reserve"]),
                standby=bool(row["standby"]),
                sidelined_at=row["sidelined_at"],
                sidelined_by=row["sidelined_by"],
                sidelined_reason=row["sidelined_reason"],
                health=SlotHealth(
                    approvals=row["approvals"],
                    declines=row["declines"],
                    silent_expiries=row["silent_expiries"],
                    expiry_streak=row["expiry_streak"],
                    last_return_at=row["last_return_at"],
                ),
            )
            for row in self._all("slot_views")
        ]

    def usage(self) -> list[UsageRow]:
        return [
            UsageRow(
                path=row["path"],
                active=bool(row["active"]),
                usage_count=row["usage_count"],
                callbacks=row["callbacks"],
                expiries=row["expiries"],
                last_acquired_at=row["last_acquired_at"],
                last_released_at=row["last_released_at"],
            )
            for row in self._all("usage")
        ]

    # --- slot health -----------------------------------------------------------------------

    def record_slot_return(self, slot_id: int, *, approved: bool) -> None:
        """A verified return arrived on the slot's path: count it (approval or decline),
        stamp ``last_return_at``, reset the expiry streak."""
        self._run("record_slot_return", slot_id=slot_id, approved=approved)

    def record_late_return(self, slot_id: int) -> None:
        """A return settled a lease of the slot that had expired: one silent expiry fewer."""
        self._run("record_late_return", slot_id=slot_id)

    def record_slot_expiry(self, slot_id: int) -> int:
        """A lease of the slot expired with no return: count it; the new expiry streak."""
        row = self._one("record_slot_expiry", slot_id=slot_id)
        return 0 if row is None else int(row["expiry_streak"])

    def sideline_slot(self, slot_id: int, *, by: str, reason: str) -> bool:
        """Take the slot out of rotation (False, nothing written, if it already is)."""
        return self._run("sideline_slot", slot_id=slot_id, by=by, reason=reason) == 1

    def restore_slot(self, slot_id: int) -> bool:
        """Put the slot back in rotation with a fresh expiry streak (False if it was in)."""
        return self._run("restore_slot", slot_id=slot_id) == 1

    # --- leases ---------------------------------------------------------------------------

    def acquire_slot(
        self, *, token: str, amount: int, expires_at: datetime, allow_same_amount_tainted: bool
    ) -> Lease | None:
        """Lease the best free slot to ``token``, or None if none is free
        (docs/design.md#leasing gives the order)."""
        slot = self._one(
            "pick_slot", amount=amount, allow_same_amount_tainted=allow_same_amount_tainted
        )
        if slot is None:
            return None
        row = self._one(
            "insert_lease",
            slot_id=slot["id"],
            path=slot["path"],
            token=token,
            amount=amount,
            expires_at=expires_at,
        )
        assert row is not None
        lease = _lease(row)
        self._run("occupy_slot", slot_id=lease.slot_id, lease_id=lease.id, expires_at=expires_at)
        return lease

    def expire_due_leases(self, taint_window: timedelta, slot_id: int | None = None) -> list[Lease]:
        """End every live lease whose expiry has passed (only the slot's, if ``slot_id`` is
        given), tainting its slot until ``expires_at + taint_window``. Returns the leases
        ended here (none twice, however many transactions try at once)."""
        return self._end_due("expire_lease", "due_slots", taint_window, slot_id)

    def abandon_silent_leases(
        self, taint_window: timedelta, slot_id: int | None = None
    ) -> list[Lease]:
        """End every live lease whose heartbeat has lapsed (``heartbeat_until`` passed, and
        before its expiry; only the slot's, if ``slot_id`` is given) with reason
        ``abandoned`` at ``heartbeat_until``, tainting its slot until ``heartbeat_until +
        taint_window``. Returns the leases ended here (none twice)."""
        return self._end_due("abandon_lease", "silent_slots", taint_window, slot_id)

    def _end_due(
        self, end: str, due: str, taint_window: timedelta, slot_id: int | None
    ) -> list[Lease]:
        if slot_id is None:
            # The slots of the due leases, each locked, skipping those another transaction
            # holds: that one is ending the lease or acting on the slot, and frees it.
            slots = self._all(due)
        else:
            # The caller is about to act on this slot's lease and payment: it waits for its
            # turn on the slot, so that it reads what the slot's holder committed.
            self._run("lock_slot", slot_id=slot_id)
            slots = self._all("slot_by_id", slot_id=slot_id)
        ended = []
        for slot in slots:
            if slot["live_lease_id"] is None:
                continue
            row = self._one(end, id=slot["live_lease_id"], window=taint_window)
            if row is not None:
                lease = _lease(row)
                self._free_slot(lease)
                ended.append(lease)
        return sorted(ended, key=lambda lease: lease.id)

    def record_heartbeat(self, lease_id: int, until: datetime) -> bool:
        """Move a live lease's ``heartbeat_until`` forward to ``until`` (never back); False,
        nothing written, if the lease is not live, its heartbeat already runs that long, or
        its heartbeat has lapsed (the lease counts as abandoned from then on)."""
        return self._run("record_heartbeat", id=lease_id, until=until) == 1

    def earliest_lease_end(self) -> datetime | None:
        row = self._one("earliest_lease_end")
        return None if row is None else row["earliest_end_at"]

    def customer_claims(self, customer_key: str) -> list[datetime]:
        """When each of the customer's claims on the pool ends: the expiry of every live,
        unexpired lease of the payments of ``customer_key`` (``Payment.customer_key``), and
        of every waiting, unexpired ticket of theirs (``NewTicket.customer_key``). Until this
        transaction ends, no other transaction that asks for the same customer gets past
        this call: counting and leasing (or queueing) are atomic."""
        self._run("lock_customer", customer_key=customer_key)
        rows = self._all("customer_claims", customer_key=customer_key)
        return [row["expires_at"] for row in rows]

    def live_lease_of_payment(self, token: str) -> Lease | None:
        row = self._one("live_lease_of_payment", token=token)
        return None if row is None else _lease(row)

    def live_lease_on_path(self, path: str) -> Lease | None:
        row = self._one("live_lease_on_path", path=path)
        return None if row is None else _lease(row)

    def live_leases(self) -> list[Lease]:
        """Every live lease. In a write transaction, their slots are locked first, all at
        once and in one order (two releases of all wait for each other), and only the
        leases on slots now held are returned: one begun meanwhile is another's to end."""
        leases = [_lease(row) for row in self._all("live_leases")]
        if not self._writing:
            return leases
        held = {row["id"] for row in self._all("lock_live_slots")}
        leases = [_lease(row) for row in self._all("live_leases")]
        return [lease for lease in leases if lease.slot_id in held]

    def get_lease(self, lease_id: int) -> Lease | None:
        row = self._one("get_lease", id=lease_id)
        return None if row is None else _lease(row)

    def lease_spans(self, since: datetime, limit: int = 100_000) -> list[LeaseSpan]:
        """Leases that held their slot at some time from ``since`` on (live ones included),
        oldest first: what the dashboard's charts are drawn from."""
        return [
            LeaseSpan(
                lease_id=row["id"],
                path=row["path"],
                acquired_at=row["acquired_at"],
                ended_at=row["ended_at"],
                end_reason=_lease_end(row["end_reason"]),
            )
            for row in self._all("lease_spans", since=since, limit=limit)
        ]

    def end_lease(
        self, lease_id: int, reason: LeaseEnd, taint_until: datetime | None
    ) -> Lease | None:
        """End a live lease (None if it was not live) and free its slot."""
        self._run("lock_slot_of_lease", id=lease_id)
        row = self._one("end_lease", id=lease_id, reason=reason.value, taint_until=taint_until)
        if row is None:
            return None
        lease = _lease(row)
        self._free_slot(lease)
        return lease

    def _free_slot(self, lease: Lease) -> None:
        self._run(
            "free_slot",
            slot_id=lease.slot_id,
            lease_id=lease.id,
            released_at=lease.ended_at,
            taint_until=lease.taint_until,
        )

    def drop_taint(self, lease_id: int) -> None:
        self._run("lock_slot_of_lease", id=lease_id)
        row = self._one("drop_taint", id=lease_id)
        if row is not None:
            self._run("recompute_slot_taint", slot_id=row["slot_id"])

    def drop_stale_taints(self) -> int:
        """Forget taints whose window has passed; returns how many."""
        return self._run("drop_stale_taints")

    def candidates(self, slot_id: int) -> list[Candidate]:
        """The payments of the slot's live lease and unexpired taints; in a write
        transaction, locked (the caller holds the slot and is about to move them)."""
        if self._writing:
            self._run("lock_candidates", slot_id=slot_id)
        return [
            Candidate(lease=_lease(row, "l_"), payment=_payment(row))
            for row in self._all("candidates", slot_id=slot_id)
        ]

    # --- payments -------------------------------------------------------------------------

    def insert_payment(self, payment: Payment) -> None:
        self._run(
            "insert_payment",
            token=payment.token,
            amount=payment.amount,
            currency=payment.currency,
            items=_items_json(payment.items),
            customer=json.dumps(dict(payment.customer)),
            customer_key=payment.customer_key,
            status=payment.status.value,
            late=payment.late,
            lease_id=payment.lease_id,
            callback_path=payment.callback_path,
            expires_at=payment.expires_at,
            created_at=payment.created_at,
        )

    def get_payment(self, token: str) -> Payment | None:
        row = self._one("get_payment", token=token)
        return None if row is None else _payment(row)

    def update_payment(self, token: str, expected: PaymentStatus, change: PaymentChange) -> bool:
        """Apply ``change`` if the payment is still ``expected``; False (nothing written)
        otherwise, so a repeated transition does nothing."""
        updated = self._run(
            "update_payment",
            token=token,
            expected=expected.value,
            status=change.status.value,
            late=change.late,
            pn_ref=change.pn_ref,
            order_id=change.order_id,
            auth_code=change.auth_code,
            card_type=change.card_type,
            last4=change.last4,
            result_code=change.result_code,
            error_message=change.error_message,
            callback_id=change.callback_id,
        )
        return updated == 1

    def payments(
        self,
        *,
        statuses: Sequence[PaymentStatus] = (),
        created_before: datetime | None = None,
        limit: int = 100,
    ) -> list[Payment]:
        rows = self._all(
            "payments",
            **_one_of("status", [s.value for s in statuses], len(PaymentStatus)),
            created_before=created_before,
            limit=limit,
        )
        return [_payment(row) for row in rows]

    def payment_counts(self) -> dict[PaymentStatus, int]:
        """How many payments have each status (statuses without any are left out)."""
        return {PaymentStatus(row["status"]): row["n"] for row in self._all("payment_counts")}

    # --- the waiting room -----------------------------------------------------------------
    # The queue lives in the database, so every instance sharing it sees one order.

    def lock_admission(self) -> None:
        """Take the admission turn until the transaction ends. A request that weighs the
        free slots against the waiting tickets ahead of it takes it first, so that no other
        instance gives those free slots away between its count and its lease. Requests that
        find nobody waiting do not take it."""
        self._run("lock_admission")

    def insert_ticket(self, ticket: NewTicket) -> Ticket:
        """Queue a ticket (``waiting``); ids strictly increase (they order arrivals)."""
        row = self._one(
            "insert_ticket",
            ticket=ticket.ticket,
            priority=ticket.priority,
            amount=ticket.amount,
            currency=ticket.currency,
            items=_items_json(ticket.items),
            customer=json.dumps(dict(ticket.customer)),
            customer_key=ticket.customer_key,
            expires_at=ticket.expires_at,
        )
        assert row is not None
        return _ticket(row)

    def get_ticket(self, ticket: str) -> Ticket | None:
        row = self._one("get_ticket", ticket=ticket)
        return None if row is None else _ticket(row)

    def waiting_ahead(self, priority: int, ticket_id: int | None) -> int:
        """Waiting, unexpired tickets served before a request of ``priority``: those of a
        higher priority, and those of the same priority that came first (every one of
        them, for a request not yet queued: ``ticket_id`` None)."""
        return self._count("waiting_ahead", priority=priority, id=ticket_id)

    def touch_ticket(self, ticket_id: int, expires_at: datetime) -> None:
        """A poll: a waiting ticket now expires at ``expires_at``."""
        self._run("touch_ticket", id=ticket_id, expires_at=expires_at)

    def end_ticket(
        self, ticket_id: int, status: TicketStatus, payment_token: str | None = None
    ) -> bool:
        """Move a waiting ticket to ``status`` (``granted`` with the payment it became);
        False, nothing written, if it was no longer waiting."""
        ended = self._run(
            "end_ticket", id=ticket_id, status=status.value, payment_token=payment_token
        )
        return ended == 1

    def expire_stale_tickets(self) -> int:
        """Waiting tickets not polled in time become ``expired``; returns how many."""
        return self._run("expire_stale_tickets")

    # --- capacity figures -------------------------------------------------------------------

    def record_admission(self, admission: Admission, busy: int | None = None) -> None:
        """Count one request for a slot in the current minute; ``busy``, if given, raises
        that minute's peak of slots busy at once."""
        self._run(
            "record_admission",
            minute=_minute(self.now),
            leased=int(admission is Admission.LEASED),
            waited=int(admission is Admission.WAITED),
            refused=int(admission is Admission.REFUSED),
            granted=int(admission is Admission.GRANTED),
            busy=busy or 0,
        )

    def admissions_since(self, since: datetime) -> AdmissionCounts:
        """The counts of the minutes from ``since`` on."""
        row = self._one("admissions_since", minute=_minute(since))
        assert row is not None
        return AdmissionCounts(
            leased=row["leased"],
            waited=row["waited"],
            refused=row["refused"],
            granted=row["granted"],
            peak_busy=row["peak_busy"],
        )

    def drop_admissions_before(self, before: datetime) -> int:
        return self._run("drop_admissions_before", minute=_minute(before))

    def turn_aways_since(self, since: datetime) -> list[tuple[datetime, int]]:
        """The requests refused per minute (the minute's start, the count), from ``since``
        on: the ``refused`` of the admission counts, minutes without a refusal left out."""
        rows = self._all("turn_aways_since", minute=_minute(since))
        return [(datetime.fromtimestamp(row["minute"] * 60, UTC), row["refused"]) for row in rows]

    def holding_times_since(self, since: datetime) -> HoldingTimes:
        """Leases that ended at or after ``since``, and their total holding time."""
        row = self._one("holding_times_since", since=since)
        assert row is not None
        return HoldingTimes(ended=row["ended"], total_seconds=float(row["held_seconds"]))

    def insert_reserve_event(
        self, action: ReserveAction, paths: Sequence[str], reason: str
    ) -> ReserveEvent:
        self._run(
            "insert_reserve_event",
            action=action.value,
            paths=json.dumps(list(paths)),
            reason=reason,
        )
        return ReserveEvent(at=self.now, action=action, paths=tuple(paths), reason=reason)

    def reserve_events(self, limit: int = 20) -> list[ReserveEvent]:
        """The latest changes of the reserve, newest first."""
        return [
            ReserveEvent(
                at=row["at"],
                action=ReserveAction(row["action"]),
                paths=tuple(json.loads(row["paths"])),
                reason=row["reason"],
            )
            for row in self._all("reserve_events", limit=limit)
        ]

    # --- callbacks ------------------------------------------------------------------------

    def insert_callback(self, callback: NewCallback) -> int:
        row = self._one(
            "insert_callback",
            path=callback.path,
            method=callback.method,
            params=json.dumps([list(pair) for pair in callback.params]),
            client_addr=callback.client_addr,
            receipt=callback.receipt,
        )
        assert row is not None
        callback_id: int = row["id"]
        return callback_id

    def get_callback(self, callback_id: int) -> CallbackRecord | None:
        """The stored return; in a write transaction, locked until it ends (whoever
        resolves a return holds it: a second resolver waits, then sees it resolved)."""
        if self._writing:
            self._run("lock_callback", id=callback_id)
        row = self._one("get_callback", id=callback_id)
        return None if row is None else _callback(row)

    def pn_ref_holder(self, pn_ref: str) -> tuple[int, str] | None:
        """The callback that claimed ``pn_ref`` and its fingerprint, if any."""
        row = self._one("pn_ref_holder", pn_ref=pn_ref)
        return None if row is None else (row["callback_id"], row["fingerprint"])

    def claim_pn_ref(
        self, pn_ref: str, callback_id: int, fingerprint: str
    ) -> tuple[int, str] | None:
        """Claim ``pn_ref`` for the callback; the holder and its fingerprint if another
        callback claimed it first."""
        if self._run(
            "claim_pn_ref", pn_ref=pn_ref, callback_id=callback_id, fingerprint=fingerprint
        ):
            return None
        return self.pn_ref_holder(pn_ref)

    def finish_callback(self, callback_id: int, resolution: CallbackResolution) -> None:
        self._run(
            "finish_callback",
            id=callback_id,
            outcome=resolution.outcome.value,
            redirect=resolution.redirect,
            pn_ref=resolution.pn_ref,
            amount=resolution.amount,
            approved=resolution.approved,
            payment_token=resolution.payment_token,
            detail=resolution.detail,
            candidates=json.dumps(list(resolution.candidates)),
            duplicate_of=resolution.duplicate_of,
        )

    def open_ambiguities(
        self, path: str, amount: int, received_after: datetime
    ) -> list[OpenAmbiguity]:
        """Approved returns of ``amount`` on ``path`` still ambiguous and unsettled, received
        after ``received_after`` (older ones can no longer be settled: their candidates'
        taints have run out), in the order they came."""
        rows = self._all(
            "open_ambiguities", path=path, amount=amount, received_after=received_after
        )
        return [
            OpenAmbiguity(
                callback_id=row["id"], candidates=frozenset(json.loads(row["candidates"]))
            )
            for row in rows
        ]

    def settle_callback(self, callback_id: int, token: str | None, settled_by: str) -> None:
        """Record which payment an ambiguous return went to in the end (None: to none)."""
        self._run("settle_callback", id=callback_id, token=token, settled_by=settled_by)

    def callbacks(
        self,
        *,
        outcomes: Sequence[CallbackOutcome] = (),
        limit: int = 100,
        before_id: int | None = None,
    ) -> list[CallbackRecord]:
        """Stored returns, newest first; ``before_id`` pages on (ids below it only)."""
        rows = self._all(
            "callbacks",
            **_one_of("outcome", [o.value for o in outcomes], len(CallbackOutcome)),
            limit=limit,
            before_id=before_id,
        )
        return [_callback(row) for row in rows]

    def callback_counts(self) -> dict[CallbackOutcome, int]:
        """How many stored returns have each outcome (outcomes without any are left out)."""
        return {CallbackOutcome(row["outcome"]): row["n"] for row in self._all("callback_counts")}

    def open_review_callbacks(self, limit: int = 100) -> list[CallbackRecord]:
        """Approved ambiguous returns no one has settled yet, oldest first."""
        return [_callback(row) for row in self._all("open_review_callbacks", limit=limit)]

    def unresolved_callbacks(self, received_before: datetime) -> list[int]:
        """Callbacks stored but never resolved (a crash between the two steps)."""
        return [row["id"] for row in self._all("unresolved_callbacks", before=received_before)]

    def note_status_query(self, callback_id: int, answer: str, redirect: str | None) -> None:
        """Record that the gateway's status query was asked about the callback, and what
        came of it; ``redirect``, if given, replaces the callback's answer (it was settled)."""
        self._run("note_status_query", id=callback_id, answer=answer, redirect=redirect)

    def callbacks_to_query(self, max_attempts: int, limit: int) -> list[int]:
        """Ambiguous and unmatched callbacks with a PNRef, not settled, asked about fewer
        than ``max_attempts`` times: the oldest ``limit`` of them."""
        rows = self._all("callbacks_to_query", max_attempts=max_attempts, limit=limit)
        return [row["id"] for row in rows]

    # --- reviews ---------------------------------------------------------------------------

    def insert_review(self, review: NewReview) -> Review | None:
        """Record an operator's decision; None, nothing written, if the callback has one
        already (at most one decision per stored return)."""
        row = self._one(
            "insert_review",
            decision=review.decision.value,
            callback_id=review.callback_id,
            payment_token=review.payment_token,
            others=None if review.others is None else review.others.value,
            decided_by=review.decided_by,
            reason=review.reason,
            changes=json.dumps(
                [[c.token, c.previous.value, c.status.value] for c in review.changes]
            ),
        )
        return None if row is None else _review(row)

    def review_of_callback(self, callback_id: int) -> Review | None:
        row = self._one("review_of_callback", callback_id=callback_id)
        return None if row is None else _review(row)

    def reviews(self, *, limit: int = 100) -> list[Review]:
        """Recorded decisions, newest first."""
        return [_review(row) for row in self._all("reviews", limit=limit)]


# --- parameters and rows ------------------------------------------------------------------


def _minute(moment: datetime) -> int:
    """Whole minutes since the Unix epoch: the admissions table's key."""
    return int(moment.timestamp() // 60)


def _one_of(name: str, chosen: Sequence[str], size: int) -> dict[str, Any]:
    """A list filter as plain parameters, which every database takes: ``any_<name>`` (no
    filter) and ``<name>_1`` … ``<name>_<size>``, the values chosen, NULL for the rest."""
    padded = [*chosen, *[None] * (size - len(chosen))]
    return {f"any_{name}": not chosen} | {f"{name}_{i}": v for i, v in enumerate(padded, 1)}


def _items_json(items: Sequence[LineItem]) -> str:
    return json.dumps(
        [{"code": i.code, "quantity": i.quantity, "unitPrice": i.unit_price} for i in items]
    )


@lru_cache(maxsize=1024)
def _items(text: str) -> tuple[LineItem, ...]:
    # Cached: a shop's orders repeat a few baskets, and the tuple is immutable.
    return tuple(
        LineItem(code=i["code"], quantity=i["quantity"], unit_price=i["unitPrice"])
        for i in json.loads(text)
    )


def _lease_end(reason: str | None) -> LeaseEnd | None:
    return None if reason is None else LeaseEnd(reason)


def _lease(row: Row, prefix: str = "") -> Lease:
    """A lease from ``row``, its columns named ``prefix`` + the field (joined queries)."""
    p = prefix
    return Lease(
        id=row[p + "id"],
        slot_id=row[p + "slot_id"],
        path=row[p + "path"],
        token=row[p + "token"],
        amount=row[p + "amount"],
        acquired_at=row[p + "acquired_at"],
        expires_at=row[p + "expires_at"],
        ended_at=row[p + "ended_at"],
        end_reason=_lease_end(row[p + "end_reason"]),
        taint_until=row[p + "taint_until"],
        heartbeat_until=row[p + "heartbeat_until"],
    )


def _ticket(row: Row) -> Ticket:
    return Ticket(
        id=row["id"],
        ticket=row["ticket"],
        priority=row["priority"],
        amount=row["amount"],
        currency=row["currency"],
        items=_items(row["items"]),
        customer=json.loads(row["customer"]),
        status=TicketStatus(row["status"]),
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        payment_token=row["payment_token"],
        ended_at=row["ended_at"],
    )


def _payment(row: Row) -> Payment:
    return Payment(
        token=row["token"],
        amount=row["amount"],
        currency=row["currency"],
        status=PaymentStatus(row["status"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        items=_items(row["items"]),
        customer=json.loads(row["customer"]),
        late=bool(row["late"]),
        lease_id=row["lease_id"],
        callback_path=row["callback_path"],
        expires_at=row["expires_at"],
        pn_ref=row["pn_ref"],
        order_id=row["order_id"],
        auth_code=row["auth_code"],
        card_type=row["card_type"],
        last4=row["last4"],
        result_code=row["result_code"],
        error_message=row["error_message"],
        callback_id=row["callback_id"],
    )


def _callback(row: Row) -> CallbackRecord:
    approved = row["approved"]
    return CallbackRecord(
        id=row["id"],
        path=row["path"],
        method=row["method"],
        params=tuple((str(k), str(v)) for k, v in json.loads(row["params"])),
        client_addr=row["client_addr"],
        received_at=row["received_at"],
        outcome=CallbackOutcome(row["outcome"]),
        pn_ref=row["pn_ref"],
        amount=row["amount"],
        approved=None if approved is None else bool(approved),
        payment_token=row["payment_token"],
        detail=row["detail"],
        candidates=tuple(json.loads(row["candidates"])),
        redirect=row["redirect"],
        duplicate_of=row["duplicate_of"],
        settled_at=row["settled_at"],
        settled_by=row["settled_by"],
        receipt=row["receipt"],
        query_attempts=row["query_attempts"],
        query_answer=row["query_answer"],
    )


def _review(row: Row) -> Review:
    others = row["others"]
    return Review(
        id=row["id"],
        decision=ReviewDecision(row["decision"]),
        callback_id=row["callback_id"],
        payment_token=row["payment_token"],
        others=None if others is None else PaymentStatus(others),
        decided_by=row["decided_by"],
        reason=row["reason"],
        decided_at=row["decided_at"],
        changes=tuple(
            ReviewChange(token=token, previous=PaymentStatus(before), status=PaymentStatus(after))
            for token, before, after in json.loads(row["changes"])
        ),
    )
