"""``/admin``: the operator's dashboard, rendered on the server, and its forms.

The page takes the admin token as a Bearer header or a signed session cookie from the login
form (``auth``). Its forms post back here, each with the session's CSRF token; what they
decide is decided by the core (the same calls as the API and the CLI). ``static/admin.js``
refreshes the live sections every ``dashboardRefreshSeconds``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from ... import views
from ...analytics import DEFAULT_WINDOW, WINDOWS
from ...domain.errors import CallbackPoolError
from ...domain.model import CallbackOutcome, PaymentStatus
from ...pool.operations import REVIEW_OTHERS
from ..auth import (
    SESSION_COOKIE,
    check_same_origin,
    form_operator,
    new_session,
    page_operator,
    secure_cookie,
    token_matches,
    valid_name,
)
from ..charts import charts
from ..clients import client_address
from ..deps import PoolDep, SettingsDep
from ..limits import SignInThrottle, rate_key
from ..templating import templates
from .admin_api import series_of

log = logging.getLogger("callbackpool.web.auth")
router = APIRouter(prefix="/admin", include_in_schema=False)

# The strictest policy the page works under: everything from this site, nothing inline.
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; "
        "object-src 'none'"
    ),
    "Cache-Control": "no-store",
    "Referrer-Policy": "same-origin",
}
PAGE_SIZE = 15
MAX_NOTE_CHARS = 300
FILTERS = (
    CallbackOutcome.UNMATCHED,
    CallbackOutcome.AMBIGUOUS,
    CallbackOutcome.REJECTED,
    CallbackOutcome.DUPLICATE,
    CallbackOutcome.APPLIED,
)


@router.get("", response_class=HTMLResponse)
def dashboard(
    request: Request,
    pool: PoolDep,
    settings: SettingsDep,
    window: Annotated[str, Query(max_length=8)] = DEFAULT_WINDOW,
    outcome: Annotated[str, Query(max_length=20)] = "",
    before: Annotated[int | None, Query(ge=1)] = None,
    done: Annotated[str, Query(max_length=1000)] = "",
    error: Annotated[str, Query(max_length=1000)] = "",
) -> Response:
    operator = page_operator(request, settings, pool)
    window = window if window in WINDOWS else DEFAULT_WINDOW
    chosen = next((o for o in FILTERS if o.value == outcome), None)
    status = pool.status()
    records = pool.callbacks(
        outcomes=(chosen,) if chosen else (), limit=PAGE_SIZE, before_id=before
    )
    context = {
        "now": status.at,
        "status": status,
        "slots": [
            {"view": slot, "state": views.slot_state(slot, status.at)} for slot in status.slots
        ],
        "payments": pool.payment_counts(),
        "returns": pool.callback_counts(),
        "charts": charts(series_of(pool, window)),
        "window": window,
        "windows": list(WINDOWS),
        "queue": pool.review_queue(),
        "decided": pool.reviews(limit=8),
        "review_others": REVIEW_OTHERS,
        "stuck": pool.stuck_leases(),
        "orphans": pool.orphaned_payments(),
        "records": [{"record": r, "params": views.masked_params(r.params)} for r in records],
        "outcome": chosen.value if chosen else "",
        "filters": [o.value for o in FILTERS],
        "next_before": records[-1].id if len(records) == PAGE_SIZE else None,
        "operator": operator,
        "refresh_seconds": settings.dashboard_refresh_seconds,
        "expiries_to_sideline": settings.slot_health_expiries_to_sideline,
        "done": done[:MAX_NOTE_CHARS],
        "error": error[:MAX_NOTE_CHARS],
        "currency": pool.gateway.currency,
        "unverified_returns": not settings.returns_verified,
    }
    return _html(templates.TemplateResponse(request, "admin/dashboard.html", context))


def _html(response: Response) -> Response:
    response.headers.update(PAGE_HEADERS)
    return response


def _back(request: Request, **note: str) -> RedirectResponse:
    """To the dashboard, with what happened (the page shows it as text)."""
    query = urlencode({k: v[:MAX_NOTE_CHARS] for k, v in note.items()})
    anchor = request.query_params.get("anchor", "")
    target = f"/admin?{query}" + (f"#{anchor}" if anchor.isidentifier() else "")
    return RedirectResponse(target, status_code=303)


def _decide(request: Request, action: Callable[[], object], done: str) -> Response:
    """Run an operator's decision in the core; back to the page with the outcome."""
    try:
        action()
    except CallbackPoolError as exc:
        return _back(request, error=exc.message)
    return _back(request, done=done)


# --- signing in ----------------------------------------------------------------------------


@router.get("/login", response_class=HTMLResponse)
async def login_form(
    request: Request, next: Annotated[str, Query(max_length=500)] = "/admin"
) -> Response:
    return _html(
        templates.TemplateResponse(
            request, "admin/login.html", {"next": _local(next), "problem": None}
        )
    )


@router.post("/login", response_class=HTMLResponse)
async def login(
    request: Request,
    settings: SettingsDep,
    name: Annotated[str, Form(max_length=200)] = "",
    token: Annotated[str, Form(max_length=500)] = "",
    next: Annotated[str, Form(max_length=500)] = "/admin",
) -> Response:
    check_same_origin(request, settings)
    throttle: SignInThrottle = request.app.state.sign_in_throttle
    client = client_address(request) or "?"
    waiting = throttle.wait(rate_key(client))
    if waiting is not None:
        # Refused unchecked: a guesser learns nothing while it waits.
        seconds = math.ceil(waiting)
        log.warning("dashboard: a sign-in from %s refused: %d s to wait", client, seconds)
        held = f"Too many failed sign-ins: try again in {seconds} seconds."
        response = _login_page(request, next, name, held, status=429)
        response.headers["Retry-After"] = str(seconds)
        return response
    operator_name = valid_name(name)
    problem: str | None = None
    if settings.admin_token is None:
        problem = "Signing in is disabled: no admin token is configured."
    elif operator_name is None:
        problem = "Give your name: it is kept with the decisions you make."
    elif not token_matches(settings, token):
        problem = "That is not the admin token."
        log.warning("dashboard: a failed sign-in from %s", client)
        wait = throttle.failed(rate_key(client))
        if wait is not None:
            log.warning("dashboard: sign-ins from %s held back for %d s", client, math.ceil(wait))
    if problem is not None or operator_name is None:
        return _login_page(request, next, name, problem, status=401)
    throttle.succeeded(rate_key(client))
    cookie, _ = new_session(settings, operator_name)
    redirect = RedirectResponse(_local(next), status_code=303)
    redirect.set_cookie(
        SESSION_COOKIE,
        cookie,
        max_age=int(settings.admin_session_hours * 3600),
        path="/admin",
        httponly=True,
        samesite="strict",
        secure=secure_cookie(settings),
    )
    return redirect


def _login_page(
    request: Request, next: str, name: str, problem: str | None, *, status: int
) -> Response:
    response = templates.TemplateResponse(
        request,
        "admin/login.html",
        {"next": _local(next), "problem": problem, "name": name[:100]},
        status_code=status,
    )
    return _html(response)


@router.post("/logout")
def logout(
    request: Request,
    pool: PoolDep,
    settings: SettingsDep,
    csrf: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    operator = form_operator(request, settings, pool, csrf)
    if operator.via == "session":
        # Revoked for every instance until it would have expired: the cookie opens nothing.
        pool.sign_out_session(operator.session_id, datetime.fromtimestamp(operator.expires, UTC))
        log.info("dashboard: %s signed out", operator.name)
    redirect = RedirectResponse("/admin/login", status_code=303)
    redirect.delete_cookie(SESSION_COOKIE, path="/admin")
    return redirect


def _local(target: str) -> str:
    """Only a path of the dashboard itself: no open redirect."""
    if target.startswith("/admin") and not target.startswith("//") and "\\" not in target:
        return target
    return "/admin"


# --- decisions -----------------------------------------------------------------------------


@router.post("/reviews/{callback_id}")
def resolve_review(
    request: Request,
    callback_id: int,
    pool: PoolDep,
    settings: SettingsDep,
    csrf: Annotated[str, Form(max_length=200)] = "",
    payment: Annotated[str, Form(max_length=200)] = "",
    others: Annotated[str, Form(max_length=40)] = "expired",
    reason: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    operator = form_operator(request, settings, pool, csrf)
    if not payment:
        return _back(request, error="Choose the payment the return belongs to, or none")
    token = None if payment == "none" else payment
    status = _status(others)
    if status is None:
        return _back(request, error=f"{others[:40]!r} is not a status the others may take")
    review_ref = f"CB-{callback_id}"
    return _decide(
        request,
        lambda: pool.resolve_review(
            callback_id, payment_token=token, others=status, by=operator.name, reason=reason
        ),
        f"{review_ref} decided: "
        + ("it belongs to none of its payments" if token is None else "the payment is completed"),
    )


@router.post("/payments/{token}/close")
def close_payment(
    request: Request,
    token: str,
    pool: PoolDep,
    settings: SettingsDep,
    csrf: Annotated[str, Form(max_length=200)] = "",
    status: Annotated[str, Form(max_length=40)] = "expired",
    reason: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    operator = form_operator(request, settings, pool, csrf)
    ending = _status(status)
    if ending is None:
        return _back(request, error=f"{status[:40]!r} is not a payment status")
    return _decide(
        request,
        lambda: pool.resolve_payment(token, status=ending, by=operator.name, reason=reason),
        f"the payment is {ending.value}",
    )


@router.post("/slots/sideline")
def sideline(
    request: Request,
    pool: PoolDep,
    settings: SettingsDep,
    csrf: Annotated[str, Form(max_length=200)] = "",
    path: Annotated[str, Form(max_length=500)] = "",
    reason: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    operator = form_operator(request, settings, pool, csrf)
    return _decide(
        request,
        lambda: pool.sideline_slot(pool.slot_path(path), by=operator.name, reason=reason),
        f"{path} is out of rotation",
    )


@router.post("/slots/restore")
def restore(
    request: Request,
    pool: PoolDep,
    settings: SettingsDep,
    csrf: Annotated[str, Form(max_length=200)] = "",
    path: Annotated[str, Form(max_length=500)] = "",
) -> Response:
    operator = form_operator(request, settings, pool, csrf)
    return _decide(
        request,
        lambda: pool.restore_slot(pool.slot_path(path), by=operator.name),
        f"{path} is back in rotation",
    )


def _status(value: str) -> PaymentStatus | None:
    try:
        return PaymentStatus(value)
    except ValueError:
        return None
