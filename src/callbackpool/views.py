"""JSON shapes of the pool's reports: camelCase keys, times in ISO 8601 UTC.

One module, so that the CLI's ``--json`` and the HTTP API show the same document for the
same report. Pure functions over the core's value objects; no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from .analytics import PoolSeries
from .capacity.erlang import Plan
from .domain.model import (
    CallbackOutcome,
    CallbackRecord,
    Lease,
    Payment,
    PaymentStatus,
    ReserveEvent,
    Review,
    SlotView,
)
from .domain.model import callback_id_of as model_callback_id_of
from .pool import CapacityReport, PoolStatus, ReserveStatus, ReviewQueue, SweepReport
from .store.tx import SlotSync, UsageRow

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
    ``available``, ``sidelined`` (free, but out of rotation until an operator restores it),
    ``standby`` (a reserve path out of rotation, and free) or ``inactive`` (no longer in the
    configuration, and free)."""
    if slot.lease is not None:
        return "stuck" if slot.lease.expires_at <= at else "locked"
    if not slot.active:
        return "inactive"
    if slot.sidelined:
        return "sidelined"
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
        "outOfRotation": status.out_of_rotation,
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
        **slot_health_json(slot, at),
    }


def slot_health_json(slot: SlotView, at: datetime) -> JsonObject:
    """The slot's health figures and whether it is in rotation (the slot-health rule)."""
    health = slot.health
    last = health.last_return_at
    return {
        "inRotation": slot.in_rotation,
        "sidelinedAt": iso(slot.sidelined_at),
        "sidelinedBy": slot.sidelined_by,
        "sidelinedReason": slot.sidelined_reason,
        "approvals": health.approvals,
        "declines": health.declines,
        "silentExpiries": health.silent_expiries,
        "expiryStreak": health.expiry_streak,
        "lastReturnAt": iso(last),
        "secondsSinceLastReturn": None if last is None else round((at - last).total_seconds()),
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


# --- stored returns ----------------------------------------------------------------------------

MASK = "****"
# Parameters an operator never sees in clear, whatever sends them: a card's expiry date, and
# anything that could be a card number or its security code (a genuine return carries only
# Last4 and CardType; a forged or broken one might carry more).
_MASKED_NAMES = frozenset(
    {"expdate", "exp_date", "expiry", "expirydate", "cardnumber", "card_number", "ccnumber",
     "cardnum", "pan", "cvv", "cvv2", "cvc", "cvc2", "cid"}
)  # fmt: skip
_CARD_NUMBER = re.compile(r"\d[\d -]{11,22}\d")


def masked_params(params: Iterable[tuple[str, str]]) -> list[list[str]]:
    """A return's parameters as an operator sees them: ``ExpDate`` and anything that looks
    like a card number masked, everything else as received (pages escape it)."""
    shown = []
    for name, value in params:
        hidden = name.strip().lower() in _MASKED_NAMES or _looks_like_card_number(value)
        shown.append([name, MASK if hidden and value else value])
    return shown


def _looks_like_card_number(value: str) -> bool:
    match = _CARD_NUMBER.search(value)
    if match is None:
        return False
    digits = [int(c) for c in match.group() if c.isdigit()]
    return 13 <= len(digits) <= 19


def callback_json(record: CallbackRecord) -> JsonObject:
    return {
        "id": record.id,
        "ref": record.ref,
        "path": record.path,
        "method": record.method,
        "receivedAt": iso(record.received_at),
        "clientAddr": record.client_addr,
        "outcome": record.outcome.value,
        "pnRef": record.pn_ref,
        "amount": record.amount,
        "approved": record.approved,
        "paymentToken": record.payment_token,
        "detail": record.detail,
        "candidates": list(record.candidates),
        "duplicateOf": record.duplicate_of,
        "settledAt": iso(record.settled_at),
        "settledBy": record.settled_by,
        "queryAttempts": record.query_attempts,
        "queryAnswer": record.query_answer,
        "params": masked_params(record.params),
    }


def callbacks_json(
    records: Sequence[CallbackRecord],
    *,
    limit: int,
    outcomes: Sequence[CallbackOutcome],
    counts: Mapping[CallbackOutcome, int],
) -> JsonObject:
    """A page of stored returns, newest first, and the totals by outcome. ``nextBefore``
    asks for the next page (None on the last)."""
    return {
        "counts": {outcome.value: counts.get(outcome, 0) for outcome in CallbackOutcome},
        "outcomes": [outcome.value for outcome in outcomes],
        "callbacks": [callback_json(record) for record in records],
        "nextBefore": records[-1].id if len(records) == limit and records else None,
    }


# --- review ------------------------------------------------------------------------------------


def review_json(review: Review) -> JsonObject:
    return {
        "id": review.id,
        "ref": review.ref,
        "decision": review.decision.value,
        "callbackRef": None if review.callback_id is None else f"CB-{review.callback_id}",
        "paymentToken": review.payment_token,
        "others": None if review.others is None else review.others.value,
        "decidedBy": review.decided_by,
        "decidedAt": iso(review.decided_at),
        "reason": review.reason,
        "changes": [
            {"token": c.token, "from": c.previous.value, "to": c.status.value}
            for c in review.changes
        ],
    }


def review_queue_json(queue: ReviewQueue, decided: Sequence[Review]) -> JsonObject:
    """What waits for an operator, and the latest decisions."""
    return {
        "waiting": len(queue),
        "returns": [
            {
                **callback_json(item.record),
                "candidatePayments": [review_payment_json(p) for p in item.candidates],
            }
            for item in queue.returns
        ],
        "payments": [review_payment_json(p) for p in queue.payments],
        "decided": [review_json(review) for review in decided],
    }


def review_payment_json(payment: Payment) -> JsonObject:
    """A payment as an operator deciding about it needs to see it."""
    return {
        **payment_json(payment),
        "late": payment.late,
        "errorMessage": payment.error_message,
        "customer": dict(payment.customer),
    }


def counts_json(counts: Mapping[PaymentStatus, int]) -> JsonObject:
    return {status.value: counts.get(status, 0) for status in PaymentStatus}


def health_json(status: PoolStatus, expiries_to_sideline: int) -> JsonObject:
    """Per-slot health, and the rule's threshold (0: the rule is off)."""
    return {
        "at": iso(status.at),
        "outOfRotation": status.out_of_rotation,
        "expiriesToSideline": expiries_to_sideline,
        "handlers": [
            {"path": slot.path, **slot_health_json(slot, status.at)} for slot in status.slots
        ],
    }


def stuck_json(now: datetime, leases: Sequence[Lease]) -> JsonObject:
    return {"at": iso(now), "leases": [lease_json(lease) for lease in leases]}


def orphans_json(now: datetime, age: timedelta, payments: Sequence[Payment]) -> JsonObject:
    return {
        "at": iso(now),
        "olderThanSeconds": age.total_seconds(),
        "payments": [payment_json(p) for p in payments],
    }


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> timedelta:
    """``90s``, ``30m``, ``2h``, ``1d``, or several at once: ``1h30m`` (ValueError else).
    How durations are written to the CLI's options and the API's query parameters."""
    parts = _DURATION_PART.findall(text.strip())
    if not parts or "".join(n + u for n, u in parts) != text.strip():
        raise ValueError(f"{text!r} is not a duration such as 90s, 30m, 2h or 1h30m")
    return sum((timedelta(seconds=float(n) * _UNIT_SECONDS[u]) for n, u in parts), timedelta())


def series_json(series: PoolSeries, window: str) -> JsonObject:
    """The dashboard's charts as data: a value per bucket, oldest first."""
    return {
        "window": window,
        "since": iso(series.since),
        "bucketSeconds": series.bucket.total_seconds(),
        "slots": series.slots,
        "starts": [iso(start) for start in series.starts],
        "utilisation": [round(value, 4) for value in series.utilisation],
        "turnedAway": None if series.turned_away is None else list(series.turned_away),
        "leasesEnded": {reason.value: list(counts) for reason, counts in series.ended.items()},
        "durationP50Seconds": list(series.duration_p50),
        "durationP95Seconds": list(series.duration_p95),
    }


def callback_id_of(ref: str) -> int | None:
    """The id a return's reference names (``CB-12`` or ``12``), or None."""
    text = ref.strip().upper()
    return model_callback_id_of(text if text.startswith("CB-") else f"CB-{text}")


def span(delta: timedelta) -> str:
    """The two largest units of a duration: ``45s``, ``5m 10s``, ``2h 5m``, ``3d 4h``."""
    seconds = int(delta.total_seconds())
    days, seconds = divmod(seconds, 86400)
    hours, seconds = divmod(seconds, 3600)
    minutes, seconds = divmod(seconds, 60)
    parts = [(days, "d"), (hours, "h"), (minutes, "m"), (seconds, "s")]
    while len(parts) > 1 and parts[0][0] == 0:
        parts.pop(0)
    return " ".join(f"{n}{unit}" for n, unit in parts[:2] if n or unit == parts[0][1])
