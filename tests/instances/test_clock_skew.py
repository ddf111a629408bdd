"""Two ``callbackpool serve`` processes whose clocks disagree by half an hour agree, over HTTP,
on which leases have expired: expiry is decided on the database's clock (docs/design.md,
invariant 6). Each process runs with Debian's libfaketime preloaded, so everything in it
that reads the time (Python, uvicorn, the sweeper, the driver) sees its own skewed clock."""

from __future__ import annotations

import glob
import os
import signal
import time
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path

import pytest

from ..conftest import DATABASES
from ..databases import url_of
from ..servers import ServeProcess, launch
from .conftest import gateway_return, instance_config, problems_logged

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

API = "/api/v1/payments"
LEASE = timedelta(seconds=3)
SKEW = {"ahead": "+15m", "behind": "-15m"}


def libfaketime() -> str:
    """Debian's libfaketime (package faketime), preloaded into the server process itself:
    the ``faketime`` wrapper would stand between the test and the process it stops."""
    found = sorted(glob.glob("/usr/lib/*/faketime/libfaketime.so.1")) + sorted(
        glob.glob("/usr/lib/faketime/libfaketime.so.1")
    )
    if not found:
        reason = "libfaketime is not installed (Debian: apt-get install faketime)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI needs the clock-skew test: {reason}")
        pytest.skip(reason)
    return found[0]


def server_clock(server: ServeProcess) -> datetime:
    """The server's own clock, as its ``Date`` header gives it."""
    with server.client() as client:
        return parsedate_to_datetime(client.get("/healthz").headers["date"])


def status(server: ServeProcess, token: str) -> tuple[str, str]:
    with server.client() as client:
        body = client.get(f"{API}/check-status/{token}").json()
    return body["status"], body["expiresAt"]


def create(server: ServeProcess, amount: int) -> tuple[str, str]:
    with server.client() as client:
        answer = client.post(f"{API}/create-token", json={"amount": amount})
    assert answer.status_code == 201, answer.text
    return answer.json()["token"], answer.json()["formConfig"]["callbackPath"]


def test_instances_with_skewed_clocks_agree_on_expiry(tmp_path: Path) -> None:
    library = libfaketime()
    url = url_of(DATABASES.create())
    config = instance_config(
        lockTimeoutMinutes=LEASE.total_seconds() / 60, sweepIntervalSeconds=0.2
    )
    servers = {
        name: launch(
            tmp_path,
            config,
            name=name,
            environment={
                "CALLBACKPOOL_DATABASE_URL": url,
                "LD_PRELOAD": library,
                "FAKETIME": skew,  # an offset from the real time, the clock running
            },
        )
        for name, skew in SKEW.items()
    }
    try:
        for server in servers.values():
            server.wait_until_serving()
        ahead, behind = servers["ahead"], servers["behind"]
        # Their own clocks are half an hour apart (so the skew is real, in every layer).
        assert server_clock(ahead) - server_clock(behind) > timedelta(minutes=29)

        # A lease taken by the server that is behind. The one ahead sweeps every 0.2 s and
        # believes 15 minutes have passed: on its own clock it would expire the lease at once.
        token, _ = create(behind, 1000)
        time.sleep(1)
        assert status(ahead, token)[0] == status(behind, token)[0] == "pending"
        # Both state the one expiry, on the database's clock, whoever is asked.
        expires = datetime.fromisoformat(status(ahead, token)[1])
        assert status(behind, token)[1] == status(ahead, token)[1]
        assert abs(expires - datetime.now(UTC) - LEASE) < timedelta(seconds=5)
        time.sleep(LEASE.total_seconds())
        # Due on the database's clock: the server that is behind would, on its own, wait
        # another 15 minutes.
        assert status(behind, token)[0] == "expired"
        assert status(ahead, token)[0] == "expired"

        # The other way round: taken ahead, not expired early by either, paid in time.
        token, path = create(ahead, 2000)
        time.sleep(1)
        with behind.client() as client:
            back = client.get(path, params=gateway_return(2000, "SKEW-1"))
        assert back.headers["location"].startswith("/payment-success?ref=CB-")
        assert status(ahead, token)[0] == "completed"
        for server in servers.values():
            assert problems_logged(server) == [], server.output()
    finally:
        for server in servers.values():
            assert server.stop() in (0, -signal.SIGTERM), server.output()
