"""Token guessing (issue 5): check-status and cancel reveal nothing for a token that names
no payment, well-formed or not, but a 404 with one body."""

from __future__ import annotations

import random
import secrets
import string

import httpx
import pytest

from callbackpool.domain.model import Payment, PaymentStatus
from callbackpool.store.tx import Tx

from .conftest import services_of

pytestmark = pytest.mark.anyio

API = "/api/v1/payments"
NOT_FOUND = {"success": False, "message": "Payment not found"}
MALFORMED = [
    "",
    "x" * 10_000,
    "ünïcödé",
    "a/b",
    "..%2Fconfig",
    "%00",
    "%2F",
    "tok%20en",
    "<script>alert(1)</script>",
    "' OR '1'='1",
    "t" * 129,
]


def random_tokens(count: int) -> list[str]:
    rng = random.Random(5)
    alphabet = string.ascii_letters + string.digits + "-_"
    tokens = [secrets.token_urlsafe(24) for _ in range(count // 2)]
    tokens += ["".join(rng.choices(alphabet, k=rng.randint(1, 64))) for _ in range(count // 2)]
    return tokens


async def test_a_thousand_random_tokens_get_404_only(client: httpx.AsyncClient) -> None:
    real = (await client.post(f"{API}/create-token", json={"amount": 1000})).json()["token"]
    tokens = random_tokens(1000)
    assert real not in tokens
    for token in tokens:
        status = await client.get(f"{API}/check-status/{token}")
        cancel = await client.post(f"{API}/cancel-token/{token}")
        assert (status.status_code, status.json()) == (404, NOT_FOUND), token
        assert (cancel.status_code, cancel.json()) == (404, NOT_FOUND), token
    # The real payment is untouched by the guessing.
    assert services_of(client).pool.get_payment(real).status is PaymentStatus.PENDING


@pytest.mark.parametrize("token", MALFORMED, ids=range(len(MALFORMED)))
async def test_malformed_tokens_get_the_same_404(client: httpx.AsyncClient, token: str) -> None:
    status = await client.get(f"{API}/check-status/{token}")
    cancel = await client.post(f"{API}/cancel-token/{token}")
    assert (status.status_code, status.json()) == (404, NOT_FOUND)
    assert (cancel.status_code, cancel.json()) == (404, NOT_FOUND)
    assert status.headers["content-type"] == cancel.headers["content-type"] == "application/json"


async def test_unknown_and_malformed_tokens_take_similar_work(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both are answered after one look-up each (a malformed token as what no token is)."""
    asked: list[str] = []
    original = Tx.get_payment

    def get_payment(tx: Tx, token: str) -> Payment | None:
        asked.append(token)
        return original(tx, token)

    monkeypatch.setattr(Tx, "get_payment", get_payment)
    for token in ("well-formed-but-unknown", "x" * 10_000, "%00", "a/b"):
        asked.clear()
        await client.get(f"{API}/check-status/{token}")
        await client.post(f"{API}/cancel-token/{token}")
        assert len(asked) == 2, token
    assert asked == ["", ""]  # the last, malformed, was looked up as what no token is


@pytest.mark.parametrize("ticket", ["unknown", *MALFORMED], ids=range(len(MALFORMED) + 1))
async def test_tickets_of_the_waiting_room_are_answered_alike(
    client: httpx.AsyncClient, ticket: str
) -> None:
    poll = await client.get(f"{API}/ticket/{ticket}")
    cancel = await client.post(f"{API}/cancel-ticket/{ticket}")
    assert poll.status_code == cancel.status_code == 404
    assert poll.json() == cancel.json()
    assert poll.json()["success"] is False
