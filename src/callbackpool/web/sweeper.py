"""The sweeper: the pool's cleanup job, run in the app's lifespan every
``sweepIntervalSeconds`` (docs/design.md#the-sweeper). Safe to run on every instance at once."""

from __future__ import annotations

import asyncio
import logging

from fastapi.concurrency import run_in_threadpool

from ..domain.errors import StoreUnavailable
from ..pool import CallbackPool

log = logging.getLogger("callbackpool.sweeper")


class Sweeper:
    def __init__(self, pool: CallbackPool, interval_seconds: float) -> None:
        self.pool = pool
        self.interval_seconds = interval_seconds
        self.runs = 0
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    def start(self) -> None:
        self._stopping.clear()
        self._task = asyncio.create_task(self._run(), name="callbackpool-sweeper")

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def stop(self) -> None:
        """Stop; a sweep in progress is finished first. It runs in a worker thread, and
        cancelling the task would not stop the thread: the store would then be closed
        under it."""
        if self._task is None:
            return
        self._stopping.set()
        await self._task
        self._task = None

    async def _run(self) -> None:
        while not await stopped_within(self._stopping, self.interval_seconds):
            try:
                report = await run_in_threadpool(self.pool.sweep)
            except StoreUnavailable as exc:
                # Expected while the database is away (a restart, a failover): one line, no
                # traceback; the sweep after it catches up.
                log.warning("sweep skipped: %s; trying again in %s s", exc, self.interval_seconds)
                continue
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


async def stopped_within(stopping: asyncio.Event, seconds: float) -> bool:
    """Whether ``stopping`` is set within ``seconds``."""
    try:
        await asyncio.wait_for(stopping.wait(), timeout=seconds)
    except TimeoutError:
        return False
    return True
