"""The commands that set up and tend the pool: ``init``, ``migrate``, ``status``,
``cleanup``, ``release``, and ``slots sideline|restore``, with their text output.

Tokens are printed in full on stdout: the operator needs them to find a payment, as the
guide's status showed them. The log lines on stderr carry only their first characters.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Annotated

import typer

from .. import views
from ..compose import build_pool
from ..domain.errors import NothingToRelease
from ..domain.model import Lease
from ..pool.results import CapacityReport, PoolStatus, ReserveStatus, SweepReport
from ..store.tx import SlotSync
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
)
from .text import NO_PATHS, ago, clock_time, count, path_table, percent, span


def init(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """Set up the database and the callback paths.

    Applies the pending migrations and loads the configured callback paths: paths no longer
    in the configuration are deactivated, never deleted (their history stays)."""
    state = cli_state(ctx)
    settings = state.settings()
    store = state.open_store(settings.database_url)
    applied = store.migrate()
    pool = build_pool(settings, store=store, migrate=False, sync_slots=False)
    sync = pool.sync_slots()
    active = pool.status().total
    emit(as_json, views.InitOut.of(applied, sync, active), _init_lines(applied, sync, active))


def migrate(
    ctx: typer.Context,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Print the SQL of each pending migration; change nothing."),
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Apply the pending database migrations."""
    state = cli_state(ctx)
    store = state.open_store(state.database_url())
    pending = store.pending_migrations() if dry_run else []
    applied = [] if dry_run else store.migrate()
    document = views.MigrateOut.of(dry_run, applied, pending)
    emit(as_json, document, _migrate_lines(dry_run, applied, pending))


def status(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """Show the pool: totals and a row per slot.

    Each row: the slot's state, the lease and payment token holding it, since and until
    when, how often it was used and released, and its taints."""
    pool_status = cli_state(ctx).pool().status()
    emit(as_json, views.PoolStatsOut.of(pool_status), _status_lines(pool_status))


def cleanup(
    ctx: typer.Context,
    release_all: Annotated[
        bool,
        typer.Option(
            "--all",
            help="Also release every live lease (the guide's manual cleanup): their payments "
            "become expired and their slots tainted. Asks first unless --yes.",
        ),
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask before --all.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """End expired leases (with --all: every lease).

    Does what the service's sweeper does: ends the leases past their expiry (their payments
    become expired), forgets stale taints, resolves stored returns left unresolved."""
    ask = release_all and not yes
    if ask and not _interactive():
        raise CliError(
            "cleanup --all releases every live lease: confirm with --yes "
            "(there is no terminal to ask on)",
            USAGE,
        )
    pool = cli_state(ctx).pool()
    live = sum(1 for slot in pool.status().slots if slot.lease is not None) if ask else 0
    if live and not typer.confirm(
        f"Release all {live} live leases? Their payments become expired, their slots tainted.",
        err=True,
    ):
        raise CliError("nothing released")
    report = pool.sweep()
    released = pool.release_all() if release_all else []
    document = views.CleanupOut.of(report, released)
    emit(as_json, document, _cleanup_lines(report, released, pool.policy.late_callback_window))


def _interactive() -> bool:
    return sys.stdin is not None and sys.stdin.isatty()


def release(
    ctx: typer.Context,
    path: Annotated[
        str | None,
        typer.Option(
            "--path",
            help="The slot's callback path, in full or by its last segment (handler-3).",
        ),
    ] = None,
    token: Annotated[
        str | None, typer.Option("--token", help="The token of the payment holding the lease.")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """End one live lease by hand.

    Its payment, if still pending, becomes expired; the slot stays tainted for the
    late-callback window, in case the customer still pays."""
    if (path is None) == (token is None):
        raise CliError("name exactly one of --path and --token", USAGE)
    pool = cli_state(ctx).pool()
    if path is not None:
        path = pool.slot_path(path)
    try:
        lease = pool.release(path=path, token=token)
    except NothingToRelease:
        # The token is a secret: the message does not repeat it.
        where = f"on {path}" if path is not None else "for that payment token"
        raise NothingToRelease(f"no live lease {where}") from None
    document = views.ReleasedOut(released=lease)
    emit(as_json, document, _released_lines([lease], pool.policy.late_callback_window))


COMMANDS = (init, migrate, status, cleanup, release)

slots_app = command_group("Take a slot out of rotation, or put it back.")

SlotArgument = Annotated[
    str,
    typer.Argument(
        metavar="PATH", help="The slot's path, in full or its last segment (handler-3)."
    ),
]


@slots_app.command("sideline")
def slots_sideline(
    ctx: typer.Context,
    path: SlotArgument,
    reason: ReasonOption,
    by: ByOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Take a slot out of rotation: it is leased no more until restored. Its live lease
    and its taints still take their returns."""
    pool = cli_state(ctx).pool()
    full = pool.slot_path(path)
    changed = pool.sideline_slot(full, by=operator_name(by), reason=reason)
    emit(
        as_json,
        views.SlotRotationOut(path=full, changed=changed, in_rotation=False),
        [f"{full} {'taken out of rotation' if changed else 'was out of rotation already'}"],
    )


@slots_app.command("restore")
def slots_restore(
    ctx: typer.Context, path: SlotArgument, by: ByOption = None, as_json: JsonFlag = False
) -> None:
    """Put a slot back in rotation (a slot-health decision or an operator's undone)."""
    pool = cli_state(ctx).pool()
    full = pool.slot_path(path)
    changed = pool.restore_slot(full, by=operator_name(by))
    emit(
        as_json,
        views.SlotRotationOut(path=full, changed=changed, in_rotation=True),
        [f"{full} {'back in rotation' if changed else 'was in rotation already'}"],
    )


def _init_lines(applied: list[str], sync: SlotSync, active: int) -> Iterator[str]:
    for name in applied:
        yield f"applied migration {name}"
    for label, paths in (
        ("added", sync.added),
        ("reactivated", sync.reactivated),
        ("deactivated", sync.deactivated),
    ):
        for path in paths:
            yield f"{label:<12} {path}"
    if not (applied or sync.added or sync.reactivated or sync.deactivated):
        yield "nothing to change"
    yield f"{count(active, 'callback path')} active"


def _migrate_lines(
    dry_run: bool, applied: list[str], pending: list[tuple[str, str]]
) -> Iterator[str]:
    if dry_run:
        if not pending:
            yield "-- no pending migrations"
        for name, sql in pending:
            yield f"-- migration {name} (pending)"
            yield sql.rstrip()
        return
    for name in applied:
        yield f"applied migration {name}"
    if not applied:
        yield "the database is up to date"


def _status_lines(status: PoolStatus) -> Iterator[str]:
    now = status.at
    standby = f", {status.standby} on standby" if status.standby else ""
    yield (
        f"pool at {clock_time(now)}: {status.total} slots, {status.available} available, "
        f"{status.locked} locked, {status.stuck} stuck, {status.tainted} tainted, "
        f"{status.inactive} inactive{standby}"
    )
    if not status.slots:
        yield NO_PATHS
        return
    rows = []
    for slot in status.slots:
        lease = slot.lease
        state = views.slot_state(slot, now)
        if lease is not None and not slot.active:
            state += ", inactive"
        rows.append(
            [
                slot.path,
                state,
                str(lease.id) if lease else "-",
                lease.token if lease else "-",
                ago(lease.acquired_at if lease else None, now),
                ago(lease.expires_at if lease else None, now),
                str(slot.usage_count),
                ago(slot.last_acquired_at, now),
                ago(slot.last_released_at, now),
                str(slot.taints),
            ]
        )
    headers = ["PATH", "STATE", "LEASE", "TOKEN", "LOCKED", "EXPIRES"]
    headers += ["USAGE", "LAST USED", "LAST RELEASED", "TAINTS"]
    yield from path_table(headers, rows, right={2, 6, 9})
    if status.waiting:
        yield f"waiting room: {count(status.waiting, 'ticket')}"
    if status.reserve is not None and status.reserve.paths:
        yield from _reserve_lines(status.reserve, now)
    if status.capacity is not None:
        yield _capacity_line(status.capacity)


def _reserve_lines(reserve: ReserveStatus, now: datetime) -> Iterator[str]:
    yield f"reserve: {reserve.state}, {count(len(reserve.paths), 'path')}"
    for event in reserve.events[:3]:
        yield f"  {ago(event.at, now)} {event.action.value}: {event.reason}"


def _capacity_line(report: CapacityReport) -> str:
    counts = report.counts
    seen = (
        f"last {span(report.window)}: {count(counts.requests, 'request')} "
        f"({counts.leased} served at once, {counts.waited} waited, {counts.refused} turned away)"
    )
    mean, erlangs = report.holding.mean_seconds, report.offered_erlangs
    if mean is None or erlangs is None:
        return f"{seen}; no lease ended yet"
    turned_away = report.predicted_turned_away or 0.0
    return (
        f"{seen}, {report.arrivals_per_hour:.1f} an hour held {span(timedelta(seconds=mean))} "
        f"on average: {erlangs:.2f} erlangs; Erlang B: {report.slots} slots turn away "
        f"{percent(turned_away)}, {report.slots_needed} needed for {percent(report.target)}"
    )


def _cleanup_lines(
    report: SweepReport, released: list[Lease], taint_window: timedelta
) -> Iterator[str]:
    yield (
        f"ended {count(report.expired, 'expired lease')}, "
        f"dropped {count(report.taints_dropped, 'stale taint')}, "
        f"resolved {count(report.callbacks_resolved, 'stored return')}"
    )
    if report.tickets_expired:
        yield f"expired {count(report.tickets_expired, 'unpolled ticket')}"
    if report.reserve is not None:
        yield f"reserve {report.reserve.action.value}: {report.reserve.reason}"
    yield from _released_lines(released, taint_window)


def _released_lines(released: list[Lease], taint_window: timedelta) -> Iterator[str]:
    for lease in released:
        yield f"released lease {lease.id} on {lease.path} (payment {lease.token})"
    if released:
        yield (
            f"the released slots stay tainted for {span(taint_window)}, "
            "in case a customer still pays"
        )
