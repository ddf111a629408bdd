"""The payments API (issue 3): every endpoint, every bad input, through httpx."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from .conftest import ADMIN_TOKEN, BASE_URL, PATHS, ClientFactory, services_of

pytestmark = pytest.mark.anyio

API = "/api/v1/payments"
SEED_EXHAUSTED = "No forms available. All forms are currently in use."


async def create(client: httpx.AsyncClient, body: Any | None = None) -> dict[str, Any]:
    response = await client.post(
        f"{API}/create-token", json=body or {"paymentData": {"amount": 1000}}
    )
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()
    return data


# --- create-token -------------------------------------------------------------------------


async def test_create_token_answers_the_guides_shape(client: httpx.AsyncClient) -> None:
    response = await client.post(
        f"{API}/create-token",
        json={
            "paymentData": {
                "amount": 1375,
                "currency": "USD",
                "items": [{"code": "WDF", "quantity": 3}, {"code": "BAG", "quantity": 1}],
            },
            "customerData": {"email": "ada@example.com"},
        },
    )
    assert response.status_code == 201
    data = response.json()
    assert set(data) == {"success", "token", "status", "expiresAt", "formConfig"}
    assert data["success"] is True
    assert data["status"] == "pending"
    assert len(data["token"]) >= 32
    assert data["expiresAt"].endswith("Z")
    form = data["formConfig"]
    assert set(form) == {
        "formActionUrl",
        "method",
        "merchantId",
        "formId",
        "formHash",
        "callbackPath",
        "callbackUrl",
        "fields",
    }
    assert form["formActionUrl"] == "https://safepay.paymentlogistics.net/transaction.asp"
    assert form["method"] == "POST"
    assert form["merchantId"] == "demoMerchantWEB"
    assert form["formId"] == "55015901455"
    assert form["formHash"] == "c701523a33721cdbe999f7a4406a0a98"
    assert form["callbackPath"] in PATHS
    assert form["callbackUrl"] == BASE_URL + form["callbackPath"]
    fields = form["fields"]
    assert fields["ReturnURL"] == form["callbackUrl"]
    assert fields["txnType"] == "FORM"
    assert fields["merchantID"] == "demoMerchantWEB"
    assert fields["formID"] == "55015901455"
    assert fields["hash"] == form["formHash"]
    assert (fields["pxCode1"], fields["pxPrice1"], fields["pxQty1"]) == ("WDF", "1.25", "3")
    assert (fields["pxCode2"], fields["pxPrice2"], fields["pxQty2"]) == ("BAG", "10.00", "1")
    assert fields["pxQty3"] == "0"
    assert not any(name.startswith("custom") or "token" in name.lower() for name in fields)


async def test_the_guides_flat_body_is_taken_even_as_text_plain(client: httpx.AsyncClient) -> None:
    # The guide's own client posts JSON.stringify(...) without a Content-Type.
    response = await client.post(
        f"{API}/create-token",
        content=b'{"amount": 1000, "customerData": {"name": "Ada"}}',
        headers={"Content-Type": "text/plain;charset=UTF-8"},
    )
    assert response.status_code == 201, response.text
    token = response.json()["token"]
    status = (await client.get(f"{API}/check-status/{token}")).json()
    assert (status["amount"], status["currency"]) == (1000, "USD")
    payment = services_of(client).pool.get_payment(token)
    assert payment.customer == {"name": "Ada"}
    assert [(i.code, i.quantity) for i in payment.items] == [("AMT", 1000)]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"paymentData": {}}, "amount"),
        ({"customerData": {"a": 1}}, "amount"),
        ({"paymentData": {"amount": 0}}, "amount"),
        ({"paymentData": {"amount": -100}}, "amount"),
        ({"paymentData": {"amount": 10.5}}, "amount"),
        ({"paymentData": {"amount": 1000.0}}, "amount"),
        ({"paymentData": {"amount": "1000"}}, "amount"),
        ({"paymentData": {"amount": True}}, "amount"),
        ({"amount": None, "paymentData": {"amount": 500_001}}, "amount"),
        ({"paymentData": {"amount": 2**64}}, "amount"),
        ({"paymentData": {"items": [{"code": "NOPE", "quantity": 1}]}}, "items"),
        ({"paymentData": {"items": [{"code": "WDF", "quantity": 0}]}}, "items"),
        ({"paymentData": {"items": [{"code": "WDF", "quantity": 1.5}]}}, "items[0].quantity"),
        ({"paymentData": {"items": [{"code": "WDF"}]}}, "items[0].quantity"),
        ({"paymentData": {"items": [{"code": "WDF", "quantity": 1}] * 2}}, "items"),
        ({"paymentData": {"items": "WDF"}}, "items"),
        ({"paymentData": {"amount": 300, "items": [{"code": "WDF", "quantity": 2}]}}, "amount"),
        ({"paymentData": {"amount": 1000, "currency": "XYZ"}}, "currency"),
        ({"paymentData": {"amount": 1000, "currency": "EUR"}}, "currency"),
        ({"paymentData": {"amount": 1000}, "amount": 1000}, "paymentData"),
        ({"paymentData": {"amount": 1000}, "customerData": "ada"}, "customerData"),
        ({"amount": 1000, "customerData": {"blob": "x" * 20_000}}, "customerData"),
    ],
)
async def test_bad_input_is_a_422_naming_the_field(
    client: httpx.AsyncClient, body: dict[str, Any], field: str
) -> None:
    response = await client.post(f"{API}/create-token", json=body)
    assert response.status_code == 422, response.text
    data = response.json()
    assert data["success"] is False
    assert field in data["errors"], data
    assert data["message"].startswith(field)
    # Nothing was leased.
    assert services_of(client).pool.status().locked == 0


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        (b"{not json", "malformed JSON"),
        (b"", "is required (a JSON object)"),
        (b"[1, 2]", "must be a JSON object"),
        (b'"amount"', "must be a JSON object"),
        (b"\xff\xfe\x00garbage", "malformed JSON"),
        (b"[" * 50_000, "malformed JSON"),
        (b'{"amount": ' + b"9" * 5000 + b"}", "malformed JSON"),
    ],
)
async def test_a_body_that_is_not_a_json_object_is_a_422(
    client: httpx.AsyncClient, raw: bytes, problem: str
) -> None:
    response = await client.post(
        f"{API}/create-token", content=raw, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422
    assert response.json() == {
        "success": False,
        "message": f"body: {problem}",
        "errors": {"body": problem},
    }


async def test_a_body_over_64_kib_is_a_413(client: httpx.AsyncClient) -> None:
    padding = "x" * (64 * 1024)
    response = await client.post(f"{API}/create-token", json={"amount": 1000, "pad": padding})
    assert response.status_code == 413
    assert response.json()["success"] is False
    assert "too large" in response.json()["message"]

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it arrives
        yield b'{"amount": 1000, "pad": "'
        for _ in range(70):
            yield b"y" * 1024
        yield b'"}'

    response = await client.post(f"{API}/create-token", content=chunks())
    assert response.status_code == 413
    # Just under the limit is read.
    response = await client.post(
        f"{API}/create-token", json={"amount": 1000, "pad": "z" * (60 * 1024)}
    )
    assert response.status_code == 201
    assert services_of(client).pool.status().locked == 1


async def test_an_exhausted_pool_is_a_503_with_retry_after(client: httpx.AsyncClient) -> None:
    for _ in PATHS:
        await create(client)
    response = await client.post(f"{API}/create-token", json={"amount": 1000})
    assert response.status_code == 503
    assert response.json()["success"] is False
    assert response.json()["message"] == SEED_EXHAUSTED
    retry_after = int(response.headers["Retry-After"])
    assert 590 <= retry_after <= 600  # the earliest lease ends in ten minutes
    assert response.json()["retryAfter"] == retry_after


# --- check-status and cancel-token --------------------------------------------------------


async def test_check_status_answers_the_payment(client: httpx.AsyncClient) -> None:
    created = await create(client, {"paymentData": {"items": [{"code": "BAG", "quantity": 2}]}})
    response = await client.get(f"{API}/check-status/{created['token']}")
    assert response.status_code == 200
    assert response.json() == {
        "success": True,
        "token": created["token"],
        "status": "pending",
        "amount": 2000,
        "currency": "USD",
        "transactionId": None,
        "errorMessage": None,
        "late": False,
        "expiresAt": created["expiresAt"],
    }


@pytest.mark.parametrize("token", ["nope", "x" * 5000, "%3Cscript%3E", "..%2F..%2Fetc"])
async def test_unknown_tokens_are_404(client: httpx.AsyncClient, token: str) -> None:
    for response in (
        await client.get(f"{API}/check-status/{token}"),
        await client.post(f"{API}/cancel-token/{token}"),
    ):
        assert response.status_code == 404
        assert response.json()["success"] is False
        # (an encoded slash makes it another path: not found either way)
        assert response.json()["message"] in ("Payment not found", "Not found")


async def test_cancel_frees_the_slot_once(client: httpx.AsyncClient) -> None:
    token = (await create(client))["token"]
    assert services_of(client).pool.status().locked == 1
    response = await client.post(f"{API}/cancel-token/{token}")
    assert response.status_code == 200
    assert response.json() == {"success": True, "status": "cancelled"}
    assert services_of(client).pool.status().locked == 0
    again = await client.post(f"{API}/cancel-token/{token}")
    assert again.status_code == 409
    assert again.json()["status"] == "cancelled"
    assert again.json()["success"] is False


async def test_cancel_after_the_return_is_refused_with_the_status(
    client: httpx.AsyncClient,
) -> None:
    created = await create(client)
    path = created["formConfig"]["callbackPath"]
    await client.get(
        path,
        params=[
            ("MerchantID", "demoMerchantWEB"),
            ("PNRef", "1"),
            ("Result", "0"),
            ("Amount", "10.00"),
        ],
    )
    response = await client.post(f"{API}/cancel-token/{created['token']}")
    assert response.status_code == 409
    assert response.json()["status"] == "completed"


# --- config and pool-stats ----------------------------------------------------------------


async def test_config_shows_the_public_form_settings(client: httpx.AsyncClient) -> None:
    response = await client.get(f"{API}/config")
    assert response.status_code == 200
    data = response.json()
    assert data["success"] is True
    assert data["formActionUrl"] == "https://safepay.paymentlogistics.net/transaction.asp"
    assert (data["merchantId"], data["formId"], data["currency"]) == (
        "demoMerchantWEB",
        "55015901455",
        "USD",
    )
    assert data["items"][0] == {
        "code": "WDF",
        "description": "Wash, dry and fold (per lb)",
        "price": 125,
        "priceText": "1.25",
    }
    assert data["maxAmount"] == 500_000
    assert data["sandbox"] is False
    assert ADMIN_TOKEN not in response.text


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": ADMIN_TOKEN},
        {"Authorization": f"Basic {ADMIN_TOKEN}"},
        {"Authorization": f"Bearer {ADMIN_TOKEN}x"},
    ],
)
async def test_pool_stats_needs_the_admin_token(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    token = (await create(client))["token"]
    response = await client.get(f"{API}/pool-stats", headers=headers)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert response.json()["success"] is False
    assert token not in response.text


async def test_pool_stats_without_a_configured_token_admits_no_one(
    make_client: ClientFactory,
) -> None:
    async with make_client(adminToken=None) as client:
        response = await client.get(f"{API}/pool-stats", headers={"Authorization": "Bearer "})
        assert response.status_code == 401
        assert "no admin token" in response.json()["message"]


async def test_pool_stats_shows_every_handler(client: httpx.AsyncClient) -> None:
    created = await create(client)
    response = await client.get(
        f"{API}/pool-stats", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
    )
    assert response.status_code == 200
    data = response.json()
    assert data["success"] is True
    stats = data["stats"]
    assert (stats["total"], stats["available"], stats["locked"]) == (10, 9, 1)
    # The same document as `callbackpool status --json`.
    assert set(stats) == {
        "at",
        "total",
        "available",
        "locked",
        "stuck",
        "tainted",
        "inactive",
        "outOfRotation",
        "standby",
        "waiting",
        "reserve",
        "capacity",
        "handlers",
    }
    assert len(stats["handlers"]) == 10
    held = next(h for h in stats["handlers"] if h["path"] == created["formConfig"]["callbackPath"])
    assert set(held) >= {
        "path",
        "isLocked",
        "lockedBy",
        "lockedAt",
        "expiresAt",
        "usageCount",
        "lastUsedAt",
        "taints",
    }
    assert held["isLocked"] is True
    assert held["state"] == "locked"
    assert held["lockedBy"] == created["token"]
    assert held["expiresAt"] == created["expiresAt"]
    assert held["usageCount"] == 1
    assert held["lastUsedAt"] == held["lockedAt"]
    assert held["taints"] == 0
    free = next(h for h in stats["handlers"] if h["path"] != held["path"])
    assert (free["isLocked"], free["lockedBy"], free["usageCount"]) == (False, None, 0)
