"""The storage port: what a database gives the pool, one adapter a dialect (``sqlite.py``,
``postgres.py``) under the storage operations of ``tx.py``.

A ``Connection`` runs the named queries of ``sql/`` inside one transaction. Rows are dicts: a
time an aware UTC ``datetime`` (a column named ``at`` or ending in ``_at`` or ``_until``),
JSON its text, a flag a boolean or 0/1; parameters likewise, a duration a ``timedelta``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any, Protocol

from .tx import Tx

Row = dict[str, Any]


class Connection(Protocol):
    """One transaction's connection."""

    now: datetime  # the transaction's one clock (docs/design.md, invariant 6)

    def one(self, query: str, **params: Any) -> Row | None:
        """The first row of the named query, or None."""
        ...

    def all(self, query: str, **params: Any) -> list[Row]: ...

    def run(self, query: str, **params: Any) -> int:
        """Run the named query; the number of rows it changed."""
        ...


class Store(ABC):
    """A database holding the pool's tables."""

    @abstractmethod
    def connect(self, *, write: bool) -> AbstractContextManager[Connection]:
        """A transaction: with ``write``, one that commits whole when the block ends, or not
        at all if it raises; without, a consistent read-only view."""

    @abstractmethod
    def migrate(self) -> list[str]:
        """Apply pending migrations; returns the names applied."""

    @abstractmethod
    def pending_migrations(self) -> list[tuple[str, str]]:
        """``(name, sql)`` of each migration not yet applied, in order (for ``--dry-run``)."""

    @abstractmethod
    def close(self) -> None: ...

    def transaction(self) -> AbstractContextManager[Tx]:
        """A write transaction, with the pool's storage operations."""
        return _Transaction(self.connect(write=True), writing=True)

    def read(self) -> AbstractContextManager[Tx]:
        return _Transaction(self.connect(write=False), writing=False)


class _Transaction:
    """A ``Tx`` over one of the store's connections (a class: cheaper than a generator)."""

    def __init__(self, connection: AbstractContextManager[Connection], *, writing: bool) -> None:
        self._connection = connection
        self._writing = writing

    def __enter__(self) -> Tx:
        return Tx(self._connection.__enter__(), writing=self._writing)

    def __exit__(self, *exc_info: Any) -> bool | None:
        return self._connection.__exit__(*exc_info)


def applied_migrations(conn: Connection) -> list[str]:
    """The names of the migrations the database records (none before the first)."""
    present = conn.one("migrations_table_exists")
    if present is None or not present["present"]:
        return []
    return [row["name"] for row in conn.all("applied_migrations")]
