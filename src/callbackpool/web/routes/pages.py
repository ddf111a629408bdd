"""The pages: the reference checkout, and where the customer lands after the gateway."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from ...compose import catalogue
from ...domain.errors import UnknownPayment
from ...domain.money import CURRENCY_EXPONENTS, format_amount
from ..deps import PoolDep, SettingsDep
from ..templating import templates

router = APIRouter(include_in_schema=False)

# A message from the query string is shown as text, and only so much of it.
MAX_MESSAGE_CHARS = 200
MAX_REF_CHARS = 100
POLL_SECONDS = 2


@router.get("/")
async def home() -> RedirectResponse:
    return RedirectResponse("/checkout", status_code=307)


@router.get("/checkout", response_class=HTMLResponse)
async def checkout(request: Request, settings: SettingsDep) -> Response:
    offered = catalogue(settings)
    items = [
        {
            "code": item.code,
            "description": item.description,
            "price": format_amount(item.price, settings.currency),
        }
        for item in offered
        if item.price != 1  # the open-amount item is what the amount field uses
    ]
    return templates.TemplateResponse(
        request,
        "checkout.html",
        {
            "items": items,
            "currency": settings.currency,
            "exponent": CURRENCY_EXPONENTS[settings.currency],
            "open_amount": any(item.price == 1 for item in offered),
            "poll_ms": POLL_SECONDS * 1000,
            "sandbox": settings.sandbox.enabled,
        },
    )


@router.get("/payment-success", response_class=HTMLResponse)
def payment_success(
    request: Request, pool: PoolDep, ref: str = "", receipt: str = "", token: str = ""
) -> Response:
    """Where an approved return lands: named by the return's reference and receipt key (the
    redirect never carries a payment token). ``?token=`` is the guide's form of the page,
    kept for the shops that link to it with their customer's own token."""
    try:
        if ref:
            payment = pool.receipt(ref[:MAX_REF_CHARS], receipt[:MAX_REF_CHARS])
        else:
            payment = pool.get_payment(token[:MAX_REF_CHARS]) if token else None
    except UnknownPayment:
        payment = None
    context = {
        "payment": payment,
        "amount": format_amount(payment.amount, payment.currency) if payment else None,
    }
    return templates.TemplateResponse(
        request, "payment_success.html", context, status_code=200 if payment else 404
    )


@router.get("/payment-error", response_class=HTMLResponse)
async def payment_error(request: Request, message: str = "", ref: str = "") -> Response:
    return templates.TemplateResponse(
        request,
        "payment_error.html",
        {
            "message": message[:MAX_MESSAGE_CHARS] or "The payment did not go through",
            "ref": ref[:MAX_REF_CHARS],
        },
    )
