"""The hosted payment page of a shop's payment (docs/integrating.md): the order and its
total, and Pay, which leases a slot for one attempt and sends this window to the gateway's
form. The gateway's return comes back here after a declined card, or goes on to the shop."""

from __future__ import annotations

from contextlib import suppress

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from ...compose import catalogue
from ...config import Settings
from ...domain.errors import (
    PaymentNotPending,
    PoolExhausted,
    TicketEnded,
    UnknownPayment,
    UnknownTicket,
)
from ...domain.model import Payment, PaymentStatus
from ...domain.money import format_amount
from ...pool import Checkout, Waiting
from ...pool.documents import AttemptResult
from ...pool.shop import shop_redirect
from ..deps import PoolDep, SameOriginDep, SettingsDep
from ..templating import templates

router = APIRouter(include_in_schema=False)

REFRESH_SECONDS = 5  # how often a page waiting for the outcome looks again
_MAX_TOKEN = 128


@router.get("/pay/{token}", response_class=HTMLResponse)
def payment_page(token: str, request: Request, pool: PoolDep, settings: SettingsDep) -> Response:
    found = _hosted(pool, token)
    if found is None:
        return _not_found(request, settings)
    payment, attempts = found
    descriptions = {item.code: item.description for item in catalogue(settings)}
    context = {
        "shop_name": settings.shop_name,
        "payment": payment,
        "total": format_amount(payment.amount, payment.currency),
        "items": [
            {
                "description": descriptions.get(item.code) or item.code,
                "quantity": item.quantity,
                "total": format_amount(item.total, payment.currency),
            }
            for item in payment.items
            if item.unit_price != 1 or len(payment.items) > 1  # not the open-amount line
        ],
        "state": _state(payment, attempts),
        "last": attempts[-1].outcome if attempts else None,
        "attempts_left": payment.max_attempts - len(attempts),
        "success_url": shop_redirect(payment.success_url or "", payment),
        "cancel_url": shop_redirect(payment.cancel_url or "", payment),
        "refresh": REFRESH_SECONDS,
    }
    return templates.TemplateResponse(request, "pay.html", context)


@router.post("/pay/{token}", response_class=HTMLResponse)
def pay(
    token: str, request: Request, _: SameOriginDep, pool: PoolDep, settings: SettingsDep
) -> Response:
    """Pay: one attempt at the gateway, in this same window (or a place in line first)."""
    try:
        granted = pool.pay(token[:_MAX_TOKEN], wait=True)
    except UnknownPayment:
        return _not_found(request, settings)
    except PaymentNotPending:
        return RedirectResponse(f"/pay/{token}", status_code=303)  # the page says why
    except PoolExhausted as busy:
        context = {
            "action": f"/pay/{token}",
            "retry_after": busy.retry_after_seconds,
            "shop_name": settings.shop_name,
        }
        return templates.TemplateResponse(request, "pay_busy.html", context, status_code=503)
    return _hand_over(request, settings, token, granted)


@router.get("/pay/{token}/wait/{ticket}", response_class=HTMLResponse)
def wait_in_line(
    token: str, ticket: str, request: Request, pool: PoolDep, settings: SettingsDep
) -> Response:
    """A place in line, polled by the page itself: the gateway's form once it is its turn."""
    try:
        granted = pool.poll_ticket(ticket[:_MAX_TOKEN])
    except (UnknownTicket, TicketEnded):
        return RedirectResponse(f"/pay/{token}", status_code=303)
    if isinstance(granted, Checkout) and granted.payment.token != token:
        return RedirectResponse(f"/pay/{token}", status_code=303)  # another payment's ticket
    return _hand_over(request, settings, token, granted)


def _hand_over(
    request: Request, settings: Settings, token: str, granted: Checkout | Waiting
) -> Response:
    if isinstance(granted, Waiting):
        context = {
            "shop_name": settings.shop_name,
            "position": granted.position,
            "retry_after": granted.retry_after_seconds,
            "poll": f"/pay/{token}/wait/{granted.ticket}",
        }
        return templates.TemplateResponse(request, "pay_wait.html", context, status_code=202)
    form = granted.form
    context = {
        "action": form.action_url,
        "method": form.method,
        "fields": form.fields,
        "shop_name": settings.shop_name,
    }
    return templates.TemplateResponse(request, "pay_redirect.html", context)


@router.post("/pay/{token}/cancel")
def give_up(
    token: str, request: Request, _: SameOriginDep, pool: PoolDep, settings: SettingsDep
) -> Response:
    """The customer goes back to the shop without paying: the payment is cancelled."""
    found = _hosted(pool, token)
    if found is None:
        return _not_found(request, settings)
    payment, _attempts = found
    with suppress(PaymentNotPending):  # it ended meanwhile; the shop reads how
        payment = pool.cancel_payment(payment.token)
    return RedirectResponse(shop_redirect(payment.cancel_url or "/", payment), status_code=303)


def _hosted(pool: PoolDep, token: str) -> tuple[Payment, tuple[AttemptResult, ...]] | None:
    try:
        payment, attempts = pool.payment_and_attempts(token[:_MAX_TOKEN])
    except UnknownPayment:
        return None
    return (payment, attempts) if payment.hosted else None


def _not_found(request: Request, settings: Settings) -> Response:
    context = {"payment": None, "shop_name": settings.shop_name}
    return templates.TemplateResponse(request, "pay.html", context, status_code=404)


def _state(payment: Payment, attempts: tuple[AttemptResult, ...]) -> str:
    """What the page tells the customer (``pay.html`` words each)."""
    card_page_shown = any(a.outcome in ("no_return", "in_progress") for a in attempts)
    match payment.status:
        case PaymentStatus.OPEN:
            return "retry" if attempts else "pay"
        case PaymentStatus.PENDING:
            return "processing"
        case PaymentStatus.COMPLETED:
            return "paid"
        case PaymentStatus.NEEDS_REVIEW:
            return "confirming"
        case PaymentStatus.FAILED:
            return "failed"
        case PaymentStatus.CANCELLED | PaymentStatus.EXPIRED:
            return "unconfirmed" if card_page_shown else payment.status.value
