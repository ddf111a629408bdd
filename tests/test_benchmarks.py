"""The benchmarks still run (they are not tests of speed, and are not run by the suite in
full: a few cycles each, so that a change to the schema or the API cannot leave them
broken until someone next measures)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).parents[1] / "bench"

pytestmark = pytest.mark.slow


def run(script: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, str(BENCH / script), *args],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_lease_cycle_runs_and_ends_with_its_figure() -> None:
    out = run("lease_cycle.py", "--only", "sqlite", "--cycles", "40", "--repeat", "1")
    assert re.search(r"^lease_cycle sqlite ratio=\d+\.\d\d$", out.strip().splitlines()[-1])


@pytest.mark.postgres
def test_lease_cycle_runs_on_postgresql() -> None:
    import psycopg

    from .databases import ADMIN_URL, unavailable

    try:  # the server answers (or the test skips; under CI=true it fails)
        psycopg.connect(ADMIN_URL, connect_timeout=5).close()
    except psycopg.OperationalError as exc:
        unavailable(f"PostgreSQL at {ADMIN_URL} is unreachable: {exc}")
    out = run("lease_cycle.py", "--only", "postgres", "--postgres", ADMIN_URL, "--pg-cycles", "20")
    assert re.search(r"^lease_cycle postgres ratio=\d+\.\d\d$", out.strip().splitlines()[-1])


def test_http_roundtrip_runs_and_ends_with_its_figures() -> None:
    out = run("http_roundtrip.py", "--only", "sqlite", "--seconds", "1", "--clients", "4")
    last = out.strip().splitlines()[-1]
    assert re.search(r"^http_roundtrip sqlite ratio=\d+\.\d\d p99_ms=\d+\.\d$", last), out
    assert "errors 0" in out
