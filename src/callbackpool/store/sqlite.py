"""The embedded store: one SQLite file in WAL mode, writes under ``BEGIN IMMEDIATE``.

Safe from many threads (a connection per thread) and several processes on one file (SQLite's
own locking, with a busy timeout). Time comes from the injected clock. The service runs its
busiest calls on its event loop, against this store (``loop_calls``, sqlite_loop.py).
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from ..clock import Clock, SystemClock
from ..domain.errors import MigrationError, StoreUnavailable
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
from .sqlite_loop import SqliteLoopCalls

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MINUTE_US = 60_000_000
_Q = load_queries("sqlite.sql")
_MIGRATIONS_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    name       TEXT PRIMARY KEY,
    applied_at INTEGER NOT NULL
)"""


def to_us(moment: datetime) -> int:
    return (moment - EPOCH) // timedelta(microseconds=1)


def from_us(micros: int | None) -> datetime | None:
    return None if micros is None else EPOCH + timedelta(microseconds=micros)


def _at(micros: int) -> datetime:
    return EPOCH + timedelta(microseconds=micros)


# How SQLite's columns arrive: times as microseconds since the epoch, JSON as text, flags as 0/1.
DECODE = Decode(time=_at, json=json.loads, flag=bool)

# Group commit: at most this many writers share one commit, and a writer whose batch is
# still open this long after its body finished commits the batch itself.
MAX_BATCH = 64
LEADERLESS_AFTER = 0.005
# A writer waiting for another process's write lock tries again this often (a busy process
# leaves gaps of tens of microseconds between its batches).
BUSY_RETRY = 0.0005


@dataclass(eq=False)
class _Batch:
    """Writers whose bodies ran in one open SQLite transaction, waiting for its commit."""

    durable: bool
    members: int = 0
    done: bool = False
    error: StoreUnavailable | None = None


class SqliteStore:
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
        # SQLite takes one writer at a time. This process's writers queue for a turn here,
        # handed it as soon as it is free, rather than in SQLite's busy handler, which polls
        # with sleeps of up to 100 ms. Other processes on the file meet SQLite's own locking.
        self._turn = threading.Lock()
        # Group commit (see transaction()): the open batch, how many writers queue for the
        # turn, and the condition a writer waits on for its batch to be committed.
        self._batch: _Batch | None = None
        self._queued = 0
        self._batches = threading.Condition()
        self._writer_conn: sqlite3.Connection | None = None
        self._writer_level = self.synchronous  # the writer connection's PRAGMA synchronous
        self._in_write = threading.local()
        # The service's calls on its event loop (sqlite_loop.py); none on a memory database.
        self._loop_calls = None if self._memory else SqliteLoopCalls(self)

    def __repr__(self) -> str:
        return f"SqliteStore({self.path!r})"

    # --- connections -----------------------------------------------------------------------

    def _open(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(
                self.path,
                isolation_level=None,
                timeout=self.busy_timeout,
                check_same_thread=False,
            )
            conn.row_factory = sqlite3.Row
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

    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        if self._memory:
            with self._shared_lock:
                if self._shared is None:
                    self._shared = self._open()
                yield self._shared
            return
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._open()
            self._local.conn = conn
        yield conn

    @contextmanager
    def _begin(self, mode: str, *, durable: bool = True) -> Iterator[SqliteTx]:
        with self._connection() as conn:
            if not durable:
                # In WAL mode a NORMAL commit is appended to the log without an fsync; the
                # next FULL commit's fsync of the log makes it durable along with its own.
                conn.execute("PRAGMA synchronous = NORMAL")
            try:
                conn.execute(f"BEGIN {mode}")
            except sqlite3.OperationalError as exc:
                self._restore_synchronous(conn, durable)
                raise StoreUnavailable(f"SQLite database is busy: {exc}") from exc
            try:
                # Time is read once the transaction holds its lock, so that it orders
                # transactions the way they commit.
                yield SqliteTx(conn, self.clock.now())
            except sqlite3.OperationalError as exc:
                conn.execute("ROLLBACK")
                if is_busy(exc):
                    raise StoreUnavailable(f"SQLite database is busy: {exc}") from exc
                raise
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            else:
                try:
                    conn.execute("COMMIT")
                except sqlite3.OperationalError as exc:
                    conn.execute("ROLLBACK")
                    raise StoreUnavailable(f"SQLite commit failed: {exc}") from exc
            finally:
                self._restore_synchronous(conn, durable)

    def _restore_synchronous(self, conn: sqlite3.Connection, durable: bool) -> None:
        if not durable:
            conn.execute(f"PRAGMA synchronous = {self.synchronous}")

    @contextmanager
    def transaction(self, *, durable: bool = True) -> Iterator[SqliteTx]:
        """A write transaction, committed in a group with those arriving at the same time.

        Writers queue for the turn; the one holding it runs its body inside the open SQLite
        transaction (under a savepoint when it joins others' writes, so that its failure
        undoes only its own). A writer that finishes while others queue leaves the
        transaction open for them; the last of a group commits it, and every member of the
        group returns only once that commit is done: one fsync for the group instead of one
        each. Nobody returns before its writes are durable (or, with ``durable=False``,
        written).

        In a call run on the event loop (``loop_calls``), the transaction joins the loop's
        batch instead, and the call answers once that batch has committed.
        """
        if getattr(self._in_write, "active", False):
            raise RuntimeError("a write transaction is already open in this thread")
        self._in_write.active = True
        try:
            if self._loop_calls is not None and self._loop_calls.running():
                self._loop_calls.join()  # WouldBlock, before anything is written
                with self._savepoint(self.writer_connection()) as tx:
                    yield tx
                self._loop_calls.wrote()
                return
            if self._memory:  # one connection, which the reads share: no group commit
                with self._turn_held(), self._begin("IMMEDIATE", durable=durable) as tx:
                    yield tx
                return
            batch = self._join_batch(durable)
            conn = self._writer_conn
            assert conn is not None
            # A writer that opened the batch runs before anyone can join it: on failure it
            # rolls the whole transaction back. One joining others' writes needs a savepoint.
            joined = batch.members > 0
            try:
                if joined:
                    conn.execute("SAVEPOINT member")
                try:
                    yield SqliteTx(conn, self.clock.now())
                except BaseException as exc:
                    if joined:
                        conn.execute("ROLLBACK TO member")
                        conn.execute("RELEASE member")
                    else:
                        self._abandon(batch)
                    if isinstance(exc, sqlite3.OperationalError) and is_busy(exc):
                        raise StoreUnavailable(f"SQLite database is busy: {exc}") from exc
                    raise
                if joined:
                    conn.execute("RELEASE member")
                batch.members += 1
            finally:
                self._leave_turn(batch)
            self._await_commit(batch)
        finally:
            self._in_write.active = False

    @contextmanager
    def _savepoint(self, conn: sqlite3.Connection) -> Iterator[SqliteTx]:
        """A writer's body joining others' writes: its failure undoes only its own."""
        conn.execute("SAVEPOINT member")
        try:
            yield SqliteTx(conn, self.clock.now())
        except BaseException as exc:
            conn.execute("ROLLBACK TO member")
            conn.execute("RELEASE member")
            if isinstance(exc, sqlite3.OperationalError) and is_busy(exc):
                raise StoreUnavailable(f"SQLite database is busy: {exc}") from exc
            raise
        conn.execute("RELEASE member")

    def _take_turn(self) -> None:
        with self._batches:
            self._queued += 1
        try:
            got = self._turn.acquire(timeout=self.busy_timeout)
        finally:
            with self._batches:
                self._queued -= 1
        if not got:
            raise StoreUnavailable(
                f"SQLite database is busy: no write turn in {self.busy_timeout:g} s"
            )

    @contextmanager
    def _turn_held(self) -> Iterator[None]:
        self._take_turn()
        try:
            yield
        finally:
            self._turn.release()

    def _join_batch(self, durable: bool) -> _Batch:
        """Take the turn and the open batch, beginning one if there is none. A batch is
        durable or not from its start (SQLite fixes a transaction's sync level when it
        begins): a durable writer finding a non-durable batch open commits it first."""
        self._take_turn()
        try:
            if self._batch is not None and durable and not self._batch.durable:
                self._commit(self._batch)
            if self._batch is None:
                self._begin_batch(durable)
                self._batch = _Batch(durable=durable)
            return self._batch
        except BaseException:
            self._turn.release()
            raise

    def _begin_batch(self, durable: bool) -> None:
        """``BEGIN IMMEDIATE`` on the writer connection, waiting for another process's
        writer if need be: retried at short intervals, for SQLite's own busy handler sleeps
        up to 100 ms between tries and would hardly ever find a busy process's lock free."""
        # In WAL mode a NORMAL commit is appended to the log without an fsync; the next FULL
        # commit's fsync of the log makes it durable along with its own.
        conn = self._writer_at(self.synchronous if durable else "NORMAL")
        deadline = time.monotonic() + self.busy_timeout
        while True:
            try:
                conn.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if not is_busy(exc) or time.monotonic() > deadline:
                    raise StoreUnavailable(f"SQLite database is busy: {exc}") from exc
            time.sleep(BUSY_RETRY)

    def _writer_at(self, level: str) -> sqlite3.Connection:
        """The writer connection (the caller holds the turn), at sync level ``level``."""
        if self._writer_conn is None:
            self._writer_conn = self._open()
            self._writer_conn.execute("PRAGMA busy_timeout = 0")
            self._writer_level = self.synchronous
        if level != self._writer_level:
            self._writer_conn.execute(f"PRAGMA synchronous = {level}")
            self._writer_level = level
        return self._writer_conn

    # --- the event loop's batches (sqlite_loop.py) -----------------------------------------

    def loop_calls(self) -> SqliteLoopCalls | None:
        return self._loop_calls

    def after_commit(self, announce: Callable[[], None]) -> None:
        if self._loop_calls is None or not self._loop_calls.after_commit(announce):
            announce()

    def begin_without_waiting(self) -> bool:
        """Take the turn and begin a durable transaction on the writer connection, if
        neither has to be waited for (nor does a writer of this process queue for the
        turn, which would wait behind the loop's batches for ever): True if begun."""
        if self._queued or not self._turn.acquire(blocking=False):
            return False
        begun = False
        try:
            if self._batch is None:  # a thread's batch may be held open for those queued
                self._writer_at(self.synchronous).execute("BEGIN IMMEDIATE")
                begun = True
        except sqlite3.OperationalError as exc:
            if not is_busy(exc):
                raise StoreUnavailable(f"SQLite database is unavailable: {exc}") from exc
        finally:
            if not begun:
                self._turn.release()
        return begun

    def writer_connection(self) -> sqlite3.Connection:
        """The connection of the batch the loop holds open (``begin_without_waiting``)."""
        assert self._writer_conn is not None
        return self._writer_conn

    def commit_loop_batch(self) -> StoreUnavailable | None:
        """Commit the loop's batch and give up the turn: the error, if it failed."""
        try:
            self.writer_connection().execute("COMMIT")
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                self.writer_connection().execute("ROLLBACK")
            return StoreUnavailable(f"SQLite commit failed: {exc}")
        finally:
            self._turn.release()
        return None

    def _leave_turn(self, batch: _Batch) -> None:
        """Commit the batch unless another writer is about to join it; give up the turn."""
        try:
            with self._batches:
                joining = self._queued > 0
            if batch is self._batch and (not joining or batch.members >= MAX_BATCH):
                self._commit(batch)
        finally:
            self._turn.release()

    def _abandon(self, batch: _Batch) -> None:
        """Roll back a batch whose only writer failed (the caller holds the turn)."""
        assert self._writer_conn is not None
        with contextlib.suppress(sqlite3.Error):
            self._writer_conn.execute("ROLLBACK")
        with self._batches:
            self._batch = None
            batch.done = True
            self._batches.notify_all()

    def _commit(self, batch: _Batch) -> None:
        """Commit the open batch (the caller holds the turn) and tell its members."""
        conn = self._writer_conn
        assert conn is not None
        error: StoreUnavailable | None = None
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            error = StoreUnavailable(f"SQLite commit failed: {exc}")
        finally:
            with self._batches:
                self._batch = None
                batch.done = True
                batch.error = error
                self._batches.notify_all()

    def _await_commit(self, batch: _Batch) -> None:
        """Wait for the batch this writer's body joined to be committed. If the writer it
        was left open for went away (its wait for the turn ran out), commit it oneself."""
        while True:
            with self._batches:
                if self._batches.wait_for(lambda: batch.done, timeout=LEADERLESS_AFTER):
                    break
            with self._turn_held():
                if self._batch is batch:
                    self._commit(batch)
        if batch.error is not None:
            raise batch.error

    def read(self) -> AbstractContextManager[SqliteTx]:
        if self._loop_calls is not None and self._loop_calls.has_written():
            return nullcontext(SqliteTx(self.writer_connection(), self.clock.now()))
        return self._begin("DEFERRED")

    def close(self) -> None:
        with self._lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()
        self._shared = None
        self._writer_conn = None
        self._batch = None
        self._local = threading.local()

    # --- migrations ------------------------------------------------------------------------

    def applied_migrations(self) -> list[str]:
        """Names of the migrations recorded in the database (reading only: a database that
        does not exist yet is not created)."""
        if not self._memory and not Path(self.path).exists():
            return []
        with self._connection() as conn:
            try:
                exists = conn.execute(
                    "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                    ("schema_migrations",),
                ).fetchone()
                if exists is None:
                    return []
                rows = conn.execute("SELECT name FROM schema_migrations ORDER BY name").fetchall()
            except sqlite3.OperationalError as exc:
                raise StoreUnavailable(f"SQLite database {self.path}: {exc}") from exc
        return [row[0] for row in rows]

    def pending_migrations(self) -> list[tuple[str, str]]:
        applied = set(self.applied_migrations())
        return [(name, sql) for name, sql in load_migrations("sqlite") if name not in applied]

    def migrate(self) -> list[str]:
        applied_now: list[str] = []
        with self._connection() as conn:
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                raise StoreUnavailable(f"SQLite database {self.path} is busy: {exc}") from exc
            try:
                conn.execute(_MIGRATIONS_TABLE)
                done = {row[0] for row in conn.execute("SELECT name FROM schema_migrations")}
                for name, script in load_migrations("sqlite"):
                    if name in done:
                        continue
                    for statement in _statements(script):
                        conn.execute(statement)
                    conn.execute(
                        "INSERT INTO schema_migrations (name, applied_at) VALUES (?, ?)",
                        (name, to_us(self.clock.now())),
                    )
                    applied_now.append(name)
                conn.execute("COMMIT")
            except sqlite3.OperationalError as exc:
                conn.execute("ROLLBACK")
                if is_busy(exc):
                    raise StoreUnavailable(f"SQLite database {self.path} is busy: {exc}") from exc
                raise MigrationError(f"migration failed: {exc}") from exc
            except sqlite3.Error as exc:
                conn.execute("ROLLBACK")
                raise MigrationError(f"migration failed: {exc}") from exc
        return applied_now


def is_busy(exc: sqlite3.OperationalError) -> bool:
    return "locked" in str(exc) or "busy" in str(exc)


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


class SqliteTx(SqlTx):
    """One SQLite transaction, speaking the ``Tx`` port (times as microseconds)."""

    _decode = DECODE

    def __init__(self, conn: sqlite3.Connection, now: datetime) -> None:
        self._conn = conn
        self.now = now
        self._now_us = self._now_param = to_us(now)

    def _one(self, query: str, **params: Any) -> sqlite3.Row | None:
        row: sqlite3.Row | None = self._conn.execute(_Q[query], params).fetchone()
        return row

    def _all(self, query: str, **params: Any) -> list[sqlite3.Row]:
        return self._conn.execute(_Q[query], params).fetchall()

    def _run(self, query: str, **params: Any) -> int:
        return self._conn.execute(_Q[query], params).rowcount

    # --- slots ---------------------------------------------------------------------------

    def sync_slots(self, paths: Sequence[str], reserve_paths: Sequence[str] = ()) -> SlotSync:
        rows = self._all("slots")
        existing = {row["path"]: bool(row["active"]) for row in rows}
        kind = {row["path"]: (bool(row["reserve"]), bool(row["standby"])) for row in rows}
        # A new reserve path joins the reserve in the state it is in.
        reserve_in_rotation = any(
            active and kind[path] == (True, False) for path, active in existing.items()
        )
        wanted = dict.fromkeys(paths, False) | dict.fromkeys(reserve_paths, True)
        added, reactivated, deactivated = [], [], []
        for path, reserve in wanted.items():
            standby = reserve and not reserve_in_rotation
            if path not in existing:
                self._run(
                    "insert_slot",
                    path=path,
                    reserve=int(reserve),
                    standby=int(standby),
                    now=self._now_us,
                )
                added.append(path)
                continue
            if kind[path][0] != reserve:
                self._run("set_slot_kind", path=path, reserve=int(reserve), standby=int(standby))
            if not existing[path]:
                self._run("set_slot_active", path=path, active=1)
                reactivated.append(path)
        for path, active in existing.items():
            if active and path not in wanted:
                self._run("set_slot_active", path=path, active=0)
                deactivated.append(path)
        return SlotSync(
            added=tuple(added), reactivated=tuple(reactivated), deactivated=tuple(deactivated)
        )

    def free_slot_count(self) -> int:
        return self._count("free_slot_count")

    def set_reserve_standby(self, standby: bool) -> list[str]:
        return [row["path"] for row in self._all("set_reserve_standby", standby=int(standby))]

    def slot_by_path(self, path: str) -> SlotRow | None:
        row = self._one("slot_by_path", path=path)
        return (
            None
            if row is None
            else SlotRow(id=row["id"], path=row["path"], active=bool(row["active"]))
        )

    def slot_views(self) -> list[SlotView]:
        return [
            SlotView(
                id=row["id"],
                path=row["path"],
                active=bool(row["active"]),
                usage_count=row["usage_count"],
                last_acquired_at=from_us(row["last_acquired_at"]),
                last_released_at=from_us(row["last_released_at"]),
                lease=None if row["l_id"] is None else values.lease(DECODE, row, "l_"),
                taints=row["taints"],
                reserve=bool(row["reserve"]),
                standby=bool(row["standby"]),
                sidelined_at=from_us(row["sidelined_at"]),
                sidelined_by=row["sidelined_by"],
                sidelined_reason=row["sidelined_reason"],
                health=SlotHealth(
                    approvals=row["approvals"],
                    declines=row["declines"],
                    silent_expiries=row["silent_expiries"],
                    expiry_streak=row["expiry_streak"],
                    last_return_at=from_us(row["last_return_at"]),
                ),
            )
            for row in self._all("slot_views", now=self._now_us)
        ]

    def usage(self) -> list[UsageRow]:
        return [
            UsageRow(
                path=row["path"],
                active=bool(row["active"]),
                usage_count=row["usage_count"],
                callbacks=row["callbacks"],
                expiries=row["expiries"],
                last_acquired_at=from_us(row["last_acquired_at"]),
                last_released_at=from_us(row["last_released_at"]),
            )
            for row in self._all("usage")
        ]

    # --- slot health -----------------------------------------------------------------------

    def record_slot_return(self, slot_id: int, *, approved: bool) -> None:
        self._run("record_slot_return", slot_id=slot_id, approved=int(approved), now=self._now_us)

    def sideline_slot(self, slot_id: int, *, by: str, reason: str) -> bool:
        return (
            self._run("sideline_slot", slot_id=slot_id, by=by, reason=reason, now=self._now_us) == 1
        )

    # --- leases --------------------------------------------------------------------------

    def expire_due_leases(self, taint_window: timedelta, slot_id: int | None = None) -> list[Lease]:
        window = taint_window // timedelta(microseconds=1)
        if slot_id is None:
            rows = self._all("expire_due_leases", now=self._now_us, window=window)
        else:
            rows = self._all(
                "expire_due_lease_on_slot", now=self._now_us, window=window, slot_id=slot_id
            )
        leases = [values.lease(DECODE, row) for row in rows]
        for lease in leases:
            self._free_slot(lease)
        return leases

    def acquire_slot(
        self, *, token: str, amount: int, expires_at: datetime, allow_same_amount_tainted: bool
    ) -> Lease | None:
        slot = self._one("pick_clean_slot", now=self._now_us) or self._one(
            "pick_slot_tainted_by_other_amounts", now=self._now_us, amount=amount
        )
        if slot is None and allow_same_amount_tainted:
            slot = self._one("pick_any_free_slot")
        if slot is None:
            return None
        expires_us = to_us(expires_at)
        row = self._one(
            "insert_lease",
            slot_id=slot["id"],
            path=slot["path"],
            token=token,
            amount=amount,
            now=self._now_us,
            expires_at=expires_us,
        )
        assert row is not None
        self._run(
            "occupy_slot",
            lease_id=row["id"],
            expires_at=expires_us,
            now=self._now_us,
            slot_id=slot["id"],
        )
        return Lease(
            id=row["id"],
            slot_id=slot["id"],
            path=slot["path"],
            token=token,
            amount=amount,
            acquired_at=self.now,
            expires_at=expires_at,
        )

    def abandon_silent_leases(
        self, taint_window: timedelta, slot_id: int | None = None
    ) -> list[Lease]:
        window = taint_window // timedelta(microseconds=1)
        if slot_id is None:
            rows = self._all("abandon_silent_leases", now=self._now_us, window=window)
        else:
            rows = self._all(
                "abandon_silent_lease_on_slot", now=self._now_us, window=window, slot_id=slot_id
            )
        leases = [values.lease(DECODE, row) for row in rows]
        for lease in leases:
            self._free_slot(lease)
        return leases

    def record_heartbeat(self, lease_id: int, until: datetime) -> bool:
        updated = self._run("record_heartbeat", id=lease_id, until=to_us(until), now=self._now_us)
        return updated == 1

    def earliest_lease_end(self) -> datetime | None:
        row = self._one("earliest_lease_end")
        return None if row is None else from_us(row[0])

    def customer_claims(self, customer_key: str) -> list[datetime]:
        # Atomic with the lease that follows: write transactions take turns (BEGIN IMMEDIATE).
        rows = self._all("customer_claims", customer_key=customer_key, now=self._now_us)
        return [_at(row["expires_at"]) for row in rows]

    def live_leases(self) -> list[Lease]:
        return [values.lease(DECODE, row) for row in self._all("live_leases")]

    def lease_spans(self, since: datetime, limit: int = 100_000) -> list[LeaseSpan]:
        return [
            LeaseSpan(
                lease_id=row["id"],
                path=row["path"],
                acquired_at=_at(row["acquired_at"]),
                ended_at=from_us(row["ended_at"]),
                end_reason=None if row["end_reason"] is None else LeaseEnd(row["end_reason"]),
            )
            for row in self._all("lease_spans", since=to_us(since), limit=limit)
        ]

    def end_lease(
        self, lease_id: int, reason: LeaseEnd, taint_until: datetime | None
    ) -> Lease | None:
        row = self._one(
            "end_lease",
            id=lease_id,
            now=self._now_us,
            reason=reason.value,
            taint_until=None if taint_until is None else to_us(taint_until),
        )
        if row is None:
            return None
        lease = values.lease(DECODE, row)
        self._free_slot(lease)
        return lease

    def _free_slot(self, lease: Lease) -> None:
        assert lease.ended_at is not None
        self._run(
            "free_slot",
            slot_id=lease.slot_id,
            lease_id=lease.id,
            released_at=to_us(lease.ended_at),
            taint_until=None if lease.taint_until is None else to_us(lease.taint_until),
        )

    def drop_taint(self, lease_id: int) -> None:
        row = self._one("drop_taint", id=lease_id)
        if row is not None:
            self._run("recompute_slot_taint", slot_id=row["slot_id"])

    def candidates(self, slot_id: int) -> list[Candidate]:
        return [
            Candidate(lease=values.lease(DECODE, row, "l_"), payment=values.payment(DECODE, row))
            for row in self._all("candidates", slot_id=slot_id, now=self._now_us)
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
            late=int(payment.late),
            lease_id=payment.lease_id,
            callback_path=payment.callback_path,
            expires_at=None if payment.expires_at is None else to_us(payment.expires_at),
            now=to_us(payment.created_at),
        )

    def update_payment(self, token: str, expected: PaymentStatus, change: PaymentChange) -> bool:
        updated = self._run(
            "update_payment",
            token=token,
            expected=expected.value,
            status=change.status.value,
            late=None if change.late is None else int(change.late),
            pn_ref=change.pn_ref,
            order_id=change.order_id,
            auth_code=change.auth_code,
            card_type=change.card_type,
            last4=change.last4,
            result_code=change.result_code,
            error_message=change.error_message,
            callback_id=change.callback_id,
            now=self._now_us,
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
            statuses=json.dumps([s.value for s in statuses]) if statuses else None,
            created_before=None if created_before is None else to_us(created_before),
            limit=limit,
        )
        return [values.payment(DECODE, row) for row in rows]

    # --- the waiting room ----------------------------------------------------------------

    def lock_admission(self) -> None:
        pass  # a write transaction holds the database's one write lock already

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
            now=self._now_us,
            expires_at=to_us(ticket.expires_at),
        )
        assert row is not None
        return values.ticket(DECODE, row)

    def touch_ticket(self, ticket_id: int, expires_at: datetime) -> None:
        self._run("touch_ticket", id=ticket_id, expires_at=to_us(expires_at))

    # --- capacity figures ----------------------------------------------------------------

    def record_admission(self, admission: Admission, busy: int | None = None) -> None:
        self._run(
            "record_admission",
            minute=self._now_us // _MINUTE_US,
            leased=int(admission is Admission.LEASED),
            waited=int(admission is Admission.WAITED),
            refused=int(admission is Admission.REFUSED),
            granted=int(admission is Admission.GRANTED),
            busy=busy,
        )

    def admissions_since(self, since: datetime) -> AdmissionCounts:
        row = self._one("admissions_since", minute=to_us(since) // _MINUTE_US)
        assert row is not None
        return AdmissionCounts(
            leased=row["leased"],
            waited=row["waited"],
            refused=row["refused"],
            granted=row["granted"],
            peak_busy=row["peak_busy"],
        )

    def drop_admissions_before(self, before: datetime) -> int:
        return self._run("drop_admissions_before", minute=to_us(before) // _MINUTE_US)

    def holding_times_since(self, since: datetime) -> HoldingTimes:
        row = self._one("holding_times_since", since=to_us(since))
        assert row is not None
        return HoldingTimes(ended=row["ended"], total_seconds=row["held"] / 1_000_000)

    def reserve_events(self, limit: int = 20) -> list[ReserveEvent]:
        return [
            ReserveEvent(
                at=_at(row["at"]),
                action=ReserveAction(row["action"]),
                paths=tuple(json.loads(row["paths"])),
                reason=row["reason"],
            )
            for row in self._all("reserve_events", limit=limit)
        ]

    def turn_aways_since(self, since: datetime) -> list[tuple[datetime, int]]:
        rows = self._all("turn_aways_since", minute=to_us(since) // _MINUTE_US)
        return [(_at(row["minute"] * _MINUTE_US), row["refused"]) for row in rows]

    # --- callbacks -----------------------------------------------------------------------

    def get_callback(self, callback_id: int) -> CallbackRecord | None:
        row = self._one("get_callback", id=callback_id)
        return None if row is None else values.callback(DECODE, row)

    def finish_callback(self, callback_id: int, resolution: CallbackResolution) -> None:
        self._run(
            "finish_callback",
            id=callback_id,
            outcome=resolution.outcome.value,
            redirect=resolution.redirect,
            pn_ref=resolution.pn_ref,
            amount=resolution.amount,
            approved=None if resolution.approved is None else int(resolution.approved),
            payment_token=resolution.payment_token,
            detail=resolution.detail,
            candidates=json.dumps(list(resolution.candidates)),
            duplicate_of=resolution.duplicate_of,
        )

    def open_ambiguities(
        self, path: str, amount: int, received_after: datetime
    ) -> list[OpenAmbiguity]:
        return [
            OpenAmbiguity(
                callback_id=row["id"], candidates=frozenset(json.loads(row["candidates"]))
            )
            for row in self._all(
                "open_ambiguities",
                path=path,
                amount=amount,
                received_after=to_us(received_after),
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
            outcomes=json.dumps([o.value for o in outcomes]) if outcomes else None,
            limit=limit,
            before_id=before_id,
        )
        return [values.callback(DECODE, row) for row in rows]

    def unresolved_callbacks(self, received_before: datetime) -> list[int]:
        return [
            row["id"] for row in self._all("unresolved_callbacks", before=to_us(received_before))
        ]
