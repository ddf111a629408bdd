"""The JSON the API takes and gives (paths and shapes follow the guide's API)."""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any, Literal
from urllib.parse import parse_qsl

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, StrictBool, StrictInt, StrictStr, ValidationError
from pydantic.alias_generators import to_camel

from .. import views
from ..compose import catalogue, form_action_url
from ..config import Settings
from ..domain.errors import InvalidPayment
from ..domain.model import Payment
from ..domain.money import format_amount
from ..pool import Checkout, PoolStatus, Waiting
from ..views import iso
from .errors import BadBody

# --- requests ------------------------------------------------------------------------------


class _In(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


class ItemIn(_In):
    code: StrictStr
    quantity: StrictInt


class PaymentDataIn(_In):
    amount: StrictInt | None = None
    currency: StrictStr | None = None
    items: list[ItemIn] | None = None


class CreateTokenIn(_In):
    """``{"paymentData": {...}, "customerData": {...}}``, or the guide's flat
    ``{"amount": 1000, "customerData": {...}}``. ``amount`` is in minor units."""

    payment_data: PaymentDataIn | None = None
    amount: StrictInt | None = None
    currency: StrictStr | None = None
    items: list[ItemIn] | None = None
    customer_data: dict[str, Any] | None = None
    # The waiting room (docs/capacity.md): wait for a slot instead of a 503; the rank.
    wait: StrictBool = False
    priority: StrictInt = 0

    def payment_arguments(self) -> dict[str, Any]:
        """The keyword arguments of ``CallbackPool.create_payment``."""
        flat = PaymentDataIn(amount=self.amount, currency=self.currency, items=self.items)
        if self.payment_data is not None:
            if flat.model_dump(exclude_none=True):
                raise InvalidPayment(
                    "paymentData", "give amount, currency and items inside it or flat, not both"
                )
            flat = self.payment_data
        items: dict[str, int] | None = None
        if flat.items is not None:
            items = {}
            for item in flat.items:
                if item.code in items:
                    raise InvalidPayment("items", f"item {item.code!r} is listed twice")
                items[item.code] = item.quantity
        return {
            "amount": flat.amount,
            "currency": flat.currency,
            "items": items,
            "customer": self.customer_data,
            "priority": self.priority,
            "wait": self.wait,
        }


async def read_json(request: Request, model: type[_In]) -> Any:
    """The body as ``model``, whatever the Content-Type says (the guide's own client posts
    JSON as text/plain). BadBody or RequestValidationError naming the field otherwise."""
    raw = await request.body()
    if not raw.strip():
        raise BadBody("body", "is required (a JSON object)")
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        raise BadBody("body", "malformed JSON") from None
    if not isinstance(data, dict):
        raise BadBody("body", "must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False, include_context=False)) from None


# --- the operator's decisions ------------------------------------------------------------


class ResolveReviewIn(_In):
    """``paymentToken``: the candidate the return belongs to, or null for none of them."""

    payment_token: StrictStr | None
    others: Literal["expired", "failed", "needs_review"] = "expired"
    reason: StrictStr
    operator: StrictStr


class ClosePaymentIn(_In):
    status: Literal["expired", "failed"]
    reason: StrictStr
    operator: StrictStr


class SidelineIn(_In):
    path: StrictStr
    reason: StrictStr
    operator: StrictStr


class RestoreIn(_In):
    path: StrictStr
    operator: StrictStr


# --- responses -----------------------------------------------------------------------------


class _Out(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True)


class DirectRoute(APIRoute):
    """A route whose endpoint reads its request itself (``read_json``) and answers a
    ``Response`` (``json_answer``): called with the request and its path parameters (as
    text), without FastAPI's per-request resolution of parameters and dependencies, which
    cost a route that serves every payment more than its own work. Its declaration still
    documents it (OpenAPI), and errors it raises meet the app's handlers as any route's."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        endpoint = self.endpoint

        async def answer(request: Request) -> Response:
            response: Response = await endpoint(request=request, **request.path_params)
            return response

        return answer


def json_answer(
    body: _Out, status_code: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    """``body`` as the answer's JSON, as FastAPI would write it for a route whose
    ``response_model`` it is, without validating it a second time."""
    return Response(
        body.model_dump_json(by_alias=True),
        status_code,
        headers=headers,
        media_type="application/json",
    )


class ErrorOut(_Out):
    """Every error: ``errors`` names the fields of a bad request; ``retryAfter`` (seconds)
    comes with a 429 and an exhausted pool's 503, ``status`` with a 409, ``ref`` with a 500."""

    success: bool = False
    message: str
    errors: dict[str, str] | None = None
    retry_after: int | None = None
    status: str | None = None
    ref: str | None = None


class FormConfigOut(_Out):
    form_action_url: str
    method: str
    merchant_id: str
    form_id: str
    form_hash: str
    callback_path: str
    callback_url: str
    fields: dict[str, str]


class CreateTokenOut(_Out):
    success: bool = True
    token: str
    status: str
    expires_at: str | None
    form_config: FormConfigOut

    @classmethod
    def of(cls, checkout: Checkout) -> CreateTokenOut:
        form = checkout.form
        return cls(
            token=checkout.payment.token,
            status=checkout.payment.status.value,
            expires_at=iso(checkout.payment.expires_at),
            form_config=FormConfigOut(
                form_action_url=form.action_url,
                method=form.method,
                merchant_id=form.fields.get("merchantID", ""),
                form_id=form.fields.get("formID", ""),
                form_hash=form.fields.get("hash", ""),
                callback_path=form.callback_path,
                callback_url=form.callback_url,
                fields=dict(form.fields),
            ),
        )


class WaitingOut(_Out):
    """A place in the waiting room (202): poll ``GET /ticket/{ticket}`` after ``retryAfter``
    seconds; a ticket not polled in time is dropped."""

    success: bool = True
    ticket: str
    position: int
    retry_after: int

    @classmethod
    def of(cls, waiting: Waiting) -> WaitingOut:
        return cls(
            ticket=waiting.ticket,
            position=waiting.position,
            retry_after=waiting.retry_after_seconds,
        )


class TicketCancelledOut(_Out):
    success: bool = True
    status: str = "cancelled"


class PaymentStatusOut(_Out):
    success: bool = True
    token: str
    status: str
    amount: int
    currency: str
    transaction_id: str | None
    error_message: str | None
    late: bool
    expires_at: str | None

    @classmethod
    def of(cls, payment: Payment) -> PaymentStatusOut:
        return cls(
            token=payment.token,
            status=payment.status.value,
            amount=payment.amount,
            currency=payment.currency,
            transaction_id=payment.pn_ref,
            error_message=payment.error_message,
            late=payment.late,
            expires_at=iso(payment.expires_at),
        )


class CancelledOut(_Out):
    success: bool = True
    status: str


class CatalogueItemOut(_Out):
    code: str
    description: str
    price: int
    price_text: str


class ConfigOut(_Out):
    """The public form settings (everything here is posted by the browser anyway)."""

    success: bool = True
    form_action_url: str
    method: str = "POST"
    merchant_id: str | None
    form_id: str
    form_hash: str
    currency: str
    items: list[CatalogueItemOut]
    lock_timeout_minutes: float
    max_amount: int | None
    sandbox: bool

    @classmethod
    def of(cls, settings: Settings) -> ConfigOut:
        return cls(
            form_action_url=form_action_url(settings),
            merchant_id=settings.merchant_id,
            form_id=settings.form.form_id,
            form_hash=settings.form.form_hash,
            currency=settings.currency,
            items=[
                CatalogueItemOut(
                    code=item.code,
                    description=item.description,
                    price=item.price,
                    price_text=format_amount(item.price, settings.currency),
                )
                for item in catalogue(settings)
            ],
            lock_timeout_minutes=settings.lock_timeout_minutes,
            max_amount=settings.max_amount,
            sandbox=settings.sandbox.enabled,
        )


class HandlerOut(_Out):
    path: str
    active: bool
    state: str
    is_locked: bool
    lease_id: int | None
    locked_by: str | None
    locked_at: str | None
    expires_at: str | None
    usage_count: int
    last_used_at: str | None
    last_released_at: str | None
    taints: int
    reserve: bool
    standby: bool
    in_rotation: bool
    sidelined_at: str | None
    sidelined_by: str | None
    sidelined_reason: str | None
    approvals: int
    declines: int
    silent_expiries: int
    expiry_streak: int
    last_return_at: str | None
    seconds_since_last_return: int | None


class ReserveEventOut(_Out):
    at: str | None
    action: str
    paths: list[str]
    reason: str


class ReserveOut(_Out):
    """The reserve paths: ``none``, ``idle``, ``active`` or ``draining``, and why."""

    state: str
    paths: list[str]
    in_rotation: int
    draining: int
    events: list[ReserveEventOut]


class CapacityOut(_Out):
    """The capacity window: requests seen, holding times, and Erlang B's reading."""

    window_seconds: float
    requests: int
    leased: int
    waited: int
    refused: int
    granted: int
    not_served_at_once: float
    arrivals_per_hour: float
    mean_hold_seconds: float | None
    offered_erlangs: float | None
    slots: int
    target: float
    predicted_turned_away: float | None
    slots_needed: int | None


class PoolStatsOut(_Out):
    """The guide's pool status, as ``callbackpool status --json`` shows it."""

    at: str | None
    total: int
    available: int
    locked: int
    stuck: int
    tainted: int
    inactive: int
    out_of_rotation: int
    standby: int
    waiting: int
    reserve: ReserveOut | None
    capacity: CapacityOut | None
    handlers: list[HandlerOut]

    @classmethod
    def of(cls, status: PoolStatus) -> PoolStatsOut:
        return cls.model_validate(views.status_json(status))


class PoolStatsResponse(_Out):
    success: bool = True
    stats: PoolStatsOut


# Bodies read by ``read_json`` (whatever the Content-Type) rather than by FastAPI: their
# schemas are added to the document's components by ``add_request_schemas``.
REQUEST_MODELS: tuple[type[BaseModel], ...] = (CreateTokenIn,)
_COMPONENTS = "#/components/schemas/{model}"


def request_body(model: type[BaseModel]) -> dict[str, Any]:
    """The ``openapi_extra`` of an operation whose JSON body is ``model``."""
    reference = {"$ref": _COMPONENTS.format(model=model.__name__)}
    return {
        "requestBody": {"required": True, "content": {"application/json": {"schema": reference}}}
    }


def complete_document(document: dict[str, Any]) -> dict[str, Any]:
    """The OpenAPI document as the service answers: the schemas of ``REQUEST_MODELS`` in its
    components, and without FastAPI's own 422 entries, whose body (``detail``) is not the
    one this service sends; an operation that can answer 422 documents its own."""
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    for model in REQUEST_MODELS:
        schema = model.model_json_schema(ref_template=_COMPONENTS)
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    fastapis = "#/components/schemas/HTTPValidationError"
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            answer = operation.get("responses", {}).get("422", {})
            if fastapis in json.dumps(answer):
                del operation["responses"]["422"]
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    return document


_ERROR_HEADERS: dict[int, dict[str, Any]] = {
    401: {"WWW-Authenticate": {"schema": {"type": "string"}, "required": True}},
    429: {"Retry-After": {"schema": {"type": "integer"}, "required": True}},
    503: {"Retry-After": {"schema": {"type": "integer"}, "required": True}},
}
_ERROR_DESCRIPTIONS = {
    401: "No operator token, or the wrong one",
    403: "A browser's request from another site",
    404: "Not found (an unknown token and a malformed one alike)",
    409: "The payment is no longer pending",
    410: "The ticket expired unpolled, or was cancelled",
    413: "The body is over the limit",
    422: "The request names a field that is wrong",
    429: "Too many requests: the client's rate, or the customer's live payments",
    503: "Every slot is leased, or the database is unavailable",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the error answers of an endpoint (``ErrorOut``, and the headers
    that come with some)."""
    return {
        status: {
            "model": ErrorOut,
            "description": _ERROR_DESCRIPTIONS.get(status, "Refused"),
            **({"headers": _ERROR_HEADERS[status]} if status in _ERROR_HEADERS else {}),
        }
        for status in statuses
    }


def form_pairs(raw: bytes) -> Sequence[tuple[str, str]]:
    """An ``application/x-www-form-urlencoded`` body as ordered pairs, repeats kept."""
    return parse_qsl(raw.decode("utf-8", errors="replace"), keep_blank_values=True)
