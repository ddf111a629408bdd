"""Shared fixtures: a fake clock, a store of every kind, a pool over it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from callbackpool.clock import FakeClock
from callbackpool.gateways.paygistix import PaygistixGateway
from callbackpool.pool import CallbackPool
from callbackpool.ports import Store
from callbackpool.store.memory import MemoryStore
from callbackpool.store.sqlite import SqliteStore

from .support import POLICY, make_gateway

# Every store kind the behavioural suite runs against (the PostgreSQL issue adds its own).
STORE_KINDS: list[Any] = ["sqlite", "memory"]


def make_store(kind: str, tmp_path: Path, clock: FakeClock) -> Store:
    if kind == "sqlite":
        return SqliteStore(tmp_path / "pool.db", clock=clock, synchronous="NORMAL")
    if kind == "memory":
        return MemoryStore(clock=clock)
    raise AssertionError(f"unknown store kind {kind}")


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
        pool = CallbackPool(store, gateway or make_gateway(), replace(POLICY, **policy))
        pool.sync_slots()
        return pool

    return build


@pytest.fixture
def pool(make_pool: PoolFactory) -> CallbackPool:
    return make_pool()
