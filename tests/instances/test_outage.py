"""The database lost under a real ``callbackpool serve``, over HTTP: stopped (a crash) or
frozen (its processes stopped: connections open, nothing answered). Requests answer 503 with
``Retry-After`` within a bound (never a 500, never a hang), ``/readyz`` says why, the service
recovers by itself when the database is back, and nothing acknowledged before is lost.

The database is a private server of the test's own (tests/private_postgres.py): the shared
one must not be stopped.
"""

from __future__ import annotations

import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from ..databases import random_name
from ..private_postgres import PrivateServer, private_server
from ..servers import ServeProcess, launch
from ..support import wait_for
from .conftest import gateway_return, instance_config

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

API = "/api/v1/payments"
TIMEOUT = 2  # the store's timeout, in the database URL
# No request may take longer than this, outage or not (a hang would be minutes, or for ever).
BOUND = 3 * TIMEOUT + 2
ANSWERS = {200, 201, 303, 503}


@pytest.fixture(scope="module")
def postgres() -> Iterator[PrivateServer]:
    with private_server() as server:
        yield server


@dataclass
class Service:
    server: ServeProcess
    database: str  # the connection string of its database, for the test's own look

    def rows(self, query: str) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.database, connect_timeout=5) as db:
            return db.execute(query).fetchall()


def new_database(postgres: PrivateServer) -> str:
    name = random_name("pool")
    with psycopg.connect(postgres.url(), autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    return name


def launch_on(postgres: PrivateServer, name: str, folder: Path) -> Service:
    """One instance on the private server's database ``name``, sweeping every half second
    (started, not waited for)."""
    url = postgres.url(name) + f"?timeout={TIMEOUT}&connect_timeout={TIMEOUT}&pool_max_size=4"
    server = launch(
        folder,
        instance_config(sweepIntervalSeconds=0.5),
        environment={"CALLBACKPOOL_DATABASE_URL": url},
    )
    return Service(server=server, database=postgres.url(name))


def stop_cleanly(server: ServeProcess) -> None:
    assert server.stop() in (0, -signal.SIGTERM)  # the lifespan finished: a clean stop
    assert "Traceback" not in server.output(), server.output()


@pytest.fixture
def service(postgres: PrivateServer, tmp_path: Path) -> Iterator[Service]:
    started = launch_on(postgres, new_database(postgres), tmp_path)
    started.server.wait_until_serving()
    yield started
    stop_cleanly(started.server)


@dataclass
class Load:
    """Customers over HTTP until stopped: create-token, the return, check-status. Notes
    every answer, how long it took, and what the service acknowledged."""

    server: ServeProcess
    customers: int = 3
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    answers: Counter[tuple[str, int]] = field(default_factory=Counter)
    created: dict[str, int] = field(default_factory=dict)  # acknowledged: token → amount
    paid: dict[str, str] = field(default_factory=dict)  # returns acknowledged: token → PNRef
    odd: list[str] = field(default_factory=list)
    slowest: float = 0.0

    def __enter__(self) -> Load:
        self.threads = [
            threading.Thread(target=self.run, args=(n,), name=f"customer-{n}")
            for n in range(self.customers)
        ]
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=60)

    def served(self) -> int:
        with self.lock:
            return len(self.paid)

    def refused(self) -> int:
        """Requests answered 503."""
        with self.lock:
            return sum(n for (_, status), n in self.answers.items() if status == 503)

    def ask(
        self, client: httpx.Client, what: str, method: str, url: str, **kw: object
    ) -> httpx.Response:
        started = time.monotonic()
        answer = client.request(method, url, **kw)  # type: ignore[arg-type]
        took = time.monotonic() - started
        with self.lock:
            self.answers[(what, answer.status_code)] += 1
            self.slowest = max(self.slowest, took)
            if answer.status_code not in ANSWERS:
                self.odd.append(f"{what}: {answer.status_code} {answer.text[:300]}")
            elif answer.status_code == 503 and not answer.headers.get("Retry-After", "").isdigit():
                self.odd.append(f"{what}: 503 without Retry-After")
        return answer

    def run(self, n: int) -> None:
        sequence = 0
        with self.server.client(timeout=60) as client:
            while not self.stop.is_set():
                sequence += 1
                amount = 10_000 + n * 100_000 + sequence
                made = self.ask(
                    client, "create", "POST", f"{API}/create-token", json={"amount": amount}
                )
                if made.status_code != 201:
                    time.sleep(0.05)
                    continue
                token = made.json()["token"]
                with self.lock:
                    self.created[token] = amount
                path = made.json()["formConfig"]["callbackPath"]
                params = gateway_return(amount, f"L{n}-{sequence}")
                # The browser sends the return again (the 503 page does) until it gets through.
                back = self.ask(client, "return", "GET", path, params=params)
                while back.status_code == 503 and not self.stop.is_set():
                    time.sleep(0.1)
                    back = self.ask(client, "return", "GET", path, params=params)
                if back.status_code == 303 and back.headers["location"].startswith(
                    "/payment-success"
                ):
                    with self.lock:
                        self.paid[token] = params["PNRef"]
                self.ask(client, "status", "GET", f"{API}/check-status/{token}")


def timed(
    server: ServeProcess, method: str, path: str, **kw: object
) -> tuple[httpx.Response, float]:
    with server.client(timeout=60) as client:
        started = time.monotonic()
        answer = client.request(method, path, **kw)  # type: ignore[arg-type]
        return answer, time.monotonic() - started


def assert_unavailable(
    server: ServeProcess, reasons: tuple[str, ...] = ("the database is unavailable",)
) -> None:
    """Each kind of request answers 503 with Retry-After, within the bound."""
    ready, took = timed(server, "GET", "/readyz")
    assert ready.status_code == 503, ready.text
    assert ready.json()["reasons"] == list(reasons)
    assert took < BOUND, took
    for method, path, kw in (
        ("POST", f"{API}/create-token", {"json": {"amount": 4242}}),
        ("GET", f"{API}/check-status/some-token", {}),
        ("GET", f"{API}/callback/handler-1", {"params": gateway_return(4242, "DOWN-1")}),
        (
            "GET",
            f"{API}/pool-stats",
            {"headers": {"Authorization": "Bearer instances-admin-token"}},
        ),
    ):
        answer, took = timed(server, method, path, **kw)
        assert answer.status_code == 503, (path, answer.status_code, answer.text)
        assert answer.headers["Retry-After"].isdigit(), path
        assert took < BOUND, (path, took)


def tail(service: Service) -> str:
    """The end of the server's log, for a failure's message."""
    return "\n".join(service.server.output().splitlines()[-40:])


def assert_nothing_lost(service: Service, load: Load) -> None:
    """Every payment and return acknowledged is in the database, and they agree."""
    status = dict(service.rows("SELECT token, status FROM payments"))
    returns: dict[str, set[str]] = {}
    for token, outcome in service.rows("SELECT payment_token, outcome FROM callbacks"):
        returns.setdefault(token, set()).add(outcome)
    live = {t for (t,) in service.rows("SELECT token FROM leases WHERE ended_at IS NULL")}
    assert set(load.created) <= set(status)
    # A return stored just before the outage and answered 503 was sent again: one of the
    # two copies applied, the other a duplicate of it (the sweeper resolves what is left).
    for token, pn_ref in load.paid.items():
        assert "applied" in returns.get(token, set()), (token, pn_ref, returns.get(token))
        assert returns[token] <= {"applied", "duplicate", "received"}, returns[token]
    for token in load.paid:
        assert status[token] == "completed", token
    # A payment holds a live lease only if its return never got through (the load stopped).
    # A payment still holding a lease is pending and was not paid: one whose return never
    # got through before the load stopped, or one whose creation committed as the server
    # went down, its answer lost (a 503 to the client; the lease expires in due course).
    assert live.isdisjoint(load.paid)
    assert {status[token] for token in live} <= {"pending"}
    with service.server.client() as client:
        assert client.get("/readyz").json()["status"] == "ready"
        for token in sorted(load.paid)[:20]:
            assert client.get(f"{API}/check-status/{token}").json()["status"] == "completed"


def test_a_stopped_database(postgres: PrivateServer, service: Service) -> None:
    with Load(service.server) as load:
        assert wait_for(lambda: load.served() >= 10, 30), load.answers
        postgres.stop("immediate")  # as abrupt as a crash
        stopped = time.monotonic()
        assert wait_for(lambda: load.refused() >= 3, 30), load.answers
        assert_unavailable(service.server)
        down = load.served()
        assert time.monotonic() - stopped > 1
        postgres.start()
        restarted = time.monotonic()
        assert wait_for(lambda: load.served() > down, 30), (load.answers, tail(service))
        recovery = time.monotonic() - restarted
        assert wait_for(lambda: load.served() >= down + 5, 60), (load.answers, tail(service))
    assert load.odd == []
    assert load.slowest < BOUND, load.slowest
    assert recovery < BOUND, recovery
    assert_nothing_lost(service, load)


def test_a_frozen_database(postgres: PrivateServer, service: Service) -> None:
    # The server's processes stopped: connections stay open, nothing is answered, and TCP
    # does not notice (its kernel still acknowledges). The store's watchdog gives up.
    with Load(service.server) as load:
        assert wait_for(lambda: load.served() >= 10, 30), load.answers
        postgres.freeze()
        try:
            assert wait_for(lambda: load.refused() >= 3, 30), load.answers
            assert_unavailable(service.server)
            down = load.served()
        finally:
            postgres.thaw()
        thawed = time.monotonic()
        assert wait_for(lambda: load.served() > down, 30), (load.answers, tail(service))
        recovery = time.monotonic() - thawed
        assert wait_for(lambda: load.served() >= down + 5, 60), (load.answers, tail(service))
    assert load.odd == []
    assert load.slowest < BOUND, load.slowest
    assert recovery < BOUND, recovery
    assert_nothing_lost(service, load)


def test_an_instance_started_while_its_database_is_down(
    postgres: PrivateServer, tmp_path: Path
) -> None:
    # It does not exit (a supervisor restarting it in a loop may give up before the
    # database is back): it answers 503 until the database answers, then serves.
    name = new_database(postgres)  # empty: the instance will migrate it
    postgres.stop("fast")
    try:
        started = launch_on(postgres, name, tmp_path)
        server = started.server
        server.wait_until_serving()
        assert_unavailable(server, reasons=("starting", "the database is unavailable"))
    finally:
        postgres.start()
    with server.client() as client:
        assert wait_for(lambda: client.get("/readyz").status_code == 200, 30), server.output()
        made = client.post(f"{API}/create-token", json={"amount": 1234})
        assert made.status_code == 201, made.text
        back = client.get(
            made.json()["formConfig"]["callbackPath"], params=gateway_return(1234, "UP-1")
        )
        assert back.headers["location"].startswith("/payment-success?ref=CB-")
        assert (
            client.get(f"{API}/check-status/{made.json()['token']}").json()["status"] == "completed"
        )
    # Migrated and its paths loaded once the database answered.
    assert started.rows("SELECT count(*) FROM slots WHERE active") == [(20,)]
    assert "the database is unavailable at start" in server.output()
    stop_cleanly(server)
