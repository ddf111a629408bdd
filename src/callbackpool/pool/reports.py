"""What the pool reports: its slots, waiting room, reserve and capacity, the stored returns,
counts by status and outcome, usage, and the history the dashboard draws.

Every report is one read transaction: what it shows stood together at one moment.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from ..domain.errors import UnknownCallback, UnknownSlot
from ..domain.model import CallbackOutcome, CallbackRecord, Lease, Payment, PaymentStatus
from ..store.tx import UsageRow
from .core import MAX_ID, PoolCore
from .results import CapacityReport, PoolHistory, PoolStatus, ReserveStatus


class Reports:
    """The pool's read-only views."""

    def __init__(self, core: PoolCore) -> None:
        self.core = core

    def status(self) -> PoolStatus:
        policy = self.core.policy
        with self.core.store.read() as tx:
            slots = tuple(tx.slot_views())
            since = tx.now - policy.capacity_window
            return PoolStatus(
                at=tx.now,
                slots=slots,
                waiting=tx.waiting_ahead(0, None),
                reserve=ReserveStatus(
                    paths=policy.reserve_paths,
                    in_rotation=sum(1 for s in slots if s.reserve and s.in_rotation),
                    draining=sum(1 for s in slots if s.reserve and s.standby and s.lease),
                    events=tuple(tx.reserve_events(limit=10)),
                ),
                capacity=CapacityReport(
                    window=policy.capacity_window,
                    target=policy.capacity_target,
                    slots=sum(1 for s in slots if s.in_rotation),
                    counts=tx.admissions_since(since),
                    holding=tx.holding_times_since(since),
                ),
            )

    def stuck_leases(self) -> list[Lease]:
        with self.core.store.read() as tx:
            return [lease for lease in tx.live_leases() if lease.expires_at <= tx.now]

    def orphaned_payments(self, older_than: timedelta | None) -> list[Payment]:
        age = older_than if older_than is not None else 3 * self.core.policy.lock_timeout
        with self.core.store.read() as tx:
            return tx.payments(statuses=[PaymentStatus.PENDING], created_before=tx.now - age)

    def usage(self) -> list[UsageRow]:
        with self.core.store.read() as tx:
            return tx.usage()

    def has_path(self, path: str) -> bool:
        with self.core.store.read() as tx:
            return tx.slot_by_path(path) is not None

    def slot_path(self, name: str) -> str:
        with self.core.store.read() as tx:
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

    def payment_counts(self) -> dict[PaymentStatus, int]:
        with self.core.store.read() as tx:
            counts = tx.payment_counts()
        return {status: counts.get(status, 0) for status in PaymentStatus}

    def callback_counts(self) -> dict[CallbackOutcome, int]:
        with self.core.store.read() as tx:
            counts = tx.callback_counts()
        return {outcome: counts.get(outcome, 0) for outcome in CallbackOutcome}

    def callbacks(
        self, *, outcomes: Sequence[CallbackOutcome], limit: int, before_id: int | None
    ) -> list[CallbackRecord]:
        if before_id is not None:
            before_id = min(before_id, MAX_ID)
        with self.core.store.read() as tx:
            return tx.callbacks(outcomes=outcomes, limit=limit, before_id=before_id)

    def get_callback(self, callback_id: int) -> CallbackRecord:
        if not 0 < callback_id <= MAX_ID:
            raise UnknownCallback()
        with self.core.store.read() as tx:
            record = tx.get_callback(callback_id)
        if record is None:
            raise UnknownCallback()
        return record

    def history(self, window: timedelta) -> PoolHistory:
        with self.core.store.read() as tx:
            since = tx.now - window
            return PoolHistory(
                now=tx.now,
                spans=tuple(tx.lease_spans(since)),
                turn_aways=tuple(tx.turn_aways_since(since)),
            )

    def now(self) -> datetime:
        with self.core.store.read() as tx:
            return tx.now
