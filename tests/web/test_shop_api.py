"""The shop's server's API and the hosted payment page, through the ASGI app: a payment
created with a merchant key, paid on /pay/{token} through the sandbox, read back by id."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from .conftest import ADMIN_TOKEN, BASE_URL, ClientFactory, sandbox_keys, services_of

# The sandbox's error code as a word: a transaction number may hold the digits.
RESULT_CODE = re.compile(r"\b1000\b")

pytestmark = pytest.mark.anyio

API = "/api/v1/payments"
MERCHANT_KEY = "merchant-key-0123456789abcdef"
SHOP = "https://shop.example"
APPROVE, DECLINE, ERROR = "4111111111111111", "4000000000000002", "4000000000000119"
SAME_ORIGIN = {"Origin": BASE_URL}


def shop_keys(**more: Any) -> dict[str, Any]:
    return {
        **sandbox_keys(),
        "merchantApiKeys": [MERCHANT_KEY],
        "shopOrigins": [SHOP],
        "shopName": "Laundry Corner",
        **more,
    }


def merchant(key: str = MERCHANT_KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def order(**changes: Any) -> dict[str, Any]:
    return {
        "amount": 1375,
        "orderReference": "1001",
        "metadata": {"cart": "c-77"},
        "successUrl": SHOP + "/thanks?payment={PAYMENT_ID}&order={ORDER_REFERENCE}",
        "cancelUrl": SHOP + "/cart",
        **changes,
    }


class HiddenForm(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.action = ""
        self.fields: dict[str, str] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "form" and values.get("id") == "to-gateway":
            self.action = values.get("action") or ""
        elif tag == "input" and values.get("type") == "hidden":
            self.fields[values.get("name") or ""] = values.get("value") or ""


async def create(client: httpx.AsyncClient, **changes: Any) -> dict[str, Any]:
    response = await client.post(API, json=order(**changes), headers=merchant())
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def attempt(client: httpx.AsyncClient, token: str, card: str) -> httpx.Response:
    """Pay on the hosted page, then the card on the sandbox's: the gateway's return."""
    handed_over = await client.post(f"/pay/{token}", headers=SAME_ORIGIN)
    assert handed_over.status_code == 200, handed_over.text
    form = HiddenForm()
    form.feed(handed_over.text)
    assert form.action == f"{BASE_URL}/sandbox/transaction.asp"
    card_page = (await client.post(form.action, data=form.fields)).headers["location"]
    sent_back = await client.post(card_page, data={"card_number": card, "expiry": "12/30"})
    returned = await client.get(sent_back.headers["location"])
    assert returned.status_code == 303
    return returned


async def test_a_declined_card_then_an_approved_one_complete_the_payment_once(
    make_client: ClientFactory,
) -> None:
    async with make_client(**shop_keys()) as client:
        created = await create(client)
        assert created["status"] == "open"
        assert created["id"].startswith("pay_")
        assert created["checkoutUrl"] == f"{BASE_URL}/pay/{created['token']}"
        assert (created["orderReference"], created["metadata"]) == ("1001", {"cart": "c-77"})
        token = created["token"]
        page = await client.get(f"/pay/{token}")
        assert "Laundry Corner" in page.text
        assert "13.75 USD" in page.text
        assert "callback" not in page.text.lower()

        declined = await attempt(client, token, DECLINE)
        assert declined.headers["location"] == f"{BASE_URL}/pay/{token}"
        page = await client.get(f"/pay/{token}")
        assert "Your card was declined" in page.text
        assert "2 attempts left" in page.text

        approved = await attempt(client, token, APPROVE)
        location = approved.headers["location"]
        assert location == f"{SHOP}/thanks?payment={created['id']}&order=1001"

        read = (await client.get(f"{API}/{created['id']}", headers=merchant())).json()
        assert read["status"] == "completed"
        assert [a["outcome"] for a in read["attempts"]] == ["declined", "approved"]
        assert read["attempts"][1]["pnRef"]
        assert read["attempts"][1]["last4"] == "1111"
        assert "token" not in read
        page = await client.get(f"/pay/{token}")
        assert 'id="pay" type="button" disabled' in page.text
        again = await client.post(f"/pay/{token}", headers=SAME_ORIGIN)
        assert again.status_code == 303  # no second attempt on a paid payment


async def test_an_error_card_says_it_could_not_be_processed_and_the_last_attempt_fails(
    make_client: ClientFactory,
) -> None:
    async with make_client(**shop_keys(maxAttempts=2)) as client:
        created = await create(client)
        token = created["token"]
        await attempt(client, token, ERROR)
        page = await client.get(f"/pay/{token}")
        assert "could not be processed" in page.text
        assert "declined" not in page.text
        assert not RESULT_CODE.search(page.text)
        await attempt(client, token, DECLINE)
        read = (await client.get(f"{API}/{created['id']}", headers=merchant())).json()
        assert read["status"] == "failed"
        assert [a["outcome"] for a in read["attempts"]] == ["error", "declined"]
        page = await client.get(f"/pay/{token}")
        assert 'id="pay"' not in page.text
        assert f'href="{SHOP}/cart"' in page.text


async def test_an_open_payment_holds_no_slot_and_pay_leases_one(
    make_client: ClientFactory,
) -> None:
    async with make_client(**shop_keys()) as client:
        pool = services_of(client).pool
        created = await create(client)
        assert [s.lease for s in pool.status().slots if s.lease] == []
        await client.post(f"/pay/{created['token']}", headers=SAME_ORIGIN)
        assert len([s.lease for s in pool.status().slots if s.lease]) == 1
        read = (await client.get(f"{API}/{created['id']}", headers=merchant())).json()
        assert read["status"] == "pending"
        assert [a["outcome"] for a in read["attempts"]] == ["in_progress"]


async def test_the_same_idempotency_key_answers_the_same_payment(
    make_client: ClientFactory,
) -> None:
    async with make_client(**shop_keys()) as client:
        headers = {**merchant(), "Idempotency-Key": "order-1001-try-1"}
        first = await client.post(API, json=order(), headers=headers)
        again = await client.post(API, json=order(), headers=headers)
        assert (first.status_code, again.status_code) == (201, 201)
        assert again.json() == first.json()
        assert again.headers["idempotent-replayed"] == "true"
        other = await client.post(API, json=order(amount=999), headers=headers)
        assert other.status_code == 409
        listed = (await client.get(API, headers=merchant())).json()
        assert [p["id"] for p in listed["data"]] == [first.json()["id"]]


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"successUrl": "https://evil.example/thanks"}, "successUrl"),
        ({"cancelUrl": "http://shop.example/cart"}, "cancelUrl"),  # http off loopback
        ({"metadata": {f"k{i}": "v" for i in range(21)}}, "metadata"),
        ({"metadata": {"big": "x" * 5000}}, "metadata"),
        ({"metadata": {"n": 1}}, "metadata.n"),
        ({"orderReference": ""}, "orderReference"),
        ({"amount": 10**15}, "amount"),
    ],
)
async def test_a_bad_request_is_refused_naming_the_field_and_writes_nothing(
    make_client: ClientFactory, changes: dict[str, Any], field: str
) -> None:
    async with make_client(**shop_keys()) as client:
        response = await client.post(API, json=order(**changes), headers=merchant())
        assert response.status_code == 422, response.text
        assert field in response.json()["errors"]
        assert services_of(client).pool.payment_counts()["open"] == 0


async def test_keys_are_not_interchangeable(make_client: ClientFactory) -> None:
    async with make_client(**shop_keys()) as client:
        as_admin = await client.post(API, json=order(), headers=merchant(ADMIN_TOKEN))
        assert as_admin.status_code == 401
        nobody = await client.post(API, json=order())
        assert nobody.status_code == 401
        as_merchant = await client.get("/api/v1/admin/reviews", headers=merchant())
        assert as_merchant.status_code == 401
        assert services_of(client).pool.payment_counts()["open"] == 0


async def test_payments_are_listed_newest_first_by_cursor_and_cancelled(
    make_client: ClientFactory,
) -> None:
    async with make_client(**shop_keys()) as client:
        ids = [(await create(client, orderReference=f"o{i}"))["id"] for i in range(5)]
        first = (await client.get(API, params={"limit": 3}, headers=merchant())).json()
        assert [p["id"] for p in first["data"]] == ids[::-1][:3]
        rest = (
            await client.get(
                API, params={"limit": 3, "after": first["nextCursor"]}, headers=merchant()
            )
        ).json()
        assert [p["id"] for p in rest["data"]] == ids[::-1][3:]
        assert rest["nextCursor"] is None
        one = (await client.get(API, params={"orderReference": "o2"}, headers=merchant())).json()
        assert [p["id"] for p in one["data"]] == [ids[2]]
        cancelled = await client.post(f"{API}/{ids[0]}/cancel", headers=merchant())
        assert cancelled.json()["status"] == "cancelled"
        twice = await client.post(f"{API}/{ids[0]}/cancel", headers=merchant())
        assert twice.status_code == 409
        missing = await client.get(f"{API}/pay_0nothing", headers=merchant())
        assert missing.status_code == 404


async def test_giving_up_on_the_hosted_page_goes_back_to_the_cancel_url(
    make_client: ClientFactory,
) -> None:
    async with make_client(**shop_keys()) as client:
        created = await create(client)
        back = await client.post(f"/pay/{created['token']}/cancel", headers=SAME_ORIGIN)
        assert back.status_code == 303
        assert back.headers["location"] == f"{SHOP}/cart"
        read = (await client.get(f"{API}/{created['id']}", headers=merchant())).json()
        assert read["status"] == "cancelled"
        assert urlsplit(back.headers["location"]).netloc == "shop.example"


async def test_a_full_pool_puts_the_customer_in_line_on_a_page_that_polls(
    make_client: ClientFactory,
) -> None:
    async with make_client(**shop_keys()) as client:
        pool = services_of(client).pool
        others = [pool.create_payment(amount=500).payment.token for _ in range(10)]
        created = await create(client)
        token = created["token"]
        in_line = await client.post(f"/pay/{token}", headers=SAME_ORIGIN)
        assert in_line.status_code == 202
        assert 'data-testid="position">1<' in in_line.text
        poll = re.search(r'url=(/pay/[^"]+)"', in_line.text)
        assert poll is not None
        assert (await client.get(poll.group(1))).status_code == 202
        pool.cancel_payment(others[0])
        turn = await client.get(poll.group(1))
        form = HiddenForm()
        form.feed(turn.text)
        assert form.action == f"{BASE_URL}/sandbox/transaction.asp"
        read = (await client.get(f"{API}/{created['id']}", headers=merchant())).json()
        assert read["status"] == "pending"
