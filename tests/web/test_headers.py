"""Security headers on every answer, a strict Content-Security-Policy on every page (no page
has an inline script), every value shown escaped, and the API documentation's own policy."""

from __future__ import annotations

from collections.abc import AsyncIterator
from html.parser import HTMLParser

import httpx
import pytest

from callbackpool.web.routes.docs import SWAGGER_UI_BUNDLE_SRI, SWAGGER_UI_CSS_SRI

from .conftest import ADMIN_TOKEN, PATHS, ClientFactory, gateway_return, sandbox_keys

pytestmark = pytest.mark.anyio

API = "/api/v1/payments"
XSS = "<script>alert(document.cookie)</script>"


class Page(HTMLParser):
    """A page's scripts (inline ones and their sources) and inline event handlers."""

    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[dict[str, str | None]] = []
        self.inline_scripts = 0
        self.handlers: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handlers += [name for name, _ in attrs if name.lower().startswith("on")]
        if tag == "script":
            self.scripts.append(dict(attrs))
            self._in_script = True

    def handle_endtag(self, tag: str) -> None:
        self._in_script = self._in_script and tag != "script"

    def handle_data(self, data: str) -> None:
        self.inline_scripts += bool(self._in_script and data.strip())


def page_of(html: str) -> Page:
    parsed = Page()
    parsed.feed(html)
    return parsed


def policy(response: httpx.Response) -> dict[str, str]:
    directives = response.headers["Content-Security-Policy"].split(";")
    return {d.split()[0]: " ".join(d.split()[1:]) for d in (x.strip() for x in directives) if d}


@pytest.fixture
async def client(make_client: ClientFactory) -> AsyncIterator[httpx.AsyncClient]:
    async with make_client(**sandbox_keys()) as client:
        yield client


async def every_kind_of_answer(client: httpx.AsyncClient) -> list[httpx.Response]:
    """A page of every template, the API's answers and errors, redirects and static files."""
    creation = await client.post(f"{API}/create-token", json={"amount": 1000})
    created = creation.json()
    form = created["formConfig"]
    to_card = await client.post(form["formActionUrl"], data=form["fields"])
    card_page = to_card.headers["location"]
    twice = {"card_number": "4111111111111111", "expiry": "12/30", "return_twice": "1"}
    return_page = await client.post(card_page, data=twice)
    other = (await client.post(f"{API}/create-token", json={"amount": 2000})).json()
    card = (await client.post(form["formActionUrl"], data=other["formConfig"]["fields"])).headers
    paid = await client.post(card["location"], data={**twice, "return_twice": ""})
    back = await client.get(paid.headers["location"])  # the sandbox's signed return
    assert back.headers["location"].startswith("/payment-success?ref=")
    return [
        creation,
        await client.get("/checkout"),
        await client.get(back.headers["location"]),  # the success page, by receipt
        await client.get("/payment-success", params={"token": created["token"]}),
        await client.get("/payment-success", params={"ref": "CB-9", "receipt": "x"}),  # 404
        await client.get("/payment-error", params={"message": XSS, "ref": XSS}),
        await client.get("/no-such-page"),  # the problem page
        await client.get(card_page),
        return_page,
        await client.post(card_page, data={"card_number": "1"}),  # the card page's error
        await client.get("/sandbox/pay/unknown"),  # the sandbox's refusal
        await client.post(form["formActionUrl"], data={"txnType": "FORM"}),
        await client.get(f"{API}/config"),
        await client.get(f"{API}/check-status/{other['token']}"),
        paid,
        await client.get(f"{API}/check-status/unknown"),
        await client.post(f"{API}/create-token", content=b"{"),
        await client.get(f"{API}/pool-stats"),
        to_card,
        back,
        await client.get(PATHS[3], params=gateway_return(merchant=XSS)),
        await client.get("/"),
        await client.get("/healthz"),
        await client.get("/api/openapi.json"),
        await client.get("/static/style.css"),
    ]


async def test_every_answer_carries_the_security_headers(client: httpx.AsyncClient) -> None:
    answers = await every_kind_of_answer(client)
    assert {a.status_code for a in answers} >= {200, 201, 302, 303, 307, 400, 401, 404, 422}
    for answer in answers:
        where = f"{answer.request.method} {answer.request.url}"
        assert answer.headers["X-Content-Type-Options"] == "nosniff", where
        assert answer.headers["Referrer-Policy"] == "strict-origin-when-cross-origin", where
        assert answer.headers["X-Frame-Options"] == "SAMEORIGIN", where
        csp = policy(answer)
        assert csp["default-src"] == "'none'", where
        assert csp["script-src"] == "'self'", where
        assert csp["style-src"] == "'self'", where
        assert csp["frame-ancestors"] == "'self'", where
        assert csp["base-uri"] == "'none'", where
        assert csp["object-src"] == "'none'", where
        cacheable = answer.request.url.path.startswith("/static/")
        assert ("Cache-Control" in answer.headers) != cacheable, where
        if not cacheable:
            assert answer.headers["Cache-Control"] == "no-store", where
        assert "Strict-Transport-Security" not in answer.headers  # baseUrl is http here


async def test_no_page_has_an_inline_script_and_every_value_is_escaped(
    client: httpx.AsyncClient,
) -> None:
    pages = [
        a
        for a in await every_kind_of_answer(client)
        if a.headers.get("content-type", "").startswith("text/html")
    ]
    assert len(pages) >= 10
    for page in pages:
        parsed = page_of(page.text)
        where = str(page.request.url)
        assert parsed.inline_scripts == 0, where
        assert parsed.handlers == [], where
        for script in parsed.scripts:
            # By path: never built from the request's Host header.
            assert (script.get("src") or "").startswith("/static/"), where
        assert "<script>alert" not in page.text, where


async def test_the_error_page_shows_nothing_of_a_script_in_the_query(
    client: httpx.AsyncClient,
) -> None:
    page = await client.get("/payment-error", params={"message": XSS, "reason": XSS, "ref": XSS})
    assert page.status_code == 200
    assert "alert(document.cookie)" not in page.text
    assert page_of(page.text).inline_scripts == 0


async def test_forms_may_go_to_the_gateway_and_the_callbacks_only(
    make_client: ClientFactory,
) -> None:
    async with make_client() as client:  # the real gateway's form action
        csp = policy(await client.get("/checkout"))
    assert csp["form-action"] == "'self' https://safepay.paymentlogistics.net http://shop.test"
    assert csp["connect-src"] == "'self'"
    async with make_client(**sandbox_keys()) as client:  # the sandbox stands in, here
        assert policy(await client.get("/checkout"))["form-action"] == "'self' http://shop.test"
    # A return, or the hosted page's Cancel, redirects on to the shop: form-action holds
    # for redirects too.
    async with make_client(shopOrigins=["https://corner.example"]) as client:
        assert policy(await client.get("/checkout"))["form-action"] == (
            "'self' https://safepay.paymentlogistics.net http://shop.test https://corner.example"
        )


async def test_an_https_base_url_adds_strict_transport_security(
    make_client: ClientFactory,
) -> None:
    async with make_client(baseUrl="https://shop.example") as client:
        response = await client.get("/healthz")
    assert response.headers["Strict-Transport-Security"] == "max-age=31536000"


async def test_the_api_documentation_has_a_policy_of_its_own(client: httpx.AsyncClient) -> None:
    page = await client.get("/api/docs")
    assert page.status_code == 200
    csp = policy(page)
    assert csp["script-src"] == "'self' https://cdn.jsdelivr.net"
    assert "'unsafe-inline'" not in csp["script-src"]
    assert csp["frame-ancestors"] == "'self'"
    parsed = page_of(page.text)
    assert parsed.inline_scripts == 0
    [bundle, start] = parsed.scripts
    assert (
        bundle["src"] == "https://cdn.jsdelivr.net/npm/swagger-ui-dist@5.35.0/swagger-ui-bundle.js"
    )
    assert (bundle["integrity"], bundle["crossorigin"]) == (SWAGGER_UI_BUNDLE_SRI, "anonymous")
    assert start["src"] == "/static/api-docs.js"
    assert f'integrity="{SWAGGER_UI_CSS_SRI}"' in page.text
    assert (await client.get("/static/api-docs.js")).status_code == 200


@pytest.mark.parametrize(
    ("keys", "served"),
    [
        ({}, True),
        ({"apiDocs": False}, False),
        ({"env": "production"}, False),
        ({"env": "production", "apiDocs": True}, True),
    ],
)
async def test_the_api_documentation_is_off_in_production_unless_asked_for(
    make_client: ClientFactory, keys: dict[str, object], served: bool
) -> None:
    verified = {"callbackHash": sandbox_keys()["callbackHash"], "adminToken": "x" * 32}
    async with make_client(**verified, **keys) as client:
        docs = await client.get("/api/docs")
        assert (docs.status_code == 200) is served
        # The document itself is always there: it is what API clients are built from.
        assert (await client.get("/api/openapi.json")).status_code == 200


async def test_the_dashboard_shows_what_returns_carried_as_text(
    client: httpx.AsyncClient,
) -> None:
    for name in ("MerchantID", "OrderID", "Amount", "PNRef", "CardType"):
        params = [(k, XSS if k == name else v) for k, v in gateway_return()]
        await client.get(PATHS[2], params=params)
    operator = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    for page in (
        await client.get("/admin", headers=operator),
        await client.get("/admin", params={"outcome": "rejected"}, headers=operator),
    ):
        assert page.status_code == 200
        assert "<script>alert" not in page.text
        parsed = page_of(page.text)
        assert (parsed.inline_scripts, parsed.handlers) == (0, [])
        assert policy(page)["script-src"] == "'self'"
    assert "&lt;script&gt;alert(document.cookie)&lt;/script&gt;" in page.text  # shown, as text
