"""The sandbox gateway's pages (mounted only when the sandbox is enabled): the hosted form's
post, the card page, and the return to the shop."""

from __future__ import annotations

import hmac
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from ...gateways.sandbox import (
    MAX_DELAY_SECONDS,
    SANDBOX_FORM_PATH,
    SANDBOX_QUERY_PATH,
    TEST_CARDS,
    ReturnMethod,
    SandboxGateway,
    SandboxRefusal,
    Transaction,
    parse_switches,
)
from ..deps import SandboxDep
from ..schemas import form_pairs
from ..templating import templates

router = APIRouter(include_in_schema=False)


@router.post(SANDBOX_FORM_PATH)
async def hosted_form(request: Request, sandbox: SandboxDep) -> Response:
    """The browser's post of the hosted form: on to the card page, or the gateway's refusal."""
    try:
        transaction = sandbox.open_transaction(form_pairs(await request.body()))
    except SandboxRefusal as refusal:
        return _refused(request, refusal.message)
    return RedirectResponse(f"/sandbox/pay/{transaction.id}", status_code=303)


@router.get("/sandbox/pay/{transaction_id}", response_class=HTMLResponse)
async def card_page(request: Request, transaction_id: str, sandbox: SandboxDep) -> Response:
    transaction = sandbox.transaction(transaction_id)
    if transaction is None:
        return _refused(request, "Unknown or expired transaction", status=404)
    return _card_page(request, sandbox, transaction)


@router.post("/sandbox/pay/{transaction_id}", response_class=HTMLResponse)
async def pay(request: Request, transaction_id: str, sandbox: SandboxDep) -> Response:
    form = dict(form_pairs(await request.body()))
    transaction = sandbox.transaction(transaction_id)
    if transaction is None:
        return _refused(request, "Unknown or expired transaction", status=404)
    try:
        switches = parse_switches(
            form.get("return_method", "GET"), form.get("return_twice", ""), form.get("delay", "")
        )
        transaction = await run_in_threadpool(
            lambda: sandbox.pay(
                transaction_id,
                card_number=form.get("card_number", ""),
                expiry=form.get("expiry", ""),
                switches=switches,
            )
        )
    except SandboxRefusal as refusal:
        return _card_page(request, sandbox, transaction, error=refusal.message, form=form)
    return _send_back(request, transaction)


@router.get(SANDBOX_QUERY_PATH)
async def status_query(request: Request, sandbox: SandboxDep, PNRef: str = "") -> Response:
    """The sandbox's status query: ``GET /sandbox/query?PNRef=…`` with ``Authorization:
    Bearer <sandbox secret>``. 200 with the transaction (the return's parameters but its
    hash, and ``custom``: the custom fields the hosted form posted), 404 if unknown."""
    scheme, _, supplied = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        supplied.strip().encode(), sandbox.signer.secret.encode()
    ):
        return JSONResponse({"error": "authentication required"}, status_code=401)
    document = sandbox.query(PNRef)
    if document is None:
        return JSONResponse({"error": "unknown transaction"}, status_code=404)
    return JSONResponse(document)


def _send_back(request: Request, transaction: Transaction) -> Response:
    """The return to ``ReturnURL``, as the switches say."""
    assert transaction.answer is not None
    switches = transaction.switches
    if switches.method is ReturnMethod.NEVER:
        return templates.TemplateResponse(request, "sandbox/no_return.html", {})
    if switches.plain:
        separator = "&" if "?" in transaction.return_url else "?"
        location = transaction.return_url + separator + urlencode(transaction.answer)
        return RedirectResponse(location, status_code=302)
    return templates.TemplateResponse(
        request,
        "sandbox/return.html",
        {
            "return_url": transaction.return_url,
            "method": switches.method.value,
            "fields": transaction.answer,
            "twice": switches.twice,
            "delay": switches.delay_seconds,
        },
    )


def _card_page(
    request: Request,
    sandbox: SandboxGateway,
    transaction: Transaction,
    *,
    error: str | None = None,
    form: dict[str, str] | None = None,
) -> Response:
    return templates.TemplateResponse(
        request,
        "sandbox/card.html",
        {
            "transaction": transaction,
            "merchant": sandbox.merchant_id,
            "currency": sandbox.currency,
            "cards": TEST_CARDS,
            "error": error,
            "form": form or {},
            "max_delay": MAX_DELAY_SECONDS,
        },
        status_code=400 if error else 200,
    )


def _refused(request: Request, message: str, *, status: int = 400) -> Response:
    return templates.TemplateResponse(
        request, "sandbox/refused.html", {"message": message}, status_code=status
    )
