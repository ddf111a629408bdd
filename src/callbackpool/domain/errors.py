"""Errors of the callback pool; each docstring doubles as the default message. A caller
tells apart only the kinds the package exports; the subclasses say which thing or which
conflict it was.
"""

from __future__ import annotations

from datetime import datetime


class CallbackPoolError(Exception):
    """The callback pool could not do what was asked."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())

    @property
    def message(self) -> str:
        return str(self)


class ConfigurationError(CallbackPoolError):
    """The configuration is invalid."""

    def __init__(self, key: str, problem: str) -> None:
        self.key = key
        self.problem = problem
        super().__init__(f"configuration key {key!r}: {problem}")


class InvalidRequest(CallbackPoolError):
    """The request is invalid."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}")


class NotFound(CallbackPoolError):
    """Not found."""


class Conflict(CallbackPoolError):
    """The request does not fit the state it found; nothing was changed."""


class InvalidPayment(InvalidRequest):
    """The payment request is invalid."""


class _RetryLater:
    """What a refusal that ends at ``retry_at`` (None: unknown) says about trying again."""

    def __init__(self, retry_at: datetime | None, now: datetime) -> None:
        self.retry_at = retry_at
        self.now = now
        super().__init__()

    @property
    def retry_after_seconds(self) -> int:
        """Whole seconds until the earliest lease can end, at least 1 (60 when unknown)."""
        if self.retry_at is None:
            return 60
        return max(1, int((self.retry_at - self.now).total_seconds() + 0.999))


class PoolExhausted(_RetryLater, CallbackPoolError):
    """No payment forms are available. All forms are currently in use. Please try again shortly."""


class TooManyLeases(_RetryLater, CallbackPoolError):
    """This customer already has as many payments in progress as allowed. Finish or cancel
    one, or try again shortly."""


class UnknownPayment(NotFound):
    """Payment not found."""


class UnknownTicket(NotFound):
    """Ticket not found."""


class TicketEnded(Conflict):
    """The ticket is no longer in the waiting room."""

    def __init__(self, status: str) -> None:
        self.status = status
        reason = {
            "expired": "it expired: it was not polled in time",
            "cancelled": "it was cancelled",
            "granted": "it was granted a slot already",
        }.get(status, status)
        super().__init__(f"the ticket is no longer waiting: {reason}")


class UnknownSlot(NotFound):
    """No callback path of that name is in the pool."""


class UnknownCallback(NotFound):
    """No stored return has that reference."""


class NotUnderReview(Conflict):
    """There is nothing to review there: it was resolved already, or never needed it."""


class InvalidReview(InvalidRequest):
    """The review decision is invalid."""


class PaymentNotPending(Conflict):
    """The payment is no longer pending (or open, where that was asked)."""

    def __init__(self, status: str, expected: str = "pending") -> None:
        self.status = status
        super().__init__(f"the payment is {status}, not {expected}")


class IdempotencyConflict(Conflict):
    """This Idempotency-Key was used for another request: send the same body, or a new key."""


class IllegalTransition(Conflict):
    """That payment status change is not allowed."""

    def __init__(self, current: str, requested: str, *, subject: str = "payment") -> None:
        super().__init__(f"a {subject} cannot go from {current} to {requested}")


class PaymentChanged(Conflict):
    """The payment changed while this was being decided; nothing was applied. Try again."""


class NothingToRelease(Conflict):
    """There is no live lease to release."""


class StoreUnavailable(CallbackPoolError):
    """The database is unavailable. Please try again shortly."""

    retry_after_seconds = 5


class StoreError(CallbackPoolError):
    """The database refused the operation."""


class MigrationError(CallbackPoolError):
    """The database schema could not be brought up to date."""
