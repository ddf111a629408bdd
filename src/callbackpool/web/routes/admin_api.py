"""The operator API under ``/api/v1/admin`` (``Authorization: Bearer <adminToken>``): the
documents of the CLI's reports (the same models: views.py), and the operator's decisions."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query

from ... import views
from ...analytics import WINDOWS, PoolSeries, pool_series
from ...domain.errors import InvalidReview
from ...domain.model import CallbackOutcome, PaymentStatus
from ...pool import CallbackPool
from ..deps import OperatorDep, PoolDep
from ..schemas import (
    ClosePaymentBody,
    ClosePaymentIn,
    ResolveReviewBody,
    ResolveReviewIn,
    RestoreBody,
    RestoreIn,
    SidelineBody,
    SidelineIn,
    error_responses,
    request_body,
)

PREFIX = "/api/v1/admin"
MAX_PAGE = 200

router = APIRouter(prefix=PREFIX, tags=["operator"], responses=error_responses(401))


@router.get("/status")
def status(_: OperatorDep, pool: PoolDep) -> views.PoolStatsOut:
    """The pool: totals and a row per slot, with its health (``callbackpool status``)."""
    return views.PoolStatsOut.of(pool.status())


@router.get("/slots/health")
def slot_health(_: OperatorDep, pool: PoolDep) -> views.HealthOut:
    """Per-slot health (``callbackpool reports health``)."""
    return views.HealthOut.of(pool.status(), pool.policy.slot_health_expiries_to_sideline)


@router.get("/stuck-leases")
def stuck_leases(_: OperatorDep, pool: PoolDep) -> views.StuckOut:
    """Leases past their expiry that no sweep has ended (``reports stuck``)."""
    return views.StuckOut(at=pool.now(), leases=pool.stuck_leases())


@router.get("/orphaned-payments", responses=error_responses(422))
def orphaned_payments(
    _: OperatorDep,
    pool: PoolDep,
    older_than: Annotated[str | None, Query(alias="olderThan", max_length=40)] = None,
) -> views.OrphansOut:
    """Payments pending long after they should have ended (``reports orphans``);
    ``olderThan`` like 90s, 30m, 2h (default: three lock timeouts)."""
    age = 3 * pool.policy.lock_timeout
    if older_than is not None:
        try:
            age = views.parse_duration(older_than)
        except ValueError as exc:
            raise InvalidReview("olderThan", str(exc)) from None
    return views.OrphansOut.of(pool.now(), age, pool.orphaned_payments(age))


@router.get("/usage")
def usage(_: OperatorDep, pool: PoolDep) -> views.UsageOut:
    """Leases per slot and how they ended (``reports usage``)."""
    return views.UsageOut.of(pool.usage())


@router.get("/callbacks", responses=error_responses(422))
def callbacks(
    _: OperatorDep,
    pool: PoolDep,
    outcome: Annotated[list[CallbackOutcome] | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
    before: Annotated[int | None, Query(ge=1)] = None,
) -> views.CallbacksOut:
    """Stored returns, newest first, with their raw parameters (``ExpDate`` masked) and
    the totals by outcome; ``nextBefore`` asks for the next page."""
    outcomes = tuple(outcome or ())
    records = pool.callbacks(outcomes=outcomes, limit=limit, before_id=before)
    return views.CallbacksOut.of(
        records, limit=limit, outcomes=outcomes, counts=pool.callback_counts()
    )


@router.get("/reviews")
def reviews(_: OperatorDep, pool: PoolDep) -> views.ReviewQueueOut:
    """What waits for a decision, and the latest decisions (``review list``)."""
    return views.ReviewQueueOut.of(pool.review_queue(), pool.reviews(limit=20))


@router.post(
    "/reviews/{ref}/resolve",
    responses=error_responses(404, 409, 422),
    openapi_extra=request_body(ResolveReviewIn),
)
def resolve_review(
    ref: str, _: OperatorDep, pool: PoolDep, decision: ResolveReviewBody
) -> views.ReviewDecidedOut:
    """Decide which payment an ambiguous return (``CB-12``) belongs to, or none
    (``paymentToken`` null), and what its other candidates become. 409 if it was decided
    already or a candidate moved on; 422 for a choice that is not allowed."""
    review = pool.resolve_review(
        _callback_id(ref),
        payment_token=decision.payment_token,
        others=PaymentStatus(decision.others),
        by=decision.operator,
        reason=decision.reason,
    )
    return views.ReviewDecidedOut(review=review)


@router.post(
    "/payments/{token}/close",
    responses=error_responses(404, 409, 422),
    openapi_extra=request_body(ClosePaymentIn),
)
def close_payment(
    token: str, _: OperatorDep, pool: PoolDep, decision: ClosePaymentBody
) -> views.ReviewDecidedOut:
    """End a payment left in review without a return (``expired`` or ``failed``)."""
    review = pool.resolve_payment(
        token, status=PaymentStatus(decision.status), by=decision.operator, reason=decision.reason
    )
    return views.ReviewDecidedOut(review=review)


@router.post(
    "/slots/sideline",
    responses=error_responses(404, 422),
    openapi_extra=request_body(SidelineIn),
)
def sideline(_: OperatorDep, pool: PoolDep, order: SidelineBody) -> views.SlotRotationOut:
    """Take a slot out of rotation (``path``: in full or its last segment)."""
    path = pool.slot_path(order.path)
    changed = pool.sideline_slot(path, by=order.operator, reason=order.reason)
    return views.SlotRotationOut(path=path, changed=changed, in_rotation=False)


@router.post(
    "/slots/restore",
    responses=error_responses(404, 422),
    openapi_extra=request_body(RestoreIn),
)
def restore(_: OperatorDep, pool: PoolDep, order: RestoreBody) -> views.SlotRotationOut:
    """Put a slot back in rotation."""
    path = pool.slot_path(order.path)
    changed = pool.restore_slot(path, by=order.operator)
    return views.SlotRotationOut(path=path, changed=changed, in_rotation=True)


@router.get("/analytics", responses=error_responses(422))
def analytics(
    _: OperatorDep,
    pool: PoolDep,
    window: Annotated[Literal["1h", "6h", "24h", "7d"], Query()] = "1h",
) -> views.SeriesOut:
    """The dashboard's charts as data: utilisation, turn-aways, how leases ended and how
    long they held their slots, per bucket of the window."""
    return views.SeriesOut.of(series_of(pool, window), window)


def series_of(pool: CallbackPool, window: str) -> PoolSeries:
    span = WINDOWS[window]
    history = pool.history(span)
    return pool_series(
        now=history.now,
        window=span,
        spans=history.spans,
        slots=pool.status().total,
        turned_away_at=history.turn_aways,
    )


def _callback_id(ref: str) -> int:
    callback_id = views.callback_id_of(ref)
    if callback_id is None:
        raise InvalidReview("ref", f"{ref[:40]!r} is not a return's reference (CB-12)")
    return callback_id
