"""The operator's dashboard in a real browser (Debian's Chromium, driven by Playwright),
on a real ``callbackpool serve`` after a scripted run: sign in, see the slots and the
charts, decide a review; no error in the browser's console. The screenshot is kept in
test-artifacts/dashboard.png."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from .conftest import ARTIFACTS, Server, start_server, stop_server

pytestmark = pytest.mark.slow

PREFIX = "/api/v1/payments"


@dataclass(frozen=True)
class Run:
    """What the scripted run left behind."""

    server: Server
    completed: int
    review_ref: str
    candidates: tuple[str, str]
    sidelined: str


def create(client: httpx.Client, amount: int) -> dict[str, Any]:
    response = client.post(f"{PREFIX}/create-token", json={"amount": amount})
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def gateway_return(client: httpx.Client, path: str, amount: int, pn_ref: str, result: str = "0"):  # type: ignore[no-untyped-def]
    params = {
        "MerchantID": "demoMerchantWEB", "OrderID": f"O{pn_ref}", "Amount": f"{amount / 100:.2f}",
        "PNRef": pn_ref, "Result": result, "TxnType": "SALE", "Last4": "1111",
        "ExpDate": "0929", "CardType": "VISA", "AuthCode": "A1" if result == "0" else "",
    }  # fmt: skip
    return client.get(path, params=params)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    """A service whose returns are not signed (the test plays the gateway), after: seven
    payments paid, one declined, one cancelled, two of the same amount on one slot and an
    approved return there (the review), one request turned away, one slot taken out."""
    process, server = start_server(
        tmp_path_factory.mktemp("dashboard"),
        callbackHash=None,
        dashboardRefreshSeconds=2,
    )
    auth = {"Authorization": f"Bearer {server.admin_token}"}
    with httpx.Client(base_url=server.base_url, timeout=10) as client:
        for n in range(7):
            made = create(client, 1000 + n)
            path = made["formConfig"]["callbackPath"]
            assert gateway_return(client, path, 1000 + n, f"PAID{n}").status_code == 303
        declined = create(client, 2500)
        gateway_return(client, declined["formConfig"]["callbackPath"], 2500, "DECL", "12")
        first = create(client, 4200)
        client.post(f"{PREFIX}/cancel-token/{first['token']}")
        fillers = [create(client, 5000 + n) for n in range(9)]
        second = create(client, 4200)  # the one free slot: the cancelled one, same amount
        path = second["formConfig"]["callbackPath"]
        assert path == first["formConfig"]["callbackPath"]
        assert client.post(f"{PREFIX}/create-token", json={"amount": 100}).status_code == 503
        gateway_return(client, path, 4200, "AMBIG")
        queue = client.get("/api/v1/admin/reviews", headers=auth).json()
        [waiting] = queue["returns"]
        for filler in fillers[:4]:
            client.post(f"{PREFIX}/cancel-token/{filler['token']}")
        taken = client.post(
            "/api/v1/admin/slots/sideline",
            headers=auth,
            json={"path": "handler-9", "reason": "gateway: unknown URL", "operator": "setup"},
        )
        assert taken.status_code == 200, taken.text
    yield Run(
        server=server,
        completed=7,
        review_ref=waiting["ref"],
        candidates=(first["token"], second["token"]),
        sidelined=taken.json()["path"],
    )
    stop_server(process)


@pytest.fixture
def console() -> list[str]:
    """The page's errors and warnings: any left at the end fails the test."""
    return []


@pytest.fixture
def page(browser: Any, run: Run, console: list[str]) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1360, "height": 900})
    context.set_default_timeout(15_000)
    page = context.new_page()
    errors = console
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda m: errors.append(m.text) if m.type in ("error", "warning") else None)
    yield page
    context.close()
    assert errors == []


def sign_in(page: Any, run: Run, name: str = "Dana Operator") -> None:
    page.goto(f"{run.server.base_url}/admin")
    page.wait_for_url("**/admin/login?next=%2Fadmin")
    page.fill("#login-name", name)
    page.fill("#login-token", run.server.admin_token)
    page.click("button[type=submit]")
    page.wait_for_url(f"{run.server.base_url}/admin")


def test_the_dashboard_shows_the_run_and_decides_a_review(page: Any, run: Run) -> None:
    from playwright.sync_api import expect

    sign_in(page, run)
    expect(page.locator(".bar-user")).to_contain_text("Dana Operator")
    # The slots, a row each, the one taken out flagged.
    rows = page.locator("table.slots tbody tr[data-path]")
    expect(rows).to_have_count(10)
    sidelined = page.locator(f'tr[data-path="{run.sidelined}"]')
    expect(sidelined.locator(".badge-sidelined")).to_be_visible()
    expect(page.locator(".sidelined-note")).to_contain_text("setup: gateway: unknown URL")
    expect(page.get_by_test_id("out-of-rotation")).to_have_text("1")
    # The charts: drawn, with what the run did.
    expect(page.locator("svg.chart-svg")).to_have_count(4)
    expect(page.get_by_test_id("chart-utilisation").locator("path.line-util")).to_have_count(1)
    expect(page.get_by_test_id("chart-turn-aways").locator("rect.bar-refused")).to_have_count(1)
    expect(page.get_by_test_id("chart-endings")).to_contain_text("9 returned, 5 cancelled")
    # Stored returns, the expiry date masked.
    returns = page.get_by_test_id("returns")
    expect(returns).to_contain_text("ambiguous")
    # (Not a bare "0929": a random token may hold those digits.)
    assert "ExpDate=0929" not in page.content()
    assert "ExpDate=****" in page.content()

    # The review: the return belongs to the second payment; the first becomes expired.
    review = page.get_by_test_id(f"review-{run.review_ref}")
    expect(review).to_be_visible()
    page.screenshot(path=artifacts() / "dashboard.png", full_page=True)
    first, second = run.candidates
    review.locator(f'input[value="{second}"]').check()
    review.locator("select[name=others]").select_option("expired")
    review.locator("input[name=reason]").fill("back office: order of the second customer")
    review.locator("button[type=submit]").click()
    expect(page.get_by_test_id("done")).to_contain_text(f"{run.review_ref} decided")
    expect(page.get_by_test_id("review-empty")).to_be_visible()
    expect(page.get_by_test_id("decisions")).to_contain_text("Dana Operator")
    expect(page.get_by_test_id("decisions")).to_contain_text(
        "back office: order of the second customer"
    )
    with httpx.Client(base_url=run.server.base_url) as client:
        statuses = [
            client.get(f"{PREFIX}/check-status/{token}").json()["status"]
            for token in (first, second)
        ]
    assert statuses == ["expired", "completed"]

    # Put the slot back from the page.
    page.get_by_test_id(f"restore-{run.sidelined.rsplit('/', 1)[-1]}").click()
    expect(page.get_by_test_id("done")).to_contain_text("back in rotation")
    expect(page.get_by_test_id("out-of-rotation")).to_have_text("0")
    page.screenshot(path=artifacts() / "dashboard-after-review.png", full_page=True)


def test_the_dashboard_refreshes_itself(page: Any, run: Run) -> None:
    from playwright.sync_api import expect

    sign_in(page, run, "Refresh Watcher")
    leased = page.get_by_test_id("leased")
    before = int(leased.inner_text())
    with httpx.Client(base_url=run.server.base_url) as client:
        created = create(client, 777)
        expect(leased).to_have_text(str(before + 1), timeout=10_000)
        client.post(f"{PREFIX}/cancel-token/{created['token']}")
    expect(leased).to_have_text(str(before), timeout=10_000)


def test_without_credentials_the_page_sends_to_the_login_form(
    page: Any, run: Run, console: list[str]
) -> None:
    from playwright.sync_api import expect

    page.goto(f"{run.server.base_url}/admin")
    page.wait_for_url("**/admin/login?next=%2Fadmin")
    page.fill("#login-name", "Mallory")
    page.fill("#login-token", "not-the-token")
    page.click("button[type=submit]")
    expect(page.get_by_test_id("login-problem")).to_have_text("That is not the admin token.")
    # The refused sign-in answers 401, which the browser reports; nothing else may appear.
    assert console == [
        "Failed to load resource: the server responded with a status of 401 (Unauthorized)"
    ]
    console.clear()


def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
