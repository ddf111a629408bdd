"""The database goes away under load and comes back: requests fail with StoreUnavailable
(never a hang, never a driver error), the store serves again by itself, and nothing that was
committed before is lost.

The test runs its own PostgreSQL server on a port of its own (the shared one must not be
restarted); it needs the server programs (initdb, pg_ctl) and, when run as root, the
``postgres`` account to run them as.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator

import psycopg
import pytest

from callbackpool.domain.errors import PoolExhausted, StoreUnavailable
from callbackpool.domain.model import CallbackOutcome, PaymentStatus
from callbackpool.pool import CallbackPool
from callbackpool.store.postgres import PostgresStore

from ..private_postgres import PrivateServer, private_server
from ..support import PATHS, make_gateway, paygistix_return, policy_with, wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

TIMEOUT = 2.0


@pytest.fixture
def server() -> Iterator[PrivateServer]:
    with private_server() as server:
        yield server


class Load:
    """Threads creating payments and paying them until stopped, noting every answer."""

    def __init__(self, pool: CallbackPool, threads: int = 3) -> None:
        self.pool = pool
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        self.created: set[str] = set()  # payments whose creation was acknowledged
        self.paid: dict[str, int] = {}  # payments whose return was acknowledged → callback id
        self.unexpected: list[BaseException] = []
        self.slowest = 0.0
        self.threads = [
            threading.Thread(target=self.run, args=(n,), name=f"load-{n}") for n in range(threads)
        ]

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=60)

    def note(self, what: str, started: float) -> None:
        with self.lock:
            self.counts[what] += 1
            self.slowest = max(self.slowest, time.monotonic() - started)

    def run(self, n: int) -> None:
        sequence = 0
        while not self.stop.is_set():
            sequence += 1
            amount = 10_000 + n * 100_000 + sequence
            started = time.monotonic()
            try:
                checkout = self.pool.create_payment(amount=amount)
                with self.lock:
                    self.created.add(checkout.payment.token)
                self.note("created", started)
                started = time.monotonic()
                result = self.pool.handle_callback(
                    checkout.lease.path,
                    paygistix_return(amount=f"{amount / 100:.2f}", pn_ref=f"L{n}-{sequence}"),
                )
                assert result.outcome is CallbackOutcome.APPLIED, result
                with self.lock:
                    self.paid[checkout.payment.token] = result.callback_id
                self.note("paid", started)
            except StoreUnavailable:
                self.note("unavailable", started)
                time.sleep(0.05)
            except PoolExhausted:
                self.note("exhausted", started)
            except BaseException as exc:
                self.unexpected.append(exc)
                return

    def served(self) -> int:
        with self.lock:
            return self.counts["paid"]


def test_a_database_restart_mid_load_loses_nothing(server: PrivateServer) -> None:
    with psycopg.connect(server.url(), autocommit=True) as admin:
        admin.execute("CREATE DATABASE pool")
    store = PostgresStore(server.url("pool"), timeout=TIMEOUT, connect_timeout=2, max_size=4)
    pool = CallbackPool(store, make_gateway(), policy_with(callback_paths=PATHS))
    try:
        store.migrate()
        pool.sync_slots()
        waiting = pool.create_payment(amount=777)  # a customer still on the gateway's page

        with Load(pool) as load:
            assert wait_for(lambda: load.served() >= 20, 30), load.counts
            before = load.served()

            server.stop("immediate")  # as abrupt as a crash
            down = load.served()
            assert wait_for(lambda: load.counts["unavailable"] >= 6, 30), load.counts
            for request in (
                lambda: pool.create_payment(amount=1000),
                lambda: pool.handle_callback(PATHS[0], paygistix_return()),
                lambda: pool.get_payment(waiting.payment.token),
                pool.status,
                pool.sweep,
            ):
                started = time.monotonic()
                with pytest.raises(StoreUnavailable):
                    request()
                assert time.monotonic() - started < TIMEOUT + 3
            assert load.served() == down  # nothing is served while the server is down

            server.start()
            restarted = time.monotonic()
            # Served again, by the same store, without anyone touching it.
            assert wait_for(lambda: load.served() > down, 30), load.counts
            recovery = time.monotonic() - restarted
            assert wait_for(lambda: load.served() >= down + 20, 30), load.counts
        assert load.unexpected == []
        assert before >= 20
        # No request waited much past the timeout, outage or not (a hang would be minutes).
        assert load.slowest < TIMEOUT + 3, load.slowest
        assert recovery < TIMEOUT + 3, recovery

        # Nothing acknowledged before, during or after the restart is missing.
        with store.read() as tx:
            payments = {p.token: p for p in tx.payments(limit=100_000)}
            callbacks = {c.id for c in tx.callbacks(limit=100_000)}
            live = tx.live_leases()
        assert load.created <= set(payments)
        assert set(load.paid.values()) <= callbacks
        for token in load.paid:
            assert payments[token].status is PaymentStatus.COMPLETED
        # The customer who was still paying kept the lease across the restart, and pays.
        # Beside it only pending payments hold one: those whose return failed in the
        # outage, or one whose creation committed as the server went down (its answer lost).
        live_tokens = {lease.token for lease in live}
        assert waiting.payment.token in live_tokens
        assert live_tokens.isdisjoint(load.paid)
        assert {payments[token].status for token in live_tokens} == {PaymentStatus.PENDING}
        result = pool.handle_callback(waiting.lease.path, paygistix_return(amount="7.77"))
        assert result.outcome is CallbackOutcome.APPLIED
        assert pool.get_payment(waiting.payment.token).status is PaymentStatus.COMPLETED
    finally:
        store.close()


def test_a_frozen_server_is_given_up_on_and_served_again_after(server: PrivateServer) -> None:
    # The server's processes stopped (SIGSTOP): its connections stay open and its kernel
    # acknowledges every packet, so neither TCP nor the server's own statement timeout ends
    # a wait. The store's watchdog does: no call waits much past the store's timeout.
    with psycopg.connect(server.url(), autocommit=True) as admin:
        admin.execute("CREATE DATABASE pool")
    store = PostgresStore(server.url("pool"), timeout=1, connect_timeout=2, max_size=2)
    bound = store.answer_within + 3
    try:
        store.migrate()
        expected = f"no answer within {store.answer_within:g} s"

        def freeze_mid_transaction() -> None:
            with store.transaction() as tx:
                server.freeze()  # a statement on its way when the server freezes
                tx.payments()

        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match=expected):
            freeze_mid_transaction()
        assert time.monotonic() - started < bound
        try:
            for _ in range(3):  # pooled connections, and new ones the server never answers
                started = time.monotonic()
                with pytest.raises(StoreUnavailable), store.read() as tx:
                    tx.payments()
                assert time.monotonic() - started < bound
        finally:
            server.thaw()
        assert wait_for(lambda: _answers(store), 15)
    finally:
        store.close()


def _answers(store: PostgresStore) -> bool:
    try:
        with store.read() as tx:
            return tx.payments() == []
    except StoreUnavailable:
        return False
