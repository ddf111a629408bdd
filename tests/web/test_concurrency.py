"""Requests side by side: the routes' pool calls run in FastAPI's thread pool, so one that
takes its time (a transaction waiting on the database) holds up no other request."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import anyio
import httpx
import pytest

from .conftest import ADMIN_TOKEN, services_of

pytestmark = pytest.mark.anyio

API = "/api/v1/payments"


async def test_a_slow_pool_call_holds_up_no_other_request(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    pool = services_of(client).pool
    create = pool.create_payment
    started, go_on = threading.Event(), threading.Event()

    def slow_create(**order: Any) -> Any:
        started.set()
        assert go_on.wait(10), "the other requests were not answered meanwhile"
        return create(**order)

    monkeypatch.setattr(pool, "create_payment", slow_create)
    slow = asyncio.ensure_future(client.post(f"{API}/create-token", json={"amount": 1000}))
    try:
        assert await anyio.to_thread.run_sync(started.wait, 5)
        with anyio.fail_after(5):
            health = await client.get("/healthz")
            stats = await client.get(
                f"{API}/pool-stats", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
            )
            unknown = await client.get(f"{API}/check-status/no-such-token")
        assert not slow.done()
    finally:
        go_on.set()
    assert health.status_code == 200
    assert (stats.status_code, stats.json()["stats"]["locked"]) == (200, 0)
    assert unknown.status_code == 404
    created = await slow
    assert (created.status_code, created.json()["status"]) == (201, "pending")
