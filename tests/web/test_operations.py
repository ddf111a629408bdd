"""Issue 6 through the HTTP API: health, metrics after a scripted run (exact numbers), the
operator API, the dashboard's sign-in and forms, and what the log says."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from callbackpool.domain.errors import StoreUnavailable
from callbackpool.testing import FakeClock
from callbackpool.web import create_app

from .conftest import ADMIN_TOKEN, BASE_URL, PATHS, SettingsFactory, gateway_return, serving

pytestmark = pytest.mark.anyio

API = "/api/v1/payments"
ADMIN = "/api/v1/admin"
BEARER = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def client(
    make_settings: SettingsFactory, clock: FakeClock
) -> AsyncIterator[httpx.AsyncClient]:
    async with serving(create_app(make_settings(), clock=clock)) as client:
        yield client


async def create(client: httpx.AsyncClient, amount: int) -> dict[str, Any]:
    response = await client.post(f"{API}/create-token", json={"amount": amount})
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()
    return data


async def pay(
    client: httpx.AsyncClient, path: str, amount: str, pn_ref: str, result: str = "0"
) -> None:
    params = gateway_return(amount=amount, pn_ref=pn_ref, result=result)
    response = await client.get(path, params=params)
    assert response.status_code == 303


def metrics_of(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(metrics: dict[Any, float], name: str, **labels: str) -> float:
    return metrics[(name, tuple(sorted(labels.items())))]


async def scripted_run(client: httpx.AsyncClient, clock: FakeClock) -> dict[str, Any]:
    """Ten payments fill the pool: two paid (one of them told twice), one declined, one
    cancelled; two requests turned away, one refused as invalid; a return on a free path
    matches nothing; then the ten leases left run out their ten minutes, swept."""
    made = [await create(client, 1000 + n) for n in range(10)]
    path = [m["formConfig"]["callbackPath"] for m in made]
    await pay(client, path[0], "10.00", "P0")
    await pay(client, path[0], "10.00", "P0")  # the same return again
    await pay(client, path[1], "10.01", "P1")
    await pay(client, path[2], "10.02", "P2", result="12")
    assert (await client.post(f"{API}/cancel-token/{made[3]['token']}")).status_code == 200
    for _ in range(4):
        await create(client, 2000)  # four slots free again: these take them
    for _ in range(2):
        refused = await client.post(f"{API}/create-token", json={"amount": 3000})
        assert refused.status_code == 503
    assert (await client.post(f"{API}/create-token", json={"amount": -5})).status_code == 422
    await pay(client, path[0], "99.00", "U1")  # nothing of that amount on handler-1
    clock.advance(timedelta(minutes=11))
    report = client._transport.app.state.services.pool.sweep()  # type: ignore[attr-defined]
    assert report.expired == 10
    return {"made": made}


async def test_metrics_after_a_scripted_run_show_its_numbers(
    client: httpx.AsyncClient, clock: FakeClock
) -> None:
    await scripted_run(client, clock)
    response = await client.get("/metrics", headers=BEARER)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    m = metrics_of(response.text)

    assert value(m, "callbackpool_leases_started_total") == 14
    assert value(m, "callbackpool_leases_ended_total", reason="callback") == 3
    assert value(m, "callbackpool_leases_ended_total", reason="cancelled") == 1
    assert value(m, "callbackpool_leases_ended_total", reason="expired") == 10
    assert value(m, "callbackpool_leases_ended_total", reason="admin") == 0
    assert value(m, "callbackpool_lease_acquisition_seconds_count") == 14
    assert value(m, "callbackpool_create_token_refusals_total", reason="pool_exhausted") == 2
    assert value(m, "callbackpool_create_token_refusals_total", reason="invalid") == 1
    assert value(m, "callbackpool_callbacks_total", outcome="applied") == 3
    assert value(m, "callbackpool_callbacks_total", outcome="duplicate") == 1
    assert value(m, "callbackpool_callbacks_total", outcome="unmatched") == 1
    assert value(m, "callbackpool_callbacks_total", outcome="rejected") == 0
    assert value(m, "callbackpool_sweeps_total", result="ok") == 1
    assert value(m, "callbackpool_last_sweep_timestamp_seconds") > 0
    # Read from the database at the scrape.
    assert value(m, "callbackpool_database_up") == 1
    assert value(m, "callbackpool_slots") == 10
    assert value(m, "callbackpool_slots_available") == 10
    assert value(m, "callbackpool_slots_leased") == 0
    assert value(m, "callbackpool_slots_stuck") == 0
    assert value(m, "callbackpool_slots_tainted") == 10  # every slot had a lease expire
    assert value(m, "callbackpool_slots_out_of_rotation") == 0
    assert value(m, "callbackpool_payments", status="completed") == 2
    assert value(m, "callbackpool_payments", status="failed") == 1
    assert value(m, "callbackpool_payments", status="cancelled") == 1
    assert value(m, "callbackpool_payments", status="expired") == 10
    assert value(m, "callbackpool_payments", status="pending") == 0
    assert value(m, "callbackpool_slot_expiry_streak", path=PATHS[4]) == 1
    assert value(m, "callbackpool_slot_in_rotation", path=PATHS[4]) == 1
    first_return = value(m, "callbackpool_slot_last_return_timestamp_seconds", path=PATHS[0])
    assert first_return == FakeClock().now().timestamp()
    assert value(m, "callbackpool_slot_last_return_timestamp_seconds", path=PATHS[9]) == 0


async def test_two_apps_on_one_database_agree_on_the_database_figures(
    make_settings: SettingsFactory, clock: FakeClock
) -> None:
    settings = make_settings()
    async with (
        serving(create_app(settings, clock=clock)) as one,
        serving(create_app(settings, clock=clock)) as two,
    ):
        await create(one, 1000)
        await create(two, 2000)
        first = metrics_of((await one.get("/metrics", headers=BEARER)).text)
        second = metrics_of((await two.get("/metrics", headers=BEARER)).text)
    assert (
        value(first, "callbackpool_slots_leased") == value(second, "callbackpool_slots_leased") == 2
    )
    assert value(first, "callbackpool_leases_started_total") == 1  # counters: per process
    assert value(second, "callbackpool_leases_started_total") == 1


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer nope"}])
async def test_metrics_need_the_token_by_default(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    response = await client.get("/metrics", headers=headers)
    assert response.status_code == 401
    assert "callbackpool_" not in response.text


async def test_metrics_can_be_public(make_settings: SettingsFactory) -> None:
    async with serving(create_app(make_settings(metricsRequireToken=False))) as client:
        response = await client.get("/metrics")
    assert response.status_code == 200
    assert "callbackpool_slots 10.0" in response.text


async def test_healthz_and_readyz(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {
        "status": "ready",
        "database": "ok",
        "migrations": "current",
        "sweeper": "running",
    }


class Broken:
    """A store whose reads fail, or that is missing migrations."""

    def __init__(self, store: Any, *, pending: list[tuple[str, str]] | None = None) -> None:
        self._store = store
        self._pending = pending
        self.down = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def pending_migrations(self) -> list[tuple[str, str]]:
        return self._pending if self._pending is not None else self._store.pending_migrations()

    @contextmanager
    def read(self) -> Iterator[Any]:
        if self.down:
            raise StoreUnavailable("SQLite database is busy: test")
        with self._store.read() as tx:
            yield tx


async def test_readyz_says_why_it_is_not_ready(make_settings: SettingsFactory) -> None:
    from callbackpool.store.sqlite import SqliteStore

    settings = make_settings()
    path = settings.database_url.removeprefix("sqlite:///")
    broken = Broken(SqliteStore(path), pending=[("0099_future", "")])
    async with serving(create_app(settings, store=broken)) as client:  # type: ignore[arg-type]
        pending = await client.get("/readyz")
        assert pending.status_code == 503
        assert pending.headers["Retry-After"] == "5"
        assert pending.json() == {
            "status": "unavailable",
            "reasons": ["migrations pending: 0099_future (run 'callbackpool migrate')"],
        }
        broken.down = True
        down = await client.get("/readyz")
        assert down.json()["reasons"] == ["the database is unavailable"]
        assert (await client.get("/healthz")).status_code == 200  # the process still answers
        scrape = metrics_of((await client.get("/metrics", headers=BEARER)).text)
        assert value(scrape, "callbackpool_database_up") == 0


# --- the operator API ------------------------------------------------------------------------


async def ambiguous_pair(client: httpx.AsyncClient) -> tuple[str, str, str]:
    first = await create(client, 4200)
    for n in range(9):
        await create(client, 5000 + n)
    await client.post(f"{API}/cancel-token/{first['token']}")
    second = await create(client, 4200)
    path = second["formConfig"]["callbackPath"]
    assert path == first["formConfig"]["callbackPath"]
    await pay(client, path, "42.00", "AMB")
    queue = (await client.get(f"{ADMIN}/reviews", headers=BEARER)).json()
    [waiting] = queue["returns"]
    return first["token"], second["token"], waiting["ref"]


async def test_review_resolution_through_the_api(client: httpx.AsyncClient) -> None:
    first, second, ref = await ambiguous_pair(client)
    decision = {
        "paymentToken": first,
        "others": "failed",
        "reason": "the customer of the first order sent the receipt",
        "operator": "erin",
    }
    done = await client.post(f"{ADMIN}/reviews/{ref}/resolve", headers=BEARER, json=decision)
    assert done.status_code == 200, done.text
    review = done.json()["review"]
    assert (review["decidedBy"], review["reason"], review["callbackRef"]) == (
        "erin",
        decision["reason"],
        ref,
    )
    assert review["changes"] == [
        {"token": first, "from": "needs_review", "to": "completed"},
        {"token": second, "from": "needs_review", "to": "failed"},
    ]
    statuses = [(await client.get(f"{API}/check-status/{t}")).json() for t in (first, second)]
    assert [(s["status"], s["transactionId"]) for s in statuses] == [
        ("completed", "AMB"),
        ("failed", None),
    ]
    again = await client.post(f"{ADMIN}/reviews/{ref}/resolve", headers=BEARER, json=decision)
    assert again.status_code == 409
    assert "nothing to decide" in again.json()["message"]
    queue = (await client.get(f"{ADMIN}/reviews", headers=BEARER)).json()
    assert queue["waiting"] == 0
    assert queue["decided"][0]["ref"] == review["ref"]


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"paymentToken": "stranger", "reason": "x", "operator": "a"}, 422, "paymentToken"),
        (
            {"paymentToken": None, "others": "completed", "reason": "x", "operator": "a"},
            422,
            "others",
        ),
        ({"paymentToken": None, "reason": "  ", "operator": "a"}, 422, "reason"),
        ({"paymentToken": None, "reason": "x"}, 422, "operator"),
        ({"reason": "x", "operator": "a"}, 422, "paymentToken"),
    ],
)
async def test_an_invalid_decision_is_a_422_naming_the_field_and_changes_nothing(
    client: httpx.AsyncClient, body: dict[str, Any], status: int, field: str
) -> None:
    first, second, ref = await ambiguous_pair(client)
    response = await client.post(f"{ADMIN}/reviews/{ref}/resolve", headers=BEARER, json=body)
    assert response.status_code == status
    assert field in response.json()["errors"]
    for token in (first, second):
        assert (await client.get(f"{API}/check-status/{token}")).json()["status"] == "needs_review"


async def test_unknown_references_are_404_and_bad_ones_422(client: httpx.AsyncClient) -> None:
    body = {"paymentToken": None, "reason": "x", "operator": "a"}
    unknown = await client.post(f"{ADMIN}/reviews/CB-999/resolve", headers=BEARER, json=body)
    assert unknown.status_code == 404
    bad = await client.post(f"{ADMIN}/reviews/banana/resolve", headers=BEARER, json=body)
    assert bad.status_code == 422
    applied = await create(client, 1000)
    await pay(client, applied["formConfig"]["callbackPath"], "10.00", "OK")
    not_ambiguous = await client.post(f"{ADMIN}/reviews/CB-1/resolve", headers=BEARER, json=body)
    assert not_ambiguous.status_code == 409
    close = await client.post(
        f"{ADMIN}/payments/{applied['token']}/close",
        headers=BEARER,
        json={"status": "expired", "reason": "x", "operator": "a"},
    )
    assert close.status_code == 409


async def test_the_reports_answer_the_clis_documents(
    client: httpx.AsyncClient, clock: FakeClock
) -> None:
    await scripted_run(client, clock)
    status = (await client.get(f"{ADMIN}/status", headers=BEARER)).json()
    assert (status["total"], status["available"], status["outOfRotation"]) == (10, 10, 0)
    health = (await client.get(f"{ADMIN}/slots/health", headers=BEARER)).json()
    assert health["expiriesToSideline"] == 5
    # handler-1: its payment's return and the unmatched one (verified, approved)
    assert (health["handlers"][0]["approvals"], health["handlers"][2]["declines"]) == (2, 1)
    usage = (await client.get(f"{ADMIN}/usage", headers=BEARER)).json()
    assert usage["handlers"][0]["callbacks"] == 1
    assert (await client.get(f"{ADMIN}/stuck-leases", headers=BEARER)).json()["leases"] == []
    orphans = await client.get(f"{ADMIN}/orphaned-payments?olderThan=1m", headers=BEARER)
    assert orphans.json()["olderThanSeconds"] == 60
    bad = await client.get(f"{ADMIN}/orphaned-payments?olderThan=soon", headers=BEARER)
    assert bad.status_code == 422

    page = (await client.get(f"{ADMIN}/callbacks?limit=2", headers=BEARER)).json()
    assert page["counts"] == {
        "received": 0, "applied": 3, "duplicate": 1, "unmatched": 1, "ambiguous": 0, "rejected": 0,
    }  # fmt: skip
    assert [c["ref"] for c in page["callbacks"]] == ["CB-5", "CB-4"]
    assert page["nextBefore"] == 4
    assert dict(page["callbacks"][0]["params"])["ExpDate"] == "****"
    rest = await client.get(f"{ADMIN}/callbacks?limit=2&before=4", headers=BEARER)
    assert [c["ref"] for c in rest.json()["callbacks"]] == ["CB-3", "CB-2"]
    only = await client.get(f"{ADMIN}/callbacks?outcome=duplicate", headers=BEARER)
    assert [c["ref"] for c in only.json()["callbacks"]] == ["CB-2"]
    assert (await client.get(f"{ADMIN}/callbacks?outcome=nope", headers=BEARER)).status_code == 422
    assert "0329" not in (await client.get(f"{ADMIN}/callbacks", headers=BEARER)).text

    analytics = (await client.get(f"{ADMIN}/analytics?window=1h", headers=BEARER)).json()
    assert sum(analytics["turnedAway"]) == 2
    assert sum(analytics["leasesEnded"]["expired"]) == 10
    assert len(analytics["starts"]) == 30
    assert (await client.get(f"{ADMIN}/analytics?window=2y", headers=BEARER)).status_code == 422


async def test_slots_sideline_and_restore_through_the_api(client: httpx.AsyncClient) -> None:
    out = await client.post(
        f"{ADMIN}/slots/sideline",
        headers=BEARER,
        json={"path": "handler-2", "reason": "the gateway lost it", "operator": "fay"},
    )
    assert out.json() == {"success": True, "path": PATHS[1], "changed": True, "inRotation": False}
    leased = {(await create(client, 1000 + n))["formConfig"]["callbackPath"] for n in range(9)}
    assert PATHS[1] not in leased
    assert (await client.post(f"{API}/create-token", json={"amount": 1})).status_code == 503
    back = await client.post(
        f"{ADMIN}/slots/restore", headers=BEARER, json={"path": PATHS[1], "operator": "fay"}
    )
    assert back.json()["changed"] is True
    assert (await create(client, 1))["formConfig"]["callbackPath"] == PATHS[1]
    unknown = await client.post(
        f"{ADMIN}/slots/restore", headers=BEARER, json={"path": "handler-77", "operator": "fay"}
    )
    assert unknown.status_code == 404


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", f"{ADMIN}/status"),
        ("GET", f"{ADMIN}/callbacks"),
        ("GET", f"{ADMIN}/reviews"),
        ("POST", f"{ADMIN}/reviews/CB-1/resolve"),
        ("POST", f"{ADMIN}/slots/restore"),
        ("GET", f"{ADMIN}/analytics"),
    ],
)
async def test_the_operator_api_needs_the_token(
    client: httpx.AsyncClient, method: str, path: str
) -> None:
    response = await client.request(method, path, json={})
    assert response.status_code == 401
    cookie_only = await client.request(
        method, path, json={}, headers={"Cookie": "callbackpool_admin=x.y"}
    )
    assert cookie_only.status_code == 401


# --- the dashboard's sign-in and forms --------------------------------------------------------


async def sign_in(client: httpx.AsyncClient, name: str = "Gus") -> str:
    response = await client.post(
        "/admin/login", data={"name": name, "token": ADMIN_TOKEN, "next": "/admin?window=6h"}
    )
    assert response.status_code == 303
    assert response.headers["location"] == "/admin?window=6h"
    cookie = response.headers["set-cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie
    assert "Path=/admin" in cookie
    page = (await client.get("/admin")).text
    return page.split('name="csrf" value="')[1].split('"')[0]


async def test_the_dashboard_sends_a_browser_without_credentials_to_sign_in(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/admin?window=24h")
    assert response.status_code == 303
    assert response.headers["location"] == "/admin/login?next=%2Fadmin%3Fwindow%3D24h"
    form = await client.get("/admin/login")
    assert form.status_code == 200
    assert "script-src 'self'" in form.headers["content-security-policy"]


async def test_the_dashboard_takes_the_bearer_token(client: httpx.AsyncClient) -> None:
    response = await client.get("/admin", headers=BEARER)
    assert response.status_code == 200
    assert "Slots" in response.text
    assert response.headers["cache-control"] == "no-store"
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    assert "<script>" not in response.text  # every script comes from static/
    wrong = await client.get("/admin", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401


async def test_signing_in_deciding_and_signing_out(client: httpx.AsyncClient) -> None:
    first, second, ref = await ambiguous_pair(client)
    csrf = await sign_in(client, "Gus Operator")
    page = await client.get("/admin")
    assert page.status_code == 200
    assert "Gus Operator" in page.text
    assert f'data-testid="review-{ref}"' in page.text

    callback_id = ref.removeprefix("CB-")
    form = {"csrf": csrf, "payment": "none", "others": "expired", "reason": "test charge"}
    no_csrf = await client.post(f"/admin/reviews/{callback_id}", data={**form, "csrf": "x"})
    assert no_csrf.status_code == 403
    elsewhere = await client.post(
        f"/admin/reviews/{callback_id}", data=form, headers={"Origin": "https://evil.example"}
    )
    assert elsewhere.status_code == 403
    for token in (first, second):
        assert (await client.get(f"{API}/check-status/{token}")).json()["status"] == "needs_review"

    done = await client.post(
        f"/admin/reviews/{callback_id}?anchor=review", data=form, headers={"Origin": BASE_URL}
    )
    assert done.status_code == 303
    assert done.headers["location"].startswith("/admin?done=")
    assert done.headers["location"].endswith("#review")
    for token in (first, second):
        assert (await client.get(f"{API}/check-status/{token}")).json()["status"] == "expired"
    reviews = (await client.get(f"{ADMIN}/reviews", headers=BEARER)).json()
    assert reviews["decided"][0]["decidedBy"] == "Gus Operator"

    refused = await client.post(f"/admin/reviews/{callback_id}", data=form)
    assert refused.status_code == 303
    assert "error=" in refused.headers["location"]

    out = await client.post("/admin/logout", data={"csrf": csrf})
    assert out.status_code == 303
    client.cookies.clear()
    assert (await client.get("/admin")).status_code == 303


async def test_a_forged_session_is_not_one(
    client: httpx.AsyncClient, make_settings: SettingsFactory
) -> None:
    from callbackpool.web.auth import SESSION_COOKIE, new_session

    genuine, _ = new_session(make_settings(), "Hal")
    payload, signature = genuine.split(".")
    tampered = payload[:-2] + ("AA" if payload[-2:] != "AA" else "BB") + "." + signature
    for cookie in (tampered, "garbage", genuine + "x"):
        client.cookies.set(SESSION_COOKIE, cookie)
        assert (await client.get("/admin")).status_code == 303
    other, _ = new_session(make_settings(adminToken="another-token"), "Hal")
    client.cookies.set(SESSION_COOKIE, other)
    assert (await client.get("/admin")).status_code == 303
    client.cookies.set(SESSION_COOKIE, genuine)
    assert (await client.get("/admin")).status_code == 200


async def test_signing_out_on_one_instance_revokes_the_session_on_every_one(
    make_settings: SettingsFactory, clock: FakeClock
) -> None:
    from callbackpool.web.auth import SESSION_COOKIE

    settings = make_settings()
    async with (
        serving(create_app(settings, clock=clock)) as one,
        serving(create_app(settings, clock=clock)) as two,
    ):
        signed_in = await one.post("/admin/login", data={"name": "Hal", "token": ADMIN_TOKEN})
        assert signed_in.status_code == 303
        cookie = signed_in.cookies[SESSION_COOKIE]
        other = await one.post("/admin/login", data={"name": "Ann", "token": ADMIN_TOKEN})
        kept = other.cookies[SESSION_COOKIE]
        one.cookies.clear()
        two.cookies.set(SESSION_COOKIE, cookie)
        page = await two.get("/admin")
        assert page.status_code == 200
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert csrf is not None
        one.cookies.set(SESSION_COOKIE, cookie)
        out = await one.post("/admin/logout", data={"csrf": csrf.group(1)})
        assert out.status_code == 303
        # The old cookie, replayed on either instance, opens nothing.
        for app in (one, two):
            app.cookies.set(SESSION_COOKIE, cookie)
            refused = await app.get("/admin")
            assert refused.status_code == 303
            assert refused.headers["location"].startswith("/admin/login")
        # Another person's session is not signed out with it.
        two.cookies.set(SESSION_COOKIE, kept)
        assert (await two.get("/admin")).status_code == 200


async def test_signing_in_needs_a_name_and_the_token(client: httpx.AsyncClient) -> None:
    wrong = await client.post("/admin/login", data={"name": "Ivy", "token": "guess"})
    assert wrong.status_code == 401
    assert "That is not the admin token." in wrong.text
    assert "set-cookie" not in wrong.headers
    nameless = await client.post("/admin/login", data={"name": " ", "token": ADMIN_TOKEN})
    assert nameless.status_code == 401
    away = await client.post(
        "/admin/login", data={"name": "Ivy", "token": ADMIN_TOKEN, "next": "https://evil.example/"}
    )
    assert away.headers["location"] == "/admin"  # no open redirect


# --- the log -----------------------------------------------------------------------------------


async def test_the_log_has_a_line_per_lease_callback_and_transition_without_card_data(
    client: httpx.AsyncClient, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="callbackpool")
    run = await scripted_run(client, clock)
    records = [r for r in caplog.records if r.name == "callbackpool"]
    fields = [r.fields for r in records if hasattr(r, "fields")]  # type: ignore[attr-defined]
    by_event: dict[str, list[dict[str, Any]]] = {}
    for entry in fields:
        by_event.setdefault(entry["event"], []).append(entry)
    assert len(by_event["lease_started"]) == 14
    assert len(by_event["lease_ended"]) == 3 + 1 + 10
    assert len(by_event["callback"]) == 5
    # pending → completed ×2, failed, cancelled, expired ×10
    assert len(by_event["transition"]) == 14
    for entry in by_event["lease_started"] + by_event["lease_ended"] + by_event["transition"]:
        assert entry["slot"] in PATHS
        assert isinstance(entry["lease"], int)
        assert entry["token"].endswith("…")
    applied = [e for e in by_event["callback"] if e["outcome"] == "applied"]
    assert all(e["lease"] is not None and e["slot"] in PATHS for e in applied)
    everything = "\n".join(r.getMessage() for r in caplog.records) + json.dumps(fields)
    assert "0329" not in everything  # the card's expiry date
    for made in run["made"]:
        assert made["token"] not in everything  # tokens only shortened
