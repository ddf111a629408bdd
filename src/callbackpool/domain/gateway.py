"""What the pool needs from a hosted-form gateway, whichever gateway it is."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from .errors import CallbackPoolError
from .model import LineItem

Params = Sequence[tuple[str, str]]


class MalformedReturn(CallbackPoolError):
    """The gateway return could not be read."""


@dataclass(frozen=True, kw_only=True)
class GatewayReturn:
    """A gateway return, parsed. ``amount`` is in minor units, None when the return has none."""

    pn_ref: str
    approved: bool
    result_code: str
    amount: int | None
    merchant_id: str | None = None
    order_id: str | None = None
    auth_code: str | None = None
    card_type: str | None = None
    last4: str | None = None


@dataclass(frozen=True, kw_only=True)
class CatalogueItem:
    code: str
    description: str
    price: int  # minor units


class Gateway(Protocol):
    """A hosted payment form: the fields the browser posts, and the return it sends back."""

    currency: str
    action_url: str  # where the browser posts the form

    def price_items(self, quantities: Mapping[str, int]) -> tuple[LineItem, ...]:
        """Line items for catalogue codes and quantities; InvalidPayment for unknown codes."""

    def items_for_amount(self, amount: int) -> tuple[LineItem, ...] | None:
        """Line items that charge exactly ``amount``, or None when the form cannot."""

    def form_fields(
        self, *, return_url: str, items: Sequence[LineItem], token: str | None = None
    ) -> dict[str, str]:
        """Every hidden input the browser posts to the gateway's form, the payment's ``token``
        in a custom field where one is configured (for the status query to name it)."""

    def parse_return(self, params: Params) -> GatewayReturn:
        """Read a return's parameters; MalformedReturn when they are not a return."""

    def verify(self, params: Params, parsed: GatewayReturn) -> str | None:
        """Why the return cannot be trusted, or None when it passes every configured check."""


@dataclass(frozen=True, kw_only=True)
class GatewayTransaction:
    """The gateway's own record of a transaction, as its status query answers it, with the
    payment's token from the form's custom field: what a return lacks to name its payment."""

    pn_ref: str
    result_code: str
    amount: int | None
    merchant_id: str | None = None
    payment_token: str | None = None


class StatusQueryFailed(CallbackPoolError):
    """The gateway's status query could not be asked or did not answer."""


class StatusQuery(Protocol):
    """A server-to-server status query, for gateways that offer one: it settles returns
    the callback path alone cannot attribute (ambiguous or unmatched ones)."""

    def transaction(self, pn_ref: str) -> GatewayTransaction | None:
        """The gateway's record of transaction ``pn_ref``; None when it has none. Raises
        StatusQueryFailed when it cannot be asked or read in time."""
