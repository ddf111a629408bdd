"""The callback pool: leasing callback paths to payments and resolving gateway returns.

This is the core. It talks to a ``Store`` (store/port.py) and a ``Gateway``
(domain/gateway.py) and never to a database driver or the web framework. ``CallbackPool``
is its whole API, one class over a module a concern:

- ``core``: the state and the steps every concern shares (the write transaction, status
  changes, lease ends); ``policy``: the settings; ``results``: the value objects answered;
- ``leasing``: new payments, the waiting room, reserve paths, a payment read, polled or
  cancelled;
- ``returns``: gateway returns stored, resolved and settled, and the status query;
- ``operations``: the sweep and manual release, reports, operators' decisions.
"""

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
