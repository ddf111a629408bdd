"""Browser POSTs from another site (issue 5): create-token and cancel-token refuse an
``Origin`` (or, lacking it, a ``Referer``) that is not the configured ``baseUrl``'s."""

from __future__ import annotations

import httpx
import pytest

from .conftest import BASE_URL, gateway_return

pytestmark = pytest.mark.anyio

API = "/api/v1/payments"
FOREIGN = [
    {"Origin": "https://evil.example"},
    {"Origin": "null"},
    {"Origin": "http://shop.test.evil.example"},
    {"Origin": "https://shop.test"},  # another scheme is another origin
    {"Origin": "http://shop.test:8080"},
    {"Origin": "not a url"},
    {"Referer": "https://evil.example/checkout"},
    {"Origin": "https://evil.example", "Referer": f"{BASE_URL}/checkout"},
]
OURS = [
    {},
    {"Origin": BASE_URL},
    {"Origin": "HTTP://Shop.Test:80"},
    {"Referer": f"{BASE_URL}/checkout?x=1"},
]


@pytest.mark.parametrize("headers", FOREIGN, ids=range(len(FOREIGN)))
async def test_a_post_from_another_site_is_refused(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    refused = await client.post(f"{API}/create-token", json={"amount": 1000}, headers=headers)
    assert refused.status_code == 403
    assert refused.json()["success"] is False
    assert refused.json()["message"].startswith("Cross-site request refused")
    token = (await client.post(f"{API}/create-token", json={"amount": 1000})).json()["token"]
    cancel = await client.post(f"{API}/cancel-token/{token}", headers=headers)
    assert cancel.status_code == 403
    leave = await client.post(f"{API}/cancel-ticket/any-ticket", headers=headers)
    assert leave.status_code == 403  # refused before the ticket is even looked up
    status = await client.get(f"{API}/check-status/{token}")
    assert status.json()["status"] == "pending"


@pytest.mark.parametrize("headers", OURS, ids=range(len(OURS)))
async def test_a_post_from_this_site_or_a_server_passes(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    created = await client.post(f"{API}/create-token", json={"amount": 1000}, headers=headers)
    assert created.status_code == 201
    cancel = await client.post(f"{API}/cancel-token/{created.json()['token']}", headers=headers)
    assert cancel.status_code == 200


async def test_gateway_returns_are_exempt(client: httpx.AsyncClient) -> None:
    created = (await client.post(f"{API}/create-token", json={"amount": 1000})).json()
    back = await client.post(
        created["formConfig"]["callbackPath"],
        data=dict(gateway_return()),
        headers={"Origin": "https://safepay.paymentlogistics.net"},
    )
    assert back.status_code == 303
    status = await client.get(f"{API}/check-status/{created['token']}")
    assert status.json()["status"] == "completed"
