"""JSON shapes of the pool's reports: camelCase keys, times in ISO 8601 UTC.

One module, so that the CLI's ``--json`` and the HTTP API show the same document for the
same report. Pure functions over the core's value objects; no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from .capacity.erlang import Plan
from .domain.model import Lease, Payment, ReserveEvent, SlotView
from .pool import CapacityReport, PoolStatus, ReserveStatus, SweepReport
from .ports import SlotSync, UsageRow

if TYPE_CHECKING:  # the simulator is not needed to show the pool's own reports
    from .capacity.simulate import PolicyReport, Workload

JsonObject = dict[str, Any]


def iso(moment: datetime | None) -> str | None:
    """``2026-01-01T12:00:00.000Z`` (what a JavaScript client's ``Date`` reads), or None."""
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def slot_state(slot: SlotView, at: datetime) -> str:
    """``locked``, ``stuck`` (its lease is past expiry and no sweep has ended it yet),
    ``available``, ``standby`` (a reserve path out of rotation, and free) or ``inactive``
    (no longer in the configuration, and free)."""
    if slot.lease is not None:
        return "stuck" if slot.lease.expires_at <= at else "locked"
    if not slot.active:
        return "inactive"
    return "standby" if slot.standby else "available"


def status_json(status: PoolStatus) -> JsonObject:
    """The seed's ``getPoolStatus()`` document, with the figures it lacked."""
    return {
        "at": iso(status.at),
        "total": status.total,
        "available": status.available,
        "locked": status.locked,
        "stuck": status.stuck,
        "tainted": status.tainted,
        "inactive": status.inactive,
        "standby": status.standby,
        "waiting": status.waiting,
        "reserve": reserve_json(status.reserve) if status.reserve else None,
        "capacity": capacity_json(status.capacity) if status.capacity else None,
        "handlers": [slot_json(slot, status.at) for slot in status.slots],
    }


def reserve_json(reserve: ReserveStatus) -> JsonObject:
    """The reserve paths: their state and their latest changes, newest first."""
    return {
        "state": reserve.state,
        "paths": list(reserve.paths),
        "inRotation": reserve.in_rotation,
        "draining": reserve.draining,
        "events": [reserve_event_json(event) for event in reserve.events],
    }


def reserve_event_json(event: ReserveEvent) -> JsonObject:
    return {
        "at": iso(event.at),
        "action": event.action.value,
        "paths": list(event.paths),
        "reason": event.reason,
    }


def capacity_json(report: CapacityReport) -> JsonObject:
    """The capacity window: requests and holding times seen, and Erlang B's reading of
    them (None until a lease has ended in the window)."""
    counts = report.counts
    turned_away = report.predicted_turned_away
    erlangs = report.offered_erlangs
    mean = report.holding.mean_seconds
    return {
        "windowSeconds": report.window.total_seconds(),
        "requests": counts.requests,
        "leased": counts.leased,
        "waited": counts.waited,
        "refused": counts.refused,
        "granted": counts.granted,
        "notServedAtOnce": round(counts.not_served_at_once, 6),
        "arrivalsPerHour": round(report.arrivals_per_hour, 2),
        "meanHoldSeconds": None if mean is None else round(mean, 1),
        "offeredErlangs": None if erlangs is None else round(erlangs, 4),
        "slots": report.slots,
        "target": report.target,
        "predictedTurnedAway": None if turned_away is None else round(turned_away, 6),
        "slotsNeeded": report.slots_needed,
    }


def slot_json(slot: SlotView, at: datetime) -> JsonObject:
    lease = slot.lease
    return {
        "path": slot.path,
        "active": slot.active,
        "state": slot_state(slot, at),
        "isLocked": lease is not None,
        "leaseId": lease.id if lease else None,
        "lockedBy": lease.token if lease else None,
        "lockedAt": iso(lease.acquired_at) if lease else None,
        "expiresAt": iso(lease.expires_at) if lease else None,
        "usageCount": slot.usage_count,
        "lastUsedAt": iso(slot.last_acquired_at),
        "lastReleasedAt": iso(slot.last_released_at),
        "taints": slot.taints,
        "reserve": slot.reserve,
        "standby": slot.standby,
    }


def lease_json(lease: Lease) -> JsonObject:
    return {
        "leaseId": lease.id,
        "path": lease.path,
        "lockedBy": lease.token,
        "amount": lease.amount,
        "lockedAt": iso(lease.acquired_at),
        "expiresAt": iso(lease.expires_at),
    }


def payment_json(payment: Payment) -> JsonObject:
    return {
        "token": payment.token,
        "status": payment.status.value,
        "amount": payment.amount,
        "currency": payment.currency,
        "callbackPath": payment.callback_path,
        "leaseId": payment.lease_id,
        "createdAt": iso(payment.created_at),
        "expiresAt": iso(payment.expires_at),
        "updatedAt": iso(payment.updated_at),
    }


def usage_json(rows: list[UsageRow]) -> JsonObject:
    """Usage per slot, and the seed's ``avgUsage`` (over the active slots)."""
    active = [row.usage_count for row in rows if row.active]
    return {
        "averageUsage": sum(active) / len(active) if active else 0.0,
        "handlers": [
            {
                "path": row.path,
                "active": row.active,
                "usageCount": row.usage_count,
                "callbacks": row.callbacks,
                "expiries": row.expiries,
                "lastUsedAt": iso(row.last_acquired_at),
                "lastReleasedAt": iso(row.last_released_at),
            }
            for row in rows
        ],
    }


def sweep_json(report: SweepReport) -> JsonObject:
    return {
        "expired": report.expired,
        "taintsDropped": report.taints_dropped,
        "callbacksResolved": report.callbacks_resolved,
        "ticketsExpired": report.tickets_expired,
        "reserve": None if report.reserve is None else reserve_event_json(report.reserve),
    }


def sync_json(sync: SlotSync) -> JsonObject:
    return {
        "added": list(sync.added),
        "reactivated": list(sync.reactivated),
        "deactivated": list(sync.deactivated),
    }


def plan_json(plan: Plan) -> JsonObject:
    """One line of ``callbackpool plan``: what N slots carry at the target."""
    return {
        "slots": plan.slots,
        "offeredErlangs": round(plan.offered_erlangs, 4),
        "maxArrivalsPerHour": round(plan.max_arrivals_per_hour, 2),
    }


def simulation_json(
    workload: Workload, target: float, reports: Mapping[str, PolicyReport]
) -> JsonObject:
    """``callbackpool simulate --json``: the workload, each policy's figures, and how the
    project's pool compares with the guide's and with the oracle."""
    policies = {name: policy_json(report) for name, report in reports.items()}
    comparison: JsonObject = {}
    ours = policies.get("callbackpool", {}).get("maxArrivalsPerHour")
    for other, key in (("seed", "callbackpoolOverSeed"), ("oracle", "callbackpoolOverOracle")):
        theirs = policies.get(other, {}).get("maxArrivalsPerHour")
        if ours and theirs:
            comparison[key] = round(ours / theirs, 3)
    return {
        "workload": {
            "arrivalsPerHour": workload.arrivals_per_hour,
            "customers": workload.customers,
            "seed": workload.seed,
            "slots": workload.slots,
            "uniformAmount": workload.uniform_amount,
            "patienceSeconds": workload.patience,
            "pollSeconds": workload.poll_seconds,
        },
        "target": target,
        "policies": policies,
        "comparison": comparison,
    }


def policy_json(report: PolicyReport) -> JsonObject:
    result = report.result
    best = report.max_arrivals_per_hour
    return {
        "arrivals": result.arrivals,
        "admitted": result.admitted,
        "turnedAway": result.turned_away,
        "turnedAwayShare": round(result.turned_away_share, 6),
        "waited": result.waited,
        "meanWaitSeconds": round(result.mean_wait, 3),
        "p95WaitSeconds": round(result.p95_wait, 3),
        "meanHoldSeconds": round(result.mean_hold, 1),
        "approved": result.approved,
        "misattributed": result.misattributed,
        "lost": result.lost,
        "needsReview": result.needs_review,
        "unmatchedReturns": result.unmatched,
        "maxArrivalsPerHour": None if best is None else round(best, 1),
    }
