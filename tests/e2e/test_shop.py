"""The shop's side in a real browser, over real HTTP, on SQLite and on PostgreSQL: the shop's
server creates a payment with its merchant key, the customer pays on the hosted page
(/pay/{token}) through the sandbox's card page in the same window, and lands back on the
shop's own pages, served here by a small HTTP server of the test's on loopback.

Screenshots of the hosted page in each state, at desktop and phone widths, are kept in
test-artifacts/ (shop-<database>-<state>-<width>.png). A console error on any page (a
Content-Security-Policy violation is one) fails the test. Under CI=true a missing browser or
PostgreSQL server fails the run; elsewhere those tests are skipped with the reason.
"""

from __future__ import annotations

import html
import re
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from ..conftest import DATABASES
from ..databases import url_of
from ..servers import stop_server
from .conftest import ARTIFACTS, Server, start_server

# The sandbox's error code as a word: a transaction number may hold the digits.
RESULT_CODE = re.compile(r"\b1000\b")

pytestmark = pytest.mark.slow

MERCHANT_KEY = "e2e-merchant-key-0123456789abcdef"
SHOP_NAME = "Laundry Corner"
API = "/api/v1/payments"
APPROVE, DECLINE, ERROR = "4111 1111 1111 1111", "4000 0000 0000 0002", "4000 0000 0000 0119"
VIEWPORTS = {"desktop": {"width": 1280, "height": 800}, "phone": {"width": 390, "height": 844}}
STATE = "section.pay"
MESSAGE = "[data-testid=message]"


# --- the shop: its pages on loopback -----------------------------------------------------


@dataclass
class Shop:
    origin: str
    visits: list[str] = field(default_factory=list)  # each page asked for, with its query


class ShopPages(BaseHTTPRequestHandler):
    """The shop's /thanks and /cart, as plain pages the customer comes back to."""

    shop: Shop

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        query = {name: values[0] for name, values in parse_qs(parts.query).items()}
        self.shop.visits.append(self.path)
        if parts.path == "/thanks":
            order = html.escape(query.get("order", ""))
            payment = html.escape(query.get("payment", ""))
            body = (
                f'<h1 data-testid="thanks">Thank you for order {order}</h1>'
                f'<p>Payment <code data-testid="payment">{payment}</code></p>'
            )
        elif parts.path == "/cart":
            body = '<h1 data-testid="cart">Your cart</h1>'
        else:
            self.send_error(404)
            return
        page = (
            '<!doctype html><html lang="en"><head><meta charset="utf-8">'
            '<link rel="icon" href="data:,"><title>The shop</title></head>'
            f"<body>{body}</body></html>"
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(page)))
        self.end_headers()
        self.wfile.write(page)

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass


@pytest.fixture(scope="module")
def shop() -> Iterator[Shop]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), ShopPages)
    httpd.daemon_threads = True
    found = Shop(origin=f"http://127.0.0.1:{httpd.server_address[1]}")
    ShopPages.shop = found
    thread = threading.Thread(target=httpd.serve_forever, name="shop", daemon=True)
    thread.start()
    yield found
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=10)


# --- the service: one `callbackpool serve` per database, for the module ------------------


@dataclass(frozen=True)
class Service:
    database: str
    server: Server

    @property
    def base_url(self) -> str:
        return self.server.base_url

    def merchant(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.base_url,
            timeout=10,
            headers={"Authorization": f"Bearer {MERCHANT_KEY}"},
        )

    def create(
        self, shop: Shop, order_reference: str, *, items: dict[str, int] | None = None
    ) -> dict[str, Any]:
        """A payment for the shop's order (13.75, or the catalogue's ``items``), created as
        the shop's server does."""
        priced: dict[str, Any] = (
            {"items": [{"code": code, "quantity": n} for code, n in items.items()]}
            if items
            else {"amount": 1375}
        )
        with self.merchant() as client:
            response = client.post(
                API,
                json={
                    **priced,
                    "orderReference": order_reference,
                    "metadata": {"cart": f"cart-{order_reference}"},
                    "successUrl": shop.origin
                    + "/thanks?payment={PAYMENT_ID}&order={ORDER_REFERENCE}",
                    "cancelUrl": shop.origin + "/cart",
                },
            )
        assert response.status_code == 201, response.text
        created: dict[str, Any] = response.json()
        assert created["status"] == "open"
        assert created["checkoutUrl"] == f"{self.base_url}/pay/{created['token']}"
        return created

    def read(self, payment_id: str) -> dict[str, Any]:
        with self.merchant() as client:
            response = client.get(f"{API}/{payment_id}")
        assert response.status_code == 200, response.text
        read: dict[str, Any] = response.json()
        return read

    def payments(self, **params: str) -> list[dict[str, Any]]:
        with self.merchant() as client:
            response = client.get(API, params=params)
        assert response.status_code == 200, response.text
        payments: list[dict[str, Any]] = response.json()["data"]
        return payments

    def held_by(self, token: str) -> list[dict[str, Any]]:
        return [h for h in self.server.pool_stats()["handlers"] if h["lockedBy"] == token]


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def service(
    request: pytest.FixtureRequest, shop: Shop, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    database: str = request.param
    config: dict[str, Any] = {
        "merchantApiKeys": [MERCHANT_KEY],
        "shopOrigins": [shop.origin],
        "shopName": SHOP_NAME,
    }
    kept: str | None = None
    if database == "postgres":
        # A fresh clone for this module's server (skipped, or under CI failed, without a
        # server). Each test's own drop must not take it: it is dropped at the end.
        config["databaseUrl"] = url_of(DATABASES.create())
        kept = DATABASES.created.pop()
    try:
        process, server = start_server(tmp_path_factory.mktemp(f"shop-{database}"), **config)
        try:
            yield Service(database=database, server=server)
        finally:
            stop_server(process)
        log = server.log.read_text()
        assert process.returncode in (0, -signal.SIGTERM), log
        assert "Traceback" not in log
    finally:
        if kept is not None:
            DATABASES.created.append(kept)
            DATABASES.drop_created()


# --- the customer's browser --------------------------------------------------------------


@pytest.fixture
def customer(browser: Any) -> Iterator[Any]:
    """A fresh browser context's page at the desktop width; a console error of any of its
    pages fails the test."""
    context = browser.new_context(viewport=VIEWPORTS["desktop"])
    context.set_default_timeout(15_000)
    errors: list[str] = []

    def watch(page: Any) -> None:
        page.on("pageerror", lambda error: errors.append(f"{page.url}: {error}"))
        page.on(
            "console",
            lambda m: errors.append(f"{page.url}: {m.text}") if m.type == "error" else None,
        )

    context.on("page", watch)
    page = context.new_page()
    yield page
    context.close()
    assert errors == []


def shoot(page: Any, service: Service, state: str) -> None:
    """Screenshots of the page at each width; the page must fit each width (no sideways
    scrolling)."""
    ARTIFACTS.mkdir(exist_ok=True)
    overflowing = []
    for width, size in VIEWPORTS.items():
        page.set_viewport_size(size)
        page.screenshot(
            path=ARTIFACTS / f"shop-{service.database}-{state}-{width}.png", full_page=True
        )
        scroll = page.evaluate("document.documentElement.scrollWidth")
        if scroll > size["width"]:
            overflowing.append(f"{width}: {scroll}px wide")
    page.set_viewport_size(VIEWPORTS["desktop"])
    assert overflowing == [], f"{state} overflows"


def to_card_page(page: Any) -> None:
    """Pay on the hosted page: this same window goes on to the sandbox's card page."""
    page.click("#pay")
    page.wait_for_url("**/sandbox/pay/**")


def pay_with(page: Any, card: str) -> None:
    """Pay on the hosted page, then ``card`` on the sandbox's card page."""
    to_card_page(page)
    page.fill("#card_number", card)
    page.click("#pay")


def outcomes(read: dict[str, Any]) -> list[str]:
    return [attempt["outcome"] for attempt in read["attempts"]]


# --- the tests ---------------------------------------------------------------------------


def test_a_declined_card_then_an_approved_one_land_the_customer_on_the_shops_thanks_page(
    customer: Any, service: Service, shop: Shop
) -> None:
    from playwright.sync_api import expect

    page = customer
    created = service.create(shop, "1001")
    checkout = created["checkoutUrl"]
    page.goto(checkout)
    expect(page.locator(STATE)).to_have_attribute("data-state", "pay")
    expect(page.locator("header.site .brand")).to_have_text(SHOP_NAME)
    expect(page.locator("h1")).to_have_text("Order 1001")
    expect(page.get_by_test_id("total")).to_have_text("13.75 USD")
    expect(page.locator("#pay")).to_have_text("Pay 13.75 USD")
    assert service.held_by(created["token"]) == []  # no slot until Pay
    shoot(page, service, "first-view")

    pay_with(page, DECLINE)
    page.wait_for_url(checkout)
    expect(page.locator(STATE)).to_have_attribute("data-state", "retry")
    expect(page.locator(MESSAGE)).to_have_text(
        "Your card was declined. You can try another card (2 attempts left)."
    )
    assert service.held_by(created["token"]) == []  # the declined attempt's slot is free
    shoot(page, service, "declined")

    pay_with(page, APPROVE)
    thanks = f"{shop.origin}/thanks?payment={created['id']}&order=1001"
    page.wait_for_url(thanks)
    expect(page.get_by_test_id("thanks")).to_have_text("Thank you for order 1001")
    expect(page.get_by_test_id("payment")).to_have_text(created["id"])
    assert shop.visits.count(f"/thanks?payment={created['id']}&order=1001") == 1

    read = service.read(created["id"])
    assert (read["status"], read["amount"], read["orderReference"]) == ("completed", 1375, "1001")
    assert read["metadata"] == {"cart": "cart-1001"}
    assert outcomes(read) == ["declined", "approved"]
    assert [a["number"] for a in read["attempts"]] == [1, 2]
    approval = read["attempts"][1]
    assert approval["pnRef"]
    assert approval["authCode"]
    assert (approval["last4"], approval["cardType"]) == ("1111", "VISA")
    assert read["attempts"][0]["pnRef"] != approval["pnRef"]
    # Exactly one completed charge for the order, and no slot held any more.
    orders = service.payments(orderReference="1001")
    assert [(p["id"], p["status"]) for p in orders] == [(created["id"], "completed")]
    assert outcomes(orders[0]).count("approved") == 1
    assert service.held_by(created["token"]) == []

    # Back on the hosted page: it says paid, and Pay is gone.
    page.goto(checkout)
    expect(page.locator(STATE)).to_have_attribute("data-state", "paid")
    expect(page.locator(MESSAGE)).to_have_text("Paid. Thank you!")
    expect(page.locator("#pay")).to_be_disabled()
    expect(page.locator("#back")).to_have_attribute("href", thanks)
    shoot(page, service, "paid")
    assert outcomes(service.read(created["id"])) == ["declined", "approved"]


def test_an_error_card_says_it_could_not_be_processed_and_giving_up_goes_to_the_cart(
    customer: Any, service: Service, shop: Shop
) -> None:
    from playwright.sync_api import expect

    page = customer
    created = service.create(shop, "2002")
    page.goto(created["checkoutUrl"])
    pay_with(page, ERROR)
    page.wait_for_url(created["checkoutUrl"])
    expect(page.locator(STATE)).to_have_attribute("data-state", "retry")
    expect(page.locator(MESSAGE)).to_have_text(
        "The payment could not be processed. No money was taken. You can try again"
        " (2 attempts left)."
    )
    text = page.locator("body").inner_text()
    assert "declined" not in text.lower()
    assert not RESULT_CODE.search(text)  # the gateway's result code is not the customer's business
    shoot(page, service, "error")
    read = service.read(created["id"])
    assert (read["status"], outcomes(read)) == ("open", ["error"])

    page.click("#give-up")
    page.wait_for_url(f"{shop.origin}/cart")
    expect(page.get_by_test_id("cart")).to_have_text("Your cart")
    assert service.read(created["id"])["status"] == "cancelled"


def test_coming_back_without_paying_says_not_to_pay_again_and_a_late_card_still_completes(
    customer: Any, service: Service, shop: Shop
) -> None:
    from playwright.sync_api import expect

    page = customer
    created = service.create(shop, "3003", items={"WDF": 8, "BAG": 1, "DEL": 1})
    checkout = created["checkoutUrl"]
    page.goto(checkout)
    rows = page.locator("table.items tbody tr")
    expect(rows).to_have_count(3)
    expect(rows.nth(0).locator("td")).to_have_text(["Wash, dry and fold (per lb)", "8", "10.00"])
    expect(page.get_by_test_id("total")).to_have_text("25.00 USD")
    to_card_page(page)
    assert len(service.held_by(created["token"])) == 1
    # The customer leaves the card page for the hosted page again, without paying.
    page.goto(checkout)
    expect(page.locator(STATE)).to_have_attribute("data-state", "processing")
    expect(page.locator(MESSAGE)).to_contain_text("If you completed the payment, do not pay again")
    expect(page.locator("#pay")).to_have_count(0)  # no second attempt while one is open
    shoot(page, service, "processing")
    read = service.read(created["id"])
    assert (read["status"], outcomes(read)) == ("pending", ["in_progress"])

    # Back on the card page (the browser's Back), the card goes through all the same.
    page.go_back()
    page.wait_for_url("**/sandbox/pay/**")
    page.fill("#card_number", APPROVE)
    page.click("#pay")
    page.wait_for_url(f"{shop.origin}/thanks?payment={created['id']}&order=3003")
    read = service.read(created["id"])
    assert (read["status"], outcomes(read)) == ("completed", ["approved"])
    assert service.held_by(created["token"]) == []


def test_the_last_declined_attempt_fails_the_payment_and_leads_back_to_the_shop(
    customer: Any, service: Service, shop: Shop
) -> None:
    from playwright.sync_api import expect

    page = customer
    created = service.create(shop, "4004")
    checkout = created["checkoutUrl"]
    page.goto(checkout)
    for left in ("2 attempts left", None):
        pay_with(page, DECLINE)
        page.wait_for_url(checkout)
        if left is not None:
            expect(page.locator(MESSAGE)).to_contain_text(left)
        else:
            expect(page.locator(MESSAGE)).not_to_contain_text("attempts left")
    pay_with(page, DECLINE)
    page.wait_for_url(checkout)
    expect(page.locator(STATE)).to_have_attribute("data-state", "failed")
    expect(page.locator(MESSAGE)).to_have_text(
        "The payment did not go through: the card was declined. No money was taken."
    )
    expect(page.locator("#pay")).to_have_count(0)
    shoot(page, service, "failed")
    read = service.read(created["id"])
    assert (read["status"], outcomes(read)) == ("failed", ["declined"] * 3)
    page.click("#back")
    page.wait_for_url(f"{shop.origin}/cart")


def test_what_the_shop_api_refuses_over_http_writes_nothing(service: Service, shop: Shop) -> None:
    """Each refusal with its code: an origin not listed, the admin token where a merchant
    key is wanted, a merchant key on an operator route, metadata too large. And the same
    Idempotency-Key twice is one payment, which holds no slot."""
    before = len(service.payments(limit="100"))
    order = {
        "amount": 500,
        "orderReference": "refused",
        "successUrl": shop.origin + "/thanks",
        "cancelUrl": shop.origin + "/cart",
    }
    with service.merchant() as client:
        elsewhere = client.post(API, json={**order, "successUrl": "https://evil.example/x"})
        assert elsewhere.status_code == 422
        assert "successUrl" in elsewhere.json()["errors"]
        too_big = client.post(API, json={**order, "metadata": {"note": "x" * 5000}})
        assert too_big.status_code == 422
        assert "metadata" in too_big.json()["errors"]
        as_operator = client.get(f"{API}/pool-stats")
        assert as_operator.status_code == 401
        key = {"Idempotency-Key": "order-77-first-try"}
        first = client.post(API, json={**order, "orderReference": "77"}, headers=key)
        again = client.post(API, json={**order, "orderReference": "77"}, headers=key)
    admin = {"Authorization": f"Bearer {service.server.admin_token}"}
    with httpx.Client(base_url=service.base_url, timeout=10, headers=admin) as client:
        assert client.post(API, json=order).status_code == 401
    assert (first.status_code, again.status_code) == (201, 201)
    assert again.json()["id"] == first.json()["id"]
    assert service.held_by(first.json()["token"]) == []
    assert len(service.payments(limit="100")) == before + 1


def test_a_full_pool_puts_the_customer_in_line_on_the_hosted_page(
    customer: Any, service: Service, shop: Shop
) -> None:
    from playwright.sync_api import expect

    page = customer
    paths = len(service.server.pool_stats()["handlers"])
    with service.server.client() as client:
        holders = [
            client.post(f"{API}/create-token", json={"amount": 300}).json()["token"]
            for _ in range(paths)
        ]
    created = service.create(shop, "in-line")
    try:
        page.goto(created["checkoutUrl"])
        page.click("#pay")
        expect(page.get_by_test_id("position")).to_have_text("1")
        expect(page.get_by_test_id("message")).to_contain_text("You have not been charged")
        shoot(page, service, "waiting")
        assert service.read(created["id"])["status"] == "open"
        with service.server.client() as client:
            client.post(f"{API}/cancel-token/{holders.pop()}").raise_for_status()
        page.wait_for_url("**/sandbox/pay/**")  # its turn: the page went on by itself
        assert service.read(created["id"])["status"] == "pending"
    finally:
        with service.server.client() as client:
            for token in holders:
                client.post(f"{API}/cancel-token/{token}")
        with service.merchant() as client:
            client.post(f"{API}/{created['id']}/cancel")
