"""The callback pool: leasing callback paths to payments and resolving gateway returns.

This is the core. It talks to a ``Store`` (ports.py) and a ``Gateway`` (domain/gateway.py)
and never to a database driver or the web framework. ``CallbackPool`` (callback_pool.py) is
its whole API; each concern it hands work to is a module of its own:

- ``policy``: the settings it runs by; ``results``: the value objects it answers with;
- ``core``: what every part shares (the write transaction, status changes, lease ends);
- ``checkout`` with ``pricing`` and ``reserve``: new payments, the waiting room, reserve
  paths; ``payments``: a payment read, polled or cancelled;
- ``callbacks`` with ``settlement`` and ``gateway_query``: gateway returns resolved;
- ``sweeping``: the sweep and the operator's release; ``reports``: read-only views;
  ``review``: operators' decisions and slots taken out of rotation.
"""

from .callback_pool import CallbackPool
from .core import SLOT_HEALTH, Observer, StatusHook
from .gateway_query import QUERY_ATTEMPTS
from .policy import IPNetwork, PoolPolicy
from .results import (
    CallbackResult,
    CapacityReport,
    Checkout,
    FormConfig,
    PoolHistory,
    PoolStatus,
    ReserveStatus,
    ReviewItem,
    ReviewQueue,
    SweepReport,
    Waiting,
)
from .review import REVIEW_OTHERS

__all__ = [
    "QUERY_ATTEMPTS",
    "REVIEW_OTHERS",
    "SLOT_HEALTH",
    "CallbackPool",
    "CallbackResult",
    "CapacityReport",
    "Checkout",
    "FormConfig",
    "IPNetwork",
    "Observer",
    "PoolHistory",
    "PoolPolicy",
    "PoolStatus",
    "ReserveStatus",
    "ReviewItem",
    "ReviewQueue",
    "StatusHook",
    "SweepReport",
    "Waiting",
]
