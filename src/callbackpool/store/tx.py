"""The pool's storage operations, written once for every database: a ``Tx`` is one
transaction, running named queries of ``sql/``; rows map to value objects by column name
(``_build``), value objects to parameters by field name (``_columns``).

Queries named ``lock_…`` lock on PostgreSQL; on SQLite, whose writes take turns anyway, they
only read what they would lock, or do nothing. Locks are taken in one order
(docs/architecture.md): a callback row, then slot rows, then lease rows, then payment rows.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from functools import cache, lru_cache
from typing import TYPE_CHECKING, Any, TypeVar

from ..domain.model import (
    Admission,
    AdmissionCounts,
    Attempt,
    CallbackOutcome,
    CallbackRecord,
    Candidate,
    Event,
    HoldingTimes,
    Lease,
    LeaseEnd,
    LeaseSpan,
    LineItem,
    NewCallback,
    NewReview,
    NewTicket,
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
    from _typeshed import DataclassInstance

    from .port import Connection, Row

_T = TypeVar("_T", bound="DataclassInstance")
_V = TypeVar("_V")


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
    lease_id: int | None = None  # a new attempt's lease
    callback_path: str | None = None
    pn_ref: str | None = None
    order_id: str | None = None
    auth_code: str | None = None
    card_type: str | None = None
    last4: str | None = None
    result_code: str | None = None
    error_message: str | None = None
    callback_id: int | None = None


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
    # The lease of the payment the return went to: the attempt it ended.
    lease_id: int | None = None


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

    def _get(self, build: Callable[[Row], _V], query: str, **params: Any) -> _V | None:
        row = self._one(query, **params)
        return None if row is None else build(row)

    def _count(self, query: str, **params: Any) -> int:
        """A query's ``count(*) AS n``."""
        row = self._one(query, **params)
        return 0 if row is None else int(row["n"])

    # --- slots ---------------------------------------------------------------------------

    def sync_slots(self, paths: Sequence[str], reserve_paths: Sequence[str] = ()) -> SlotSync:
        """Add new paths, reactivate listed ones, deactivate (never delete) the others; a new
        reserve path starts on standby unless the reserve is in rotation. Each change is
        conditional: of instances starting together, only one reports it."""
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
        """Put every active reserve slot on standby or back in rotation; the paths changed."""
        rows = self._all("set_reserve_standby", standby=standby)
        return [row["path"] for row in sorted(rows, key=lambda row: row["id"])]

    def slot_id(self, path: str) -> int | None:
        """The id of the path's slot; in a write transaction, locked until it ends (returns on
        one slot take turns, each deciding on what the one before committed)."""
        row = self._one("slot_by_path_locked" if self._writing else "slot_by_path", path=path)
        return None if row is None else int(row["id"])

    def slot_views(self) -> list[SlotView]:
        return [
            _build(
                SlotView,
                row,
                active=bool(row["active"]),
                lease=None if row["l_id"] is None else _lease(row, "l_"),
                reserve=bool(row["reserve"]),
                standby=bool(row["standby"]),
                health=_build(SlotHealth, row),
            )
            for row in self._all("slot_views")
        ]

    def usage(self) -> list[UsageRow]:
        return [_build(UsageRow, row, active=bool(row["active"])) for row in self._all("usage")]

    # --- slot health -----------------------------------------------------------------------

    def record_slot_return(self, slot_id: int, *, approved: bool) -> None:
        """A verified return arrived on the slot's path: count it, reset the expiry streak."""
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
        """Lease the best free slot to ``token`` (docs/design.md#leasing), or None."""
        slot = self._one(
            "pick_slot", amount=amount, allow_same_amount_tainted=allow_same_amount_tainted
        )
        if slot is None:
            return None
        row = self._one("insert_lease", **slot, token=token, amount=amount, expires_at=expires_at)
        assert row is not None
        lease = _lease(row)
        self._run("occupy_slot", slot_id=lease.slot_id, lease_id=lease.id, expires_at=expires_at)
        return lease

    def expire_due_leases(self, taint_window: timedelta, slot_id: int | None = None) -> list[Lease]:
        """End every live lease past its expiry (only the slot's, if given), tainted until
        ``expires_at + taint_window``; the leases ended here (none twice)."""
        return self._end_due("expire_lease", "due_slots", taint_window, slot_id)

    def abandon_silent_leases(
        self, taint_window: timedelta, slot_id: int | None = None
    ) -> list[Lease]:
        """End every live lease whose heartbeat lapsed before its expiry (only the slot's,
        if given) as ``abandoned`` at ``heartbeat_until``, tainted until ``heartbeat_until +
        taint_window``; the leases ended here (none twice)."""
        return self._end_due("abandon_lease", "silent_slots", taint_window, slot_id)

    def _end_due(
        self, end: str, due: str, taint_window: timedelta, slot_id: int | None
    ) -> list[Lease]:
        # Without a slot: the slots of the due leases, each locked, skipping those another
        # transaction holds (that one is ending the lease or acting on the slot, and frees
        # it). With one: the caller is about to act on its lease and payment, so it waits for
        # its turn on the slot and reads what the slot's holder committed.
        slots = self._all(due) if slot_id is None else self._all("lock_slot", slot_id=slot_id)
        ended = []
        for slot in slots:
            if slot["live_lease_id"] is None:
                continue
            row = self._one(end, id=slot["live_lease_id"], window=taint_window)
            if row is not None:
                lease = _lease(row)
                self._run("free_slot", **_columns(lease))
                ended.append(lease)
        return sorted(ended, key=lambda lease: lease.id)

    def record_heartbeat(self, lease_id: int, until: datetime) -> bool:
        """Move a live lease's ``heartbeat_until`` forward to ``until``; False, nothing
        written, if it is not live, already runs that long, or has lapsed (abandoned)."""
        return self._run("record_heartbeat", id=lease_id, until=until) == 1

    def earliest_lease_end(self) -> datetime | None:
        row = self._one("earliest_lease_end")
        return None if row is None else row["earliest_end_at"]

    def customer_claims(self, customer_key: str) -> list[datetime]:
        """When each of the customer's live leases and waiting tickets ends; the customer is
        locked until this transaction ends, so that counting and leasing are atomic."""
        self._run("lock_customer", customer_key=customer_key)
        rows = self._all("customer_claims", customer_key=customer_key)
        return [row["expires_at"] for row in rows]

    def live_lease_of_payment(self, token: str) -> Lease | None:
        return self._get(_lease, "live_lease_of_payment", token=token)

    def live_lease_on_path(self, path: str) -> Lease | None:
        return self._get(_lease, "live_lease_on_path", path=path)

    def live_leases(self) -> list[Lease]:
        """Every live lease. In a write transaction, their slots are locked first, all at
        once and in one order (two releases of all wait for each other), and only the
        leases on slots now held are returned: one begun meanwhile is another's to end."""
        held = {row["id"] for row in self._all("lock_live_slots")} if self._writing else None
        leases = [_lease(row) for row in self._all("live_leases")]
        return [lease for lease in leases if held is None or lease.slot_id in held]

    def get_lease(self, lease_id: int) -> Lease | None:
        return self._get(_lease, "get_lease", id=lease_id)

    def lease_spans(self, since: datetime, limit: int = 100_000) -> list[LeaseSpan]:
        """Leases that held their slot at some time from ``since`` on, oldest first."""
        return [
            _build(LeaseSpan, row, lease_id=row["id"], end_reason=_lease_end(row["end_reason"]))
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
        self._run("free_slot", **_columns(lease))
        return lease

    def drop_taint(self, lease_id: int) -> None:
        self._run("lock_slot_of_lease", id=lease_id)
        row = self._one("drop_taint", id=lease_id)
        if row is not None:
            self._run("recompute_slot_taint", slot_id=row["slot_id"])

    def drop_stale_taints(self) -> int:
        return self._run("drop_stale_taints")

    def candidates(self, slot_id: int) -> list[Candidate]:
        """The payments of the slot's live lease and unexpired taints (locked, to write)."""
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
            **_columns(
                payment,
                **_order(payment),
                status=payment.status.value,
                metadata=json.dumps(dict(payment.metadata)),
            ),
        )

    def get_payment(self, token: str) -> Payment | None:
        return self._get(_payment, "get_payment", token=token)

    def payment_by_id(self, payment_id: str) -> Payment | None:
        return self._get(_payment, "payment_by_id", id=payment_id)

    def lock_payment(self, token: str) -> None:
        self._run("lock_payment", token=token)

    def payment_by_idempotency_key(self, key: str) -> Payment | None:
        """The payment created with ``key``; in a write, the key is locked until it ends."""
        if self._writing:
            self._run("lock_idempotency_key", key=key)
        return self._get(_payment, "payment_by_idempotency_key", idempotency_key=key)

    def newest_payments(
        self,
        *,
        order_reference: str | None,
        status: PaymentStatus | None,
        after: Payment | None,
        limit: int,
    ) -> list[Payment]:
        rows = self._all(
            "newest_payments",
            order_reference=order_reference,
            status=None if status is None else status.value,
            after_id=None if after is None else after.id,
            after_created=None if after is None else after.created_at,
            limit=limit,
        )
        return [_payment(row) for row in rows]

    def due_open_payments(self, limit: int = 1000) -> list[str]:
        """The open payments past their ``expires_at``, soonest first."""
        return [row["token"] for row in self._all("due_open_payments", limit=limit)]

    def payment_attempts(self, token: str) -> list[Attempt]:
        """Each lease of the payment, oldest first, with the return applied to it if any."""
        return [
            Attempt(
                lease_id=row["lease_id"],
                started_at=row["acquired_at"],
                ended_at=row["ended_at"],
                end_reason=_lease_end(row["end_reason"]),
                callback_id=row["callback_id"],
                params=()
                if row["params"] is None
                else tuple((str(k), str(v)) for k, v in json.loads(row["params"])),
                returned_at=row["received_at"],
            )
            for row in self._all("payment_attempts", token=token)
        ]

    def update_payment(self, token: str, expected: PaymentStatus, change: PaymentChange) -> bool:
        """Apply ``change`` if the payment is still ``expected``; False, nothing written, if not."""
        updated = self._run(
            "update_payment",
            token=token,
            expected=expected.value,
            **_columns(change, status=change.status.value),
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

    # --- events (the outbox) --------------------------------------------------------------

    def insert_event(
        self, *, event_id: str, type: str, payment_id: str, reason: str, data: Any
    ) -> Event:
        """The payment's next event (its sequence one more than its last), in this
        transaction: it commits with the change it announces, or not at all."""
        row = self._one(
            "insert_event",
            id=event_id,
            type=type,
            payment_id=payment_id,
            reason=reason,
            data=json.dumps(data, separators=(",", ":")),
        )
        assert row is not None
        return _event(row)

    def event_seq(self, event_id: str) -> int | None:
        """Where the event ``event_id`` stands in the feed; None if there is none."""
        row = self._one("event_seq", id=event_id)
        return None if row is None else int(row["seq"])

    def events_after(self, seq: int, limit: int) -> list[Event]:
        """Events after the feed's position ``seq``, oldest first."""
        return [_event(row) for row in self._all("events_after", after=seq, limit=limit)]

    def drop_events_before(self, before: datetime) -> int:
        return self._run("drop_events_before", before=before)

    # --- the waiting room (in the database: every instance sees one order) ------------------

    def lock_admission(self) -> None:
        """Take the admission turn until the transaction ends, so that no other instance
        gives away the free slots between this one's count and its lease."""
        self._run("lock_admission")

    def insert_ticket(self, ticket: NewTicket) -> Ticket:
        """Queue a ticket (``waiting``); ids strictly increase (they order arrivals)."""
        row = self._one("insert_ticket", **_columns(ticket, **_order(ticket)))
        assert row is not None
        return _ticket(row)

    def get_ticket(self, ticket: str) -> Ticket | None:
        return self._get(_ticket, "get_ticket", ticket=ticket)

    def waiting_ahead(self, priority: int, ticket_id: int | None) -> int:
        """Waiting, unexpired tickets served before a request of ``priority``: higher
        priorities, and the same one come earlier (all of it for ``ticket_id`` None)."""
        return self._count("waiting_ahead", priority=priority, id=ticket_id)

    def touch_ticket(self, ticket_id: int, expires_at: datetime) -> None:
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
        counts = {kind.value: int(admission is kind) for kind in Admission}  # leased=1, …
        self._run("record_admission", minute=_minute(self.now), busy=busy or 0, **counts)

    def admissions_since(self, since: datetime) -> AdmissionCounts:
        row = self._one("admissions_since", minute=_minute(since))
        assert row is not None
        return _build(AdmissionCounts, row)

    def drop_admissions_before(self, before: datetime) -> int:
        return self._run("drop_admissions_before", minute=_minute(before))

    def turn_aways_since(self, since: datetime) -> list[tuple[datetime, int]]:
        """(minute's start, requests refused) from ``since`` on, minutes without any left out."""
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
            _build(
                ReserveEvent,
                row,
                action=ReserveAction(row["action"]),
                paths=tuple(json.loads(row["paths"])),
            )
            for row in self._all("reserve_events", limit=limit)
        ]

    # --- callbacks ------------------------------------------------------------------------

    def insert_callback(self, callback: NewCallback) -> int:
        row = self._one("insert_callback", **_columns(callback, params=json.dumps(callback.params)))
        assert row is not None
        callback_id: int = row["id"]
        return callback_id

    def get_callback(self, callback_id: int) -> CallbackRecord | None:
        """The stored return; in a write transaction, locked until it ends (a second
        resolver waits, then sees it resolved)."""
        if self._writing:
            self._run("lock_callback", id=callback_id)
        return self._get(_callback, "get_callback", id=callback_id)

    def pn_ref_holder(self, pn_ref: str) -> tuple[int, str] | None:
        """The callback that claimed ``pn_ref`` and its fingerprint, if any."""
        row = self._one("pn_ref_holder", pn_ref=pn_ref)
        return None if row is None else (row["callback_id"], row["fingerprint"])

    def claim_pn_ref(
        self, pn_ref: str, callback_id: int, fingerprint: str
    ) -> tuple[int, str] | None:
        """Claim ``pn_ref`` for the callback; None, or the holder that claimed it first."""
        claimed = self._run(
            "claim_pn_ref", pn_ref=pn_ref, callback_id=callback_id, fingerprint=fingerprint
        )
        return None if claimed else self.pn_ref_holder(pn_ref)

    def finish_callback(self, callback_id: int, resolution: CallbackResolution) -> None:
        self._run(
            "finish_callback",
            id=callback_id,
            **_columns(
                resolution,
                outcome=resolution.outcome.value,
                candidates=json.dumps(resolution.candidates),
            ),
        )

    def open_ambiguities(
        self, path: str, amount: int, received_after: datetime
    ) -> list[OpenAmbiguity]:
        """Approved returns still ambiguous and unsettled, in the order they came."""
        rows = self._all(
            "open_ambiguities", path=path, amount=amount, received_after=received_after
        )
        return [
            _build(OpenAmbiguity, row, candidates=frozenset(json.loads(row["candidates"])))
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
        """Note the status query's answer; ``redirect``, if given, replaces the callback's."""
        self._run("note_status_query", id=callback_id, answer=answer, redirect=redirect)

    def callbacks_to_query(self, max_attempts: int, limit: int) -> list[int]:
        """The oldest ambiguous or unmatched, unsettled callbacks with a PNRef to ask about."""
        rows = self._all("callbacks_to_query", max_attempts=max_attempts, limit=limit)
        return [row["id"] for row in rows]

    # --- reviews ---------------------------------------------------------------------------

    def insert_review(self, review: NewReview) -> Review | None:
        """Record an operator's decision; None, nothing written, if the callback has one."""
        changes = [[c.token, c.previous.value, c.status.value] for c in review.changes]
        return self._get(
            _review,
            "insert_review",
            **_columns(
                review,
                decision=review.decision.value,
                others=None if review.others is None else review.others.value,
                changes=json.dumps(changes),
            ),
        )

    def reviews(self, *, limit: int = 100) -> list[Review]:
        """Recorded decisions, newest first."""
        return [_review(row) for row in self._all("reviews", limit=limit)]

    # --- parameters and rows ------------------------------------------------------------------

    # --- the dashboard's signed-out sessions ----------------------------------------------

    def sign_out_session(self, session_id: str, expires_at: datetime) -> None:
        self._run("sign_out_session", session_id=session_id, expires_at=expires_at)

    def session_signed_out(self, session_id: str) -> bool:
        return self._one("session_signed_out", session_id=session_id) is not None

    def drop_expired_sign_outs(self) -> int:
        return self._run("drop_expired_sign_outs")


def _minute(moment: datetime) -> int:
    """Whole minutes since the Unix epoch: the admissions table's key."""
    return int(moment.timestamp() // 60)


def _one_of(name: str, chosen: Sequence[str], size: int) -> dict[str, Any]:
    """A list filter as plain parameters, which every database takes: ``any_<name>`` (no
    filter) and ``<name>_1`` … ``<name>_<size>``, the values chosen, NULL for the rest."""
    padded = [*chosen, *[None] * (size - len(chosen))]
    return {f"any_{name}": not chosen} | {f"{name}_{i}": v for i, v in enumerate(padded, 1)}


def _order(order: Payment | NewTicket) -> dict[str, Any]:
    items = [
        {"code": i.code, "quantity": i.quantity, "unitPrice": i.unit_price} for i in order.items
    ]
    return {
        "items": json.dumps(items),
        "customer": json.dumps(dict(order.customer)),
        "customer_key": customer_key(order.customer),
    }


@lru_cache(maxsize=1024)
def _items(text: str) -> tuple[LineItem, ...]:
    # Cached: a shop's orders repeat a few baskets, and the tuple is immutable.
    return tuple(
        LineItem(code=i["code"], quantity=i["quantity"], unit_price=i["unitPrice"])
        for i in json.loads(text)
    )


def _lease_end(reason: str | None) -> LeaseEnd | None:
    return None if reason is None else LeaseEnd(reason)


@cache
def _field_names(cls: type[DataclassInstance]) -> tuple[str, ...]:
    return tuple(f.name for f in fields(cls))


def _build(cls: type[_T], row: Row, prefix: str = "", **decoded: Any) -> _T:
    """``cls`` from the columns named as its fields (``prefix`` + the field in joined
    queries); ``decoded`` gives the fields whose column is not the value itself."""
    given = {name: row[prefix + name] for name in _field_names(cls) if name not in decoded}
    return cls(**given, **decoded)


def _columns(value: DataclassInstance, **encoded: Any) -> dict[str, Any]:
    """Query parameters named as ``value``'s fields; ``encoded`` those stored otherwise."""
    return {name: getattr(value, name) for name in _field_names(type(value))} | encoded


def _lease(row: Row, prefix: str = "") -> Lease:
    return _build(Lease, row, prefix, end_reason=_lease_end(row[prefix + "end_reason"]))


def _ticket(row: Row) -> Ticket:
    return _build(
        Ticket,
        row,
        items=_items(row["items"]),
        customer=json.loads(row["customer"]),
        status=TicketStatus(row["status"]),
    )


def _payment(row: Row) -> Payment:
    return _build(
        Payment,
        row,
        status=PaymentStatus(row["status"]),
        items=_items(row["items"]),
        customer=json.loads(row["customer"]),
        metadata=json.loads(row["metadata"]),
        late=bool(row["late"]),
    )


def _event(row: Row) -> Event:
    return _build(Event, row, data=json.loads(row["data"]))


def _callback(row: Row) -> CallbackRecord:
    approved = row["approved"]
    return _build(
        CallbackRecord,
        row,
        params=tuple((str(k), str(v)) for k, v in json.loads(row["params"])),
        outcome=CallbackOutcome(row["outcome"]),
        approved=None if approved is None else bool(approved),
        candidates=tuple(json.loads(row["candidates"])),
    )


def _review(row: Row) -> Review:
    others = row["others"]
    return _build(
        Review,
        row,
        decision=ReviewDecision(row["decision"]),
        others=None if others is None else PaymentStatus(others),
        changes=tuple(
            ReviewChange(token=token, previous=PaymentStatus(before), status=PaymentStatus(after))
            for token, before, after in json.loads(row["changes"])
        ),
    )
