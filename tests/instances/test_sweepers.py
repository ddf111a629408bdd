"""The sweeper runs on every instance: two instances' sweepers at once, over leases that
keep expiring, never expire one twice, log no error and lose no taint
(docs/design.md#the-sweeper)."""

from __future__ import annotations

import re
import threading
import time
from collections import Counter
from itertools import cycle

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ..servers import ServeProcess
from .conftest import SLOTS, StartInstances, gateway_return, problems_logged, rows

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

API = "/api/v1/payments"
ROUNDS = 2
LEASE_SECONDS = 2


def metric(server: ServeProcess, name: str, **labels: str) -> float:
    with server.client() as client:
        text = client.get("/metrics").text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    raise AssertionError(f"no {name} {labels} in the metrics of {server.name}")


def fill_the_pool(servers: list[ServeProcess], round_: int) -> dict[str, tuple[int, str]]:
    """Lease every slot (through both instances in turn): token → (amount, path)."""
    leased: dict[str, tuple[int, str]] = {}
    for n, server in zip(range(SLOTS), cycle(servers), strict=False):
        amount = 1_000 * (round_ + 1) + n  # distinct amounts: each late return has one owner
        with server.client() as client:
            answer = client.post(f"{API}/create-token", json={"amount": amount})
        assert answer.status_code == 201, answer.text
        leased[answer.json()["token"]] = (amount, answer.json()["formConfig"]["callbackPath"])
    return leased


def wait_until_all_expired(conninfo: str, count: int, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        [(expired,)] = rows(conninfo, "SELECT count(*) FROM payments WHERE status = 'expired'")
        if expired == count:
            return
        time.sleep(0.05)
    raise AssertionError(f"{count} payments did not all expire in {seconds} s")


def test_sweepers_of_two_instances_at_once(database: str, start_instances: StartInstances) -> None:
    servers = start_instances(
        database,
        2,
        lockTimeoutMinutes=LEASE_SECONDS / 60,
        sweepIntervalSeconds=0.05,  # both sweep all the time: they meet on every expiry
        lateCallbackWindowMinutes=60,
    )
    rounds: list[dict[str, tuple[int, str]]] = []
    stop_looking = threading.Event()
    looks: Counter[int] = Counter()

    def look_at_payments() -> None:
        # A look at a payment past its expiry expires it too: a third way to meet.
        with httpx.Client(timeout=10) as client:
            while not stop_looking.is_set():
                for token in list(rounds[-1]) if rounds else []:
                    server = servers[looks.total() % 2]
                    answer = client.get(f"{server.base_url}{API}/check-status/{token}")
                    looks[answer.status_code] += 1

    looker = threading.Thread(target=look_at_payments)
    looker.start()
    try:
        for round_ in range(ROUNDS):
            rounds.append(fill_the_pool(servers, round_))
            wait_until_all_expired(database, SLOTS * (round_ + 1))
    finally:
        stop_looking.set()
        looker.join()
    assert set(looks) == {200}

    # Every lease expired once: the instances' counts of expiries add up to the leases.
    leases = rows(
        database, "SELECT end_reason, taint_until IS NOT NULL, count(*) FROM leases GROUP BY 1, 2"
    )
    assert leases == [("expired", True, SLOTS * ROUNDS)]  # each left its taint
    expiries = [metric(s, "callbackpool_leases_ended_total", reason="expired") for s in servers]
    assert sum(expiries) == SLOTS * ROUNDS, expiries
    changes = Counter(
        token
        for server in servers
        for token in re.findall(r"payment (\S+)…: pending → expired", server.output())
    )
    assert sum(changes.values()) == SLOTS * ROUNDS
    assert set(changes.values()) == {1}
    for server in servers:
        assert metric(server, "callbackpool_sweeps_total", result="ok") > 10
        assert metric(server, "callbackpool_sweeps_total", result="failed") == 0
        assert problems_logged(server) == [], server.output()

    # No taint lost: the first round's customers all pay late, each return on a slot that
    # has expired two more leases since, and each is attributed to its own payment.
    for n, (token, (amount, path)) in enumerate(rounds[0].items()):
        params = gateway_return(amount, f"LATE-{n}")
        with servers[n % 2].client() as client:
            back = client.get(path, params=params)
            assert back.headers["location"].startswith("/payment-success?ref=CB-")
            status = client.get(f"{API}/check-status/{token}").json()
        assert (status["status"], status["late"]) == ("completed", True)
