"""The command line: ``callbackpool [--config PATH] [--database URL] COMMAND``: the
operator's commands, and ``serve`` and ``demo`` that run the service.

One Typer app, one function a command. What every command shares lives in one place each:
the global options and what they resolve to (``CliState``), ``--json`` (``JsonFlag`` and
``_emit``), and the translation of every error into one line on stderr and an exit code
(``_Group.main``): 0 done, 1 an operational failure (nothing to release, the database is
unavailable or not initialised), 2 bad usage or configuration. Never a traceback.

Tokens are printed in full on stdout: the operator needs them to find a payment, as the
guide's status showed them. The log lines on stderr carry only their first characters.
"""

from __future__ import annotations

import getpass
import json
import logging
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from . import logs, views
from .capacity import erlang
from .capacity import simulate as sim
from .clock import Clock
from .compose import build_pool
from .config import Settings, load_settings
from .domain.errors import (
    CallbackPoolError,
    ConfigurationError,
    InvalidReview,
    NothingToRelease,
    UnknownCallback,
    UnknownSlot,
)
from .domain.model import (
    CallbackOutcome,
    CallbackRecord,
    Lease,
    Payment,
    PaymentStatus,
    Review,
    SlotView,
)
from .domain.money import format_amount
from .pool import (
    CallbackPool,
    CapacityReport,
    PoolStatus,
    ReserveStatus,
    ReviewItem,
    SweepReport,
)
from .ports import SlotSync, Store, UsageRow
from .store import DEFAULT_DATABASE_URL, open_store

log = logging.getLogger("callbackpool.cli")

CONFIG_ENV = "CALLBACKPOOL_CONFIG"
DATABASE_ENV = "CALLBACKPOOL_DATABASE_URL"
DEFAULT_CONFIG = Path("paygistix-forms.json")

FAILURE = 1
USAGE = 2


class CliError(Exception):
    """A failure the command line itself finds, with the exit code it ends in."""

    def __init__(self, message: str, exit_code: int = FAILURE) -> None:
        super().__init__(message)
        self.exit_code = exit_code


# --- running the app: one line per error, an exit code, log lines on stderr -------------------


class _Group(TyperGroup):
    """The root command. It runs the app and turns every error into ``error: …`` on stderr
    and an exit code, for the installed executable and ``CliRunner`` alike."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        with _logging_to_stderr():
            try:
                result = super().main(
                    args,
                    prog_name,
                    complete_var,
                    standalone_mode=False,
                    windows_expand_args=windows_expand_args,
                    **extra,
                )
                code = result if isinstance(result, int) else 0
            except typer.TyperException as exc:  # bad usage: Typer's (vendored Click's) errors
                if type(exc).__name__ == "NoArgsIsHelpError":  # a bare command group: its help
                    typer.echo(exc.format_message(), err=True)
                    code = exc.exit_code
                else:
                    code = _fail(_usage_message(exc), exc.exit_code)
            except typer.Abort:
                code = _fail("aborted", FAILURE)
            except CliError as exc:
                code = _fail(str(exc), exc.exit_code)
            except ConfigurationError as exc:
                # The file itself (missing, not JSON) is named by the message, not a key.
                code = _fail(exc.problem if exc.key == "config" else exc.message, USAGE)
            except (UnknownSlot, UnknownCallback, InvalidReview) as exc:
                code = _fail(exc.message, USAGE)
            except CallbackPoolError as exc:
                code = _fail(exc.message, FAILURE)
            except Exception as exc:
                log.debug("traceback of the unexpected error", exc_info=True)
                code = _fail(
                    f"unexpected {type(exc).__name__}: {exc} (--verbose shows the traceback)",
                    FAILURE,
                )
        if standalone_mode:
            sys.exit(code)
        return code


def _fail(message: str, exit_code: int) -> int:
    typer.echo(f"error: {message}", err=True)
    return exit_code


def _usage_message(exc: typer.TyperException) -> str:
    message = exc.format_message().rstrip(".")
    message = message[:1].lower() + message[1:]
    ctx = getattr(exc, "ctx", None)  # usage errors know the command they are about
    return f"{message} (see '{ctx.command_path} --help')" if ctx is not None else message


class _StderrHandler(logging.Handler):
    """``warning: …`` lines (or JSON objects, with ``--log-format json``) on whatever stderr
    is at the time (CliRunner swaps it). Card data is masked."""

    def __init__(self) -> None:
        super().__init__()
        self.log_format: logs.LogFormat = "text"
        self.addFilter(logs.MaskCardData())

    def emit(self, record: logging.LogRecord) -> None:
        if self.log_format == "json":
            typer.echo(logs.JsonFormatter().format(record), err=True)
            return
        text = f"{record.levelname.lower()}: {record.getMessage()}"
        if record.exc_info:
            text += "\n" + logging.Formatter().formatException(record.exc_info)
        typer.echo(text, err=True)


def _set_log_format(log_format: logs.LogFormat) -> None:
    for handler in logging.getLogger("callbackpool").handlers:
        if isinstance(handler, _StderrHandler):
            handler.log_format = log_format


@contextmanager
def _logging_to_stderr() -> Iterator[None]:
    """The package's warnings (an unknown configuration key, a deactivated path) on stderr
    for the length of one run; ``--verbose`` lowers the level to show the pool's log."""
    logger = logging.getLogger("callbackpool")
    handler = _StderrHandler()
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


# --- the global options ------------------------------------------------------------------------


@dataclass
class CliState:
    """What the global options resolve to. Tests pass one as ``obj`` to set the clock."""

    config: Path | None = None
    database: str | None = None
    clock: Clock | None = None
    stores: list[Store] = field(default_factory=list)
    log_format: logs.LogFormat = "text"

    def config_path(self) -> Path:
        if self.config is not None:
            return self.config
        if DEFAULT_CONFIG.is_file():
            return DEFAULT_CONFIG
        raise CliError(
            f"no configuration: pass --config PATH, set {CONFIG_ENV}, "
            f"or run where {DEFAULT_CONFIG} is",
            USAGE,
        )

    def settings(self) -> Settings:
        return load_settings(self.config_path(), overrides={"database_url": self.database})

    def database_url(self) -> str:
        """--database, else the configuration's ``databaseUrl`` if there is a configuration,
        else the default: what ``migrate`` works on without needing a configuration."""
        if self.database is not None:
            return self.database
        if self.config is not None or DEFAULT_CONFIG.is_file():
            return self.settings().database_url
        return DEFAULT_DATABASE_URL

    def open_store(self, url: str) -> Store:
        store = open_store(url, clock=self.clock)
        self.stores.append(store)
        return store

    def pool(self) -> CallbackPool:
        """The pool over an initialised database, with its slots as the database has them:
        only ``init`` loads the configured paths, so that looking at the pool with another
        configuration file never deactivates the paths a running service leases."""
        settings = self.settings()
        store = self.open_store(settings.database_url)
        pending = store.pending_migrations()
        if pending:
            names = ", ".join(name for name, _ in pending)
            raise CliError(
                f"the database is not initialised or not up to date (pending: {names}): "
                "run 'callbackpool init'"
            )
        return build_pool(settings, store=store, migrate=False, sync_slots=False)

    def close(self) -> None:
        for store in self.stores:
            store.close()
        self.stores.clear()


def _state(ctx: typer.Context) -> CliState:
    return ctx.ensure_object(CliState)


ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        envvar=CONFIG_ENV,
        metavar="PATH",
        dir_okay=False,
        help=f"The configuration file (the guide's paygistix-forms.json). "
        f"Default: ./{DEFAULT_CONFIG} if it exists.",
    ),
]
DatabaseOption = Annotated[
    str | None,
    typer.Option(
        "--database",
        envvar=DATABASE_ENV,
        metavar="URL",
        help=f"The database, e.g. sqlite:///callbackpool.db. Default: the configuration's "
        f"databaseUrl, else {DEFAULT_DATABASE_URL}.",
    ),
]
VerboseFlag = Annotated[
    bool,
    typer.Option("--verbose", "-v", help="Show the pool's log and the traceback of a bug."),
]
JsonFlag = Annotated[
    bool, typer.Option("--json", help="Print one JSON document on stdout instead of text.")
]
LOG_FORMAT_ENV = "CALLBACKPOOL_LOG_FORMAT"
LogFormatOption = Annotated[
    str | None,
    typer.Option(
        "--log-format",
        envvar=LOG_FORMAT_ENV,
        metavar="text|json",
        help="Log lines for people (text) or one JSON object a line for machines (json).",
    ),
]
OPERATOR_ENV = "CALLBACKPOOL_OPERATOR"
ByOption = Annotated[
    str | None,
    typer.Option(
        "--by",
        envvar=OPERATOR_ENV,
        metavar="NAME",
        help="Who decides (kept with the decision). Default: the login name.",
    ),
]


def _log_format(value: str | None) -> logs.LogFormat | None:
    if value is None:
        return None
    for known in logs.LOG_FORMATS:
        if value.strip().lower() == known:
            return known
    raise typer.BadParameter(f"{value!r} is not a log format: text or json")


def _operator_name(by: str | None) -> str:
    if by:
        return by
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name (a container without a passwd entry)
        return f"uid {os.getuid()}" if hasattr(os, "getuid") else "cli"


app = typer.Typer(
    cls=_Group,
    name="callbackpool",
    help="Lease pre-registered callback URLs to pending payments: the operator's commands.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
reports_app = typer.Typer(
    help="The guide's debug queries.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(reports_app, name="reports")
review_app = typer.Typer(
    help="Payments in review: the ambiguous returns waiting for a decision, and deciding.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(review_app, name="review")
slots_app = typer.Typer(
    help="Take a slot out of rotation, or put it back.", no_args_is_help=True, rich_markup_mode=None
)
app.add_typer(slots_app, name="slots")


@app.callback()
def _global_options(
    ctx: typer.Context,
    config: ConfigOption = None,
    database: DatabaseOption = None,
    verbose: VerboseFlag = False,
    log_format: LogFormatOption = None,
) -> None:
    state = _state(ctx)
    state.config = config
    state.database = database
    state.log_format = _log_format(log_format) or "text"
    _set_log_format(state.log_format)
    ctx.call_on_close(state.close)
    if verbose:
        logging.getLogger("callbackpool").setLevel(logging.DEBUG)


def main() -> None:
    """The ``callbackpool`` executable."""
    app()


def _emit(as_json: bool, document: views.JsonObject, lines: Iterable[str]) -> None:
    """The JSON document, or the text lines (a generator, so only what is shown is built)."""
    if as_json:
        typer.echo(json.dumps(document, indent=2))
    else:
        for line in lines:
            typer.echo(line)


# --- commands ----------------------------------------------------------------------------------


@app.command()
def init(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """Set up the database and the callback paths.

    Applies the pending migrations and loads the configured callback paths: paths no longer
    in the configuration are deactivated, never deleted (their history stays)."""
    state = _state(ctx)
    settings = state.settings()
    store = state.open_store(settings.database_url)
    applied = store.migrate()
    pool = build_pool(settings, store=store, migrate=False, sync_slots=False)
    sync = pool.sync_slots()
    active = pool.status().total
    document = {"migrations": applied, **views.sync_json(sync), "active": active}
    _emit(as_json, document, _init_lines(applied, sync, active))


@app.command()
def migrate(
    ctx: typer.Context,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Print the SQL of each pending migration; change nothing."),
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Apply the pending database migrations."""
    state = _state(ctx)
    store = state.open_store(state.database_url())
    pending = store.pending_migrations() if dry_run else []
    applied = [] if dry_run else store.migrate()
    document = {
        "dryRun": dry_run,
        "applied": applied,
        "pending": [{"name": name, "sql": sql} for name, sql in pending],
    }
    _emit(as_json, document, _migrate_lines(dry_run, applied, pending))


@app.command()
def status(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """Show the pool: totals and a row per slot.

    Each row: the slot's state, the lease and payment token holding it, since and until
    when, how often it was used and released, and its taints."""
    pool_status = _state(ctx).pool().status()
    _emit(as_json, views.status_json(pool_status), _status_lines(pool_status))


@app.command()
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
    pool = _state(ctx).pool()
    if ask:
        _confirm_release_all(pool)
    report = pool.sweep()
    released = pool.release_all() if release_all else []
    document = {**views.sweep_json(report), "released": [views.lease_json(x) for x in released]}
    _emit(as_json, document, _cleanup_lines(report, released, pool.policy.late_callback_window))


def _confirm_release_all(pool: CallbackPool) -> None:
    live = sum(1 for slot in pool.status().slots if slot.lease is not None)
    if live and not typer.confirm(
        f"Release all {live} live leases? Their payments become expired, their slots tainted.",
        err=True,
    ):
        raise CliError("nothing released")


def _interactive() -> bool:
    return sys.stdin is not None and sys.stdin.isatty()


@app.command()
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
    pool = _state(ctx).pool()
    try:
        if path is not None:
            path = _resolve_path(pool, path)
            lease = pool.release(path=path)
        else:
            lease = pool.release(token=token)
    except NothingToRelease:
        # The token is a secret: the message does not repeat it.
        where = f"on {path}" if path is not None else "for that payment token"
        raise NothingToRelease(f"no live lease {where}") from None
    document = {"released": views.lease_json(lease)}
    _emit(as_json, document, _released_lines([lease], pool.policy.late_callback_window))


def _resolve_path(pool: CallbackPool, name: str) -> str:
    """A slot's full path from its full path or its last segment."""
    return pool.slot_path(name)


@reports_app.command("stuck")
def stuck_report(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """Leases past their expiry, not yet ended.

    The guide's "stuck forms". Any at all means nothing is sweeping: run the service, or
    cleanup."""
    pool = _state(ctx).pool()
    leases = pool.stuck_leases()
    now = _now(pool)
    _emit(as_json, views.stuck_json(now, leases), _stuck_lines(leases, now))


def parse_duration(text: str) -> timedelta:
    """``90s``, ``30m``, ``2h``, ``1d``, or several at once: ``1h30m``."""
    try:
        return views.parse_duration(text)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


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
    pool = _state(ctx).pool()
    age = older_than if older_than is not None else 3 * pool.policy.lock_timeout
    payments = pool.orphaned_payments(age)
    now = _now(pool)
    _emit(as_json, views.orphans_json(now, age, payments), _orphan_lines(payments, age, now))


@reports_app.command("usage")
def usage_report(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """Leases per slot and how they ended.

    The guide's "usage distribution", with how many leases ended by a callback and how many
    expired: a slot whose leases keep expiring is a path the gateway may not know."""
    pool = _state(ctx).pool()
    rows = pool.usage()
    document = views.usage_json(rows)
    _emit(as_json, document, _usage_lines(rows, document["averageUsage"], _now(pool)))


# --- capacity ----------------------------------------------------------------------------------


def parse_share(text: str | float) -> float:
    """``0.01`` or ``1%``: a share strictly between 0 and 1."""
    if isinstance(text, float):  # the option's default
        return text
    raw = text.strip()
    try:
        share = float(raw[:-1]) / 100 if raw.endswith("%") else float(raw)
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not a share such as 0.01 or 1%") from None
    if not 0 < share < 1:
        raise typer.BadParameter(f"{text!r} must be between 0 and 1 (or 0% and 100%), exclusive")
    return share


def _positive_duration(text: str | timedelta) -> timedelta:
    if isinstance(text, timedelta):  # the option's default
        return text
    duration = parse_duration(text)
    if duration <= timedelta(0):
        raise typer.BadParameter(f"{text!r} must be longer than zero")
    return duration


def _positive_rate(text: str) -> float:
    try:
        rate = float(text)
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not a number") from None
    if not 0 < rate < 1e9:
        raise typer.BadParameter(f"{text!r} must be a number above zero")
    return rate


HoldOption = Annotated[
    timedelta,
    typer.Option(
        "--hold",
        parser=_positive_duration,
        metavar="DURATION",
        help="How long a lease is held on average: 90s, 3m, 10m (the lock timeout, if "
        "every customer held their slot to the end).",
    ),
]
TargetOption = Annotated[
    float,
    typer.Option(
        "--target",
        parser=parse_share,
        metavar="SHARE",
        help="The most customers turned away: 0.01 or 1%.",
    ),
]


@app.command()
def plan(
    slots: Annotated[
        int | None,
        typer.Option(
            "--slots", min=1, max=erlang.MAX_SLOTS, help="What N slots carry at the target."
        ),
    ] = None,
    arrivals: Annotated[
        float | None,
        typer.Option(
            "--arrivals",
            parser=_positive_rate,
            metavar="PER_HOUR",
            help="How many slots this many payments an hour need.",
        ),
    ] = None,
    hold: HoldOption = timedelta(minutes=10),
    target: TargetOption = 0.01,
    max_slots: Annotated[
        int,
        typer.Option("--max-slots", min=1, max=1000, help="The last row of the table."),
    ] = 20,
    as_json: JsonFlag = False,
) -> None:
    """How many callback paths for how much traffic, from Erlang B.

    --slots N: the offered load (erlangs) and the most payments an hour N slots carry with at
    most --target turned away. --arrivals R: the slots R payments an hour need. Both: also
    the share R would find every slot busy. Neither: a table over N. Needs no configuration."""
    hold_seconds = hold.total_seconds()
    if slots is None and arrivals is None:
        rows = [
            erlang.plan_for_slots(n, hold_seconds=hold_seconds, target=target)
            for n in range(1, max_slots + 1)
        ]
        document: views.JsonObject = {
            "holdSeconds": hold_seconds,
            "target": target,
            "rows": [views.plan_json(row) for row in rows],
        }
        _emit(as_json, document, _plan_table_lines(rows, hold, target))
        return
    document = {"holdSeconds": hold_seconds, "target": target}
    if slots is not None:
        document.update(
            views.plan_json(erlang.plan_for_slots(slots, hold_seconds=hold_seconds, target=target))
        )
    if arrivals is not None:
        offered = erlang.erlangs_of(arrivals, hold_seconds)
        try:
            needed = erlang.slots_needed(offered, target)
        except ValueError as exc:
            raise CliError(str(exc), USAGE) from None
        document["arrivalsPerHour"] = arrivals
        document["offeredErlangs"] = round(offered, 4)
        document["slotsNeeded"] = needed
        if slots is None:
            carried = erlang.plan_for_slots(needed, hold_seconds=hold_seconds, target=target)
            document["maxArrivalsPerHour"] = round(carried.max_arrivals_per_hour, 2)
        else:
            document["turnedAway"] = round(erlang.erlang_b(slots, offered), 6)
    _emit(as_json, document, _plan_lines(document, hold))


@app.command()
def simulate(
    arrivals: Annotated[
        float,
        typer.Option(
            "--arrivals",
            parser=_positive_rate,
            metavar="PER_HOUR",
            help="Payments an hour for the side-by-side run (Poisson arrivals).",
        ),
    ] = 60.0,
    customers: Annotated[
        int,
        typer.Option(
            "--customers",
            min=100,
            max=1_000_000,
            help="Customers replayed in each run (more: steadier figures, longer runs).",
        ),
    ] = 10_000,
    seed: Annotated[
        int, typer.Option("--seed", help="Draws the customers: same seed, same run.")
    ] = 1,
    slots: Annotated[int, typer.Option("--slots", min=1, max=1000, help="Callback paths.")] = 10,
    uniform_amount: Annotated[
        bool,
        typer.Option("--uniform-amount", help="Everybody pays the same amount."),
    ] = False,
    patience: Annotated[
        timedelta,
        typer.Option(
            "--patience",
            parser=_duration_or_zero,
            metavar="DURATION",
            help="How long a customer waits for a slot before leaving (a longer wait counts "
            "as turned away).",
        ),
    ] = timedelta(seconds=30),
    target: TargetOption = 0.01,
    policies: Annotated[
        list[str] | None,
        typer.Option(
            "--policy",
            metavar="NAME",
            help=f"Only this policy (repeatable): {', '.join(sim.POLICIES)}. Default: all.",
        ),
    ] = None,
    find_max: Annotated[
        bool,
        typer.Option(
            "--max/--no-max",
            help="Also find each policy's most payments an hour at the target, by bisection.",
        ),
    ] = True,
    jobs: Annotated[
        int,
        typer.Option("--jobs", min=1, max=64, help="Policies run in this many processes at once."),
    ] = min(3, os.cpu_count() or 1),
    as_json: JsonFlag = False,
) -> None:
    """Replay a workload against the pool on a virtual clock: the guide's policy (seed), this
    pool (callbackpool) and one that learns every departure at once (oracle), side by side.

    The workload is the issue's: 65% pay (95% approved), 15% close the payment window, 18%
    leave silently, 2% pay 10 to 25 minutes late; 8 catalogue amounts. Seeded and repeatable;
    progress on stderr. Needs no configuration and no database."""
    chosen = tuple(policies or sim.POLICIES)
    unknown = sorted(set(chosen) - set(sim.POLICIES))
    if unknown:
        raise CliError(
            f"unknown policy {unknown[0]!r}: choose from {', '.join(sim.POLICIES)}", USAGE
        )
    chosen = tuple(p for p in sim.POLICIES if p in chosen)
    workload = sim.Workload(
        arrivals_per_hour=arrivals,
        customers=customers,
        seed=seed,
        slots=slots,
        uniform_amount=uniform_amount,
        patience=patience.total_seconds(),
    )
    bar = _ProgressBar(len(chosen) * (1 + (sim.TYPICAL_SEARCH_RUNS if find_max else 0)))
    # The simulated pool's own log (thousands of ambiguous returns in the uniform-amount
    # variant) is not the command's output; --verbose still shows it.
    pool_log = logging.getLogger("callbackpool")
    quiet = pool_log.getEffectiveLevel() >= logging.WARNING
    level = pool_log.level
    if quiet:
        pool_log.setLevel(logging.ERROR)
    try:
        reports = sim.compare(
            workload, policies=chosen, target=target, find_max=find_max, jobs=jobs, on_step=bar
        )
    finally:
        bar.close()
        pool_log.setLevel(level)
    document = views.simulation_json(workload, target, reports)
    _emit(as_json, document, _simulation_lines(document))


class _ProgressBar:
    """Runs done, on stderr: a bar redrawn in place on a terminal, a line a run elsewhere."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.done = 0
        self.tty = sys.stderr.isatty()

    def __call__(self, step: sim.Step) -> None:
        self.done += 1
        self.expected = max(self.expected, self.done + 1)
        filled = round(20 * self.done / self.expected)
        text = (
            f"simulating [{'#' * filled}{'.' * (20 - filled)}] {self.done} runs · "
            f"{step.policy} at {step.arrivals_per_hour:.1f}/h: "
            f"{_percent(step.turned_away_share)} turned away"
        )
        if self.tty:
            sys.stderr.write("\r\x1b[K" + text)
            sys.stderr.flush()
        else:
            typer.echo(text, err=True)

    def close(self) -> None:
        if self.tty and self.done:
            sys.stderr.write("\n")
            sys.stderr.flush()


def _duration_or_zero(text: str | timedelta) -> timedelta:
    if isinstance(text, timedelta):  # the option's default
        return text
    if text.strip() in ("0", "0s"):
        return timedelta(0)
    return parse_duration(text)


@reports_app.command("health")
def health_report(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """Per-slot health: approvals, declines, expiries without a return, time since the last
    return, and which slots are out of rotation (and why)."""
    pool = _state(ctx).pool()
    pool_status = pool.status()
    document = views.health_json(pool_status, pool.policy.slot_health_expiries_to_sideline)
    _emit(as_json, document, _health_lines(pool_status.slots, pool_status.at))


OutcomeOption = Annotated[
    list[CallbackOutcome] | None,
    typer.Option(
        "--outcome",
        case_sensitive=False,
        help="Only returns with this outcome (repeat for several).",
    ),
]


@reports_app.command("callbacks")
def callbacks_report(
    ctx: typer.Context,
    outcome: OutcomeOption = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=500, help="Returns a page.")] = 20,
    before: Annotated[
        str | None,
        typer.Option("--before", metavar="REF", help="The page after this return (CB-12 or 12)."),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Stored returns by outcome, newest first, with their raw parameters (ExpDate masked).

    The totals by outcome come first; --before pages on."""
    pool = _state(ctx).pool()
    outcomes = tuple(outcome or ())
    records = pool.callbacks(
        outcomes=outcomes, limit=limit, before_id=None if before is None else _callback_id(before)
    )
    counts = pool.callback_counts()
    document = views.callbacks_json(records, limit=limit, outcomes=outcomes, counts=counts)
    _emit(as_json, document, _callback_lines(records, counts, document["nextBefore"]))


def _callback_id(ref: str) -> int:
    callback_id = views.callback_id_of(ref)
    if callback_id is None:
        raise typer.BadParameter(f"{ref!r} is not a return's reference (CB-12, or 12)")
    return callback_id


@review_app.command("list")
def review_list(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """What waits for a decision: each ambiguous return with the payments it could belong
    to, payments left in review, and the latest decisions."""
    pool = _state(ctx).pool()
    queue = pool.review_queue()
    decided = pool.reviews(limit=10)
    _emit(
        as_json,
        views.review_queue_json(queue, decided),
        _review_lines(queue.returns, queue.payments, decided, _now(pool), pool.gateway.currency),
    )


ReasonOption = Annotated[
    str, typer.Option("--reason", help="Why (kept with the decision, shown to other operators).")
]


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
    pool = _state(ctx).pool()
    review = pool.resolve_review(
        _callback_id(ref),
        payment_token=payment,
        others=_review_status(others, "--others"),
        by=_operator_name(by),
        reason=reason,
    )
    _emit(as_json, {"review": views.review_json(review)}, _decided_lines(review))


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
    review = (
        _state(ctx)
        .pool()
        .resolve_payment(
            token, status=_review_status(status, "--status"), by=_operator_name(by), reason=reason
        )
    )
    _emit(as_json, {"review": views.review_json(review)}, _decided_lines(review))


def _review_status(value: str, option: str) -> PaymentStatus:
    try:
        return PaymentStatus(value.strip().lower())
    except ValueError:
        raise CliError(f"{option}: {value!r} is not a payment status", USAGE) from None


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
    pool = _state(ctx).pool()
    full = _resolve_path(pool, path)
    changed = pool.sideline_slot(full, by=_operator_name(by), reason=reason)
    _emit(
        as_json,
        {"path": full, "changed": changed, "inRotation": False},
        [f"{full} {'taken out of rotation' if changed else 'was out of rotation already'}"],
    )


@slots_app.command("restore")
def slots_restore(
    ctx: typer.Context, path: SlotArgument, by: ByOption = None, as_json: JsonFlag = False
) -> None:
    """Put a slot back in rotation (a slot-health decision or an operator's undone)."""
    pool = _state(ctx).pool()
    full = _resolve_path(pool, path)
    changed = pool.restore_slot(full, by=_operator_name(by))
    _emit(
        as_json,
        {"path": full, "changed": changed, "inRotation": True},
        [f"{full} {'back in rotation' if changed else 'was in rotation already'}"],
    )


# --- the service -------------------------------------------------------------------------------

HostOption = Annotated[
    str, typer.Option("--host", envvar="CALLBACKPOOL_HOST", help="The address to listen on.")
]
PortOption = Annotated[
    int,
    typer.Option("--port", envvar="CALLBACKPOOL_PORT", min=1, max=65535, help="The port."),
]


@app.command()
def serve(
    ctx: typer.Context,
    host: HostOption = "127.0.0.1",
    port: PortOption = 8000,
    access_log: Annotated[
        bool, typer.Option("--access-log", help="Log every request (uvicorn's access log).")
    ] = False,
    log_format: LogFormatOption = None,
) -> None:
    """Serve the HTTP API, the callback routes and the pages (uvicorn, one process).

    The database is brought up to date and the configured paths loaded at start; the
    sweeper runs every sweepIntervalSeconds. Ctrl-C (or SIGTERM) stops it cleanly."""
    from .web.server import serve as serve_http

    state = _state(ctx)
    settings = state.settings()
    chosen = _log_format(log_format) or state.log_format
    with _service_logging(chosen):
        serve_http(settings, host=host, port=port, access_log=access_log, log_format=chosen)


@app.command()
def demo(
    ctx: typer.Context,
    host: HostOption = "127.0.0.1",
    port: PortOption = 8000,
    database: Annotated[
        str, typer.Option("--database", metavar="URL", help="The demo's database.")
    ] = "sqlite:///callbackpool-demo.db",
    log_format: LogFormatOption = None,
) -> None:
    """The whole flow on this machine: the example configuration, an SQLite file, the
    sandbox gateway standing in for Paygistix and a fresh admin token. Prints where to
    start: the checkout, the dashboard, the API and the token."""
    from .web.server import demo as serve_demo

    chosen = _log_format(log_format) or _state(ctx).log_format
    with _service_logging(chosen):
        serve_demo(host=host, port=port, database_url=database, echo=typer.echo, log_format=chosen)


@contextmanager
def _service_logging(log_format: logs.LogFormat) -> Iterator[None]:
    """A running service logs what it does (INFO, or DEBUG with --verbose), with times,
    instead of the one-shot commands' bare warning lines."""
    logger = logging.getLogger("callbackpool")
    handlers, level, propagate = logger.handlers[:], logger.level, logger.propagate
    handler = logs.handler(log_format)
    logger.handlers = [handler]
    logger.setLevel(min(logger.getEffectiveLevel(), logging.INFO))
    logger.propagate = False
    try:
        yield
    finally:
        logger.handlers, logger.propagate = handlers, propagate
        logger.setLevel(level)


def _now(pool: CallbackPool) -> datetime:
    """The store's time: the one the pool decides expiry by."""
    with pool.store.read() as tx:
        return tx.now


# --- text output -------------------------------------------------------------------------------


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
    yield f"{_count(active, 'callback path')} active"


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
        f"pool at {_clock_time(now)}: {status.total} slots, {status.available} available, "
        f"{status.locked} locked, {status.stuck} stuck, {status.tainted} tainted, "
        f"{status.inactive} inactive{standby}"
    )
    if not status.slots:
        yield "no callback paths: run 'callbackpool init'"
        return
    prefix, labels = _path_labels([slot.path for slot in status.slots])
    if prefix:
        yield f"paths under {prefix}"
    rows = []
    for slot, label in zip(status.slots, labels, strict=True):
        lease = slot.lease
        state = views.slot_state(slot, now)
        if lease is not None and not slot.active:
            state += ", inactive"
        rows.append(
            [
                label,
                state,
                str(lease.id) if lease else "-",
                lease.token if lease else "-",
                _ago(lease.acquired_at if lease else None, now),
                _ago(lease.expires_at if lease else None, now),
                str(slot.usage_count),
                _ago(slot.last_acquired_at, now),
                _ago(slot.last_released_at, now),
                str(slot.taints),
            ]
        )
    headers = ["PATH", "STATE", "LEASE", "TOKEN", "LOCKED", "EXPIRES"]
    headers += ["USAGE", "LAST USED", "LAST RELEASED", "TAINTS"]
    yield from _table(headers, rows, right={2, 6, 9})
    if status.waiting:
        yield f"waiting room: {_count(status.waiting, 'ticket')}"
    if status.reserve is not None and status.reserve.paths:
        yield from _reserve_lines(status.reserve, now)
    if status.capacity is not None:
        yield _capacity_line(status.capacity)


def _reserve_lines(reserve: ReserveStatus, now: datetime) -> Iterator[str]:
    yield f"reserve: {reserve.state}, {_count(len(reserve.paths), 'path')}"
    for event in reserve.events[:3]:
        yield f"  {_ago(event.at, now)} {event.action.value}: {event.reason}"


def _capacity_line(report: CapacityReport) -> str:
    counts = report.counts
    seen = (
        f"last {_span(report.window)}: {_count(counts.requests, 'request')} "
        f"({counts.leased} served at once, {counts.waited} waited, {counts.refused} turned away)"
    )
    mean, erlangs = report.holding.mean_seconds, report.offered_erlangs
    if mean is None or erlangs is None:
        return f"{seen}; no lease ended yet"
    turned_away = report.predicted_turned_away or 0.0
    return (
        f"{seen}, {report.arrivals_per_hour:.1f} an hour held {_span(timedelta(seconds=mean))} "
        f"on average: {erlangs:.2f} erlangs; Erlang B: {report.slots} slots turn away "
        f"{_percent(turned_away)}, {report.slots_needed} needed for {_percent(report.target)}"
    )


def _cleanup_lines(
    report: SweepReport, released: list[Lease], taint_window: timedelta
) -> Iterator[str]:
    yield (
        f"ended {_count(report.expired, 'expired lease')}, "
        f"dropped {_count(report.taints_dropped, 'stale taint')}, "
        f"resolved {_count(report.callbacks_resolved, 'stored return')}"
    )
    if report.tickets_expired:
        yield f"expired {_count(report.tickets_expired, 'unpolled ticket')}"
    if report.reserve is not None:
        yield f"reserve {report.reserve.action.value}: {report.reserve.reason}"
    yield from _released_lines(released, taint_window)


def _released_lines(released: list[Lease], taint_window: timedelta) -> Iterator[str]:
    for lease in released:
        yield f"released lease {lease.id} on {lease.path} (payment {lease.token})"
    if released:
        yield (
            f"the released slots stay tainted for {_span(taint_window)}, "
            "in case a customer still pays"
        )


def _stuck_lines(leases: list[Lease], now: datetime) -> Iterator[str]:
    if not leases:
        yield "no stuck leases"
        return
    yield f"{_count(len(leases), 'lease')} past expiry and not ended: nothing is sweeping"
    rows = [
        [
            lease.path,
            str(lease.id),
            lease.token,
            _ago(lease.acquired_at, now),
            _ago(lease.expires_at, now),
        ]
        for lease in leases
    ]
    yield from _table(["PATH", "LEASE", "TOKEN", "LOCKED", "EXPIRED"], rows, right={1})


def _orphan_lines(payments: list[Payment], age: timedelta, now: datetime) -> Iterator[str]:
    if not payments:
        yield f"no payments pending for more than {_span(age)}"
        return
    yield f"{_count(len(payments), 'payment')} pending for more than {_span(age)}"
    rows = [
        [
            payment.token,
            f"{format_amount(payment.amount, payment.currency)} {payment.currency}",
            _ago(payment.created_at, now),
            _ago(payment.expires_at, now),
            payment.callback_path or "-",
        ]
        for payment in payments
    ]
    yield from _table(["TOKEN", "AMOUNT", "CREATED", "EXPIRES", "PATH"], rows, right={1})


def _usage_lines(rows: list[UsageRow], average: float, now: datetime) -> Iterator[str]:
    if not rows:
        yield "no callback paths: run 'callbackpool init'"
        return
    prefix, labels = _path_labels([row.path for row in rows])
    if prefix:
        yield f"paths under {prefix}"
    table = [
        [
            label,
            "yes" if row.active else "no",
            str(row.usage_count),
            str(row.callbacks),
            str(row.expiries),
            _ago(row.last_acquired_at, now),
            _ago(row.last_released_at, now),
        ]
        for row, label in zip(rows, labels, strict=True)
    ]
    headers = ["PATH", "ACTIVE", "USAGE", "CALLBACKS", "EXPIRIES", "LAST USED", "LAST RELEASED"]
    yield from _table(headers, table, right={2, 3, 4})
    yield f"average usage: {average:.1f} leases per active slot"


def _plan_table_lines(rows: list[erlang.Plan], hold: timedelta, target: float) -> Iterator[str]:
    yield f"leases held {_span(hold)} on average, at most {_percent(target)} turned away"
    table = [
        [str(row.slots), f"{row.offered_erlangs:.3f}", f"{row.max_arrivals_per_hour:.1f}"]
        for row in rows
    ]
    yield from _table(["SLOTS", "ERLANGS", "PAYMENTS/HOUR"], table, right={0, 1, 2})


def _plan_lines(document: views.JsonObject, hold: timedelta) -> Iterator[str]:
    target = _percent(document["target"])
    held = f"holding a slot {_span(hold)} on average"
    if "arrivalsPerHour" not in document:
        yield f"{document['slots']} slots, at most {target} turned away, payments {held}:"
        yield f"  offered load      {document['offeredErlangs']:.3f} erlangs"
        yield f"  payments an hour  {document['maxArrivalsPerHour']:.1f}"
        return
    yield f"{document['arrivalsPerHour']:g} payments an hour {held}:"
    yield f"  offered load      {document['offeredErlangs']:.3f} erlangs"
    yield f"  slots needed      {document['slotsNeeded']} (for at most {target} turned away)"
    if "turnedAway" in document:
        yield (
            f"  with {document['slots']} slots   {_percent(document['turnedAway'])} turned away; "
            f"{document['slots']} slots carry {document['maxArrivalsPerHour']:.1f} "
            f"payments an hour at {target}"
        )


def _simulation_lines(document: views.JsonObject) -> Iterator[str]:
    workload = document["workload"]
    policies: dict[str, views.JsonObject] = document["policies"]
    amounts = "one amount" if workload["uniformAmount"] else "8 amounts"
    yield (
        f"{workload['slots']} slots, {workload['arrivalsPerHour']:g} payments an hour, "
        f"{workload['customers']} customers a run (seed {workload['seed']}), {amounts}, "
        f"patience {workload['patienceSeconds']:g}s"
    )
    rows: list[tuple[str, str, Callable[[views.JsonObject], str]]] = [
        ("arrivals", "arrivals", lambda p: str(p["arrivals"])),
        ("admitted", "admitted", lambda p: str(p["admitted"])),
        ("turned away", "turnedAway",
         lambda p: f"{p['turnedAway']} ({_percent(p['turnedAwayShare'])})"),
        ("waited", "waited", lambda p: str(p["waited"])),
        ("mean wait", "meanWaitSeconds", lambda p: f"{p['meanWaitSeconds']:.1f}s"),
        ("p95 wait", "p95WaitSeconds", lambda p: f"{p['p95WaitSeconds']:.1f}s"),
        ("mean hold", "meanHoldSeconds", lambda p: f"{p['meanHoldSeconds']:.0f}s"),
        ("approved payments", "approved", lambda p: str(p["approved"])),
        ("misattributed", "misattributed", lambda p: str(p["misattributed"])),
        ("lost", "lost", lambda p: str(p["lost"])),
        ("sent to review", "needsReview", lambda p: str(p["needsReview"])),
        (f"max/hour at {_percent(document['target'])}", "maxArrivalsPerHour",
         lambda p: "-" if p["maxArrivalsPerHour"] is None else f"{p['maxArrivalsPerHour']:.1f}"),
    ]  # fmt: skip
    names = list(policies)
    table = [[label, *(show(policies[name]) for name in names)] for label, _, show in rows]
    yield from _table(["", *names], table, right=set(range(1, len(names) + 1)))
    comparison = document.get("comparison") or {}
    if "callbackpoolOverSeed" in comparison:
        yield f"callbackpool carries {comparison['callbackpoolOverSeed']:.2f}× seed (target ≥ 1.5×)"
    if "callbackpoolOverOracle" in comparison:
        yield (
            f"callbackpool carries {comparison['callbackpoolOverOracle']:.2f} of oracle "
            "(target ≥ 0.85)"
        )


def _percent(share: float) -> str:
    return f"{share * 100:.3g}%"


def _health_lines(slots: Sequence[SlotView], now: datetime) -> Iterator[str]:
    if not slots:
        yield "no callback paths: run 'callbackpool init'"
        return
    prefix, labels = _path_labels([slot.path for slot in slots])
    if prefix:
        yield f"paths under {prefix}"
    rows = []
    for slot, label in zip(slots, labels, strict=True):
        health = slot.health
        rows.append(
            [
                label,
                "yes" if slot.in_rotation else ("inactive" if not slot.active else "NO"),
                str(health.approvals),
                str(health.declines),
                str(health.silent_expiries),
                str(health.expiry_streak),
                _ago(health.last_return_at, now),
            ]
        )
    headers = ["PATH", "IN ROTATION", "APPROVALS", "DECLINES", "SILENT EXPIRIES", "IN A ROW"]
    yield from _table([*headers, "LAST RETURN"], rows, right={2, 3, 4, 5})
    for slot in slots:
        if slot.sidelined:
            yield (
                f"{slot.path}: out of rotation since {_ago(slot.sidelined_at, now)} "
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
            f"{record.ref}  {_clock_time(record.received_at)}  {record.method} {record.path}  "
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
        owners = _count(len(item.candidates), "payment")
        yield (
            f"{record.ref} on {record.path}, {_ago(record.received_at, now)}: approved "
            f"{_amount(record.amount, currency)} could belong to {owners}"
        )
        for payment in item.candidates:
            yield (
                f"    {payment.token}  {payment.status.value}  created "
                f"{_ago(payment.created_at, now)}  {_customer(payment)}"
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
            f"decided {review.ref} {_ago(review.decided_at, now)} by {review.decided_by}: "
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


def _customer(payment: Payment) -> str:
    email = payment.customer.get("email") if payment.customer else None
    return str(email) if email else ""


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: set[int]) -> Iterator[str]:
    """Aligned columns; the columns in ``right`` (numbers) aligned to the right."""
    widths = [max(len(cell) for cell in column) for column in zip(headers, *rows, strict=True)]
    for cells in (headers, *rows):
        yield "  ".join(
            cell.rjust(width) if index in right else cell.ljust(width)
            for index, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()


def _path_labels(paths: Sequence[str]) -> tuple[str, list[str]]:
    """The folder all paths share (``/api/v1/payments/callback/``) and what follows it."""
    shared = paths[0][: paths[0].rfind("/") + 1] if paths else ""
    for path in paths:
        while not path.startswith(shared):
            shared = shared[: shared.rstrip("/").rfind("/") + 1]
    if shared == "/":
        return "", list(paths)
    return shared, [path[len(shared) :] for path in paths]


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _clock_time(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def _ago(moment: datetime | None, now: datetime) -> str:
    """``5m 10s ago``, ``in 9m 55s``, or ``-``."""
    if moment is None:
        return "-"
    delta = now - moment
    if delta >= timedelta(0):
        return f"{_span(delta)} ago"
    return f"in {_span(-delta)}"


def _span(delta: timedelta) -> str:
    """The two largest units of a duration: ``45s``, ``5m 10s``, ``2h 5m``, ``3d 4h``."""
    return views.span(delta)
