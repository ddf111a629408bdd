"""A payment request checked and priced before any slot is sought.

The amount or the line items (priced by the gateway's catalogue), the currency, the
customer's data and the priority: each is checked here, and InvalidPayment names the field
that is wrong. Nothing here touches the store.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ..domain.errors import InvalidPayment
from ..domain.gateway import Gateway
from ..domain.model import LineItem
from ..domain.money import is_known_currency
from .policy import PoolPolicy

MAX_QUANTITY = 10_000
# The largest amount any payment may have, configured maximum or not: the largest integer a
# JSON client in JavaScript holds exactly (and far inside what every store's integers hold).
AMOUNT_CEILING = 2**53 - 1
MAX_CUSTOMER_BYTES = 16_384


def price(
    gateway: Gateway,
    policy: PoolPolicy,
    amount: int | None,
    currency: str | None,
    items: Mapping[str, int] | None,
) -> tuple[tuple[LineItem, ...], int, str]:
    """The line items, their total and the currency of a payment request."""
    currency = gateway.currency if currency is None else currency
    if not isinstance(currency, str) or not is_known_currency(currency):
        raise InvalidPayment("currency", f"unknown currency {currency!r}")
    if currency != gateway.currency:
        raise InvalidPayment("currency", f"this payment form takes {gateway.currency}")
    if amount is not None and (type(amount) is not int or amount <= 0):
        raise InvalidPayment("amount", "must be a positive integer of minor units")
    if items:
        for code, quantity in items.items():
            if type(quantity) is not int or not 1 <= quantity <= MAX_QUANTITY:
                raise InvalidPayment(
                    "items", f"quantity of {code!r} must be an integer from 1 to {MAX_QUANTITY}"
                )
        line_items = gateway.price_items(items)
        total = sum(item.total for item in line_items)
        if amount is not None and amount != total:
            raise InvalidPayment("amount", f"does not match the items, which total {total}")
    elif amount is None:
        raise InvalidPayment("amount", "is required (or name the items)")
    else:
        found = gateway.items_for_amount(amount)
        if found is None:
            raise InvalidPayment("items", "this payment form charges by line items: name them")
        line_items, total = found, amount
    if total <= 0:
        raise InvalidPayment("amount", "must be greater than zero")
    if policy.max_amount is not None and total > policy.max_amount:
        raise InvalidPayment("amount", f"must not exceed {policy.max_amount}")
    if total > AMOUNT_CEILING:
        raise InvalidPayment("amount", f"must not exceed {AMOUNT_CEILING}")
    return line_items, total, currency


def customer_data(customer: Mapping[str, Any] | None) -> dict[str, Any]:
    """The customer's data as stored: a JSON object of bounded size."""
    if customer is None:
        return {}
    if not isinstance(customer, Mapping):
        raise InvalidPayment("customer", "must be an object")
    try:
        encoded = json.dumps(dict(customer), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidPayment("customer", f"must be plain JSON data ({exc})") from None
    if len(encoded) > MAX_CUSTOMER_BYTES:
        raise InvalidPayment("customer", f"must not exceed {MAX_CUSTOMER_BYTES} bytes as JSON")
    loaded: dict[str, Any] = json.loads(encoded)
    return loaded


def checked_priority(policy: PoolPolicy, priority: int) -> int:
    if type(priority) is not int or not 0 <= priority <= policy.max_priority:
        raise InvalidPayment("priority", f"must be an integer from 0 to {policy.max_priority}")
    return priority
