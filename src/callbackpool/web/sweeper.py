"""The sweeper: the pool's cleanup job, run in the app's lifespan every
``sweepIntervalSeconds`` (DESIGN.md §4). Safe to run on every instance at once."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from fastapi.concurrency import run_in_threadpool

from ..pool import CallbackPool

log = logging.getLogger("callbackpool.sweeper")


class Sweeper:
    def __init__(self, pool: CallbackPool, interval_seconds: float) -> None:
        self.pool = pool
        self.interval_seconds = interval_seconds
        self.runs = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="callbackpool-sweeper")

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def stop(self) -> None:
        """Stop after the sweep in progress, if any, has finished (it runs in a thread and
        is never abandoned half-way)."""
        if self._task is None:
            return
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_seconds)
            try:
                report = await run_in_threadpool(self.pool.sweep)
            except Exception:
                log.exception("sweep failed; trying again in %s s", self.interval_seconds)
                continue
            self.runs += 1
            if report.expired or report.taints_dropped or report.callbacks_resolved:
                log.info(
                    "sweep: %d leases expired, %d taints dropped, %d stored returns resolved",
                    report.expired,
                    report.taints_dropped,
                    report.callbacks_resolved,
                )
