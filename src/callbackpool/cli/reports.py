"""The operator's reports (``reports stuck|orphans|usage|health|callbacks``, the guide's
debug queries) and the review of ambiguous returns (``review list|resolve|close``), with
their text output."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from typing import Annotated

import typer

from .. import views
from ..domain.model import (
    CallbackOutcome,
    CallbackRecord,
    Lease,
    Payment,
    PaymentStatus,
    Review,
    SlotView,
)
from ..domain.money import format_amount
from ..pool.results import ReviewItem
from ..store.tx import UsageRow
from .app import (
    USAGE,
    ByOption,
    CliError,
    JsonFlag,
    ReasonOption,
    cli_state,
    command_group,
    emit,
    operator_name,
    parse_duration,
)
from .text import NO_PATHS, ago, clock_time, count, path_table, span, table

reports_app = command_group("The guide's debug queries.")
review_app = command_group(
    "Payments in review: the ambiguous returns waiting for a decision, and deciding."
)


@reports_app.command("stuck")
def stuck_report(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """Leases past their expiry, not yet ended.

    The guide's "stuck forms". Any at all means nothing is sweeping: run the service, or
    cleanup."""
    pool = cli_state(ctx).pool()
    leases = pool.stuck_leases()
    now = pool.now()
    emit(as_json, views.StuckOut(at=now, leases=leases), _stuck_lines(leases, now))


@reports_app.command("orphans")
def orphans_report(
    ctx: typer.Context,
    older_than: Annotated[
        timedelta | None,
        typer.Option(
            "--older-than",
            parser=parse_duration,
            metavar="DURATION",
            help="How long a payment must have been pending: 90s, 30m, 2h, 1h30m. "
            "Default: three lock timeouts (30m with the default lockTimeoutMinutes).",
        ),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Payments pending long after they should end.

    The guide's "orphaned payment tokens": a sign that nothing is sweeping."""
    pool = cli_state(ctx).pool()
    age = older_than if older_than is not None else 3 * pool.policy.lock_timeout
    payments = pool.orphaned_payments(age)
    now = pool.now()
    emit(as_json, views.OrphansOut.of(now, age, payments), _orphan_lines(payments, age, now))


@reports_app.command("usage")
def usage_report(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """Leases per slot and how they ended.

    The guide's "usage distribution", with how many leases ended by a callback and how many
    expired: a slot whose leases keep expiring is a path the gateway may not know."""
    pool = cli_state(ctx).pool()
    rows = pool.usage()
    document = views.UsageOut.of(rows)
    emit(as_json, document, _usage_lines(rows, document.average_usage, pool.now()))


@reports_app.command("health")
def health_report(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """Per-slot health: approvals, declines, expiries without a return, time since the last
    return, and which slots are out of rotation (and why)."""
    pool = cli_state(ctx).pool()
    pool_status = pool.status()
    document = views.HealthOut.of(pool_status, pool.policy.slot_health_expiries_to_sideline)
    emit(as_json, document, _health_lines(pool_status.slots, pool_status.at))


@reports_app.command("callbacks")
def callbacks_report(
    ctx: typer.Context,
    outcome: Annotated[
        list[CallbackOutcome] | None,
        typer.Option(
            "--outcome",
            case_sensitive=False,
            help="Only returns with this outcome (repeat for several).",
        ),
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=500, help="Returns a page.")] = 20,
    before: Annotated[
        str | None,
        typer.Option("--before", metavar="REF", help="The page after this return (CB-12 or 12)."),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Stored returns by outcome, newest first, with their raw parameters (ExpDate masked).

    The totals by outcome come first; --before pages on."""
    pool = cli_state(ctx).pool()
    outcomes = tuple(outcome or ())
    records = pool.callbacks(
        outcomes=outcomes, limit=limit, before_id=None if before is None else _callback_id(before)
    )
    counts = pool.callback_counts()
    document = views.CallbacksOut.of(records, limit=limit, outcomes=outcomes, counts=counts)
    emit(as_json, document, _callback_lines(records, counts, document.next_before))


def _callback_id(ref: str) -> int:
    callback_id = views.callback_id_of(ref)
    if callback_id is None:
        raise typer.BadParameter(f"{ref!r} is not a return's reference (CB-12, or 12)")
    return callback_id


@review_app.command("list")
def review_list(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """What waits for a decision: each ambiguous return with the payments it could belong
    to, payments left in review, and the latest decisions."""
    pool = cli_state(ctx).pool()
    queue = pool.review_queue()
    decided = pool.reviews(limit=10)
    emit(
        as_json,
        views.ReviewQueueOut.of(queue, decided),
        _review_lines(queue.returns, queue.payments, decided, pool.now(), pool.gateway.currency),
    )


@review_app.command("resolve")
def review_resolve(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(metavar="RETURN", help="The return: CB-12 (or 12).")],
    reason: ReasonOption,
    payment: Annotated[
        str | None,
        typer.Option("--payment", metavar="TOKEN", help="The payment the return belongs to."),
    ] = None,
    none: Annotated[
        bool, typer.Option("--none", help="The return belongs to none of its candidates.")
    ] = False,
    others: Annotated[
        str,
        typer.Option(
            "--others",
            metavar="expired|failed|needs_review",
            help="What the other candidates become (needs_review leaves them for another return).",
        ),
    ] = "expired",
    by: ByOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Decide which payment an ambiguous return belongs to (--payment TOKEN), or none.

    The chosen payment is completed with the return's transaction; the others become
    --others. Recorded with --by, --reason and the time."""
    if (payment is None) == (not none):
        raise CliError("name exactly one of --payment TOKEN and --none", USAGE)
    pool = cli_state(ctx).pool()
    review = pool.resolve_review(
        _callback_id(ref),
        payment_token=payment,
        others=_review_status(others, "--others"),
        by=operator_name(by),
        reason=reason,
    )
    emit(as_json, views.ReviewDecidedOut(review=review), _decided_lines(review))


@review_app.command("close")
def review_close(
    ctx: typer.Context,
    token: Annotated[str, typer.Argument(metavar="TOKEN", help="The payment in review.")],
    reason: ReasonOption,
    status: Annotated[
        str,
        typer.Option("--status", metavar="expired|failed", help="What the payment becomes."),
    ] = "expired",
    by: ByOption = None,
    as_json: JsonFlag = False,
) -> None:
    """End a payment left in review without a return: expired (the customer did not pay)
    or failed. Only a return completes a payment: resolve the return instead."""
    pool = cli_state(ctx).pool()
    ending = _review_status(status, "--status")
    review = pool.resolve_payment(token, status=ending, by=operator_name(by), reason=reason)
    emit(as_json, views.ReviewDecidedOut(review=review), _decided_lines(review))


def _review_status(value: str, option: str) -> PaymentStatus:
    try:
        return PaymentStatus(value.strip().lower())
    except ValueError:
        raise CliError(f"{option}: {value!r} is not a payment status", USAGE) from None


def _stuck_lines(leases: list[Lease], now: datetime) -> Iterator[str]:
    if not leases:
        yield "no stuck leases"
        return
    yield f"{count(len(leases), 'lease')} past expiry and not ended: nothing is sweeping"
    rows = [
        [
            lease.path,
            str(lease.id),
            lease.token,
            ago(lease.acquired_at, now),
            ago(lease.expires_at, now),
        ]
        for lease in leases
    ]
    yield from table(["PATH", "LEASE", "TOKEN", "LOCKED", "EXPIRED"], rows, right={1})


def _orphan_lines(payments: list[Payment], age: timedelta, now: datetime) -> Iterator[str]:
    if not payments:
        yield f"no payments pending for more than {span(age)}"
        return
    yield f"{count(len(payments), 'payment')} pending for more than {span(age)}"
    rows = [
        [
            payment.token,
            _amount(payment.amount, payment.currency),
            ago(payment.created_at, now),
            ago(payment.expires_at, now),
            payment.callback_path or "-",
        ]
        for payment in payments
    ]
    yield from table(["TOKEN", "AMOUNT", "CREATED", "EXPIRES", "PATH"], rows, right={1})


def _usage_lines(rows: list[UsageRow], average: float, now: datetime) -> Iterator[str]:
    if not rows:
        yield NO_PATHS
        return
    cells = [
        [
            row.path,
            "yes" if row.active else "no",
            str(row.usage_count),
            str(row.callbacks),
            str(row.expiries),
            ago(row.last_acquired_at, now),
            ago(row.last_released_at, now),
        ]
        for row in rows
    ]
    headers = ["PATH", "ACTIVE", "USAGE", "CALLBACKS", "EXPIRIES", "LAST USED", "LAST RELEASED"]
    yield from path_table(headers, cells, right={2, 3, 4})
    yield f"average usage: {average:.1f} leases per active slot"


def _health_lines(slots: Sequence[SlotView], now: datetime) -> Iterator[str]:
    if not slots:
        yield NO_PATHS
        return
    rows = []
    for slot in slots:
        health = slot.health
        rows.append(
            [
                slot.path,
                "yes" if slot.in_rotation else ("inactive" if not slot.active else "NO"),
                str(health.approvals),
                str(health.declines),
                str(health.silent_expiries),
                str(health.expiry_streak),
                ago(health.last_return_at, now),
            ]
        )
    headers = ["PATH", "IN ROTATION", "APPROVALS", "DECLINES", "SILENT EXPIRIES", "IN A ROW"]
    yield from path_table([*headers, "LAST RETURN"], rows, right={2, 3, 4, 5})
    for slot in slots:
        if slot.sidelined:
            yield (
                f"{slot.path}: out of rotation since {ago(slot.sidelined_at, now)} "
                f"({slot.sidelined_by}: {slot.sidelined_reason}); "
                "put it back with 'callbackpool slots restore'"
            )


def _callback_lines(
    records: Sequence[CallbackRecord], counts: dict[CallbackOutcome, int], next_before: int | None
) -> Iterator[str]:
    yield "returns by outcome: " + ", ".join(f"{o.value} {counts[o]}" for o in CallbackOutcome)
    if not records:
        yield "no stored returns here"
        return
    for record in records:
        token = f" payment {record.payment_token}" if record.payment_token else ""
        detail = f" ({record.detail})" if record.detail else ""
        yield (
            f"{record.ref}  {clock_time(record.received_at)}  {record.method} {record.path}  "
            f"{record.outcome.value}{token}{detail}"
        )
        yield "    " + "&".join(
            f"{name}={value}" for name, value in views.masked_params(record.params)
        )
    if next_before is not None:
        yield f"more: --before CB-{next_before}"


def _review_lines(
    returns: Sequence[ReviewItem],
    payments: Sequence[Payment],
    decided: Sequence[Review],
    now: datetime,
    currency: str,
) -> Iterator[str]:
    if not returns and not payments:
        yield "nothing waits for a decision"
    for item in returns:
        record = item.record
        owners = count(len(item.candidates), "payment")
        yield (
            f"{record.ref} on {record.path}, {ago(record.received_at, now)}: approved "
            f"{_amount(record.amount, currency)} could belong to {owners}"
        )
        for payment in item.candidates:
            yield (
                f"    {payment.token}  {payment.status.value}  created "
                f"{ago(payment.created_at, now)}  {payment.customer.get('email') or ''}"
            )
        yield (
            f"    decide: callbackpool review resolve {record.ref} --payment TOKEN "
            "(or --none) --reason '…'"
        )
    for payment in payments:
        yield (
            f"payment {payment.token} in review, no open return names it: "
            f"callbackpool review close {payment.token} --status expired|failed --reason '…'"
        )
    for review in decided:
        yield (
            f"decided {review.ref} {ago(review.decided_at, now)} by {review.decided_by}: "
            f"{_decision(review)} — {review.reason}"
        )


def _decided_lines(review: Review) -> Iterator[str]:
    yield f"{review.ref} recorded: {_decision(review)}"
    for change in review.changes:
        yield f"    payment {change.token}: {change.previous.value} → {change.status.value}"


def _decision(review: Review) -> str:
    if review.callback_id is None:
        return f"payment {review.payment_token} ended without a return"
    target = f"payment {review.payment_token}" if review.payment_token else "no payment"
    return f"CB-{review.callback_id} belongs to {target}"


def _amount(minor: int | None, currency: str) -> str:
    return "(no amount)" if minor is None else f"{format_amount(minor, currency)} {currency}"
