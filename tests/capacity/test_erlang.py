"""Erlang B and the planner built on it."""

from __future__ import annotations

import math

import pytest

from callbackpool.capacity.erlang import (
    MAX_SLOTS,
    erlang_b,
    erlangs_of,
    offered_load,
    plan_for_slots,
    slots_needed,
)

# The classic table: the load ten slots carry at each share turned away.
TEN_SLOTS = [(0.001, 3.092), (0.005, 3.961), (0.01, 4.461), (0.02, 5.084), (0.05, 6.216)]


@pytest.mark.parametrize(("target", "erlangs"), TEN_SLOTS)
def test_the_erlang_b_table_for_ten_slots(target: float, erlangs: float) -> None:
    assert offered_load(10, target) == pytest.approx(erlangs, abs=0.005)


@pytest.mark.parametrize(("target", "erlangs"), TEN_SLOTS)
def test_the_load_found_turns_away_the_target(target: float, erlangs: float) -> None:
    load = offered_load(10, target)
    assert erlang_b(10, load) == pytest.approx(target, rel=1e-6)
    assert erlang_b(10, load * 1.01) > target


def test_the_recurrence_agrees_with_the_closed_form() -> None:
    for slots in (1, 2, 5, 10, 30):
        for load in (0.1, 1.0, 4.461, 12.5):
            terms = [load**k / math.factorial(k) for k in range(slots + 1)]
            assert erlang_b(slots, load) == pytest.approx(terms[-1] / sum(terms), rel=1e-12)


def test_one_slot_turns_away_a_over_one_plus_a() -> None:
    assert erlang_b(1, 3.0) == pytest.approx(0.75)
    assert erlang_b(0, 3.0) == 1.0
    assert erlang_b(10, 0.0) == 0.0


def test_large_pools_do_not_overflow() -> None:
    # A^N / N! overflows a float from about 170 slots; the recurrence does not.
    assert 0 < erlang_b(2000, 1900.0) < 0.05
    assert slots_needed(1000.0, 0.01) == 1029


def test_slots_needed_is_the_smallest_count_meeting_the_target() -> None:
    # 60 payments an hour, each holding its slot 10 minutes: 10 erlangs.
    load = erlangs_of(60, 600)
    assert load == 10.0
    needed = slots_needed(load, 0.01)
    assert needed == 18
    assert erlang_b(needed, load) <= 0.01 < erlang_b(needed - 1, load)
    assert slots_needed(0.0, 0.01) == 1  # no slot at all turns everyone away


def test_a_plan_turns_erlangs_into_payments_an_hour() -> None:
    # docs/design.md#capacity: about 27 an hour at 10 minutes, about 89 at 3.
    assert plan_for_slots(10, hold_seconds=600, target=0.01).max_arrivals_per_hour == (
        pytest.approx(26.77, abs=0.01)
    )
    assert plan_for_slots(10, hold_seconds=180, target=0.01).max_arrivals_per_hour == (
        pytest.approx(89.2, abs=0.1)
    )


@pytest.mark.parametrize(
    "call",
    [
        lambda: erlang_b(-1, 1.0),
        lambda: erlang_b(MAX_SLOTS + 1, 1.0),
        lambda: erlang_b(3, -0.5),
        lambda: erlang_b(3, math.nan),
        lambda: offered_load(0, 0.01),
        lambda: offered_load(10, 0.0),
        lambda: offered_load(10, 1.0),
        lambda: slots_needed(math.inf, 0.01),
        lambda: slots_needed(1e9, 1e-9),
        lambda: plan_for_slots(10, hold_seconds=0, target=0.01),
        lambda: erlangs_of(-1, 600),
    ],
)
def test_nonsense_is_refused(call: object) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - each case has its own message
        call()  # type: ignore[operator]
