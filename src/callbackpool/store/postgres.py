"""The shared store: PostgreSQL through psycopg 3 and its connection pool, for several app
instances on one database (docs/architecture.md); time is the database's ``now()`` unless a
clock is injected. Writes run at READ COMMITTED and lock what they change in the order of
``tx.py``; reads at REPEATABLE READ, READ ONLY. Driver errors become ``StoreUnavailable``
(worth retrying) or ``StoreError``.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime, timedelta
from time import monotonic
from typing import Any, Self

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.pq import TransactionStatus
from psycopg.rows import dict_row
from psycopg.types.string import TextLoader
from psycopg_pool import ConnectionPool, PoolTimeout

from ..clock import Clock
from ..domain.errors import CallbackPoolError, MigrationError, StoreError, StoreUnavailable
from .port import Row, Store, applied_migrations
from .queries import load_migrations, load_queries

_Q = load_queries("postgres")

# Abandoned transactions (a process frozen mid-request) must not hold slot locks for ever.
IDLE_IN_TRANSACTION_TIMEOUT = timedelta(minutes=1)
# How long a request waits for a connection while the last attempt to connect failed.
OUTAGE_WAIT = 0.5
# How long a migration may wait (sql/postgres.sql: migration_timeouts).
MIGRATION_WAIT = timedelta(minutes=5)


class _Watchdog:
    """Gives up on a server that answers nothing at all (frozen, while its kernel still
    acknowledges every packet, so that neither TCP nor its own statement timeout ends the
    wait): a statement still unanswered past its deadline has its connection's socket shut
    down from this thread, which ends the wait with ``StoreUnavailable``."""

    TICK = 0.25  # seconds between looks

    def __init__(self) -> None:
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
                    target=self._watch, name="callbackpool-watchdog", daemon=True
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


class _Connection(psycopg.Connection[Any]):
    """The pool's connections. Each store makes its own subclass, on which every attempt to
    connect records why it failed (None once one succeeds), for a request that waited."""

    failure: str | None = None

    @classmethod
    def connect(cls, conninfo: str = "", **kwargs: Any) -> Self:
        try:
            conn = super().connect(conninfo, **kwargs)
        except psycopg.Error as exc:
            cls.failure = _summary(exc).removeprefix("connection failed: ")
            raise
        cls.failure = None
        return conn


def translate(exc: psycopg.Error, doing: str) -> CallbackPoolError:
    """The domain error a driver error means (the caller chains it ``from exc``): an
    operational one (server gone, a timeout, a deadlock) is worth retrying."""
    summary = _summary(exc)
    if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
        return StoreUnavailable(f"PostgreSQL is unavailable ({doing}): {summary}")
    return StoreError(f"PostgreSQL refused to {doing}: {summary}")


class PostgresStore(Store):
    """The pool's tables in a PostgreSQL database, shared by every app instance using it.
    ``timeout`` bounds each wait of a request on the database, ``connect_timeout`` opening a
    connection (docs/deploying.md has the whole table of bounds)."""

    def __init__(
        self,
        url: str,
        *,
        clock: Clock | None = None,
        min_size: int = 1,
        max_size: int = 10,
        connect_timeout: float = 5.0,
        timeout: float = 10.0,
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
        self._watchdog = _Watchdog()
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
        self._connections: type[_Connection] = type("Connection", (_Connection,), {})
        self._pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
            url,
            connection_class=self._connections,
            min_size=min_size,
            max_size=max_size,
            timeout=timeout,
            # The pool retries a failed connection with growing pauses, starting no new
            # attempt meanwhile: a short horizon keeps the pause after an outage short.
            reconnect_timeout=timeout,
            kwargs=connect_args,
            configure=self._configure,
            name="callbackpool",
            open=False,
        )
        # Opened without waiting: an instance starts while the database is still down, and
        # serves (503s meanwhile) once it is up.
        self._pool.open(wait=False)

    def __repr__(self) -> str:
        return f"PostgresStore({self._where!r})"

    def _configure(self, conn: psycopg.Connection[Any]) -> None:
        # JSON arrives as its text, as on SQLite: the storage operations decode it.
        conn.adapters.register_loader("json", TextLoader)
        conn.execute(_Q["session_settings"], self._settings)

    # --- transactions ----------------------------------------------------------------------

    def _start(self, begin: str) -> tuple[psycopg.Connection[Any], datetime]:
        """A pooled connection inside a new transaction, and the database's ``now()``. One
        that died in the pool (a server restart) fails on BEGIN: another one is tried."""
        deadline = monotonic() + self.timeout
        attempts = 0
        while True:
            wait = deadline - monotonic()
            if self._connections.failure is not None:
                # The last attempt to connect failed: wait only for a connection the pool can
                # make at once, so that in an outage requests fail fast.
                wait = min(wait, OUTAGE_WAIT)
            try:
                conn = self._pool.getconn(timeout=max(wait, 0.001))
            except psycopg.Error as exc:
                reason = self._connections.failure
                if isinstance(exc, PoolTimeout) and reason is not None:  # the server is down
                    raise StoreUnavailable(
                        f"PostgreSQL is unavailable (get a connection): {reason}"
                    ) from exc
                raise translate(exc, "get a connection") from exc
            try:
                with self._watchdog.guard(conn, self.answer_within, "begin a transaction"):
                    cursor = conn.execute(_Q[begin])
                cursor.nextset()  # past BEGIN, to the SELECT now()
                row = cursor.fetchone()
                assert row is not None
                self._connections.failure = None  # the server answers
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
    def connect(self, *, write: bool) -> Iterator[PostgresConnection]:
        conn, database_now = self._start("begin_write" if write else "begin_read")
        try:
            now = self.clock.now() if self.clock is not None else database_now.astimezone(UTC)
            try:
                yield PostgresConnection(conn, now, self._watchdog, self.answer_within)
                if conn.info.transaction_status == TransactionStatus.INERROR:
                    # A statement failed and its error was caught inside the transaction: the
                    # server would answer COMMIT with a silent rollback. Say so instead.
                    raise StoreError("a statement of the transaction failed: nothing was written")
                try:
                    with self._watchdog.guard(conn, self.answer_within, "commit"):
                        conn.execute(_Q["commit"])
                except psycopg.Error as exc:
                    raise translate(exc, "commit") from exc
            except BaseException:
                self._rollback_quietly(conn)
                raise
        finally:
            self._pool.putconn(conn)

    def close(self) -> None:
        self._pool.close()
        self._watchdog.close()

    def _rollback_quietly(self, conn: psycopg.Connection[Any]) -> None:
        """Roll back; a connection too broken to roll back is discarded by the pool anyway."""
        with (
            suppress(psycopg.Error, StoreUnavailable),
            self._watchdog.guard(conn, self.answer_within, "roll back"),
        ):
            conn.execute(_Q["rollback"])

    # --- migrations ------------------------------------------------------------------------

    def pending_migrations(self) -> list[tuple[str, str]]:
        with self.connect(write=False) as conn:
            applied = set(applied_migrations(conn))
        return [(name, sql) for name, sql in load_migrations("postgres") if name not in applied]

    def migrate(self) -> list[str]:
        """Apply pending migrations in one transaction, under an advisory lock so that
        instances starting together apply each one once."""
        applied_now: list[str] = []
        with self.connect(write=True) as conn:
            conn.answer_within = MIGRATION_WAIT.total_seconds() + 10
            conn.run("migration_timeouts")
            conn.run("migration_lock")
            conn.run("create_migrations_table")
            done = set(applied_migrations(conn))
            for name, script in load_migrations("postgres"):
                if name not in done:
                    conn.run_script(name, script)
                    conn.run("record_migration", name=name)
                    applied_now.append(name)
        return applied_now


def _row(cursor: psycopg.Cursor[Any]) -> Callable[[Any], Row]:
    """Rows as dicts, their times in UTC (as SQLite's)."""
    make = dict_row(cursor)

    def row(values: Any) -> Row:
        return {
            name: value.astimezone(UTC) if isinstance(value, datetime) else value
            for name, value in make(values).items()
        }

    return row


class PostgresConnection:
    """One PostgreSQL transaction's connection."""

    def __init__(
        self,
        conn: psycopg.Connection[Any],
        now: datetime,
        watchdog: _Watchdog,
        answer_within: float,
    ) -> None:
        self._conn = conn
        self._cursor: psycopg.Cursor[Row] = conn.cursor(row_factory=_row)
        self.now = now
        self._watchdog = watchdog
        self.answer_within = answer_within  # the store's, unless a migration waits

    def _execute(self, query: str, params: dict[str, Any]) -> psycopg.Cursor[Row]:
        doing = query.replace("_", " ")
        try:
            with self._watchdog.guard(self._conn, self.answer_within, doing):
                return self._cursor.execute(_Q[query], params)
        except psycopg.Error as exc:
            raise translate(exc, doing) from exc

    def one(self, query: str, **params: Any) -> Row | None:
        return self._execute(query, params).fetchone()

    def all(self, query: str, **params: Any) -> list[Row]:
        return self._execute(query, params).fetchall()

    def run(self, query: str, **params: Any) -> int:
        return self._execute(query, params).rowcount

    def run_script(self, name: str, script: str) -> None:
        """A migration: several statements, without parameters, sent as one simple query."""
        try:
            with self._watchdog.guard(self._conn, self.answer_within, f"apply migration {name}"):
                self._cursor.execute(script)
        except psycopg.OperationalError as exc:
            raise translate(exc, f"apply migration {name}") from exc
        except psycopg.Error as exc:
            raise MigrationError(f"migration {name} failed: {exc}") from exc
