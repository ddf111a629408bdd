"""The callback pool, the core: ``CallbackPool`` is its whole API, one class over a module a
concern (docs/architecture.md lists them). It talks to a ``Store`` and a ``Gateway``, never
to a database driver or the web framework."""

from .callback_pool import CallbackPool
from .core import StatusHook
from .policy import IPNetwork, PoolPolicy
from .results import CallbackResult, Checkout, Waiting

__all__ = [
    "CallbackPool",
    "CallbackResult",
    "Checkout",
    "IPNetwork",
    "PoolPolicy",
    "StatusHook",
    "Waiting",
]
