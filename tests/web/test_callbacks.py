"""The callback routes: GET and POST on the pool's paths, always a 303 to a page."""

from __future__ import annotations

import sqlite3
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest

from callbackpool.domain.errors import StoreUnavailable
from callbackpool.domain.model import CallbackOutcome

from .conftest import PATHS, ClientFactory, gateway_return, services_of

pytestmark = pytest.mark.anyio

API = "/api/v1/payments"
FORM = "application/x-www-form-urlencoded"


async def create(client: httpx.AsyncClient, amount: int = 1000) -> dict[str, Any]:
    response = await client.post(f"{API}/create-token", json={"paymentData": {"amount": amount}})
    assert response.status_code == 201
    data: dict[str, Any] = response.json()
    return data


async def status_of(client: httpx.AsyncClient, token: str) -> dict[str, Any]:
    data: dict[str, Any] = (await client.get(f"{API}/check-status/{token}")).json()
    return data


def query(location: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


def stored(client: httpx.AsyncClient) -> list[Any]:
    with services_of(client).store.read() as tx:
        return sorted(tx.callbacks(limit=1000), key=lambda c: c.id)


async def test_an_approved_return_by_get_completes_the_payment(client: httpx.AsyncClient) -> None:
    created = await create(client)
    path = created["formConfig"]["callbackPath"]
    response = await client.get(path, params=gateway_return())
    assert response.status_code == 303
    location = response.headers["location"]
    assert location.startswith("/payment-success?ref=CB-1&receipt=")
    assert created["token"] not in location
    status = await status_of(client, created["token"])
    assert (status["status"], status["transactionId"], status["late"]) == (
        "completed",
        "804322218",
        False,
    )
    assert services_of(client).pool.status().locked == 0
    # The core got the return as it came: method, parameters, and the client's address.
    [record] = stored(client)
    assert (record.path, record.method, record.client_addr) == (path, "GET", "203.0.113.7")
    assert record.params == tuple(gateway_return())
    assert record.outcome is CallbackOutcome.APPLIED


async def test_a_return_by_post_form_completes_the_payment(client: httpx.AsyncClient) -> None:
    created = await create(client)
    response = await client.post(created["formConfig"]["callbackPath"], data=dict(gateway_return()))
    assert response.status_code == 303
    assert response.headers["location"].startswith("/payment-success?")
    assert (await status_of(client, created["token"]))["status"] == "completed"
    assert stored(client)[0].method == "POST"


async def test_a_return_by_multipart_post_is_read_too(client: httpx.AsyncClient) -> None:
    created = await create(client)
    response = await client.post(
        created["formConfig"]["callbackPath"],
        data=dict(gateway_return()),
        files={"ignored": ("f.txt", b"file parts are not parameters")},
    )
    assert response.status_code == 303
    assert (await status_of(client, created["token"]))["status"] == "completed"


async def test_a_declined_return_fails_the_payment(client: httpx.AsyncClient) -> None:
    created = await create(client)
    response = await client.get(
        created["formConfig"]["callbackPath"], params=gateway_return(result="12")
    )
    assert response.status_code == 303
    target = query(response.headers["location"])
    assert response.headers["location"].startswith("/payment-error?")
    assert target["reason"] == "declined"
    assert target["ref"].startswith("CB-")
    status = await status_of(client, created["token"])
    assert status["status"] == "failed"
    assert "12" in status["errorMessage"]


async def test_a_duplicate_return_changes_nothing_and_gets_the_same_answer(
    client: httpx.AsyncClient,
) -> None:
    created = await create(client)
    path = created["formConfig"]["callbackPath"]
    first = await client.get(path, params=gateway_return())
    before = await status_of(client, created["token"])
    second = await client.post(path, data=dict(gateway_return()))
    assert second.status_code == 303
    assert second.headers["location"] == first.headers["location"]
    assert await status_of(client, created["token"]) == before
    assert [r.outcome for r in stored(client)] == [
        CallbackOutcome.APPLIED,
        CallbackOutcome.DUPLICATE,
    ]


@pytest.mark.parametrize(
    "params",
    [
        [],
        [("Result", "0")],
        [*gateway_return(), ("PNRef", "2")],
        [(k, "x" * 10_000 if k == "PNRef" else v) for k, v in gateway_return()],
        [(k, "<script>alert(1)</script>" if k == "Amount" else v) for k, v in gateway_return()],
        [(k, "ünïcödé" if k == "OrderID" else v) for k, v in gateway_return()],
        gateway_return(merchant="someoneElse"),
        gateway_return(amount="99.99"),
    ],
    ids=[
        "empty",
        "no-pnref",
        "repeated",
        "huge",
        "html",
        "non-ascii",
        "forged-merchant",
        "other-amount",
    ],
)
async def test_bad_returns_are_stored_and_answered_with_the_error_page(
    client: httpx.AsyncClient, params: list[tuple[str, str]]
) -> None:
    created = await create(client)
    path = created["formConfig"]["callbackPath"]
    for method in ("GET", "POST"):
        if method == "GET":
            response = await client.get(path, params=params)
        else:
            response = await client.post(
                path, content=urlencode(params), headers={"Content-Type": FORM}
            )
        assert response.status_code == 303
        assert response.headers["location"].startswith("/payment-error?")
        assert query(response.headers["location"])["ref"].startswith("CB-")
    assert (await status_of(client, created["token"]))["status"] == "pending"
    assert len(stored(client)) == 2


async def test_only_the_pools_paths_take_returns(client: httpx.AsyncClient) -> None:
    for path in (f"{API}/callback/handler-11", f"{API}/callback/form-3", "/callback/handler-1"):
        for method in ("GET", "POST"):
            response = await client.request(method, path, params=gateway_return())
            assert response.status_code in (404, 405)
            if path.startswith("/api/"):
                assert response.json()["success"] is False
    assert stored(client) == []


async def test_a_path_removed_from_the_configuration_still_takes_late_returns(
    make_client: ClientFactory,
) -> None:
    async with make_client() as client:
        created = await create(client)
        path = created["formConfig"]["callbackPath"]
        await client.post(f"{API}/cancel-token/{created['token']}")
    # Restarted with that path gone from the configuration (the same database).
    async with make_client(callbackPaths=[p for p in PATHS if p != path]) as client:
        response = await client.get(path, params=gateway_return())
        assert response.status_code == 303
        assert response.headers["location"].startswith("/payment-success?")
        status = await status_of(client, created["token"])
        assert (status["status"], status["late"]) == ("completed", True)


async def test_paths_outside_the_guides_prefix_are_served(make_client: ClientFactory) -> None:
    paths = ["/hooks/paygistix/a", "/hooks/paygistix/b"]
    async with make_client(callbackPaths=paths) as client:
        first, second = await create(client), await create(client, 2000)
        assert {first["formConfig"]["callbackPath"], second["formConfig"]["callbackPath"]} == set(
            paths
        )
        response = await client.get(first["formConfig"]["callbackPath"], params=gateway_return())
        assert response.status_code == 303
        response = await client.post(
            second["formConfig"]["callbackPath"],
            data=dict(gateway_return(amount="20.00", pn_ref="7", result="5")),
        )
        assert response.status_code == 303
        assert (await status_of(client, first["token"]))["status"] == "completed"
        assert (await status_of(client, second["token"]))["status"] == "failed"


async def test_a_return_that_fails_inside_still_lands_on_the_error_page(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("the parser caught fire")

    pool = services_of(client).pool
    # The return is stored, then its resolution fails (it reads the return first).
    monkeypatch.setattr(pool.gateway, "parse_return", broken)
    response = await client.get(PATHS[0], params=gateway_return())
    assert response.status_code == 303
    assert query(response.headers["location"]) == {"reason": "processing"}
    # Stored before its resolution began: kept for the sweeper to resolve.
    assert pool.callback_counts()[CallbackOutcome.RECEIVED] == 1


async def test_an_oversized_return_lands_on_the_error_page(client: httpx.AsyncClient) -> None:
    response = await client.post(
        PATHS[0], content=b"PNRef=" + b"1" * 70_000, headers={"Content-Type": FORM}
    )
    assert response.status_code == 303
    assert response.headers["location"].startswith("/payment-error?")


async def test_a_return_has_committed_before_its_resolution_begins(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Invariant 4: another connection (another process) sees the stored return when its
    resolution starts (the resolution reads the return's parameters first)."""
    created = await create(client)
    services = services_of(client)
    gateway, path = services.pool.gateway, services.store.path  # type: ignore[attr-defined]
    parse = gateway.parse_return
    seen: list[tuple[Any, ...]] = []

    def parse_once_stored(params: Any) -> Any:
        with sqlite3.connect(path) as other:
            seen.extend(other.execute("SELECT id, outcome FROM callbacks").fetchall())
        return parse(params)

    monkeypatch.setattr(gateway, "parse_return", parse_once_stored)
    response = await client.get(created["formConfig"]["callbackPath"], params=gateway_return())
    assert response.headers["location"].startswith("/payment-success?ref=CB-1&")
    # The first parse is the resolution's start; the completed payment's event parses the
    # attempt's return again, before the resolution commits.
    assert seen[0] == (1, "received")
    assert set(seen) == {(1, "received")}


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_a_return_the_database_cannot_take_now_is_sent_again_by_its_page(
    client: httpx.AsyncClient,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    method: str,
) -> None:
    # On the error page the return would be lost; the page answered instead sends the same
    # return again after Retry-After, and once the database is back it is stored.
    created = await create(client)
    path, params = created["formConfig"]["callbackPath"], gateway_return()
    pool = services_of(client).pool
    handle = pool.handle_callback

    def away(*args: object, **kwargs: object) -> None:
        raise StoreUnavailable("PostgreSQL is unavailable (insert callback): server closed")

    monkeypatch.setattr(pool, "handle_callback", away)
    if method == "GET":
        response = await client.get(path, params=params)
    else:
        response = await client.post(path, data=dict(params))
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"
    assert response.headers["Cache-Control"] == "no-store"
    assert "Please do not pay again" in response.text
    if method == "GET":
        assert '<meta http-equiv="refresh" content="5">' in response.text
        assert "<form" not in response.text
    else:
        assert f'<form id="return-again" method="post" action="{path}"' in response.text
        for name, value in params:
            assert f'<input type="hidden" name="{name}" value="{value}">' in response.text
        assert "return-again.js" in response.text
    assert stored(client) == []
    assert any(
        r.levelname == "ERROR"
        and "not stored" in r.getMessage()
        and "PNRef=804322218" in r.getMessage()
        for r in caplog.records
    )

    monkeypatch.setattr(pool, "handle_callback", handle)
    again = await (
        client.get(path, params=params) if method == "GET" else client.post(path, data=dict(params))
    )
    assert again.status_code == 303
    assert again.headers["location"].startswith("/payment-success?ref=CB-1&receipt=")
    assert (await status_of(client, created["token"]))["status"] == "completed"
