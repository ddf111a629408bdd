"""The simulator's customers: who arrives when, and what each does once given a form (the
reference mix of issue 7, as docs/capacity.md gives it: ``Mix``).

Customers are drawn from the seed alone, in units of the mean gap between arrivals: a run at
another arrival rate replays the very same customers, closer together or further apart
(common random numbers), so that comparing rates compares rates and not luck.
"""

from __future__ import annotations

import enum
import math
import random
from dataclasses import dataclass
from statistics import NormalDist

# The catalogue the simulated shop sells from, in minor units (cents).
CATALOGUE_AMOUNTS = (1250, 1875, 2500, 3200, 4000, 4500, 6000, 7500)


class Behaviour(enum.StrEnum):
    PAYS = "pays"  # returns from the gateway, approved or declined
    CLOSES = "closes"  # closes the payment window; the page cancels the payment
    LEAVES = "leaves"  # closes everything: no return, no cancel, the page stops polling
    PAYS_LATE = "pays_late"  # pays 10 to 25 minutes after starting, the page still open


@dataclass(frozen=True, kw_only=True)
class Mix:
    """The reference shares of the behaviours and their timings (seconds)."""

    pays: float = 0.65
    closes: float = 0.15
    leaves: float = 0.18
    pays_late: float = 0.02
    approved: float = 0.95
    pay_median: float = 150.0
    close_median: float = 90.0
    leave_median: float = 60.0
    sigma: float = 0.5
    late_from: float = 600.0
    late_to: float = 1500.0


@dataclass(frozen=True, kw_only=True)
class Customer:
    index: int
    arrival: float  # in mean gaps since the start; seconds = arrival × 3600 / rate
    behaviour: Behaviour
    duration: float  # seconds from getting the form to paying, closing or leaving
    approved: bool  # for those who pay
    amount: int  # minor units


def draw_customers(
    count: int,
    *,
    seed: int,
    uniform_amount: bool = False,
    fixed_hold: float | None = None,
) -> list[Customer]:
    """``count`` customers for ``seed``. ``fixed_hold`` (seconds): everybody pays, approved,
    exactly that long after getting the form (the textbook loss system, for checking the
    simulator against Erlang B)."""
    mix = Mix()
    normal_quantile = NormalDist().inv_cdf
    # Simulation, not secrets: a seeded, repeatable generator is the point.
    gaps = random.Random(f"{seed}/arrivals")  # noqa: S311
    draws = random.Random(f"{seed}/customers")  # noqa: S311
    customers = []
    arrival = 0.0
    for index in range(count):
        arrival += gaps.expovariate(1.0)
        # Every customer takes the same draws, whatever their behaviour, so that the
        # streams stay aligned across variants.
        pick, normal, approval, late = (draws.random() for _ in range(4))
        amount = CATALOGUE_AMOUNTS[draws.randrange(len(CATALOGUE_AMOUNTS))]
        # One uniform draw made normal (clear of 0 and 1, where the quantile is infinite).
        spread = math.exp(mix.sigma * normal_quantile(min(max(normal, 1e-12), 1 - 1e-12)))
        if fixed_hold is not None:
            behaviour, duration, approved = Behaviour.PAYS, fixed_hold, True
        elif pick < mix.pays:
            behaviour, duration = Behaviour.PAYS, mix.pay_median * spread
            approved = approval < mix.approved
        elif pick < mix.pays + mix.closes:
            behaviour, duration, approved = Behaviour.CLOSES, mix.close_median * spread, False
        elif pick < mix.pays + mix.closes + mix.leaves:
            behaviour, duration, approved = Behaviour.LEAVES, mix.leave_median * spread, False
        else:
            duration = mix.late_from + (mix.late_to - mix.late_from) * late
            behaviour, approved = Behaviour.PAYS_LATE, True
        customers.append(
            Customer(
                index=index,
                arrival=arrival,
                behaviour=behaviour,
                duration=duration,
                approved=approved,
                amount=CATALOGUE_AMOUNTS[0] if uniform_amount else amount,
            )
        )
    return customers
