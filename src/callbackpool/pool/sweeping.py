"""Housekeeping: the sweep, and leases ended by hand.

The sweep ends leases that ran out, forgets stale taints, tickets and admission counts,
drains the reserve when the load has fallen, resolves returns stored but never resolved,
and asks the gateway again about returns it could not yet attribute. An operator's release
ends a live lease early, leaving a taint.
"""

from __future__ import annotations

from datetime import timedelta

from ..analytics import WINDOWS
from ..domain.errors import NothingToRelease
from ..domain.events import SweepRan
from ..domain.model import Lease, LeaseEnd, callback_ref
from ..store.tx import Tx
from .callbacks import Callbacks
from .core import PoolCore, Work, log
from .gateway_query import GatewayQueries
from .reserve import drain_reserve
from .results import SweepReport

UNRESOLVED_GRACE = timedelta(seconds=30)
# How long admission counts are kept: the capacity window reads the latest of them, and the
# dashboard's turn-away chart reads their refusals over its longest window.
ADMISSIONS_KEPT = max(WINDOWS.values())


class Housekeeping:
    """The sweep, expiry on demand, and the operator's release of leases."""

    def __init__(self, core: PoolCore, callbacks: Callbacks, queries: GatewayQueries) -> None:
        self.core = core
        self.callbacks = callbacks
        self.queries = queries

    def expire_due(self) -> int:
        with self.core.writing() as (tx, work):
            return self.core.expire_due(tx, work)

    def sweep(self) -> SweepReport:
        policy = self.core.policy
        try:
            with self.core.writing() as (tx, work):
                expired = self.core.expire_due(tx, work)
                dropped = tx.drop_stale_taints()
                tickets = tx.expire_stale_tickets()
                reserve = drain_reserve(policy, tx)
                tx.drop_admissions_before(tx.now - max(ADMISSIONS_KEPT, policy.capacity_window))
                leftovers = tx.unresolved_callbacks(tx.now - UNRESOLVED_GRACE)
        except Exception:
            self.core.emit([SweepRan(failed=True)])
            raise
        resolved = 0
        for callback_id in leftovers:
            try:
                self.callbacks.resolve(callback_id)
            except Exception:
                # It stays ``received``: shown to operators and tried again by the next sweep.
                # One return that cannot be resolved must not hold back the others.
                log.exception("callback %s could not be resolved", callback_ref(callback_id))
            else:
                resolved += 1
        if self.core.status_query is not None:
            self.queries.ask_again()
        self.core.emit([SweepRan(failed=False, expired=expired)])
        return SweepReport(
            expired=expired,
            taints_dropped=dropped,
            callbacks_resolved=resolved,
            tickets_expired=tickets,
            reserve=reserve,
        )

    def release(self, *, path: str | None, token: str | None) -> Lease:
        if (path is None) == (token is None):
            raise ValueError("name either a path or a token")
        with self.core.writing() as (tx, work):
            lease = (
                tx.live_lease_on_path(path)
                if path is not None
                else tx.live_lease_of_payment(token or "")
            )
            if lease is not None and not self.core.expire_due(tx, work, lease.slot_id):
                self._release_by_operator(tx, work, lease)
            # A lease already past its expiry has just been ended as expired instead.
        if lease is None:
            raise NothingToRelease()
        return lease

    def release_all(self) -> list[Lease]:
        with self.core.writing() as (tx, work):
            # The leases (and, on PostgreSQL, their slots, all in one order) before the
            # expiry: taking slots one by one after it held some could deadlock two of these.
            leases = tx.live_leases()
            self.core.expire_due(tx, work)
            leases = [lease for lease in leases if lease.expires_at > tx.now]  # not expired
            for lease in leases:
                self._release_by_operator(tx, work, lease)
        return leases

    def _release_by_operator(self, tx: Tx, work: Work, lease: Lease) -> None:
        self.core.end_lease(tx, work, lease, LeaseEnd.ADMIN, taint=True)
        released = "released by an operator"
        self.core.expire_payment(tx, work, lease.token, released, error_message=released)
