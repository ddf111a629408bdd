"""Running the pool's blocking calls (database transactions) off the event loop.

A plain thread pool: handing a call to it and back costs a quarter of what Starlette's
``run_in_threadpool`` (anyio's worker threads, cancel scope and capacity limiter) costs, and
the routes that serve every payment make such a call each.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")

# As many as the clients that may wait on the database at once (a write waits for its
# group's commit); threads waiting there hold no CPU.
WORKERS = 40


class Blocking:
    def __init__(self, workers: int = WORKERS) -> None:
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="callbackpool")

    async def run(self, call: Callable[[], T]) -> T:
        """``call()`` in a worker thread; its exception, if any, raised here."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    def close(self) -> None:
        self._executor.shutdown(wait=True)
