"""Fixtures of the PostgreSQL-only tests: a fresh database, stores closed afterwards."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from callbackpool.store.postgres import PostgresStore

from ..conftest import DATABASES

StoreOpener = Callable[..., PostgresStore]


@pytest.fixture
def database() -> str:
    """A fresh, migrated database (a clone of the session's template); dropped afterwards."""
    return DATABASES.create()


@pytest.fixture
def postgres_store() -> Iterator[StoreOpener]:
    """Opens PostgreSQL stores (as many as a test needs) and closes them all afterwards."""
    made: list[PostgresStore] = []

    def open_(url: str, **options: Any) -> PostgresStore:
        store = PostgresStore(url, **options)
        made.append(store)
        return store

    yield open_
    for store in made:
        store.close()
