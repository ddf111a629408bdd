"""The hand-over of the pool's blocking calls to worker threads (web/blocking.py)."""

from __future__ import annotations

import asyncio
import threading

import pytest

from callbackpool.web.blocking import Blocking


def test_a_call_runs_in_a_worker_and_its_result_or_error_comes_back() -> None:
    blocking = Blocking(workers=2)

    async def calls() -> None:
        assert await blocking.run(threading.get_ident) != threading.get_ident()
        with pytest.raises(KeyError, match="missing"):
            await blocking.run(lambda: {}["missing"])
        assert await asyncio.gather(*(blocking.run(lambda n=n: n * n) for n in range(50))) == [
            n * n for n in range(50)
        ]

    try:
        asyncio.run(calls())
    finally:
        blocking.close()


def test_a_cancelled_caller_leaves_its_call_to_finish_and_close_waits_for_it() -> None:
    blocking = Blocking(workers=1)
    started, release, finished = threading.Event(), threading.Event(), threading.Event()

    def transaction() -> None:
        started.set()
        release.wait(5)
        finished.set()

    async def cancel_the_caller() -> None:
        caller = asyncio.ensure_future(blocking.run(transaction))
        await asyncio.get_running_loop().run_in_executor(None, started.wait, 5)
        caller.cancel()
        with pytest.raises(asyncio.CancelledError):
            await caller

    asyncio.run(cancel_the_caller())
    assert not finished.is_set()
    threading.Timer(0.2, release.set).start()
    blocking.close()  # returns once the call in flight has finished
    assert finished.is_set()

    async def after_close() -> None:
        await blocking.run(lambda: None)

    with pytest.raises(RuntimeError, match="shutting down"):
        asyncio.run(after_close())
