"""The sandbox gateway: a stand-in for Paygistix's hosted form, so the whole flow runs on one
machine. It takes the form's post the way the gateway does, charges Σ ``pxPrice`` ×
``pxQty``, and answers with the gateway's 11 return parameters (never a custom field),
signed; ``TEST_CARDS`` choose the outcome, ``ReturnSwitches`` make it misbehave, and its
status query (``query``) answers with the custom fields. The web layer mounts its pages.
"""

from __future__ import annotations

import re
import secrets
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from ..domain.gateway import CatalogueItem
from ..domain.model import LineItem
from ..domain.money import format_amount
from .paygistix import HashRecipe, minor_amount

SANDBOX_FORM_PATH = "/sandbox/transaction.asp"
SANDBOX_QUERY_PATH = "/sandbox/query"
# The order the sandbox signs a return's fields in (configure the same in ``callbackHash``).
DEFAULT_HASH_FIELDS = (
    "MerchantID",
    "OrderID",
    "Amount",
    "PNRef",
    "Result",
    "TxnType",
    "Last4",
    "ExpDate",
    "CardType",
    "AuthCode",
)
# The 11 parameters of a return, in the order the real gateway sends them.
RETURN_FIELDS = ("hash", *DEFAULT_HASH_FIELDS)
MAX_DELAY_SECONDS = 600
_KEPT_TRANSACTIONS = 10_000
_ITEM_FIELD = re.compile(r"px(Code|Description|Price|Qty)([0-9]+)")
# The hosted form's own fields; any other the form posts is a custom field, kept (so many, so
# long at most) for the status query to answer, and never returned.
_FORM_FIELDS = frozenset({"txnType", "merchantID", "formID", "hash", "ReturnURL"})
_CUSTOM_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,39}")
MAX_CUSTOM_FIELDS = 10
MAX_CUSTOM_CHARS = 255
_EXPIRY = re.compile(r"(0[1-9]|1[0-2])[0-9]{2}")


class Outcome(StrEnum):
    APPROVED = "approved"
    DECLINED = "declined"
    ERROR = "error"


@dataclass(frozen=True, kw_only=True)
class SandboxCard:
    number: str
    card_type: str
    outcome: Outcome
    result: str


TEST_CARDS: tuple[SandboxCard, ...] = (
    SandboxCard(number="4111111111111111", card_type="VISA", outcome=Outcome.APPROVED, result="0"),
    SandboxCard(number="5555555555554444", card_type="MC", outcome=Outcome.APPROVED, result="0"),
    SandboxCard(number="378282246310005", card_type="AMEX", outcome=Outcome.APPROVED, result="0"),
    SandboxCard(number="6011111111111117", card_type="DISC", outcome=Outcome.APPROVED, result="0"),
    SandboxCard(number="4000000000000002", card_type="VISA", outcome=Outcome.DECLINED, result="12"),
    SandboxCard(number="4000000000000119", card_type="VISA", outcome=Outcome.ERROR, result="1000"),
)
_CARDS = {card.number: card for card in TEST_CARDS}


class ReturnMethod(StrEnum):
    GET = "GET"  # a 302 to ReturnURL with the parameters in the query string
    POST = "POST"  # a page whose form posts the parameters to ReturnURL by itself
    NEVER = "NEVER"  # the customer is never sent back


@dataclass(frozen=True, kw_only=True)
class ReturnSwitches:
    """How the sandbox sends the customer back: the documented misbehaviours."""

    method: ReturnMethod = ReturnMethod.GET
    twice: bool = False
    delay_seconds: int = 0

    @property
    def plain(self) -> bool:
        """A single immediate GET: the gateway's usual 302."""
        return self.method is ReturnMethod.GET and not self.twice and self.delay_seconds == 0


class SandboxRefusal(Exception):
    """The gateway would refuse this (the page shows ``message``)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True, kw_only=True)
class ChargedItem(LineItem):
    description: str


@dataclass(kw_only=True)
class Transaction:
    """One hosted-form session: the customer's visit to the card page."""

    id: str
    return_url: str
    amount: int
    items: tuple[ChargedItem, ...]
    amount_text: str
    custom: dict[str, str] = field(default_factory=dict)
    # Set once the card was taken: the return, sent again as it was if the form is resubmitted.
    answer: tuple[tuple[str, str], ...] | None = None
    switches: ReturnSwitches = field(default_factory=ReturnSwitches)


@dataclass(kw_only=True, eq=False, repr=False)
class SandboxGateway:
    """The sandbox's hosted form, as configured: the merchant, the form and its line items."""

    merchant_id: str
    form_id: str
    form_hash: str
    currency: str
    catalogue: Sequence[CatalogueItem]
    signer: HashRecipe

    def __post_init__(self) -> None:
        self.catalogue = tuple(self.catalogue)
        self._transactions: OrderedDict[str, Transaction] = OrderedDict()
        self._used_refs: set[str] = set()
        self._by_pn_ref: dict[str, str] = {}  # PNRef → transaction id
        self._lock = threading.Lock()

    # --- the hosted-form post ----------------------------------------------------------

    def open_transaction(self, posted: Sequence[tuple[str, str]]) -> Transaction:
        """Take the hosted-form post; SandboxRefusal where the gateway would refuse it."""
        values: dict[str, str] = {}
        for name, value in posted:
            if name in values:
                raise SandboxRefusal(f"Field {name} given more than once")
            values[name] = value
        if values.get("txnType", "").upper() != "FORM":
            raise SandboxRefusal("Invalid transaction type")
        if values.get("merchantID") != self.merchant_id:
            raise SandboxRefusal("Invalid merchant")
        if values.get("formID") != self.form_id:
            raise SandboxRefusal("Invalid form")
        # Compared as bytes: a text of non-ASCII characters is a wrong hash, not a TypeError.
        if not secrets.compare_digest(values.get("hash", "").encode(), self.form_hash.encode()):
            raise SandboxRefusal("Invalid hash")
        items = self._charged_items(values)
        amount = sum(item.total for item in items)
        if amount <= 0:
            raise SandboxRefusal("Invalid amount: nothing to charge")
        return_url = values.get("ReturnURL", "")
        if not re.fullmatch(r"https?://[^\s]+", return_url):
            raise SandboxRefusal("Invalid ReturnURL")
        transaction = Transaction(
            id=secrets.token_urlsafe(16),
            return_url=return_url,
            amount=amount,
            items=items,
            amount_text=format_amount(amount, self.currency),
            custom=_custom_fields(values),
        )
        with self._lock:
            self._transactions[transaction.id] = transaction
            while len(self._transactions) > _KEPT_TRANSACTIONS:
                _, dropped = self._transactions.popitem(last=False)
                if dropped.answer is not None:
                    self._by_pn_ref.pop(dict(dropped.answer)["PNRef"], None)
        return transaction

    def _charged_items(self, values: Mapping[str, str]) -> tuple[ChargedItem, ...]:
        # The form hash is tied to the form's field structure: the line-item fields must be
        # exactly the configured ones (codes, descriptions, prices); only quantities vary.
        posted_indexes = {int(m[2]) for name in values if (m := _ITEM_FIELD.fullmatch(name))}
        if posted_indexes != set(range(1, len(self.catalogue) + 1)):
            raise SandboxRefusal("Invalid hash")
        items = []
        for index, item in enumerate(self.catalogue, start=1):
            price = minor_amount(values.get(f"pxPrice{index}", ""), self.currency)
            if (
                values.get(f"pxCode{index}") != item.code
                or values.get(f"pxDescription{index}") != item.description
                or price != item.price
            ):
                raise SandboxRefusal("Invalid hash")
            quantity_text = values.get(f"pxQty{index}", "")
            if not re.fullmatch(r"[0-9]{1,9}", quantity_text):
                raise SandboxRefusal(f"Invalid quantity for {item.code}")
            quantity = int(quantity_text)
            if quantity:
                items.append(
                    ChargedItem(
                        code=item.code,
                        description=item.description,
                        quantity=quantity,
                        unit_price=item.price,
                    )
                )
        return tuple(items)

    def transaction(self, transaction_id: str) -> Transaction | None:
        with self._lock:
            return self._transactions.get(transaction_id)

    # --- the card page -----------------------------------------------------------------

    def pay(
        self,
        transaction_id: str,
        *,
        card_number: str,
        expiry: str,
        switches: ReturnSwitches | None = None,
    ) -> Transaction:
        """Charge the card: the transaction's return parameters, signed; the same again
        (same ``PNRef``) if paid again. SandboxRefusal for an unknown transaction or card."""
        with self._lock:
            transaction = self._transactions.get(transaction_id)
            if transaction is None:
                raise SandboxRefusal("Unknown or expired transaction")
            if switches is not None:
                transaction.switches = switches
            if transaction.answer is not None:
                return transaction
        number = re.sub(r"[\s-]", "", card_number)
        card = _CARDS.get(number)
        if card is None:
            raise SandboxRefusal("Use one of the sandbox's test cards")
        expiry = re.sub(r"[\s/]", "", expiry)
        if not _EXPIRY.fullmatch(expiry):
            raise SandboxRefusal("Expiry must be MM/YY")
        values = {
            "MerchantID": self.merchant_id,
            "OrderID": self._unique_number(11),
            "Amount": transaction.amount_text,
            "PNRef": self._unique_number(9),
            "Result": card.result,
            "TxnType": "SALE",
            "Last4": number[-4:],
            "ExpDate": expiry,
            "CardType": card.card_type,
            "AuthCode": _auth_code() if card.outcome is Outcome.APPROVED else "",
        }
        values["hash"] = self.signer.sign(values)
        with self._lock:
            if transaction.answer is None:
                transaction.answer = tuple((name, values[name]) for name in RETURN_FIELDS)
                self._by_pn_ref[values["PNRef"]] = transaction.id
        return transaction

    # --- the status query --------------------------------------------------------------

    def query(self, pn_ref: str) -> dict[str, object] | None:
        """The transaction ``pn_ref`` names, as the status query answers it: the return's
        parameters (not its ``hash``) and the custom fields the form posted; None if none."""
        with self._lock:
            transaction = self._transactions.get(self._by_pn_ref.get(pn_ref, ""))
            if transaction is None or transaction.answer is None:
                return None
            document: dict[str, object] = {k: v for k, v in transaction.answer if k != "hash"}
            document["custom"] = dict(transaction.custom)
        return document

    def _unique_number(self, digits: int) -> str:
        """A number of ``digits`` digits never handed out before by this sandbox."""
        while True:
            number = str(10 ** (digits - 1) + secrets.randbelow(9 * 10 ** (digits - 1)))
            with self._lock:
                if number not in self._used_refs:
                    self._used_refs.add(number)
                    return number


def _custom_fields(values: Mapping[str, str]) -> dict[str, str]:
    custom = {
        name: value
        for name, value in values.items()
        if name not in _FORM_FIELDS
        and not _ITEM_FIELD.fullmatch(name)
        and _CUSTOM_NAME.fullmatch(name)
        and len(value) <= MAX_CUSTOM_CHARS
    }
    return dict(list(custom.items())[:MAX_CUSTOM_FIELDS])


def parse_switches(method: str, twice: str, delay: str) -> ReturnSwitches:
    """The switches as the card page posts them; SandboxRefusal for nonsense."""
    try:
        chosen = ReturnMethod((method or "GET").upper())
    except ValueError:
        raise SandboxRefusal("Unknown return method") from None
    delay = delay.strip() or "0"
    if not delay.isdigit() or int(delay) > MAX_DELAY_SECONDS:
        raise SandboxRefusal(f"Delay must be 0 to {MAX_DELAY_SECONDS} seconds")
    return ReturnSwitches(
        method=chosen, twice=twice.lower() in ("1", "on", "true", "yes"), delay_seconds=int(delay)
    )


def _auth_code() -> str:
    return f"{secrets.randbelow(10**5):05d}{secrets.choice('ABCDEFGHJKLMNPQRSTUVWXYZ')}"
