"""What the pool answers: checkouts, waiting-room places, return results and reports, as
frozen value objects."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from ..capacity.erlang import erlang_b, slots_needed
from ..domain.model import (
    AdmissionCounts,
    CallbackOutcome,
    CallbackRecord,
    HoldingTimes,
    Lease,
    LeaseSpan,
    Payment,
    ReserveEvent,
    SlotView,
    callback_ref,
)


@dataclass(frozen=True, kw_only=True)
class FormConfig:
    """What the browser posts to the gateway's hosted form."""

    action_url: str
    callback_path: str
    callback_url: str
    fields: Mapping[str, str]
    method: str = "POST"


@dataclass(frozen=True, kw_only=True)
class Checkout:
    payment: Payment
    lease: Lease
    form: FormConfig


@dataclass(frozen=True, kw_only=True)
class Waiting:
    """No slot yet: a place in the waiting room. Poll ``poll_ticket(ticket)`` again after
    ``retry_after_seconds``; a ticket not polled by ``expires_at`` is dropped."""

    ticket: str
    position: int
    priority: int
    retry_after_seconds: int
    expires_at: datetime


@dataclass(frozen=True, kw_only=True)
class CallbackResult:
    """What became of one gateway return, and where to send the customer's browser."""

    callback_id: int
    outcome: CallbackOutcome
    redirect: str
    payment_token: str | None = None
    detail: str | None = None

    @property
    def ref(self) -> str:
        return callback_ref(self.callback_id)


@dataclass(frozen=True, kw_only=True)
class SweepReport:
    expired: int
    taints_dropped: int
    callbacks_resolved: int
    tickets_expired: int = 0
    reserve: ReserveEvent | None = None


@dataclass(frozen=True, kw_only=True)
class CapacityReport:
    """What the pool saw over the capacity window, and what Erlang B makes of it."""

    window: timedelta
    target: float
    slots: int
    counts: AdmissionCounts
    holding: HoldingTimes

    @property
    def arrivals_per_hour(self) -> float:
        return self.counts.requests * 3600 / self.window.total_seconds()

    @property
    def offered_erlangs(self) -> float | None:
        """Arrivals × mean holding time; None until a lease has ended in the window."""
        mean = self.holding.mean_seconds
        return None if mean is None else self.arrivals_per_hour * mean / 3600

    @property
    def predicted_turned_away(self) -> float | None:
        """Erlang B for the pool's slots in rotation at the observed load."""
        load = self.offered_erlangs
        return None if load is None else erlang_b(self.slots, load)

    @property
    def slots_needed(self) -> int | None:
        """The fewest slots that would turn away at most ``target`` of the observed load."""
        load = self.offered_erlangs
        return None if load is None else slots_needed(load, self.target)


@dataclass(frozen=True, kw_only=True)
class ReserveStatus:
    paths: tuple[str, ...]
    in_rotation: int
    draining: int
    events: tuple[ReserveEvent, ...]

    @property
    def state(self) -> str:
        """``none`` (no reserve paths), ``active`` (in rotation), ``draining`` (on standby,
        with leases still running on some of them) or ``idle``."""
        if not self.paths:
            return "none"
        if self.in_rotation:
            return "active"
        return "draining" if self.draining else "idle"


@dataclass(frozen=True, kw_only=True)
class PoolStatus:
    at: datetime
    slots: tuple[SlotView, ...]
    waiting: int = 0
    reserve: ReserveStatus | None = None
    capacity: CapacityReport | None = None

    @property
    def active(self) -> tuple[SlotView, ...]:
        """The configured slots, but reserve slots on standby (sidelined ones included)."""
        return tuple(s for s in self.slots if s.active and not s.standby)

    @property
    def total(self) -> int:
        return len(self.active)

    @property
    def standby(self) -> int:
        """Reserve slots out of rotation (their leases, if any, run to their end)."""
        return sum(1 for s in self.slots if s.active and s.standby)

    @property
    def inactive(self) -> int:
        """Slots no longer in the configuration."""
        return sum(1 for s in self.slots if not s.active)

    @property
    def locked(self) -> int:
        """Slots held by a lease that has not expired."""
        return sum(1 for s in self.slots if s.lease is not None and s.lease.expires_at > self.at)

    @property
    def stuck(self) -> int:
        """Slots held by a lease past its expiry that no one has ended yet."""
        return sum(1 for s in self.slots if s.lease is not None and s.lease.expires_at <= self.at)

    @property
    def available(self) -> int:
        """Slots a new payment could lease now (in rotation, and free or due to expire)."""
        return sum(
            1
            for s in self.active
            if s.in_rotation and (s.lease is None or s.lease.expires_at <= self.at)
        )

    @property
    def tainted(self) -> int:
        return sum(1 for s in self.active if s.taints > 0)

    @property
    def out_of_rotation(self) -> int:
        """Active slots that are never leased until an operator restores them."""
        return sum(1 for s in self.active if not s.in_rotation)


@dataclass(frozen=True, kw_only=True)
class PoolHistory:
    now: datetime
    spans: tuple[LeaseSpan, ...]
    turn_aways: tuple[tuple[datetime, int], ...]


@dataclass(frozen=True, kw_only=True)
class ReviewItem:
    """An ambiguous approved return and the payments it could belong to."""

    record: CallbackRecord
    candidates: tuple[Payment, ...]


@dataclass(frozen=True, kw_only=True)
class ReviewQueue:
    returns: tuple[ReviewItem, ...] = ()
    payments: tuple[Payment, ...] = ()

    def __len__(self) -> int:
        return len(self.returns) + len(self.payments)
