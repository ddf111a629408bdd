"""The events feed (docs/integrating.md#events) through the ASGI app: a merchant key
required, events oldest first by cursor, and each event's data the payment exactly as
``GET /api/v1/payments/{id}`` showed it."""

from __future__ import annotations

import httpx
import pytest

from .conftest import ADMIN_TOKEN, ClientFactory, services_of
from .test_shop_api import API, APPROVE, attempt, create, merchant, shop_keys

pytestmark = pytest.mark.anyio

EVENTS = "/api/v1/events"


async def feed(client: httpx.AsyncClient, **params: str | int) -> httpx.Response:
    return await client.get(EVENTS, params=params, headers=merchant())


async def test_a_completed_payments_event_is_the_payment_as_get_shows_it(
    make_client: ClientFactory,
) -> None:
    async with make_client(**shop_keys()) as client:
        created = await create(client)
        assert (await feed(client)).json() == {"success": True, "data": [], "nextCursor": None}
        await attempt(client, created["token"], APPROVE)
        read = (await client.get(f"{API}/{created['id']}", headers=merchant())).json()
        answer = await feed(client)
        assert answer.status_code == 200
        body = answer.json()
        [event] = body["data"]
        assert body["nextCursor"] == event["id"]
        assert event["id"].startswith("evt_")
        assert (event["type"], event["sequence"]) == ("payment.completed", 1)
        assert event["createdAt"] == read["updatedAt"]
        del read["success"]
        assert event["data"] == read
        assert created["token"] not in answer.text


async def test_the_feed_pages_oldest_first_and_refuses_an_unknown_cursor(
    make_client: ClientFactory,
) -> None:
    async with make_client(**shop_keys()) as client:
        ids = []
        for i in range(3):
            created = await create(client, orderReference=f"o{i}")
            await client.post(f"{API}/{created['id']}/cancel", headers=merchant())
            ids.append(created["id"])
        first = (await feed(client, limit=2)).json()
        assert [e["data"]["id"] for e in first["data"]] == ids[:2]
        assert {e["type"] for e in first["data"]} == {"payment.cancelled"}
        rest = (await feed(client, after=first["nextCursor"])).json()
        assert [e["data"]["id"] for e in rest["data"]] == ids[2:]
        done = (await feed(client, after=rest["nextCursor"])).json()
        assert (done["data"], done["nextCursor"]) == ([], None)
        unknown = await feed(client, after="evt_0123456789abcdef01234567")
        assert unknown.status_code == 422
        assert "after" in unknown.json()["errors"]
        for limit in (0, 101):
            assert (await feed(client, limit=limit)).status_code == 422


async def test_the_feed_needs_a_merchant_key(make_client: ClientFactory) -> None:
    async with make_client(**shop_keys()) as client:
        pool = services_of(client).pool
        checkout = pool.create_payment(amount=1000)
        pool.cancel_payment(checkout.payment.token)
        assert (await client.get(EVENTS)).status_code == 401
        as_admin = await client.get(EVENTS, headers=merchant(ADMIN_TOKEN))
        assert as_admin.status_code == 401
        assert as_admin.json()["success"] is False
        assert len((await feed(client)).json()["data"]) == 1
