"""Storage adapters, chosen by database URL."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from ..clock import Clock
from ..domain.errors import ConfigurationError
from ..ports import Store

DEFAULT_DATABASE_URL = "sqlite:///callbackpool.db"


def open_store(url: str, *, clock: Clock | None = None) -> Store:
    """The store a database URL names.

    ``sqlite:///relative.db``, ``sqlite:////absolute/path.db`` or ``sqlite:///:memory:``
    (options as a query: ``?synchronous=normal&busy_timeout=5``).
    """
    parts = urlsplit(url)
    if parts.scheme == "sqlite":
        from .sqlite import SqliteStore

        path = parts.path[1:] if parts.path.startswith("/") else parts.path
        if not path:
            raise ConfigurationError("databaseUrl", f"no file in {url!r} (sqlite:///file.db)")
        options = {key: values[-1] for key, values in parse_qs(parts.query).items()}
        try:
            return SqliteStore(
                path if path == ":memory:" else Path(path),
                clock=clock,
                synchronous=options.get("synchronous", "FULL"),
                busy_timeout=float(options.get("busy_timeout", "10")),
            )
        except ValueError as exc:
            raise ConfigurationError("databaseUrl", str(exc)) from exc
    raise ConfigurationError(
        "databaseUrl", f"unsupported database URL {url!r} (use sqlite:///file.db)"
    )
