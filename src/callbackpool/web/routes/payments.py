"""The payments API under ``/api/v1/payments`` (the guide's paths and shapes)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool

from ..deps import CreateTokenGuardDep, OperatorDep, PoolDep, SameOriginDep, SettingsDep
from ..schemas import (
    CancelledOut,
    ConfigOut,
    CreateTokenIn,
    CreateTokenOut,
    PaymentStatusOut,
    PoolStatsOut,
    PoolStatsResponse,
    error_responses,
    read_json,
    request_body,
)

PREFIX = "/api/v1/payments"

router = APIRouter(prefix=PREFIX, tags=["payments"])


@router.post(
    "/create-token",
    status_code=201,
    response_model=CreateTokenOut,
    responses=error_responses(403, 413, 422, 429, 503),
    openapi_extra=request_body(CreateTokenIn),
)
async def create_token(request: Request, pool: PoolDep, _: CreateTokenGuardDep) -> CreateTokenOut:
    """Create a pending payment and lease it a callback URL: the fields to post to the
    hosted form come back in ``formConfig.fields``."""
    order: CreateTokenIn = await read_json(request, CreateTokenIn)
    checkout = await run_in_threadpool(lambda: pool.create_payment(**order.payment_arguments()))
    return CreateTokenOut.of(checkout)


# ``{token:path}``: a "token" with a slash in it is answered like every unknown token.
@router.get(
    "/check-status/{token:path}",
    response_model=PaymentStatusOut,
    responses=error_responses(404, 503),
)
def check_status(token: str, pool: PoolDep) -> PaymentStatusOut:
    """The payment as it stands (poll it while the customer is on the gateway's page)."""
    return PaymentStatusOut.of(pool.get_payment(token))


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
