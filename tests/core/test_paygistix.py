"""The Paygistix adapter: form fields, reading returns, verifying them (PAYGISTIX.md)."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from callbackpool.domain.errors import InvalidPayment
from callbackpool.domain.gateway import MalformedReturn
from callbackpool.gateways.paygistix import HashRecipe

from ..support import make_gateway, paygistix_return

REAL_RETURN = (
    "hash=7ec0ebebcb8d5ab3ceaa6423e5a10be8&MerchantID=demoMerchantWEB&OrderID=55016041050"
    "&Amount=10.00&PNRef=804322218&Result=0&TxnType=SALE&Last4=0309&ExpDate=0329"
    "&CardType=VISA&AuthCode=01604D"
)


def test_the_real_return_from_the_logs_reads_back() -> None:
    from urllib.parse import parse_qsl

    parsed = make_gateway().parse_return(parse_qsl(REAL_RETURN))
    assert parsed.pn_ref == "804322218"
    assert parsed.approved
    assert parsed.amount == 1000
    assert (parsed.order_id, parsed.auth_code, parsed.last4, parsed.card_type) == (
        "55016041050",
        "01604D",
        "0309",
        "VISA",
    )


@pytest.mark.parametrize(
    ("text", "minor"), [("10.00", 1000), ("10", 1000), ("0.01", 1), ("1234.5", 123450)]
)
def test_amounts_are_read_strictly_as_decimals(text: str, minor: int) -> None:
    assert make_gateway().parse_return(paygistix_return(amount=text)).amount == minor


@pytest.mark.parametrize("text", ["10.001", "1e3", "-1.00", "+1.00", " 10.00", "10,00", "NaN", "."])
def test_anything_else_as_an_amount_is_malformed(text: str) -> None:
    with pytest.raises(MalformedReturn, match="Amount"):
        make_gateway().parse_return(paygistix_return(amount=text))


def test_a_missing_amount_is_not_malformed() -> None:
    assert make_gateway().parse_return(paygistix_return(amount=None)).amount is None
    assert make_gateway().parse_return(paygistix_return(amount="")).amount is None


@pytest.mark.parametrize("name", ["PNRef", "Result", "MerchantID"])
def test_required_parameters(name: str) -> None:
    params = [(k, v) for k, v in paygistix_return() if k != name]
    with pytest.raises(MalformedReturn, match=f"{name} is missing"):
        make_gateway().parse_return(params)


def test_a_repeated_parameter_is_malformed() -> None:
    with pytest.raises(MalformedReturn, match="Result given more than once"):
        make_gateway().parse_return([*paygistix_return(), ("Result", "0")])


@pytest.mark.parametrize("result", ["1", "12", "-1", "99"])
def test_only_result_zero_is_approved(result: str) -> None:
    assert not make_gateway().parse_return(paygistix_return(result=result)).approved


def test_japanese_yen_has_no_minor_unit() -> None:
    yen = make_gateway(currency="JPY", catalogue=())
    assert yen.parse_return(paygistix_return(amount="1500")).amount == 1500
    with pytest.raises(MalformedReturn):
        yen.parse_return(paygistix_return(amount="15.50"))


def test_form_fields_carry_the_whole_catalogue() -> None:
    gateway = make_gateway()
    items = gateway.price_items({"BAG": 2})
    fields = gateway.form_fields(return_url="https://shop.example/cb/handler-1", items=items)
    assert list(fields)[:5] == ["txnType", "merchantID", "formID", "hash", "ReturnURL"]
    assert fields["txnType"] == "FORM"
    assert fields["merchantID"] == "demoMerchantWEB"
    assert fields["ReturnURL"] == "https://shop.example/cb/handler-1"
    assert [fields[f"pxQty{i}"] for i in (1, 2, 3)] == ["0", "2", "0"]
    assert [fields[f"pxPrice{i}"] for i in (1, 2, 3)] == ["1.25", "10.00", "0.01"]
    assert not any(name.startswith("custom") for name in fields)


def test_unknown_item_codes_are_refused() -> None:
    with pytest.raises(InvalidPayment, match="unknown item code 'XYZ'"):
        make_gateway().price_items({"XYZ": 1})


def test_a_form_without_an_open_amount_item_cannot_take_a_bare_amount() -> None:
    gateway = make_gateway(catalogue=make_gateway().catalogue[:2])
    assert gateway.items_for_amount(1000) is None
    assert make_gateway(catalogue=()).items_for_amount(1000) == ()


def test_the_hash_recipe_signs_fields_in_order() -> None:
    recipe = HashRecipe(secret="s3cret", fields=("PNRef", "Amount"), algorithm="hmac-md5")
    values = {"PNRef": "1", "Amount": "10.00", "Other": "x"}
    expected = hmac.new(b"s3cret", b"1|10.00", "md5").hexdigest()
    assert recipe.sign(values) == expected
    assert recipe.verifies(values, expected.upper())
    assert not recipe.verifies(values, "0" * 32)
    assert not recipe.verifies({**values, "Amount": "11.00"}, expected)


def test_plain_digest_recipes_prefix_the_secret() -> None:
    recipe = HashRecipe(secret="k", fields=("A", "B"), algorithm="md5", separator="")
    assert recipe.sign({"A": "1", "B": "2"}) == hashlib.md5(b"k12").hexdigest()


def test_unknown_hash_algorithms_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown hash algorithm"):
        HashRecipe(secret="k", fields=("A",), algorithm="crc32")


def test_verification_checks_the_merchant_and_the_hash() -> None:
    recipe = HashRecipe(secret="k", fields=("PNRef", "Result"))
    gateway = make_gateway(return_hash=recipe)
    params = paygistix_return()
    parsed = gateway.parse_return(params)
    assert gateway.verify(params, parsed) == "hash does not verify"
    signed = [(k, recipe.sign(dict(params)) if k == "hash" else v) for k, v in params]
    assert gateway.verify(signed, gateway.parse_return(signed)) is None
    other = paygistix_return(merchant="someoneElse")
    assert make_gateway().verify(other, gateway.parse_return(other)) == "MerchantID does not match"
