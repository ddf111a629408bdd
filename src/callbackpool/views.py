"""The JSON of every answer, as models built from the core's value objects: by their
attributes (``PaymentOut.model_validate(payment)``), or by ``of`` where the answer adds
figures (``PoolStatsOut.of(status)``). camelCase keys, times in ISO 8601 UTC.

One module, so that the CLI's ``--json`` and the HTTP API give the same document for the
same thing: the API answers these models, the CLI prints their ``model_dump``. Pydantic and
the core only; no I/O, no web framework.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any, Self

from pydantic import (
    AfterValidator,
    AliasPath,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
)
from pydantic.alias_generators import to_camel

from .analytics import PoolSeries
from .compose import catalogue, form_action_url
from .config import Settings
from .domain.model import (
    CallbackOutcome,
    CallbackRecord,
    Event,
    Lease,
    Payment,
    Review,
    SlotView,
    callback_ref,
)
from .domain.model import callback_id_of as model_callback_id_of
from .domain.money import format_amount
from .pool import Checkout
from .pool.documents import AttemptResult, event_document, iso, payment_document
from .pool.results import PoolStatus, ReviewItem, ReviewQueue, SweepReport
from .store.tx import SlotSync, UsageRow

if TYPE_CHECKING:  # the simulator is not needed to show the pool's own reports
    from .capacity.simulate import PolicyReport, Workload


def slot_state(slot: SlotView, at: datetime) -> str:
    """``locked``, ``stuck`` (its lease is past expiry and no sweep has ended it yet),
    ``available``, ``sidelined`` (free, but out of rotation until an operator restores it),
    ``standby`` (a reserve path out of rotation, and free) or ``inactive`` (no longer in the
    configuration, and free)."""
    if slot.lease is not None:
        return "stuck" if slot.lease.expires_at <= at else "locked"
    if not slot.active:
        return "inactive"
    if slot.sidelined:
        return "sidelined"
    return "standby" if slot.standby else "available"


def _iso_if_moment(value: object) -> object:
    return iso(value) if isinstance(value, datetime) else value


# A moment of an answer, given as a ``datetime``: ISO 8601 UTC (``iso``).
Time = Annotated[str | None, BeforeValidator(_iso_if_moment)]


class Out(BaseModel):
    """An answer: its fields in snake_case, its JSON (``by_alias``) in camelCase. Built from
    a value object (``model_validate``) by the attributes of the fields' names or
    ``validation_alias``; enums become their values."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, frozen=True, from_attributes=True
    )


class SuccessOut(Out):
    """An answer that starts, as the guide's API did, with ``success: true``."""

    success: bool = True


# --- payments (the guide's API) --------------------------------------------------------------


class FormConfigOut(Out):
    form_action_url: str
    method: str
    merchant_id: str
    form_id: str
    form_hash: str
    callback_path: str
    callback_url: str
    fields: dict[str, str]


class CreateTokenOut(SuccessOut):
    token: str
    status: str
    expires_at: Time
    form_config: FormConfigOut

    @classmethod
    def of(cls, checkout: Checkout) -> CreateTokenOut:
        form = checkout.form
        return cls(
            token=checkout.payment.token,
            status=checkout.payment.status,
            expires_at=checkout.payment.expires_at,
            form_config=FormConfigOut(
                form_action_url=form.action_url,
                method=form.method,
                merchant_id=form.fields.get("merchantID", ""),
                form_id=form.fields.get("formID", ""),
                form_hash=form.fields.get("hash", ""),
                callback_path=form.callback_path,
                callback_url=form.callback_url,
                fields=dict(form.fields),
            ),
        )


class WaitingOut(SuccessOut):
    """A place in the waiting room (202): poll ``GET /ticket/{ticket}`` after ``retryAfter``
    seconds; a ticket not polled in time is dropped."""

    ticket: str
    position: int
    retry_after: int = Field(validation_alias="retry_after_seconds")


class PaymentStatusOut(SuccessOut):
    token: str
    status: str
    amount: int
    currency: str
    transaction_id: str | None = Field(validation_alias="pn_ref")
    error_message: str | None
    late: bool
    expires_at: Time


class CancelledOut(SuccessOut):
    status: str


class TicketCancelledOut(CancelledOut):
    status: str = "cancelled"


class CatalogueItemOut(Out):
    code: str
    description: str
    price: int
    price_text: str


class ConfigOut(SuccessOut):
    """The public form settings (everything here is posted by the browser anyway)."""

    form_action_url: str
    method: str = "POST"
    merchant_id: str | None
    form_id: str
    form_hash: str
    currency: str
    items: list[CatalogueItemOut]
    lock_timeout_minutes: float
    max_amount: int | None
    sandbox: bool

    @classmethod
    def of(cls, settings: Settings) -> ConfigOut:
        currency = settings.currency
        return cls(
            form_action_url=form_action_url(settings),
            merchant_id=settings.merchant_id,
            form_id=settings.form.form_id,
            form_hash=settings.form.form_hash,
            currency=currency,
            items=[
                CatalogueItemOut(**asdict(item), price_text=format_amount(item.price, currency))
                for item in catalogue(settings)
            ],
            lock_timeout_minutes=settings.lock_timeout_minutes,
            max_amount=settings.max_amount,
            sandbox=settings.sandbox.enabled,
        )


# --- the pool's status -----------------------------------------------------------------------


class ReserveEventOut(Out):
    at: Time
    action: str
    paths: list[str]
    reason: str


class ReserveOut(Out):
    """The reserve paths: ``none``, ``idle``, ``active`` or ``draining``, and why (their
    latest changes, newest first)."""

    state: str
    paths: list[str]
    in_rotation: int
    draining: int
    events: list[ReserveEventOut]


def _rounded(digits: int) -> AfterValidator:
    return AfterValidator(lambda value: None if value is None else round(value, digits))


def _read_from(*path: str) -> Any:
    """A field read from an attribute of an attribute of the value object."""
    return Field(validation_alias=AliasPath(*path))


class CapacityOut(Out):
    """The capacity window: requests and holding times seen, and Erlang B's reading of
    them (None until a lease has ended in the window)."""

    window_seconds: Annotated[float, BeforeValidator(timedelta.total_seconds)] = Field(
        validation_alias="window"
    )
    requests: int = _read_from("counts", "requests")
    leased: int = _read_from("counts", "leased")
    waited: int = _read_from("counts", "waited")
    refused: int = _read_from("counts", "refused")
    granted: int = _read_from("counts", "granted")
    not_served_at_once: Annotated[float, _rounded(6)] = _read_from("counts", "not_served_at_once")
    arrivals_per_hour: Annotated[float, _rounded(2)]
    mean_hold_seconds: Annotated[float | None, _rounded(1)] = _read_from("holding", "mean_seconds")
    offered_erlangs: Annotated[float | None, _rounded(4)]
    slots: int
    target: float
    predicted_turned_away: Annotated[float | None, _rounded(6)]
    slots_needed: int | None


class SlotHealthOut(Out):
    """A slot's health figures and whether it is in rotation (the slot-health rule)."""

    path: str
    in_rotation: bool
    sidelined_at: Time
    sidelined_by: str | None
    sidelined_reason: str | None
    approvals: int
    declines: int
    silent_expiries: int
    expiry_streak: int
    last_return_at: Time
    seconds_since_last_return: int | None

    @classmethod
    def of(cls, slot: SlotView, at: datetime) -> SlotHealthOut:
        health = slot.health
        last = health.last_return_at
        return cls(
            path=slot.path,
            in_rotation=slot.in_rotation,
            sidelined_at=slot.sidelined_at,
            sidelined_by=slot.sidelined_by,
            sidelined_reason=slot.sidelined_reason,
            approvals=health.approvals,
            declines=health.declines,
            silent_expiries=health.silent_expiries,
            expiry_streak=health.expiry_streak,
            last_return_at=last,
            seconds_since_last_return=None if last is None else round((at - last).total_seconds()),
        )


class _SlotUse(Out):
    path: str
    active: bool
    state: str
    is_locked: bool
    lease_id: int | None
    locked_by: str | None
    locked_at: Time
    expires_at: Time
    usage_count: int
    last_used_at: Time
    last_released_at: Time
    taints: int
    reserve: bool
    standby: bool


# Pydantic orders the fields of the bases from the last: ``_SlotUse``'s, then the health's.
class HandlerOut(SlotHealthOut, _SlotUse):
    """A slot: its state, its lease, its use, and its health (``SlotHealthOut``)."""

    @classmethod
    def of(cls, slot: SlotView, at: datetime) -> HandlerOut:
        lease = slot.lease
        return cls(
            **dict(SlotHealthOut.of(slot, at)),
            active=slot.active,
            state=slot_state(slot, at),
            is_locked=lease is not None,
            lease_id=lease.id if lease else None,
            locked_by=lease.token if lease else None,
            locked_at=lease.acquired_at if lease else None,
            expires_at=lease.expires_at if lease else None,
            usage_count=slot.usage_count,
            last_used_at=slot.last_acquired_at,
            last_released_at=slot.last_released_at,
            taints=slot.taints,
            reserve=slot.reserve,
            standby=slot.standby,
        )


class PoolStatsOut(Out):
    """The guide's ``getPoolStatus()`` document, with the figures it lacked
    (``callbackpool status --json``)."""

    at: Time
    total: int
    available: int
    locked: int
    stuck: int
    tainted: int
    inactive: int
    out_of_rotation: int
    standby: int
    waiting: int
    reserve: ReserveOut | None
    capacity: CapacityOut | None
    handlers: list[HandlerOut]

    @classmethod
    def of(cls, status: PoolStatus) -> PoolStatsOut:
        return cls(
            at=status.at,
            total=status.total,
            available=status.available,
            locked=status.locked,
            stuck=status.stuck,
            tainted=status.tainted,
            inactive=status.inactive,
            out_of_rotation=status.out_of_rotation,
            standby=status.standby,
            waiting=status.waiting,
            reserve=status.reserve,
            capacity=status.capacity,
            handlers=[HandlerOut.of(slot, status.at) for slot in status.slots],
        )


class PoolStatsResponse(SuccessOut):
    stats: PoolStatsOut


class HealthOut(Out):
    """Per-slot health, and the rule's threshold (0: the rule is off)."""

    at: Time
    out_of_rotation: int
    expiries_to_sideline: int
    handlers: list[SlotHealthOut]

    @classmethod
    def of(cls, status: PoolStatus, expiries_to_sideline: int) -> HealthOut:
        return cls(
            at=status.at,
            out_of_rotation=status.out_of_rotation,
            expiries_to_sideline=expiries_to_sideline,
            handlers=[SlotHealthOut.of(slot, status.at) for slot in status.slots],
        )


class SlotRotationOut(SuccessOut):
    """A slot taken out of rotation or put back; ``changed`` is false if it was already."""

    path: str
    changed: bool
    in_rotation: bool


# --- leases and payments ---------------------------------------------------------------------


class LeaseOut(Out):
    lease_id: int = Field(validation_alias="id")
    path: str
    locked_by: str = Field(validation_alias="token")
    amount: int
    locked_at: Time = Field(validation_alias="acquired_at")
    expires_at: Time


class PaymentOut(Out):
    token: str
    status: str
    amount: int
    currency: str
    callback_path: str | None
    lease_id: int | None
    created_at: Time
    expires_at: Time
    updated_at: Time


class StuckOut(Out):
    """Leases past their expiry that no sweep has ended."""

    at: Time
    leases: list[LeaseOut]


class OrphansOut(Out):
    """Payments pending longer than ``olderThanSeconds``."""

    at: Time
    older_than_seconds: float
    payments: list[PaymentOut]

    @classmethod
    def of(cls, now: datetime, age: timedelta, payments: Sequence[Payment]) -> OrphansOut:
        return cls(at=now, older_than_seconds=age.total_seconds(), payments=payments)


class UsageRowOut(Out):
    path: str
    active: bool
    usage_count: int
    callbacks: int
    expiries: int
    last_used_at: Time = Field(validation_alias="last_acquired_at")
    last_released_at: Time


class UsageOut(Out):
    """Usage per slot, and the guide's ``avgUsage`` (over the active slots)."""

    average_usage: float
    handlers: list[UsageRowOut]

    @classmethod
    def of(cls, rows: Sequence[UsageRow]) -> UsageOut:
        active = [row.usage_count for row in rows if row.active]
        return cls(average_usage=sum(active) / len(active) if active else 0.0, handlers=rows)


# --- the CLI's set-up and housekeeping -------------------------------------------------------


class InitOut(Out):
    """``callbackpool init``: the migrations applied, what loading the paths changed, and
    how many are active."""

    migrations: list[str]
    added: list[str]
    reactivated: list[str]
    deactivated: list[str]
    active: int

    @classmethod
    def of(cls, applied: Sequence[str], sync: SlotSync, active: int) -> InitOut:
        return cls(migrations=applied, **asdict(sync), active=active)


class MigrationOut(Out):
    name: str
    sql: str


class MigrateOut(Out):
    """``callbackpool migrate``: what it applied, or (``--dry-run``) what it would."""

    dry_run: bool
    applied: list[str]
    pending: list[MigrationOut]

    @classmethod
    def of(
        cls, dry_run: bool, applied: Sequence[str], pending: Sequence[tuple[str, str]]
    ) -> MigrateOut:
        return cls(
            dry_run=dry_run,
            applied=list(applied),
            pending=[MigrationOut(name=name, sql=sql) for name, sql in pending],
        )


class CleanupOut(Out):
    """``callbackpool cleanup``: what the sweep did, and the leases released by hand."""

    expired: int
    taints_dropped: int
    callbacks_resolved: int
    tickets_expired: int
    reserve: ReserveEventOut | None
    released: list[LeaseOut]

    @classmethod
    def of(cls, report: SweepReport, released: Sequence[Lease]) -> CleanupOut:
        return cls(**asdict(report), released=released)


class ReleasedOut(Out):
    released: LeaseOut


# --- capacity ----------------------------------------------------------------------------------


class PlanRowOut(Out):
    """One line of ``callbackpool plan``: what N slots carry at the target."""

    slots: int
    offered_erlangs: Annotated[float, _rounded(4)]
    max_arrivals_per_hour: Annotated[float, _rounded(2)]


class PlanTableOut(Out):
    hold_seconds: float
    target: float
    rows: list[PlanRowOut]


class PlanOut(Out):
    """``callbackpool plan --slots N`` and/or ``--arrivals R``: only the figures asked for
    (a figure left None is not in the document)."""

    hold_seconds: float
    target: float
    slots: int | None = None
    arrivals_per_hour: float | None = None
    offered_erlangs: float
    slots_needed: int | None = None
    max_arrivals_per_hour: float | None = None
    turned_away: float | None = None

    @model_serializer(mode="wrap")
    def _figures_asked_for(self, serialize: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return {key: value for key, value in serialize(self).items() if value is not None}


class WorkloadOut(Out):
    arrivals_per_hour: float
    customers: int
    seed: int
    slots: int
    uniform_amount: bool
    patience_seconds: float = Field(validation_alias="patience")
    poll_seconds: float


class PolicyOut(Out):
    """One policy's figures on the workload, and the most it carries at the target."""

    arrivals: int = _read_from("result", "arrivals")
    admitted: int = _read_from("result", "admitted")
    turned_away: int = _read_from("result", "turned_away")
    turned_away_share: Annotated[float, _rounded(6)] = _read_from("result", "turned_away_share")
    waited: int = _read_from("result", "waited")
    mean_wait_seconds: Annotated[float, _rounded(3)] = _read_from("result", "mean_wait")
    p95_wait_seconds: Annotated[float, _rounded(3)] = _read_from("result", "p95_wait")
    mean_hold_seconds: Annotated[float, _rounded(1)] = _read_from("result", "mean_hold")
    approved: int = _read_from("result", "approved")
    misattributed: int = _read_from("result", "misattributed")
    lost: int = _read_from("result", "lost")
    needs_review: int = _read_from("result", "needs_review")
    unmatched_returns: int = _read_from("result", "unmatched")
    max_arrivals_per_hour: Annotated[float | None, _rounded(1)]


class SimulationOut(Out):
    """``callbackpool simulate``: the workload, each policy's figures, and how the project's
    pool compares with the guide's and with the oracle."""

    workload: WorkloadOut
    target: float
    policies: dict[str, PolicyOut]
    comparison: dict[str, float]

    @classmethod
    def of(
        cls, workload: Workload, target: float, reports: Mapping[str, PolicyReport]
    ) -> SimulationOut:
        policies = {name: PolicyOut.model_validate(report) for name, report in reports.items()}
        best = {name: policy.max_arrivals_per_hour for name, policy in policies.items()}
        comparison: dict[str, float] = {}
        ours = best.get("callbackpool")
        for other, key in (("seed", "callbackpoolOverSeed"), ("oracle", "callbackpoolOverOracle")):
            theirs = best.get(other)
            if ours and theirs:
                comparison[key] = round(ours / theirs, 3)
        return cls(workload=workload, target=target, policies=policies, comparison=comparison)


# --- stored returns ----------------------------------------------------------------------------

MASK = "****"
# Parameters an operator never sees in clear, whatever sends them: a card's expiry date, and
# anything that could be a card number or its security code (a genuine return carries only
# Last4 and CardType; a forged or broken one might carry more).
_MASKED_NAMES = frozenset(
    {"expdate", "exp_date", "expiry", "expirydate", "cardnumber", "card_number", "ccnumber",
     "cardnum", "pan", "cvv", "cvv2", "cvc", "cvc2", "cid"}
)  # fmt: skip
_CARD_NUMBER = re.compile(r"\d[\d -]{11,22}\d")


def masked_params(params: Iterable[tuple[str, str]]) -> list[list[str]]:
    """A return's parameters as an operator sees them: ``ExpDate`` and anything that looks
    like a card number masked, everything else as received (pages escape it)."""
    shown = []
    for name, value in params:
        hidden = name.strip().lower() in _MASKED_NAMES or _looks_like_card_number(value)
        shown.append([name, MASK if hidden and value else value])
    return shown


def _looks_like_card_number(value: str) -> bool:
    match = _CARD_NUMBER.search(value)
    if match is None:
        return False
    digits = [int(c) for c in match.group() if c.isdigit()]
    return 13 <= len(digits) <= 19


class CallbackOut(Out):
    """A stored return, its raw parameters masked (``masked_params``)."""

    id: int
    ref: str
    path: str
    method: str
    received_at: Time
    client_addr: str | None
    outcome: str
    pn_ref: str | None
    amount: int | None
    approved: bool | None
    payment_token: str | None
    detail: str | None
    candidates: list[str]
    duplicate_of: int | None
    settled_at: Time
    settled_by: str | None
    query_attempts: int
    query_answer: str | None
    params: Annotated[list[list[str]], BeforeValidator(masked_params)]


class CallbacksOut(Out):
    """A page of stored returns, newest first, and the totals by outcome. ``nextBefore``
    asks for the next page (None on the last)."""

    counts: dict[str, int]
    outcomes: list[str]
    callbacks: list[CallbackOut]
    next_before: int | None

    @classmethod
    def of(
        cls,
        records: Sequence[CallbackRecord],
        *,
        limit: int,
        outcomes: Sequence[CallbackOutcome],
        counts: Mapping[CallbackOutcome, int],
    ) -> CallbacksOut:
        return cls(
            counts={outcome.value: counts.get(outcome, 0) for outcome in CallbackOutcome},
            outcomes=[outcome.value for outcome in outcomes],
            callbacks=records,
            next_before=records[-1].id if len(records) == limit and records else None,
        )


# --- review ------------------------------------------------------------------------------------


class ChangeOut(Out):
    token: str
    from_: str = Field(alias="from", validation_alias="previous")
    to: str = Field(validation_alias="status")


class ReviewOut(Out):
    """An operator's decision: who, when, why, and the payments it changed."""

    id: int
    ref: str
    decision: str
    callback_ref: str | None = Field(validation_alias="callback_id")
    payment_token: str | None
    others: str | None
    decided_by: str
    decided_at: Time
    reason: str
    changes: list[ChangeOut]

    @field_validator("callback_ref", mode="before")
    @classmethod
    def _ref_of_id(cls, callback: object) -> object:
        return callback_ref(callback) if isinstance(callback, int) else callback


class ReviewDecidedOut(SuccessOut):
    review: ReviewOut


class ReviewPaymentOut(PaymentOut):
    """A payment as an operator deciding about it needs to see it."""

    late: bool
    error_message: str | None
    customer: dict[str, Any]


class ReviewReturnOut(CallbackOut):
    """An ambiguous return, and the payments it could belong to."""

    candidate_payments: list[ReviewPaymentOut]

    @classmethod
    def of(cls, item: ReviewItem) -> ReviewReturnOut:
        record = CallbackOut.model_validate(item.record)
        return cls(**dict(record), candidate_payments=item.candidates)


class ReviewQueueOut(Out):
    """What waits for an operator, and the latest decisions."""

    waiting: int
    returns: list[ReviewReturnOut]
    payments: list[ReviewPaymentOut]
    decided: list[ReviewOut]

    @classmethod
    def of(cls, queue: ReviewQueue, decided: Sequence[Review]) -> ReviewQueueOut:
        return cls(
            waiting=len(queue),
            returns=[ReviewReturnOut.of(item) for item in queue.returns],
            payments=queue.payments,
            decided=decided,
        )


# --- the dashboard's series ----------------------------------------------------------------


class SeriesOut(Out):
    """The dashboard's charts as data: a value per bucket, oldest first."""

    window: str
    since: Time
    bucket_seconds: float
    slots: int
    starts: list[Time]
    utilisation: list[float]
    turned_away: list[int] | None
    leases_ended: dict[str, list[int]]
    duration_p50_seconds: list[float | None]
    duration_p95_seconds: list[float | None]

    @classmethod
    def of(cls, series: PoolSeries, window: str) -> SeriesOut:
        return cls(
            window=window,
            since=series.since,
            bucket_seconds=series.bucket.total_seconds(),
            slots=series.slots,
            starts=series.starts,
            utilisation=[round(value, 4) for value in series.utilisation],
            turned_away=None if series.turned_away is None else list(series.turned_away),
            leases_ended={reason.value: list(counts) for reason, counts in series.ended.items()},
            duration_p50_seconds=list(series.duration_p50),
            duration_p95_seconds=list(series.duration_p95),
        )


# --- what the options and arguments say ------------------------------------------------------

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> timedelta:
    """``90s``, ``30m``, ``2h``, ``1d``, or several at once: ``1h30m`` (ValueError else).
    How durations are written to the CLI's options and the API's query parameters."""
    parts = _DURATION_PART.findall(text.strip())
    if not parts or "".join(n + u for n, u in parts) != text.strip():
        raise ValueError(f"{text!r} is not a duration such as 90s, 30m, 2h or 1h30m")
    return sum((timedelta(seconds=float(n) * _UNIT_SECONDS[u]) for n, u in parts), timedelta())


def callback_id_of(ref: str) -> int | None:
    """The id a return's reference names (``CB-12`` or ``12``), or None."""
    text = ref.strip().upper()
    return model_callback_id_of(text if text.startswith("CB-") else f"CB-{text}")


def span(delta: timedelta) -> str:
    """The two largest units of a duration: ``45s``, ``5m 10s``, ``2h 5m``, ``3d 4h``."""
    seconds = int(delta.total_seconds())
    days, seconds = divmod(seconds, 86400)
    hours, seconds = divmod(seconds, 3600)
    minutes, seconds = divmod(seconds, 60)
    parts = [(days, "d"), (hours, "h"), (minutes, "m"), (seconds, "s")]
    while len(parts) > 1 and parts[0][0] == 0:
        parts.pop(0)
    return " ".join(f"{n}{unit}" for n, unit in parts[:2] if n or unit == parts[0][1])


# --- the shop's server's payments (docs/integrating.md) ---------------------------------------


class CreatedPaymentOut(SuccessOut):
    """A payment the shop's server created: send the customer to ``checkoutUrl``. ``id``
    names it to the shop; ``token`` is the customer's secret (it is in the URL)."""

    id: str
    token: str
    status: str
    checkout_url: str
    order_reference: str | None
    metadata: dict[str, str]
    amount: int
    currency: str
    expires_at: Time

    @classmethod
    def of(cls, payment: Payment, checkout_url: str) -> CreatedPaymentOut:
        return cls(
            id=payment.id,
            token=payment.token,
            status=payment.status,
            checkout_url=checkout_url,
            order_reference=payment.order_reference,
            metadata=dict(payment.metadata),
            amount=payment.amount,
            currency=payment.currency,
            expires_at=payment.expires_at,
        )


class AttemptOut(Out):
    number: int
    outcome: str
    started_at: Time
    returned_at: Time
    pn_ref: str | None
    auth_code: str | None
    last4: str | None
    card_type: str | None


class ShopPaymentOut(Out):
    """A payment as the shop reads it, with each attempt at the gateway."""

    id: str
    status: str
    amount: int
    currency: str
    order_reference: str | None
    metadata: dict[str, str]
    late: bool
    attempts: list[AttemptOut]
    created_at: Time
    updated_at: Time
    expires_at: Time

    @classmethod
    def of(cls, payment: Payment, attempts: Sequence[AttemptResult]) -> Self:
        """From ``payment_document``: the one serialiser the outbox's events use too."""
        return cls.model_validate(payment_document(payment, attempts))


class ShopPaymentDetailOut(SuccessOut, ShopPaymentOut):
    pass


class ShopPaymentListOut(SuccessOut):
    """Newest first; pass ``nextCursor`` as ``after`` for the next page (null: no more)."""

    data: list[ShopPaymentOut]
    next_cursor: str | None


class EventOut(Out):
    """A payment's announced status change (docs/integrating.md#events): ``data`` is the
    payment as ``GET /api/v1/payments/{id}`` showed it when the change committed."""

    id: str
    type: str
    created_at: Time
    sequence: int
    reason: str
    data: ShopPaymentOut

    @classmethod
    def of(cls, event: Event) -> Self:
        """From ``event_document``, the payment's snapshot as it was stored."""
        return cls.model_validate(event_document(event))


class EventListOut(SuccessOut):
    """Oldest first; pass ``nextCursor`` as ``after`` for what follows (null: nothing new
    yet, poll again with the same ``after``)."""

    data: list[EventOut]
    next_cursor: str | None
