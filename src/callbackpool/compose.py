"""The composition root: settings in, a ready pool out."""

from __future__ import annotations

from .clock import Clock
from .config import Settings
from .pool import CallbackPool, StatusHook
from .store import open_store
from .store.port import Store


def build_pool(
    settings: Settings,
    *,
    store: Store | None = None,
    clock: Clock | None = None,
    on_status_change: StatusHook | None = None,
    migrate: bool = True,
    sync_slots: bool = True,
) -> CallbackPool:
    """Open the store the settings name, bring its schema up to date, load the paths.

    ``sync_slots=False`` leaves the pool's slots as the database has them: for a tool that
    only looks or tidies up, and must not deactivate the paths a running service leases
    because it was handed another configuration file.
    """
    store = store or open_store(settings.database_url, clock=clock)
    if migrate:
        store.migrate()
    pool = CallbackPool(
        store,
        settings.gateway(),
        settings.policy(),
        on_status_change=on_status_change,
        status_query=settings.status_query_client(),
    )
    if sync_slots:
        pool.sync_slots()
    return pool
