"""The sandbox gateway's logic: the gateway's checks, the charge, the signed return."""

from __future__ import annotations

from typing import Any

import pytest

from callbackpool.gateways.paygistix import HashRecipe
from callbackpool.gateways.sandbox import (
    DEFAULT_HASH_FIELDS,
    RETURN_FIELDS,
    ReturnMethod,
    ReturnSwitches,
    SandboxGateway,
    SandboxRefusal,
    parse_switches,
)

from ..support import CATALOGUE, make_gateway

SIGNER = HashRecipe(secret="s3cret", fields=DEFAULT_HASH_FIELDS, algorithm="hmac-md5")
RETURN_URL = "https://shop.example/api/v1/payments/callback/handler-3"


@pytest.fixture
def sandbox() -> SandboxGateway:
    return SandboxGateway(
        merchant_id="demoMerchantWEB",
        form_id="55810301384",
        form_hash="c701523a33721cdbe999f7a4406a0a98",
        currency="USD",
        catalogue=CATALOGUE,
        signer=SIGNER,
    )


def hosted_form(**changes: Any) -> list[tuple[str, str]]:
    """What the checkout posts: the Paygistix adapter's own form fields."""
    items = make_gateway().price_items({"WDF": 3, "BAG": 1})
    fields = make_gateway().form_fields(return_url=RETURN_URL, items=items)
    fields["custom1"] = "a-token-the-gateway-must-not-return"
    for name, value in changes.items():
        if value is None:
            fields.pop(name)
        else:
            fields[name] = value
    return list(fields.items())


def test_the_hosted_form_is_charged_the_sum_of_its_lines(sandbox: SandboxGateway) -> None:
    transaction = sandbox.open_transaction(hosted_form())
    assert transaction.amount == 3 * 125 + 1000
    assert transaction.amount_text == "13.75"
    assert [(i.code, i.quantity) for i in transaction.items] == [("WDF", 3), ("BAG", 1)]
    assert transaction.return_url == RETURN_URL
    assert sandbox.transaction(transaction.id) is transaction


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"merchantID": "someoneElse"}, "Invalid merchant"),
        ({"formID": "1"}, "Invalid form"),
        ({"hash": "0" * 32}, "Invalid hash"),
        ({"hash": None}, "Invalid hash"),
        ({"pxPrice1": "0.01"}, "Invalid hash"),
        ({"pxCode2": "GIFT"}, "Invalid hash"),
        ({"pxDescription1": "cheaper"}, "Invalid hash"),
        (
            {"pxQty3": None, "pxCode3": None, "pxPrice3": None, "pxDescription3": None},
            "Invalid hash",
        ),
        ({"pxCode4": "X", "pxPrice4": "1.00", "pxQty4": "1", "pxDescription4": ""}, "Invalid hash"),
        ({"pxQty1": "-1"}, "Invalid quantity for WDF"),
        ({"pxQty1": "0", "pxQty2": "0"}, "Invalid amount: nothing to charge"),
        ({"ReturnURL": "javascript:alert(1)"}, "Invalid ReturnURL"),
        ({"txnType": "SALE"}, "Invalid transaction type"),
    ],
)
def test_the_gateways_refusals(
    sandbox: SandboxGateway, changes: dict[str, str | None], message: str
) -> None:
    with pytest.raises(SandboxRefusal) as refusal:
        sandbox.open_transaction(hosted_form(**changes))
    assert refusal.value.message == message


def test_an_approved_card_returns_the_eleven_parameters_signed(sandbox: SandboxGateway) -> None:
    transaction = sandbox.open_transaction(hosted_form())
    paid = sandbox.pay(transaction.id, card_number="4111 1111 1111 1111", expiry="03/29")
    assert paid.answer is not None
    answer = dict(paid.answer)
    assert tuple(name for name, _ in paid.answer) == RETURN_FIELDS
    assert len(RETURN_FIELDS) == 11
    assert "custom1" not in answer
    assert answer["MerchantID"] == "demoMerchantWEB"
    assert (answer["Amount"], answer["Result"], answer["TxnType"]) == ("13.75", "0", "SALE")
    assert (answer["Last4"], answer["ExpDate"], answer["CardType"]) == ("1111", "0329", "VISA")
    assert len(answer["PNRef"]) == 9
    assert answer["PNRef"].isdigit()
    assert len(answer["OrderID"]) == 11
    assert answer["OrderID"].isdigit()
    assert len(answer["AuthCode"]) == 6
    assert len(answer["hash"]) == 32
    assert SIGNER.verifies(answer, answer["hash"])
    assert not HashRecipe(secret="other", fields=DEFAULT_HASH_FIELDS).verifies(
        answer, answer["hash"]
    )
    # The Paygistix adapter reads it as a valid return.
    parsed = make_gateway(return_hash=SIGNER).parse_return(paid.answer)
    assert parsed.approved
    assert parsed.amount == 1375
    assert make_gateway(return_hash=SIGNER).verify(paid.answer, parsed) is None


@pytest.mark.parametrize(
    ("card", "result", "card_type"),
    [
        ("4000000000000002", "12", "VISA"),
        ("4000-0000-0000-0119", "1000", "VISA"),
        ("5555555555554444", "0", "MC"),
        ("378282246310005", "0", "AMEX"),
        ("6011111111111117", "0", "DISC"),
    ],
)
def test_test_cards_choose_the_outcome(
    sandbox: SandboxGateway, card: str, result: str, card_type: str
) -> None:
    paid = sandbox.pay(sandbox.open_transaction(hosted_form()).id, card_number=card, expiry="1230")
    answer = dict(paid.answer or ())
    assert (answer["Result"], answer["CardType"]) == (result, card_type)
    assert bool(answer["AuthCode"]) == (result == "0")
    assert answer["Amount"] == "13.75"  # a declined return carries the amount too


def test_unknown_cards_and_bad_expiries_are_refused(sandbox: SandboxGateway) -> None:
    transaction = sandbox.open_transaction(hosted_form())
    with pytest.raises(SandboxRefusal, match="test cards"):
        sandbox.pay(transaction.id, card_number="4242424242424242", expiry="1230")
    with pytest.raises(SandboxRefusal, match="MM/YY"):
        sandbox.pay(transaction.id, card_number="4111111111111111", expiry="13/30")
    with pytest.raises(SandboxRefusal, match="Unknown"):
        sandbox.pay("nope", card_number="4111111111111111", expiry="1230")
    assert transaction.answer is None


def test_every_transaction_gets_its_own_references(sandbox: SandboxGateway) -> None:
    answers = [
        dict(
            sandbox.pay(
                sandbox.open_transaction(hosted_form()).id,
                card_number="4111111111111111",
                expiry="1230",
            ).answer
            or ()
        )
        for _ in range(300)
    ]
    assert len({a["PNRef"] for a in answers}) == 300
    assert len({a["OrderID"] for a in answers}) == 300


def test_paying_again_sends_the_same_return(sandbox: SandboxGateway) -> None:
    transaction = sandbox.open_transaction(hosted_form())
    first = sandbox.pay(transaction.id, card_number="4111111111111111", expiry="1230").answer
    again = sandbox.pay(transaction.id, card_number="4000000000000002", expiry="1230").answer
    assert again == first


def test_switches() -> None:
    assert parse_switches("", "", "").plain
    assert parse_switches("post", "on", "5") == ReturnSwitches(
        method=ReturnMethod.POST, twice=True, delay_seconds=5
    )
    assert parse_switches("NEVER", "", "0").method is ReturnMethod.NEVER
    assert not parse_switches("GET", "1", "0").plain
    for method, delay in (("PUT", "0"), ("GET", "-1"), ("GET", "601"), ("GET", "x")):
        with pytest.raises(SandboxRefusal):
            parse_switches(method, "", delay)


def test_the_status_query_answers_the_transaction_with_the_custom_fields(
    sandbox: SandboxGateway,
) -> None:
    transaction = sandbox.open_transaction(hosted_form())
    assert transaction.custom == {"custom1": "a-token-the-gateway-must-not-return"}
    paid = sandbox.pay(transaction.id, card_number="4111 1111 1111 1111", expiry="12/30")
    assert paid.answer is not None
    returned = dict(paid.answer)
    assert "custom1" not in returned  # the return never carries it …
    document = sandbox.query(returned["PNRef"])
    assert document is not None
    # … the status query does: every parameter of the return but its hash, and the fields.
    assert document == {
        **{k: v for k, v in returned.items() if k != "hash"},
        "custom": {"custom1": "a-token-the-gateway-must-not-return"},
    }
    assert sandbox.query("000000000") is None
    assert sandbox.query("") is None


def test_an_unpaid_transaction_is_not_known_to_the_status_query(
    sandbox: SandboxGateway,
) -> None:
    sandbox.open_transaction(hosted_form())
    assert sandbox.query("") is None


def test_custom_fields_are_kept_within_bounds(sandbox: SandboxGateway) -> None:
    extra = {f"custom{i}": str(i) for i in range(2, 30)}
    kept = sandbox.open_transaction(
        hosted_form(**extra, long="x" * 256, **{"bad name": "1", "9lives": "1"})
    ).custom
    assert len(kept) == 10
    assert all(name.startswith("custom") for name in kept)
