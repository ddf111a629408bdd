"""The payments API under ``/api/v1/payments`` (the guide's paths and shapes)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response

from ...pool import Checkout, Waiting
from ...views import (
    CancelledOut,
    ConfigOut,
    CreateTokenOut,
    PaymentStatusOut,
    PoolStatsOut,
    PoolStatsResponse,
    TicketCancelledOut,
    WaitingOut,
)
from ..deps import CreateTokenGuardDep, OperatorDep, PoolDep, SameOriginDep, SettingsDep
from ..schemas import CreateTokenBody, CreateTokenIn, error_responses, request_body

PREFIX = "/api/v1/payments"

router = APIRouter(prefix=PREFIX, tags=["payments"])


_WAITING: dict[int | str, dict[str, Any]] = {
    202: {
        "model": WaitingOut,
        "description": "No slot yet: a place in the waiting room",
        "headers": {"Retry-After": {"schema": {"type": "integer"}, "required": True}},
    }
}


@router.post(
    "/create-token",
    status_code=201,
    response_model=CreateTokenOut | WaitingOut,
    responses={**_WAITING, **error_responses(403, 413, 422, 429, 503)},
    openapi_extra=request_body(CreateTokenIn),
)
def create_token(
    _: CreateTokenGuardDep,
    order: CreateTokenBody,
    pool: PoolDep,
    response: Response,
) -> CreateTokenOut | WaitingOut:
    """Create a pending payment and lease it a callback URL: the fields to post to the
    hosted form come back in ``formConfig.fields``. With ``"wait": true`` and no slot free
    for this request (``priority`` ranks it), 202 with a ``ticket`` to poll instead of 503."""
    return _granted_or_waiting(pool.create_payment(**order.payment_arguments()), response)


# ``{token:path}``: a "token" with a slash in it is answered like every unknown token.
@router.get(
    "/check-status/{token:path}",
    response_model=PaymentStatusOut,
    responses=error_responses(404, 503),
)
def check_status(token: str, pool: PoolDep) -> PaymentStatusOut:
    """The payment as it stands. Poll it while the customer is on the gateway's page: the
    polling is the payment's heartbeat, and a payment whose page stopped polling releases
    its callback URL about a minute later (heartbeatTimeoutSeconds)."""
    return PaymentStatusOut.model_validate(pool.poll_payment(token))


@router.get(
    "/ticket/{ticket:path}",
    response_model=CreateTokenOut | WaitingOut,
    responses={**_WAITING, **error_responses(404, 410)},
)
def ticket_status(ticket: str, response: Response, pool: PoolDep) -> CreateTokenOut | WaitingOut:
    """A waiting customer's poll (every ``retryAfter`` seconds): 202 with the position while
    the ticket waits, 200 with the ``token`` and ``formConfig`` once a slot is granted (again
    on every later poll). 410 for a ticket that expired unpolled or was cancelled."""
    return _granted_or_waiting(pool.poll_ticket(ticket), response)


@router.post(
    "/cancel-ticket/{ticket:path}",
    response_model=TicketCancelledOut,
    responses=error_responses(403, 404, 410),
)
def cancel_ticket(ticket: str, pool: PoolDep, _: SameOriginDep) -> TicketCancelledOut:
    """Leave the waiting room (the customer gave up): the place goes to the next."""
    pool.cancel_ticket(ticket)
    return TicketCancelledOut()


def _granted_or_waiting(
    result: Checkout | Waiting, response: Response
) -> CreateTokenOut | WaitingOut:
    if isinstance(result, Waiting):
        response.status_code = 202
        response.headers["Retry-After"] = str(result.retry_after_seconds)
        return WaitingOut.model_validate(result)
    return CreateTokenOut.of(result)


@router.post(
    "/cancel-token/{token:path}",
    response_model=CancelledOut,
    responses=error_responses(403, 404, 409, 503),
)
def cancel_token(token: str, pool: PoolDep, _: SameOriginDep) -> CancelledOut:
    """Cancel a pending payment and free its callback URL (the customer left)."""
    return CancelledOut(status=pool.cancel_payment(token).status.value)


@router.get("/config", response_model=ConfigOut)
async def public_config(settings: SettingsDep) -> ConfigOut:
    """The public settings of the hosted form."""
    return ConfigOut.of(settings)


@router.get("/pool-stats", response_model=PoolStatsResponse, responses=error_responses(401, 503))
def pool_stats(_: OperatorDep, pool: PoolDep) -> PoolStatsResponse:
    """The pool's slots and their leases (operators only: it shows live tokens)."""
    return PoolStatsResponse(stats=PoolStatsOut.of(pool.status()))
