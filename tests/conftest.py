"""Shared fixtures: a fake clock, a store of every kind, a pool over it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from callbackpool.gateways.paygistix import PaygistixGateway
from callbackpool.pool import CallbackPool
from callbackpool.store.port import Store
from callbackpool.store.postgres import PostgresStore
from callbackpool.store.sqlite import SqliteStore
from callbackpool.testing import FakeClock

from .databases import TestDatabases
from .support import make_gateway, policy_with

# Every store kind the behavioural suite runs against.
STORE_KINDS: list[Any] = [
    "sqlite",
    pytest.param("postgres", marks=pytest.mark.postgres),
]

DATABASES = TestDatabases()
# The database behind each folder a test makes a PostgreSQL store in: like a SQLite file,
# two stores made in one folder share it.
_databases_by_folder: dict[Path, str] = {}


def make_store(kind: str, tmp_path: Path, clock: FakeClock) -> Store:
    if kind == "sqlite":
        return SqliteStore(tmp_path / "pool.db", clock=clock, synchronous="NORMAL")
    if kind == "postgres":
        if tmp_path not in _databases_by_folder:
            _databases_by_folder[tmp_path] = DATABASES.create()
        # Time comes from the fake clock, so the suite drives expiry as on SQLite; the
        # database's own clock is tested in tests/postgres.
        return PostgresStore(_databases_by_folder[tmp_path], clock=clock, min_size=1, max_size=4)
    raise AssertionError(f"unknown store kind {kind}")


@pytest.fixture(scope="session", autouse=True)
def _postgres_template() -> Iterator[TestDatabases]:
    """Drops the session's template at the end (it is made on first use only)."""
    yield DATABASES
    DATABASES.close()


@pytest.fixture(autouse=True)
def _drop_test_databases() -> Iterator[None]:
    """Drops the databases a test made, after its stores are closed."""
    yield
    _databases_by_folder.clear()
    if DATABASES.created:
        DATABASES.drop_created()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=STORE_KINDS)
def store(request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock) -> Iterator[Store]:
    store = make_store(request.param, tmp_path, clock)
    store.migrate()
    yield store
    store.close()


StoreFactory = Callable[[], Store]


@pytest.fixture(params=STORE_KINDS)
def store_factory(
    request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock
) -> Iterator[StoreFactory]:
    """Makes fresh, migrated stores of one kind (for tests that need many, e.g. hypothesis)."""
    made: list[Store] = []

    def fresh() -> Store:
        if request.param == "postgres":
            # The test's one database serves each store in turn: the store before is closed
            # and the database emptied. A clone per store would cost a few hundred
            # milliseconds and keep a connection open per store until the test ends.
            for old in made:
                old.close()
            if made:
                DATABASES.empty(_databases_by_folder[tmp_path])
            store = make_store(request.param, tmp_path, clock)
        else:
            folder = tmp_path / f"store-{len(made)}"
            folder.mkdir()
            store = make_store(request.param, folder, clock)
        store.migrate()
        made.append(store)
        return store

    yield fresh
    for store in made:
        store.close()


PoolFactory = Callable[..., CallbackPool]


@pytest.fixture
def make_pool(store: Store) -> PoolFactory:
    """A pool over the test's store; keyword arguments override the policy."""

    def build(*, gateway: PaygistixGateway | None = None, **policy: Any) -> CallbackPool:
        pool = CallbackPool(store, gateway or make_gateway(), policy_with(**policy))
        pool.sync_slots()
        return pool

    return build


@pytest.fixture
def pool(make_pool: PoolFactory) -> CallbackPool:
    return make_pool()
