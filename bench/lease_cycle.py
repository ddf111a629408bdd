"""Acquire + release cycles per second: through the library, and raw.

A cycle is what a payment that is cancelled costs the pool: ``create_payment`` (a write
transaction that expires due leases, picks a slot, inserts the lease and the payment) then
``cancel_payment`` (a write transaction that ends the lease and updates the payment). The
raw side issues the very same named SQL statements (``store/sql/``) in the same
transactions with the bare driver (``sqlite3``, ``psycopg``), so the ratio is the cost of
the library's own layers: validation, value objects, the port, logging, and on PostgreSQL
the connection pool.

PostgreSQL runs at 1, 4 and 16 connections (as many threads, one cycle at a time each),
in a database of its own made on the server ``--postgres`` names and dropped afterwards.

Run on demand (it is not a test): ``.venv/bin/python bench/lease_cycle.py``.
The last lines are machine-readable: ``lease_cycle sqlite ratio=<lowest ratio>``, then
``lease_cycle postgres ratio=<lowest ratio>``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import sqlite3
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from callbackpool.domain.gateway import CatalogueItem
from callbackpool.gateways.paygistix import PaygistixGateway
from callbackpool.pool import CallbackPool, PoolPolicy
from callbackpool.store.port import Store
from callbackpool.store.postgres import PostgresStore
from callbackpool.store.queries import load_queries
from callbackpool.store.sqlite import SqliteStore, to_us

Q = load_queries("sqlite")
PG = load_queries("postgres")
LOCK = timedelta(minutes=10)
# Taints would steer every later acquisition to a tainted tier; the benchmark measures the
# common case, so they fade at once.
WINDOW = timedelta(microseconds=1)


def paths(count: int) -> tuple[str, ...]:
    return tuple(f"/api/v1/payments/callback/handler-{i}" for i in range(1, count + 1))


def library_pool(store: Store, slots: int) -> CallbackPool:
    gateway = PaygistixGateway(
        merchant_id="bench",
        form_id="1",
        form_hash="h",
        currency="USD",
        catalogue=(CatalogueItem(code="AMT", description="amount", price=1),),
        action_url="https://gateway.example/form",
    )
    policy = PoolPolicy(
        base_url="https://shop.example",
        callback_paths=paths(slots),
        lock_timeout_minutes=LOCK / timedelta(minutes=1),
        late_callback_window_minutes=WINDOW / timedelta(minutes=1),
    )
    pool = CallbackPool(store, gateway, policy)
    pool.sync_slots()
    return pool


def library_cycle(pool: CallbackPool) -> Callable[[], None]:
    def cycle() -> None:
        checkout = pool.create_payment(amount=1000)
        pool.cancel_payment(checkout.payment.token)

    return cycle


def library_cycles(db: Path, slots: int, cycles: int, synchronous: str) -> float:
    store = SqliteStore(db, synchronous=synchronous)
    store.migrate()
    rate = timed(library_cycle(library_pool(store, slots)), cycles)
    store.close()
    return rate


def raw_cycle(
    run: Callable[[str, dict[str, Any]], list[Any]],
    begin: Callable[[bool], Any],
    commit: Callable[[], None],
    time: Callable[[datetime], Any],
) -> Callable[[], None]:
    """The library's cycle as the bare driver runs it: the same named queries, in the same
    transactions (``run`` executes one and fetches its rows; ``begin`` opens a write or a
    read transaction and returns its clock; ``time`` is a moment as the driver takes it)."""
    items = json.dumps([{"code": "AMT", "quantity": 1000, "unitPrice": 1}])
    no_change = dict.fromkeys(
        ["late", "lease_id", "callback_path", "pn_ref", "order_id", "auth_code", "card_type",
         "last4", "result_code", "error_message", "callback_id"]
    )  # fmt: skip

    def cycle() -> None:
        token = secrets.token_urlsafe(24)
        now = begin(True)
        run("silent_slots", {"now": now})
        run("due_slots", {"now": now})
        # The waiting room: is anyone queued ahead of this request? (docs/capacity.md)
        run("waiting_ahead", {"now": now, "priority": 0, "id": None})
        slot_id, path = run(
            "pick_slot", {"now": now, "amount": 1000, "allow_same_amount_tainted": True}
        )[0]
        expires = time(datetime.now(UTC) + LOCK)
        lease = run(
            "insert_lease",
            {"slot_id": slot_id, "path": path, "token": token, "amount": 1000, "now": now,
             "expires_at": expires},
        )[0]  # fmt: skip
        run("occupy_slot", {"lease_id": lease[0], "expires_at": expires, "now": now,
                            "slot_id": slot_id})  # fmt: skip
        run(
            "insert_payment",
            {"token": token, "id": f"pay_{token}", "amount": 1000, "currency": "USD",
             "items": items, "customer": "{}", "customer_key": None, "status": "pending",
             "late": False, "lease_id": lease[0], "callback_path": path, "expires_at": expires,
             "order_reference": None, "metadata": "{}", "success_url": None,
             "cancel_url": None, "max_attempts": 1, "idempotency_key": None,
             "request_hash": None, "created_at": now, "now": now},
        )  # fmt: skip
        run(
            "record_admission",
            {"minute": int(datetime.now(UTC).timestamp() // 60), "leased": 1, "waited": 0,
             "refused": 0, "granted": 0, "busy": 0},
        )  # fmt: skip
        commit()
        # cancel_payment: a look-up before taking the write turn (an unknown token never
        # takes it), then the lease on its slot, due to expire or be abandoned first.
        now = begin(False)
        run("get_payment", {"token": token})
        commit()
        now = begin(True)
        run("live_lease_of_payment", {"token": token})
        for end in ("abandon_lease", "expire_lease"):
            run("lock_slot", {"slot_id": slot_id})
            run(end, {"id": lease[0], "now": now, "window": WINDOW})
        run("get_payment", {"token": token})
        run("live_lease_of_payment", {"token": token})
        run("lock_slot_of_lease", {"id": lease[0]})
        ended = run(
            "end_lease", {"id": lease[0], "now": now, "reason": "cancelled", "taint_until": now}
        )[0]
        run("free_slot", {"slot_id": slot_id, "id": lease[0], "ended_at": now,
                          "taint_until": now})  # fmt: skip
        assert ended is not None
        run(
            "update_payment",
            {"token": token, "expected": "pending", "status": "cancelled", "now": now} | no_change,
        )
        run("get_payment", {"token": token})
        commit()

    return cycle


def raw_cycles(db: Path, slots: int, cycles: int, synchronous: str) -> float:
    store = SqliteStore(db, synchronous=synchronous)
    store.migrate()
    store.close()
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(f"PRAGMA synchronous = {synchronous}")
    conn.execute("PRAGMA foreign_keys = ON")
    conn.executemany(
        "INSERT INTO slots (path, active, created_at) VALUES (?, 1, ?)",
        [(path, to_us(datetime.now(UTC))) for path in paths(slots)],
    )

    def run(name: str, params: dict[str, Any]) -> list[Any]:
        params = {
            key: value // timedelta(microseconds=1) if isinstance(value, timedelta) else value
            for key, value in params.items()
        }
        return conn.execute(Q[name], params).fetchall()

    def begin(write: bool) -> int:
        conn.execute("BEGIN IMMEDIATE" if write else "BEGIN DEFERRED")
        return to_us(datetime.now(UTC))

    rate = timed(raw_cycle(run, begin, lambda: conn.execute("COMMIT") and None, to_us), cycles)
    conn.close()
    return rate


def timed(cycle: Callable[[], None], cycles: int) -> float:
    for _ in range(min(200, cycles // 10)):  # warm up caches and the WAL
        cycle()
    start = time.perf_counter()
    for _ in range(cycles):
        cycle()
    return cycles / (time.perf_counter() - start)


# --- PostgreSQL ---------------------------------------------------------------------------

PG_SLOTS = 200  # enough that 16 connections never meet a full pool (--pg-slots)
CONNECTIONS = (1, 4, 16)


@contextmanager
def bench_database(server_url: str) -> Iterator[str]:
    """A database of the benchmark's own on the server, migrated; dropped afterwards."""
    name = f"cbp_bench_{secrets.token_hex(6)}"
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        url = psycopg.conninfo.make_conninfo(server_url, dbname=name)
        try:
            store = PostgresStore(url, max_size=1)
            store.migrate()
            store.close()
            yield url
        finally:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def reset(url: str, slots: int) -> None:
    """Empty the tables and lay out the slots: every run starts from the same state."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "TRUNCATE slots, leases, payments, callbacks, pn_refs RESTART IDENTITY CASCADE"
        )
        conn.execute(
            "INSERT INTO slots (path, created_at) SELECT p, now() FROM unnest(%s::text[]) AS p",
            (list(paths(slots)),),
        )
        conn.execute("VACUUM ANALYZE")


def pg_library_cycles(url: str, slots: int, connections: int, cycles: int) -> float:
    reset(url, slots)
    store = PostgresStore(url, min_size=connections, max_size=connections)
    cycle = library_cycle(library_pool(store, slots))
    rate = timed_threads([cycle] * connections, cycles)
    store.close()
    return rate


def pg_raw_cycle(conn: psycopg.Connection[Any]) -> Callable[[], None]:
    def run(name: str, params: dict[str, Any]) -> list[Any]:
        cursor = conn.execute(PG[name], params)
        return cursor.fetchall() if cursor.description else []

    def begin(write: bool) -> datetime:
        cursor = conn.execute(PG["begin_write" if write else "begin_read"])
        cursor.nextset()
        row = cursor.fetchone()
        assert row is not None
        now: datetime = row[0]
        return now

    return raw_cycle(run, begin, lambda: conn.execute(PG["commit"]) and None, lambda t: t)


def pg_raw_cycles(url: str, slots: int, connections: int, cycles: int) -> float:
    reset(url, slots)
    conns = [psycopg.connect(url, autocommit=True) for _ in range(connections)]
    try:
        return timed_threads([pg_raw_cycle(conn) for conn in conns], cycles)
    finally:
        for conn in conns:
            conn.close()


def timed_threads(cycles_of: list[Callable[[], None]], cycles: int) -> float:
    """Cycles per second of all threads together, each running its own cycle in a loop."""
    each = max(1, cycles // len(cycles_of))
    start = threading.Barrier(len(cycles_of) + 1)
    failures: list[BaseException] = []

    def run(cycle: Callable[[], None]) -> None:
        try:
            for _ in range(min(100, each // 10)):  # warm up: connections, prepared statements
                cycle()
        finally:
            start.wait()
        try:
            for _ in range(each):
                cycle()
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=run, args=(cycle,)) for cycle in cycles_of]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    if failures:
        raise failures[0]
    return each * len(cycles_of) / elapsed


def run_postgres(server_url: str, slots: int, cycles: int, repeat: int) -> None:
    print(f"lease_cycle postgres: {cycles} cycles per run, {slots} slots, best of {repeat}")
    ratios = []
    with bench_database(server_url) as url:
        for connections in CONNECTIONS:
            best_lib = best_raw = 0.0
            for _ in range(repeat):
                best_lib = max(best_lib, pg_library_cycles(url, slots, connections, cycles))
                best_raw = max(best_raw, pg_raw_cycles(url, slots, connections, cycles))
            ratio = best_lib / best_raw
            ratios.append(ratio)
            print(
                f"  {connections:>2} connections: library {best_lib:6.0f} cycles/s, "
                f"raw {best_raw:6.0f} cycles/s, ratio {ratio:.2f}"
            )
    print(f"lease_cycle postgres ratio={min(ratios):.2f}")


def run_sqlite(cycles: int, synchronous: str, repeat: int) -> None:
    print(f"lease_cycle sqlite: {cycles} cycles, synchronous={synchronous}")
    ratios = []
    per_cycle = {}
    with tempfile.TemporaryDirectory() as folder:
        for slots in (10, 10_000):
            best_lib = best_raw = 0.0
            for run in range(repeat):
                lib_db = Path(folder) / f"lib-{slots}-{run}.db"
                raw_db = Path(folder) / f"raw-{slots}-{run}.db"
                best_lib = max(best_lib, library_cycles(lib_db, slots, cycles, synchronous))
                best_raw = max(best_raw, raw_cycles(raw_db, slots, cycles, synchronous))
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=3000, help="SQLite cycles per run")
    parser.add_argument("--synchronous", default="NORMAL", help="SQLite synchronous mode")
    parser.add_argument("--repeat", type=int, default=3, help="best of N runs of each")
    parser.add_argument(
        "--postgres",
        default=os.environ.get(
            "CALLBACKPOOL_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
        help="PostgreSQL server to make the benchmark's database on "
        "(env CALLBACKPOOL_BENCH_POSTGRES_URL)",
    )
    parser.add_argument("--pg-cycles", type=int, default=2000, help="PostgreSQL cycles per run")
    parser.add_argument("--pg-slots", type=int, default=PG_SLOTS, help="PostgreSQL pool size")
    parser.add_argument("--only", choices=("sqlite", "postgres"), help="run one store only")
    args = parser.parse_args()
    logging.disable(logging.INFO)  # the library logs each lease; not what is measured here

    if args.only != "postgres":
        run_sqlite(args.cycles, args.synchronous, args.repeat)
    if args.only != "sqlite":
        run_postgres(args.postgres, args.pg_slots, args.pg_cycles, args.repeat)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
