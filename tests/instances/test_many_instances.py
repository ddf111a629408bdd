"""Several ``callbackpool serve`` processes share one pool on one PostgreSQL database, over
real HTTP: customers spread over the instances, each return arriving at any of them
(docs/design.md, invariants 1, 2, 4 and 5)."""

from __future__ import annotations

import random
import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from ..servers import ServeProcess
from ..support import assert_lease_history
from .conftest import SLOTS, StartInstances, gateway_return, problems_logged, rows

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

INSTANCES = 3
CUSTOMERS = 30  # at once: more than the pool's 20 slots, so some are turned away
CREATE_REQUESTS = 360
API = "/api/v1/payments"
POOL_EXHAUSTED = "No forms available. All forms are currently in use."


@dataclass
class Created:
    token: str
    amount: int
    path: str
    created_by: int
    approved: bool
    returns: list[tuple[int, str]] = field(default_factory=list)  # (instance, location)


@dataclass
class Tally:
    lock: threading.Lock = field(default_factory=threading.Lock)
    counts: Counter[str] = field(default_factory=Counter)
    created: list[Created] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)


def customer(
    number: int, servers: list[ServeProcess], requests: threading.Semaphore, tally: Tally
) -> None:
    """Creates payments one after another (at whichever instance the balancer picks), pays
    each and returns (through any instance), until the run's create requests are used up."""
    rng = random.Random(number)
    clients = [server.client() for server in servers]
    try:
        sequence = 0
        while requests.acquire(blocking=False):
            sequence += 1
            # An amount of its own per payment: every return has exactly one owner.
            amount = 10_000 + number * 1_000 + sequence
            at = rng.randrange(len(servers))
            answer = clients[at].post(f"{API}/create-token", json={"amount": amount})
            if answer.status_code == 503:
                if (
                    answer.json().get("message") != POOL_EXHAUSTED
                    or not answer.headers.get("Retry-After", "").isdigit()
                ):
                    with tally.lock:
                        tally.unexpected.append(f"503 {answer.headers} {answer.text}")
                with tally.lock:
                    tally.counts["refused"] += 1
                continue
            if answer.status_code != 201:
                with tally.lock:
                    tally.unexpected.append(f"create-token {answer.status_code} {answer.text}")
                continue
            body = answer.json()
            created = Created(
                token=body["token"],
                amount=amount,
                path=body["formConfig"]["callbackPath"],
                created_by=at,
                approved=rng.random() < 0.7,
            )
            params = gateway_return(amount, f"P{number}-{sequence}", approved=created.approved)
            # Some browsers come back twice, the second time maybe by POST, maybe elsewhere.
            for attempt in range(2 if rng.random() < 0.2 else 1):
                back = rng.randrange(len(servers))
                if attempt and rng.random() < 0.5:
                    answer = clients[back].post(created.path, data=params)
                else:
                    answer = clients[back].get(created.path, params=params)
                if answer.status_code != 303:
                    with tally.lock:
                        tally.unexpected.append(f"return {answer.status_code} {answer.text}")
                created.returns.append((back, answer.headers.get("location", "")))
            with tally.lock:
                tally.created.append(created)
    except httpx.HTTPError as exc:
        with tally.lock:
            tally.unexpected.append(repr(exc))
    finally:
        for client in clients:
            client.close()


def serve_customers(servers: list[ServeProcess]) -> Tally:
    """CUSTOMERS customers at once, until CREATE_REQUESTS create requests were made."""
    tally = Tally()
    requests = threading.Semaphore(CREATE_REQUESTS)
    with ThreadPoolExecutor(CUSTOMERS) as customers:
        for future in [
            customers.submit(customer, n, servers, requests, tally) for n in range(CUSTOMERS)
        ]:
            future.result()
    assert tally.unexpected == []
    return tally


def check_the_run(
    servers: list[ServeProcess], tally: Tally, rows: Callable[[str], list[tuple[Any, ...]]]
) -> None:
    """What the database holds after ``serve_customers`` (``rows`` runs a query on it)."""
    created = {c.token: c for c in tally.created}
    refused = tally.counts["refused"]
    # The run did real work on every instance, and met a full pool.
    assert len(created) > 2 * SLOTS
    assert refused > 0
    assert {c.created_by for c in created.values()} == set(range(len(servers)))
    assert {at for c in created.values() for at, _ in c.returns} == set(range(len(servers)))

    # Each return was answered as its outcome says, the repeated one as the first.
    for c in created.values():
        first = c.returns[0][1]
        if c.approved:
            assert first.startswith("/payment-success?ref=CB-"), first
        else:
            assert parse_qs(urlsplit(first).query)["reason"] == ["declined"]
        assert all(location == first for _, location in c.returns)

    # Invariant 1 over the whole history; every lease ended by its return.
    leases = rows("SELECT id, slot_id, token, acquired_at, ended_at FROM leases")
    assert_lease_history(leases)  # type: ignore[arg-type]
    assert len(leases) == len(created)
    assert {token for _, _, token, _, _ in leases} == set(created)
    assert rows("SELECT count(*) FROM leases WHERE ended_at IS NULL") == [(0,)]
    assert rows("SELECT count(*) FROM slots WHERE live_lease_id IS NOT NULL") == [(0,)]

    # Every request is accounted for: completed + failed + refused = create requests.
    status = dict(rows("SELECT token, status FROM payments"))
    assert set(status) == set(created)
    completed = sum(1 for s in status.values() if s == "completed")
    failed = sum(1 for s in status.values() if s == "failed")
    assert completed + failed + refused == CREATE_REQUESTS
    for token, c in created.items():
        assert status[token] == ("completed" if c.approved else "failed"), token

    # Every return is stored with its outcome: the first applied to its payment, a repeat
    # a duplicate of it.
    stored = rows(
        "SELECT payment_token, outcome, duplicate_of IS NOT NULL FROM callbacks ORDER BY id"
    )
    assert len(stored) == sum(len(c.returns) for c in created.values())
    outcomes: dict[str, list[str]] = {}
    for token, outcome, is_repeat in stored:
        assert bool(is_repeat) == (outcome == "duplicate")
        outcomes.setdefault(token, []).append(outcome)
    for token, c in created.items():
        assert outcomes[token] == ["applied"] + ["duplicate"] * (len(c.returns) - 1), token

    for server in servers:
        assert problems_logged(server) == [], server.output()


def test_instances_share_one_pool_over_http(database: str, start_instances: StartInstances) -> None:
    servers = start_instances(database, INSTANCES, url_options={"pool_max_size": 6})
    for server in servers:
        with server.client() as client:
            assert client.get("/readyz").json()["status"] == "ready"
    check_the_run(servers, serve_customers(servers), lambda query: rows(database, query))
