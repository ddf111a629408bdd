"""The sweeper's life: it runs every interval and never outlives its stop."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from callbackpool.domain.errors import StoreUnavailable
from callbackpool.pool.results import SweepReport
from callbackpool.web.sweeper import Sweeper

pytestmark = pytest.mark.anyio


class SlowPool:
    """A pool whose sweep takes a while, in the worker thread the sweeper runs it in."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.started = threading.Event()
        self.finished = threading.Event()
        self.sweeps = 0

    def sweep(self) -> SweepReport:
        self.started.set()
        time.sleep(self.seconds)
        self.sweeps += 1
        self.finished.set()
        return SweepReport(expired=0, taints_dropped=0, callbacks_resolved=0)


async def test_stop_waits_for_the_sweep_in_progress() -> None:
    # The lifespan closes the store right after stop(): a sweep still running then would
    # use a closed database connection (a crash, not an exception).
    pool = SlowPool(0.3)
    sweeper = Sweeper(pool, 0.01)  # type: ignore[arg-type]
    sweeper.start()
    while not pool.started.is_set():
        await asyncio.sleep(0.005)
    await sweeper.stop()
    assert pool.finished.is_set()
    assert not sweeper.running


async def test_it_sweeps_every_interval_and_stops_between_sweeps() -> None:
    pool = SlowPool(0)
    sweeper = Sweeper(pool, 0.02)  # type: ignore[arg-type]
    sweeper.start()
    await asyncio.sleep(0.2)
    started = time.perf_counter()
    await sweeper.stop()
    assert time.perf_counter() - started < 0.1  # an idle sweeper stops at once
    assert 3 <= pool.sweeps <= 12
    assert sweeper.runs == pool.sweeps


async def test_a_failing_sweep_is_logged_and_the_next_one_runs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[int] = []

    class Flaky:
        def sweep(self) -> Any:
            calls.append(1)
            if len(calls) == 1:
                raise RuntimeError("database went away")
            return SweepReport(expired=1, taints_dropped=0, callbacks_resolved=0)

    sweeper = Sweeper(Flaky(), 0.01)  # type: ignore[arg-type]
    sweeper.start()
    while len(calls) < 2:
        await asyncio.sleep(0.01)
    await sweeper.stop()
    assert any("sweep failed" in r.getMessage() and r.exc_info for r in caplog.records)


async def test_a_sweep_without_the_database_is_one_warning_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[int] = []

    class Away:
        def sweep(self) -> Any:
            calls.append(1)
            raise StoreUnavailable("PostgreSQL is unavailable (begin): connection refused")

    sweeper = Sweeper(Away(), 0.01)  # type: ignore[arg-type]
    sweeper.start()
    while len(calls) < 2:
        await asyncio.sleep(0.01)
    await sweeper.stop()
    skipped = [r for r in caplog.records if "sweep skipped" in r.getMessage()]
    assert skipped
    assert all(r.levelname == "WARNING" and r.exc_info is None for r in skipped)
    assert "connection refused" in skipped[0].getMessage()
