"""The Paygistix hosted form (shared PAYGISTIX.md): form fields, returns, verification."""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ..domain.errors import InvalidPayment
from ..domain.gateway import CatalogueItem, GatewayReturn, MalformedReturn, Params
from ..domain.model import LineItem
from ..domain.money import format_amount, parse_decimal, to_minor

# Where the browser posts Paygistix's hosted form.
FORM_ACTION_URL = "https://safepay.paymentlogistics.net/transaction.asp"
HASH_ALGORITHMS = ("md5", "sha1", "sha256", "hmac-md5", "hmac-sha1", "hmac-sha256")

# What each return parameter may look like. A value outside its pattern makes the whole
# return malformed: it is stored and answered with the error page, never half-read.
_PATTERNS: dict[str, re.Pattern[str]] = {
    "PNRef": re.compile(r"[A-Za-z0-9_-]{1,40}"),
    "Result": re.compile(r"-?[0-9]{1,6}"),
    "MerchantID": re.compile(r"[!-~]{1,64}"),
    "OrderID": re.compile(r"[A-Za-z0-9_-]{0,40}"),
    "Amount": re.compile(r"[0-9.]{0,20}"),
    "TxnType": re.compile(r"[A-Za-z_]{0,16}"),
    "Last4": re.compile(r"([0-9]{4})?"),
    "ExpDate": re.compile(r"([0-9]{4})?"),
    "CardType": re.compile(r"[A-Za-z]{0,12}"),
    "AuthCode": re.compile(r"[A-Za-z0-9 ]{0,16}"),
    "hash": re.compile(r"[0-9A-Fa-f]{0,128}"),
}
_REQUIRED = ("PNRef", "Result", "MerchantID")


def minor_amount(text: str, currency: str) -> int | None:
    """``text`` (``10.00``) in minor units of ``currency``; None if it is no such amount."""
    amount = parse_decimal(text)
    return None if amount is None else to_minor(amount, currency)


@dataclass(frozen=True, kw_only=True)
class HashRecipe:
    """How the gateway signs a return: plain digests hash ``secret + separator.join(values)``,
    ``hmac-*`` key an HMAC with the secret over it; values are taken exactly as received."""

    secret: str
    fields: tuple[str, ...]
    algorithm: str = "hmac-md5"
    separator: str = "|"

    def __post_init__(self) -> None:
        if self.algorithm not in HASH_ALGORITHMS:
            raise ValueError(f"unknown hash algorithm {self.algorithm!r}")

    def sign(self, values: Mapping[str, str]) -> str:
        message = self.separator.join(values.get(name, "") for name in self.fields)
        if self.algorithm.startswith("hmac-"):
            digest = self.algorithm.removeprefix("hmac-")
            return hmac.new(self.secret.encode(), message.encode(), digest).hexdigest()
        return hashlib.new(self.algorithm, (self.secret + message).encode()).hexdigest()

    def verifies(self, values: Mapping[str, str], given: str) -> bool:
        return hmac.compare_digest(self.sign(values).encode(), given.lower().encode())


@dataclass(kw_only=True, eq=False, repr=False)
class PaygistixGateway:
    """The hosted form as configured at the gateway, and the reading of its returns."""

    merchant_id: str | None
    form_id: str
    form_hash: str
    currency: str
    catalogue: Sequence[CatalogueItem] = ()
    return_hash: HashRecipe | None = None
    # The custom field the payment's token is posted in (for a status query to name it).
    token_field: str | None = None
    action_url: str = FORM_ACTION_URL

    def __post_init__(self) -> None:
        self.catalogue = tuple(self.catalogue)
        self._by_code = {item.code: item for item in self.catalogue}

    # --- sending the customer to the gateway -------------------------------------------

    def price_items(self, quantities: Mapping[str, int]) -> tuple[LineItem, ...]:
        if not self.catalogue:
            raise InvalidPayment("items", "this payment form has no line items")
        items = []
        for code, quantity in quantities.items():
            item = self._by_code.get(code)
            if item is None:
                raise InvalidPayment("items", f"unknown item code {code!r}")
            items.append(LineItem(code=code, quantity=quantity, unit_price=item.price))
        return tuple(items)

    def items_for_amount(self, amount: int) -> tuple[LineItem, ...] | None:
        if not self.catalogue:
            return ()
        # An "open amount" item priced at one minor unit carries any amount as its quantity.
        for item in self.catalogue:
            if item.price == 1:
                return (LineItem(code=item.code, quantity=amount, unit_price=1),)
        return None

    def form_fields(
        self, *, return_url: str, items: Sequence[LineItem], token: str | None = None
    ) -> dict[str, str]:
        fields = {
            "txnType": "FORM",
            "merchantID": self.merchant_id or "",
            "formID": self.form_id,
            "hash": self.form_hash,
            "ReturnURL": return_url,
        }
        quantities = {item.code: item.quantity for item in items}
        # The form hash is tied to the whole set of line-item fields: post every catalogue
        # item, with quantity 0 for those not bought.
        for index, item in enumerate(self.catalogue, start=1):
            fields[f"pxCode{index}"] = item.code
            fields[f"pxDescription{index}"] = item.description
            fields[f"pxPrice{index}"] = format_amount(item.price, self.currency)
            fields[f"pxQty{index}"] = str(quantities.get(item.code, 0))
        if self.token_field and token:
            fields[self.token_field] = token
        return fields

    # --- the return ---------------------------------------------------------------------

    def parse_return(self, params: Params) -> GatewayReturn:
        values: dict[str, str] = {}
        for name, value in params:
            if name in values:
                raise MalformedReturn(f"parameter {name} given more than once")
            values[name] = value
        for name in _REQUIRED:
            if not values.get(name):
                raise MalformedReturn(f"parameter {name} is missing")
        for name, pattern in _PATTERNS.items():
            if name in values and not pattern.fullmatch(values[name]):
                raise MalformedReturn(f"parameter {name} is not valid")
        amount = minor_amount(values.get("Amount", ""), self.currency)
        if values.get("Amount") and amount is None:
            raise MalformedReturn(f"parameter Amount is not a {self.currency} amount")
        return GatewayReturn(
            pn_ref=values["PNRef"],
            approved=values["Result"] == "0",
            result_code=values["Result"],
            amount=amount,
            merchant_id=values["MerchantID"],
            order_id=values.get("OrderID") or None,
            auth_code=values.get("AuthCode") or None,
            card_type=values.get("CardType") or None,
            last4=values.get("Last4") or None,
        )

    def verify(self, params: Params, parsed: GatewayReturn) -> str | None:
        # MerchantID is always checked: without a configured merchant no return passes.
        if self.merchant_id is None:
            return "MerchantID cannot be checked: no merchantId is configured"
        if not hmac.compare_digest((parsed.merchant_id or "").encode(), self.merchant_id.encode()):
            return "MerchantID does not match"
        if self.return_hash is not None:
            values = dict(params)
            if not self.return_hash.verifies(values, values.get("hash", "")):
                return "hash does not verify"
        return None
