"""The command line: ``callbackpool [--config PATH] [--database URL] COMMAND``: the
operator's commands, and ``serve`` and ``demo`` that run the service. ``app`` holds what
every command shares; the commands, a family a module, are wired to it here in the order
``--help`` lists them.
"""

from __future__ import annotations

from . import capacity, pool_commands, reports, service
from .app import CliState, app, main, parse_duration

__all__ = ["CliState", "app", "main", "parse_duration"]

for command in (*pool_commands.COMMANDS, *capacity.COMMANDS, *service.COMMANDS):
    app.command()(command)
app.add_typer(reports.reports_app, name="reports")
app.add_typer(reports.review_app, name="review")
app.add_typer(pool_commands.slots_app, name="slots")
