"""Amounts are integers of a currency's minor unit; the gateway speaks decimal currency units."""

from __future__ import annotations

import re
from decimal import Decimal

# ISO 4217 minor-unit exponents of the currencies a card gateway commonly settles in.
_CODES_BY_EXPONENT = {
    2: "USD CAD EUR GBP AUD NZD CHF SEK NOK DKK PLN CZK MXN BRL ZAR SGD HKD INR CNY ILS TRY AED "
    "SAR PHP HUF",
    0: "JPY KRW ISK CLP VND",
    3: "KWD BHD JOD OMR TND",
}
CURRENCY_EXPONENTS: dict[str, int] = {
    code: exponent for exponent, codes in _CODES_BY_EXPONENT.items() for code in codes.split()
}

_DECIMAL = re.compile(r"\A[0-9]{1,15}(?:\.[0-9]{1,6})?\Z")


def is_known_currency(code: str) -> bool:
    return code in CURRENCY_EXPONENTS


def parse_decimal(text: str) -> Decimal | None:
    """A plain decimal like ``10.00``; None for anything else (signs, exponents, spaces)."""
    return Decimal(text) if _DECIMAL.match(text) else None


def to_minor(amount: Decimal, currency: str) -> int | None:
    """Minor units of ``amount``, or None when it has more decimals than the currency."""
    scaled = amount.scaleb(CURRENCY_EXPONENTS[currency])
    return int(scaled) if scaled == scaled.to_integral_value() else None


def format_amount(minor: int, currency: str) -> str:
    """``1000, "USD"`` → ``"10.00"``: the way the gateway writes amounts."""
    exponent = CURRENCY_EXPONENTS[currency]
    return str(Decimal(minor).scaleb(-exponent).quantize(Decimal(1).scaleb(-exponent)))
