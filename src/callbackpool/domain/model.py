"""Value objects of the callback pool: slots, leases, payments, callbacks. No I/O here."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


class PaymentStatus(enum.StrEnum):
    OPEN = "open"  # created by the shop's server; no slot leased until the customer pays
    PENDING = "pending"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"
    NEEDS_REVIEW = "needs_review"

    @property
    def is_final(self) -> bool:
        return self in (PaymentStatus.COMPLETED, PaymentStatus.FAILED)


class LeaseEnd(enum.StrEnum):
    """Why a lease ended. Every reason but ``callback`` leaves a taint on the slot."""

    CALLBACK = "callback"
    CANCELLED = "cancelled"
    EXPIRED = "expired"
    ADMIN = "admin"
    ABANDONED = "abandoned"  # the checkout page stopped polling (its heartbeat)


class TicketStatus(enum.StrEnum):
    """A place in the waiting room: ``waiting`` until ``granted``, ``cancelled`` or ``expired``."""

    WAITING = "waiting"
    GRANTED = "granted"
    EXPIRED = "expired"
    CANCELLED = "cancelled"


class ReserveAction(enum.StrEnum):
    """What happened to the reserve paths."""

    ACTIVATED = "activated"
    DRAINED = "drained"


class Admission(enum.StrEnum):
    """How a request for a slot was answered (counted per minute)."""

    LEASED = "leased"  # a slot at once
    WAITED = "waited"  # a ticket in the waiting room
    REFUSED = "refused"  # turned away
    GRANTED = "granted"  # a waiting ticket's turn came (counted as a request when it waited)


class CallbackOutcome(enum.StrEnum):
    RECEIVED = "received"  # stored, not yet resolved (a crash between the two steps)
    APPLIED = "applied"
    DUPLICATE = "duplicate"
    UNMATCHED = "unmatched"
    AMBIGUOUS = "ambiguous"
    REJECTED = "rejected"


@dataclass(frozen=True, kw_only=True)
class LineItem:
    code: str
    quantity: int
    unit_price: int  # minor units

    @property
    def total(self) -> int:
        return self.quantity * self.unit_price


@dataclass(frozen=True, kw_only=True)
class Lease:
    """One payment's hold on one slot. Ids strictly increase: they are fencing tokens."""

    id: int
    slot_id: int
    path: str
    token: str
    amount: int
    acquired_at: datetime
    expires_at: datetime
    ended_at: datetime | None = None
    end_reason: LeaseEnd | None = None
    taint_until: datetime | None = None
    # Set once the checkout page polls: the lease is abandoned if no poll renews it by then.
    heartbeat_until: datetime | None = None

    @property
    def is_live(self) -> bool:
        return self.ended_at is None


def customer_key(customer: Mapping[str, Any]) -> str | None:
    """Whom a payment counts against for the customer's cap: the e-mail address, trimmed and
    lower-cased; None without one."""
    email = customer.get("email")
    return (email.strip().lower() or None) if isinstance(email, str) else None


@dataclass(frozen=True, kw_only=True)
class Payment:
    token: str
    amount: int
    currency: str
    status: PaymentStatus
    created_at: datetime
    updated_at: datetime
    items: tuple[LineItem, ...] = ()
    customer: Mapping[str, Any] = field(default_factory=dict)
    late: bool = False
    lease_id: int | None = None
    callback_path: str | None = None
    expires_at: datetime | None = None
    pn_ref: str | None = None
    order_id: str | None = None
    auth_code: str | None = None
    card_type: str | None = None
    last4: str | None = None
    result_code: str | None = None
    error_message: str | None = None
    callback_id: int | None = None
    # A payment the shop's server created: the shop's names for it and where the customer
    # goes back to (None for the checkout page's own payments).
    id: str = ""
    order_reference: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)
    success_url: str | None = None
    cancel_url: str | None = None
    max_attempts: int = 1
    idempotency_key: str | None = None
    request_hash: str | None = None

    @property
    def customer_key(self) -> str | None:
        return customer_key(self.customer)

    @property
    def hosted(self) -> bool:
        """Created by the shop's server, paid on the hosted payment page."""
        return self.success_url is not None


@dataclass(frozen=True, kw_only=True)
class Event:
    """A payment's announced status change, from the outbox (docs/integrating.md#events):
    ``payment.completed`` and the like, the ``sequence``-th of its payment (from 1), with the
    payment as the shop read it at that moment (``data``, the JSON of ``GET
    /api/v1/payments/{id}``). ``seq`` orders every payment's events together."""

    seq: int
    id: str
    type: str
    payment_id: str
    sequence: int
    reason: str
    created_at: datetime
    data: Mapping[str, Any]


@dataclass(frozen=True, kw_only=True)
class Candidate:
    """A payment a callback on a slot could belong to: the live lease's or a taint's."""

    lease: Lease
    payment: Payment


@dataclass(frozen=True, kw_only=True)
class NewCallback:
    """A gateway return as it arrived, stored before anything acts on it."""

    path: str
    method: str
    params: tuple[tuple[str, str], ...]
    client_addr: str | None
    receipt: str | None = None  # the key of the return's success page (pool.receipt)


@dataclass(frozen=True, kw_only=True)
class CallbackRecord(NewCallback):
    """A stored return, and what became of it."""

    id: int
    received_at: datetime
    outcome: CallbackOutcome
    pn_ref: str | None = None
    amount: int | None = None
    approved: bool | None = None
    payment_token: str | None = None
    detail: str | None = None
    candidates: tuple[str, ...] = ()
    redirect: str | None = None
    duplicate_of: int | None = None
    settled_at: datetime | None = None
    settled_by: str | None = None
    # The gateway's status query: how often it was asked about this return, and its answer.
    query_attempts: int = 0
    query_answer: str | None = None

    @property
    def ref(self) -> str:
        """The support reference shown to the customer."""
        return callback_ref(self.id)


@dataclass(frozen=True, kw_only=True)
class Attempt:
    """One try at the gateway for a payment: a lease, and the return applied to it if any."""

    lease_id: int
    started_at: datetime
    ended_at: datetime | None
    end_reason: LeaseEnd | None
    callback_id: int | None = None
    params: tuple[tuple[str, str], ...] = ()
    returned_at: datetime | None = None


def callback_ref(callback_id: int) -> str:
    return f"CB-{callback_id}"


def callback_id_of(ref: str) -> int | None:
    """The callback a support reference (``CB-12``) names, or None when it names none."""
    number = ref.removeprefix("CB-")
    if number == ref or not number.isascii() or not number.isdigit() or len(number) > 18:
        return None
    return int(number)


@dataclass(frozen=True, kw_only=True)
class SlotHealth:
    """How a slot's path has been doing. ``silent_expiries``: leases that ran out with no
    return (a late return takes one back); ``expiry_streak``: those in a row since the last
    verified return on the path (docs/design.md#reserve-paths-and-slot-health)."""

    approvals: int = 0
    declines: int = 0
    silent_expiries: int = 0
    expiry_streak: int = 0
    last_return_at: datetime | None = None


@dataclass(frozen=True, kw_only=True)
class SlotView:
    """A slot as the status report shows it."""

    id: int
    path: str
    active: bool
    usage_count: int
    last_acquired_at: datetime | None
    last_released_at: datetime | None
    lease: Lease | None
    taints: int
    # A reserve path, and whether it is out of rotation right now.
    reserve: bool = False
    standby: bool = False
    # Taken out of rotation (slot health, or an operator) until restored.
    sidelined_at: datetime | None = None
    sidelined_by: str | None = None
    sidelined_reason: str | None = None
    health: SlotHealth = field(default_factory=SlotHealth)

    @property
    def sidelined(self) -> bool:
        return self.sidelined_at is not None

    @property
    def in_rotation(self) -> bool:
        """Whether new leases may be handed this slot."""
        return self.active and self.sidelined_at is None and not self.standby


@dataclass(frozen=True, kw_only=True)
class StatusChange:
    """What a hook receives after a payment's status changed and the change was committed."""

    token: str
    previous: PaymentStatus
    status: PaymentStatus
    at: datetime
    late: bool = False
    callback_id: int | None = None
    reason: str | None = None


@dataclass(frozen=True, kw_only=True)
class NewTicket:
    """A request for a slot that has to wait: the order it will become, and its rank.
    ``ticket`` is the handle the customer polls with."""

    ticket: str
    priority: int
    amount: int
    currency: str
    items: tuple[LineItem, ...]
    customer: Mapping[str, Any]
    expires_at: datetime
    # A shop's open payment the ticket waits for (docs/integrating.md); None: a new payment.
    open_payment: str | None = None


@dataclass(frozen=True, kw_only=True)
class Ticket(NewTicket):
    """A place in the waiting room (``id`` orders arrivals)."""

    id: int
    status: TicketStatus
    created_at: datetime
    payment_token: str | None = None
    ended_at: datetime | None = None


@dataclass(frozen=True, kw_only=True)
class ReserveEvent:
    """A change of the reserve paths' state, with why it was made."""

    at: datetime
    action: ReserveAction
    paths: tuple[str, ...]
    reason: str


@dataclass(frozen=True, kw_only=True)
class AdmissionCounts:
    """Requests for a slot over a window, and the most slots busy at once after a lease."""

    leased: int = 0
    waited: int = 0
    refused: int = 0
    granted: int = 0
    peak_busy: int = 0

    @property
    def requests(self) -> int:
        return self.leased + self.waited + self.refused

    @property
    def not_served_at_once(self) -> float:
        """The share of requests that waited or were turned away."""
        return (self.waited + self.refused) / self.requests if self.requests else 0.0


@dataclass(frozen=True, kw_only=True)
class HoldingTimes:
    """Leases that ended over a window, and how long they held their slots in all."""

    ended: int
    total_seconds: float

    @property
    def mean_seconds(self) -> float | None:
        return self.total_seconds / self.ended if self.ended else None


class ReviewDecision(enum.StrEnum):
    """What an operator decided about a payment in review (docs/design.md#payment-states)."""

    ATTRIBUTED = "attributed"  # a stored return belongs to one of its candidates
    NONE = "none"  # a stored return belongs to none of its candidates
    PAYMENT = "payment"  # a payment in review ends without a return (expired or failed)


@dataclass(frozen=True, kw_only=True)
class ReviewChange:
    """One payment status change a review made."""

    token: str
    previous: PaymentStatus
    status: PaymentStatus


@dataclass(frozen=True, kw_only=True)
class NewReview:
    """An operator's decision, with who made it and why."""

    decision: ReviewDecision
    callback_id: int | None
    payment_token: str | None
    others: PaymentStatus | None
    decided_by: str
    reason: str
    changes: tuple[ReviewChange, ...] = ()


@dataclass(frozen=True, kw_only=True)
class Review(NewReview):
    """A decision as recorded, and when."""

    id: int
    decided_at: datetime

    @property
    def ref(self) -> str:
        return f"R-{self.id}"


@dataclass(frozen=True, kw_only=True)
class LeaseSpan:
    """When a lease held its slot, and how it ended (None: it still holds it)."""

    lease_id: int
    path: str
    acquired_at: datetime
    ended_at: datetime | None
    end_reason: LeaseEnd | None
