"""Amounts are integers of a currency's minor unit; the gateway speaks decimal currency units."""

from __future__ import annotations

import re
from decimal import Decimal

# ISO 4217 minor-unit exponents of the currencies a card gateway commonly settles in.
CURRENCY_EXPONENTS: dict[str, int] = {
    "USD": 2,
    "CAD": 2,
    "EUR": 2,
    "GBP": 2,
    "AUD": 2,
    "NZD": 2,
    "CHF": 2,
    "SEK": 2,
    "NOK": 2,
    "DKK": 2,
    "PLN": 2,
    "CZK": 2,
    "MXN": 2,
    "BRL": 2,
    "ZAR": 2,
    "SGD": 2,
    "HKD": 2,
    "INR": 2,
    "CNY": 2,
    "ILS": 2,
    "TRY": 2,
    "AED": 2,
    "SAR": 2,
    "PHP": 2,
    "JPY": 0,
    "KRW": 0,
    "ISK": 0,
    "CLP": 0,
    "VND": 0,
    "HUF": 2,
    "KWD": 3,
    "BHD": 3,
    "JOD": 3,
    "OMR": 3,
    "TND": 3,
}

_DECIMAL = re.compile(r"\A[0-9]{1,15}(?:\.[0-9]{1,6})?\Z")


def is_known_currency(code: str) -> bool:
    return code in CURRENCY_EXPONENTS


def parse_decimal(text: str) -> Decimal | None:
    """A plain decimal like ``10.00``; None for anything else (signs, exponents, spaces)."""
    if not _DECIMAL.match(text):
        return None
    return Decimal(text)


def to_minor(amount: Decimal, currency: str) -> int | None:
    """Minor units of ``amount``, or None when it has more decimals than the currency."""
    scaled = amount.scaleb(CURRENCY_EXPONENTS[currency])
    if scaled != scaled.to_integral_value():
        return None
    return int(scaled)


def to_major(minor: int, currency: str) -> Decimal:
    """The decimal currency amount of ``minor`` units, with the currency's decimals."""
    exponent = CURRENCY_EXPONENTS[currency]
    return Decimal(minor).scaleb(-exponent).quantize(Decimal(1).scaleb(-exponent))


def format_amount(minor: int, currency: str) -> str:
    """``1000, "USD"`` → ``"10.00"``: the way the gateway writes amounts."""
    return str(to_major(minor, currency))
