"""The waiting room across instances on PostgreSQL (issue 7): two app instances, each with
its own connection pool, polling one queue at the same time while slots free up one by one.
Tickets are served in their order, each once, each to a slot of its own."""

from __future__ import annotations

import threading
import time

import pytest

from callbackpool.pool import CallbackPool, Checkout, Waiting

from ..support import PATHS, make_gateway, policy_with
from .conftest import StoreOpener

pytestmark = pytest.mark.postgres

SLOTS = 4
TICKETS = 8


def instance(postgres_store: StoreOpener, database: str) -> CallbackPool:
    store = postgres_store(database, timeout=5)
    pool = CallbackPool(store, make_gateway(), policy_with(callback_paths=PATHS[:SLOTS]))
    pool.sync_slots()
    return pool


def test_two_instances_serve_one_queue_in_order(database: str, postgres_store: StoreOpener) -> None:
    one, two = instance(postgres_store, database), instance(postgres_store, database)
    held = [one.create_payment(amount=5000 + n) for n in range(SLOTS)]
    assert all(isinstance(h, Checkout) for h in held)
    queue: list[str] = []
    for n in range(TICKETS):  # customers queue through either instance, one after another
        place = (one, two)[n % 2].create_payment(amount=1000 + n, wait=True)
        assert isinstance(place, Waiting)
        assert place.position == n + 1
        queue.append(place.ticket)

    granted: dict[str, Checkout] = {}
    lock = threading.Lock()
    stop = threading.Event()
    errors: list[BaseException] = []

    def poll_everything(pool: CallbackPool) -> None:
        # Both instances poll every ticket, as customers behind a load balancer might.
        try:
            while not stop.is_set():
                for ticket in queue:
                    answer = pool.poll_ticket(ticket)
                    if isinstance(answer, Checkout):
                        with lock:
                            earlier = granted.setdefault(ticket, answer)
                        assert earlier.payment.token == answer.payment.token  # granted once
                time.sleep(0.005)
        except BaseException as exc:
            errors.append(exc)

    pollers = [threading.Thread(target=poll_everything, args=(pool,)) for pool in (one, two)]
    for poller in pollers:
        poller.start()
    try:
        for n, holder in enumerate(held):
            assert isinstance(holder, Checkout)
            (two, one)[n % 2].cancel_payment(holder.payment.token)  # a slot frees up
            deadline = time.monotonic() + 20
            while len(granted) < n + 1 and time.monotonic() < deadline and not errors:
                time.sleep(0.01)
            time.sleep(0.1)  # time enough for a wrong second grant to show
            with lock:
                assert set(granted) == set(queue[: n + 1]), "served out of order"
    finally:
        stop.set()
        for poller in pollers:
            poller.join()
    assert errors == []
    slots = [checkout.lease.slot_id for checkout in granted.values()]
    assert len(set(slots)) == SLOTS  # each grant on a slot of its own
    for ticket in queue[SLOTS:]:
        still = one.poll_ticket(ticket)
        assert isinstance(still, Waiting)
    with one.store.read() as tx:
        live = tx.live_leases()
    assert sorted(lease.token for lease in live) == sorted(
        checkout.payment.token for checkout in granted.values()
    )
