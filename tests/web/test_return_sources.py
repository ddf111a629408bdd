"""The source-address allowlist of gateway returns, behind a reverse proxy."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from callbackpool.domain.model import CallbackOutcome
from callbackpool.web import create_app

from .conftest import BASE_URL, SettingsFactory, gateway_return, services_of

pytestmark = pytest.mark.anyio

API = "/api/v1/payments"
GATEWAY = "198.51.100.20"
PROXY = "10.0.0.2"
KEYS: dict[str, Any] = {"returnSources": ["198.51.100.0/24"], "trustedProxies": ["10.0.0.0/8"]}


@asynccontextmanager
async def from_peer(
    make_settings: SettingsFactory, peer: str, **keys: Any
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(make_settings(**keys))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=(peer, 40000))
        async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
            yield client


async def pay_back(client: httpx.AsyncClient, **headers: str) -> tuple[str, CallbackOutcome, Any]:
    created = (await client.post(f"{API}/create-token", json={"amount": 1000})).json()
    response = await client.get(
        created["formConfig"]["callbackPath"], params=gateway_return(), headers=headers
    )
    assert response.status_code == 303
    with services_of(client).store.read() as tx:
        [record] = tx.callbacks(limit=1)
    status = (await client.get(f"{API}/check-status/{created['token']}")).json()["status"]
    return status, record.outcome, record.client_addr


async def test_a_return_from_the_gateway_through_the_proxy_applies(
    make_settings: SettingsFactory,
) -> None:
    async with from_peer(make_settings, PROXY, **KEYS) as client:
        status, outcome, recorded = await pay_back(client, **{"X-Forwarded-For": GATEWAY})
    assert (status, outcome, recorded) == ("completed", CallbackOutcome.APPLIED, GATEWAY)


async def test_a_forged_header_from_an_untrusted_peer_is_not_believed(
    make_settings: SettingsFactory,
) -> None:
    async with from_peer(make_settings, "203.0.113.7", **KEYS) as client:
        status, outcome, recorded = await pay_back(client, **{"X-Forwarded-For": GATEWAY})
    assert (status, outcome, recorded) == ("pending", CallbackOutcome.REJECTED, "203.0.113.7")


async def test_a_client_cannot_prepend_the_gateway_to_the_proxys_header(
    make_settings: SettingsFactory,
) -> None:
    async with from_peer(make_settings, PROXY, **KEYS) as client:
        status, outcome, recorded = await pay_back(
            client, **{"X-Forwarded-For": f"{GATEWAY}, 203.0.113.7"}
        )
    assert (status, outcome, recorded) == ("pending", CallbackOutcome.REJECTED, "203.0.113.7")


async def test_another_forwarded_header_can_be_configured(
    make_settings: SettingsFactory,
) -> None:
    keys = {**KEYS, "forwardedHeader": "X-Real-IP"}
    async with from_peer(make_settings, PROXY, **keys) as client:
        status, outcome, _ = await pay_back(client, **{"X-Real-IP": GATEWAY})
    assert (status, outcome) == ("completed", CallbackOutcome.APPLIED)
