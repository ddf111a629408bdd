"""The settings the pool runs by.

``PoolPolicy`` is built once from the configuration file (``config.py``) and handed to the
pool; nothing in the pool reads the configuration or the environment itself.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import timedelta

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, kw_only=True)
class PoolPolicy:
    """The settings the core runs by (built from the configuration file by ``config``)."""

    base_url: str
    callback_paths: tuple[str, ...]
    lock_timeout: timedelta = timedelta(minutes=10)
    late_callback_window: timedelta = timedelta(minutes=60)
    reuse_same_amount_tainted: bool = True
    max_amount: int | None = None
    success_url: str = "/payment-success"
    error_url: str = "/payment-error"
    # A customer (``Payment.customer_key``) holds at most this many live leases and places in
    # the waiting room together (0: no cap).
    max_live_leases_per_customer: int = 3
    # The addresses gateway returns may come from (empty: any). A return from elsewhere is
    # stored and rejected. The address is the one the adapter resolved (proxy-aware).
    return_sources: tuple[IPNetwork, ...] = ()
    # Early release: a lease whose checkout page has polled and then stopped for this long
    # is released (tainted). Zero: off. A page that never polls is never released early.
    heartbeat_timeout: timedelta = timedelta(seconds=60)
    # The waiting room: a ticket expires when not polled for ``ticket_timeout``; customers
    # are told to poll every ``ticket_poll``. ``max_waiting`` zero: no waiting room.
    ticket_timeout: timedelta = timedelta(seconds=10)
    ticket_poll: timedelta = timedelta(seconds=2)
    max_waiting: int = 1000
    # Priorities run from 0 (the default) to ``max_priority``; the last
    # ``reserved_slots_for_priority`` free slots go only to ``priority_threshold`` and above.
    max_priority: int = 9
    reserved_slots_for_priority: int = 0
    priority_threshold: int = 1
    # Reserve paths: registered at the gateway, in rotation only while the load calls for
    # them. The window and target also give the capacity report's recommendation.
    reserve_paths: tuple[str, ...] = ()
    capacity_window: timedelta = timedelta(minutes=15)
    capacity_target: float = 0.01
    # A slot whose last K leases expired with no return on its path, while returns arrive
    # on other paths, is taken out of rotation (0: never).
    slot_health_expiries_to_sideline: int = 5

    def callback_url(self, path: str) -> str:
        return self.base_url.rstrip("/") + path

    @property
    def heartbeat_slack(self) -> timedelta:
        """How stale a recorded heartbeat may get before a poll writes a new one: polls
        within it only read. A lease is released between ``heartbeat_timeout`` and
        ``heartbeat_timeout + heartbeat_slack`` after the last poll, never earlier."""
        return self.heartbeat_timeout / 4
