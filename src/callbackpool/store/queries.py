"""Named SQL sections and migrations, read from the package's ``.sql`` files."""

from __future__ import annotations

import re
from importlib import resources

_SECTION = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)
# A named parameter (:name), not a PostgreSQL cast (::type) nor a time literal's colon.
_PARAMETER = re.compile(r"(?<![:\w]):([a-z_]\w*)")


def _sections(filename: str) -> dict[str, str]:
    text = resources.files(__package__).joinpath("sql", filename).read_text(encoding="utf-8")
    parts = _SECTION.split(text)
    return {
        name: body.strip().rstrip(";") for name, body in zip(parts[1::2], parts[2::2], strict=True)
    }


def load_queries(dialect: str) -> dict[str, str]:
    """``{name: statement}``: the shared queries, each replaced by the dialect's own of the
    same name where it has one. On PostgreSQL, parameters become ``%(name)s``."""
    queries = _sections("queries.sql") | _sections(f"{dialect}.sql")
    if dialect == "postgres":
        queries = {
            name: _PARAMETER.sub(r"%(\1)s", sql.replace("%", "%%")) for name, sql in queries.items()
        }
    return queries


def load_migrations(dialect: str) -> list[tuple[str, str]]:
    """``[(name, sql)]`` of the dialect's migrations, in version order: its own folder's and
    the shared ones (``migrations/*.sql``, written in SQL both databases take)."""
    root = resources.files(__package__).joinpath("migrations")
    files = [f for f in root.iterdir() if f.name.endswith(".sql")]
    files += [f for f in root.joinpath(dialect).iterdir() if f.name.endswith(".sql")]
    files.sort(key=lambda f: f.name)
    return [(f.name.removesuffix(".sql"), f.read_text(encoding="utf-8")) for f in files]
