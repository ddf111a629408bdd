"""The commands that run the service: ``serve`` (the HTTP API, the callback routes and the
pages) and ``demo`` (the whole flow on this machine with the sandbox gateway)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import typer

from .. import logs
from .app import DRIVER_LOGGER, LogFormatOption, cli_state, logging_only_to, parse_log_format

HostOption = Annotated[
    str, typer.Option("--host", envvar="CALLBACKPOOL_HOST", help="The address to listen on.")
]
PortOption = Annotated[
    int,
    typer.Option("--port", envvar="CALLBACKPOOL_PORT", min=1, max=65535, help="The port."),
]


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
    from ..web import create_app
    from ..web.server import serve as serve_http

    settings = cli_state(ctx).settings()
    with _service_logging(ctx, log_format) as chosen:
        app = create_app(settings)
        serve_http(app, host=host, port=port, access_log=access_log, log_format=chosen)


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
    from ..web.server import demo as serve_demo

    with _service_logging(ctx, log_format) as chosen:
        serve_demo(host=host, port=port, database_url=database, echo=typer.echo, log_format=chosen)


@contextmanager
def _service_logging(ctx: typer.Context, log_format: str | None) -> Iterator[logs.LogFormat]:
    """A running service logs what it does (INFO, or DEBUG with --verbose), with times,
    instead of the one-shot commands' bare warning lines; in the command's --log-format, else
    the global one. Yields the format chosen."""
    chosen = parse_log_format(log_format) or cli_state(ctx).log_format
    handler = logs.handler(chosen)
    level = min(logging.getLogger("callbackpool").getEffectiveLevel(), logging.INFO)
    # The driver's warnings (a connection lost or refused) in the same format.
    with (
        logging_only_to(handler, "callbackpool", level),
        logging_only_to(handler, DRIVER_LOGGER, logging.WARNING),
    ):
        yield chosen


COMMANDS = (serve, demo)
