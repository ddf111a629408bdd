"""The command line: ``callbackpool [--config PATH] [--database URL] COMMAND``.

This holds the service's commands, ``serve`` and ``demo``; the operator's commands sit
beside them under the same global options.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from .config import Settings, load_settings
from .domain.errors import CallbackPoolError, ConfigurationError

CONFIG_ENV = "CALLBACKPOOL_CONFIG"
DATABASE_ENV = "CALLBACKPOOL_DATABASE_URL"
DEFAULT_CONFIG = Path("paygistix-forms.json")
FAILURE = 1
USAGE = 2


@dataclass
class CliState:
    config: Path | None = None
    database: str | None = None

    def settings(self) -> Settings:
        path = self.config
        if path is None and DEFAULT_CONFIG.is_file():
            path = DEFAULT_CONFIG
        if path is None:
            raise ConfigurationError(
                "config", f"pass --config PATH, set {CONFIG_ENV}, or run where {DEFAULT_CONFIG} is"
            )
        return load_settings(path, overrides={"database_url": self.database})


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
        help="The database, e.g. sqlite:///callbackpool.db. Default: the configuration's "
        "databaseUrl.",
    ),
]
HostOption = Annotated[
    str, typer.Option("--host", envvar="CALLBACKPOOL_HOST", help="The address to listen on.")
]
PortOption = Annotated[
    int,
    typer.Option("--port", envvar="CALLBACKPOOL_PORT", min=1, max=65535, help="The port."),
]

app = typer.Typer(
    name="callbackpool",
    help="Lease pre-registered callback URLs to pending payments.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


@app.callback()
def _global_options(
    ctx: typer.Context, config: ConfigOption = None, database: DatabaseOption = None
) -> None:
    ctx.obj = CliState(config=config, database=database)


@app.command()
def serve(
    ctx: typer.Context,
    host: HostOption = "127.0.0.1",
    port: PortOption = 8000,
    access_log: Annotated[
        bool, typer.Option("--access-log", help="Log every request (uvicorn's access log).")
    ] = False,
) -> None:
    """Serve the HTTP API, the callback routes and the pages (uvicorn, one process)."""
    from .web.server import serve as run_server

    settings = ctx.ensure_object(CliState).settings()
    run_server(settings, host=host, port=port, access_log=access_log)


@app.command()
def demo(
    host: HostOption = "127.0.0.1",
    port: PortOption = 8000,
    database: Annotated[
        str, typer.Option("--database", metavar="URL", help="The demo's database.")
    ] = "sqlite:///callbackpool-demo.db",
) -> None:
    """Run the whole flow on this machine: the example configuration, an SQLite file, the
    sandbox gateway and a fresh admin token. Prints where to start."""
    from .web.server import demo as run_demo

    run_demo(host=host, port=port, database_url=database, echo=typer.echo)


def main() -> None:
    """The ``callbackpool`` executable: errors are one line on stderr, never a traceback."""
    try:
        app()
    except ConfigurationError as exc:
        typer.echo(f"error: {exc.problem if exc.key == 'config' else exc.message}", err=True)
        sys.exit(USAGE)
    except CallbackPoolError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        sys.exit(FAILURE)
