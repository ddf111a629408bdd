"""What every command shares: the Typer app and its global options (``CliState``),
``--json`` (``JsonFlag`` and ``emit``), the options several commands take, and the
translation of every error into one line on stderr and an exit code (``_Group.main``):
0 done, 1 an operational failure (nothing to release, the database is unavailable or not
initialised), 2 bad usage or configuration. Never a traceback.
"""

from __future__ import annotations

import getpass
import json
import logging
import os
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from .. import logs, views
from ..clock import Clock
from ..compose import build_pool
from ..config import Settings, load_settings
from ..domain.errors import (
    CallbackPoolError,
    ConfigurationError,
    InvalidReview,
    UnknownCallback,
    UnknownSlot,
)
from ..pool import CallbackPool
from ..store import DEFAULT_DATABASE_URL, open_store
from ..store.port import Store

log = logging.getLogger("callbackpool.cli")

CONFIG_ENV = "CALLBACKPOOL_CONFIG"
DEFAULT_CONFIG = Path("paygistix-forms.json")

FAILURE = 1
USAGE = 2

# The PostgreSQL driver's logger (its connection pool's warnings).
DRIVER_LOGGER = "psycopg"


class CliError(Exception):
    """A failure the command line itself finds, with the exit code it ends in."""

    def __init__(self, message: str, exit_code: int = FAILURE) -> None:
        super().__init__(message)
        self.exit_code = exit_code


# --- running the app: one line per error, an exit code, log lines on stderr -------------------


class _Group(TyperGroup):
    """The root command. It runs the app and turns every error into ``error: …`` on stderr
    and an exit code, for the installed executable and ``CliRunner`` alike."""

    def main(self, *args: Any, standalone_mode: bool = True, **extra: Any) -> Any:
        extra["standalone_mode"] = False  # the errors are caught here, not by Click
        with _logging_to_stderr():
            try:
                result = super().main(*args, **extra)
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
        # The driver's connection pool warns at each failed connection attempt; the
        # command's one ``error:`` line says what failed instead (``--verbose`` shows them).
        with logging_only_to(handler, DRIVER_LOGGER, logging.CRITICAL + 1):
            yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


@contextmanager
def logging_only_to(handler: logging.Handler, logger_name: str, level: int) -> Iterator[None]:
    """A logger's lines through ``handler`` alone, from ``level`` up, for the block's length."""
    logger = logging.getLogger(logger_name)
    handlers, saved_level, propagate = logger.handlers[:], logger.level, logger.propagate
    logger.handlers, logger.propagate = [handler], False
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.handlers, logger.propagate = handlers, propagate
        logger.setLevel(saved_level)


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


def cli_state(ctx: typer.Context) -> CliState:
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
        envvar="CALLBACKPOOL_DATABASE_URL",
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
LogFormatOption = Annotated[
    str | None,
    typer.Option(
        "--log-format",
        envvar="CALLBACKPOOL_LOG_FORMAT",
        metavar="text|json",
        help="Log lines for people (text) or one JSON object a line for machines (json).",
    ),
]
ByOption = Annotated[
    str | None,
    typer.Option(
        "--by",
        envvar="CALLBACKPOOL_OPERATOR",
        metavar="NAME",
        help="Who decides (kept with the decision). Default: the login name.",
    ),
]
ReasonOption = Annotated[
    str, typer.Option("--reason", help="Why (kept with the decision, shown to other operators).")
]


def parse_log_format(value: str | None) -> logs.LogFormat | None:
    if value is None:
        return None
    for known in logs.LOG_FORMATS:
        if value.strip().lower() == known:
            return known
    raise typer.BadParameter(f"{value!r} is not a log format: text or json")


def operator_name(by: str | None) -> str:
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


@app.callback()
def _global_options(
    ctx: typer.Context,
    config: ConfigOption = None,
    database: DatabaseOption = None,
    verbose: VerboseFlag = False,
    log_format: LogFormatOption = None,
) -> None:
    state = cli_state(ctx)
    state.config = config
    state.database = database
    state.log_format = parse_log_format(log_format) or "text"
    for handler in logging.getLogger("callbackpool").handlers:
        if isinstance(handler, _StderrHandler):
            handler.log_format = state.log_format
    ctx.call_on_close(state.close)
    if verbose:
        logging.getLogger("callbackpool").setLevel(logging.DEBUG)
        logging.getLogger(DRIVER_LOGGER).setLevel(logging.WARNING)


def main() -> None:
    """The ``callbackpool`` executable."""
    app()


def command_group(help: str) -> typer.Typer:
    """A command with subcommands (``reports``, ``review``, ``slots``): its help when bare."""
    return typer.Typer(help=help, no_args_is_help=True, rich_markup_mode=None)


def emit(as_json: bool, document: views.Out, lines: Iterable[str]) -> None:
    """The JSON document (the API's, for the same thing), or the text lines (a generator,
    so only what is shown is built)."""
    if as_json:
        typer.echo(json.dumps(document.model_dump(mode="json", by_alias=True), indent=2))
    else:
        for line in lines:
            typer.echo(line)


def parse_duration(text: str) -> timedelta:
    """``90s``, ``30m``, ``2h``, ``1d``, or several at once: ``1h30m``."""
    try:
        return views.parse_duration(text)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
