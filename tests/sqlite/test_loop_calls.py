"""The pool's calls run on the event loop against an SQLite file (store/sqlite_loop.py): one
commit for the calls of a turn of the loop, nobody answered before its writes are durable,
announcements after the commit only, and a write that would wait sent to a thread."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from callbackpool.domain.errors import StoreUnavailable
from callbackpool.domain.events import LeaseStarted, PoolEvent
from callbackpool.domain.model import PaymentStatus, StatusChange
from callbackpool.pool import CallbackPool
from callbackpool.ports import LoopCalls
from callbackpool.store.sqlite import SqliteStore

from ..support import POLICY, make_gateway, paygistix_return

T = TypeVar("T")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    store = SqliteStore(tmp_path / "pool.db")  # the service's defaults: synchronous=FULL
    store.migrate()
    yield store
    store.close()


@pytest.fixture
def pool(store: SqliteStore) -> CallbackPool:
    pool = CallbackPool(store, make_gateway(), POLICY)
    pool.sync_slots()
    return pool


def loop_calls(store: SqliteStore) -> LoopCalls:
    calls = store.loop_calls()
    assert calls is not None
    return calls


async def never_offloaded(call: Callable[[], T]) -> T:
    raise AssertionError("the call was sent to a thread")


def offloaded_to_a_thread(log: list[str]) -> Callable[[Callable[[], T]], Awaitable[T]]:
    async def offload(call: Callable[[], T]) -> T:
        log.append("offloaded")
        return await asyncio.to_thread(call)

    return offload


class Commits:
    """Counts the loop's commits (the real ones, made by the store)."""

    def __init__(self, store: SqliteStore, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        commit = store.commit_loop_batch

        def counted() -> StoreUnavailable | None:
            self.count += 1
            return commit()

        monkeypatch.setattr(store, "commit_loop_batch", counted)


def committed_payments(path: Path) -> dict[str, str]:
    """The payments as another connection (another process) sees them."""
    with sqlite3.connect(path) as other:
        return dict(other.execute("SELECT token, status FROM payments").fetchall())


def test_the_calls_of_one_turn_share_one_commit_and_answer_once_it_is_durable(
    store: SqliteStore, pool: CallbackPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    commits = Commits(store, monkeypatch)
    calls = loop_calls(store)
    loop_thread: list[int] = []

    def create() -> Any:
        loop_thread.append(threading.get_ident())
        return pool.create_payment(amount=1000)

    async def clients() -> list[Any]:
        return await asyncio.gather(*(calls.run(create, never_offloaded) for _ in range(8)))

    checkouts = asyncio.run(clients())
    assert set(loop_thread) == {threading.get_ident()}  # all on the event loop
    assert commits.count == 1
    seen = committed_payments(Path(store.path))
    assert {c.payment.token for c in checkouts} <= set(seen)
    assert len({c.lease.path for c in checkouts}) == 8


def test_an_answer_waits_for_the_commit_and_the_loop_does_not(
    store: SqliteStore, pool: CallbackPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While a batch's commit is slow (its fsync), the loop goes on; the caller answers
    after the commit, and a write of the next turn waits for it, then commits in its own
    batch."""
    calls = loop_calls(store)
    commit = store.commit_loop_batch
    in_commit, finish = threading.Event(), threading.Event()

    def slow_commit() -> StoreUnavailable | None:
        in_commit.set()
        finish.wait(5)
        return commit()

    monkeypatch.setattr(store, "commit_loop_batch", slow_commit)

    async def scenario() -> None:
        first = asyncio.ensure_future(
            calls.run(lambda: pool.create_payment(amount=1000), never_offloaded)
        )
        await asyncio.to_thread(in_commit.wait, 5)
        second = asyncio.ensure_future(
            calls.run(lambda: pool.create_payment(amount=2000), never_offloaded)
        )
        ticks = 0
        while ticks < 20:  # the loop runs while the commit waits
            await asyncio.sleep(0)
            ticks += 1
        assert not first.done()
        assert not second.done()
        assert committed_payments(Path(store.path)) == {}
        finish.set()
        made = await first
        assert made.payment.token in committed_payments(Path(store.path))
        later = await second
        assert set(committed_payments(Path(store.path))) == {
            made.payment.token,
            later.payment.token,
        }

    asyncio.run(scenario())


def test_hooks_and_observers_hear_of_a_change_only_after_its_commit(
    store: SqliteStore, pool: CallbackPool
) -> None:
    calls = loop_calls(store)
    heard: list[tuple[str, dict[str, str]]] = []
    path = Path(store.path)

    def hook(change: StatusChange) -> None:
        heard.append((f"hook {change.status.value}", committed_payments(path)))

    def observer(event: PoolEvent) -> None:
        if isinstance(event, LeaseStarted):
            heard.append(("lease started", committed_payments(path)))

    pool.add_status_hook(hook)
    pool.add_observer(observer)

    async def scenario() -> None:
        made = await calls.run(lambda: pool.create_payment(amount=1000), never_offloaded)
        token = made.payment.token
        assert heard == [("lease started", {token: "pending"})]
        params = paygistix_return(amount="10.00", pn_ref="900001")
        result = await calls.run(
            lambda: pool.handle_callback(made.lease.path, params, method="GET", client_addr=None),
            never_offloaded,
        )
        assert result.payment_token == token
        assert heard[1:] == [("hook completed", {token: "completed"})]

    asyncio.run(scenario())


def test_a_failed_commit_fails_every_call_of_its_batch_and_announces_nothing(
    store: SqliteStore, pool: CallbackPool
) -> None:
    """A lease naming no payment breaks a deferred foreign key: SQLite refuses the commit
    itself, and with it the other call's writes in the same batch."""
    calls = loop_calls(store)
    heard: list[PoolEvent] = []
    pool.add_observer(heard.append)

    def breaks_the_commit() -> None:
        with store.transaction() as tx:
            tx._conn.execute(  # type: ignore[attr-defined]
                "INSERT INTO leases (slot_id, path, token, amount, acquired_at, expires_at,"
                " ended_at, end_reason) SELECT id, path, 'orphan', 1, 0, 0, 0, 'admin'"
                " FROM slots LIMIT 1"
            )

    async def scenario() -> list[Any]:
        return await asyncio.gather(
            calls.run(lambda: pool.create_payment(amount=1000), never_offloaded),
            calls.run(breaks_the_commit, never_offloaded),
            return_exceptions=True,
        )

    answers = asyncio.run(scenario())
    assert [type(a) for a in answers] == [StoreUnavailable, StoreUnavailable]
    assert "commit failed" in str(answers[0])
    assert heard == []
    assert committed_payments(Path(store.path)) == {}
    # The store goes on: the next call commits.
    made = asyncio.run(calls.run(lambda: pool.create_payment(amount=1000), never_offloaded))
    assert committed_payments(Path(store.path)) == {made.payment.token: "pending"}


def test_a_call_that_fails_after_writing_answers_its_error_once_the_writes_are_in(
    store: SqliteStore, pool: CallbackPool
) -> None:
    calls = loop_calls(store)

    def writes_then_fails() -> None:
        made = pool.create_payment(amount=1000)
        raise LookupError(made.payment.token)

    async def scenario() -> str:
        with pytest.raises(LookupError) as failed:
            await calls.run(writes_then_fails, never_offloaded)
        return str(failed.value.args[0])

    token = asyncio.run(scenario())
    assert committed_payments(Path(store.path)) == {token: "pending"}


def test_a_call_reads_back_what_it_wrote_before_the_commit(
    store: SqliteStore, pool: CallbackPool
) -> None:
    calls = loop_calls(store)

    def create_then_cancel() -> PaymentStatus:
        made = pool.create_payment(amount=1000)
        pool.cancel_payment(made.payment.token)
        return pool.get_payment(made.payment.token).status

    assert asyncio.run(calls.run(create_then_cancel, never_offloaded)) is PaymentStatus.CANCELLED


def test_a_write_that_would_wait_for_another_process_goes_to_a_thread(
    store: SqliteStore, pool: CallbackPool
) -> None:
    """Another process holds the write lock: the loop does not wait for it (it keeps
    serving), the call runs on a thread and succeeds once the lock is free."""
    calls = loop_calls(store)
    log: list[str] = []
    other = sqlite3.connect(store.path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")

    async def scenario() -> Any:
        call = asyncio.ensure_future(
            calls.run(lambda: pool.create_payment(amount=1000), offloaded_to_a_thread(log))
        )
        for _ in range(5):
            await asyncio.sleep(0.02)  # the loop is free while the other holds the lock
        assert not call.done()
        other.execute("COMMIT")
        return await call

    try:
        made = asyncio.run(scenario())
    finally:
        other.close()
    assert log == ["offloaded"]
    assert committed_payments(Path(store.path)) == {made.payment.token: "pending"}


def test_a_write_while_a_thread_of_the_process_writes_goes_to_a_thread(
    store: SqliteStore, pool: CallbackPool
) -> None:
    calls = loop_calls(store)
    log: list[str] = []
    inside, leave = threading.Event(), threading.Event()

    def thread_writer() -> None:
        with store.transaction():
            inside.set()
            leave.wait(5)

    writer = threading.Thread(target=thread_writer)
    writer.start()
    inside.wait(5)
    threading.Timer(0.1, leave.set).start()
    made = asyncio.run(
        calls.run(lambda: pool.create_payment(amount=1000), offloaded_to_a_thread(log))
    )
    writer.join()
    assert log == ["offloaded"]
    assert committed_payments(Path(store.path)) == {made.payment.token: "pending"}


def test_a_read_only_call_answers_at_once_and_a_cancelled_caller_still_commits(
    store: SqliteStore, pool: CallbackPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    commits = Commits(store, monkeypatch)
    calls = loop_calls(store)

    async def scenario() -> str:
        made = await calls.run(lambda: pool.create_payment(amount=1000), never_offloaded)
        assert commits.count == 1
        token = made.payment.token
        polled = await calls.run(lambda: pool.poll_payment(token), never_offloaded)
        assert (polled.status, commits.count) == (PaymentStatus.PENDING, 2)  # its heartbeat
        polled = await calls.run(lambda: pool.poll_payment(token), never_offloaded)
        assert (polled.status, commits.count) == (PaymentStatus.PENDING, 2)  # nothing written

        leaving = asyncio.ensure_future(
            calls.run(lambda: pool.create_payment(amount=2000), never_offloaded)
        )
        await asyncio.sleep(0)  # it has written; its batch commits on the next turn
        leaving.cancel()
        await calls.drain()
        return made.payment.token

    first = asyncio.run(scenario())
    assert commits.count == 3
    assert len(committed_payments(Path(store.path))) == 2
    assert first in committed_payments(Path(store.path))


def test_a_memory_store_has_no_loop_calls() -> None:
    from callbackpool.store.memory import MemoryStore

    assert MemoryStore().loop_calls() is None
    assert SqliteStore(":memory:").loop_calls() is None
