"""End to end against a real ``callbackpool serve``: the customer's journey through the
sandbox gateway and back, over real HTTP."""

from __future__ import annotations

from html.parser import HTMLParser
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from .conftest import Server

API = "/api/v1/payments"
APPROVE, DECLINE = "4111 1111 1111 1111", "4000 0000 0000 0002"

pytestmark = pytest.mark.slow


class ReturnForm(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.action = ""
        self.method = ""
        self.fields: list[tuple[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "form" and values.get("id") == "gateway-return":
            self.action, self.method = values["action"] or "", values["method"] or ""
        elif tag == "input" and values.get("type") == "hidden":
            self.fields.append((values["name"] or "", values["value"] or ""))


def checkout(client: httpx.Client, body: dict[str, Any]) -> tuple[str, httpx.Response]:
    """Create a token and post its fields where the form says: the token and the card page."""
    created = client.post(f"{API}/create-token", json=body)
    assert created.status_code == 201, created.text
    form = created.json()["formConfig"]
    assert form["formActionUrl"] == str(client.base_url.join("/sandbox/transaction.asp"))
    card_page = client.post(form["formActionUrl"], data=form["fields"], follow_redirects=True)
    assert card_page.status_code == 200
    token: str = created.json()["token"]
    return token, card_page


def pay(
    client: httpx.Client, card_page: httpx.Response, card: str, **switches: str
) -> httpx.Response:
    return client.post(
        str(card_page.url), data={"card_number": card, "expiry": "03/29", **switches}
    )


def without_clock(stats: dict[str, Any]) -> dict[str, Any]:
    """Pool statistics without the figures that change with time alone."""
    moving = ("at", "secondsSinceLastReturn")
    return {
        key: (
            [{k: v for k, v in h.items() if k not in moving} for h in value]
            if key == "handlers"
            else value
        )
        for key, value in stats.items()
        if key not in moving
    }


def status_of(client: httpx.Client, token: str) -> dict[str, Any]:
    data: dict[str, Any] = client.get(f"{API}/check-status/{token}").json()
    return data


def test_an_approved_payment_completes(server: Server) -> None:
    with server.client() as client:
        body = {
            "paymentData": {
                "items": [{"code": "WDF", "quantity": 4}, {"code": "DEL", "quantity": 1}]
            }
        }
        token, card_page = checkout(client, body)
        assert "Pay 10.00 USD" in card_page.text
        gateway = pay(client, card_page, APPROVE)
        assert gateway.status_code == 302
        assert gateway.headers["location"].startswith(f"{server.base_url}{API}/callback/handler-")
        back = client.get(gateway.headers["location"])
        assert back.status_code == 303
        assert back.headers["location"].startswith("/payment-success?ref=CB-")
        assert token not in back.headers["location"]
        page = client.get(back.headers["location"])
        assert page.status_code == 200
        assert "Payment received" in page.text
        status = status_of(client, token)
        assert status["status"] == "completed"
        assert status["amount"] == 1000
        assert (
            status["transactionId"]
            == parse_qs(urlsplit(gateway.headers["location"]).query)["PNRef"][0]
        )


def test_a_declined_payment_fails(server: Server) -> None:
    with server.client() as client:
        token, card_page = checkout(client, {"amount": 2500})
        gateway = pay(client, card_page, DECLINE)
        back = client.get(gateway.headers["location"])
        assert back.status_code == 303
        target = parse_qs(urlsplit(back.headers["location"]).query)
        assert target["reason"] == ["declined"]
        page = client.get(back.headers["location"])
        assert target["ref"][0] in page.text
        assert status_of(client, token)["status"] == "failed"


def test_a_return_by_post_completes(server: Server) -> None:
    with server.client() as client:
        token, card_page = checkout(client, {"paymentData": {"amount": 1234}})
        page = pay(client, card_page, APPROVE, return_method="POST")
        assert page.status_code == 200
        form = ReturnForm()
        form.feed(page.text)
        assert form.method == "POST"
        assert len(form.fields) == 11
        back = client.post(form.action, data=dict(form.fields))
        assert back.status_code == 303
        assert back.headers["location"].startswith("/payment-success?ref=CB-")
        assert status_of(client, token)["status"] == "completed"


def test_a_duplicate_return_changes_nothing(server: Server) -> None:
    with server.client() as client:
        token, card_page = checkout(client, {"amount": 4321})
        return_url = pay(client, card_page, APPROVE).headers["location"]
        first = client.get(return_url)
        settled = status_of(client, token)
        stats = server.pool_stats()
        again = client.get(return_url)
        by_post = client.post(return_url.split("?")[0], data=parse_qs(urlsplit(return_url).query))
        # The gateway's own resend (the form posted again) is the same return too.
        resent = pay(client, card_page, DECLINE)
        assert resent.headers["location"] == return_url
        for answer in (again, by_post, client.get(resent.headers["location"])):
            assert answer.status_code == 303
            assert answer.headers["location"] == first.headers["location"]
        assert status_of(client, token) == settled
        after = server.pool_stats()
        # Everything but what the clock moves on its own (a second may pass between the two).
        assert without_clock(after) == without_clock(stats)


def test_a_forwarded_header_is_not_believed_without_trusted_proxies(server: Server) -> None:
    """The service reads forwarded headers itself, from ``trustedProxies`` only (none here):
    the HTTP server in front of it must not believe them either, even from loopback."""
    with server.client() as client:
        token, card_page = checkout(client, {"amount": 5432})
        return_url = pay(client, card_page, APPROVE).headers["location"]
        back = client.get(return_url, headers={"X-Forwarded-For": "203.0.113.9"})
        assert back.status_code == 303
        ref = parse_qs(urlsplit(back.headers["location"]).query)["ref"][0]
        stored = client.get(
            "/api/v1/admin/callbacks",
            params={"limit": 20},
            headers={"Authorization": f"Bearer {server.admin_token}"},
        ).json()
        assert status_of(client, token)["status"] == "completed"
    record = next(c for c in stored["callbacks"] if c["ref"] == ref)
    assert record["clientAddr"] == "127.0.0.1"
