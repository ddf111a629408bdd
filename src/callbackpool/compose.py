"""The composition root: settings in, a ready pool out."""

from __future__ import annotations

from .clock import Clock
from .config import Settings
from .pool import CallbackPool, StatusHook
from .ports import Store
from .store import open_store


def build_pool(
    settings: Settings,
    *,
    store: Store | None = None,
    clock: Clock | None = None,
    on_status_change: StatusHook | None = None,
    migrate: bool = True,
) -> CallbackPool:
    """Open the store the settings name, bring its schema up to date, load the paths."""
    store = store or open_store(settings.database_url, clock=clock)
    if migrate:
        store.migrate()
    pool = CallbackPool(
        store, settings.gateway(), settings.policy(), on_status_change=on_status_change
    )
    pool.sync_slots()
    return pool
