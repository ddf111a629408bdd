"""Reserve paths: callback paths registered at the gateway but leased only under load.

A request that finds no slot puts the reserve in rotation once the capacity window's share
of requests not served at once passes the target; the sweeper takes it out again once a
whole window has passed that the main paths alone could carry. Both run inside the caller's
write transaction and record why in the reserve's event log.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from ..domain.model import ReserveAction, ReserveEvent
from ..store.tx import Tx
from .core import log
from .policy import PoolPolicy


def activate_reserve(policy: PoolPolicy, tx: Tx) -> bool:
    """Put the reserve in rotation if this request, which found no slot, takes the
    window's share of requests not served at once past the target. True if it did."""
    if not policy.reserve_paths:
        return False
    latest = _latest_event(tx)
    if latest is not None and latest.action is ReserveAction.ACTIVATED:
        return False
    counts = tx.admissions_since(tx.now - policy.capacity_window)
    counts = replace(counts, refused=counts.refused + 1)  # this request
    if counts.not_served_at_once <= policy.capacity_target:
        return False
    paths = tx.set_reserve_standby(False)
    if not paths:
        return False
    reason = (
        f"{counts.waited + counts.refused} of {counts.requests} requests in the last "
        f"{_minutes(policy.capacity_window)} found no slot at once "
        f"({counts.not_served_at_once:.1%}, target {policy.capacity_target:.1%})"
    )
    event = tx.insert_reserve_event(ReserveAction.ACTIVATED, paths, reason)
    log.warning("reserve paths activated: %s (%s)", ", ".join(paths), event.reason)
    return True


def drain_reserve(policy: PoolPolicy, tx: Tx) -> ReserveEvent | None:
    """Take the reserve out of rotation once a whole window since it was activated has
    seen nobody wait or turned away, and never more slots busy at once than the main
    paths less one: the main paths carry the load again. Running leases drain."""
    if not policy.reserve_paths:
        return None
    latest = _latest_event(tx)
    if latest is None or latest.action is not ReserveAction.ACTIVATED:
        return None
    since = tx.now - policy.capacity_window
    if latest.at > since:
        return None
    counts = tx.admissions_since(since)
    main = len(policy.callback_paths)
    if counts.waited or counts.refused or counts.peak_busy >= main:
        return None
    paths = tx.set_reserve_standby(True)
    reason = (
        f"the last {_minutes(policy.capacity_window)}: nobody waited or was turned "
        f"away, at most {counts.peak_busy} slots busy at once for {main} main paths"
    )
    event = tx.insert_reserve_event(ReserveAction.DRAINED, paths, reason)
    log.warning("reserve paths drained: %s (%s)", ", ".join(paths) or "-", event.reason)
    return event


def _latest_event(tx: Tx) -> ReserveEvent | None:
    latest = tx.reserve_events(limit=1)
    return latest[0] if latest else None


def _minutes(span: timedelta) -> str:
    return f"{span.total_seconds() / 60:g} min"
