"""The shop's server's API (docs/integrating.md): payments created with the shop's order
reference and return URLs, read back by their id, listed and cancelled. A merchant API key
(``Authorization: Bearer``) is required; the admin token is not one."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Path, Query, Response
from starlette.convertors import Convertor, register_url_convertor

from ...domain.errors import InvalidPayment
from ...domain.model import PaymentStatus
from ...views import (
    CreatedPaymentOut,
    EventListOut,
    EventOut,
    ShopPaymentDetailOut,
    ShopPaymentListOut,
    ShopPaymentOut,
)
from ..deps import MerchantDep, PoolDep
from ..schemas import ShopPaymentBody, ShopPaymentIn, error_responses, request_body

router = APIRouter(prefix="/api/v1/payments", tags=["shop"])
events_router = APIRouter(prefix="/api/v1/events", tags=["shop"])


class PaymentIdConvertor(Convertor[str]):
    """A payment id in a path (``pay_`` and letters): the guide's own paths beside it,
    ``create-token`` or ``config``, are never taken for one."""

    regex = "pay_[A-Za-z0-9]{1,100}"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("payment_id", PaymentIdConvertor())
# The same shape in the API's document.
PaymentId = Annotated[str, Path(pattern=f"^{PaymentIdConvertor.regex}$")]

MAX_IDEMPOTENCY_KEY = 255


@router.post(
    "",
    status_code=201,
    response_model=CreatedPaymentOut,
    responses=error_responses(401, 409, 413, 422),
    openapi_extra=request_body(ShopPaymentIn),
)
def create_payment(
    _: MerchantDep,
    order: ShopPaymentBody,
    pool: PoolDep,
    response: Response,
    idempotency_key: Annotated[str | None, Header()] = None,
) -> CreatedPaymentOut:
    """Create an ``open`` payment for the shop's order and send the customer to its
    ``checkoutUrl``; no callback path is held until the customer presses Pay there. The
    same ``Idempotency-Key`` with the same body answers the same payment again (with
    ``Idempotent-Replayed: true``); with another body, 409."""
    if idempotency_key is not None and not 1 <= len(idempotency_key) <= MAX_IDEMPOTENCY_KEY:
        raise InvalidPayment("Idempotency-Key", f"must be 1 to {MAX_IDEMPOTENCY_KEY} characters")
    payment, created = pool.create_shop_payment(order.request(), idempotency_key=idempotency_key)
    if not created:
        response.headers["Idempotent-Replayed"] = "true"
    return CreatedPaymentOut.of(payment, pool.policy.checkout_url(payment.token))


@router.get(
    "",
    response_model=ShopPaymentListOut,
    responses=error_responses(401, 422),
)
def list_payments(
    _: MerchantDep,
    pool: PoolDep,
    order_reference: Annotated[str | None, Query(alias="orderReference", max_length=200)] = None,
    status: PaymentStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    after: Annotated[str | None, Query(max_length=100)] = None,
) -> ShopPaymentListOut:
    """The shop's payments, newest first, ``limit`` at a time; ``after`` is the previous
    page's ``nextCursor``."""
    page = pool.shop_payments(
        order_reference=order_reference, status=status, limit=limit, after=after
    )
    return ShopPaymentListOut(
        data=[ShopPaymentOut.of(p, attempts) for p, attempts in page.payments],
        next_cursor=page.next_cursor,
    )


@router.get(
    "/{payment_id:payment_id}",
    response_model=ShopPaymentDetailOut,
    responses=error_responses(401, 404),
)
def get_payment(payment_id: PaymentId, _: MerchantDep, pool: PoolDep) -> ShopPaymentDetailOut:
    """The payment as it stands, with each attempt at the gateway and its return."""
    return ShopPaymentDetailOut.of(*pool.shop_payment(payment_id))


@router.post(
    "/{payment_id:payment_id}/cancel",
    response_model=ShopPaymentDetailOut,
    responses=error_responses(401, 404, 409),
)
def cancel_payment(payment_id: PaymentId, _: MerchantDep, pool: PoolDep) -> ShopPaymentDetailOut:
    """Cancel an ``open`` or ``pending`` payment (a customer still on the gateway's page
    may pay; a late approval then completes it, flagged ``late``)."""
    pool.cancel_shop_payment(payment_id)
    return ShopPaymentDetailOut.of(*pool.shop_payment(payment_id))


@events_router.get(
    "",
    response_model=EventListOut,
    responses=error_responses(401, 422),
)
def list_events(
    _: MerchantDep,
    pool: PoolDep,
    after: Annotated[str | None, Query(max_length=100)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 100,
) -> EventListOut:
    """The payments' events oldest first, ``limit`` at a time, after the event ``after``
    (the previous page's ``nextCursor``; without it, from the oldest kept). An ``after``
    that names no event kept (``eventRetentionDays``) is a 422."""
    events = pool.events(after=after, limit=limit)
    return EventListOut(
        data=[EventOut.of(event) for event in events],
        next_cursor=events[-1].id if events else None,
    )
