"""What only the SQLite store promises: its file, its pragmas, its locking."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from callbackpool.domain.errors import PoolExhausted, StoreUnavailable
from callbackpool.pool import CallbackPool, Checkout, Waiting
from callbackpool.store import open_store
from callbackpool.store.queries import load_migrations
from callbackpool.store.sqlite import SqliteStore, to_us
from callbackpool.testing import FakeClock

from ..support import (
    POLICY,
    TURNED_AWAY,
    TURNED_AWAY_LAST,
    assert_turn_aways_carried_over,
    make_gateway,
    paygistix_return,
)

MIGRATIONS = [name for name, _ in load_migrations("sqlite")]


def test_looking_at_pending_migrations_creates_no_database(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "typo.db")
    assert [name for name, _ in store.pending_migrations()] == MIGRATIONS
    assert not (tmp_path / "typo.db").exists()


def test_the_file_is_in_wal_mode_with_foreign_keys(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "pool.db")
    store.migrate()
    with store.read():
        pass
    raw = sqlite3.connect(tmp_path / "pool.db")
    assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    names = [row[0] for row in raw.execute("SELECT name FROM schema_migrations ORDER BY name")]
    assert names == MIGRATIONS


def test_one_live_lease_per_slot_is_a_rule_of_the_database(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "pool.db")
    store.migrate()
    raw = sqlite3.connect(tmp_path / "pool.db")
    raw.execute("INSERT INTO slots (path, created_at) VALUES ('/cb/1', 0)")
    insert = (
        "INSERT INTO leases (slot_id, path, token, amount, acquired_at, expires_at) "
        "VALUES (1, '/cb/1', ?, 100, 0, 10)"
    )
    raw.execute(insert, ("a",))
    with pytest.raises(sqlite3.IntegrityError, match="UNIQUE"):
        raw.execute(insert, ("b",))
    raw.execute("INSERT INTO slots (path, created_at) VALUES ('/cb/2', 0)")
    with pytest.raises(sqlite3.IntegrityError, match="UNIQUE"):  # one live lease per payment
        raw.execute(insert.replace("VALUES (1, '/cb/1'", "VALUES (2, '/cb/2'"), ("a",))


def test_a_locked_database_is_unavailable_not_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "pool.db"
    SqliteStore(path).migrate()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    store = SqliteStore(path, busy_timeout=0.1)
    with pytest.raises(StoreUnavailable, match="busy"), store.transaction():
        pass
    with pytest.raises(StoreUnavailable, match="busy"):
        store.migrate()
    holder.execute("ROLLBACK")
    with store.transaction() as tx:
        assert tx.live_leases() == []


def test_database_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    relative = open_store("sqlite:///relative.db?synchronous=normal&busy_timeout=2")
    assert isinstance(relative, SqliteStore)
    assert (relative.path, relative.synchronous, relative.busy_timeout) == (
        "relative.db",
        "NORMAL",
        2.0,
    )
    absolute = open_store(f"sqlite:///{tmp_path}/absolute.db")
    assert isinstance(absolute, SqliteStore)
    assert absolute.path == f"{tmp_path}/absolute.db"
    memory = open_store("sqlite:///:memory:")
    memory.migrate()
    with memory.transaction() as tx:
        assert tx.sync_slots(["/cb/1"]).added == ("/cb/1",)


def test_the_capacity_migration_keeps_leases_and_their_id_sequence(tmp_path: Path) -> None:
    # A database at 0001 with ended leases (one id burnt by a deleted row): after 0002 the
    # rows are there, their taints too, and the next id continues the sequence.
    path = tmp_path / "pool.db"
    raw = sqlite3.connect(path)
    raw.execute("CREATE TABLE schema_migrations (name TEXT PRIMARY KEY, applied_at INTEGER)")
    raw.executescript(dict(load_migrations("sqlite"))["0001_initial"])
    raw.execute("INSERT INTO schema_migrations VALUES ('0001_initial', 0)")
    raw.execute("INSERT INTO slots (path, created_at) VALUES ('/cb/1', 0)")
    raw.execute(
        "INSERT INTO payments (token, amount, currency, status, created_at, updated_at) "
        "VALUES ('t', 100, 'USD', 'cancelled', 0, 0)"
    )
    for ended in (1, 2, 3):
        raw.execute(
            "INSERT INTO leases (slot_id, path, token, amount, acquired_at, expires_at, "
            "ended_at, end_reason, taint_until) VALUES (1, '/cb/1', 't', 100, 0, 9, ?, "
            "'cancelled', 99)",
            (ended,),
        )
    raw.execute("DELETE FROM leases WHERE id = 3")
    raw.commit()
    raw.close()

    assert SqliteStore(path).migrate() == MIGRATIONS[1:]

    raw = sqlite3.connect(path)
    rows = raw.execute("SELECT id, ended_at, end_reason, taint_until FROM leases").fetchall()
    assert rows == [(1, 1, "cancelled", 99), (2, 2, "cancelled", 99)]
    raw.execute(
        "INSERT INTO leases (slot_id, path, token, amount, acquired_at, expires_at, ended_at, "
        "end_reason) VALUES (1, '/cb/1', 't', 100, 0, 9, 5, 'abandoned')"
    )
    assert raw.execute("SELECT max(id) FROM leases").fetchone() == (4,)
    with pytest.raises(sqlite3.IntegrityError, match="CHECK"):
        raw.execute("UPDATE leases SET end_reason = 'lost' WHERE id = 4")


def test_the_shop_migration_keeps_payments_and_what_refers_to_them(tmp_path: Path) -> None:
    # 0006 makes the payments table anew (a CHECK constraint changes): the rows that refer
    # to a payment (a lease, a review) stay, each payment gets an id, and the references
    # are still enforced afterwards.
    path = tmp_path / "pool.db"
    raw = sqlite3.connect(path)
    raw.execute("CREATE TABLE schema_migrations (name TEXT PRIMARY KEY, applied_at INTEGER)")
    for name, script in load_migrations("sqlite"):
        if name < "0006":
            raw.executescript(script)
            raw.execute("INSERT INTO schema_migrations VALUES (?, 0)", (name,))
    raw.execute("INSERT INTO slots (path, created_at) VALUES ('/cb/1', 0)")
    for token in ("t1", "t2"):
        raw.execute(
            "INSERT INTO payments (token, amount, currency, status, created_at, updated_at) "
            "VALUES (?, 100, 'USD', 'failed', 0, 0)",
            (token,),
        )
    raw.execute(
        "INSERT INTO leases (slot_id, path, token, amount, acquired_at, expires_at, ended_at, "
        "end_reason) VALUES (1, '/cb/1', 't1', 100, 0, 9, 5, 'callback')"
    )
    raw.execute(
        "INSERT INTO reviews (decision, payment_token, decided_by, reason, decided_at) "
        "VALUES ('payment', 't2', 'ann', 'refund', 0)"
    )
    raw.commit()
    raw.close()

    assert SqliteStore(path).migrate() == [name for name in MIGRATIONS if name >= "0006"]

    raw = sqlite3.connect(path)
    raw.execute("PRAGMA foreign_keys = ON")
    rows = raw.execute("SELECT token, id, status FROM payments ORDER BY token").fetchall()
    assert [(token, status) for token, _, status in rows] == [("t1", "failed"), ("t2", "failed")]
    ids = {payment_id for _, payment_id, _ in rows}
    assert len(ids) == 2
    assert all(payment_id.startswith("pay_") for payment_id in ids)
    assert raw.execute("SELECT token FROM leases").fetchall() == [("t1",)]
    assert raw.execute("SELECT payment_token FROM reviews").fetchall() == [("t2",)]
    with pytest.raises(sqlite3.IntegrityError, match="FOREIGN KEY"):
        raw.execute(
            "INSERT INTO reviews (decision, payment_token, decided_by, reason, decided_at) "
            "VALUES ('payment', 'nobody', 'ann', 'x', 0)"
        )
    raw.execute(
        "UPDATE payments SET status = 'open' WHERE token = 't1'"
    )  # the new status is allowed
    with pytest.raises(sqlite3.IntegrityError, match="CHECK"):
        raw.execute("UPDATE payments SET status = 'lost' WHERE token = 't1'")


def test_the_events_migration_keeps_payments_and_numbers_each_payments_events(
    tmp_path: Path,
) -> None:
    # A database at 0006 with a payment: 0007 adds the outbox beside it; the pool then
    # writes events, and the table refuses a second event of the same number.
    path = tmp_path / "pool.db"
    raw = sqlite3.connect(path)
    raw.execute("CREATE TABLE schema_migrations (name TEXT PRIMARY KEY, applied_at INTEGER)")
    for name, script in load_migrations("sqlite"):
        if name < "0007":
            raw.executescript(script)
            raw.execute("INSERT INTO schema_migrations VALUES (?, 0)", (name,))
    raw.execute(
        "INSERT INTO payments (token, id, amount, currency, status, created_at, updated_at) "
        "VALUES ('t1', 'pay_old', 100, 'USD', 'completed', 0, 0)"
    )
    raw.commit()
    raw.close()

    store = SqliteStore(path, clock=FakeClock())
    assert store.migrate() == [name for name in MIGRATIONS if name >= "0007"]
    pool = CallbackPool(store, make_gateway(), POLICY)
    pool.sync_slots()
    assert pool.get_payment("t1").status.value == "completed"
    checkout = pool.create_payment(amount=1000)
    pool.cancel_payment(checkout.payment.token)
    [event] = pool.events()
    assert (event.type, event.sequence) == ("payment.cancelled", 1)
    store.close()

    raw = sqlite3.connect(path)
    with pytest.raises(sqlite3.IntegrityError, match="UNIQUE"):
        raw.execute(
            "INSERT INTO events (id, type, payment_id, sequence, reason, data, created_at) "
            "VALUES ('evt_x', 'payment.completed', ?, 1, 'a racer', '{}', 0)",
            (event.payment_id,),
        )


def test_writers_of_one_process_queue_in_the_process(tmp_path: Path) -> None:
    # SQLite's busy handler polls with sleeps of up to 100 ms: a writer waiting there is
    # let in long after the turn is free. A writer of the same process waits for the turn
    # in the process (no longer than the busy timeout), then begins its own transaction.
    store = SqliteStore(tmp_path / "pool.db", busy_timeout=0.3)
    store.migrate()
    finished = threading.Event()
    refused: list[Exception] = []

    def second_writer() -> None:
        try:
            with store.transaction() as tx:
                tx.sync_slots(["/cb/1", "/cb/2"])
            finished.set()
        except StoreUnavailable as exc:
            refused.append(exc)

    with store.transaction() as tx:
        tx.sync_slots(["/cb/1"])
        waiting = threading.Thread(target=second_writer, name="second")
        waiting.start()
        time.sleep(0.1)
        assert not finished.is_set()
    waiting.join()
    assert finished.is_set()
    with store.read() as tx:
        assert [view.path for view in tx.slot_views()] == ["/cb/1", "/cb/2"]
    # A turn that does not come within the busy timeout: the store is unavailable.
    with store.transaction():
        late = threading.Thread(target=second_writer, name="late")
        late.start()
        late.join()
    assert [str(exc) for exc in refused] == ["SQLite database is busy: no write turn in 0.3 s"]


def test_a_failing_writer_undoes_only_its_own_writes(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "pool.db")
    store.migrate()
    inside = threading.Event()
    release = threading.Event()

    def good_writer() -> None:
        with store.transaction() as tx:
            tx.sync_slots(["/cb/good"])
            inside.set()
            release.wait(5)

    first = threading.Thread(target=good_writer)
    first.start()
    inside.wait(5)

    def failing_writer() -> None:
        with store.transaction() as tx:
            tx.sync_slots(["/cb/good", "/cb/bad"])
            raise RuntimeError("changed my mind")

    failures: list[BaseException] = []

    def run_failing_writer() -> None:
        try:
            failing_writer()
        except RuntimeError as exc:
            failures.append(exc)

    second = threading.Thread(target=run_failing_writer)
    second.start()
    time.sleep(0.05)  # the failing writer queues behind the good one
    release.set()
    first.join()
    second.join()
    assert [str(exc) for exc in failures] == ["changed my mind"]
    with store.read() as tx:
        assert [(view.path, view.active) for view in tx.slot_views()] == [("/cb/good", True)]


def test_another_process_gets_its_turn_while_this_one_keeps_writing(
    tmp_path: Path,
) -> None:
    path = tmp_path / "pool.db"
    store = SqliteStore(path)
    store.migrate()
    stop = threading.Event()

    def busy_writer() -> None:
        while not stop.is_set():
            with store.transaction() as tx:
                tx.sync_slots(["/cb/1"])

    writers = [threading.Thread(target=busy_writer) for _ in range(4)]
    for writer in writers:
        writer.start()
    try:
        # Another process (a CLI command, another instance) writes meanwhile.
        done = subprocess.run(
            [sys.executable, "-c", OTHER_PROCESS_WRITES, str(path)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        stop.set()
        for writer in writers:
            writer.join()
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "wrote 20"


OTHER_PROCESS_WRITES = """
import sys
from callbackpool.store.sqlite import SqliteStore
store = SqliteStore(sys.argv[1], busy_timeout=5)
for i in range(20):
    with store.transaction() as tx:
        tx.sync_slots(["/cb/1", f"/cb/other-{i}"])
print("wrote 20")
"""


def test_every_commit_waits_for_the_disk_by_default(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "pool.db")
    store.migrate()
    with store.transaction() as tx:
        tx.sync_slots(["/cb/1"])
    conn = store._local.conn
    assert conn.execute("PRAGMA synchronous").fetchone() == (2,)  # FULL


def test_returns_stored_before_receipts_get_a_random_one(tmp_path: Path) -> None:
    path = tmp_path / "pool.db"
    raw = sqlite3.connect(path)
    raw.execute("CREATE TABLE schema_migrations (name TEXT PRIMARY KEY, applied_at INTEGER)")
    [(_, initial)] = [m for m in load_migrations("sqlite") if m[0] == "0001_initial"]
    raw.executescript(initial)
    raw.execute("INSERT INTO schema_migrations VALUES ('0001_initial', 0)")
    for _ in range(2):
        raw.execute(
            "INSERT INTO callbacks (path, method, params, received_at, outcome) "
            "VALUES ('/cb/1', 'GET', '[]', 0, 'received')"
        )
    raw.commit()
    raw.close()
    store = SqliteStore(path)
    store.migrate()
    with store.read() as tx:
        receipts = [record.receipt for record in (tx.get_callback(1), tx.get_callback(2)) if record]
    store.close()
    assert len(receipts) == 2
    assert all(r is not None and len(r) == 32 for r in receipts)
    assert receipts[0] != receipts[1]


def test_the_last_week_of_turn_aways_outlives_their_table(tmp_path: Path) -> None:
    path = tmp_path / "pool.db"
    raw = sqlite3.connect(path)
    raw.execute("CREATE TABLE schema_migrations (name TEXT PRIMARY KEY, applied_at INTEGER)")
    for name, script in load_migrations("sqlite"):
        if name < "0005":
            raw.executescript(script)
            raw.execute("INSERT INTO schema_migrations VALUES (?, 0)", (name,))
    minute = to_us(TURNED_AWAY_LAST) // 60_000_000
    raw.execute("INSERT INTO admissions (minute, leased, refused) VALUES (?, 7, 3)", (minute,))
    for before, count in TURNED_AWAY:
        raw.execute(
            "INSERT INTO turn_aways VALUES (?, ?)", (to_us(TURNED_AWAY_LAST - before), count)
        )
    raw.commit()
    raw.close()

    store = SqliteStore(path, clock=FakeClock(TURNED_AWAY_LAST))
    assert store.migrate() == [name for name in MIGRATIONS if name >= "0005"]
    assert_turn_aways_carried_over(store)
    store.close()
    raw = sqlite3.connect(path)
    assert raw.execute("SELECT name FROM sqlite_master WHERE name = 'turn_aways'").fetchall() == []


def test_instances_on_one_file_share_one_waiting_room(tmp_path: Path) -> None:
    # Two app instances: two stores (their own connections) on one file, two pools.
    clock = FakeClock()
    stores = [SqliteStore(tmp_path / "pool.db", clock=clock) for _ in range(2)]
    stores[0].migrate()
    one, two = (CallbackPool(store, make_gateway(), POLICY) for store in stores)
    one.sync_slots()
    held = [one.create_payment(amount=5000 + n) for n in range(10)]
    first = one.create_payment(amount=1000, wait=True)
    second = two.create_payment(amount=2000, wait=True)
    assert isinstance(first, Waiting)
    assert isinstance(second, Waiting)
    assert second.position == 2

    returned = two.handle_callback(held[0].lease.path, paygistix_return(amount="50.00"))
    assert returned.payment_token == held[0].payment.token
    with pytest.raises(PoolExhausted):  # the free slot is the first ticket's, on either
        one.create_payment(amount=3000)
    still = two.poll_ticket(second.ticket)
    assert isinstance(still, Waiting)
    assert still.position == 2
    granted = two.poll_ticket(first.ticket)
    assert isinstance(granted, Checkout)
    assert granted.lease.path == held[0].lease.path
    again = one.poll_ticket(first.ticket)
    assert isinstance(again, Checkout)
    assert again.payment.token == granted.payment.token
    for store in stores:
        store.close()
