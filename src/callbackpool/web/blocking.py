"""Running the pool's blocking calls (database transactions) off the event loop.

``serve`` runs the calls of the routes every payment makes on the event loop itself, where
the store can (SQLite: store/sqlite_loop.py, only the commit waits on a thread); elsewhere,
and for every other call, ``run`` hands the call to a worker thread.

A fixed set of worker threads taking calls from one queue, each answering its caller's
future on the event loop. On PostgreSQL the routes that serve every payment make such a call
each, so the hand-over is kept to a queue put and one ``call_soon_threadsafe``: Starlette's
``run_in_threadpool`` (anyio's worker threads, cancel scope and capacity limiter) cost four
times as much, and ``loop.run_in_executor`` takes more steps (a ``concurrent.futures``
future with its condition, chained to an asyncio future). docs/performance.md says what
the hand-over still costs.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

# As many as the clients that may wait on the database at once (a write waits for its
# group's commit); threads waiting there hold no CPU.
WORKERS = 40

_Call = tuple[Callable[[], Any], asyncio.AbstractEventLoop, "asyncio.Future[Any]"]


class Blocking:
    def __init__(self, workers: int = WORKERS) -> None:
        self._workers = workers
        self._calls: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._closed = False

    async def run(self, call: Callable[[], T]) -> T:
        """``call()`` in a worker thread; its exception, if any, raised here. A caller that
        is cancelled meanwhile leaves the call to finish (a transaction is never cut short)."""
        if not self._threads:
            self._start()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._calls.put((call, loop, future))
        return await future

    async def serve(self, call: Callable[[], T]) -> T:
        """``call()`` on the event loop if the store runs calls there, else in a worker
        thread. Only for a call that reads before its first write transaction and waits on
        nothing but the database (``LoopCalls.run``)."""
        return await self.run(call)

    async def drain(self) -> None:
        """Wait for the writes of calls served on the event loop to commit."""
        return

    def close(self) -> None:
        """Wait for the calls in flight and stop the threads; no call is taken after."""
        with self._lock:
            self._closed = True
            threads, self._threads = self._threads, []
        for _ in threads:
            self._calls.put(None)
        for thread in threads:
            thread.join()

    def _start(self) -> None:
        with self._lock:
            if self._closed:
                raise RuntimeError("the service is shutting down")
            while len(self._threads) < self._workers:
                thread = threading.Thread(
                    target=self._work, name=f"callbackpool-{len(self._threads)}", daemon=True
                )
                thread.start()
                self._threads.append(thread)

    def _work(self) -> None:
        while (item := self._calls.get()) is not None:
            call, loop, future = item
            try:
                result = call()
            except BaseException as exc:  # handed to the caller, like any exception
                _answer(loop, _fail, future, exc)
            else:
                _answer(loop, _succeed, future, result)


def _answer(
    loop: asyncio.AbstractEventLoop,
    settle: Callable[[asyncio.Future[Any], Any], None],
    future: asyncio.Future[Any],
    value: Any,
) -> None:
    # A loop closed meanwhile has no one left to answer.
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(settle, future, value)


def _succeed(future: asyncio.Future[Any], result: Any) -> None:
    if not future.done():
        future.set_result(result)


def _fail(future: asyncio.Future[Any], error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)
