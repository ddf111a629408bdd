"""Every error the service answers, mapped to HTTP in this one place.

An API request gets ``{"success": false, "message": ...}`` (with ``errors`` naming the
fields of a bad request), a page gets the error page, and a gateway return gets a 303 to the
payment error page: the customer's browser is never left on a bare error.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlencode

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..domain.errors import (
    CallbackPoolError,
    Conflict,
    InvalidRequest,
    NotFound,
    PaymentNotPending,
    PoolExhausted,
    StoreError,
    StoreUnavailable,
    TicketEnded,
    TooManyLeases,
    UnknownPayment,
    UnknownTicket,
)
from .templating import templates

log = logging.getLogger("callbackpool.web")

AnswerStyle = Literal["api", "page", "callback"]
# The guide's words for an exhausted pool, kept so its front ends show what they always did.
POOL_EXHAUSTED_MESSAGE = "No forms available. All forms are currently in use."
# How the request's fields are called in the API where the core names them otherwise.
_API_FIELD_NAMES = {"customer": "customerData"}
# Starlette's words for a path or a method it does not serve, in the service's.
_ROUTING_MESSAGES = {"Not Found": "Not found", "Method Not Allowed": "Method not allowed"}


class WebError(Exception):
    """An error of the HTTP layer itself (not of the pool)."""

    status = 400
    # Where a page request is sent instead of the error page (API requests get the status).
    redirect: str | None = None

    def __init__(self, message: str, *, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = dict(headers or {})


class NotAuthenticated(WebError):
    status = 401

    def __init__(self, message: str = "Authentication required") -> None:
        super().__init__(message, headers={"WWW-Authenticate": 'Bearer realm="callbackpool"'})


class Forbidden(WebError):
    status = 403


class RateLimited(WebError):
    """Too many requests from one client: answered 429 with ``Retry-After``."""

    status = 429

    def __init__(self, retry_after_seconds: float) -> None:
        self.retry_after_seconds = max(1, int(retry_after_seconds + 0.999))
        super().__init__(
            "Too many requests from this address: wait a moment before trying again",
            headers={"Retry-After": str(self.retry_after_seconds)},
        )


class RequestTooLarge(StarletteHTTPException):
    """Raised while a body is read past the limit (an HTTPException, so that a framework
    reading the body passes it on untouched)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"Request body too large (limit {limit} bytes)")


@dataclass(frozen=True, kw_only=True)
class Problem:
    status: int
    message: str
    errors: dict[str, str] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    # Where a page request is sent instead (the login form); API requests get the status.
    redirect: str | None = None


def problem_for(exc: Exception) -> Problem:
    """The answer to an exception: the whole mapping of errors to HTTP."""
    match exc:
        case InvalidRequest():
            name = _API_FIELD_NAMES.get(exc.field, exc.field)
            return Problem(status=422, message=f"{name}: {exc.problem}", errors={name: exc.problem})
        case PoolExhausted():
            return _retry_later(503, POOL_EXHAUSTED_MESSAGE, exc.retry_after_seconds)
        case TooManyLeases():
            return _retry_later(429, exc.message, exc.retry_after_seconds)
        case UnknownPayment():
            return Problem(status=404, message="Payment not found")
        case UnknownTicket():
            return Problem(status=404, message="Ticket not found")
        case NotFound():
            return Problem(status=404, message=exc.message)
        case TicketEnded():
            return Problem(status=410, message=exc.message, extra={"status": exc.status})
        case PaymentNotPending():
            return Problem(status=409, message=exc.message, extra={"status": exc.status})
        case Conflict():
            return Problem(status=409, message=exc.message)
        case StoreUnavailable():
            log.error("store unavailable: %s", exc.message)
            return Problem(
                status=503,
                message=StoreUnavailable.__doc__ or "Service unavailable",
                headers={"Retry-After": str(StoreUnavailable.retry_after_seconds)},
            )
        case StoreError():
            # The database refused what the service asked: the service's fault, not the
            # client's, and the database's words are not for the client.
            return _internal_error(exc)
        case CallbackPoolError():
            return Problem(status=400, message=exc.message)
        case RateLimited():
            return _retry_later(429, exc.message, exc.retry_after_seconds)
        case WebError():
            return Problem(
                status=exc.status, message=exc.message, headers=exc.headers, redirect=exc.redirect
            )
        case RequestValidationError():
            errors = _field_errors(exc.errors())
            first = next(iter(errors.items()))
            return Problem(status=422, message=f"{first[0]}: {first[1]}", errors=errors)
        case StarletteHTTPException():
            # Starlette gives every exception a detail: its own, or the status's phrase.
            message = exc.detail if isinstance(exc.detail, str) and exc.detail else "Request failed"
            return Problem(
                status=exc.status_code,
                message=_ROUTING_MESSAGES.get(message, message),
                headers=dict(exc.headers or {}),
            )
        case _:
            return _internal_error(exc)


def _retry_later(status: int, message: str, retry_after_seconds: int) -> Problem:
    return Problem(
        status=status,
        message=message,
        headers={"Retry-After": str(retry_after_seconds)},
        extra={"retryAfter": retry_after_seconds},
    )


def _internal_error(exc: Exception) -> Problem:
    ref = f"ERR-{secrets.token_hex(4)}"
    log.error("unexpected error %s", ref, exc_info=exc)
    return Problem(status=500, message=f"Internal error (reference {ref})", extra={"ref": ref})


def _field_errors(errors: Sequence[Any]) -> dict[str, str]:
    """``{field: problem}`` from pydantic's errors, fields named as the API names them."""
    found: dict[str, str] = {}
    for error in errors:
        loc = [part for part in error.get("loc", ()) if part not in ("body", "paymentData")]
        name = ""
        for part in loc:
            name += f"[{part}]" if isinstance(part, int) else (f".{part}" if name else str(part))
        if error.get("type") == "json_invalid":
            name, message = "body", "malformed JSON"
        elif error.get("type") == "missing":
            message = "is required"
        else:
            message = str(error.get("msg", "is invalid")).removeprefix("Value error, ")
        found.setdefault(name or "body", message)
    return found or {"body": "is invalid"}


# --- answering -------------------------------------------------------------------------------


def mark_answer(request: Request, style: AnswerStyle) -> None:
    """Say how errors of this request are answered (before anything can fail)."""
    request.state.answer_as = style


def respond(request: Request, problem: Problem) -> Response:
    unmarked: AnswerStyle = "api" if request.url.path.startswith("/api/") else "page"
    style: AnswerStyle = getattr(request.state, "answer_as", unmarked)
    if style == "callback" and problem.status == 503:
        return _return_again_later(request, problem)
    if style == "callback":
        # A gateway return always lands the customer on a page, whatever went wrong.
        services = getattr(request.app.state, "services", None)
        error_url = services.settings.error_url if services is not None else "/payment-error"
        reason = urlencode({"reason": "processing"})
        return RedirectResponse(f"{error_url}?{reason}", status_code=303)
    if style == "page" and problem.redirect is not None:
        return RedirectResponse(problem.redirect, status_code=303)
    if style == "page":
        response: Response = templates.TemplateResponse(
            request,
            "problem.html",
            {"status": problem.status, "message": problem.message, "ref": problem.extra.get("ref")},
            status_code=problem.status,
        )
    else:
        body: dict[str, Any] = {"success": False, "message": problem.message}
        if problem.errors:
            body["errors"] = problem.errors
        body.update(problem.extra)
        response = JSONResponse(body, status_code=problem.status)
    response.headers.update(problem.headers)
    return response


def keep_return(request: Request, params: Sequence[tuple[str, str]]) -> None:
    """Keep a gateway return's parameters with its request, for the page that sends them
    again if the service cannot store the return now."""
    request.state.return_params = list(params)


def _return_again_later(request: Request, problem: Problem) -> Response:
    """A gateway return the service could not store (the database is away): not sent on to
    the error page, where it would be lost, but answered 503 with a page that sends the
    very same return again after ``Retry-After`` (a GET reloads itself; a POST posts its
    fields again), so that it is stored as soon as the database is back."""
    params: list[tuple[str, str]] = getattr(request.state, "return_params", [])
    log.error(
        "gateway return on %s not stored (%s); the customer's page will send it again: %s",
        request.url.path,
        problem.message,
        urlencode(params),
    )
    response = templates.TemplateResponse(
        request,
        "return_retry.html",
        {
            "method": request.method,
            "action": request.url.path,
            "fields": params,
            "retry_after": problem.headers.get("Retry-After", "5"),
        },
        status_code=503,
    )
    response.headers.update(problem.headers)
    response.headers["Cache-Control"] = "no-store"
    return response


async def _handle(request: Request, exc: Exception) -> Response:
    problem = problem_for(exc)
    if problem.status == 405:
        # Starlette names the methods of the first route of the path only; a path served by
        # several routes (one a method, for their own OpenAPI operations) takes them all.
        problem.headers["Allow"] = allowed_methods(request)
    return respond(request, problem)


_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")


def allowed_methods(request: Request) -> str:
    """Every method some route of the app takes on the request's path."""
    routes = request.app.router.routes
    return ", ".join(
        method
        for method in _METHODS
        if any(
            route.matches({**request.scope, "method": method})[0] is Match.FULL for route in routes
        )
    )


class UnexpectedErrors:
    """The catch-all: an exception no handler took is logged and answered generically
    (Starlette's own last resort would re-raise it and print a traceback page)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            problem = problem_for(exc)
            if started:
                return
            response = respond(Request(scope, receive), problem)
            await response(scope, receive, send)


def install_error_handlers(app: FastAPI) -> None:
    for kind in (CallbackPoolError, WebError, RequestValidationError, StarletteHTTPException):
        app.add_exception_handler(kind, _handle)
    app.add_middleware(UnexpectedErrors)
