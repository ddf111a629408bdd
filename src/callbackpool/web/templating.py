"""The Jinja2 templates (autoescaped: every value a page shows is escaped)."""

from __future__ import annotations

from pathlib import Path

from fastapi.templating import Jinja2Templates

from ..domain.money import format_amount

HERE = Path(__file__).parent
STATIC_DIR = HERE / "static"

templates = Jinja2Templates(directory=HERE / "templates")


def _money(minor: int, currency: str) -> str:
    return format_amount(minor, currency)


templates.env.filters["money"] = _money
