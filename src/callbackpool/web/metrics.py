"""``/metrics`` in Prometheus's format (prometheus-client, a registry per app).

Two kinds of figures (docs/operations.md lists each):
- what the database holds — slots by state, payments by status, each slot's health — is
  read at scrape time by a collector, so every instance sharing the database says the same;
- what this process did — leases started and ended, acquisition latency, refusals, returns
  by outcome, sweeps — are counters fed by the pool's events (``CallbackPool.add_observer``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..domain.events import (
    CallbackResolved,
    CreateRefused,
    LeaseEnded,
    LeaseStarted,
    PoolEvent,
    SlotRestored,
    SlotSidelined,
    SweepRan,
)
from ..domain.model import CallbackOutcome, LeaseEnd
from ..pool import CallbackPool
from ..pool.core import SLOT_HEALTH
from ..pool.results import PoolStatus

log = logging.getLogger("callbackpool.metrics")

ACQUISITION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
REFUSAL_REASONS = ("pool_exhausted", "invalid", "customer_cap", "rate_limited", "cross_site")


class Metrics:
    """The app's registry, its counters, and the collector reading the database."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.leases_started = Counter(
            "callbackpool_leases_started", "Leases started by this process.", registry=r
        )
        self.leases_ended = Counter(
            "callbackpool_leases_ended",
            "Leases ended by this process, by how they ended.",
            ["reason"],
            registry=r,
        )
        self.acquisition = Histogram(
            "callbackpool_lease_acquisition_seconds",
            "Time to lease a slot to a new payment, waiting for the write turn included.",
            buckets=ACQUISITION_BUCKETS,
            registry=r,
        )
        self.refusals = Counter(
            "callbackpool_create_token_refusals",
            "create-token requests refused: pool_exhausted (every slot leased), invalid, "
            "customer_cap, rate_limited or cross_site.",
            ["reason"],
            registry=r,
        )
        self.callbacks = Counter(
            "callbackpool_callbacks",
            "Gateway returns resolved by this process, by outcome.",
            ["outcome"],
            registry=r,
        )
        self.sweeps = Counter(
            "callbackpool_sweeps", "Sweeper runs, by result (ok, failed).", ["result"], registry=r
        )
        self.last_sweep = Gauge(
            "callbackpool_last_sweep_timestamp_seconds",
            "When this process last swept successfully (Unix time; 0: not yet).",
            registry=r,
        )
        self.sidelined = Counter(
            "callbackpool_slots_sidelined",
            "Slots taken out of rotation, by cause (slot_health, operator).",
            ["cause"],
            registry=r,
        )
        self.restored = Counter(
            "callbackpool_slots_restored", "Slots put back in rotation by an operator.", registry=r
        )
        # Every label value from the start: a rate over a series that appears late is wrong.
        for reason in LeaseEnd:
            self.leases_ended.labels(reason.value)
        for refusal in REFUSAL_REASONS:
            self.refusals.labels(refusal)
        for outcome in CallbackOutcome:
            if outcome is not CallbackOutcome.RECEIVED:
                self.callbacks.labels(outcome.value)
        for result in ("ok", "failed"):
            self.sweeps.labels(result)
        for cause in ("slot_health", "operator"):
            self.sidelined.labels(cause)

    def watch(self, pool: CallbackPool) -> None:
        """Count the pool's events, and read its database at every scrape."""
        pool.add_observer(self.observe)
        self.registry.register(PoolCollector(pool))

    def observe(self, event: PoolEvent) -> None:
        match event:
            case LeaseStarted(seconds=seconds):
                self.leases_started.inc()
                self.acquisition.observe(seconds)
            case LeaseEnded(lease=lease):
                if lease.end_reason is not None:
                    self.leases_ended.labels(lease.end_reason.value).inc()
            case CreateRefused(reason=reason):
                self.refusals.labels(reason).inc()
            case CallbackResolved(outcome=outcome):
                self.callbacks.labels(outcome.value).inc()
            case SweepRan(failed=failed):
                self.sweeps.labels("failed" if failed else "ok").inc()
                if not failed:
                    self.last_sweep.set(time.time())
            case SlotSidelined(by=by):
                self.sidelined.labels("slot_health" if by == SLOT_HEALTH else "operator").inc()
            case SlotRestored():
                self.restored.inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


class PoolCollector(Collector):
    """The figures the database holds, read at each scrape."""

    def __init__(self, pool: CallbackPool) -> None:
        self.pool = pool

    def describe(self) -> Iterable[Metric]:
        return []  # nothing to read at registration

    def collect(self) -> Iterator[Metric]:
        try:
            status = self.pool.status()
            payments = self.pool.payment_counts()
        except Exception as exc:  # a scrape must answer, and say the database is down
            log.warning("metrics: the database could not be read: %s", exc)
            yield GaugeMetricFamily(
                "callbackpool_database_up", "Whether the last scrape could read the database.", 0
            )
            return
        yield GaugeMetricFamily(
            "callbackpool_database_up", "Whether the last scrape could read the database.", 1
        )
        for name, text, value in (
            ("slots", "Slots of the pool (active paths in the configuration).", status.total),
            ("slots_available", "Slots a new payment could lease now.", status.available),
            ("slots_leased", "Slots held by a lease that has not expired.", status.locked),
            ("slots_stuck", "Slots held by a lease past expiry, not yet swept.", status.stuck),
            ("slots_tainted", "Slots with a possible late return pending.", status.tainted),
            (
                "slots_out_of_rotation",
                "Slots never leased until an operator restores them.",
                status.out_of_rotation,
            ),
        ):
            yield GaugeMetricFamily(f"callbackpool_{name}", text, value)
        by_status = GaugeMetricFamily(
            "callbackpool_payments", "Payments by status.", labels=["status"]
        )
        for payment_status, count in payments.items():
            by_status.add_metric([payment_status.value], count)
        yield by_status
        streak = GaugeMetricFamily(
            "callbackpool_slot_expiry_streak",
            "Leases in a row that expired with no return on the slot's path.",
            labels=["path"],
        )
        last_return = GaugeMetricFamily(
            "callbackpool_slot_last_return_timestamp_seconds",
            "When a verified return last arrived on the slot's path (Unix time; 0: never).",
            labels=["path"],
        )
        in_rotation = GaugeMetricFamily(
            "callbackpool_slot_in_rotation",
            "Whether the slot may be leased (0: out of rotation or inactive).",
            labels=["path"],
        )
        for slot in status.slots:
            streak.add_metric([slot.path], slot.health.expiry_streak)
            at = slot.health.last_return_at
            last_return.add_metric([slot.path], at.timestamp() if at else 0)
            in_rotation.add_metric([slot.path], 1 if slot.in_rotation else 0)
        yield streak
        yield last_return
        yield in_rotation
        yield from _capacity_gauges(status)


def _capacity_gauges(status: PoolStatus) -> Iterator[Metric]:
    """The waiting room, the reserve paths and what the capacity window observed."""
    yield GaugeMetricFamily(
        "callbackpool_waiting", "Customers in the waiting room for a slot.", status.waiting
    )
    reserve = status.reserve
    yield GaugeMetricFamily(
        "callbackpool_reserve_slots_in_rotation",
        "Reserve paths activated by the load (0: all on standby, or none configured).",
        reserve.in_rotation if reserve else 0,
    )
    capacity = status.capacity
    if capacity is None:
        return
    yield GaugeMetricFamily(
        "callbackpool_arrivals_per_hour",
        "Payment requests an hour over the capacity window.",
        capacity.arrivals_per_hour,
    )
    load = capacity.offered_erlangs
    if load is not None:  # no lease has ended in the window yet
        yield GaugeMetricFamily(
            "callbackpool_offered_erlangs",
            "Observed arrivals × mean holding time over the capacity window.",
            load,
        )
    needed = capacity.slots_needed
    if needed is not None:
        yield GaugeMetricFamily(
            "callbackpool_slots_needed",
            "The fewest slots that would turn away at most the capacity target (Erlang B).",
            needed,
        )
