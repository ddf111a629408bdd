"""The shared store: PostgreSQL through psycopg 3 and its connection pool.

Several app instances on several machines share one pool of callback paths here. What keeps
them apart is the database: acquisition is one statement that locks the slot it picks
(``FOR UPDATE SKIP LOCKED``), partial unique indexes make "one live lease per slot and per
payment" a rule of the database, and time is the database's ``now()`` unless a clock is
injected (tests do), so app servers with skewed clocks agree (DESIGN.md §3, invariant 6).

Write transactions run at READ COMMITTED and lock what they change, in the order described
at the top of ``sql/postgres.sql``; reads run at REPEATABLE READ, READ ONLY. Driver errors
never leave this module: a lost or unreachable server, a timeout or a lock wait past the
timeout become ``StoreUnavailable``; anything else the database refuses, ``StoreError``.
"""

from __future__ import annotations

import json
import os
import socket
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, suppress
from datetime import UTC, datetime, timedelta
from time import monotonic
from typing import Any, Self

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.pq import TransactionStatus
from psycopg.rows import DictRow, dict_row
from psycopg_pool import ConnectionPool, PoolTimeout

from ..clock import Clock
from ..domain.errors import (
    CallbackPoolError,
    MigrationError,
    StoreError,
    StoreUnavailable,
)
from ..domain.model import (
    Admission,
    AdmissionCounts,
    CallbackOutcome,
    CallbackRecord,
    Candidate,
    HoldingTimes,
    Lease,
    LeaseEnd,
    LeaseSpan,
    Payment,
    PaymentStatus,
    ReserveAction,
    ReserveEvent,
    SlotHealth,
    SlotView,
    Ticket,
)
from ..domain.resolution import OpenAmbiguity
from ..ports import (
    CallbackResolution,
    NewTicket,
    PaymentChange,
    SlotRow,
    SlotSync,
    UsageRow,
)
from . import rows as values
from .queries import load_migrations, load_queries
from .rows import Decode
from .sql_tx import SqlTx

_Q = load_queries("postgres.sql")

# Abandoned transactions (a process frozen mid-request) must not hold slot locks for ever.
IDLE_IN_TRANSACTION_TIMEOUT = timedelta(minutes=1)
# How long a request waits for a connection while the last attempt to connect failed.
OUTAGE_WAIT = 0.5
# How long a migration may wait (sql/postgres.sql: migration_timeouts).
MIGRATION_WAIT = timedelta(minutes=5)

# Runs a statement of the transaction under the watchdog: what it is doing, and the seconds
# it may go unanswered (None: the store's).
Guard = Callable[[str, float | None], AbstractContextManager[None]]


class _Watchdog:
    """Gives up on a server that answers nothing at all.

    The server ends a slow statement itself (``statement_timeout``), and TCP notices a peer
    that is gone (keepalives, ``tcp_user_timeout``). Neither notices a server whose processes
    are stopped or stuck while its machine still acknowledges every packet (a frozen VM, a
    process stopped, storage that hangs): a request would wait on the socket for ever. So
    each statement has a deadline on the client too, somewhat after the server's own; a
    statement still unanswered then has its connection's socket shut down from this thread,
    which ends the wait with an error (``StoreUnavailable``), and the pool discards it.
    """

    TICK = 0.25  # seconds between looks

    def __init__(self, name: str) -> None:
        self._name = name
        self._deadlines: dict[psycopg.Connection[Any], float] = {}
        self._cut: set[psycopg.Connection[Any]] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @contextmanager
    def guard(self, conn: psycopg.Connection[Any], seconds: float, doing: str) -> Iterator[None]:
        """Run a statement on ``conn`` that must be answered within ``seconds``."""
        with self._lock:
            self._deadlines[conn] = monotonic() + seconds
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(
                    target=self._watch, name=f"{self._name}-watchdog", daemon=True
                )
                self._thread.start()
        try:
            yield
        except psycopg.Error as exc:
            with self._lock:
                cut = conn in self._cut
            if cut:
                raise StoreUnavailable(
                    f"PostgreSQL is unavailable ({doing}): no answer within {seconds:g} s"
                ) from exc
            raise
        finally:
            with self._lock:
                self._deadlines.pop(conn, None)
                self._cut.discard(conn)

    def _watch(self) -> None:
        while not self._stop.wait(self.TICK):
            now = monotonic()
            with self._lock:
                for conn, deadline in self._deadlines.items():
                    if deadline <= now and conn not in self._cut:
                        self._cut.add(conn)
                        _shut_down(conn)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


def _shut_down(conn: psycopg.Connection[Any]) -> None:
    """End every wait on the connection's socket (the thread using it gets an error)."""
    with suppress(OSError, psycopg.Error), socket.socket(fileno=os.dup(conn.pgconn.socket)) as s:
        s.shutdown(socket.SHUT_RDWR)


def _summary(exc: BaseException) -> str:
    """The first line of a driver error's message (the rest is libpq's advice)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class _ConnectFailure:
    """Why the last attempt to connect failed (None once one succeeds): what a request that
    timed out waiting for a connection reports, rather than only that it waited."""

    def __init__(self) -> None:
        self.reason: str | None = None


class _Connection(psycopg.Connection[Any]):
    """The pool's connections: each attempt tells the store's ``_ConnectFailure`` how it went."""

    failure = _ConnectFailure()  # replaced in each store's subclass

    @classmethod
    def connect(cls, conninfo: str = "", **kwargs: Any) -> Self:
        try:
            conn = super().connect(conninfo, **kwargs)
        except psycopg.Error as exc:
            cls.failure.reason = _summary(exc).removeprefix("connection failed: ")
            raise
        cls.failure.reason = None
        return conn


def translate(exc: psycopg.Error, doing: str) -> CallbackPoolError:
    """The domain error a driver error means (the caller chains it ``from exc``).

    Operational errors (the server unreachable or gone, a pool or statement timeout, a lock
    wait past ``lock_timeout``, a deadlock) are worth retrying: ``StoreUnavailable``.
    """
    summary = _summary(exc)
    if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
        return StoreUnavailable(f"PostgreSQL is unavailable ({doing}): {summary}")
    return StoreError(f"PostgreSQL refused to {doing}: {summary}")


class PostgresStore:
    """The pool's tables in a PostgreSQL database, shared by every app instance using it.

    ``timeout`` bounds each wait of a request on the database: for a pooled connection, for
    one statement (``statement_timeout``) and for a row lock (``lock_timeout``); past it the
    request fails with ``StoreUnavailable``. ``connect_timeout`` bounds opening a connection.
    Connections that die (a server restart) are replaced by the pool on their own.
    """

    def __init__(
        self,
        url: str,
        *,
        clock: Clock | None = None,
        min_size: int = 1,
        max_size: int = 10,
        connect_timeout: float = 5.0,
        timeout: float = 10.0,
        reconnect_timeout: float | None = None,
        name: str | None = None,
    ) -> None:
        if not 0 <= min_size <= max_size or max_size < 1:
            raise ValueError(f"pool sizes must satisfy 0 <= min ({min_size}) <= max ({max_size})")
        if timeout <= 0 or connect_timeout <= 0:
            raise ValueError("timeouts must be positive")
        try:
            given = conninfo_to_dict(url)
        except psycopg.ProgrammingError as exc:
            raise ValueError(f"invalid PostgreSQL URL: {exc}") from None
        self.clock = clock
        self.timeout = timeout
        # How long a statement may go unanswered before the client gives up on the server:
        # later than the server's own statement timeout, so that one speaks first.
        self.answer_within = timeout + max(1.0, timeout / 2)
        self.max_size = max_size
        self._watchdog = _Watchdog(name or "callbackpool")
        self._where = f"{given.get('host', 'localhost')}:{given.get('port', 5432)}"
        connect_args: dict[str, Any] = {"autocommit": True}
        # Options the URL sets itself win; these are the defaults that keep a request from
        # hanging: a bounded connect, and a dead peer noticed by TCP.
        defaults: dict[str, Any] = {
            # libpq counts whole seconds and takes 2 as its least.
            "connect_timeout": max(2, round(connect_timeout)),
            "keepalives": 1,
            "keepalives_idle": 10,
            "keepalives_interval": 5,
            "keepalives_count": 3,
            "tcp_user_timeout": int(timeout * 1000),
        }
        connect_args.update({k: v for k, v in defaults.items() if k not in given})
        self._settings = {
            "statement_timeout": str(int(timeout * 1000)),
            "lock_timeout": str(int(timeout * 1000)),
            "idle_timeout": str(int(IDLE_IN_TRANSACTION_TIMEOUT.total_seconds() * 1000)),
        }
        self._connect_failure = _ConnectFailure()
        connection_class = type("Connection", (_Connection,), {"failure": self._connect_failure})
        self._pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
            url,
            connection_class=connection_class,
            min_size=min_size,
            max_size=max_size,
            timeout=timeout,
            # The pool retries a failed connection with growing pauses, and while it waits no
            # new attempt starts: a short horizon keeps the pause after an outage short (the
            # next request then starts a fresh attempt at once).
            reconnect_timeout=timeout if reconnect_timeout is None else reconnect_timeout,
            kwargs=connect_args,
            configure=self._configure,
            name=name or "callbackpool",
            open=False,
        )
        # Opened without waiting: an instance starts while the database is still down, and
        # serves (503s meanwhile) once it is up.
        self._pool.open(wait=False)

    def __repr__(self) -> str:
        return f"PostgresStore({self._where!r})"

    def _configure(self, conn: psycopg.Connection[Any]) -> None:
        conn.execute(_Q["session_settings"], self._settings)

    # --- transactions ----------------------------------------------------------------------

    def _start(self, begin: str) -> tuple[psycopg.Connection[Any], datetime]:
        """A pooled connection inside a new transaction, and the database's ``now()``.

        A connection that died while it sat in the pool (the server restarted) fails on its
        first statement, before anything was done: it is dropped and another one tried.
        """
        deadline = monotonic() + self.timeout
        attempts = 0
        while True:
            wait = deadline - monotonic()
            if self._connect_failure.reason is not None:
                # The server refused or ignored the last attempt to connect: wait only for a
                # connection the pool can make at once (the server being back), so that in
                # an outage requests fail fast rather than each hold a worker for the timeout.
                wait = min(wait, OUTAGE_WAIT)
            try:
                conn = self._pool.getconn(timeout=max(wait, 0.001))
            except PoolTimeout as exc:
                reason = self._connect_failure.reason
                if reason is None:  # the server is up, every connection is busy
                    raise translate(exc, "get a connection") from exc
                raise StoreUnavailable(
                    f"PostgreSQL is unavailable (get a connection): {reason}"
                ) from exc
            except psycopg.Error as exc:
                raise translate(exc, "get a connection") from exc
            try:
                with self._watchdog.guard(conn, self.answer_within, "begin a transaction"):
                    cursor = conn.execute(_Q[begin])
                cursor.nextset()  # past BEGIN, to the SELECT now()
                row = cursor.fetchone()
                assert row is not None
                self._connect_failure.reason = None  # the server answers
                return conn, row[0]
            except StoreUnavailable:
                self._pool.putconn(conn)
                raise
            except psycopg.Error as exc:
                self._pool.putconn(conn)
                attempts += 1
                if conn.broken and attempts <= self.max_size and monotonic() < deadline:
                    continue
                raise translate(exc, "begin a transaction") from exc

    @contextmanager
    def _begin(self, begin: str, *, writing: bool) -> Iterator[PostgresTx]:
        conn, database_now = self._start(begin)
        try:
            now = self.clock.now() if self.clock is not None else database_now.astimezone(UTC)
            try:
                yield PostgresTx(conn, now, writing=writing, guard=self._guard(conn))
            except BaseException:
                self._rollback_quietly(conn)
                raise
            if conn.info.transaction_status == TransactionStatus.INERROR:
                # A statement failed and its error was caught inside the transaction: the
                # server would answer COMMIT with a silent rollback. Say so instead.
                self._rollback_quietly(conn)
                raise StoreError("a statement of the transaction failed: nothing was written")
            try:
                with self._watchdog.guard(conn, self.answer_within, "commit"):
                    conn.execute(_Q["commit"])
            except psycopg.Error as exc:
                self._rollback_quietly(conn)
                raise translate(exc, "commit") from exc
            except StoreUnavailable:
                self._rollback_quietly(conn)
                raise
        finally:
            self._pool.putconn(conn)

    def transaction(self, *, durable: bool = True) -> AbstractContextManager[PostgresTx]:
        return self._begin("begin_write" if durable else "begin_write_not_durable", writing=True)

    def read(self) -> AbstractContextManager[PostgresTx]:
        return self._begin("begin_read", writing=False)

    def after_commit(self, announce: Callable[[], None]) -> None:
        announce()  # a transaction has committed when it returns

    def loop_calls(self) -> None:
        return None  # every call runs on a worker thread

    def close(self) -> None:
        self._pool.close()
        self._watchdog.close()

    def _guard(self, conn: psycopg.Connection[Any]) -> Guard:
        def guard(doing: str, seconds: float | None = None) -> AbstractContextManager[None]:
            return self._watchdog.guard(conn, seconds or self.answer_within, doing)

        return guard

    def _rollback_quietly(self, conn: psycopg.Connection[Any]) -> None:
        """Roll back; a connection too broken to roll back is discarded by the pool anyway."""
        with (
            suppress(psycopg.Error, StoreUnavailable),
            self._watchdog.guard(conn, self.answer_within, "roll back"),
        ):
            conn.execute(_Q["rollback"])

    # --- migrations ------------------------------------------------------------------------

    def pending_migrations(self) -> list[tuple[str, str]]:
        with self.read() as tx:
            applied = set(tx.applied_migrations())
        return [(name, sql) for name, sql in load_migrations("postgres") if name not in applied]

    def migrate(self) -> list[str]:
        """Apply pending migrations in one transaction, under an advisory lock so that
        instances starting together apply each one once."""
        applied_now: list[str] = []
        with self.transaction() as tx:
            tx.lock_migrations()
            done = set(tx.applied_migrations())
            for name, script in load_migrations("postgres"):
                if name not in done:
                    tx.apply_migration(name, script)
                    applied_now.append(name)
        return applied_now


# --- values from rows ------------------------------------------------------------------


def _utc(moment: datetime | None) -> datetime | None:
    return None if moment is None else moment.astimezone(UTC)


def _at(moment: datetime) -> datetime:
    return moment.astimezone(UTC)


def _as_is(value: Any) -> Any:
    return value


# How PostgreSQL's columns arrive: timestamptz, JSON decoded by the driver, booleans.
DECODE = Decode(time=_at, json=_as_is, flag=bool)


class PostgresTx(SqlTx):
    """One PostgreSQL transaction, speaking the ``Tx`` port."""

    _decode = DECODE

    def __init__(
        self, conn: psycopg.Connection[Any], now: datetime, *, writing: bool, guard: Guard
    ) -> None:
        self._cursor: psycopg.Cursor[DictRow] = conn.cursor(row_factory=dict_row)
        self.now = self._now_param = now
        self._writing = writing
        self._guard = guard
        self._answer_within: float | None = None  # the store's, unless a migration waits

    def _execute(self, query: str, params: dict[str, Any]) -> psycopg.Cursor[DictRow]:
        doing = query.replace("_", " ")
        try:
            with self._guard(doing, self._answer_within):
                return self._cursor.execute(_Q[query], params)
        except psycopg.Error as exc:
            raise translate(exc, doing) from exc

    def _one(self, query: str, **params: Any) -> DictRow | None:
        return self._execute(query, params).fetchone()

    def _all(self, query: str, **params: Any) -> list[DictRow]:
        return self._execute(query, params).fetchall()

    def _run(self, query: str, **params: Any) -> int:
        return self._execute(query, params).rowcount

    # --- migrations (the store's own use) --------------------------------------------------

    def lock_migrations(self) -> None:
        self._answer_within = MIGRATION_WAIT.total_seconds() + 10
        self._run("migration_timeouts")
        self._run("migration_lock")
        self._run("create_migrations_table")

    def applied_migrations(self) -> list[str]:
        present = self._one("migrations_table_exists")
        if present is None or not present["present"]:
            return []
        return [row["name"] for row in self._all("applied_migrations")]

    def apply_migration(self, name: str, script: str) -> None:
        try:
            # A script of several statements, without parameters: sent as one simple query.
            with self._guard(f"apply migration {name}", self._answer_within):
                self._cursor.execute(script)
        except psycopg.OperationalError as exc:
            raise translate(exc, f"apply migration {name}") from exc
        except psycopg.Error as exc:
            raise MigrationError(f"migration {name} failed: {exc}") from exc
        self._run("record_migration", name=name)

    # --- slots ---------------------------------------------------------------------------

    def sync_slots(self, paths: Sequence[str], reserve_paths: Sequence[str] = ()) -> SlotSync:
        # Set-based and conditional, so that instances starting together with the same
        # configuration agree on what changed (only one of them reports it).
        kinds = dict.fromkeys(paths, False) | dict.fromkeys(reserve_paths, True)
        wanted = list(kinds)
        reserves = [kinds[path] for path in wanted]
        row = self._one("reserve_in_rotation")
        in_rotation = bool(row and row["in_rotation"])
        added = {
            row["path"]
            for row in self._all(
                "insert_slots",
                paths=wanted,
                reserves=reserves,
                in_rotation=in_rotation,
                now=self.now,
            )
        }
        self._run("set_slot_kinds", paths=wanted, reserves=reserves, in_rotation=in_rotation)
        reactivated = {row["path"] for row in self._all("reactivate_slots", paths=wanted)}
        deactivated = sorted(
            (row["id"], row["path"]) for row in self._all("deactivate_slots", paths=wanted)
        )
        return SlotSync(
            added=tuple(p for p in wanted if p in added),
            reactivated=tuple(p for p in wanted if p in reactivated),
            deactivated=tuple(path for _, path in deactivated),
        )

    def slot_by_path(self, path: str) -> SlotRow | None:
        row = self._one("slot_by_path_locked" if self._writing else "slot_by_path", path=path)
        return (
            None if row is None else SlotRow(id=row["id"], path=row["path"], active=row["active"])
        )

    def slot_views(self) -> list[SlotView]:
        return [
            SlotView(
                id=row["id"],
                path=row["path"],
                active=row["active"],
                usage_count=row["usage_count"],
                last_acquired_at=_utc(row["last_acquired_at"]),
                last_released_at=_utc(row["last_released_at"]),
                lease=None if row["l_id"] is None else values.lease(DECODE, row, "l_"),
                taints=row["taints"],
                sidelined_at=_utc(row["sidelined_at"]),
                sidelined_by=row["sidelined_by"],
                sidelined_reason=row["sidelined_reason"],
                health=SlotHealth(
                    approvals=row["approvals"],
                    declines=row["declines"],
                    silent_expiries=row["silent_expiries"],
                    expiry_streak=row["expiry_streak"],
                    last_return_at=_utc(row["last_return_at"]),
                ),
                reserve=row["reserve"],
                standby=row["standby"],
            )
            for row in self._all("slot_views", now=self.now)
        ]

    def usage(self) -> list[UsageRow]:
        return [
            UsageRow(
                path=row["path"],
                active=row["active"],
                usage_count=row["usage_count"],
                callbacks=row["callbacks"],
                expiries=row["expiries"],
                last_acquired_at=_utc(row["last_acquired_at"]),
                last_released_at=_utc(row["last_released_at"]),
            )
            for row in self._all("usage")
        ]

    # --- slot health -----------------------------------------------------------------------

    def record_slot_return(self, slot_id: int, *, approved: bool) -> None:
        self._run("record_slot_return", slot_id=slot_id, approved=approved, now=self.now)

    def sideline_slot(self, slot_id: int, *, by: str, reason: str) -> bool:
        done = self._run("sideline_slot", slot_id=slot_id, by=by, reason=reason, now=self.now)
        return done == 1

    def free_slot_count(self) -> int:
        return self._count("free_slot_count", now=self.now)

    def set_reserve_standby(self, standby: bool) -> list[str]:
        rows = self._all("set_reserve_standby", standby=standby)
        return [row["path"] for row in sorted(rows, key=lambda row: row["id"])]

    # --- leases --------------------------------------------------------------------------

    def expire_due_leases(self, taint_window: timedelta, slot_id: int | None = None) -> list[Lease]:
        if slot_id is None:
            rows = self._all("expire_due_leases", now=self.now, window=taint_window)
        else:
            rows = self._all(
                "expire_due_lease_on_slot", now=self.now, window=taint_window, slot_id=slot_id
            )
        return [values.lease(DECODE, row) for row in rows]

    def abandon_silent_leases(
        self, taint_window: timedelta, slot_id: int | None = None
    ) -> list[Lease]:
        if slot_id is None:
            rows = self._all("abandon_silent_leases", now=self.now, window=taint_window)
        else:
            rows = self._all(
                "abandon_silent_lease_on_slot", now=self.now, window=taint_window, slot_id=slot_id
            )
        return [values.lease(DECODE, row) for row in rows]

    def record_heartbeat(self, lease_id: int, until: datetime) -> bool:
        return self._run("record_heartbeat", id=lease_id, until=until, now=self.now) == 1

    def acquire_slot(
        self, *, token: str, amount: int, expires_at: datetime, allow_same_amount_tainted: bool
    ) -> Lease | None:
        row = self._one(
            "acquire_slot",
            token=token,
            amount=amount,
            now=self.now,
            expires_at=expires_at,
            allow_same_amount_tainted=allow_same_amount_tainted,
        )
        return None if row is None else values.lease(DECODE, row)

    def earliest_lease_end(self) -> datetime | None:
        row = self._one("earliest_lease_end")
        return None if row is None else _utc(row["earliest"])

    def customer_claims(self, customer_key: str) -> list[datetime]:
        self._run("lock_customer", customer_key=customer_key)
        rows = self._all("customer_claims", customer_key=customer_key, now=self.now)
        return [_at(row["expires_at"]) for row in rows]

    def live_leases(self) -> list[Lease]:
        return [
            values.lease(DECODE, row)
            for row in self._all("live_leases_locked" if self._writing else "live_leases")
        ]

    def lease_spans(self, since: datetime, limit: int = 100_000) -> list[LeaseSpan]:
        return [
            LeaseSpan(
                lease_id=row["id"],
                path=row["path"],
                acquired_at=_at(row["acquired_at"]),
                ended_at=_utc(row["ended_at"]),
                end_reason=None if row["end_reason"] is None else LeaseEnd(row["end_reason"]),
            )
            for row in self._all("lease_spans", since=since, limit=limit)
        ]

    def end_lease(
        self, lease_id: int, reason: LeaseEnd, taint_until: datetime | None
    ) -> Lease | None:
        row = self._one(
            "end_lease", id=lease_id, now=self.now, reason=reason.value, taint_until=taint_until
        )
        return None if row is None else values.lease(DECODE, row)

    def drop_taint(self, lease_id: int) -> None:
        self._run("drop_taint", id=lease_id)

    def candidates(self, slot_id: int) -> list[Candidate]:
        query = "candidates_locked" if self._writing else "candidates"
        return [
            Candidate(lease=values.lease(DECODE, row, "l_"), payment=values.payment(DECODE, row))
            for row in self._all(query, slot_id=slot_id, now=self.now)
        ]

    # --- payments ------------------------------------------------------------------------

    def insert_payment(self, payment: Payment) -> None:
        self._run(
            "insert_payment",
            token=payment.token,
            amount=payment.amount,
            currency=payment.currency,
            items=json.dumps([values.item_json(item) for item in payment.items]),
            customer=json.dumps(dict(payment.customer)),
            customer_key=payment.customer_key,
            status=payment.status.value,
            late=payment.late,
            lease_id=payment.lease_id,
            callback_path=payment.callback_path,
            expires_at=payment.expires_at,
            created_at=payment.created_at,
        )

    def update_payment(self, token: str, expected: PaymentStatus, change: PaymentChange) -> bool:
        updated = self._run(
            "update_payment",
            token=token,
            expected=expected.value,
            status=change.status.value,
            late=change.late,
            pn_ref=change.pn_ref,
            order_id=change.order_id,
            auth_code=change.auth_code,
            card_type=change.card_type,
            last4=change.last4,
            result_code=change.result_code,
            error_message=change.error_message,
            callback_id=change.callback_id,
            now=self.now,
        )
        return updated == 1

    def payments(
        self,
        *,
        statuses: Sequence[PaymentStatus] = (),
        created_before: datetime | None = None,
        limit: int = 100,
    ) -> list[Payment]:
        rows = self._all(
            "payments",
            statuses=[s.value for s in statuses] if statuses else None,
            created_before=created_before,
            limit=limit,
        )
        return [values.payment(DECODE, row) for row in rows]

    def turn_aways_since(self, since: datetime) -> list[tuple[datetime, int]]:
        rows = self._all("turn_aways_since", minute=_minute_number(since))
        return [(_minute_start(row["minute"]), row["refused"]) for row in rows]

    # --- the waiting room ----------------------------------------------------------------

    def lock_admission(self) -> None:
        self._run("lock_admission")

    def insert_ticket(self, ticket: NewTicket) -> Ticket:
        row = self._one(
            "insert_ticket",
            ticket=ticket.ticket,
            priority=ticket.priority,
            amount=ticket.amount,
            currency=ticket.currency,
            items=json.dumps([values.item_json(item) for item in ticket.items]),
            customer=json.dumps(dict(ticket.customer)),
            customer_key=ticket.customer_key,
            now=self.now,
            expires_at=ticket.expires_at,
        )
        assert row is not None
        return values.ticket(DECODE, row)

    def touch_ticket(self, ticket_id: int, expires_at: datetime) -> None:
        self._run("touch_ticket", id=ticket_id, expires_at=expires_at)

    # --- capacity figures ----------------------------------------------------------------

    def record_admission(self, admission: Admission, busy: int | None = None) -> None:
        self._run(
            "record_admission",
            minute=_minute_number(self.now),
            leased=int(admission is Admission.LEASED),
            waited=int(admission is Admission.WAITED),
            refused=int(admission is Admission.REFUSED),
            granted=int(admission is Admission.GRANTED),
            busy=busy,
        )

    def admissions_since(self, since: datetime) -> AdmissionCounts:
        row = self._one("admissions_since", minute=_minute_number(since))
        assert row is not None
        return AdmissionCounts(
            leased=row["leased"],
            waited=row["waited"],
            refused=row["refused"],
            granted=row["granted"],
            peak_busy=row["peak_busy"],
        )

    def drop_admissions_before(self, before: datetime) -> int:
        return self._run("drop_admissions_before", minute=_minute_number(before))

    def holding_times_since(self, since: datetime) -> HoldingTimes:
        row = self._one("holding_times_since", since=since)
        assert row is not None
        return HoldingTimes(ended=row["ended"], total_seconds=row["held"])

    def reserve_events(self, limit: int = 20) -> list[ReserveEvent]:
        return [
            ReserveEvent(
                at=_at(row["at"]),
                action=ReserveAction(row["action"]),
                paths=tuple(row["paths"]),
                reason=row["reason"],
            )
            for row in self._all("reserve_events", limit=limit)
        ]

    # --- callbacks -----------------------------------------------------------------------

    def get_callback(self, callback_id: int) -> CallbackRecord | None:
        query = "get_callback_locked" if self._writing else "get_callback"
        row = self._one(query, id=callback_id)
        return None if row is None else values.callback(DECODE, row)

    def finish_callback(self, callback_id: int, resolution: CallbackResolution) -> None:
        self._run(
            "finish_callback",
            id=callback_id,
            outcome=resolution.outcome.value,
            redirect=resolution.redirect,
            pn_ref=resolution.pn_ref,
            amount=resolution.amount,
            approved=resolution.approved,
            payment_token=resolution.payment_token,
            detail=resolution.detail,
            candidates=json.dumps(list(resolution.candidates)),
            duplicate_of=resolution.duplicate_of,
        )

    def open_ambiguities(
        self, path: str, amount: int, received_after: datetime
    ) -> list[OpenAmbiguity]:
        return [
            OpenAmbiguity(callback_id=row["id"], candidates=frozenset(row["candidates"]))
            for row in self._all(
                "open_ambiguities", path=path, amount=amount, received_after=received_after
            )
        ]

    def callbacks(
        self,
        *,
        outcomes: Sequence[CallbackOutcome] = (),
        limit: int = 100,
        before_id: int | None = None,
    ) -> list[CallbackRecord]:
        rows = self._all(
            "callbacks",
            outcomes=[o.value for o in outcomes] if outcomes else None,
            limit=limit,
            before_id=before_id,
        )
        return [values.callback(DECODE, row) for row in rows]

    def unresolved_callbacks(self, received_before: datetime) -> list[int]:
        return [row["id"] for row in self._all("unresolved_callbacks", before=received_before)]


def _minute_number(moment: datetime) -> int:
    """Whole minutes since the Unix epoch: the admissions table's key, as SQLite's."""
    return int(moment.timestamp() // 60)


def _minute_start(number: int) -> datetime:
    """The start of the minute ``number`` counts (the inverse of ``_minute_number``)."""
    return datetime.fromtimestamp(number * 60, UTC)
