"""Capacity through the HTTP API (issue 7): the waiting room, priority, the heartbeat of
check-status, reserve paths in pool-stats. Through httpx, on the fake clock."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import httpx
import pytest

from callbackpool.testing import FakeClock
from callbackpool.web import create_app

from .conftest import ADMIN_TOKEN, PATHS, SettingsFactory, gateway_return, services_of, serving

pytestmark = pytest.mark.anyio

API = "/api/v1/payments"
OPERATOR = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
RESERVE = ["/api/v1/payments/callback/reserve-1", "/shop/returns/reserve-2"]

ClockedClient = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make_clocked(make_settings: SettingsFactory, clock: FakeClock) -> ClockedClient:
    def build(**keys: Any) -> AbstractAsyncContextManager[httpx.AsyncClient]:
        return serving(create_app(make_settings(**keys), clock=clock))

    return build


@pytest.fixture
async def client(make_clocked: ClockedClient) -> AsyncIterator[httpx.AsyncClient]:
    async with make_clocked() as client:
        yield client


async def create(client: httpx.AsyncClient, amount: int = 1000, **extra: Any) -> httpx.Response:
    return await client.post(
        f"{API}/create-token", json={"paymentData": {"amount": amount}, **extra}
    )


async def fill(client: httpx.AsyncClient, count: int = 10) -> list[dict[str, Any]]:
    created = []
    for n in range(count):
        response = await create(client, 5000 + n)
        assert response.status_code == 201, response.text
        created.append(response.json())
    return created


# --- the waiting room --------------------------------------------------------------------------


async def test_wait_gets_a_ticket_and_then_the_slot(client: httpx.AsyncClient) -> None:
    held = await fill(client)
    response = await create(client, 1000, wait=True)

    assert response.status_code == 202
    assert response.headers["Retry-After"] == "2"
    waiting = response.json()
    assert set(waiting) == {"success", "ticket", "position", "retryAfter"}
    assert (waiting["success"], waiting["position"], waiting["retryAfter"]) == (True, 1, 2)

    poll = await client.get(f"{API}/ticket/{waiting['ticket']}")
    assert poll.status_code == 202
    assert poll.json()["position"] == 1

    freed = await client.post(f"{API}/cancel-token/{held[3]['token']}")
    assert freed.status_code == 200
    granted = await client.get(f"{API}/ticket/{waiting['ticket']}")
    assert granted.status_code == 200
    payment = granted.json()
    assert set(payment) == {"success", "token", "status", "expiresAt", "formConfig"}
    assert payment["status"] == "pending"
    assert payment["formConfig"]["callbackPath"] == held[3]["formConfig"]["callbackPath"]
    assert payment["formConfig"]["fields"]["pxQty3"] == "1000"  # the ticket's own order
    again = await client.get(f"{API}/ticket/{waiting['ticket']}")
    assert again.json()["token"] == payment["token"]
    status = await client.get(f"{API}/check-status/{payment['token']}")
    assert (status.json()["status"], status.json()["amount"]) == ("pending", 1000)


async def test_a_request_without_a_ticket_does_not_jump_the_queue(
    client: httpx.AsyncClient,
) -> None:
    held = await fill(client)
    first = (await create(client, 1000, wait=True)).json()
    await client.post(f"{API}/cancel-token/{held[0]['token']}")

    refused = await create(client, 2000)
    assert refused.status_code == 503
    assert refused.json()["success"] is False
    second = await create(client, 2000, wait=True)
    assert (second.status_code, second.json()["position"]) == (202, 2)
    assert (await client.get(f"{API}/ticket/{first['ticket']}")).status_code == 200


async def test_priority_goes_first(client: httpx.AsyncClient) -> None:
    held = await fill(client)
    low = (await create(client, 1000, wait=True)).json()
    high = (await create(client, 2000, wait=True, priority=5)).json()
    assert (low["position"], high["position"]) == (1, 1)
    assert (await client.get(f"{API}/ticket/{low['ticket']}")).json()["position"] == 2

    await client.post(f"{API}/cancel-token/{held[0]['token']}")
    assert (await client.get(f"{API}/ticket/{low['ticket']}")).status_code == 202
    assert (await client.get(f"{API}/ticket/{high['ticket']}")).status_code == 200


async def test_unpolled_and_cancelled_tickets_are_gone(
    client: httpx.AsyncClient, clock: FakeClock
) -> None:
    await fill(client)
    expiring = (await create(client, 1000, wait=True)).json()
    clock.advance(10)
    gone = await client.get(f"{API}/ticket/{expiring['ticket']}")
    assert gone.status_code == 410
    assert gone.json()["status"] == "expired"
    assert "not polled in time" in gone.json()["message"]

    leaving = (await create(client, 1000, wait=True)).json()
    cancelled = await client.post(f"{API}/cancel-ticket/{leaving['ticket']}")
    assert cancelled.json() == {"success": True, "status": "cancelled"}
    assert (await client.get(f"{API}/ticket/{leaving['ticket']}")).status_code == 410
    assert (await client.post(f"{API}/cancel-ticket/{leaving['ticket']}")).status_code == 410
    unknown = await client.get(f"{API}/ticket/no-such-ticket")
    assert (unknown.status_code, unknown.json()["message"]) == (404, "Ticket not found")


@pytest.mark.parametrize(
    ("extra", "field"),
    [({"wait": "yes"}, "wait"), ({"priority": 99}, "priority"), ({"priority": "1"}, "priority")],
)
async def test_bad_wait_or_priority_names_the_field(
    client: httpx.AsyncClient, extra: dict[str, Any], field: str
) -> None:
    response = await create(client, 1000, **extra)
    assert response.status_code == 422
    assert field in response.json()["errors"]


# --- the heartbeat -----------------------------------------------------------------------------


async def test_check_status_is_the_heartbeat(client: httpx.AsyncClient, clock: FakeClock) -> None:
    polled = (await create(client, 1000)).json()
    silent = (await create(client, 2000)).json()
    for _ in range(5):  # the page polls, every 3 s, then is closed
        clock.advance(3)
        assert (await client.get(f"{API}/check-status/{polled['token']}")).status_code == 200
    clock.advance(76)

    status = (await client.get(f"{API}/check-status/{polled['token']}")).json()
    assert status["status"] == "expired"
    assert status["errorMessage"] == "the checkout page stopped polling"
    # A page that never polled keeps its lease to the lock timeout.
    services_of(client).pool.sweep()
    assert (await client.get(f"{API}/check-status/{silent['token']}")).json()["status"] == (
        "pending"
    )
    stats = (await client.get(f"{API}/pool-stats", headers=OPERATOR)).json()["stats"]
    assert stats["locked"] == 1
    freed = next(h for h in stats["handlers"] if h["path"] == polled["formConfig"]["callbackPath"])
    assert (freed["isLocked"], freed["taints"]) == (False, 1)


async def test_a_late_return_after_the_heartbeat_release_completes_the_payment(
    client: httpx.AsyncClient, clock: FakeClock
) -> None:
    created = (await create(client, 1000)).json()
    await client.get(f"{API}/check-status/{created['token']}")
    clock.advance(80)
    services_of(client).pool.sweep()
    returned = await client.get(
        created["formConfig"]["callbackPath"], params=gateway_return(amount="10.00")
    )
    assert returned.status_code == 303
    status = (await client.get(f"{API}/check-status/{created['token']}")).json()
    assert (status["status"], status["late"]) == ("completed", True)


# --- reserve paths -----------------------------------------------------------------------------


async def test_reserve_paths_come_into_rotation_and_show_in_pool_stats(
    make_clocked: ClockedClient,
) -> None:
    async with make_clocked(reservePaths=RESERVE) as client:
        idle = (await client.get(f"{API}/pool-stats", headers=OPERATOR)).json()["stats"]
        assert (idle["total"], idle["standby"], idle["reserve"]["state"]) == (10, 2, "idle")
        await fill(client)

        eleventh = await create(client, 1000)
        assert eleventh.status_code == 201
        path = eleventh.json()["formConfig"]["callbackPath"]
        assert path in RESERVE
        stats = (await client.get(f"{API}/pool-stats", headers=OPERATOR)).json()["stats"]
        reserve = stats["reserve"]
        assert (reserve["state"], reserve["inRotation"], stats["total"]) == ("active", 2, 12)
        (event,) = reserve["events"]
        assert (event["action"], event["paths"]) == ("activated", RESERVE)
        assert event["reason"].startswith("1 of 11 requests")
        assert stats["capacity"]["refused"] == 0
        assert [h["path"] for h in stats["handlers"] if h["reserve"]] == RESERVE

        # Both reserve paths take the gateway's return, under the guide's prefix or not.
        second = (await create(client, 2000)).json()
        routes = []
        for n, (created, amount) in enumerate(((eleventh.json(), "10.00"), (second, "20.00"))):
            route = created["formConfig"]["callbackPath"]
            routes.append(route)
            returned = await client.get(
                route, params=gateway_return(amount=amount, pn_ref=f"90000{n}")
            )
            assert returned.headers["location"].startswith("/payment-success")
        assert set(routes) == set(RESERVE)


async def test_pool_stats_shows_the_waiting_room_and_the_capacity_window(
    client: httpx.AsyncClient,
) -> None:
    await fill(client)
    await create(client, 1000, wait=True)
    assert (await create(client, 1000)).status_code == 503
    stats = (await client.get(f"{API}/pool-stats", headers=OPERATOR)).json()["stats"]
    assert stats["waiting"] == 1
    capacity = stats["capacity"]
    assert (capacity["leased"], capacity["waited"], capacity["refused"]) == (10, 1, 1)
    assert capacity["offeredErlangs"] is None  # no lease has ended yet
    assert len(PATHS) == capacity["slots"]


async def test_the_dashboard_shows_the_waiting_room_the_reserve_and_the_capacity_window(
    make_clocked: ClockedClient, clock: FakeClock
) -> None:
    async with make_clocked(reservePaths=RESERVE) as client:
        held = await fill(client)
        await create(client, 1000)  # the reserve comes into rotation
        await create(client, 2000)
        await create(client, 3000, wait=True)  # every slot leased: a ticket
        clock.advance(3)
        await client.post(f"{API}/cancel-token/{held[0]['token']}")  # a lease ends

        page = await client.get("/admin", headers=OPERATOR)
        assert page.status_code == 200
        html = page.text
        assert 'data-testid="waiting">1<' in html
        assert 'data-testid="reserve-state"' in html
        assert ">active</span>" in html
        assert "1 of 11 requests in the last 15 min found no slot at once" in html
        assert "<b>13</b> in all" in html
        assert "<b>1</b> waited" in html
        assert 'data-testid="slots-needed"' in html
        assert "12 in rotation" in html


async def test_metrics_show_the_waiting_room_and_the_capacity_window(
    client: httpx.AsyncClient, clock: FakeClock
) -> None:
    from .test_operations import metrics_of, value

    held = await fill(client)
    clock.advance(60)
    waiting = (await create(client, 1000, wait=True)).json()
    first = metrics_of((await client.get("/metrics", headers=OPERATOR)).text)
    assert value(first, "callbackpool_waiting") == 1
    assert value(first, "callbackpool_reserve_slots_in_rotation") == 0
    # Eleven requests in the window; no lease has ended yet, so no load estimate.
    assert value(first, "callbackpool_arrivals_per_hour") > 0
    assert ("callbackpool_offered_erlangs", ()) not in first

    await client.post(f"{API}/cancel-token/{held[0]['token']}")
    assert (await client.get(f"{API}/ticket/{waiting['ticket']}")).status_code == 200
    second = metrics_of((await client.get("/metrics", headers=OPERATOR)).text)
    assert value(second, "callbackpool_waiting") == 0
    # A lease held 60 s ended: arrivals × holding time, and Erlang B's answer for it.
    load = value(second, "callbackpool_offered_erlangs")
    assert load == pytest.approx(value(second, "callbackpool_arrivals_per_hour") * 60 / 3600)
    assert value(second, "callbackpool_slots_needed") >= 1
