"""``CallbackPool``: the library's one entry point (docs/design.md), its methods in the
modules of their concern over the state and steps of ``core.py``."""

from __future__ import annotations

from ..domain.gateway import Gateway, StatusQuery
from ..store.port import Store
from .core import StatusHook
from .leasing import Leasing
from .operations import Operations
from .policy import PoolPolicy


class CallbackPool(Leasing, Operations):
    """Leases callback paths to payments and turns gateway returns into payment outcomes.

    ``on_status_change`` is called after every committed payment status change (an exception
    it raises is logged); ``status_query``, for a gateway that offers one, settles returns the
    callback path alone cannot attribute."""

    def __init__(
        self,
        store: Store,
        gateway: Gateway,
        policy: PoolPolicy,
        *,
        on_status_change: StatusHook | None = None,
        status_query: StatusQuery | None = None,
    ) -> None:
        self._store = store
        self._gateway = gateway
        self._policy = policy
        self._status_query = status_query
        self._hooks = [on_status_change] if on_status_change else []
        self._observers = []
