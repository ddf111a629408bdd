"""The SQLite store's calls run on the event loop, with only each group's commit on a thread.

A call of the pool on the busiest routes reads a few rows and writes a few more: tens of
microseconds of SQLite each, and nothing to wait for but the commit's fsync. Handing each
call to a worker thread cost more than the call (the hand-over, and each statement letting
go of the GIL for a worker to win back from the event loop: docs/performance.md). So the
service runs these calls on the event loop itself:

- a read runs at once, on the loop thread's own connection (WAL readers never wait), or,
  once the call has written, on the writer connection, which sees what it wrote;
- the first write opens a *loop batch*: the process's write turn, taken without waiting, and
  ``BEGIN IMMEDIATE`` on the writer connection, tried once. Every call's write transaction
  until the next turn of the loop joins the batch under a savepoint (a failure undoes only
  its own writes);
- the batch is then committed on a thread, and each call that wrote in it answers once that
  commit (and its fsync) is done. What had to wait for the commit (status hooks, observers:
  ``Store.after_commit``) runs after it, on that thread, before anyone is answered.

A write that cannot begin without waiting (the batch is being committed; another thread of
the process or another process holds the write lock) raises ``WouldBlock`` before anything
was written; the call is then run again, after the commit or on a worker thread. A call run
here must therefore do nothing but read before its first write transaction, and must not
wait on anything else (a network call): those calls go to a worker thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar, cast

from ..domain.errors import StoreUnavailable

if TYPE_CHECKING:
    from .sqlite import SqliteStore

T = TypeVar("T")

log = logging.getLogger("callbackpool")


class WouldBlock(Exception):
    """A write transaction could not begin without waiting; nothing was written. ``until``
    is the commit in flight, to wait for before trying again; None: run the call on a thread."""

    def __init__(self, until: asyncio.Future[None] | None) -> None:
        super().__init__("the write would wait")
        self.until = until


@dataclass(eq=False)
class _Batch:
    """Writes of the calls run on the loop since the batch began, waiting for one commit."""

    committed: asyncio.Future[None]  # its result: the commit is durable (or its error)
    released: asyncio.Future[None]  # the writer connection is free again (never fails)
    after_commit: list[Callable[[], None]] = field(default_factory=list)
    committing: bool = False


@dataclass(eq=False)
class _Call:
    """One call running on the loop: the batch its writes joined, if any."""

    batch: _Batch | None = None


class SqliteLoopCalls:
    """Runs calls of the pool on the event loop against one ``SqliteStore`` file."""

    def __init__(self, store: SqliteStore) -> None:
        self._store = store
        self._batch: _Batch | None = None
        self._local = threading.local()  # the call running on this thread, if any
        self._committer: ThreadPoolExecutor | None = None

    async def run(
        self, call: Callable[[], T], offload: Callable[[Callable[[], T]], Awaitable[T]]
    ) -> T:
        """``call()`` on the loop, answered once what it wrote is durable; ``offload`` runs
        it on a worker thread instead when a write could not begin without waiting."""
        while True:
            running, result, error = self._attempt(call)
            if isinstance(error, WouldBlock):
                if error.until is None:
                    return await offload(call)
                await error.until  # the batch being committed: then once more
                continue
            if running.batch is not None:
                await asyncio.shield(running.batch.committed)
            if error is not None:
                raise error  # once the call's writes are in, as a thread's call would
            return cast(T, result)

    def _attempt(self, call: Callable[[], T]) -> tuple[_Call, T | None, BaseException | None]:
        """Run ``call`` as the call running on this thread, and only while it runs."""
        running = _Call()
        self._local.call = running
        try:
            return running, call(), None
        except BaseException as exc:
            return running, None, exc
        finally:
            self._local.call = None

    def after_commit(self, announce: Callable[[], None]) -> bool:
        """Keep ``announce`` for after the commit, if a call running here has writes waiting
        for it (True); otherwise the caller announces at once (False)."""
        running: _Call | None = getattr(self._local, "call", None)
        if running is None or running.batch is None:
            return False
        running.batch.after_commit.append(announce)
        return True

    def running(self) -> bool:
        """Whether a call runs on the loop in this thread (its writes join the loop batch)."""
        return getattr(self._local, "call", None) is not None

    def has_written(self) -> bool:
        """Whether the call running here has writes in the batch: it reads them back
        through the writer connection, as they are not committed yet."""
        running: _Call | None = getattr(self._local, "call", None)
        return running is not None and running.batch is not None

    def join(self) -> None:
        """Before a write transaction of the call running here: join the loop's batch,
        beginning one if there is none; WouldBlock if that cannot be done at once."""
        running: _Call = self._local.call
        if running.batch is not None:
            return
        if self._batch is None:
            self._begin()
        elif self._batch.committing:
            raise WouldBlock(self._batch.released)

    def wrote(self) -> None:
        """After a write transaction of the call running here: its writes are in the batch."""
        running: _Call = self._local.call
        running.batch = running.batch or self._batch

    async def drain(self) -> None:
        """Wait for the batch in flight, if any, to be committed; stop the commit thread."""
        while (batch := self._batch) is not None:
            await batch.released
        if self._committer is not None:
            self._committer.shutdown(wait=True)
            self._committer = None

    def _begin(self) -> None:
        if not self._store.begin_without_waiting():
            raise WouldBlock(None)
        loop = asyncio.get_running_loop()
        batch = _Batch(committed=loop.create_future(), released=loop.create_future())
        self._batch = batch
        # The calls the loop runs before its next turn join this batch; then it commits.
        loop.call_soon(self._flush, batch)

    def _flush(self, batch: _Batch) -> None:
        batch.committing = True
        if self._committer is None:
            self._committer = ThreadPoolExecutor(1, thread_name_prefix="callbackpool-commit")
        loop = asyncio.get_running_loop()
        self._committer.submit(self._commit, loop, batch)

    def _commit(self, loop: asyncio.AbstractEventLoop, batch: _Batch) -> None:
        """On the commit thread: commit, free the writer connection, then announce."""
        error: StoreUnavailable | None = StoreUnavailable("SQLite commit failed")
        try:
            error = self._store.commit_loop_batch()
        finally:
            loop.call_soon_threadsafe(self._released, batch)
            if error is None:
                for announce in batch.after_commit:
                    try:
                        announce()
                    except Exception:
                        log.exception("announcing a commit failed")
            loop.call_soon_threadsafe(_settle, batch.committed, error)

    def _released(self, batch: _Batch) -> None:
        if self._batch is batch:
            self._batch = None
        if not batch.released.done():
            batch.released.set_result(None)


def _settle(committed: asyncio.Future[None], error: StoreUnavailable | None) -> None:
    if error is not None:
        committed.set_exception(error)
        # Callers that went away meanwhile leave it unread: that is no error of its own.
        committed.add_done_callback(_read_error)
    else:
        committed.set_result(None)


def _read_error(future: asyncio.Future[None]) -> None:
    with contextlib.suppress(BaseException):
        future.exception()
