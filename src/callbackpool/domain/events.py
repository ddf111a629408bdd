"""What the pool reports as it works, for metrics and other observers (``add_observer``),
once the transaction that made it has committed."""

from __future__ import annotations

from dataclasses import dataclass

from .model import CallbackOutcome, Lease


@dataclass(frozen=True, kw_only=True)
class LeaseStarted:
    lease: Lease
    seconds: float  # how long acquiring it took, waiting for the write turn included


@dataclass(frozen=True, kw_only=True)
class LeaseEnded:
    lease: Lease  # with ``end_reason`` and ``ended_at``


@dataclass(frozen=True, kw_only=True)
class CreateRefused:
    reason: str  # ``pool_exhausted``, ``invalid`` or ``customer_cap``


@dataclass(frozen=True, kw_only=True)
class CallbackResolved:
    callback_id: int
    path: str
    outcome: CallbackOutcome


@dataclass(frozen=True, kw_only=True)
class SweepRan:
    failed: bool
    expired: int = 0


@dataclass(frozen=True, kw_only=True)
class SlotSidelined:
    path: str
    by: str
    reason: str


@dataclass(frozen=True, kw_only=True)
class SlotRestored:
    path: str
    by: str


PoolEvent = (
    LeaseStarted
    | LeaseEnded
    | CreateRefused
    | CallbackResolved
    | SweepRan
    | SlotSidelined
    | SlotRestored
)
