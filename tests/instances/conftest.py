"""Several real ``callbackpool serve`` processes on one PostgreSQL database."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from ..conftest import DATABASES
from ..databases import url_of
from ..servers import ServeProcess, example_config, start_servers
from ..support import MERCHANT

ADMIN_TOKEN = "instances-admin-token"
SLOTS = 20
PATHS = [f"/api/v1/payments/callback/handler-{i}" for i in range(1, SLOTS + 1)]

StartInstances = Callable[..., list[ServeProcess]]


@pytest.fixture
def database() -> str:
    """A fresh, migrated database (a clone of the session's template): its connection
    string, for the test's own look at the rows. Dropped afterwards."""
    return DATABASES.create()


def instance_config(**keys: Any) -> dict[str, Any]:
    """The example configuration on the pool's 20 paths, with an admin token, Prometheus
    open to scrapes and no per-address rate limit; ``keys`` (camelCase) over it."""
    return example_config(
        **{
            "callbackPaths": PATHS,
            "adminToken": ADMIN_TOKEN,
            "metricsRequireToken": False,
            # Every customer of these tests comes from 127.0.0.1: no per-address limit.
            "createTokenRatePerMinute": 0,
            **keys,
        }
    )


@pytest.fixture
def start_instances(tmp_path: Path) -> Iterator[StartInstances]:
    """Starts ``count`` instances on a database (``CALLBACKPOOL_DATABASE_URL``, as a
    deployment sets it) and stops them all afterwards."""
    started: list[ServeProcess] = []

    def start(
        conninfo: str, count: int, *, url_options: dict[str, Any] | None = None, **keys: Any
    ) -> list[ServeProcess]:
        url = url_of(conninfo, **(url_options or {}))
        servers = start_servers(
            tmp_path / f"instances-{len(started)}",
            instance_config(**keys),
            count,
            environment={"CALLBACKPOOL_DATABASE_URL": url},
        )
        started.extend(servers)
        return servers

    yield start
    for server in started:
        server.stop()


def problems_logged(server: ServeProcess) -> list[str]:
    """The lines of a server's log at ERROR or above, and any traceback (a repeated return
    is a WARNING: expected here)."""
    return [
        line
        for line in server.output().splitlines()
        if " ERROR " in line or " CRITICAL " in line or "Traceback" in line
    ]


def rows(conninfo: str, query: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(conninfo) as conn:
        return conn.execute(query).fetchall()


def gateway_return(amount: int, pn_ref: str, *, approved: bool = True) -> dict[str, str]:
    """A plain (unsigned) Paygistix return for ``amount`` minor units, as PAYGISTIX.md shows."""
    return {
        "MerchantID": MERCHANT,
        "OrderID": pn_ref,
        "Amount": f"{amount // 100}.{amount % 100:02d}",
        "PNRef": pn_ref,
        "Result": "0" if approved else "12",
        "TxnType": "SALE",
        "Last4": "1111",
        "ExpDate": "1230",
        "CardType": "VISA",
        "AuthCode": "A1B2C3" if approved else "",
    }
