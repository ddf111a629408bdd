"""The JSON the API takes (paths and shapes follow the guide's API), how FastAPI reads and
documents it, and the error answers' documentation. What the API answers is in views.py,
shared with the CLI."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import parse_qsl

from fastapi import Depends, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, StrictBool, StrictInt, StrictStr, ValidationError
from pydantic.alias_generators import to_camel

from ..domain.errors import InvalidPayment, InvalidRequest
from ..pool.shop import ShopPaymentRequest
from ..views import Out

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
        return {
            "amount": flat.amount,
            "currency": flat.currency,
            "items": _item_quantities(flat.items),
            "customer": self.customer_data,
            "priority": self.priority,
            "wait": self.wait,
        }


class ShopPaymentIn(_In):
    """A payment created by the shop's server (docs/integrating.md). ``amount`` in minor
    units, or ``items``; ``successUrl`` and ``cancelUrl`` on an origin in ``shopOrigins``,
    where ``{PAYMENT_ID}`` and ``{ORDER_REFERENCE}`` are filled in."""

    amount: StrictInt | None = None
    currency: StrictStr | None = None
    items: list[ItemIn] | None = None
    order_reference: StrictStr
    metadata: dict[str, StrictStr] | None = None
    customer: dict[str, Any] | None = None
    success_url: StrictStr
    cancel_url: StrictStr
    expires_in_minutes: StrictInt = 60

    def request(self) -> ShopPaymentRequest:
        items = _item_quantities(self.items)
        return ShopPaymentRequest(
            amount=self.amount,
            currency=self.currency,
            items=items,
            order_reference=self.order_reference,
            metadata=self.metadata,
            customer=self.customer,
            success_url=self.success_url,
            cancel_url=self.cancel_url,
            expires_in_minutes=self.expires_in_minutes,
        )


def _item_quantities(listed: list[ItemIn] | None) -> dict[str, int] | None:
    if listed is None:
        return None
    items: dict[str, int] = {}
    for item in listed:
        if item.code in items:
            raise InvalidPayment("items", f"item {item.code!r} is listed twice")
        items[item.code] = item.quantity
    return items


In = TypeVar("In", bound="_In")


def json_body(model: type[In]) -> Callable[[Request], Awaitable[In]]:
    """A dependency: the body as ``model``, whatever the Content-Type says (the guide's own
    client posts JSON as text/plain); InvalidRequest or RequestValidationError naming the field
    otherwise. FastAPI does not document a body read so: the route says it in
    ``openapi_extra``."""

    async def body(request: Request) -> In:
        raw = await request.body()
        if not raw.strip():
            raise InvalidRequest("body", "is required (a JSON object)")
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError):
            raise InvalidRequest("body", "malformed JSON") from None
        if not isinstance(data, dict):
            raise InvalidRequest("body", "must be a JSON object")
        unstorable = unstorable_text(data)
        if unstorable is not None:
            raise InvalidRequest(*unstorable)
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            errors = exc.errors(include_url=False, include_context=False)
            raise RequestValidationError(errors) from None

    return body


def unstorable_text(value: Any, where: str = "") -> tuple[str, str] | None:
    """Where in a parsed JSON document a string (or a key) holds what no database column
    stores, and what: a lone surrogate (JSON's ``"\\ud800"``: no UTF-8 database stores it)
    or NUL (PostgreSQL's text refuses it). ``("customerData.email", problem)``; None if none."""
    if isinstance(value, str):
        problem = _text_problem(value)
        return (where or "body", problem) if problem else None
    if isinstance(value, dict):
        for key, item in value.items():
            if _text_problem(key):
                return (where or "body", "has a key that is not valid text (surrogate or NUL)")
            found = unstorable_text(item, f"{where}.{key}" if where else str(key))
            if found is not None:
                return found
    if isinstance(value, list):
        for index, item in enumerate(value):
            found = unstorable_text(item, f"{where}[{index}]")
            if found is not None:
                return found
    return None


def _text_problem(text: str) -> str | None:
    try:
        text.encode()
    except UnicodeEncodeError:
        return "is not valid text (a lone UTF-16 surrogate)"
    return "must not contain a NUL character" if "\x00" in text else None


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


CreateTokenBody = Annotated[CreateTokenIn, Depends(json_body(CreateTokenIn))]
ResolveReviewBody = Annotated[ResolveReviewIn, Depends(json_body(ResolveReviewIn))]
ClosePaymentBody = Annotated[ClosePaymentIn, Depends(json_body(ClosePaymentIn))]
SidelineBody = Annotated[SidelineIn, Depends(json_body(SidelineIn))]
RestoreBody = Annotated[RestoreIn, Depends(json_body(RestoreIn))]
ShopPaymentBody = Annotated[ShopPaymentIn, Depends(json_body(ShopPaymentIn))]


# --- errors --------------------------------------------------------------------------------


class ErrorOut(Out):
    """Every error: ``errors`` names the fields of a bad request; ``retryAfter`` (seconds)
    comes with a 429 and an exhausted pool's 503, ``status`` with a 409, ``ref`` with a 500."""

    success: bool = False
    message: str
    errors: dict[str, str] | None = None
    retry_after: int | None = None
    status: str | None = None
    ref: str | None = None


# Bodies read by ``json_body`` (whatever the Content-Type) rather than by FastAPI, as
# ``request_body`` names them: ``complete_document`` adds their schemas to the components.
REQUEST_MODELS: dict[str, type[BaseModel]] = {}
_COMPONENTS = "#/components/schemas/{model}"


def request_body(model: type[BaseModel]) -> dict[str, Any]:
    """The ``openapi_extra`` of an operation whose JSON body is ``model``."""
    REQUEST_MODELS[model.__name__] = model
    reference = {"$ref": _COMPONENTS.format(model=model.__name__)}
    return {
        "requestBody": {"required": True, "content": {"application/json": {"schema": reference}}}
    }


def complete_document(document: dict[str, Any]) -> dict[str, Any]:
    """The OpenAPI document as the service answers: the schemas of ``REQUEST_MODELS`` in its
    components, and without FastAPI's own 422 entries, whose body (``detail``) is not the
    one this service sends; an operation that can answer 422 documents its own."""
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    for model in REQUEST_MODELS.values():
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
    401: "No credentials (operator token or merchant key), or the wrong one",
    403: "A browser's request from another site",
    404: "Not found (an unknown token and a malformed one alike)",
    409: "The payment is no longer pending, or the Idempotency-Key was used for another body",
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
