"""Storage adapters, chosen by database URL."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit, urlunsplit

from ..clock import Clock
from ..domain.errors import ConfigurationError
from ..store.port import Store

DEFAULT_DATABASE_URL = "sqlite:///callbackpool.db"

# Options of ours in a PostgreSQL URL's query; every other one goes to libpq as it is.
_POSTGRES_OPTIONS: dict[str, tuple[str, type[int] | type[float]]] = {
    "pool_min_size": ("min_size", int),
    "pool_max_size": ("max_size", int),
    "timeout": ("timeout", float),
}


def open_store(url: str, *, clock: Clock | None = None) -> Store:
    """The store a database URL names: ``sqlite:///relative.db``, ``sqlite:////abs/path.db``
    or ``sqlite:///:memory:`` (options as a query: ``?synchronous=normal&busy_timeout=5``), or
    libpq's ``postgresql://`` URL with libpq's options and the store's (docs/deploying.md)."""
    parts = urlsplit(url)
    if parts.scheme in ("postgresql", "postgres"):
        return _open_postgres(url, clock)
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
        "databaseUrl",
        f"unsupported database URL {url!r} (use sqlite:///file.db or postgresql://host/db)",
    )


def _open_postgres(url: str, clock: Clock | None) -> Store:
    try:
        from .postgres import PostgresStore
    except ImportError as exc:
        raise ConfigurationError(
            "databaseUrl",
            f"a PostgreSQL URL needs the postgres extra: pip install 'callbackpool[postgres]' "
            f"({exc.name} is missing)",
        ) from None
    parts = urlsplit(url)
    options: dict[str, Any] = {}
    passed_on: list[str] = []
    # The other options stay exactly as written: libpq decodes them itself.
    for item in filter(None, parts.query.split("&")):
        key, _, value = item.partition("=")
        if key not in _POSTGRES_OPTIONS:
            passed_on.append(item)
            continue
        name, kind = _POSTGRES_OPTIONS[key]
        try:
            options[name] = kind(unquote(value))
        except ValueError:
            raise ConfigurationError("databaseUrl", f"{key}={value!r} is not a number") from None
    conninfo = urlunsplit(parts._replace(query="&".join(passed_on)))
    try:
        return PostgresStore(conninfo, clock=clock, **options)
    except ValueError as exc:
        raise ConfigurationError("databaseUrl", str(exc)) from exc
