"""Several processes, each with several threads, share one SQLite file (DESIGN.md §3,
invariants 1 and 2): afterwards no slot ever had two overlapping live leases."""

from __future__ import annotations

import contextlib
import itertools
import multiprocessing
import random
import sqlite3
import sys
import threading
import time
from pathlib import Path

import pytest

from callbackpool.domain.errors import PaymentNotPending, PoolExhausted
from callbackpool.pool import CallbackPool
from callbackpool.store.sqlite import SqliteStore

from ..support import PATHS, make_gateway, paygistix_return, policy_with

PROCESSES = 3
THREADS = 4
ROUNDS = 40
SLOTS = 5


def pool_on(path: str) -> CallbackPool:
    store = SqliteStore(path, synchronous="NORMAL", busy_timeout=30)
    policy = policy_with(callback_paths=PATHS[:SLOTS], lock_timeout_minutes=0.3 / 60)
    return CallbackPool(store, make_gateway(), policy)


def customer(path: str, worker: str, seed: int) -> None:
    pool = pool_on(path)
    rng = random.Random(seed)
    for n in range(ROUNDS):
        time.sleep(rng.uniform(0, 0.04))  # customers spread over time; leases expire
        amount = rng.choice((1000, 2000, 3000))
        try:
            checkout = pool.create_payment(amount=amount)
        except PoolExhausted:
            continue
        action = rng.random()
        if action < 0.6:
            pool.handle_callback(
                checkout.lease.path,
                paygistix_return(amount=f"{amount / 100:.2f}", pn_ref=f"{worker}-{n}"),
            )
        elif action < 0.8:
            with contextlib.suppress(PaymentNotPending):  # it may have expired first
                pool.cancel_payment(checkout.payment.token)
        # else: the customer leaves silently; the lease expires and is taken over.
        if rng.random() < 0.2:
            pool.sweep()


def process_main(path: str, index: int) -> None:
    failures: list[BaseException] = []

    def run(worker: str, seed: int) -> None:
        try:
            customer(path, worker, seed)
        except BaseException as exc:  # any error at all fails the test, via the exit code
            failures.append(exc)
            raise

    threads = [
        threading.Thread(target=run, args=(f"p{index}t{t}", index * 100 + t))
        for t in range(THREADS)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        sys.exit(f"{len(failures)} worker(s) failed: {failures[0]!r}")


@pytest.mark.slow
def test_processes_and_threads_never_overlap_leases(tmp_path: Path) -> None:
    path = str(tmp_path / "shared.db")
    setup = pool_on(path)
    setup.store.migrate()
    setup.sync_slots()
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=process_main, args=(path, i)) for i in range(PROCESSES)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=240)
        assert process.exitcode == 0
    setup.sweep()

    db = sqlite3.connect(path)
    leases = db.execute(
        "SELECT id, slot_id, token, acquired_at, coalesce(ended_at, 9e18) FROM leases ORDER BY id"
    ).fetchall()
    # The run did real work (most attempts meet a full pool: 45 to 110 leases were seen).
    assert len(leases) > 25
    by_slot: dict[int, list[tuple[int, int, int]]] = {}
    for lease_id, slot_id, _, start, end in leases:
        by_slot.setdefault(slot_id, []).append((start, end, lease_id))
    for slot_id, spans in by_slot.items():
        spans.sort()
        for (_, end, first), (start, _, second) in itertools.pairwise(spans):
            assert start >= end, f"slot {slot_id}: lease {second} began before {first} ended"
        # Lease ids increase in the order the slot was leased (fencing tokens).
        assert [lease_id for _, _, lease_id in spans] == sorted(
            lease_id for _, _, lease_id in spans
        )
    tokens = [row[2] for row in leases]
    assert len(tokens) == len(set(tokens))  # one lease per payment
    # Every payment with a lease exists, and none is left pending without a live lease.
    (orphans,) = db.execute(
        "SELECT count(*) FROM payments p WHERE p.status = 'pending' AND NOT EXISTS "
        "(SELECT 1 FROM leases l WHERE l.token = p.token AND l.ended_at IS NULL)"
    ).fetchone()
    assert orphans == 0
    (completed,) = db.execute("SELECT count(*) FROM payments WHERE status = 'completed'").fetchone()
    (applied,) = db.execute("SELECT count(*) FROM callbacks WHERE outcome = 'applied'").fetchone()
    assert completed == applied > 0
