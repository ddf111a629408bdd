"""PostgreSQL databases for tests: one template migrated per session, a fresh clone for each
store a test makes, every one dropped afterwards.

The server is ``CALLBACKPOOL_TEST_POSTGRES_URL`` (default: the local one, user postgres).
Other test runs may share it, so every name is random. An unreachable server skips the
PostgreSQL tests, except under ``CI=true``, where it fails them: CI must not go green
without having run them.
"""

from __future__ import annotations

import os
import queue
import secrets
import threading
from typing import Any, NoReturn

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from callbackpool.store.postgres import PostgresStore

ADMIN_URL = os.environ.get(
    "CALLBACKPOOL_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


def unavailable(reason: str) -> NoReturn:
    """Skip, or under CI fail: a test that needs a server we do not have."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: PostgreSQL tests must run, not skip)", pytrace=False)
    pytest.skip(reason)


def random_name(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(6)}"


class TestDatabases:
    """Clones of a migrated template on the test server, created on demand.

    Cloning takes a few hundred milliseconds, and dropping a database waits for a server
    checkpoint (a second or more on a busy shared server). So a worker thread keeps a couple
    of clones ready, and drops used databases only while no clone is wanted: a test never
    waits behind a drop.
    """

    __test__ = False  # not a test class, whatever its name

    def __init__(self, admin_url: str = ADMIN_URL, *, ready: int = 2) -> None:
        self.admin_url = admin_url
        self._admin: psycopg.Connection[Any] | None = None
        self._failure: str | None = None
        self._template: str | None = None
        self._ready_count = ready
        self._ready: queue.Queue[str | BaseException] = queue.Queue()
        self._work_to_do = threading.Condition()
        self._clones_wanted = 0
        self._doomed: list[str] = []
        self._stopping = False
        self._worker: threading.Thread | None = None
        self.created: list[str] = []

    def url(self, dbname: str) -> str:
        return make_conninfo(self.admin_url, dbname=dbname)

    def _connect(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.admin_url, autocommit=True, connect_timeout=3)

    def admin(self) -> psycopg.Connection[Any]:
        if self._failure is not None:
            unavailable(self._failure)
        if self._admin is None or self._admin.closed:
            try:
                self._admin = self._connect()
            except psycopg.OperationalError as exc:
                shown = conninfo_to_dict(self.admin_url)
                shown.pop("password", None)
                self._failure = f"PostgreSQL is not reachable at {shown}: {exc}".strip()
                unavailable(self._failure)
        return self._admin

    def template(self) -> str:
        """The session's template database, migrated (made on first use)."""
        if self._template is None:
            name = random_name("cbp_template")
            self.admin().execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            self._template = name
            store = PostgresStore(self.url(name), min_size=0, max_size=1)
            try:
                store.migrate()
            finally:
                store.close()
        return self._template

    def create(self) -> str:
        """A fresh database cloned from the template; returns its connection string."""
        template = self.template()
        if self._worker is None:
            self._worker = threading.Thread(
                target=self._work, args=(template,), name="test-databases", daemon=True
            )
            self._worker.start()
            self._ask(clones=self._ready_count)
        made = self._ready.get(timeout=120)
        if isinstance(made, BaseException):
            raise made
        self.created.append(made)
        self._ask(clones=1)
        return self.url(made)

    def _ask(self, *, clones: int = 0, drop: str | None = None) -> None:
        with self._work_to_do:
            self._clones_wanted += clones
            if drop is not None:
                self._doomed.append(drop)
            self._work_to_do.notify()

    def _work(self, template: str) -> None:
        """Clones first, drops when no clone is wanted; at the stop, the drops left."""
        with self._connect() as conn:
            while True:
                with self._work_to_do:
                    self._work_to_do.wait_for(
                        lambda: self._clones_wanted > 0 or bool(self._doomed) or self._stopping
                    )
                    if self._clones_wanted > 0 and not self._stopping:
                        self._clones_wanted -= 1
                        doomed = None
                    elif self._doomed:
                        doomed = self._doomed.pop()
                    else:
                        return
                try:
                    if doomed is not None:
                        self._drop(conn, doomed)
                        continue
                    clone = random_name("cbp_test")
                    conn.execute(
                        sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                            sql.Identifier(clone), sql.Identifier(template)
                        )
                    )
                    self._ready.put(clone)
                except psycopg.Error as exc:
                    self._ready.put(exc)

    def empty(self, url: str) -> None:
        """Delete every row of a test database and restart its identities: as good as a
        fresh clone, and much cheaper (for tests that need dozens of stores in a row)."""
        with psycopg.connect(url, autocommit=True) as conn:
            tables = [
                sql.Identifier(row[0])
                for row in conn.execute(
                    "SELECT tablename FROM pg_tables"
                    " WHERE schemaname = current_schema() AND tablename <> 'schema_migrations'"
                )
            ]
            conn.execute(
                sql.SQL("TRUNCATE {} RESTART IDENTITY CASCADE").format(sql.SQL(", ").join(tables))
            )

    def create_empty(self) -> str:
        """A database with no tables at all (for migration tests)."""
        name = random_name("cbp_empty")
        self.admin().execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        self.created.append(name)
        return self.url(name)

    def drop_created(self) -> None:
        """Drops (in the background) the databases handed out so far."""
        while self.created:
            name = self.created.pop()
            if self._worker is not None:
                self._ask(drop=name)
            else:
                self._drop(self.admin(), name)

    @staticmethod
    def _drop(conn: psycopg.Connection[Any], name: str) -> None:
        # FORCE: a test that failed half-way may have left a connection open.
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )

    def close(self) -> None:
        """Drops everything this session made, the template last."""
        if self._admin is None or self._admin.closed:
            return
        self.drop_created()
        if self._worker is not None:
            with self._work_to_do:
                self._stopping = True
                self._work_to_do.notify()
            self._worker.join(timeout=300)
            self._worker = None
        while not self._ready.empty():
            leftover = self._ready.get()
            if isinstance(leftover, str):
                self._drop(self._admin, leftover)
        if self._template is not None:
            self._drop(self._admin, self._template)
            self._template = None
        self._admin.close()
