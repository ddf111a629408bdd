"""Two ``callbackpool serve`` processes on one SQLite file, over real HTTP: each runs the
routes of every payment on its event loop, and its writes meet the other's on SQLite's
lock (a write that would wait goes to a worker thread). The same run and the same checks
as several instances on one PostgreSQL database (tests/instances)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from ..instances.conftest import instance_config
from ..instances.test_many_instances import check_the_run, serve_customers
from ..servers import start_servers

pytestmark = pytest.mark.slow


def test_two_instances_share_one_sqlite_file_over_http(tmp_path: Path) -> None:
    database = tmp_path / "pool.db"
    servers = start_servers(
        tmp_path,
        instance_config(),
        2,
        environment={"CALLBACKPOOL_DATABASE_URL": f"sqlite:///{database}"},
    )

    def rows(query: str) -> list[tuple[Any, ...]]:
        with sqlite3.connect(database) as connection:
            return connection.execute(query).fetchall()

    try:
        check_the_run(servers, serve_customers(servers), rows)
    finally:
        for server in servers:
            server.stop()
