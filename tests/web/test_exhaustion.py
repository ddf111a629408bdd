"""Pool exhaustion (issue 5): one client firing create-token in a loop is limited and the
others still get slots; one customer holds a few live leases at most. Both answer 429 with
Retry-After."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from callbackpool.web import create_app

from .conftest import ADMIN_TOKEN, BASE_URL, SettingsFactory

pytestmark = pytest.mark.anyio

CREATE = "/api/v1/payments/create-token"


@asynccontextmanager
async def clients(app: FastAPI, *addresses: str) -> AsyncIterator[list[httpx.AsyncClient]]:
    """A client for each address, all speaking to one running app."""
    async with app.router.lifespan_context(app), AsyncExitStack() as stack:
        made = []
        for address in addresses:
            transport = httpx.ASGITransport(app=app, client=(address, 40000))
            made.append(
                await stack.enter_async_context(
                    httpx.AsyncClient(transport=transport, base_url=BASE_URL)
                )
            )
        yield made


async def test_one_client_in_a_loop_is_limited_and_the_others_still_get_slots(
    make_settings: SettingsFactory,
) -> None:
    app = create_app(make_settings(createTokenRatePerMinute=4))
    async with clients(app, "203.0.113.66", "198.51.100.1", "198.51.100.2") as (flood, *others):
        answers = [(await flood.post(CREATE, json={"amount": 1000})) for _ in range(40)]
        statuses = [answer.status_code for answer in answers]
        assert statuses[:4] == [201] * 4
        assert set(statuses[4:]) == {429}
        refused = answers[-1]
        assert int(refused.headers["Retry-After"]) == 15  # 60 s / 4 a minute
        assert refused.json() == {
            "success": False,
            "message": "Too many requests from this address: wait a moment before trying again",
            "retryAfter": 15,
        }
        for other in others:
            response = await other.post(CREATE, json={"amount": 1000})
            assert response.status_code == 201, response.text
    # Only the flood's first four and the two others' leases hold slots.
    assert app.state.services.pool.status().locked == 6


async def test_the_limit_counts_the_client_behind_the_trusted_proxy(
    make_settings: SettingsFactory,
) -> None:
    app = create_app(make_settings(createTokenRatePerMinute=1, trustedProxies=["10.0.0.0/8"]))
    async with clients(app, "10.0.0.2") as [proxy]:

        async def create(client_address: str) -> int:
            headers = {"X-Forwarded-For": client_address}
            return (await proxy.post(CREATE, json={"amount": 1000}, headers=headers)).status_code

        assert [await create("203.0.113.1"), await create("203.0.113.1")] == [201, 429]
        assert await create("203.0.113.2") == 201
        # What a client writes into the header itself does not make it someone else.
        assert await create("203.0.113.9, 203.0.113.1") == 429


async def test_zero_turns_the_rate_limit_off(make_settings: SettingsFactory) -> None:
    app = create_app(make_settings(createTokenRatePerMinute=0, maxLiveLeasesPerCustomer=0))
    async with clients(app, "203.0.113.66") as [client]:
        statuses = [
            (await client.post(CREATE, json={"amount": 1000})).status_code for _ in range(12)
        ]
    assert statuses == [201] * 10 + [503] * 2  # the pool itself runs out, nothing else


async def test_a_customer_holds_three_live_leases_at_most(make_settings: SettingsFactory) -> None:
    app = create_app(make_settings())
    body: dict[str, Any] = {"amount": 1000, "customerData": {"email": "Ann@Example.com"}}
    async with clients(app, "198.51.100.1", "198.51.100.2") as (first, second):
        held = [await first.post(CREATE, json=body) for _ in range(3)]
        assert [response.status_code for response in held] == [201] * 3
        lower = {**body, "customerData": {"email": "ann@example.com"}}
        refused = await second.post(CREATE, json=lower)  # another address: still Ann
        assert refused.status_code == 429
        assert refused.headers["Retry-After"] == "600"
        assert refused.json()["retryAfter"] == 600
        assert "as many payments in progress as allowed" in refused.json()["message"]
        other = await second.post(CREATE, json={"amount": 1000, "customerData": {"email": "bob@x"}})
        assert other.status_code == 201
        # Cancelling one of hers frees a place at once.
        token = held[0].json()["token"]
        assert (await first.post(f"/api/v1/payments/cancel-token/{token}")).status_code == 200
        assert (await second.post(CREATE, json=lower)).status_code == 201


async def test_every_refusal_is_counted_in_the_metrics(make_settings: SettingsFactory) -> None:
    app = create_app(make_settings(createTokenRatePerMinute=3, maxLiveLeasesPerCustomer=1))
    body: dict[str, Any] = {"amount": 1000, "customerData": {"email": "ann@example.com"}}
    async with clients(app, "203.0.113.66", "198.51.100.1") as (flood, other):
        statuses = [(await flood.post(CREATE, json={"amount": 1000})).status_code for _ in range(5)]
        assert statuses == [201, 201, 201, 429, 429]
        assert [(await other.post(CREATE, json=body)).status_code for _ in range(2)] == [201, 429]
        foreign = await other.post(
            CREATE, json={"amount": 1}, headers={"Origin": "https://x.example"}
        )
        assert foreign.status_code == 403
        scraped = await other.get("/metrics", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    refusals = {
        reason: float(value)
        for reason, value in re.findall(
            r'^callbackpool_create_token_refusals_total\{reason="(\w+)"\} (\S+)$',
            scraped.text,
            re.MULTILINE,
        )
    }
    assert refusals == {
        "pool_exhausted": 0,
        "invalid": 0,
        "customer_cap": 1,
        "rate_limited": 2,
        "cross_site": 1,
    }
