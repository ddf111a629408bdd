"""The pages, the error answers of the whole app, its headers, and the sweeper."""

from __future__ import annotations

import asyncio
import json
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from callbackpool.domain.errors import StoreError, StoreUnavailable
from callbackpool.domain.model import PaymentStatus
from callbackpool.web import create_app

from .conftest import PATHS, SettingsFactory, gateway_return, services_of, serving

pytestmark = pytest.mark.anyio

API = "/api/v1/payments"


class Scripts(HTMLParser):
    """Every script element and every inline event handler of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.sources: list[str | None] = []
        self.inline: list[str] = []
        self.handlers: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handlers += [name for name, _ in attrs if name.startswith("on")]
        if tag == "script":
            self.sources.append(dict(attrs).get("src"))
            self._in_script = True

    def handle_endtag(self, tag: str) -> None:
        self._in_script = self._in_script and tag != "script"

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline.append(data)


def scripts_of(html: str) -> Scripts:
    parser = Scripts()
    parser.feed(html)
    return parser


async def paid(client: httpx.AsyncClient) -> dict[str, Any]:
    created: dict[str, Any] = (
        await client.post(f"{API}/create-token", json={"paymentData": {"amount": 1000}})
    ).json()
    response = await client.get(created["formConfig"]["callbackPath"], params=gateway_return())
    assert response.status_code == 303
    return created


async def test_the_success_page_shows_the_payment(client: httpx.AsyncClient) -> None:
    created = await paid(client)
    page = await client.get("/payment-success", params={"token": created["token"]})
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "Payment received" in page.text
    assert "10.00 USD" in page.text
    assert "804322218" in page.text
    assert "VISA ending 0309" in page.text


async def test_the_return_lands_on_its_receipt_which_shows_no_token(
    client: httpx.AsyncClient,
) -> None:
    created: dict[str, Any] = (
        await client.post(f"{API}/create-token", json={"amount": 1000})
    ).json()
    back = await client.get(created["formConfig"]["callbackPath"], params=gateway_return())
    page = await client.get(back.headers["location"])
    assert page.status_code == 200
    assert "Payment received" in page.text
    assert "10.00 USD" in page.text
    assert created["token"] not in page.text
    assert created["token"] not in back.headers["location"]
    wrong = back.headers["location"].replace("receipt=", "receipt=x")
    missing = await client.get(wrong)
    assert missing.status_code == 404
    assert "Payment not found" in missing.text


@pytest.mark.parametrize("token", ["", "unknown", "<script>alert(1)</script>"])
async def test_the_success_page_of_an_unknown_payment_says_so(
    client: httpx.AsyncClient, token: str
) -> None:
    page = await client.get("/payment-success", params={"token": token})
    assert page.status_code == 404
    assert "Payment not found" in page.text
    assert "<script>alert" not in page.text


async def test_the_success_page_of_a_pending_payment_does_not_claim_success(
    client: httpx.AsyncClient,
) -> None:
    created = (await client.post(f"{API}/create-token", json={"amount": 1000})).json()
    page = await client.get("/payment-success", params={"token": created["token"]})
    assert "Payment received" not in page.text
    assert "Payment pending" in page.text


async def test_the_error_page_says_only_its_own_words_and_real_references(
    client: httpx.AsyncClient,
) -> None:
    """A link cannot make the page say a sentence of its own, nor show a made-up support
    reference: both are how a phishing page would borrow the shop's name."""
    page = await client.get(
        "/payment-error",
        params={
            "message": "Call 1-800-555-0100 to complete your payment",
            "reason": '<script>alert("x")</script>',
            "ref": "CB-999",
        },
    )
    assert page.status_code == 200
    assert "1-800" not in page.text
    assert "alert" not in page.text
    assert "CB-999" not in page.text
    assert "Support reference" not in page.text
    assert "Something went wrong while we recorded the payment" in page.text
    assert scripts_of(page.text).handlers == []


async def test_the_error_page_after_a_declined_return_shows_its_reference(
    client: httpx.AsyncClient,
) -> None:
    created = (await client.post(f"{API}/create-token", json={"amount": 1000})).json()
    response = await client.get(
        created["formConfig"]["callbackPath"], params=gateway_return(result="12")
    )
    page = await client.get(response.headers["location"])
    assert "Payment declined" in page.text
    assert "CB-1" in page.text


async def test_the_checkout_page_has_no_inline_script(client: httpx.AsyncClient) -> None:
    page = await client.get("/checkout")
    assert page.status_code == 200
    found = scripts_of(page.text)
    assert found.inline == []
    assert found.handlers == []
    assert found.sources == ["/static/checkout.js"]
    assert 'data-item-code="WDF"' in page.text
    assert 'data-item-code="AMT"' not in page.text  # the open amount is the amount field
    assert 'id="amount"' in page.text
    script = await client.get("/static/checkout.js")
    assert script.status_code == 200
    assert "javascript" in script.headers["content-type"]
    assert "create-token" in script.text
    assert "cancel-token" in script.text
    assert (await client.get("/")).headers["location"] == "/checkout"


async def test_every_answer_carries_the_security_headers(client: httpx.AsyncClient) -> None:
    for response in (
        await client.get("/checkout"),
        await client.get(f"{API}/config"),
        await client.get(f"{API}/check-status/nope"),
        await client.get("/static/style.css"),
        await client.get(PATHS[0]),
    ):
        assert response.headers["X-Content-Type-Options"] == "nosniff"


async def test_unknown_paths_and_methods(client: httpx.AsyncClient) -> None:
    api = await client.get(f"{API}/nothing-here")
    assert (api.status_code, api.json()) == (404, {"success": False, "message": "Not found"})
    wrong_method = await client.delete(f"{API}/create-token")
    assert wrong_method.status_code == 405
    assert wrong_method.json() == {"success": False, "message": "Method not allowed"}
    assert wrong_method.headers["Allow"] == "POST"
    # A path served by a route for each method names them all.
    callback = await client.request("OPTIONS", f"{API}/callback/handler-1")
    assert (callback.status_code, callback.headers["Allow"]) == (405, "GET, POST")
    page = await client.get("/no-such-page")
    assert page.status_code == 404
    assert page.headers["content-type"].startswith("text/html")
    assert "Not found" in page.text


async def test_an_unexpected_error_is_logged_and_answered_generically(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(token: str) -> None:
        raise RuntimeError("secret internals")

    # check-status polls (a heartbeat); the pages only read.
    monkeypatch.setattr(services_of(client).pool, "poll_payment", broken)
    monkeypatch.setattr(services_of(client).pool, "get_payment", broken)
    response = await client.get(f"{API}/check-status/abc")
    assert response.status_code == 500
    body = response.json()
    assert body["success"] is False
    assert body["message"] == f"Internal error (reference {body['ref']})"
    assert "secret internals" not in response.text
    assert any(body["ref"] in r.getMessage() and r.exc_info for r in caplog.records)
    page = await client.get("/payment-success", params={"token": "abc"})
    assert page.status_code == 500
    assert page.headers["content-type"].startswith("text/html")
    assert "Traceback" not in page.text
    assert "secret internals" not in page.text


async def test_an_unavailable_store_is_a_503_to_retry(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    def busy(**kwargs: object) -> None:
        raise StoreUnavailable("SQLite database is busy: database is locked")

    monkeypatch.setattr(services_of(client).pool, "create_payment", busy)
    response = await client.post(f"{API}/create-token", json={"amount": 1000})
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"
    assert "locked" not in response.json()["message"]


async def test_what_the_database_refuses_is_a_500_that_does_not_show_its_words(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def refused(**kwargs: object) -> None:
        raise StoreError("PostgreSQL refused to insert payment: duplicate key value")

    monkeypatch.setattr(services_of(client).pool, "create_payment", refused)
    response = await client.post(f"{API}/create-token", json={"amount": 1000})
    assert response.status_code == 500
    assert "duplicate" not in response.text
    assert any(response.json()["ref"] in r.getMessage() for r in caplog.records)


async def test_the_sweeper_runs_in_the_lifespan_and_stops_with_it(
    make_settings: SettingsFactory,
) -> None:
    settings = make_settings(lockTimeoutMinutes=0.001, sweepIntervalSeconds=0.05)
    app = create_app(settings)
    async with serving(app) as client:
        created = (await client.post(f"{API}/create-token", json={"amount": 1000})).json()
        services = services_of(client)
        for _ in range(100):
            with services.store.read() as tx:  # not through the pool, which expires on read
                payment = tx.get_payment(created["token"])
            if payment is not None and payment.status is PaymentStatus.EXPIRED:
                break
            await asyncio.sleep(0.05)
        assert payment is not None
        assert payment.status is PaymentStatus.EXPIRED
        assert services.pool.status().stuck == 0
        sweeper = app.state.sweeper
        assert sweeper.running
        assert sweeper.runs >= 1
    assert not sweeper.running


async def test_the_openapi_document_names_the_api(client: httpx.AsyncClient) -> None:
    document = (await client.get("/api/openapi.json")).json()
    paths = document["paths"]
    for path in (
        "create-token",
        "check-status/{token}",
        "cancel-token/{token}",
        "config",
        "pool-stats",
    ):
        assert f"{API}/{path}" in paths
    assert f"{API}/callback/{{handler}}" in paths
    body = paths[f"{API}/create-token"]["post"]["requestBody"]["content"]["application/json"]
    schemas = document["components"]["schemas"]
    assert body["schema"] == {"$ref": "#/components/schemas/CreateTokenIn"}
    assert "paymentData" in schemas["CreateTokenIn"]["properties"]
    # Every reference resolves within the document (none to a schema's own "$defs").
    text = json.dumps(document)
    for name in re.findall(r'"#/components/schemas/([^"]+)"', text):
        assert name in schemas, name
    assert "#/$defs/" not in text
    # Errors are described as the service sends them, not as FastAPI's "detail" list.
    assert "HTTPValidationError" not in text
    stats = paths[f"{API}/pool-stats"]["get"]["responses"]
    assert stats["401"]["headers"]["WWW-Authenticate"]["required"] is True


def test_the_app_is_a_factory_that_opens_nothing_before_its_lifespan(
    make_settings: SettingsFactory, tmp_path: Path
) -> None:
    first, second = create_app(make_settings()), create_app(make_settings())
    assert isinstance(first, FastAPI)
    assert first is not second
    assert not (tmp_path / "pool.db").exists()


async def test_the_sandbox_is_not_there_unless_enabled(client: httpx.AsyncClient) -> None:
    response = await client.post("/sandbox/transaction.asp", data={"txnType": "FORM"})
    assert response.status_code == 404
