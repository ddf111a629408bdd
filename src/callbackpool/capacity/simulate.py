"""``callbackpool simulate``: a workload replayed against the pool on a virtual clock.

Three policies side by side (issue 7): ``seed``, the guide's pool (``guide.py``);
``callbackpool``, the real ``CallbackPool`` over an in-memory SQLite database with the
project's defaults; ``oracle``, the real pool told the instant each customer is done. Events
run in time order on a ``FakeClock``; nothing sleeps, and every run is determined by the seed.
docs/capacity.md (*The simulator*) describes the policies and defines what is measured.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import math
import multiprocessing
import multiprocessing.queues
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from ..domain.errors import PaymentNotPending, PoolExhausted, TicketEnded
from ..domain.gateway import CatalogueItem
from ..domain.model import CallbackOutcome, PaymentStatus, StatusChange
from ..domain.money import format_amount
from ..gateways.paygistix import PaygistixGateway
from ..pool import CallbackPool, Checkout, PoolPolicy, Waiting
from ..store.sqlite import SqliteStore
from ..testing import FakeClock
from .erlang import offered_load
from .guide import CLEANUP_EVERY, GuidePool
from .workload import CATALOGUE_AMOUNTS, Behaviour, Customer, draw_customers

POLICIES = ("seed", "callbackpool", "oracle")
# About how many runs the search for the most arrivals an hour takes (for a progress bar).
TYPICAL_SEARCH_RUNS = 5
START = datetime(2026, 1, 1, tzinfo=UTC)
MERCHANT = "simulatedMerchant"
PATH_PREFIX = "/api/v1/payments/callback/handler-"
# After the last arrival, the run goes on until every late payer has paid.
DRAIN = 2 * 3600.0


@dataclass(frozen=True, kw_only=True)
class Workload:
    """What to replay. The defaults are the issue's reference workload on 10 slots."""

    arrivals_per_hour: float = 60.0
    customers: int = 20_000
    seed: int = 1
    slots: int = 10
    uniform_amount: bool = False
    patience: float = 30.0  # seconds a customer waits for a slot before leaving
    poll_seconds: float = 3.0  # the checkout page's status polling
    warmup: float = 3600.0  # seconds of arrivals not counted, while the pool fills
    fixed_hold: float | None = None  # everybody pays after exactly this long (theory)
    # Replay the page's read-only polls too (they change nothing: a test proves it).
    every_poll: bool = False

    def __post_init__(self) -> None:
        if not self.arrivals_per_hour > 0:
            raise ValueError("the arrival rate must be above zero")
        if self.customers < 1:
            raise ValueError("at least one customer is needed")
        if not 1 <= self.slots <= 1000:
            raise ValueError("the slots must number from 1 to 1000")

    def draw(self) -> list[Customer]:
        """The customers of this workload (its seed's)."""
        return draw_customers(
            self.customers,
            seed=self.seed,
            uniform_amount=self.uniform_amount,
            fixed_hold=self.fixed_hold,
        )


@dataclass(frozen=True, kw_only=True)
class Result:
    """One policy on one workload."""

    policy: str
    arrivals_per_hour: float
    arrivals: int
    admitted: int
    waited: int
    turned_away: int
    mean_wait: float
    p95_wait: float
    approved: int
    misattributed: int
    lost: int
    needs_review: int
    unmatched: int
    mean_hold: float

    @property
    def turned_away_share(self) -> float:
        return self.turned_away / self.arrivals if self.arrivals else 0.0


# --- the policies under test -------------------------------------------------------------------


class PoolRun:
    """The real pool over an in-memory SQLite database. A run answers a request with
    (token, path) when given a form, a ticket to poll, or None when turned away."""

    def __init__(self, clock: FakeClock, workload: Workload, *, oracle: bool) -> None:
        self.oracle = oracle
        self.polled = not oracle
        self.store = SqliteStore(":memory:", clock=clock)
        self.store.migrate()
        policy = PoolPolicy(
            base_url="https://shop.example",
            callback_paths=_paths(workload.slots),
            # The oracle learns of every departure at once: it needs no heartbeat.
            heartbeat_timeout_seconds=0 if oracle else 60,
            ticket_poll_seconds=2,
        )
        self.pool = CallbackPool(self.store, _gateway(), policy, on_status_change=self._heard)
        self.pool.sync_slots()
        self.sweep_every = 60.0
        # A customer with no patience takes no ticket (one would hold a place for nobody).
        self.wait = workload.patience > 0
        self.reviewed: set[str] = set()
        self.returns: list[tuple[int, Customer]] = []

    def _heard(self, change: StatusChange) -> None:
        if change.status is PaymentStatus.NEEDS_REVIEW:
            self.reviewed.add(change.token)

    def request(self, customer: Customer) -> tuple[str, str] | str | None:
        try:
            result = self.pool.create_payment(items={_code(customer.amount): 1}, wait=self.wait)
        except PoolExhausted:
            return None
        return _answer(result)

    def poll_ticket(self, ticket: str) -> tuple[str, str] | str | None:
        try:
            return _answer(self.pool.poll_ticket(ticket))
        except TicketEnded:
            return None

    def poll(self, token: str) -> float | None:
        """The page's status poll. None once the payment is no longer pending (the page
        stops); else the moment (seconds on the run's clock) from which a poll can change
        anything again: the polls before it only read, and may be skipped."""
        if self.pool.poll_payment(token).status is not PaymentStatus.PENDING:
            return None
        with self.store.read() as tx:
            lease = tx.live_lease_of_payment(token)
        if lease is None or lease.heartbeat_until is None:
            return 0.0
        # poll_payment writes only when the recorded heartbeat runs out within the timeout
        # (and a payment's status changes only at its expiry, seen by any later poll).
        writes_from = lease.heartbeat_until - self.pool.policy.heartbeat_timeout
        return min(writes_from, lease.expires_at).timestamp() - START.timestamp()

    def pay(self, customer: Customer, token: str, path: str) -> None:
        params = [
            ("MerchantID", MERCHANT),
            ("OrderID", str(55_000_000_000 + customer.index)),
            ("Amount", format_amount(customer.amount, "USD")),
            ("PNRef", str(800_000_000 + customer.index)),
            ("Result", "0" if customer.approved else "12"),
            ("TxnType", "SALE"),
            ("AuthCode", "01604D" if customer.approved else ""),
        ]
        result = self.pool.handle_callback(path, params)
        self.returns.append((result.callback_id, customer))

    def cancel(self, token: str) -> None:
        with contextlib.suppress(PaymentNotPending):  # it expired or was released meanwhile
            self.pool.cancel_payment(token)

    def leave(self, token: str) -> None:
        if self.oracle:
            self.cancel(token)  # the oracle knows at once

    def sweep(self) -> None:
        self.pool.sweep()

    def tally(self, owners: dict[str, Customer], paid: set[int]) -> tuple[int, int, int, int]:
        """(misattributed, lost, needs_review, unmatched) once every event has run."""
        misattributed = unmatched = 0
        with self.store.read() as tx:
            for callback_id, customer in self.returns:
                record = tx.get_callback(callback_id)
                assert record is not None
                if record.outcome is CallbackOutcome.UNMATCHED:
                    unmatched += 1
                if record.outcome is not CallbackOutcome.APPLIED:
                    continue
                if record.candidates:
                    # Same-amount payments settled together: each must have been paid.
                    if any(owners[token].index not in paid for token in record.candidates):
                        misattributed += 1
                elif owners[record.payment_token or ""].index != customer.index:
                    misattributed += 1
            lost = 0
            for token, customer in owners.items():
                if customer.index in paid:
                    payment = tx.get_payment(token)
                    assert payment is not None
                    if payment.status not in (PaymentStatus.COMPLETED, PaymentStatus.NEEDS_REVIEW):
                        lost += 1
        return misattributed, lost, len(self.reviewed), unmatched

    def mean_hold(self) -> float:
        with self.store.read() as tx:
            return tx.holding_times_since(START).mean_seconds or 0.0


class GuideRun(GuidePool):
    """The guide's pool (``guide.py``): its ``cancel`` and ``sweep`` (the cleanup job) serve
    as they are."""

    polled = False
    sweep_every = CLEANUP_EVERY.total_seconds()

    def __init__(self, clock: FakeClock, workload: Workload) -> None:
        super().__init__(_paths(workload.slots), clock)
        self._new_tokens = (f"seed-{n}" for n in itertools.count())
        self.applied: list[tuple[str | None, Customer]] = []

    def request(self, customer: Customer) -> tuple[str, str] | str | None:
        token = next(self._new_tokens)
        path = self.acquire(token, customer.amount)
        return None if path is None else (token, path)

    def poll_ticket(self, ticket: str) -> tuple[str, str] | str | None:
        raise AssertionError("the guide has no waiting room")

    def poll(self, token: str) -> float | None:
        return 0.0 if self.tokens[token].status == "pending" else None

    def pay(self, customer: Customer, token: str, path: str) -> None:
        self.applied.append((self.handle_return(path, customer.approved), customer))

    def leave(self, token: str) -> None:
        pass  # the guide learns nothing: the form stays locked until its lock times out

    def tally(self, owners: dict[str, Customer], paid: set[int]) -> tuple[int, int, int, int]:
        misattributed = sum(
            1 for token, customer in self.applied if token is not None and owners[token] != customer
        )
        unmatched = sum(1 for token, _ in self.applied if token is None)
        lost = sum(
            1
            for token, customer in owners.items()
            if customer.index in paid and self.tokens[token].status != "completed"
        )
        return misattributed, lost, 0, unmatched

    def mean_hold(self) -> float:
        return self.held_seconds / self.leases if self.leases else 0.0


def _answer(result: Checkout | Waiting) -> tuple[str, str] | str:
    if isinstance(result, Waiting):
        return result.ticket
    return result.payment.token, result.lease.path


def _paths(slots: int) -> tuple[str, ...]:
    return tuple(f"{PATH_PREFIX}{n}" for n in range(1, slots + 1))


def _code(amount: int) -> str:
    return f"ITEM{CATALOGUE_AMOUNTS.index(amount) + 1}"


def _gateway() -> PaygistixGateway:
    return PaygistixGateway(
        merchant_id=MERCHANT,
        form_id="55810301384",
        form_hash="c701523a33721cdbe999f7a4406a0a98",
        currency="USD",
        catalogue=tuple(
            CatalogueItem(code=_code(amount), description=f"item at {amount}", price=amount)
            for amount in CATALOGUE_AMOUNTS
        ),
        action_url="https://gateway.example/transaction.asp",
    )


# --- the event loop ----------------------------------------------------------------------------

_ARRIVE, _TICKET, _POLL, _DONE, _SWEEP = range(5)


def simulate(
    policy: str, workload: Workload, customers: Sequence[Customer] | None = None
) -> Result:
    """Replay ``workload`` (its customers drawn from its seed unless given) on ``policy``."""
    if customers is None:
        customers = workload.draw()
    _check_policy(policy)
    clock = FakeClock(START)
    run: PoolRun | GuideRun = (
        GuideRun(clock, workload)
        if policy == "seed"
        else PoolRun(clock, workload, oracle=policy == "oracle")
    )
    scale = 3600.0 / workload.arrivals_per_hour
    events: list[tuple[float, int, int, int]] = []
    order = itertools.count()

    def at(moment: float, kind: int, index: int) -> None:
        heapq.heappush(events, (moment, next(order), kind, index))

    count = len(customers)
    arrived = [c.arrival * scale for c in customers]
    tickets: list[str | None] = [None] * count
    tokens: list[str | None] = [None] * count
    paths: list[str | None] = [None] * count
    waits: list[float | None] = [None] * count  # None: turned away
    done = [False] * count
    owners: dict[str, Customer] = {}
    paid: set[int] = set()

    admitted_at = [0.0] * count

    def admitted(index: int, moment: float, token: str, path: str) -> None:
        customer = customers[index]
        tokens[index], paths[index] = token, path
        admitted_at[index] = moment
        waits[index] = moment - arrived[index]
        owners[token] = customer
        at(moment + customer.duration, _DONE, index)
        if run.polled:
            at(moment + workload.poll_seconds, _POLL, index)

    def answered(index: int, moment: float, answer: tuple[str, str] | str | None) -> None:
        if isinstance(answer, tuple):
            admitted(index, moment, *answer)
        elif answer is not None:
            tickets[index] = answer
            at(moment + 2.0, _TICKET, index)

    for index, moment in enumerate(arrived):
        at(moment, _ARRIVE, index)
    end = arrived[-1] + DRAIN
    at(run.sweep_every, _SWEEP, -1)

    while events:
        moment, _, kind, index = heapq.heappop(events)
        clock.set(START + timedelta(seconds=moment))
        if kind == _SWEEP:
            run.sweep()
            if moment < end:
                at(moment + run.sweep_every, _SWEEP, -1)
            continue
        customer = customers[index]
        if kind == _ARRIVE:
            answered(index, moment, run.request(customer))
        elif kind == _TICKET:
            if moment - arrived[index] <= workload.patience:
                answered(index, moment, run.poll_ticket(tickets[index] or ""))
        elif kind == _POLL:
            token = tokens[index]
            if done[index] or token is None:
                continue
            matters_from = run.poll(token)
            if matters_from is None:
                continue
            # The page polls every poll_seconds from its start; the polls before the next
            # one that can change anything only read, and are not replayed unless asked.
            every = workload.poll_seconds
            following = moment + every
            if not workload.every_poll and matters_from > following:
                start = admitted_at[index]
                following = start + math.ceil((matters_from - start) / every) * every
            at(following, _POLL, index)
        else:
            token, path = tokens[index], paths[index]
            assert token is not None
            assert path is not None
            if customer.behaviour in (Behaviour.PAYS, Behaviour.PAYS_LATE):
                if customer.approved:
                    paid.add(index)
                run.pay(customer, token, path)
            elif customer.behaviour is Behaviour.CLOSES:
                run.cancel(token)
            else:
                run.leave(token)
            done[index] = True

    counted = [i for i in range(count) if arrived[i] >= workload.warmup] or list(range(count))
    served = sorted(w for i in counted if (w := waits[i]) is not None)
    misattributed, lost, needs_review, unmatched = run.tally(owners, paid)
    return Result(
        policy=policy,
        arrivals_per_hour=workload.arrivals_per_hour,
        arrivals=len(counted),
        admitted=len(served),
        waited=sum(1 for w in served if w > 0),
        turned_away=len(counted) - len(served),
        mean_wait=sum(served) / len(served) if served else 0.0,
        p95_wait=served[max(0, math.ceil(0.95 * len(served)) - 1)] if served else 0.0,
        approved=len(paid),
        misattributed=misattributed,
        lost=lost,
        needs_review=needs_review,
        unmatched=unmatched,
        mean_hold=run.mean_hold(),
    )


# --- the most arrivals an hour ---------------------------------------------------------------


def max_arrivals_per_hour(
    policy: str,
    workload: Workload,
    *,
    target: float = 0.01,
    tolerance: float = 0.01,
    guess: float | None = None,
    customers: Sequence[Customer] | None = None,
    on_step: Callable[[Result], None] | None = None,
) -> float:
    """The highest arrival rate at which ``policy`` turns away at most ``target``, to
    ``tolerance`` (relative). Runs at every rate replay the same customers, so the share
    turned away grows with the rate as it would in a single long day.

    The search brackets the rate, then narrows the bracket by interpolating the share in
    log-log (Erlang B is close to a power of the load there), each guess followed by a probe
    just across it, which usually closes the bracket in a few runs.
    """
    if customers is None:
        customers = workload.draw()
    # How steeply the share turned away grows with the load near the target (Erlang B).
    load = offered_load(workload.slots, target)
    steepness = max(1.5, workload.slots - load * (1 - target))
    fitting: tuple[float, float] | None = None  # the highest rate that fits, its share
    failing: tuple[float, float] | None = None  # the lowest rate that does not

    def run(rate: float) -> None:
        nonlocal fitting, failing
        result = simulate(policy, replace(workload, arrivals_per_hour=rate), customers)
        share = result.turned_away_share
        if on_step is not None:
            on_step(result)
        if share <= target:
            if fitting is None or rate > fitting[0]:
                fitting = (rate, share)
        elif failing is None or rate < failing[0]:
            failing = (rate, share)

    rate = guess or workload.arrivals_per_hour
    run(rate)
    while fitting is None or failing is None:
        if fitting is None:
            assert failing is not None
            rate = failing[0] * _towards(failing[1], target, steepness)
        else:
            rate = fitting[0] * _towards(fitting[1], target, steepness)
        run(rate)
    while failing[0] / fitting[0] - 1 > tolerance:
        low, high = fitting, failing
        if low[1] > 0:
            slope = (math.log(high[1]) - math.log(low[1])) / (math.log(high[0]) - math.log(low[0]))
            guessed = low[0] * math.exp((math.log(target) - math.log(low[1])) / max(slope, 0.5))
        else:
            guessed = math.sqrt(low[0] * high[0])
        # Keep inside the bracket, clear of its ends, then probe just across the guess.
        margin = 1 + tolerance / 2
        rate = min(max(guessed, low[0] * margin), high[0] / margin)
        run(rate)
        across = 1 + tolerance * 0.9
        probe = rate * across if fitting[0] == rate else rate / across
        if fitting[0] < probe < failing[0]:
            run(probe)
    return fitting[0]


def _towards(share: float, target: float, steepness: float) -> float:
    """The factor on the rate that Erlang B's steepness says brings ``share`` to
    ``target`` (at least 5% either way, at most doubling or halving)."""
    if share <= 0:
        return 1.5
    factor: float = (target / share) ** (1 / steepness)
    if factor >= 1:
        return min(max(factor * 1.02, 1.05), 2.0)
    return max(min(factor / 1.02, 1 / 1.05), 0.5)


# --- the policies side by side -----------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class PolicyReport:
    """A policy at the workload's rate, and the most it carries at the target."""

    result: Result
    max_arrivals_per_hour: float | None


def report(
    policy: str,
    workload: Workload,
    *,
    target: float = 0.01,
    find_max: bool = True,
    on_step: Callable[[Result], None] | None = None,
) -> PolicyReport:
    """``policy`` at the workload's rate and, with ``find_max``, its most arrivals an hour
    at ``target`` turned away (the bisection starts from Erlang B with the holding time
    seen)."""
    customers = workload.draw()
    result = simulate(policy, workload, customers)
    if on_step is not None:
        on_step(result)
    if not find_max:
        return PolicyReport(result=result, max_arrivals_per_hour=None)
    hold = result.mean_hold
    guess = offered_load(workload.slots, target) * 3600 / hold if hold > 0 else None
    best = max_arrivals_per_hour(
        policy, workload, target=target, guess=guess, customers=customers, on_step=on_step
    )
    return PolicyReport(result=result, max_arrivals_per_hour=best)


def compare(
    workload: Workload,
    *,
    policies: Sequence[str] = POLICIES,
    target: float = 0.01,
    find_max: bool = True,
    jobs: int = 1,
    on_step: Callable[[Result], None] | None = None,
) -> dict[str, PolicyReport]:
    """Every policy on the workload; with ``jobs`` > 1, in that many processes at once.
    ``on_step`` is handed each run's result as it ends (for a progress display)."""
    for policy in policies:
        _check_policy(policy)
    if jobs <= 1 or len(policies) == 1:
        return {
            policy: report(policy, workload, target=target, find_max=find_max, on_step=on_step)
            for policy in policies
        }
    # Fork where there is one: a child then needs no importable main module.
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    # A SimpleQueue's put is written to its pipe before it returns (a Queue's is written
    # later, by a thread): once a worker's report is done, all its steps can be read.
    steps: multiprocessing.queues.SimpleQueue[Result] = context.SimpleQueue()
    # The pool's own policies cost the most (the page's polling): they start first.
    ordered = sorted(policies, key=lambda p: p == "seed")
    with ProcessPoolExecutor(
        max_workers=min(jobs, len(policies)),
        mp_context=context,
        initializer=_worker_init,
        initargs=(steps,),
    ) as workers:
        futures = {
            policy: workers.submit(_worker_report, policy, workload, target, find_max)
            for policy in ordered
        }
        while not all(future.done() for future in futures.values()):
            if not _relay(steps, on_step):
                time.sleep(0.05)
        _relay(steps, on_step)
        return {policy: futures[policy].result() for policy in policies}


_worker_steps: multiprocessing.queues.SimpleQueue[Result] | None = None


def _worker_init(steps: multiprocessing.queues.SimpleQueue[Result]) -> None:
    global _worker_steps
    _worker_steps = steps
    logging.getLogger("callbackpool").setLevel(logging.ERROR)


def _worker_report(policy: str, workload: Workload, target: float, find_max: bool) -> PolicyReport:
    assert _worker_steps is not None  # set by _worker_init
    return report(policy, workload, target=target, find_max=find_max, on_step=_worker_steps.put)


def _relay(
    steps: multiprocessing.queues.SimpleQueue[Result], on_step: Callable[[Result], None] | None
) -> bool:
    """Hand on the steps the workers have sent so far; whether there were any."""
    relayed = False
    while not steps.empty():
        step = steps.get()
        if on_step is not None:
            on_step(step)
        relayed = True
    return relayed


def _check_policy(policy: str) -> None:
    if policy not in POLICIES:
        raise ValueError(f"unknown policy {policy!r} (one of {', '.join(POLICIES)})")
