"""Bringing the database up to date when the service starts (the migrations, then the
paths), then starting the sweeper. A database away at the start is waited for in the
background while the service answers 503 (docs/deploying.md, "During a database outage"); any
other failure at the first attempt ends the start, as restarting will not mend it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from fastapi.concurrency import run_in_threadpool

from ..domain.errors import StoreUnavailable
from ..pool import CallbackPool
from .sweeper import Sweeper, stopped_within

log = logging.getLogger("callbackpool.web")

FIRST_RETRY_SECONDS = 0.5
LAST_RETRY_SECONDS = 5.0


class Startup:
    def __init__(self, pool: CallbackPool, sweeper: Sweeper, on_ready: Callable[[], None]) -> None:
        self.pool = pool
        self.sweeper = sweeper
        self.on_ready = on_ready
        self.ready = False
        # Why it is not ready yet, as /readyz says it (the details are in the log).
        self.problem = "the database is unavailable"
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def begin(self) -> None:
        """The first attempt, in the app's lifespan."""
        try:
            await run_in_threadpool(self._prepare)
        except StoreUnavailable as exc:
            log.warning(
                "the database is unavailable at start (%s): answering 503 until it is back",
                exc.message,
            )
            self._task = asyncio.create_task(self._keep_trying(), name="callbackpool-startup")
            return
        self._done()

    def _prepare(self) -> None:
        self.pool.store.migrate()
        self.pool.sync_slots()

    async def _keep_trying(self) -> None:
        delay = FIRST_RETRY_SECONDS
        while not await stopped_within(self._stopping, delay):
            try:
                await run_in_threadpool(self._prepare)
            except StoreUnavailable as exc:
                self.problem = "the database is unavailable"
                log.warning("the database is still unavailable (%s)", exc.message)
            except Exception:
                self.problem = "start-up failed (see the log)"
                # The database answers but refuses: an operator must look (the log, and
                # /readyz stays 'starting'); trying again costs little meanwhile.
                log.exception("start-up failed; trying again in %s s", LAST_RETRY_SECONDS)
                delay = LAST_RETRY_SECONDS
            else:
                self._done()
                return
            delay = min(delay * 2, LAST_RETRY_SECONDS)

    def _done(self) -> None:
        self.ready = True
        self.sweeper.start()
        self.on_ready()

    async def stop(self) -> None:
        """Stop trying; an attempt in progress is finished first (it runs in a thread)."""
        self._stopping.set()
        if self._task is not None:
            await self._task
            self._task = None
