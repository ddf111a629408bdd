"""The sandbox gateway's pages, and the whole flow through them with the return's hash
verified end to end."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest

from callbackpool.domain.model import CallbackOutcome

from .conftest import BASE_URL, ClientFactory, sandbox_keys, services_of

pytestmark = pytest.mark.anyio

API = "/api/v1/payments"
APPROVE, DECLINE, ERROR = "4111111111111111", "4000000000000002", "4000000000000119"


class ReturnForm(HTMLParser):
    """The sandbox's return page: its form and hidden inputs, as a browser sees them."""

    def __init__(self) -> None:
        super().__init__()
        self.form: dict[str, str | None] = {}
        self.fields: list[tuple[str, str]] = []
        self.iframes = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "form" and values.get("id") == "gateway-return":
            self.form = values
        elif tag == "input" and values.get("type") == "hidden":
            self.fields.append((values.get("name") or "", values.get("value") or ""))
        elif tag == "iframe":
            self.iframes += 1


def return_form(html: str) -> ReturnForm:
    parser = ReturnForm()
    parser.feed(html)
    return parser


async def start(client: httpx.AsyncClient, amount: int = 1375) -> tuple[str, str]:
    """Create a token, post its fields to the sandbox: the token and the card page's URL."""
    created = (
        await client.post(f"{API}/create-token", json={"paymentData": {"amount": amount}})
    ).json()
    form = created["formConfig"]
    assert form["formActionUrl"] == f"{BASE_URL}/sandbox/transaction.asp"
    response = await client.post(form["formActionUrl"], data=form["fields"])
    assert response.status_code == 303
    return created["token"], response.headers["location"]


async def pay(
    client: httpx.AsyncClient, card_page: str, card: str = APPROVE, **switches: str
) -> httpx.Response:
    return await client.post(card_page, data={"card_number": card, "expiry": "12/30", **switches})


async def status_of(client: httpx.AsyncClient, token: str) -> dict[str, Any]:
    data: dict[str, Any] = (await client.get(f"{API}/check-status/{token}")).json()
    return data


async def test_the_card_page_shows_the_amount_and_the_test_cards(
    make_client: ClientFactory,
) -> None:
    async with make_client(**sandbox_keys()) as client:
        created = (
            await client.post(
                f"{API}/create-token",
                json={
                    "paymentData": {
                        "items": [{"code": "WDF", "quantity": 3}, {"code": "BAG", "quantity": 1}]
                    }
                },
            )
        ).json()
        form = created["formConfig"]
        page = await client.post(form["formActionUrl"], data=form["fields"], follow_redirects=True)
        assert page.status_code == 200
        assert "Pay 13.75 USD" in page.text
        assert re.search(r'data-testid="amount">13.75<', page.text)
        for card in (APPROVE, DECLINE, ERROR):
            assert card in page.text
        assert "<script" not in page.text


async def test_approved_in_the_sandbox_completes_the_payment_with_a_verified_hash(
    make_client: ClientFactory,
) -> None:
    async with make_client(**sandbox_keys()) as client:
        token, card_page = await start(client)
        response = await pay(client, card_page)
        assert response.status_code == 302
        location = response.headers["location"]
        assert location.startswith(BASE_URL + "/api/v1/payments/callback/handler-")
        params = parse_qsl(urlsplit(location).query, keep_blank_values=True)
        assert [name for name, _ in params] == [
            "hash",
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
        ]
        back = await client.get(location)
        assert back.status_code == 303
        assert back.headers["location"].startswith("/payment-success?ref=CB-")
        assert token not in back.headers["location"]
        status = await status_of(client, token)
        assert status["status"] == "completed"
        assert status["transactionId"] == dict(params)["PNRef"]


@pytest.mark.parametrize(("card", "result"), [(DECLINE, "12"), (ERROR, "1000")])
async def test_declined_and_error_cards_fail_the_payment(
    make_client: ClientFactory, card: str, result: str
) -> None:
    async with make_client(**sandbox_keys()) as client:
        token, card_page = await start(client)
        back = await client.get((await pay(client, card_page, card)).headers["location"])
        reason = "declined" if result == "12" else "error"
        assert back.headers["location"].startswith(f"/payment-error?reason={reason}")
        status = await status_of(client, token)
        assert status["status"] == "failed"
        assert result in status["errorMessage"]


async def test_a_return_signed_with_another_secret_is_rejected(
    make_client: ClientFactory,
) -> None:
    async with make_client(**sandbox_keys(secret="sandbox", verify_with="production")) as client:
        token, card_page = await start(client)
        back = await client.get((await pay(client, card_page)).headers["location"])
        assert back.headers["location"].startswith("/payment-error?")
        assert (await status_of(client, token))["status"] == "pending"
        with services_of(client).store.read() as tx:
            [record] = tx.callbacks()
        assert (record.outcome, record.detail) == (CallbackOutcome.REJECTED, "hash does not verify")


async def test_return_by_post_is_an_auto_posted_form(make_client: ClientFactory) -> None:
    async with make_client(**sandbox_keys()) as client:
        token, card_page = await start(client)
        page = await pay(client, card_page, return_method="POST")
        assert page.status_code == 200
        found = return_form(page.text)
        assert found.form["method"] == "POST"
        assert found.form["data-twice"] == "false"
        assert found.form["data-delay"] == "0"
        assert [name for name, _ in found.fields][:2] == ["hash", "MerchantID"]
        assert len(found.fields) == 11
        assert '<script src="' in page.text
        assert "sandbox-return.js" in page.text
        action = found.form["action"] or ""
        back = await client.post(action, data=dict(found.fields))
        assert back.status_code == 303
        assert (await status_of(client, token))["status"] == "completed"


async def test_twice_late_and_never(make_client: ClientFactory) -> None:
    async with make_client(**sandbox_keys()) as client:
        _, card_page = await start(client)
        twice = return_form((await pay(client, card_page, return_twice="1", delay="7")).text)
        assert (twice.form["method"], twice.form["data-twice"], twice.form["data-delay"]) == (
            "GET",
            "true",
            "7",
        )
        assert twice.iframes == 1
        _, card_page = await start(client, 2000)
        never = await pay(client, card_page, return_method="NEVER")
        assert never.status_code == 200
        assert 'data-testid="no-return"' in never.text
        assert "/api/v1/payments/callback" not in never.text


async def test_refusals_and_unknown_transactions(make_client: ClientFactory) -> None:
    async with make_client(**sandbox_keys()) as client:
        created = (await client.post(f"{API}/create-token", json={"amount": 1000})).json()
        fields = {**created["formConfig"]["fields"], "hash": "0" * 32}
        refused = await client.post("/sandbox/transaction.asp", data=fields)
        assert refused.status_code == 400
        assert re.search(r'data-testid="refusal">Invalid hash<', refused.text)
        assert (await client.get("/sandbox/pay/nope")).status_code == 404
        _, card_page = await start(client, 500)
        bad_card = await pay(client, card_page, card="1234")
        assert bad_card.status_code == 400
        assert "test cards" in bad_card.text
        bad_switch = await pay(client, card_page, delay="9999")
        assert bad_switch.status_code == 400


async def test_the_sandbox_status_query_needs_its_key_and_answers_the_custom_fields(
    make_client: ClientFactory,
) -> None:
    keys = {**sandbox_keys(), "statusQuery": {"url": f"{BASE_URL}/sandbox/query"}}
    async with make_client(**keys) as client:
        token, card_page = await start(client)
        location = (await pay(client, card_page)).headers["location"]
        pn_ref = dict(parse_qsl(urlsplit(location).query))["PNRef"]
        query = "/sandbox/query"
        for authorization in ({}, {"Authorization": "Bearer wrong"}):
            refused = await client.get(query, params={"PNRef": pn_ref}, headers=authorization)
            assert refused.status_code == 401
        key = {"Authorization": f"Bearer {sandbox_keys()['sandbox']['secret']}"}
        unknown = await client.get(query, params={"PNRef": "1"}, headers=key)
        assert (unknown.status_code, unknown.json()) == (404, {"error": "unknown transaction"})
        found = await client.get(query, params={"PNRef": pn_ref}, headers=key)
        assert found.status_code == 200
        assert found.json()["custom"] == {"custom1": token}
        assert found.json()["Amount"] == "13.75"
        assert "hash" not in found.json()
