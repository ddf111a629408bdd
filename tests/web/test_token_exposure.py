"""Nothing but the operator API shows a customer's token to anyone else (issue 5): every
page and endpoint, redirects, error pages and headers included, seen by someone who holds
only a token of their own."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from .conftest import ADMIN_TOKEN, PATHS, ClientFactory, gateway_return, sandbox_keys

pytestmark = pytest.mark.anyio

API = "/api/v1/payments"
ADMIN = "/api/v1/admin"


@pytest.fixture
async def client(make_client: ClientFactory) -> AsyncIterator[httpx.AsyncClient]:
    async with make_client(**sandbox_keys()) as client:
        yield client


def shows(response: httpx.Response, token: str) -> bool:
    headers = " ".join(f"{k}: {v}" for k, v in response.headers.items())
    return token in response.text or token in headers


async def test_no_answer_shows_a_token_to_anyone_but_the_operator(
    client: httpx.AsyncClient,
) -> None:
    victim = (await client.post(f"{API}/create-token", json={"amount": 1000})).json()
    theirs = victim["token"]
    path = victim["formConfig"]["callbackPath"]
    mine = (await client.post(f"{API}/create-token", json={"amount": 2000})).json()["token"]
    # The victim's payment goes through the sandbox: a real, signed return on its path.
    form = victim["formConfig"]
    card = (await client.post(form["formActionUrl"], data=form["fields"])).headers["location"]
    paid = await client.post(card, data={"card_number": "4111111111111111", "expiry": "12/30"})
    victims_return = paid.headers["location"]
    unauthenticated = {"Authorization": "Bearer not-the-token"}
    answers = [
        # Another customer's own calls, and every public page and endpoint.
        await client.get(f"{API}/check-status/{mine}"),
        await client.post(f"{API}/cancel-token/{mine}"),
        await client.get(f"{API}/config"),
        await client.get("/checkout"),
        await client.get("/payment-success", params={"token": mine}),
        await client.get("/payment-success", params={"ref": "CB-1", "receipt": "guess"}),
        await client.get("/payment-error", params={"message": "x", "ref": "CB-1"}),
        await client.get("/no-such-page"),
        await client.get(f"{API}/no-such-endpoint"),
        await client.get("/api/openapi.json"),
        await client.get("/api/docs"),
        await client.get("/healthz"),
        await client.get("/readyz"),
        # Forged returns on the victim's path, by GET and POST: every outcome's answer.
        await client.get(path, params=gateway_return(amount="10.00", pn_ref="1")),
        await client.get(path, params=gateway_return(amount="99.00", pn_ref="2")),
        await client.post(path, data=dict(gateway_return(pn_ref="3", result="12"))),
        await client.get(PATHS[9], params=gateway_return(pn_ref="4")),
        # The operator's surface, without the operator's token.
        await client.get(f"{API}/pool-stats"),
        await client.get(f"{API}/pool-stats", headers=unauthenticated),
        await client.get("/metrics"),
        await client.get("/admin"),
        await client.get("/admin", headers=unauthenticated),
        await client.get(f"{ADMIN}/status"),
        await client.get(f"{ADMIN}/stuck-leases"),
        await client.get(f"{ADMIN}/orphaned-payments"),
        await client.get(f"{ADMIN}/callbacks"),
        await client.get(f"{ADMIN}/reviews"),
    ]
    # The victim's own return, replayed by someone who got hold of its URL: the redirect
    # and the page it leads to name the return, not the payment's token.
    replayed = await client.get(victims_return)
    answers += [replayed, await client.get(replayed.headers["location"])]
    assert "Payment received" in answers[-1].text
    for answer in answers:
        assert not shows(answer, theirs), f"{answer.request.method} {answer.request.url}"
    # The operator API shows it (that is what it is for), and only with the token.
    operator = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    third = (await client.post(f"{API}/create-token", json={"amount": 3000})).json()["token"]
    assert shows(await client.get(f"{API}/pool-stats", headers=operator), third)
    assert not shows(await client.get(f"{API}/pool-stats"), third)
