"""What only the PostgreSQL store promises: database rules, row locks that let instances work
side by side, the database's clock, bounded waits, migrations under an advisory lock."""

from __future__ import annotations

import contextlib
import random
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg import sql

from callbackpool.domain.errors import (
    CallbackPoolError,
    ConfigurationError,
    MigrationError,
    PaymentNotPending,
    StoreError,
    StoreUnavailable,
)
from callbackpool.domain.model import (
    Admission,
    LeaseEnd,
    NewCallback,
    Payment,
    PaymentStatus,
    StatusChange,
)
from callbackpool.pool import CallbackPool
from callbackpool.store import open_store
from callbackpool.store import postgres as postgres_module
from callbackpool.store.postgres import PostgresStore
from callbackpool.store.tx import PaymentChange
from callbackpool.testing import FakeClock

from ..support import (
    PATHS,
    TURNED_AWAY,
    TURNED_AWAY_LAST,
    assert_turn_aways_carried_over,
    make_gateway,
    paygistix_return,
    policy_with,
)
from .conftest import StoreOpener

pytestmark = pytest.mark.postgres

MIGRATIONS = [name for name, _ in postgres_module.load_migrations("postgres")]


def pool_over(store: PostgresStore, **policy: Any) -> CallbackPool:
    pool = CallbackPool(store, make_gateway(), policy_with(**policy))
    pool.sync_slots()
    return pool


@pytest.fixture
def raw(database: str) -> Iterator[psycopg.Connection[Any]]:
    """A plain connection to the test database, to look behind the store."""
    with psycopg.connect(database, autocommit=True) as conn:
        yield conn


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# --- the database's own rules ---------------------------------------------------------------


def test_one_live_lease_per_slot_and_per_payment_are_rules_of_the_database(
    raw: psycopg.Connection[Any],
) -> None:
    raw.execute("INSERT INTO slots (path, created_at) VALUES ('/cb/1', now()), ('/cb/2', now())")
    raw.execute(
        "INSERT INTO payments (token, id, amount, currency, status, created_at, updated_at)"
        " VALUES ('a', 'pay_a', 100, 'USD', 'pending', now(), now()),"
        "        ('b', 'pay_b', 100, 'USD', 'pending', now(), now())"
    )
    insert = (
        "INSERT INTO leases (slot_id, path, token, amount, acquired_at, expires_at)"
        " VALUES (%s, '/cb', %s, 100, now(), now())"
    )
    raw.execute(insert, (1, "a"))
    with pytest.raises(psycopg.errors.UniqueViolation, match="leases_one_live_per_slot"):
        raw.execute(insert, (1, "b"))
    with pytest.raises(psycopg.errors.UniqueViolation, match="leases_one_live_per_payment"):
        raw.execute(insert, (2, "a"))
    # Once the first lease has ended, the slot can be leased again.
    raw.execute("UPDATE leases SET ended_at = now(), end_reason = 'callback'")
    raw.execute(insert, (1, "b"))


def test_lease_ids_come_from_a_sequence_that_never_repeats(raw: psycopg.Connection[Any]) -> None:
    (kind,) = raw.execute(
        "SELECT attidentity FROM pg_attribute"
        " WHERE attrelid = 'leases'::regclass AND attname = 'id'"
    ).fetchone() or (None,)
    assert kind == "a"  # GENERATED ALWAYS AS IDENTITY


# --- acquisition ------------------------------------------------------------------------------


def slots_others_can_lock(raw: psycopg.Connection[Any]) -> int:
    with raw.transaction():
        rows = raw.execute("SELECT id FROM slots FOR UPDATE SKIP LOCKED").fetchall()
    return len(rows)


@pytest.mark.parametrize(
    ("tier", "amounts", "taken"),
    [
        ("clean", (1000, 2000, 1500), 2),
        ("tainted by other amounts", (1000, 2000, 1000), 1),
        ("tainted by this amount", (1000, 1000, 1000), 0),
    ],
)
def test_acquisition_locks_only_the_slot_it_takes(
    database: str,
    postgres_store: StoreOpener,
    raw: psycopg.Connection[Any],
    tier: str,
    amounts: tuple[int, int, int],
    taken: int,
) -> None:
    clock = FakeClock()
    store = postgres_store(database, clock=clock)
    pool = pool_over(store)
    # Three free slots, in least-recently-released order: handler-1, -2, -3, each tainted
    # by its payment's amount, except that a 15.00 payment is paid (its slot left clean).
    # The other seven stay leased. Each tier, had it run, would take a different slot.
    checkouts = [pool.create_payment(amount=amount) for amount in amounts]
    for _ in range(7):
        pool.create_payment(amount=5000)
    for checkout in checkouts:
        clock.advance(1)
        if checkout.payment.amount == 1500:
            pool.handle_callback(checkout.lease.path, paygistix_return(amount="15.00"))
        else:
            pool.cancel_payment(checkout.payment.token)
    with store.transaction() as tx:
        lease = tx.acquire_slot(
            token="t", amount=1000, expires_at=tx.now, allow_same_amount_tainted=True
        )
        assert lease is not None
        assert lease.path == PATHS[taken], tier
        # The later tiers did not run: another instance can still lock every other slot.
        assert slots_others_can_lock(raw) == len(PATHS) - 1
        tx.insert_payment(payment("t", tx.now, 1000))
    assert slots_others_can_lock(raw) == len(PATHS)


def test_a_second_instance_takes_another_slot_without_waiting(
    database: str, postgres_store: StoreOpener
) -> None:
    first = postgres_store(database, timeout=2)
    second = postgres_store(database, timeout=2)
    pool_over(first)
    with first.transaction() as one:
        a = one.acquire_slot(
            token="a", amount=1, expires_at=one.now, allow_same_amount_tainted=True
        )
        # Still inside the first transaction, which holds a's slot. Waiting for it here
        # would block this thread until the lock timeout: StoreUnavailable.
        with second.transaction() as two:
            b = two.acquire_slot(
                token="b", amount=1, expires_at=two.now, allow_same_amount_tainted=True
            )
            assert a is not None
            assert b is not None
            assert b.slot_id != a.slot_id
            two.insert_payment(payment("b", two.now))
        one.insert_payment(payment("a", one.now))


def payment(token: str, now: datetime, amount: int = 1) -> Payment:
    return Payment(
        token=token,
        id=f"pay_{token}",
        amount=amount,
        currency="USD",
        status=PaymentStatus.PENDING,
        created_at=now,
        updated_at=now,
    )


def test_acquisition_among_ten_thousand_slots_walks_the_index(
    database: str, postgres_store: StoreOpener, raw: psycopg.Connection[Any]
) -> None:
    paths = tuple(f"/api/v1/payments/callback/handler-{i}" for i in range(1, 10_001))
    store = postgres_store(database)
    pool = pool_over(store, callback_paths=paths)
    for _ in range(50):
        pool.create_payment(amount=1000)
    raw.execute("ANALYZE")
    statement = postgres_module._Q["pick_slot"]
    plan = "\n".join(
        row[0]
        for row in raw.execute(
            "EXPLAIN " + statement,
            {"amount": 1000, "now": datetime.now(UTC), "allow_same_amount_tainted": True},
        )
    )
    assert "Index Scan using slots_free_lru on slots" in plan, plan
    assert "Seq Scan on slots" not in plan, plan
    assert "Sort" not in plan, plan


# --- expiry by several sweepers at once ---------------------------------------------------


def test_concurrent_sweepers_end_each_lease_once_and_keep_every_taint(
    database: str, postgres_store: StoreOpener
) -> None:
    clock = FakeClock()
    leaser = pool_over(postgres_store(database, clock=clock))
    tokens = {leaser.create_payment(amount=1000 + i).payment.token for i in range(len(PATHS))}
    clock.advance(timedelta(minutes=10))
    heard: list[StatusChange] = []
    sweepers = []
    for _ in range(4):  # four instances, each with its own connections
        sweeper = pool_over(postgres_store(database, clock=clock, max_size=3))
        sweeper.add_status_hook(heard.append)
        sweepers.append(sweeper)
    start = threading.Barrier(12)

    def sweep(sweeper: CallbackPool) -> int:
        start.wait()
        return sweeper.sweep().expired

    with ThreadPoolExecutor(max_workers=12) as workers:
        expired = list(workers.map(sweep, sweepers * 3))
    assert sum(expired) == len(PATHS)
    assert sorted(c.token for c in heard) == sorted(tokens)
    assert all(c.status is PaymentStatus.EXPIRED for c in heard)
    status = leaser.status()
    assert status.locked == status.stuck == 0
    assert status.tainted == len(PATHS)
    with leaser.store.read() as tx:
        for slot in tx.slot_views():
            (taint,) = tx.candidates(slot.id)
            assert taint.lease.end_reason is LeaseEnd.EXPIRED
            assert taint.lease.taint_until == taint.lease.expires_at + timedelta(minutes=60)


# --- row locks: callbacks on a slot, gateway references ---------------------------------------


def in_thread(work: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    result: list[Any] = []
    thread = threading.Thread(target=lambda: result.append(work()))
    thread.start()
    return thread, result


def test_callbacks_on_one_slot_take_turns(database: str, postgres_store: StoreOpener) -> None:
    store = postgres_store(database)
    pool_over(store)
    with store.transaction() as first:
        assert first.slot_id(PATHS[0]) is not None

        def second_callback() -> str:
            with store.transaction() as second:
                second.slot_id(PATHS[0])
                return "done"

        thread, result = in_thread(second_callback)
        thread.join(0.5)
        assert thread.is_alive()  # waits for the first to commit
        with store.read() as reader:  # reading the slot waits for nothing
            assert reader.slot_id(PATHS[0]) is not None
        with store.transaction() as other:  # nor does another slot
            assert other.slot_id(PATHS[1]) is not None
    thread.join(5)
    assert result == ["done"]


def test_a_cancel_waits_for_a_callback_on_its_slot_and_sees_what_it_did(
    database: str, postgres_store: StoreOpener
) -> None:
    store = postgres_store(database)
    pool = pool_over(store)
    checkout = pool.create_payment(amount=1000)
    # A callback's transaction on the payment's slot, paused after it completed the payment.
    with store.transaction() as callback:
        assert callback.slot_id(checkout.lease.path) is not None
        change = PaymentChange(status=PaymentStatus.COMPLETED, pn_ref="804322218")
        assert callback.update_payment(checkout.payment.token, PaymentStatus.PENDING, change)
        assert callback.end_lease(checkout.lease.id, LeaseEnd.CALLBACK, None) is not None

        def cancel() -> BaseException | None:
            try:
                pool.cancel_payment(checkout.payment.token)
            except PaymentNotPending as exc:
                return exc
            return None

        thread, result = in_thread(cancel)
        thread.join(0.5)
        assert thread.is_alive()  # the cancel waits for the slot
    thread.join(5)
    assert isinstance(result[0], PaymentNotPending)
    assert result[0].status == "completed"
    assert pool.get_payment(checkout.payment.token).status is PaymentStatus.COMPLETED


def stored_callback(store: PostgresStore) -> int:
    with store.transaction() as tx:
        return tx.insert_callback(
            NewCallback(path="/cb", method="GET", params=(), client_addr=None)
        )


@pytest.mark.parametrize("first_commits", [True, False])
def test_a_concurrent_claim_of_a_pn_ref_waits_then_sees_the_holder(
    database: str, postgres_store: StoreOpener, first_commits: bool
) -> None:
    store = postgres_store(database)
    one, two = stored_callback(store), stored_callback(store)

    class Abandon(Exception):
        pass

    with contextlib.suppress(Abandon), store.transaction() as first:
        assert first.claim_pn_ref("804322218", one, "fp-1") is None

        def second_claim() -> tuple[int, str] | None:
            with store.transaction() as second:
                return second.claim_pn_ref("804322218", two, "fp-2")

        thread, result = in_thread(second_claim)
        thread.join(0.5)
        assert thread.is_alive()  # waits for the first claim to commit or roll back
        if not first_commits:
            raise Abandon
    thread.join(5)
    assert result == ([(one, "fp-1")] if first_commits else [None])


def test_refusals_counted_at_once_by_two_instances_add_up(
    database: str, postgres_store: StoreOpener
) -> None:
    clock = FakeClock(datetime(2026, 1, 1, 12, 0, 30, tzinfo=UTC))
    stores = [postgres_store(database, clock=clock, max_size=4) for _ in range(2)]
    start = threading.Barrier(8)

    def refuse(store: PostgresStore) -> None:
        start.wait()
        for _ in range(5):
            with store.transaction() as tx:
                tx.record_admission(Admission.REFUSED)

    with ThreadPoolExecutor(max_workers=8) as workers:
        list(workers.map(refuse, stores * 4))
    minute = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    with stores[0].read() as tx:
        assert tx.admissions_since(clock.now()).refused == 40
        assert tx.turn_aways_since(clock.now()) == [(minute, 40)]


# --- the database's clock -------------------------------------------------------------------


def test_without_an_injected_clock_time_is_the_databases(
    database: str, postgres_store: StoreOpener, raw: psycopg.Connection[Any]
) -> None:
    store = postgres_store(database)
    with store.transaction() as tx:
        first = tx.now
        assert first.tzinfo is UTC
        time.sleep(0.01)
        assert tx.now == first  # one instant for the whole transaction
        tx.insert_callback(NewCallback(path="/cb", method="GET", params=(), client_addr=None))
    with store.read() as tx:
        later = tx.now
        (record,) = tx.callbacks()
    assert later > first
    assert record.received_at == first
    (server_now,) = raw.execute("SELECT now()").fetchone() or (None,)
    assert server_now is not None
    assert later <= server_now < later + timedelta(seconds=5)


# --- waits are bounded ------------------------------------------------------------------------


def test_a_lock_held_past_the_timeout_is_unavailable_not_a_hang(
    database: str, postgres_store: StoreOpener
) -> None:
    holder = postgres_store(database)
    pool_over(holder)
    impatient = postgres_store(database, timeout=1)
    with holder.transaction() as tx:
        tx.slot_id(PATHS[0])
        started = time.monotonic()
        with pytest.raises(StoreUnavailable) as unavailable, impatient.transaction() as waiting:
            waiting.slot_id(PATHS[0])
        assert 0.9 < time.monotonic() - started < 3
    # lock_timeout or statement_timeout, whichever the server noticed first
    assert isinstance(
        unavailable.value.__cause__, psycopg.errors.LockNotAvailable | psycopg.errors.QueryCanceled
    )
    with impatient.transaction() as tx:  # the connection is fine afterwards
        assert tx.slot_id(PATHS[0]) is not None


def test_a_pool_with_no_free_connection_is_unavailable_not_a_hang(
    database: str, postgres_store: StoreOpener
) -> None:
    store = postgres_store(database, max_size=1, timeout=0.5)
    with store.transaction():

        def another() -> BaseException | None:
            try:
                with store.transaction():
                    return None
            except StoreUnavailable as exc:
                return exc

        started = time.monotonic()
        thread, result = in_thread(another)
        thread.join(5)
        assert isinstance(result[0], StoreUnavailable)
        assert time.monotonic() - started < 2
    with store.read() as tx:
        assert tx.live_leases() == []


def test_an_unreachable_server_is_unavailable(postgres_store: StoreOpener) -> None:
    store = postgres_store(
        f"postgresql://postgres@127.0.0.1:{free_port()}/postgres", timeout=1, connect_timeout=2
    )
    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match="PostgreSQL is unavailable") as unavailable:
        store.migrate()
    assert time.monotonic() - started < 3
    assert isinstance(unavailable.value.__cause__, psycopg.OperationalError)
    with pytest.raises(StoreUnavailable), store.read():
        pass


def test_what_the_database_refuses_is_a_store_error(
    database: str, postgres_store: StoreOpener
) -> None:
    store = postgres_store(database)
    with store.transaction() as tx:
        tx.insert_payment(payment("same", tx.now))
    with pytest.raises(StoreError, match="insert payment") as refused, store.transaction() as tx:
        tx.insert_payment(payment("same", tx.now))
    assert isinstance(refused.value.__cause__, psycopg.errors.UniqueViolation)
    with store.read() as tx:
        assert len(tx.payments()) == 1


def test_a_transaction_whose_failure_was_caught_inside_it_does_not_commit(
    database: str, postgres_store: StoreOpener
) -> None:
    store = postgres_store(database)
    with store.transaction() as tx:
        tx.insert_payment(payment("first", tx.now))

    def swallow_a_failure() -> None:
        with store.transaction() as tx:
            tx.insert_payment(payment("second", tx.now))
            with contextlib.suppress(StoreError):
                tx.insert_payment(payment("first", tx.now))  # refused: the token is taken

    with pytest.raises(StoreError, match="nothing was written"):
        swallow_a_failure()
    with store.read() as tx:
        assert [p.token for p in tx.payments()] == ["first"]


# --- migrations -------------------------------------------------------------------------------


def tables(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        return {
            row[0]
            for row in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        }


def test_instances_starting_together_apply_each_migration_once(postgres_store: StoreOpener) -> None:
    from ..conftest import DATABASES

    empty = DATABASES.create_empty()
    stores = [postgres_store(empty) for _ in range(4)]
    assert [name for name, _ in stores[0].pending_migrations()] == MIGRATIONS
    assert tables(empty) == set()  # looking changes nothing
    start = threading.Barrier(len(stores))

    def migrate(store: PostgresStore) -> list[str]:
        start.wait()
        return store.migrate()

    with ThreadPoolExecutor(max_workers=len(stores)) as workers:
        applied = list(workers.map(migrate, stores))
    assert sorted(applied) == [[], [], [], MIGRATIONS]
    assert stores[0].pending_migrations() == []
    assert {"slots", "leases", "payments", "callbacks", "pn_refs", "schema_migrations"} <= tables(
        empty
    )


def test_an_instance_waits_for_another_ones_migration_past_the_request_timeout(
    postgres_store: StoreOpener,
) -> None:
    from ..conftest import DATABASES

    empty = DATABASES.create_empty()
    with psycopg.connect(empty) as other:
        # Another instance in the middle of migrating: it holds the migration lock.
        other.execute(postgres_module._Q["migration_lock"])
        store = postgres_store(empty, timeout=0.5)
        thread, result = in_thread(store.migrate)
        thread.join(1.5)
        assert thread.is_alive()  # still waiting, three times the request timeout later
        other.rollback()
    thread.join(10)
    assert result == [MIGRATIONS]


def test_a_running_instance_survives_another_ones_migration_adding_columns(
    database: str, postgres_store: StoreOpener, raw: psycopg.Connection[Any]
) -> None:
    clock = FakeClock()
    pool = pool_over(postgres_store(database, clock=clock, max_size=1))

    def some_work(n: int) -> None:
        checkout = pool.create_payment(amount=1000 + n)
        pool.handle_callback(
            checkout.lease.path,
            paygistix_return(amount=f"{(1000 + n) / 100:.2f}", pn_ref=f"M{n}"),
        )
        pool.status()
        pool.orphaned_payments()

    for n in range(8):  # past psycopg's threshold: its statements are prepared on the server
        some_work(n)
    # A newer instance migrates while this one runs.
    for table in ("slots", "leases", "payments", "callbacks"):
        raw.execute(
            sql.SQL("ALTER TABLE {} ADD COLUMN added_later text").format(sql.Identifier(table))
        )
    for n in range(8, 12):
        some_work(n)
    assert pool.get_payment(pool.create_payment(amount=5).payment.token).amount == 5


def test_a_failing_migration_applies_nothing(
    postgres_store: StoreOpener, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ..conftest import DATABASES

    empty = DATABASES.create_empty()
    real = postgres_module.load_migrations("postgres")
    monkeypatch.setattr(
        postgres_module,
        "load_migrations",
        lambda dialect: [*real, ("9999_broken", "ALTER TABLE no_such_table ADD COLUMN x int;")],
    )
    store = postgres_store(empty)
    with pytest.raises(MigrationError, match="9999_broken"):
        store.migrate()
    assert tables(empty) == set()  # the ones before were rolled back with it
    assert [name for name, _ in store.pending_migrations()] == [*MIGRATIONS, "9999_broken"]


# --- what is stored comes back exactly ------------------------------------------------------


def test_every_parameter_comes_back_exactly_as_received(
    database: str, postgres_store: StoreOpener
) -> None:
    store = postgres_store(database, clock=FakeClock())
    pool = pool_over(store)
    params = [("PNRef", "a\x00b"), ("Amount", "10.00"), ("note", "ünï ✓ \\u0000 '; --")]
    result = pool.handle_callback(PATHS[0], params, method="POST", client_addr="::1")
    customer = {"z": 1, "a": "\x00", "nested": {"b": [1.5, None, True]}}
    token = pool.create_payment(amount=1000, customer=customer).payment.token
    with store.read() as tx:
        record = tx.get_callback(result.callback_id)
    assert record is not None
    assert list(record.params) == params
    assert record.client_addr == "::1"
    stored = pool.get_payment(token).customer
    assert stored == customer
    assert list(stored) == ["z", "a", "nested"]  # key order kept too


# --- choosing the store by URL ------------------------------------------------------------


def test_open_store_takes_postgres_urls_with_the_stores_options(
    database: str, raw: psycopg.Connection[Any]
) -> None:
    from psycopg.conninfo import conninfo_to_dict

    parts = conninfo_to_dict(database)
    base = f"{parts.get('host', '127.0.0.1')}:{parts.get('port', 5432)}/{parts['dbname']}"
    for scheme in ("postgresql", "postgres"):
        url = (
            f"{scheme}://{parts.get('user', 'postgres')}@{base}"
            "?pool_max_size=2&timeout=3&application_name=cbp%20test"
        )
        store = open_store(url)
        try:
            assert isinstance(store, PostgresStore)
            assert (store.max_size, store.timeout) == (2, 3.0)
            with store.read():
                names = [
                    row[0]
                    for row in raw.execute(
                        "SELECT application_name FROM pg_stat_activity WHERE datname = %s",
                        (parts["dbname"],),
                    )
                ]
            assert "cbp test" in names  # libpq's own options pass through, decoded by libpq
        finally:
            store.close()
    with pytest.raises(ConfigurationError, match="timeout='soon' is not a number"):
        open_store(f"postgresql://{base}?timeout=soon")


def test_a_postgres_url_without_the_driver_says_which_extra_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delitem(sys.modules, "callbackpool.store.postgres")
    monkeypatch.setitem(sys.modules, "psycopg", None)
    with pytest.raises(ConfigurationError, match=r"callbackpool\[postgres\]"):
        open_store("postgresql://localhost/pool")


# --- every operation at once --------------------------------------------------------------


@pytest.mark.slow
def test_every_operation_at_once_from_two_instances_never_deadlocks(
    database: str, postgres_store: StoreOpener, raw: psycopg.Connection[Any]
) -> None:
    """Creates, returns (on the right path or another, repeated, forged), cancels, sweeps,
    releases and reads, on four slots from two instances: transactions wait for each other
    in one lock order, so none fails (a deadlock would be a StoreUnavailable)."""
    instances = [
        pool_over(
            postgres_store(database, max_size=6, timeout=20),
            callback_paths=PATHS[:4],
            lock_timeout_minutes=0.3 / 60,
            late_callback_window_minutes=5 / 60,
        )
        for _ in range(2)
    ]
    made: list[tuple[str, str, int]] = []
    failures: list[BaseException] = []

    def customer(seed: int) -> None:
        rng = random.Random(seed)
        pool = instances[seed % 2]
        for _ in range(150):
            action = rng.random()
            try:
                if action < 0.3 or not made:
                    checkout = pool.create_payment(amount=rng.choice((1000, 2000)))
                    made.append(
                        (checkout.payment.token, checkout.lease.path, checkout.lease.amount)
                    )
                elif action < 0.55:
                    _, path, amount = rng.choice(made)
                    pool.handle_callback(
                        rng.choice((path, path, rng.choice(PATHS[:4]))),
                        paygistix_return(
                            amount=f"{amount / 100:.2f}",
                            pn_ref=str(rng.randint(1, 60)),
                            result=rng.choice("00051"),
                        ),
                    )
                elif action < 0.7:
                    pool.cancel_payment(rng.choice(made)[0])
                elif action < 0.78:
                    pool.sweep()
                elif action < 0.84:
                    pool.release(path=rng.choice(PATHS[:4]))
                elif action < 0.87:
                    pool.release_all()
                else:
                    pool.get_payment(rng.choice(made)[0])
            except (StoreUnavailable, StoreError) as exc:
                failures.append(exc)
            except CallbackPoolError:
                pass  # the pool refusing (exhausted, not pending, nothing to release)

    threads = [threading.Thread(target=customer, args=(seed,)) for seed in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert failures == []
    assert len(made) > 50
    (inconsistent,) = raw.execute(
        "SELECT count(*) FROM slots AS s"
        "  FULL JOIN (SELECT * FROM leases WHERE ended_at IS NULL) AS l ON l.slot_id = s.id"
        " WHERE s.live_lease_id IS DISTINCT FROM l.id"
    ).fetchone() or (None,)
    (pending_without_lease,) = raw.execute(
        "SELECT count(*) FROM payments AS p WHERE status = 'pending' AND NOT EXISTS"
        " (SELECT 1 FROM leases AS l WHERE l.token = p.token AND l.ended_at IS NULL)"
    ).fetchone() or (None,)
    assert (inconsistent, pending_without_lease) == (0, 0)


def test_what_was_stored_before_the_security_migration_gets_its_receipt_and_customer(
    postgres_store: StoreOpener,
) -> None:
    from ..conftest import DATABASES

    empty = DATABASES.create_empty()
    earlier = [(n, s) for n, s in postgres_module.load_migrations("postgres") if n < "0004"]
    with psycopg.connect(empty) as conn:
        conn.execute(
            "CREATE TABLE schema_migrations (name text PRIMARY KEY, applied_at timestamptz)"
        )
        for name, script in earlier:
            conn.execute(script)  # type: ignore[call-overload]
            conn.execute("INSERT INTO schema_migrations VALUES (%s, now())", (name,))
        for _ in range(2):
            conn.execute(
                "INSERT INTO callbacks (path, method, params, received_at, outcome)"
                " VALUES ('/cb/1', 'GET', '[]', now(), 'received')"
            )
        for token, customer in (("t1", '{"email": " Ann@Example.COM "}'), ("t2", '{"email": 7}')):
            conn.execute(
                "INSERT INTO payments (token, amount, currency, customer, status, created_at,"
                " updated_at) VALUES (%s, 100, 'USD', %s, 'pending', now(), now())",
                (token, customer),
            )
    store = postgres_store(empty)
    assert store.migrate() == [n for n in MIGRATIONS if n >= "0004"]
    with psycopg.connect(empty) as conn:
        receipts = [row[0] for row in conn.execute("SELECT receipt FROM callbacks ORDER BY id")]
        keys = dict(conn.execute("SELECT token, customer_key FROM payments").fetchall())
    assert len(set(receipts)) == 2
    assert all(len(receipt) == 32 for receipt in receipts)
    assert keys == {"t1": "ann@example.com", "t2": None}


def test_the_shop_migration_gives_every_stored_payment_an_id(
    postgres_store: StoreOpener,
) -> None:
    from ..conftest import DATABASES

    empty = DATABASES.create_empty()
    with psycopg.connect(empty) as conn:
        conn.execute(
            "CREATE TABLE schema_migrations (name text PRIMARY KEY, applied_at timestamptz)"
        )
        for name, script in postgres_module.load_migrations("postgres"):
            if name < "0006":
                conn.execute(script)  # type: ignore[call-overload]
                conn.execute("INSERT INTO schema_migrations VALUES (%s, now())", (name,))
        for token in ("t1", "t2"):
            conn.execute(
                "INSERT INTO payments (token, amount, currency, status, created_at,"
                " updated_at) VALUES (%s, 100, 'USD', 'failed', now(), now())",
                (token,),
            )
    store = postgres_store(empty)
    assert store.migrate() == [name for name in MIGRATIONS if name >= "0006"]
    with psycopg.connect(empty) as conn:
        ids = [row[0] for row in conn.execute("SELECT id FROM payments ORDER BY token")]
        conn.execute("UPDATE payments SET status = 'open' WHERE token = 't1'")
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute("UPDATE payments SET status = 'lost' WHERE token = 't1'")
    assert len(set(ids)) == 2
    assert all(payment_id.startswith("pay_") for payment_id in ids)


def test_the_events_migration_keeps_payments_and_numbers_each_payments_events(
    postgres_store: StoreOpener,
) -> None:
    from ..conftest import DATABASES

    empty = DATABASES.create_empty()
    with psycopg.connect(empty) as conn:
        conn.execute(
            "CREATE TABLE schema_migrations (name text PRIMARY KEY, applied_at timestamptz)"
        )
        for name, script in postgres_module.load_migrations("postgres"):
            if name < "0007":
                conn.execute(script)  # type: ignore[call-overload]
                conn.execute("INSERT INTO schema_migrations VALUES (%s, now())", (name,))
        conn.execute(
            "INSERT INTO payments (token, id, amount, currency, status, created_at,"
            " updated_at) VALUES ('t1', 'pay_old', 100, 'USD', 'completed', now(), now())"
        )
    store = postgres_store(empty)
    assert store.migrate() == [name for name in MIGRATIONS if name >= "0007"]
    pool = CallbackPool(store, make_gateway(), policy_with())
    pool.sync_slots()
    assert pool.get_payment("t1").status.value == "completed"
    checkout = pool.create_payment(amount=1000)
    pool.cancel_payment(checkout.payment.token)
    [event] = pool.events()
    assert (event.type, event.sequence) == ("payment.cancelled", 1)
    with psycopg.connect(empty) as conn, pytest.raises(psycopg.errors.UniqueViolation):
        conn.execute(
            "INSERT INTO events (id, type, payment_id, sequence, reason, data, created_at)"
            " VALUES ('evt_x', 'payment.completed', %s, 1, 'a racer', '{}', now())",
            (event.payment_id,),
        )


def test_the_last_week_of_turn_aways_outlives_their_table(postgres_store: StoreOpener) -> None:
    from ..conftest import DATABASES

    empty = DATABASES.create_empty()
    last = TURNED_AWAY_LAST
    with psycopg.connect(empty) as conn:
        conn.execute(
            "CREATE TABLE schema_migrations (name text PRIMARY KEY, applied_at timestamptz)"
        )
        for name, script in postgres_module.load_migrations("postgres"):
            if name < "0005":
                conn.execute(script)  # type: ignore[call-overload]
                conn.execute("INSERT INTO schema_migrations VALUES (%s, now())", (name,))
        conn.execute(
            "INSERT INTO admissions (minute, leased, refused) VALUES (%s, 7, 3)",
            (int(last.timestamp()) // 60,),
        )
        for before, count in TURNED_AWAY:
            conn.execute("INSERT INTO turn_aways VALUES (%s, %s)", (last - before, count))
    store = postgres_store(empty, clock=FakeClock(last))
    assert store.migrate() == [name for name in MIGRATIONS if name >= "0005"]
    assert_turn_aways_carried_over(store)
    with psycopg.connect(empty) as conn:
        assert conn.execute("SELECT to_regclass('turn_aways')").fetchone() == (None,)
