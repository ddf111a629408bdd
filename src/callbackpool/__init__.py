"""callbackpool: lease pre-registered callback URLs to pending payments, so that the URL a
hosted payment form's return arrives on names the payment.

The whole API::

    settings = load_settings("paygistix-forms.json")
    pool = build_pool(settings)                     # opens the store, migrates, loads paths
    checkout = pool.create_payment(items={"WDF": 3}, customer={"email": "a@example.com"})
    checkout.form.fields                            # what the browser posts to the gateway
    result = pool.handle_callback(path, params)     # the gateway's return → outcome, redirect
    pool.cancel_payment(token); pool.get_payment(token)
    pool.poll_payment(token)                        # the checkout page's poll: a heartbeat
    pool.create_payment(amount=1000, wait=True)     # Checkout, or Waiting (a ticket)
    pool.poll_ticket(ticket); pool.cancel_ticket(ticket)
    pool.sweep(); pool.status(); pool.release(path=...); pool.usage()
    # The shop's server's payments (docs/integrating.md): open until the customer pays.
    payment, created = pool.create_shop_payment(ShopPaymentRequest(...), idempotency_key=k)
    pool.pay(payment.token, wait=True); pool.shop_payment(payment.id); pool.shop_payments()
    pool.events(after=last_event_id, limit=100)     # the outbox: each status change's Event

Every error a call raises is a ``CallbackPoolError``; the kinds worth telling apart are
exported here (domain/errors.py).
"""

from .compose import build_pool
from .config import Settings, load_settings
from .domain.errors import (
    CallbackPoolError,
    ConfigurationError,
    Conflict,
    InvalidRequest,
    NotFound,
    PoolExhausted,
    StoreUnavailable,
    TooManyLeases,
)
from .domain.model import CallbackOutcome, Event, Payment, PaymentStatus, StatusChange
from .pool import CallbackPool, CallbackResult, Checkout, Waiting
from .pool.shop import ShopPaymentRequest

# Test helpers are in callbackpool.testing; everything else is the package's own business.
__all__ = [
    "CallbackOutcome",
    "CallbackPool",
    "CallbackPoolError",
    "CallbackResult",
    "Checkout",
    "ConfigurationError",
    "Conflict",
    "Event",
    "InvalidRequest",
    "NotFound",
    "Payment",
    "PaymentStatus",
    "PoolExhausted",
    "Settings",
    "ShopPaymentRequest",
    "StatusChange",
    "StoreUnavailable",
    "TooManyLeases",
    "Waiting",
    "build_pool",
    "load_settings",
]
