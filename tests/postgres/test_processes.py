"""Several app processes, each with several threads, share one PostgreSQL database on the
database's own clock (docs/design.md, invariants 1, 2, 4 and 6)."""

from __future__ import annotations

import multiprocessing
import random
import threading
import time
from collections import Counter
from datetime import datetime, timedelta
from typing import Any

import psycopg
import pytest

from callbackpool.clock import SystemClock
from callbackpool.domain.errors import PaymentNotPending, PoolExhausted
from callbackpool.domain.model import CallbackOutcome
from callbackpool.pool import CallbackPool
from callbackpool.store.postgres import PostgresStore

from ..support import assert_lease_history, make_gateway, paygistix_return, policy_with

pytestmark = pytest.mark.postgres

PROCESSES = 3
THREADS = 4
ROUNDS = 40
SLOTS = 20
LOCK_TIMEOUT = timedelta(seconds=0.5)
PATHS = tuple(f"/api/v1/payments/callback/handler-{i}" for i in range(1, SLOTS + 1))


def pool_on(url: str, threads: int = THREADS, **policy: Any) -> CallbackPool:
    # No clock injected: every instance decides time by the database's now().
    store = PostgresStore(url, max_size=threads, timeout=30)
    options: dict[str, Any] = {
        "callback_paths": PATHS,
        "lock_timeout_minutes": LOCK_TIMEOUT / timedelta(minutes=1),
        **policy,
    }
    return CallbackPool(store, make_gateway(), policy_with(**options))


def customers(pool: CallbackPool, worker: str, seed: int, tally: Counter[str]) -> None:
    rng = random.Random(seed)
    for n in range(ROUNDS):
        time.sleep(rng.uniform(0, 0.02))
        # An amount of its own per payment: every return has exactly one owner, so the
        # counts below must add up exactly.
        amount = 100_000 + seed * 1_000 + n
        tally["attempts"] += 1
        try:
            checkout = pool.create_payment(amount=amount)
        except PoolExhausted:
            tally["refused"] += 1
            continue
        tally["created"] += 1
        action = rng.random()
        if action < 0.65:
            approved = action < 0.5
            params = paygistix_return(
                amount=f"{amount / 100:.2f}",
                pn_ref=f"{worker}-{n}",
                result="0" if approved else "51",
            )
            for _ in range(2 if rng.random() < 0.2 else 1):  # some browsers return twice
                result = pool.handle_callback(checkout.lease.path, params)
                tally["callbacks"] += 1
                tally[result.outcome.value] += 1
                if result.outcome is CallbackOutcome.APPLIED:
                    tally["paid" if approved else "declined"] += 1
        elif action < 0.8:
            try:
                pool.cancel_payment(checkout.payment.token)
                tally["cancelled"] += 1
            except PaymentNotPending:  # it expired first
                tally["cancel_too_late"] += 1
        else:
            tally["abandoned"] += 1  # the customer leaves; the lease expires
        if rng.random() < 0.2:
            pool.sweep()


def process_main(url: str, index: int, results: Any) -> None:
    pool = pool_on(url)
    tally: Counter[str] = Counter()
    failures: list[BaseException] = []

    def run(worker: str, seed: int) -> None:
        mine: Counter[str] = Counter()
        try:
            customers(pool, worker, seed, mine)
        except BaseException as exc:  # any error at all fails the test
            failures.append(exc)
        with lock:
            tally.update(mine)

    lock = threading.Lock()
    threads = [
        threading.Thread(target=run, args=(f"p{index}t{t}", index * THREADS + t))
        for t in range(THREADS)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    pool.store.close()
    results.put((index, dict(tally), [repr(f) for f in failures]))


class Watcher(threading.Thread):
    """Reads committed states while the processes work: none may break invariant 1."""

    def __init__(self, url: str) -> None:
        super().__init__(name="watcher")
        self.url = url
        self.stop = threading.Event()
        self.samples = 0
        self.violations: list[tuple[Any, ...]] = []

    def run(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            while not self.stop.is_set():
                with conn.transaction():
                    conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                    row = conn.execute(
                        """
                        SELECT (SELECT count(*) FROM (SELECT slot_id FROM leases
                                 WHERE ended_at IS NULL GROUP BY slot_id HAVING count(*) > 1)
                                 AS twice),
                               (SELECT count(*) FROM (SELECT token FROM leases
                                 WHERE ended_at IS NULL GROUP BY token HAVING count(*) > 1)
                                 AS twice),
                               (SELECT count(*) FROM slots AS s
                                  FULL JOIN (SELECT * FROM leases WHERE ended_at IS NULL) AS l
                                    ON l.slot_id = s.id
                                 WHERE s.live_lease_id IS DISTINCT FROM l.id)
                        """
                    ).fetchone()
                assert row is not None
                if any(row):
                    self.violations.append(row)
                self.samples += 1
                time.sleep(0.01)


@pytest.mark.slow
def test_processes_and_threads_share_one_pool(database: str) -> None:
    setup = pool_on(database, threads=1)
    setup.sync_slots()
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    processes = [
        context.Process(target=process_main, args=(database, i, results)) for i in range(PROCESSES)
    ]
    watcher = Watcher(database)
    watcher.start()
    try:
        for process in processes:
            process.start()
        reports = [results.get(timeout=240) for _ in processes]
        for process in processes:
            process.join(timeout=30)
            assert process.exitcode == 0
    finally:
        watcher.stop.set()
        watcher.join()
    for index, _, failures in reports:
        assert failures == [], f"process {index}: {failures}"
    tally: Counter[str] = Counter()
    for _, counts, _ in reports:
        tally.update(counts)

    time.sleep(LOCK_TIMEOUT.total_seconds())
    setup.sweep()  # every lease still live is due by now
    setup.store.close()

    assert watcher.violations == []
    assert watcher.samples > 10

    with psycopg.connect(database) as db:
        leases = db.execute(
            "SELECT id, slot_id, token, acquired_at, ended_at FROM leases ORDER BY id"
        ).fetchall()
        status = dict(db.execute("SELECT status, count(*) FROM payments GROUP BY status"))
        outcome = dict(db.execute("SELECT outcome, count(*) FROM callbacks GROUP BY outcome"))
        (live,) = db.execute(
            "SELECT count(*) FROM slots WHERE live_lease_id IS NOT NULL"
        ).fetchone()

    # The run did real work, and met a full pool at times.
    assert tally["attempts"] == PROCESSES * THREADS * ROUNDS
    assert tally["created"] > 100
    assert tally["refused"] > 0

    # Invariant 1 over the whole history, and the slots hold no lease now.
    assert live == 0
    assert_lease_history(leases)
    assert len(leases) == tally["created"]

    # Every request is accounted for (invariant 4): payments, statuses, returns.
    assert sum(status.values()) == tally["created"]
    assert tally["created"] + tally["refused"] == tally["attempts"]
    assert status.get("completed", 0) == tally["paid"]
    assert status.get("failed", 0) == tally["declined"]
    assert status.get("cancelled", 0) == tally["cancelled"]
    assert status.get("expired", 0) == tally["abandoned"] + tally["cancel_too_late"]
    assert status.get("pending", 0) == 0
    assert sum(outcome.values()) == tally["callbacks"]
    assert outcome.get("applied", 0) == tally["applied"] == tally["paid"] + tally["declined"]
    assert outcome.get("duplicate", 0) == tally["duplicate"]
    assert set(outcome) <= {"applied", "duplicate"}


# --- two app servers whose clocks disagree ------------------------------------------------

LEASE = timedelta(seconds=3)  # long enough for a few requests even on a busy machine


def skewed_server(url: str, skew_minutes: float, commands: Any) -> None:
    """An app process whose system clock is ``skew_minutes`` off, serving commands."""
    # As if the machine's clock were off: everything that asks the system clock is skewed.
    system_now = SystemClock.now
    skew = timedelta(minutes=skew_minutes)

    def skewed_now(self: SystemClock) -> datetime:
        return system_now(self) + skew

    SystemClock.now = skewed_now  # type: ignore[method-assign]
    pool = pool_on(url, threads=1, lock_timeout_minutes=LEASE / timedelta(minutes=1))
    try:
        while (command := commands.recv()) is not None:
            name, *args = command
            if name == "create":
                commands.send(pool.create_payment(amount=args[0]).payment.token)
            elif name == "sweep":
                commands.send(pool.sweep().expired)
            elif name == "status":
                commands.send(pool.get_payment(args[0]).status.value)
            elif name == "now":
                with pool.store.read() as tx:
                    commands.send((tx.now, SystemClock().now()))
    finally:
        pool.store.close()


@pytest.mark.slow
def test_app_servers_with_skewed_clocks_agree_on_expiry(database: str) -> None:
    setup = pool_on(database, threads=1)
    setup.sync_slots()
    setup.store.close()
    context = multiprocessing.get_context("spawn")
    servers = {}
    for name, skew in (("ahead", +15.0), ("behind", -15.0)):
        ours, theirs = context.Pipe()
        process = context.Process(target=skewed_server, args=(database, skew, theirs))
        process.start()
        servers[name] = (process, ours)

    def ask(server: str, *command: Any) -> Any:
        connection = servers[server][1]
        connection.send(command)
        assert connection.poll(60), f"{server} did not answer {command}"
        return connection.recv()

    try:
        # Their own clocks are half an hour apart; the time they decide by is one.
        (ahead_db, ahead_own), (behind_db, behind_own) = ask("ahead", "now"), ask("behind", "now")
        assert ahead_own - behind_own > timedelta(minutes=29)
        assert abs(ahead_db - behind_db) < timedelta(seconds=30)

        # A lease of 3 seconds taken by the server that is behind. The one ahead believes
        # 15 minutes have passed; on its own clock it would expire the lease at once.
        token = ask("behind", "create", 1000)
        assert ask("ahead", "sweep") == 0
        assert ask("ahead", "status", token) == "pending"
        time.sleep(LEASE.total_seconds() + 0.2)
        # Due now on the database's clock. The server that is behind would, on its own
        # clock, wait another 15 minutes.
        assert ask("behind", "status", token) == "expired"
        assert ask("ahead", "status", token) == "expired"

        # And the other way round: taken ahead, not expired early, expired by the one behind.
        token = ask("ahead", "create", 2000)
        assert ask("ahead", "sweep") == 0
        time.sleep(LEASE.total_seconds() + 0.2)
        assert ask("behind", "sweep") == 1
        assert ask("ahead", "status", token) == "expired"
    finally:
        for process, connection in servers.values():
            connection.send(None)
            process.join(timeout=30)
            if process.exitcode is None:
                process.kill()
    for process, _ in servers.values():
        assert process.exitcode == 0
