"""The callback pool: leasing callback paths to payments and resolving gateway returns.

This is the core. It talks to a ``Store`` (ports.py) and a ``Gateway`` (domain/gateway.py)
and never to a database driver or the web framework. ``CallbackPool`` (callback_pool.py) is
its whole API; ``policy`` holds the settings it runs by and ``results`` the value objects
it answers with.
"""

from .callback_pool import (
    QUERY_ATTEMPTS,
    REVIEW_OTHERS,
    SLOT_HEALTH,
    CallbackPool,
    Observer,
    StatusHook,
)
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
