"""Named SQL sections, read from the package's ``.sql`` files."""

from __future__ import annotations

import re
from importlib import resources

_SECTION = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


def load_queries(filename: str) -> dict[str, str]:
    """``{name: statement}`` for every ``-- name: x`` section of ``sql/<filename>``."""
    text = resources.files(__package__).joinpath("sql", filename).read_text(encoding="utf-8")
    parts = _SECTION.split(text)
    return {
        name: body.strip().rstrip(";") for name, body in zip(parts[1::2], parts[2::2], strict=True)
    }


def load_migrations(dialect: str) -> list[tuple[str, str]]:
    """``[(name, sql)]`` of the dialect's migration files, in version order."""
    folder = resources.files(__package__).joinpath("migrations", dialect)
    files = sorted((f for f in folder.iterdir() if f.name.endswith(".sql")), key=lambda f: f.name)
    return [(f.name.removesuffix(".sql"), f.read_text(encoding="utf-8")) for f in files]
