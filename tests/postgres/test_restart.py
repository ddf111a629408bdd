"""The database goes away under load and comes back: requests fail with StoreUnavailable
(never a hang, never a driver error), the store serves again by itself, and nothing that was
committed before is lost.

The test runs its own PostgreSQL server on a port of its own (the shared one must not be
restarted); it needs the server programs (initdb, pg_ctl) and, when run as root, the
``postgres`` account to run them as.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import psycopg
import pytest

from callbackpool.domain.errors import PoolExhausted, StoreUnavailable
from callbackpool.domain.model import CallbackOutcome, PaymentStatus
from callbackpool.pool import CallbackPool
from callbackpool.store.postgres import PostgresStore

from ..databases import unavailable
from ..support import PATHS, POLICY, make_gateway, paygistix_return

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

TIMEOUT = 2.0


def server_programs() -> Path:
    """The folder of initdb and pg_ctl: beside pg_ctl on the PATH, or pg_config's."""
    found = shutil.which("pg_ctl")
    if found:
        return Path(os.path.realpath(found)).parent
    bindir = ""
    if shutil.which("pg_config"):
        bindir = subprocess.run(
            ["pg_config", "--bindir"], capture_output=True, text=True, check=False
        ).stdout.strip()
    if not bindir or not (Path(bindir) / "pg_ctl").exists():
        unavailable("the PostgreSQL server programs (initdb, pg_ctl) are not installed")
    return Path(bindir)


class PrivateServer:
    """A throw-away PostgreSQL cluster on 127.0.0.1 and a free port, trust authentication."""

    def __init__(self) -> None:
        self.bin = server_programs()
        self.as_user: list[str] = []
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root (CI runs as root)
            try:
                account = pwd.getpwnam("postgres")
            except KeyError:
                unavailable("running as root and there is no postgres account to run a server")
            if not shutil.which("runuser"):
                unavailable("running as root and runuser is missing")
            self.as_user = ["runuser", "-u", "postgres", "--"]
        self.folder = Path(tempfile.mkdtemp(prefix="callbackpool-pg-"))
        if self.as_user:
            os.chown(self.folder, account.pw_uid, account.pw_gid)
        self.data = self.folder / "data"
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]

    def _run(self, program: str, *args: str) -> None:
        subprocess.run(
            [*self.as_user, str(self.bin / program), *args],
            check=True,
            capture_output=True,
            timeout=120,
        )

    def init(self) -> None:
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync")

    def start(self) -> None:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories=''"
            " -c fsync=off -c max_connections=30"
        )
        log = str(self.folder / "server.log")
        self._run("pg_ctl", "-D", str(self.data), "-l", log, "-o", options, "-w", "start")

    def stop(self, mode: str) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def remove(self) -> None:
        try:
            if (self.data / "postmaster.pid").exists():
                self.stop("immediate")
        except subprocess.CalledProcessError:
            pass  # already stopped: the folder goes all the same
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)


@pytest.fixture
def server() -> Iterator[PrivateServer]:
    server = PrivateServer()
    try:
        server.init()
        server.start()
    except subprocess.CalledProcessError as exc:
        server.remove()
        pytest.fail(f"could not start a private PostgreSQL server: {exc.stderr.decode()}")
    try:
        yield server
    finally:
        server.remove()


class Load:
    """Threads creating payments and paying them until stopped, noting every answer."""

    def __init__(self, pool: CallbackPool, threads: int = 3) -> None:
        self.pool = pool
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        self.created: set[str] = set()  # payments whose creation was acknowledged
        self.paid: dict[str, int] = {}  # payments whose return was acknowledged → callback id
        self.unexpected: list[BaseException] = []
        self.slowest = 0.0
        self.threads = [
            threading.Thread(target=self.run, args=(n,), name=f"load-{n}") for n in range(threads)
        ]

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=60)

    def note(self, what: str, started: float) -> None:
        with self.lock:
            self.counts[what] += 1
            self.slowest = max(self.slowest, time.monotonic() - started)

    def run(self, n: int) -> None:
        sequence = 0
        while not self.stop.is_set():
            sequence += 1
            amount = 10_000 + n * 100_000 + sequence
            started = time.monotonic()
            try:
                checkout = self.pool.create_payment(amount=amount)
                with self.lock:
                    self.created.add(checkout.payment.token)
                self.note("created", started)
                started = time.monotonic()
                result = self.pool.handle_callback(
                    checkout.lease.path,
                    paygistix_return(amount=f"{amount / 100:.2f}", pn_ref=f"L{n}-{sequence}"),
                )
                assert result.outcome is CallbackOutcome.APPLIED, result
                with self.lock:
                    self.paid[checkout.payment.token] = result.callback_id
                self.note("paid", started)
            except StoreUnavailable:
                self.note("unavailable", started)
                time.sleep(0.05)
            except PoolExhausted:
                self.note("exhausted", started)
            except BaseException as exc:
                self.unexpected.append(exc)
                return

    def served(self) -> int:
        with self.lock:
            return self.counts["paid"]


def wait_for(condition: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def test_a_database_restart_mid_load_loses_nothing(server: PrivateServer) -> None:
    with psycopg.connect(server.url(), autocommit=True) as admin:
        admin.execute("CREATE DATABASE pool")
    store = PostgresStore(server.url("pool"), timeout=TIMEOUT, connect_timeout=2, max_size=4)
    pool = CallbackPool(store, make_gateway(), replace(POLICY, callback_paths=PATHS))
    try:
        store.migrate()
        pool.sync_slots()
        waiting = pool.create_payment(amount=777)  # a customer still on the gateway's page

        with Load(pool) as load:
            assert wait_for(lambda: load.served() >= 20, 30), load.counts
            before = load.served()

            server.stop("immediate")  # as abrupt as a crash
            down = load.served()
            assert wait_for(lambda: load.counts["unavailable"] >= 6, 30), load.counts
            for request in (
                lambda: pool.create_payment(amount=1000),
                lambda: pool.handle_callback(PATHS[0], paygistix_return()),
                lambda: pool.get_payment(waiting.payment.token),
                pool.status,
                pool.sweep,
            ):
                started = time.monotonic()
                with pytest.raises(StoreUnavailable):
                    request()
                assert time.monotonic() - started < TIMEOUT + 3
            assert load.served() == down  # nothing is served while the server is down

            server.start()
            restarted = time.monotonic()
            # Served again, by the same store, without anyone touching it.
            assert wait_for(lambda: load.served() > down, 30), load.counts
            recovery = time.monotonic() - restarted
            assert wait_for(lambda: load.served() >= down + 20, 30), load.counts
        assert load.unexpected == []
        assert before >= 20
        # No request waited much past the timeout, outage or not (a hang would be minutes).
        assert load.slowest < TIMEOUT + 3, load.slowest
        assert recovery < TIMEOUT + 3, recovery

        # Nothing acknowledged before, during or after the restart is missing.
        with store.read() as tx:
            payments = {p.token: p for p in tx.payments(limit=100_000)}
            callbacks = {c.id for c in tx.callbacks(limit=100_000)}
            live = tx.live_leases()
        assert load.created <= set(payments)
        assert set(load.paid.values()) <= callbacks
        for token in load.paid:
            assert payments[token].status is PaymentStatus.COMPLETED
        # The customer who was still paying kept the lease across the restart (beside it,
        # only payments whose return failed in the outage can hold one), and pays.
        live_tokens = {lease.token for lease in live}
        assert waiting.payment.token in live_tokens
        assert live_tokens <= {waiting.payment.token} | (load.created - set(load.paid))
        result = pool.handle_callback(waiting.lease.path, paygistix_return(amount="7.77"))
        assert result.outcome is CallbackOutcome.APPLIED
        assert pool.get_payment(waiting.payment.token).status is PaymentStatus.COMPLETED
    finally:
        store.close()
