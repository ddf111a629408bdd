"""Erlang B: the pool as a loss system (docs/design.md#capacity). Pure functions, no I/O.

N slots, customers arriving at random (Poisson) and each holding a slot for a while: the
share turned away depends only on N and the offered load A = arrivals × mean holding time
(in erlangs), whatever the holding times' distribution.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# Past this many slots the planner's answers stop being a question of callback paths.
MAX_SLOTS = 100_000
_TOLERANCE = 1e-12


def erlang_b(slots: int, erlangs: float) -> float:
    """The share of customers turned away by ``slots`` slots offered ``erlangs``.

    By the recurrence B(0) = 1, B(n) = A·B(n−1) / (n + A·B(n−1)), which never overflows
    (the textbook formula's A^n / n! does, from about 170 slots).
    """
    _check_slots(slots, minimum=0)
    _check_load(erlangs)
    loss = 1.0
    for n in range(1, slots + 1):
        loss = erlangs * loss / (n + erlangs * loss)
    return loss


def offered_load(slots: int, target: float) -> float:
    """The most erlangs ``slots`` slots carry while turning away at most ``target``."""
    _check_slots(slots, minimum=1)
    _check_target(target)
    low, high = 0.0, float(slots)
    while erlang_b(slots, high) <= target:
        low, high = high, high * 2
    # B(N, A) grows strictly with A: bisect to the load where it reaches the target.
    while high - low > _TOLERANCE * max(1.0, high):
        middle = (low + high) / 2
        if erlang_b(slots, middle) <= target:
            low = middle
        else:
            high = middle
    return low


def slots_needed(erlangs: float, target: float) -> int:
    """The fewest slots that turn away at most ``target`` of ``erlangs`` offered."""
    _check_load(erlangs)
    _check_target(target)
    loss, slots = 1.0, 0
    while loss > target:
        slots += 1
        if slots > MAX_SLOTS:
            raise ValueError(f"more than {MAX_SLOTS} slots would be needed")
        loss = erlangs * loss / (slots + erlangs * loss)
    return slots


@dataclass(frozen=True, kw_only=True)
class Plan:
    """One line of a capacity plan: N slots, each lease held ``hold_seconds`` on average."""

    slots: int
    hold_seconds: float
    target: float
    offered_erlangs: float

    @property
    def max_arrivals_per_hour(self) -> float:
        return self.offered_erlangs * 3600 / self.hold_seconds


def plan_for_slots(slots: int, *, hold_seconds: float, target: float) -> Plan:
    """What ``slots`` slots carry at ``target`` turned away."""
    _check_hold(hold_seconds)
    return Plan(
        slots=slots,
        hold_seconds=hold_seconds,
        target=target,
        offered_erlangs=offered_load(slots, target),
    )


def erlangs_of(arrivals_per_hour: float, hold_seconds: float) -> float:
    """Offered load: arrivals per hour × mean holding time."""
    if not math.isfinite(arrivals_per_hour) or arrivals_per_hour < 0:
        raise ValueError("arrivals per hour must be a finite number, zero or more")
    _check_hold(hold_seconds)
    return arrivals_per_hour * hold_seconds / 3600


def _check_slots(slots: int, *, minimum: int) -> None:
    if isinstance(slots, bool) or not isinstance(slots, int) or not minimum <= slots <= MAX_SLOTS:
        raise ValueError(f"slots must be a whole number from {minimum} to {MAX_SLOTS}")


def _check_load(erlangs: float) -> None:
    if not math.isfinite(erlangs) or erlangs < 0:
        raise ValueError("the offered load must be a finite number of erlangs, zero or more")


def _check_target(target: float) -> None:
    if not 0 < target < 1:
        raise ValueError("the target share turned away must be between 0 and 1, exclusive")


def _check_hold(hold_seconds: float) -> None:
    if not math.isfinite(hold_seconds) or hold_seconds <= 0:
        raise ValueError("the holding time must be longer than zero")
