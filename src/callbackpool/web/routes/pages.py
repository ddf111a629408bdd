"""The pages: the reference checkout, and where the customer lands after the gateway."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from ...compose import catalogue
from ...domain.errors import UnknownCallback, UnknownPayment
from ...domain.model import callback_id_of
from ...domain.money import CURRENCY_EXPONENTS, format_amount
from ..deps import PoolDep, SettingsDep
from ..templating import templates

router = APIRouter(include_in_schema=False)

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
            "price_minor": item.price,
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
            "shop_name": settings.shop_name,
        },
    )


@router.get("/payment-success", response_class=HTMLResponse)
def payment_success(
    request: Request,
    pool: PoolDep,
    settings: SettingsDep,
    ref: str = "",
    receipt: str = "",
    token: str = "",
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
        "shop_name": settings.shop_name,
    }
    return templates.TemplateResponse(
        request, "payment_success.html", context, status_code=200 if payment else 404
    )


# What the error page can say, by the reason in its URL: its own sentences only, so that a
# link cannot make it say anything else.
ERROR_MESSAGES = {
    "declined": ("Payment declined", "Your card was declined. No money was taken."),
    "error": ("Payment not completed", "The payment could not be processed. No money was taken."),
    "confirming": (
        "Payment received",
        "We received your payment and are confirming it. Please do not pay again.",
    ),
    "not_found": (
        "Payment not matched",
        "We could not match this payment to an order. If you were charged, do not pay "
        "again: contact us and quote the reference below.",
    ),
    "unverified": ("Payment not completed", "The payment could not be verified."),
    "processing": (
        "Payment not completed",
        "Something went wrong while we recorded the payment. If you were charged, do not "
        "pay again: contact us and quote the reference below.",
    ),
}


@router.get("/payment-error", response_class=HTMLResponse)
def payment_error(
    request: Request, pool: PoolDep, settings: SettingsDep, reason: str = "", ref: str = ""
) -> Response:
    """Where a return that completed nothing lands. ``ref`` is shown only when it names a
    stored return."""
    reason = reason if reason in ERROR_MESSAGES else "processing"
    title, message = ERROR_MESSAGES[reason]
    callback_id = callback_id_of(ref[:MAX_REF_CHARS])
    try:
        known = callback_id is not None and pool.get_callback(callback_id) is not None
    except UnknownCallback:
        known = False
    context = {
        "reason": reason,
        "title": title,
        "message": message,
        "ref": ref if known else "",
        "shop_name": settings.shop_name,
    }
    return templates.TemplateResponse(request, "payment_error.html", context)
