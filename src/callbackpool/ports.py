"""The storage port: what the pool core asks of a database. SQLite, PostgreSQL and the
simulator's memory store implement it; one behavioural suite (tests/store) holds them to it.

Every method of a ``Tx`` runs inside the transaction that produced it. A transaction from
``Store.transaction()`` is a write transaction that either commits whole or not at all;
``Store.read()`` gives a consistent read-only view. ``Tx.now`` is the one clock the
transaction decides time by: the database's where it has one (DESIGN.md §3, invariant 6).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol, TypeVar

from .domain.model import (
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
    SlotView,
    Ticket,
    TicketStatus,
    customer_key,
)
from .domain.resolution import OpenAmbiguity


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


class Tx(Protocol):
    now: datetime

    # --- slots ---------------------------------------------------------------------------
    def sync_slots(self, paths: Sequence[str], reserve_paths: Sequence[str] = ()) -> SlotSync:
        """Add new paths, reactivate listed ones, deactivate (never delete) the others.

        ``reserve_paths`` are slots too, marked ``reserve``; a new one starts on standby
        (out of rotation) unless the reserve is in rotation now. A path that moves between
        the two lists changes its mark; a main path is never on standby."""
        ...

    def free_slot_count(self) -> int:
        """Slots in rotation (active, not on standby) with no live lease."""
        ...

    def busy_slot_count(self) -> int:
        """Slots with a live lease, whether in rotation or not."""
        ...

    def set_reserve_standby(self, standby: bool) -> list[str]:
        """Put every active reserve slot on standby (out of rotation) or back in rotation;
        the paths whose state changed. A slot on standby keeps its live lease, if any, to
        its end: it drains."""
        ...

    def slot_by_path(self, path: str) -> SlotRow | None:
        """The slot, locked for the rest of the transaction (callbacks on it serialise)."""
        ...

    def slot_views(self) -> list[SlotView]: ...

    def usage(self) -> list[UsageRow]: ...

    # --- slot health ----------------------------------------------------------------------
    def record_slot_return(self, slot_id: int, *, approved: bool) -> None:
        """A verified return arrived on the slot's path: count it (approval or decline),
        stamp ``last_return_at``, reset the expiry streak."""
        ...

    def record_late_return(self, slot_id: int) -> None:
        """A return settled a lease of the slot that had expired: one silent expiry fewer."""
        ...

    def record_slot_expiry(self, slot_id: int) -> int:
        """A lease of the slot expired with no return: count it; the new expiry streak."""
        ...

    def sideline_slot(self, slot_id: int, *, by: str, reason: str) -> bool:
        """Take the slot out of rotation (False, nothing written, if it already is)."""
        ...

    def restore_slot(self, slot_id: int) -> bool:
        """Put the slot back in rotation with a fresh expiry streak (False if it was in)."""
        ...

    # --- leases ---------------------------------------------------------------------------
    def expire_due_leases(self, taint_window: timedelta, slot_id: int | None = None) -> list[Lease]:
        """End every live lease whose expiry has passed (only the slot's, if ``slot_id`` is
        given), tainting its slot until ``expires_at + taint_window``. Returns the leases
        ended here (none twice, however many transactions try at once)."""
        ...

    def acquire_slot(
        self, *, token: str, amount: int, expires_at: datetime, allow_same_amount_tainted: bool
    ) -> Lease | None:
        """Lease the best free slot to ``token`` (DESIGN.md §4 order), or None if none."""
        ...

    def abandon_silent_leases(
        self, taint_window: timedelta, slot_id: int | None = None
    ) -> list[Lease]:
        """End every live lease whose heartbeat has lapsed (``heartbeat_until`` passed, and
        before its expiry; only the slot's, if ``slot_id`` is given) with reason
        ``abandoned`` at ``heartbeat_until``, tainting its slot until ``heartbeat_until +
        taint_window``. Returns the leases ended here (none twice)."""
        ...

    def record_heartbeat(self, lease_id: int, until: datetime) -> bool:
        """Move a live lease's ``heartbeat_until`` forward to ``until`` (never back); False,
        nothing written, if the lease is not live, its heartbeat already runs that long, or
        its heartbeat has lapsed (the lease counts as abandoned from then on)."""
        ...

    def earliest_lease_end(self) -> datetime | None: ...

    def customer_claims(self, customer_key: str) -> list[datetime]:
        """When each of the customer's claims on the pool ends: the expiry of every live,
        unexpired lease of the payments of ``customer_key`` (``Payment.customer_key``), and
        of every waiting, unexpired ticket of theirs (``NewTicket.customer_key``). Until this
        transaction ends, no other transaction that asks for the same customer gets past
        this call: counting and leasing (or queueing) are atomic."""
        ...

    def live_lease_of_payment(self, token: str) -> Lease | None: ...

    def live_lease_on_path(self, path: str) -> Lease | None: ...

    def live_leases(self) -> list[Lease]: ...

    def get_lease(self, lease_id: int) -> Lease | None: ...

    def lease_spans(self, since: datetime, limit: int = 100_000) -> list[LeaseSpan]:
        """Leases that held their slot at some time from ``since`` on (live ones included),
        oldest first: what the dashboard's charts are drawn from."""
        ...

    def end_lease(
        self, lease_id: int, reason: LeaseEnd, taint_until: datetime | None
    ) -> Lease | None:
        """End a live lease (None if it was not live) and free its slot."""
        ...

    def drop_taint(self, lease_id: int) -> None: ...

    def drop_stale_taints(self) -> int:
        """Forget taints whose window has passed; returns how many."""
        ...

    def candidates(self, slot_id: int) -> list[Candidate]:
        """The payments of the slot's live lease and unexpired taints, locked."""
        ...

    # --- payments -------------------------------------------------------------------------
    def insert_payment(self, payment: Payment) -> None: ...

    def get_payment(self, token: str) -> Payment | None: ...

    def update_payment(self, token: str, expected: PaymentStatus, change: PaymentChange) -> bool:
        """Apply ``change`` if the payment is still ``expected``; False (nothing written)
        otherwise, so a repeated transition does nothing."""
        ...

    def payments(
        self,
        *,
        statuses: Sequence[PaymentStatus] = (),
        created_before: datetime | None = None,
        limit: int = 100,
    ) -> list[Payment]: ...

    # --- the waiting room -----------------------------------------------------------------
    # The queue lives in the database, so every instance sharing it sees one order.

    def lock_admission(self) -> None:
        """Take the admission turn until the transaction ends. A request that weighs the
        free slots against the waiting tickets ahead of it takes it first, so that no other
        instance gives those free slots away between its count and its lease. A no-op where
        write transactions are serialised anyway (SQLite, memory); on PostgreSQL a
        transaction-level advisory lock. Requests that find nobody waiting do not take it."""
        ...

    def insert_ticket(self, ticket: NewTicket) -> Ticket:
        """Queue a ticket (``waiting``); ids strictly increase (they order arrivals)."""
        ...

    def get_ticket(self, ticket: str) -> Ticket | None: ...

    def waiting_ahead(self, priority: int, ticket_id: int | None) -> int:
        """Waiting, unexpired tickets served before a request of ``priority``: those of a
        higher priority, and those of the same priority that came first (every one of
        them, for a request not yet queued: ``ticket_id`` None)."""
        ...

    def touch_ticket(self, ticket_id: int, expires_at: datetime) -> None:
        """A poll: a waiting ticket now expires at ``expires_at``."""
        ...

    def end_ticket(
        self,
        ticket_id: int,
        status: TicketStatus,
        payment_token: str | None = None,
    ) -> bool:
        """Move a waiting ticket to ``status`` (``granted`` with the payment it became);
        False, nothing written, if it was no longer waiting."""
        ...

    def expire_stale_tickets(self) -> int:
        """Waiting tickets not polled in time become ``expired``; returns how many."""
        ...

    # --- capacity figures -------------------------------------------------------------------
    def record_admission(self, admission: Admission, busy: int | None = None) -> None:
        """Count one request for a slot in the current minute; ``busy``, if given, raises
        that minute's peak of slots busy at once."""
        ...

    def admissions_since(self, since: datetime) -> AdmissionCounts:
        """The counts of the minutes from ``since`` on."""
        ...

    def drop_admissions_before(self, before: datetime) -> int: ...

    def holding_times_since(self, since: datetime) -> HoldingTimes:
        """Leases that ended at or after ``since``, and their total holding time."""
        ...

    def insert_reserve_event(
        self, action: ReserveAction, paths: Sequence[str], reason: str
    ) -> ReserveEvent: ...

    def reserve_events(self, limit: int = 20) -> list[ReserveEvent]:
        """The latest changes of the reserve, newest first."""
        ...

    def turn_aways_since(self, since: datetime) -> list[tuple[datetime, int]]:
        """The requests refused per minute (the minute's start, the count), from ``since``
        on: the ``refused`` of the admission counts, minutes without a refusal left out."""
        ...

    def payment_counts(self) -> dict[PaymentStatus, int]:
        """How many payments have each status (statuses without any are left out)."""
        ...

    # --- callbacks ------------------------------------------------------------------------
    def insert_callback(self, callback: NewCallback) -> int: ...

    def get_callback(self, callback_id: int) -> CallbackRecord | None: ...

    def pn_ref_holder(self, pn_ref: str) -> tuple[int, str] | None:
        """The callback that claimed ``pn_ref`` and its fingerprint, if any."""
        ...

    def claim_pn_ref(
        self, pn_ref: str, callback_id: int, fingerprint: str
    ) -> tuple[int, str] | None:
        """Claim ``pn_ref`` for the callback; the holder and its fingerprint if another
        callback claimed it first."""
        ...

    def finish_callback(self, callback_id: int, resolution: CallbackResolution) -> None: ...

    def open_ambiguities(
        self, path: str, amount: int, received_after: datetime
    ) -> list[OpenAmbiguity]:
        """Approved returns of ``amount`` on ``path`` still ambiguous and unsettled, received
        after ``received_after`` (older ones can no longer be settled: their candidates'
        taints have run out), in the order they came."""
        ...

    def settle_callback(self, callback_id: int, token: str | None, settled_by: str) -> None:
        """Record which payment an ambiguous return went to in the end (None: to none)."""
        ...

    def callbacks(
        self,
        *,
        outcomes: Sequence[CallbackOutcome] = (),
        limit: int = 100,
        before_id: int | None = None,
    ) -> list[CallbackRecord]:
        """Stored returns, newest first; ``before_id`` pages on (ids below it only)."""
        ...

    def callback_counts(self) -> dict[CallbackOutcome, int]:
        """How many stored returns have each outcome (outcomes without any are left out)."""
        ...

    def open_review_callbacks(self, limit: int = 100) -> list[CallbackRecord]:
        """Approved ambiguous returns no one has settled yet, oldest first."""
        ...

    # --- reviews ---------------------------------------------------------------------------
    def insert_review(self, review: NewReview) -> Review | None:
        """Record an operator's decision; None, nothing written, if the callback has one
        already (at most one decision per stored return)."""
        ...

    def review_of_callback(self, callback_id: int) -> Review | None: ...

    def reviews(self, *, limit: int = 100) -> list[Review]:
        """Recorded decisions, newest first."""
        ...

    def unresolved_callbacks(self, received_before: datetime) -> list[int]:
        """Callbacks stored but never resolved (a crash between the two steps)."""
        ...

    def note_status_query(self, callback_id: int, answer: str, redirect: str | None) -> None:
        """Record that the gateway's status query was asked about the callback, and what
        came of it; ``redirect``, if given, replaces the callback's answer (it was settled)."""
        ...

    def callbacks_to_query(self, max_attempts: int, limit: int) -> list[int]:
        """Ambiguous and unmatched callbacks with a PNRef, not settled, asked about fewer
        than ``max_attempts`` times: the oldest ``limit`` of them."""
        ...


class Store(Protocol):
    def migrate(self) -> list[str]:
        """Apply pending migrations; returns the names applied."""
        ...

    def pending_migrations(self) -> list[tuple[str, str]]:
        """``(name, sql)`` of each migration not yet applied, in order (for ``--dry-run``)."""
        ...

    def transaction(self, *, durable: bool = True) -> AbstractContextManager[Tx]:
        """A write transaction. ``durable=False`` lets the commit return before the disk
        confirms it: the write survives a crash of the process, not of the machine. Only for
        a record that the durable transaction following it makes durable too (a stored
        return, which its resolution commits right after)."""
        ...

    def read(self) -> AbstractContextManager[Tx]: ...

    def after_commit(self, announce: Callable[[], None]) -> None:
        """Call ``announce`` (status hooks, observers) once the caller's writes so far have
        committed: at once, unless the caller is a call run on the event loop whose writes
        wait for their group's commit (``loop_calls``)."""
        ...

    def loop_calls(self) -> LoopCalls | None:
        """The runner of calls on the event loop, on a store whose calls need not wait on a
        thread; None on the others."""
        ...

    def close(self) -> None: ...


T = TypeVar("T")


class LoopCalls(Protocol):
    """Calls of the pool run on the service's event loop (store/sqlite_loop.py)."""

    async def run(
        self, call: Callable[[], T], offload: Callable[[Callable[[], T]], Awaitable[T]]
    ) -> T:
        """``call()``, answered once what it wrote has committed; run by ``offload`` (on a
        worker thread) instead when its writes would wait. ``call`` must only read before
        its first write transaction (it may be run twice) and wait on nothing else."""
        ...

    async def drain(self) -> None:
        """Wait for the writes in flight to commit."""
        ...
