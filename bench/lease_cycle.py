"""Acquire + release cycles per second: through the library, and raw.

A cycle is what a payment that is cancelled costs the pool: ``create_payment`` (a write
transaction that expires due leases, picks a slot, inserts the lease and the payment) then
``cancel_payment`` (a write transaction that ends the lease and updates the payment). The
raw side issues the very same SQL statements (from ``store/sql/sqlite.sql``) in the same
transactions with the bare ``sqlite3`` module, so the ratio is the cost of the library's own
layers: validation, value objects, the port, logging.

Run on demand (it is not a test): ``.venv/bin/python bench/lease_cycle.py``.
The last line is machine-readable: ``lease_cycle sqlite ratio=<lowest ratio>``.
"""

from __future__ import annotations

import argparse
import json
import logging
import secrets
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from callbackpool.domain.gateway import CatalogueItem
from callbackpool.gateways.paygistix import PaygistixGateway
from callbackpool.pool import CallbackPool, PoolPolicy
from callbackpool.store.queries import load_queries
from callbackpool.store.sqlite import SqliteStore, to_us

Q = load_queries("sqlite.sql")
LOCK = timedelta(minutes=10)
# Taints would steer every later acquisition to a tainted tier; the benchmark measures the
# common case, so they fade at once.
WINDOW = timedelta(microseconds=1)


def paths(count: int) -> tuple[str, ...]:
    return tuple(f"/api/v1/payments/callback/handler-{i}" for i in range(1, count + 1))


def library_cycles(db: Path, slots: int, cycles: int, synchronous: str) -> float:
    store = SqliteStore(db, synchronous=synchronous)
    store.migrate()
    gateway = PaygistixGateway(
        merchant_id="bench",
        form_id="1",
        form_hash="h",
        currency="USD",
        catalogue=(CatalogueItem(code="AMT", description="amount", price=1),),
    )
    policy = PoolPolicy(
        base_url="https://shop.example",
        callback_paths=paths(slots),
        form_action_url="https://gateway.example/form",
        lock_timeout=LOCK,
        late_callback_window=WINDOW,
    )
    pool = CallbackPool(store, gateway, policy)
    pool.sync_slots()

    def cycle() -> None:
        checkout = pool.create_payment(amount=1000)
        pool.cancel_payment(checkout.payment.token)

    rate = timed(cycle, cycles)
    store.close()
    return rate


def raw_cycles(db: Path, slots: int, cycles: int, synchronous: str) -> float:
    store = SqliteStore(db, synchronous=synchronous)
    store.migrate()
    store.close()
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(f"PRAGMA synchronous = {synchronous}")
    conn.execute("PRAGMA foreign_keys = ON")
    now_us = to_us(datetime.now(UTC))
    conn.executemany(
        "INSERT INTO slots (path, active, created_at) VALUES (?, 1, ?)",
        [(path, now_us) for path in paths(slots)],
    )
    window = WINDOW // timedelta(microseconds=1)
    lock = LOCK // timedelta(microseconds=1)

    def cycle() -> None:
        token = secrets.token_urlsafe(24)
        conn.execute("BEGIN IMMEDIATE")
        now = to_us(datetime.now(UTC))
        conn.execute(Q["abandon_silent_leases"], {"now": now, "window": window}).fetchall()
        conn.execute(Q["expire_due_leases"], {"now": now, "window": window}).fetchall()
        # The waiting room: is anyone queued ahead of this request? (docs/capacity.md)
        conn.execute(Q["waiting_ahead"], {"now": now, "priority": 0, "id": None}).fetchone()
        slot = conn.execute(Q["pick_clean_slot"], {"now": now}).fetchone()
        lease_id = conn.execute(
            Q["insert_lease"],
            {"slot_id": slot[0], "path": slot[1], "token": token, "amount": 1000,
             "now": now, "expires_at": now + lock},
        ).fetchone()[0]  # fmt: skip
        conn.execute(
            Q["occupy_slot"],
            {"lease_id": lease_id, "expires_at": now + lock, "now": now, "slot_id": slot[0]},
        )
        conn.execute(
            Q["insert_payment"],
            {"token": token, "amount": 1000, "currency": "USD",
             "items": json.dumps([{"code": "AMT", "quantity": 1000, "unitPrice": 1}]),
             "customer": "{}", "status": "pending", "late": 0, "lease_id": lease_id,
             "callback_path": slot[1], "expires_at": now + lock, "now": now},
        )  # fmt: skip
        conn.execute(
            Q["record_admission"],
            {"minute": now // 60_000_000, "leased": 1, "waited": 0, "refused": 0,
             "granted": 0, "busy": None},
        )  # fmt: skip
        conn.execute("COMMIT")
        conn.execute("BEGIN IMMEDIATE")
        now = to_us(datetime.now(UTC))
        conn.execute(Q["abandon_silent_leases"], {"now": now, "window": window}).fetchall()
        conn.execute(Q["expire_due_leases"], {"now": now, "window": window}).fetchall()
        conn.execute(Q["get_payment"], {"token": token}).fetchone()
        conn.execute(Q["live_lease_of_payment"], {"token": token}).fetchone()
        conn.execute(
            Q["end_lease"],
            {"id": lease_id, "now": now, "reason": "cancelled", "taint_until": now + window},
        ).fetchone()
        conn.execute(
            Q["free_slot"],
            {"slot_id": slot[0], "lease_id": lease_id, "released_at": now,
             "taint_until": now + window},
        )  # fmt: skip
        conn.execute(
            Q["update_payment"],
            {"token": token, "expected": "pending", "status": "cancelled", "late": None,
             "pn_ref": None, "order_id": None, "auth_code": None, "card_type": None,
             "last4": None, "result_code": None, "error_message": None, "callback_id": None,
             "now": now},
        )  # fmt: skip
        conn.execute(Q["get_payment"], {"token": token}).fetchone()
        conn.execute("COMMIT")

    rate = timed(cycle, cycles)
    conn.close()
    return rate


def timed(cycle: Callable[[], None], cycles: int) -> float:
    for _ in range(min(200, cycles // 10)):  # warm up caches and the WAL
        cycle()
    start = time.perf_counter()
    for _ in range(cycles):
        cycle()
    return cycles / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=3000)
    parser.add_argument("--synchronous", default="NORMAL", help="SQLite synchronous mode")
    parser.add_argument("--repeat", type=int, default=3, help="best of N runs of each")
    args = parser.parse_args()
    logging.disable(logging.INFO)  # the library logs each lease; not what is measured here

    print(f"lease_cycle sqlite: {args.cycles} cycles, synchronous={args.synchronous}")
    ratios = []
    per_cycle = {}
    with tempfile.TemporaryDirectory() as folder:
        for slots in (10, 10_000):
            best_lib = best_raw = 0.0
            for run in range(args.repeat):
                lib_db = Path(folder) / f"lib-{slots}-{run}.db"
                raw_db = Path(folder) / f"raw-{slots}-{run}.db"
                best_lib = max(
                    best_lib, library_cycles(lib_db, slots, args.cycles, args.synchronous)
                )
                best_raw = max(best_raw, raw_cycles(raw_db, slots, args.cycles, args.synchronous))
            ratio = best_lib / best_raw
            ratios.append(ratio)
            per_cycle[slots] = 1e6 / best_lib
            print(
                f"  {slots:>6} slots: library {best_lib:8.0f} cycles/s "
                f"({1e6 / best_lib:6.1f} µs), raw {best_raw:8.0f} cycles/s "
                f"({1e6 / best_raw:6.1f} µs), ratio {ratio:.2f}"
            )
    growth = per_cycle[10_000] / per_cycle[10]
    print(f"  cost per cycle at 10,000 slots / at 10 slots: {growth:.2f}× (target ≤ 1.5×)")
    print(f"lease_cycle sqlite ratio={min(ratios):.2f}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
