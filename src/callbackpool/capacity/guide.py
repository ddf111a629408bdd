"""The guide's callback pool, re-implemented for the simulator only.

This is the ``seed`` policy of ``callbackpool simulate``: what a shop built on the guide
does, so that the project's pool can be measured against it. It is not an option of the
production pool, and nothing outside ``capacity`` uses it. As in the guide:

- ``acquireCallback``: any form unlocked or locked longer than the lock timeout (10 min),
  least recently *acquired* first (``sort: {lastUsedAt: 1}``, never-used forms first); none:
  "No forms available", the customer is turned away at once (no waiting room);
- the return: applied to whichever payment holds the path's lock at that moment (its
  ``lockedBy``, stale or not); no lock: "Payment not found". The amount is not checked;
- ``releaseForm`` on a return and on a cancel; nothing on a silent departure;
- the cleanup job, every 5 minutes, unlocks forms locked longer than the lock timeout.
  Payment tokens are never expired: a payment whose lock ran out stays ``pending``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from ..clock import Clock

LOCK_TIMEOUT = timedelta(minutes=10)
CLEANUP_EVERY = timedelta(minutes=5)
_NEVER = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(kw_only=True)
class _Form:
    """A ``CallbackPool`` document."""

    order: int  # insertion order: MongoDB's tie-break among equal sort keys
    callback_path: str
    is_locked: bool = False
    locked_by: str | None = None
    locked_at: datetime | None = None
    last_used_at: datetime | None = None
    usage_count: int = 0

    def lock_expired(self, before: datetime) -> bool:
        return self.locked_at is not None and self.locked_at < before


@dataclass(kw_only=True)
class _Token:
    """A ``PaymentToken`` document."""

    token: str
    amount: int
    callback_path: str
    status: str = "pending"


class GuidePool:
    """The guide's ``CallbackPoolManager`` and payment controller, in memory."""

    def __init__(self, paths: tuple[str, ...], clock: Clock) -> None:
        self.clock = clock
        self.forms = [_Form(order=n, callback_path=path) for n, path in enumerate(paths)]
        self._by_path = {form.callback_path: form for form in self.forms}
        self.tokens: dict[str, _Token] = {}
        self.leases = 0
        self.held_seconds = 0.0

    def acquire(self, token: str, amount: int) -> str | None:
        """``acquireForm``: the callback path leased to ``token``, or None ("No forms
        available. All forms are currently in use.")."""
        now = self.clock.now()
        expired_before = now - LOCK_TIMEOUT
        free = [f for f in self.forms if not f.is_locked or f.lock_expired(expired_before)]
        if not free:
            return None
        form = min(free, key=_least_recently_acquired)
        if form.is_locked:
            self._unlock(form, timed_out=True)
        form.is_locked, form.locked_by, form.locked_at = True, token, now
        form.last_used_at = now
        form.usage_count += 1
        self.tokens[token] = _Token(token=token, amount=amount, callback_path=form.callback_path)
        self.leases += 1
        return form.callback_path

    def handle_return(self, path: str, approved: bool) -> str | None:
        """``handleFormCallback``: the token the return was applied to, or None ("Payment
        not found"). Whoever holds the path's lock now gets it; the amount is not read."""
        form = self._by_path[path]
        holder = self.tokens.get(form.locked_by) if form.is_locked and form.locked_by else None
        if holder is None or holder.status != "pending":
            return None
        holder.status = "completed" if approved else "failed"
        self.release(holder.token)
        return holder.token

    def cancel(self, token: str) -> None:
        """The page's cancel: the payment is cancelled and ``releaseForm`` frees its form."""
        payment = self.tokens[token]
        if payment.status == "pending":
            payment.status = "cancelled"
        self.release(token)

    def release(self, token: str) -> None:
        """``releaseForm``: unlock the form ``token`` holds, if it still holds one."""
        for form in self.forms:
            if form.is_locked and form.locked_by == token:
                self._unlock(form, timed_out=False)
                return

    def sweep(self) -> None:
        """The cleanup job: unlock forms locked longer than the lock timeout."""
        expired_before = self.clock.now() - LOCK_TIMEOUT
        for form in [form for form in self.forms if form.lock_expired(expired_before)]:
            self._unlock(form, timed_out=True)

    def _unlock(self, form: _Form, *, timed_out: bool) -> None:
        """Unlock ``form``, its lock counted as held until now or until it timed out."""
        assert form.locked_at is not None
        until = form.locked_at + LOCK_TIMEOUT if timed_out else self.clock.now()
        self.held_seconds += (until - form.locked_at).total_seconds()
        form.is_locked, form.locked_by, form.locked_at = False, None, None


def _least_recently_acquired(form: _Form) -> tuple[bool, datetime, int]:
    # MongoDB sorts a null ``lastUsedAt`` before every date; equal keys in insertion order.
    used = form.last_used_at
    return (used is not None, used or _NEVER, form.order)
