"""The simulator: it agrees with Erlang B, measures what the issue defines, and repeats."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import replace

import pytest

from callbackpool.capacity.erlang import erlang_b, offered_load
from callbackpool.capacity.simulate import (
    Workload,
    compare,
    max_arrivals_per_hour,
    report,
    simulate,
)
from callbackpool.capacity.workload import (
    CATALOGUE_AMOUNTS,
    Behaviour,
    Customer,
    draw_customers,
)

HOLD = 180.0  # seconds: the textbook loss system's fixed holding time
A, B = CATALOGUE_AMOUNTS[0], CATALOGUE_AMOUNTS[1]
# One customer a second on the clock: arrivals are then given in seconds.
BY_THE_SECOND = Workload(arrivals_per_hour=3600, customers=100, slots=1, warmup=0)


@pytest.fixture(autouse=True)
def _quiet_pool() -> Iterator[None]:
    # Thousands of ambiguous returns are logged as warnings; the figures are what is tested.
    logger = logging.getLogger("callbackpool")
    level = logger.level
    logger.setLevel(logging.ERROR)
    yield
    logger.setLevel(level)


def customer(
    index: int,
    at: float,
    behaviour: Behaviour,
    after: float,
    *,
    amount: int = A,
    approved: bool = True,
) -> Customer:
    return Customer(
        index=index,
        arrival=at,
        behaviour=behaviour,
        duration=after,
        approved=approved,
        amount=amount,
    )


# --- theory ------------------------------------------------------------------------------------


@pytest.mark.parametrize("target", [0.01, 0.02, 0.05])
def test_the_seed_policy_turns_away_what_erlang_b_says(target: float) -> None:
    # Poisson arrivals, every customer holding a slot exactly 3 minutes, nobody waiting.
    load = offered_load(10, target)
    workload = Workload(
        arrivals_per_hour=load * 3600 / HOLD, customers=40_000, fixed_hold=HOLD, patience=0
    )
    result = simulate("seed", workload)
    assert result.turned_away_share == pytest.approx(erlang_b(10, load), rel=0.10)
    assert result.mean_hold == pytest.approx(HOLD)


def test_the_real_pool_turns_away_the_very_customers_the_loss_system_does() -> None:
    # Same customers, same fixed holds, no waiting room: which slot is leased does not
    # matter to a loss system, so the pool must turn away exactly whom the guide does.
    workload = Workload(
        arrivals_per_hour=offered_load(10, 0.05) * 3600 / HOLD,
        customers=3000,
        fixed_hold=HOLD,
        patience=0,
        poll_seconds=60,
    )
    seed = simulate("seed", workload)
    assert seed.turned_away > 50
    assert simulate("callbackpool", workload).turned_away == seed.turned_away
    assert simulate("oracle", workload).turned_away == seed.turned_away


def test_the_most_arrivals_an_hour_is_where_erlang_b_reaches_the_target() -> None:
    workload = Workload(customers=20_000, fixed_hold=HOLD, patience=0)
    best = max_arrivals_per_hour("seed", workload, target=0.01)
    assert best == pytest.approx(offered_load(10, 0.01) * 3600 / HOLD, rel=0.05)  # 89.2/h


# --- what is measured ------------------------------------------------------------------------


def late_payer_then_newcomer(amount_of_newcomer: int) -> list[Customer]:
    # One slot. The first customer pays 15 minutes in (the lock runs out at 10); the second
    # takes the slot at 11:40 and pays 400 s later.
    return [
        customer(0, 1, Behaviour.PAYS_LATE, 900),
        customer(1, 700, Behaviour.PAYS, 400, amount=amount_of_newcomer),
    ]


def test_the_seed_policy_gives_a_late_return_to_whoever_holds_the_path() -> None:
    result = simulate("seed", BY_THE_SECOND, late_payer_then_newcomer(B))
    # The late return completes the newcomer's payment; the newcomer's own return then
    # finds nobody; the late payer's payment stays pending.
    assert (result.misattributed, result.lost, result.unmatched) == (1, 1, 1)
    assert result.approved == 2


@pytest.mark.parametrize("policy", ["callbackpool", "oracle"])
def test_the_pool_attributes_a_late_return_by_its_amount(policy: str) -> None:
    result = simulate(policy, BY_THE_SECOND, late_payer_then_newcomer(B))
    assert (result.misattributed, result.lost, result.unmatched, result.needs_review) == (
        0,
        0,
        0,
        0,
    )


def test_the_same_amount_goes_to_review_and_is_settled_by_the_second_return() -> None:
    result = simulate("callbackpool", BY_THE_SECOND, late_payer_then_newcomer(A))
    assert (result.misattributed, result.lost) == (0, 0)
    assert result.needs_review == 2  # both, until the newcomer's own return settled the pair


def test_a_silent_departure_frees_the_slot_at_once_for_the_oracle_and_soon_for_the_pool() -> None:
    # One slot; the first customer leaves silently after 30 s; others come at 60 s and 100 s.
    customers = [
        customer(0, 1, Behaviour.LEAVES, 30),
        customer(1, 60, Behaviour.PAYS, 100, amount=B),
        customer(2, 100, Behaviour.PAYS, 100, amount=B),
    ]
    impatient = replace(BY_THE_SECOND, patience=0)
    oracle = simulate("oracle", impatient, customers)
    pool = simulate("callbackpool", impatient, customers)
    seed = simulate("seed", impatient, customers)
    assert (oracle.admitted, oracle.turned_away) == (2, 1)  # the 60 s customer holds it
    # The page's last write of its heartbeat was at 22 s: released 75 s later, at 97 s.
    assert (pool.admitted, pool.turned_away) == (2, 1)  # the 100 s customer gets it
    assert (seed.admitted, seed.turned_away) == (1, 2)  # locked for 10 minutes
    assert pool.mean_hold == pytest.approx((97 - 1 + 100) / 2)


def test_the_waiting_room_serves_whoever_waits_less_than_their_patience() -> None:
    customers = [
        customer(0, 1, Behaviour.PAYS, 100),
        customer(1, 80, Behaviour.PAYS, 100, amount=B),  # waits for the return at 101 s
        customer(2, 150, Behaviour.PAYS, 100),  # would wait until 201 s: gives up at 180 s
    ]
    result = simulate("callbackpool", BY_THE_SECOND, customers)
    assert (result.admitted, result.waited, result.turned_away) == (2, 1, 1)
    # Polled every 2 s from 80 s: granted at 102 s, 22 s after arriving.
    assert result.p95_wait == pytest.approx(22)
    assert result.mean_wait == pytest.approx(11)
    seed = simulate("seed", BY_THE_SECOND, customers)
    assert (seed.admitted, seed.turned_away) == (2, 1)  # refused at 80 s; free again at 150 s


# --- the workload and the runs -----------------------------------------------------------------


def test_the_reference_mix() -> None:
    customers = draw_customers(20_000, seed=3)
    share = {b: sum(c.behaviour is b for c in customers) / 20_000 for b in Behaviour}
    assert share[Behaviour.PAYS] == pytest.approx(0.65, abs=0.01)
    assert share[Behaviour.CLOSES] == pytest.approx(0.15, abs=0.01)
    assert share[Behaviour.LEAVES] == pytest.approx(0.18, abs=0.01)
    assert share[Behaviour.PAYS_LATE] == pytest.approx(0.02, abs=0.005)
    payers = sorted(c.duration for c in customers if c.behaviour is Behaviour.PAYS)
    assert payers[len(payers) // 2] == pytest.approx(150, rel=0.03)  # median 2.5 minutes
    assert {c.amount for c in customers} == set(CATALOGUE_AMOUNTS)
    approved = [c.approved for c in customers if c.behaviour is Behaviour.PAYS]
    assert sum(approved) / len(approved) == pytest.approx(0.95, abs=0.01)
    late = [c.duration for c in customers if c.behaviour is Behaviour.PAYS_LATE]
    assert 600 <= min(late) < max(late) <= 1500
    # Poisson arrivals: one per unit on average.
    assert customers[-1].arrival / 20_000 == pytest.approx(1, abs=0.02)


def test_the_uniform_variant_changes_the_amounts_only() -> None:
    varied = draw_customers(500, seed=5)
    uniform = draw_customers(500, seed=5, uniform_amount=True)
    assert {c.amount for c in uniform} == {A}
    assert [replace(c, amount=A) for c in varied] == uniform


def test_a_run_repeats_for_its_seed_and_not_for_another() -> None:
    workload = Workload(customers=600, arrivals_per_hour=110, seed=7)
    first = report("callbackpool", workload, find_max=False)
    assert report("callbackpool", workload, find_max=False) == first
    assert first.result.turned_away > 0
    other = report("callbackpool", replace(workload, seed=8), find_max=False)
    assert other.result != first.result


@pytest.mark.parametrize("uniform_amount", [False, True])
def test_skipping_the_pages_read_only_polls_changes_nothing(uniform_amount: bool) -> None:
    # The simulator replays only the polls that can change something; replaying every one
    # of the page's 3-second polls gives the very same run.
    workload = Workload(customers=1500, arrivals_per_hour=115, uniform_amount=uniform_amount)
    skipping = simulate("callbackpool", workload)
    assert skipping.waited > 0
    assert simulate("callbackpool", replace(workload, every_poll=True)) == skipping


def test_policies_in_parallel_give_what_they_give_one_after_the_other() -> None:
    workload = Workload(customers=300, arrivals_per_hour=120, seed=2)
    steps: list[str] = []
    apart = compare(workload, find_max=False, jobs=2, on_step=lambda s: steps.append(s.policy))
    assert apart == compare(workload, find_max=False, jobs=1)
    assert sorted(steps) == ["callbackpool", "oracle", "seed"]


def test_nonsense_workloads_are_refused() -> None:
    with pytest.raises(ValueError, match="arrival rate"):
        Workload(arrivals_per_hour=0)
    with pytest.raises(ValueError, match="unknown policy 'fifo'"):
        simulate("fifo", Workload(customers=10))
