"""``CallbackPool``: the library's one entry point (docs/design.md), its methods in the
modules of their concern over the state and steps of ``core.py``."""

from __future__ import annotations

from .operations import Operations
from .shop import ShopPayments


class CallbackPool(ShopPayments, Operations):
    """Leases callback paths to payments and turns gateway returns into payment outcomes.
    ``on_status_change`` is called after every committed payment status change (an exception
    it raises is logged); ``status_query`` settles returns the path alone cannot attribute."""
