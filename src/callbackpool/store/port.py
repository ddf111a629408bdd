"""The storage port: what a database gives the pool. One adapter per dialect implements it
(``sqlite.py``, ``postgres.py``); the pool's storage operations are written once above it,
in ``tx.py``.

A ``Connection`` runs the named queries of ``sql/`` inside one transaction. Rows come back as
dictionaries: a time as a timezone-aware UTC ``datetime`` (a column named ``at`` or ending in
``_at`` or ``_until``), JSON as its text, a flag as a boolean or 0/1. Parameters go in the
same way: ``datetime`` for a time, ``timedelta`` for a duration.
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

    # The one clock the transaction decides time by: the database's where it has one
    # (docs/design.md, invariant 6).
    now: datetime

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
    """A ``Tx`` over one of the store's connections (a class, not a generator: the pool
    opens several hundred thousand of these in a simulation)."""

    def __init__(self, connection: AbstractContextManager[Connection], *, writing: bool) -> None:
        self._connection = connection
        self._writing = writing

    def __enter__(self) -> Tx:
        return Tx(self._connection.__enter__(), writing=self._writing)

    def __exit__(self, *exc_info: Any) -> bool | None:
        return self._connection.__exit__(*exc_info)
