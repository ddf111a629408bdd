"""``CallbackPool``: the library's one entry point, the pool's whole public API.

It builds the pool's parts around one ``PoolCore`` (the store, gateway, policy and
listeners they share) and hands each call to the part it concerns: checkout and the waiting
room, payments, gateway returns, housekeeping, reports and operators' decisions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Literal, overload

from ..domain.gateway import Gateway, Params, StatusQuery
from ..domain.model import (
    CallbackOutcome,
    CallbackRecord,
    Lease,
    Payment,
    PaymentStatus,
    Review,
)
from ..store.port import Store
from ..store.tx import SlotSync, UsageRow
from .callbacks import Callbacks
from .checkout import Checkouts
from .core import Observer, PoolCore, StatusHook, log
from .gateway_query import GatewayQueries
from .payments import Payments
from .policy import PoolPolicy
from .reports import Reports
from .results import (
    CallbackResult,
    Checkout,
    PoolHistory,
    PoolStatus,
    ReviewQueue,
    SweepReport,
    Waiting,
)
from .review import Reviews
from .settlement import Settlement
from .sweeping import Housekeeping


class CallbackPool:
    """Leases callback paths to payments and turns gateway returns into payment outcomes.

    ``on_status_change`` is called after every committed payment status change (a final
    status, review, cancellation or expiry); an exception it raises is logged, not raised.
    ``status_query``, for a gateway that offers one, settles the returns that the callback
    path alone cannot attribute (``ambiguous`` and ``unmatched`` ones).
    """

    def __init__(
        self,
        store: Store,
        gateway: Gateway,
        policy: PoolPolicy,
        *,
        on_status_change: StatusHook | None = None,
        status_query: StatusQuery | None = None,
    ) -> None:
        core = PoolCore(store, gateway, policy, status_query=status_query)
        if on_status_change:
            core.hooks.append(on_status_change)
        settlement = Settlement(core)
        queries = GatewayQueries(core, settlement)
        self._core = core
        self._checkouts = Checkouts(core)
        self._payments = Payments(core)
        self._callbacks = Callbacks(core, settlement, queries)
        self._housekeeping = Housekeeping(core, self._callbacks, queries)
        self._reports = Reports(core)
        self._reviews = Reviews(core, settlement)

    @property
    def store(self) -> Store:
        return self._core.store

    @property
    def gateway(self) -> Gateway:
        return self._core.gateway

    @property
    def policy(self) -> PoolPolicy:
        return self._core.policy

    @property
    def status_query(self) -> StatusQuery | None:
        return self._core.status_query

    def add_status_hook(self, hook: StatusHook) -> None:
        self._core.hooks.append(hook)

    def add_observer(self, observer: Observer) -> None:
        """Call ``observer`` with every event (domain/events.py) once it has committed; an
        exception it raises is logged, not raised."""
        self._core.observers.append(observer)

    # --- set-up ----------------------------------------------------------------------------

    def sync_slots(self) -> SlotSync:
        """Load the configured callback paths (and reserve paths) into the pool,
        deactivating removed ones."""
        policy = self._core.policy
        with self._core.store.transaction() as tx:
            sync = tx.sync_slots(policy.callback_paths, policy.reserve_paths)
        for path in sync.deactivated:
            log.warning("slot %s deactivated: it is no longer in the configuration", path)
        return sync

    # --- payments --------------------------------------------------------------------------

    @overload
    def create_payment(
        self,
        *,
        amount: int | None = None,
        currency: str | None = None,
        items: Mapping[str, int] | None = None,
        customer: Mapping[str, Any] | None = None,
        priority: int = 0,
        wait: Literal[False] = False,
    ) -> Checkout: ...

    @overload
    def create_payment(
        self,
        *,
        amount: int | None = None,
        currency: str | None = None,
        items: Mapping[str, int] | None = None,
        customer: Mapping[str, Any] | None = None,
        priority: int = 0,
        wait: bool,
    ) -> Checkout | Waiting: ...

    def create_payment(
        self,
        *,
        amount: int | None = None,
        currency: str | None = None,
        items: Mapping[str, int] | None = None,
        customer: Mapping[str, Any] | None = None,
        priority: int = 0,
        wait: bool = False,
    ) -> Checkout | Waiting:
        """Create a pending payment and lease it a callback path, in one transaction.

        When no slot may be had (none free, or the free ones are owed to waiting tickets
        or kept for higher priorities): with ``wait`` a place in the waiting room
        (``Waiting``), served by priority then arrival; without, PoolExhausted. Raises
        InvalidPayment (naming the field), and TooManyLeases when the customer already holds
        as many live leases and places in the waiting room as ``max_live_leases_per_customer``
        allows.
        """
        return self._checkouts.create(
            amount=amount,
            currency=currency,
            items=items,
            customer=customer,
            priority=priority,
            wait=wait,
        )

    def poll_ticket(self, ticket: str) -> Checkout | Waiting:
        """A waiting customer's poll: the granted payment once the ticket's turn has come
        and a slot is free (again on every later poll), else its place in the queue.

        Every poll keeps the ticket alive for ``ticket_timeout``. Raises UnknownTicket, or
        TicketEnded for a ticket that expired or was cancelled.
        """
        return self._checkouts.poll_ticket(ticket)

    def cancel_ticket(self, ticket: str) -> None:
        """Leave the waiting room (the customer gave up). Raises UnknownTicket, or
        TicketEnded if the ticket is no longer waiting (a granted ticket's payment is
        cancelled with ``cancel_payment``)."""
        self._checkouts.cancel_ticket(ticket)

    def get_payment(self, token: str) -> Payment:
        """The payment as it stands (a lease past its expiry is expired first)."""
        return self._payments.get(token)

    def receipt(self, ref: str, key: str) -> Payment | None:
        """The payment a gateway return was applied to, for the return's success page (the
        redirect names the return's reference and its receipt key). None, alike, for an
        unknown reference, a wrong key and a return applied to no payment."""
        return self._payments.receipt(ref, key)

    def poll_payment(self, token: str) -> Payment:
        """The checkout page's status poll: the payment as it stands, and its heartbeat.

        The first poll arms the heartbeat: from then on the lease is released (tainted,
        the payment ``expired``) once no poll has come for ``heartbeat_timeout``. A poll
        writes only when the recorded heartbeat is older than ``heartbeat_slack``.
        """
        return self._payments.poll(token)

    def cancel_payment(self, token: str) -> Payment:
        """Cancel a pending payment: its lease ends and leaves a taint, for the customer may
        still be paying on the gateway's page. Raises UnknownPayment or PaymentNotPending."""
        return self._payments.cancel(token)

    # --- gateway returns -------------------------------------------------------------------

    def handle_callback(
        self,
        path: str,
        params: Params,
        *,
        method: str = "GET",
        client_addr: str | None = None,
    ) -> CallbackResult:
        """Store a gateway return, then resolve it (DESIGN.md §6).

        The return is committed before anything acts on it, so even a crash in between
        leaves it on record (``received``); the sweeper resolves such leftovers. A return
        that its path cannot attribute is put to the gateway's status query, if there is
        one, before anything changes (outside any transaction, within its timeout).
        """
        return self._callbacks.handle(path, params, method=method, client_addr=client_addr)

    def record_callback(
        self,
        path: str,
        params: Params,
        *,
        method: str = "GET",
        client_addr: str | None = None,
    ) -> int:
        """``handle_callback``'s first half: store the return (``received``); its id."""
        return self._callbacks.record(path, params, method=method, client_addr=client_addr)

    def resolve_callback(self, callback_id: int) -> CallbackResult:
        """``handle_callback``'s second half: resolve a stored return (once: a return
        resolved already is answered as it was)."""
        return self._callbacks.resolve(callback_id)

    # --- housekeeping ----------------------------------------------------------------------

    def expire_due(self) -> int:
        """End leases past their expiry; their payments become ``expired``."""
        return self._housekeeping.expire_due()

    def sweep(self) -> SweepReport:
        """The cleanup job: expire due leases and release abandoned ones, forget stale
        taints and unpolled tickets, drain the reserve when the load has fallen, and resolve
        returns that were stored but never resolved. Safe to run on several instances at
        once."""
        return self._housekeeping.sweep()

    def release(self, *, path: str | None = None, token: str | None = None) -> Lease:
        """End a live lease by hand (an operator's decision). It leaves a taint; its
        payment becomes ``expired``. Raises NothingToRelease."""
        return self._housekeeping.release(path=path, token=token)

    def release_all(self) -> list[Lease]:
        """End every live lease (the guide's manual cleanup), each leaving a taint."""
        return self._housekeeping.release_all()

    # --- reports ---------------------------------------------------------------------------

    def status(self) -> PoolStatus:
        """The slots, the waiting room, the reserve and the capacity window, at one moment."""
        return self._reports.status()

    def stuck_leases(self) -> list[Lease]:
        """Live leases past their expiry that no sweep has ended yet."""
        return self._reports.stuck_leases()

    def orphaned_payments(self, older_than: timedelta | None = None) -> list[Payment]:
        """Payments still pending long after they should have ended (default: three lock
        timeouts): a sign that nothing is sweeping."""
        return self._reports.orphaned_payments(older_than)

    def usage(self) -> list[UsageRow]:
        return self._reports.usage()

    def has_path(self, path: str) -> bool:
        """Whether ``path`` is (or was) one of the pool's callback paths."""
        return self._reports.has_path(path)

    def payment_counts(self) -> dict[PaymentStatus, int]:
        """Payments by status, every status present (0 where none)."""
        return self._reports.payment_counts()

    def callback_counts(self) -> dict[CallbackOutcome, int]:
        """Stored returns by outcome, every outcome present (0 where none)."""
        return self._reports.callback_counts()

    def callbacks(
        self,
        *,
        outcomes: Sequence[CallbackOutcome] = (),
        limit: int = 50,
        before_id: int | None = None,
    ) -> list[CallbackRecord]:
        """Stored returns, newest first, with their raw parameters; page on with the
        smallest id of a page as ``before_id``."""
        return self._reports.callbacks(outcomes=outcomes, limit=limit, before_id=before_id)

    def history(self, window: timedelta) -> PoolHistory:
        """What the dashboard's charts are drawn from: the leases that held a slot in the
        last ``window``, and the turn-aways per minute."""
        return self._reports.history(window)

    def now(self) -> datetime:
        """The time the pool decides by (the store's clock)."""
        return self._reports.now()

    def slot_path(self, name: str) -> str:
        """A slot's full path from its full path or its last segment (``handler-3``).
        Raises UnknownSlot (naming the problem)."""
        return self._reports.slot_path(name)

    # --- slots out of rotation -------------------------------------------------------------

    def sideline_slot(self, path: str, *, by: str, reason: str) -> bool:
        """Take a slot out of rotation by hand: it is leased no more until restored; its
        live lease and taints still take their returns. False if it was out already.
        Raises UnknownSlot."""
        return self._reviews.sideline_slot(path, by=by, reason=reason)

    def restore_slot(self, path: str, *, by: str) -> bool:
        """Put a slot back in rotation (with a fresh expiry streak). False if it was in.
        Raises UnknownSlot."""
        return self._reviews.restore_slot(path, by=by)

    # --- review ----------------------------------------------------------------------------

    def review_queue(self, limit: int = 100) -> ReviewQueue:
        """What waits for an operator: approved returns that could belong to several
        payments (each with its candidates), and payments in review that no open return
        names (left in review by an earlier decision)."""
        return self._reviews.queue(limit)

    def get_callback(self, callback_id: int) -> CallbackRecord:
        """A stored return. Raises UnknownCallback."""
        return self._reports.get_callback(callback_id)

    def reviews(self, limit: int = 100) -> list[Review]:
        """Operators' decisions, newest first."""
        return self._reviews.reviews(limit)

    def resolve_review(
        self,
        callback_id: int,
        *,
        payment_token: str | None,
        others: PaymentStatus,
        by: str,
        reason: str,
    ) -> Review:
        """An operator's decision on an ambiguous return: it belongs to ``payment_token``
        (one of its candidates: completed, or failed for a declined return) or to none of
        them (None); every other candidate still in review becomes ``others`` (``expired``,
        ``failed``, or ``needs_review`` to leave it for another return). Recorded with who,
        why and when; the transition table governs every change.

        Raises UnknownCallback, NotUnderReview (no longer ambiguous, or decided already),
        InvalidReview (a payment that is not a candidate, an ``others`` status not
        allowed, no reason) or IllegalTransition (a candidate has moved on meanwhile).
        """
        return self._reviews.resolve_review(
            callback_id, payment_token=payment_token, others=others, by=by, reason=reason
        )

    def resolve_payment(self, token: str, *, status: PaymentStatus, by: str, reason: str) -> Review:
        """End a payment in review without a return: ``expired`` (the customer did not
        pay) or ``failed``. Only a return completes a payment: attribute one instead.
        Raises UnknownPayment, NotUnderReview, InvalidReview or IllegalTransition."""
        return self._reviews.resolve_payment(token, status=status, by=by, reason=reason)
