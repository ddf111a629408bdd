"""The Jinja2 templates (autoescaped: every value a page shows is escaped)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from fastapi.templating import Jinja2Templates

from ..domain.money import format_amount
from ..views import masked_params, span

HERE = Path(__file__).parent
STATIC_DIR = HERE / "static"

templates = Jinja2Templates(directory=HERE / "templates")


def _ago(moment: datetime | None, now: datetime) -> str:
    """``5m 10s ago``, ``in 9m 55s``, ``-``: a time relative to the page's."""
    if moment is None:
        return "–"
    seconds = int((now - moment).total_seconds())
    text = span(timedelta(seconds=abs(seconds)))
    return f"{text} ago" if seconds >= 0 else f"in {text}"


def _clock(moment: datetime | None) -> str:
    return "–" if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


templates.env.filters["money"] = format_amount
templates.env.filters["short"] = lambda token: f"{token[:10]}…" if token else "–"
templates.env.filters["clock"] = _clock
templates.env.filters["leaf"] = lambda path: path.rstrip("/").rsplit("/", 1)[-1]
templates.env.globals["ago"] = _ago
# An asset's URL: a path, never built from the request's Host header (web/hosts.py).
templates.env.globals["asset"] = lambda path: f"/static/{path}"
templates.env.globals["masked"] = masked_params
