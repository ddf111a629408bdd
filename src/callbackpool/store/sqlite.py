"""The embedded store: one SQLite file in WAL mode, writes under ``BEGIN IMMEDIATE``, safe
from many threads (a connection each) and processes. Times are integer microseconds since
the Unix epoch, from the injected clock."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

from ..clock import Clock, SystemClock
from ..domain.errors import MigrationError, StoreUnavailable
from .port import Row, Store, applied_migrations
from .queries import load_migrations, load_queries

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_QUERIES = load_queries("sqlite")


def to_us(moment: datetime) -> int:
    return (moment - EPOCH) // timedelta(microseconds=1)


@cache
def _is_time(column: str) -> bool:
    return column == "at" or column.endswith(("_at", "_until"))


_columns: dict[str, tuple[list[str], list[str]]] = {}


def _decoder(query: str, cursor: sqlite3.Cursor) -> tuple[list[str], list[str]]:
    """A named query's column names, and those of its times (the same at every run)."""
    if query not in _columns:
        names = [column[0] for column in cursor.description]
        _columns[query] = names, [name for name in names if _is_time(name)]
    return _columns[query]


def _row(names: list[str], times: list[str], values: tuple[Any, ...]) -> Row:
    """A row as a dict, its times (microseconds) as aware UTC datetimes."""
    row = dict(zip(names, values, strict=True))
    for name in times:
        if row[name] is not None:
            row[name] = EPOCH + timedelta(microseconds=row[name])
    return row


def is_busy(exc: sqlite3.OperationalError) -> bool:
    return "locked" in str(exc) or "busy" in str(exc)


class SqliteConnection:
    """One SQLite transaction's connection."""

    def __init__(self, conn: sqlite3.Connection, now: datetime) -> None:
        self._conn = conn
        self.now = now
        self._now_us = to_us(now)

    def _execute(self, query: str, params: dict[str, Any]) -> sqlite3.Cursor:
        for name, value in params.items():
            if value is self.now:  # in nearly every query
                params[name] = self._now_us
            elif isinstance(value, datetime):
                params[name] = to_us(value)
            elif isinstance(value, timedelta):
                params[name] = value // timedelta(microseconds=1)
        return self._conn.execute(_QUERIES[query], params)

    def one(self, query: str, **params: Any) -> Row | None:
        cursor = self._execute(query, params)
        values = cursor.fetchone()
        return None if values is None else _row(*_decoder(query, cursor), values)

    def all(self, query: str, **params: Any) -> list[Row]:
        cursor = self._execute(query, params)
        names, times = _decoder(query, cursor)
        return [_row(names, times, values) for values in cursor.fetchall()]

    def run(self, query: str, **params: Any) -> int:
        return self._execute(query, params).rowcount


class SqliteStore(Store):
    """The pool's tables in one SQLite file (``":memory:"`` for a private in-memory one)."""

    def __init__(
        self,
        path: str | Path,
        *,
        clock: Clock | None = None,
        busy_timeout: float = 10.0,
        synchronous: str = "FULL",
    ) -> None:
        self.path = str(path)
        self.clock: Clock = clock or SystemClock()
        self.busy_timeout = busy_timeout
        if synchronous.upper() not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise ValueError(f"unknown synchronous mode {synchronous!r}")
        self.synchronous = synchronous.upper()
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._memory = self.path == ":memory:"
        # An in-memory database lives in one connection, which the threads then share.
        self._shared: sqlite3.Connection | None = None
        self._shared_lock = threading.RLock()
        # This process's writers queue for their turn here, handed it as soon as it is free,
        # rather than in SQLite's busy handler, which polls with sleeps of up to 100 ms.
        self._turn = threading.Lock()

    def __repr__(self) -> str:
        return f"SqliteStore({self.path!r})"

    def _open(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(
                self.path, isolation_level=None, timeout=self.busy_timeout, check_same_thread=False
            )
            if not self._memory:
                conn.execute("PRAGMA journal_mode = WAL")
            conn.execute(f"PRAGMA synchronous = {self.synchronous}")
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"cannot open SQLite database {self.path}: {exc}") from exc
        with self._lock:
            self._connections.append(conn)
        return conn

    def _connection(self) -> sqlite3.Connection:
        """This thread's connection (an in-memory database's one: the caller holds
        ``_shared_lock``)."""
        if self._memory:
            if self._shared is None:
                self._shared = self._open()
            return self._shared
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._open()
            self._local.conn = conn
        return conn

    def _hold(self, write: bool) -> threading.Lock | threading.RLock | None:
        """Take an in-memory database's one connection, or a file's write turn to write."""
        lock = self._shared_lock if self._memory else self._turn if write else None
        if lock is not None and not lock.acquire(timeout=self.busy_timeout):
            raise StoreUnavailable(
                f"SQLite database is busy: no write turn in {self.busy_timeout:g} s"
            )
        return lock

    def connect(self, *, write: bool) -> _Transaction:
        return _Transaction(self, write)

    def close(self) -> None:
        with self._lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()
        self._shared = None
        self._local = threading.local()

    # --- migrations ------------------------------------------------------------------------

    def pending_migrations(self) -> list[tuple[str, str]]:
        applied: set[str] = set()
        if self._memory or Path(self.path).exists():  # looking creates no database
            try:
                with self.connect(write=False) as conn:
                    applied = set(applied_migrations(conn))
            except sqlite3.OperationalError as exc:
                raise StoreUnavailable(f"SQLite database {self.path}: {exc}") from exc
        return [(name, sql) for name, sql in load_migrations("sqlite") if name not in applied]

    def migrate(self) -> list[str]:
        held = self._hold(True)
        assert held is not None
        try:
            conn = self._connection()
            # A migration that makes a table anew drops the old one: with foreign keys on,
            # that would delete the rows that refer to it. They are checked before the commit.
            conn.execute("PRAGMA foreign_keys = OFF")
            try:
                return self._migrate(conn)
            finally:
                conn.execute("PRAGMA foreign_keys = ON")
        finally:
            held.release()

    def _migrate(self, conn: sqlite3.Connection) -> list[str]:
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise StoreUnavailable(f"SQLite database {self.path} is busy: {exc}") from exc
        applied_now: list[str] = []
        queries = SqliteConnection(conn, self.clock.now())
        try:
            queries.run("create_migrations_table")
            done = set(applied_migrations(queries))
            for name, script in load_migrations("sqlite"):
                if name in done:
                    continue
                for statement in _statements(script):
                    conn.execute(statement)
                queries.run("record_migration", name=name, applied_at=self.clock.now())
                applied_now.append(name)
            broken = conn.execute("PRAGMA foreign_key_check").fetchall()
            if broken:
                raise sqlite3.IntegrityError(f"foreign keys broken in {broken[0][0]}")
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.OperationalError) and is_busy(exc):
                raise StoreUnavailable(f"SQLite database {self.path} is busy: {exc}") from exc
            raise MigrationError(f"migration failed: {exc}") from exc
        return applied_now


class _Transaction:
    """One transaction on the store (a class: cheaper than a generator)."""

    def __init__(self, store: SqliteStore, write: bool) -> None:
        self._store = store
        self._write = write
        self._held: threading.Lock | threading.RLock | None = None

    def __enter__(self) -> SqliteConnection:
        store = self._store
        self._held = store._hold(self._write)
        try:
            self._conn = store._connection()
            if store._memory and not self._write:
                # Nobody else can use the one connection meanwhile: a consistent view.
                self._begun = False
            else:
                self._conn.execute("BEGIN IMMEDIATE" if self._write else "BEGIN DEFERRED")
                self._begun = True
        except sqlite3.OperationalError as exc:
            self._release()
            raise StoreUnavailable(f"SQLite database is busy: {exc}") from exc
        except BaseException:
            self._release()
            raise
        # Time is read once the transaction holds its lock, so that it orders transactions
        # the way they commit.
        return SqliteConnection(self._conn, store.clock.now())

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, _: Any) -> None:
        try:
            if not self._begun:
                return
            if exc is not None:
                self._conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.OperationalError) and is_busy(exc):
                    raise StoreUnavailable(f"SQLite database is busy: {exc}") from exc
                return
            try:
                self._conn.execute("COMMIT")
            except sqlite3.OperationalError as error:
                self._conn.execute("ROLLBACK")
                raise StoreUnavailable(f"SQLite commit failed: {error}") from error
        finally:
            self._release()

    def _release(self) -> None:
        if self._held is not None:
            self._held.release()
            self._held = None


def _statements(script: str) -> Iterator[str]:
    """Split a migration script into statements (sqlite3 runs one at a time)."""
    buffer = ""
    for line in script.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            statement = buffer.strip()
            buffer = ""
            if statement.rstrip(";").strip():
                yield statement
    if buffer.strip() and not all(
        part.strip().startswith("--") or not part.strip() for part in buffer.splitlines()
    ):
        raise MigrationError(f"incomplete statement at the end of a migration: {buffer[:80]!r}")
