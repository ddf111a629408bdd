"""HTTP round trips against ``callbackpool serve``: one process on SQLite (issue 3's
benchmark), then two processes sharing one PostgreSQL database (issue 4's).

A round is what one customer costs the service: create-token, the gateway's return on the
leased callback URL, check-status. ``--clients`` clients (default 32) run rounds for
``--seconds``; in the same run, against the same servers, the same clients hit a trivial JSON
endpoint (``/healthz``). The targets: 100 rounds a second or more, and p99 of the requests
in rounds under 300 ms; the ratio of the two request rates is reported as a figure. With
several servers, as behind a load balancer, client n speaks to server n mod N, and each return
arrives at the next server (the gateway sends the browser to whichever instance answers).

The clients speak HTTP/1.1 with keep-alive over asyncio streams directly, so that they cost
the machine as little as possible (it is shared with the server) and the same per request
in both phases. Everything runs on loopback; the run stops by itself.

    python bench/http_roundtrip.py [--clients 32] [--seconds 10] [--paths 64]
                                   [--only sqlite|postgres] [--postgres URL] [--instances 2]

The PostgreSQL run makes a database of its own on the server ``--postgres`` names (or
``CALLBACKPOOL_BENCH_POSTGRES_URL``; default the local one) and drops it afterwards.
Last line of each run: ``http_roundtrip <sqlite|postgres> ratio=<x> p99_ms=<y>`` (p99 of the
requests in rounds).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

REPO = Path(__file__).resolve().parents[1]
API = "/api/v1/payments"
MERCHANT = "demoMerchantWEB"


@dataclass
class Tally:
    latencies: list[float] = field(default_factory=list)
    rounds: int = 0
    errors: int = 0


class Connection:
    """One keep-alive HTTP/1.1 connection: a request, then its whole response."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, target: str, body: bytes = b"") -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        head = f"{method} {target} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
        if body:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        self.writer.write(head.encode() + b"\r\n" + body)
        status_line = await self.reader.readline()
        status = int(status_line.split()[1])
        length = 0
        closing = False
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            if name.lower() == "content-length":
                length = int(value)
            elif name.lower() == "connection" and value.strip().lower() == "close":
                closing = True
        payload = await self.reader.readexactly(length) if length else b""
        if closing:
            await self.close()
        return status, payload

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            await self.writer.wait_closed()
        self.reader = self.writer = None


async def timed(
    connection: Connection, tally: Tally, method: str, target: str, body: bytes = b""
) -> tuple[int, bytes]:
    started = time.perf_counter()
    status, payload = await connection.request(method, target, body)
    tally.latencies.append(time.perf_counter() - started)
    return status, payload


async def trivial_client(host: str, port: int, until: float, tally: Tally) -> None:
    connection = Connection(host, port)
    while time.perf_counter() < until:
        status, _ = await timed(connection, tally, "GET", "/healthz")
        tally.errors += status != 200
    await connection.close()


async def round_client(
    host: str, ports: tuple[int, int], until: float, tally: Tally, references: itertools.count[int]
) -> None:
    """Rounds: create-token and check-status at ``ports[0]``, the return at ``ports[1]``."""
    connection, returns = Connection(host, ports[0]), Connection(host, ports[1])
    if ports[1] == ports[0]:
        returns = connection
    while time.perf_counter() < until:
        amount = 1000 + next(references) % 5000
        status, payload = await timed(
            connection,
            tally,
            "POST",
            f"{API}/create-token",
            json.dumps({"paymentData": {"amount": amount}}).encode(),
        )
        if status != 201:
            tally.errors += 1
            await asyncio.sleep(0.05)
            continue
        created = json.loads(payload)
        query = (
            f"MerchantID={MERCHANT}&OrderID=1&Amount={amount // 100}.{amount % 100:02d}"
            f"&PNRef={next(references)}&Result=0&TxnType=SALE&Last4=1111&ExpDate=1230"
            f"&CardType=VISA&AuthCode=A1"
        )
        status, _ = await timed(
            returns, tally, "GET", f"{created['formConfig']['callbackPath']}?{query}"
        )
        tally.errors += status != 303
        status, payload = await timed(
            connection, tally, "GET", f"{API}/check-status/{created['token']}"
        )
        if status == 200 and json.loads(payload)["status"] == "completed":
            tally.rounds += 1
        else:
            tally.errors += 1
    await connection.close()
    await returns.close()


async def phase(
    clients: int, seconds: float, client: Callable[[int], Callable[[float, Tally], Awaitable[None]]]
) -> tuple[Tally, float]:
    """``clients`` clients at once for ``seconds``; ``client(n)`` is the n-th one's loop."""
    tally = Tally()
    started = time.perf_counter()
    until = started + seconds
    await asyncio.gather(*(client(n)(until, tally) for n in range(clients)))
    return tally, time.perf_counter() - started


def percentile(values: list[float], share: float) -> float:
    return statistics.quantiles(values, n=1000)[int(share * 1000) - 1] if len(values) > 1 else 0.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_server(folder: Path, port: int, paths: int, database_url: str) -> subprocess.Popen[bytes]:
    config = json.loads((REPO / "examples" / "paygistix-forms.json").read_text())
    config.update(
        baseUrl=f"http://127.0.0.1:{port}",
        databaseUrl=database_url,
        callbackPaths=[f"{API}/callback/handler-{i}" for i in range(1, paths + 1)],
        # Every client of the benchmark is one address on loopback: the per-client limit
        # on create-token (a defence against pool exhaustion) would refuse nearly all.
        createTokenRatePerMinute=0,
    )
    config_file = folder / f"config-{port}.json"
    config_file.write_text(json.dumps(config))
    log = folder / f"server-{port}.log"
    executable = Path(sys.executable).parent / "callbackpool"
    command = str(executable) if executable.exists() else shutil.which("callbackpool")
    assert command, "callbackpool is not installed (make install)"
    environment = {k: v for k, v in os.environ.items() if not k.startswith("CALLBACKPOOL_")}
    return subprocess.Popen(
        [command, "--config", str(config_file), "serve", "--port", str(port)],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        env=environment,
    )


def wait_until_serving(process: subprocess.Popen[bytes], port: int, log: Path) -> None:
    for _ in range(200):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
                return
        except OSError:
            if process.poll() is not None:
                raise SystemExit(log.read_text()) from None
            time.sleep(0.1)
    process.kill()
    raise SystemExit("the server did not start")


@contextmanager
def servers(
    folder: Path, count: int, paths: int, database_url: str
) -> Iterator[list[tuple[int, int]]]:
    """``count`` servers on one database, started side by side: their ports and process ids."""
    ports = [free_port() for _ in range(count)]
    processes = [start_server(folder, port, paths, database_url) for port in ports]
    try:
        for process, port in zip(processes, ports, strict=True):
            wait_until_serving(process, port, folder / f"server-{port}.log")
        yield [(port, process.pid) for port, process in zip(ports, processes, strict=True)]
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=15)


def cpu_seconds(pids: list[int]) -> float | None:
    """User + system CPU the processes have used so far (Linux), None where unknown."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            return None
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks


def cpu_per_request(
    pids: list[int], run: Awaitable[tuple[Tally, float]]
) -> Awaitable[tuple[Tally, float, float | None]]:
    async def measured() -> tuple[Tally, float, float | None]:
        before = cpu_seconds(pids)
        tally, elapsed = await run
        after = cpu_seconds(pids)
        used = None if before is None or after is None else after - before
        return tally, elapsed, None if used is None else used / max(1, len(tally.latencies))

    return measured()


async def measure(store: str, servers: list[tuple[int, int]], clients: int, seconds: float) -> None:
    host = "127.0.0.1"
    ports = [port for port, _ in servers]
    pids = [pid for _, pid in servers]
    references = itertools.count(10**8)

    def trivial(n: int) -> Callable[[float, Tally], Awaitable[None]]:
        return lambda until, tally: trivial_client(host, ports[n % len(ports)], until, tally)

    def rounds(n: int) -> Callable[[float, Tally], Awaitable[None]]:
        pair = (ports[n % len(ports)], ports[(n + 1) % len(ports)])
        return lambda until, tally: round_client(host, pair, until, tally, references)

    # Warm up both paths (imports, database pages, connection setup).
    await phase(clients, 1.0, trivial)
    await phase(clients, 1.0, rounds)
    trivial_tally, trivial_elapsed, trivial_cpu = await cpu_per_request(
        pids, phase(clients, seconds, trivial)
    )
    rounds_tally, rounds_elapsed, rounds_cpu = await cpu_per_request(
        pids, phase(clients, seconds, rounds)
    )
    trivial_rps = len(trivial_tally.latencies) / trivial_elapsed
    round_rps = len(rounds_tally.latencies) / rounds_elapsed
    ratio = round_rps / trivial_rps
    p50 = percentile(rounds_tally.latencies, 0.5) * 1000
    p99 = percentile(rounds_tally.latencies, 0.99) * 1000
    print(
        f"{store}: {len(ports)} server process(es), clients={clients} seconds={seconds:g}"
        " (each phase, after a 1 s warm-up)"
    )
    print(
        f"trivial /healthz: {trivial_rps:.0f} req/s  "
        f"p50 {percentile(trivial_tally.latencies, 0.5) * 1000:.1f} ms  "
        f"p99 {percentile(trivial_tally.latencies, 0.99) * 1000:.1f} ms  "
        f"errors {trivial_tally.errors}"
    )
    print(
        f"rounds (create-token, callback, check-status): "
        f"{rounds_tally.rounds / rounds_elapsed:.0f} rounds/s = {round_rps:.0f} req/s  "
        f"p50 {p50:.1f} ms  p99 {p99:.1f} ms  errors {rounds_tally.errors}"
    )
    if trivial_cpu is not None and rounds_cpu is not None:
        print(
            f"server CPU per request: /healthz {trivial_cpu * 1000:.2f} ms, "
            f"in rounds {rounds_cpu * 1000:.2f} ms (ratio {trivial_cpu / rounds_cpu:.2f})"
        )
    print(f"http_roundtrip {store} ratio={ratio:.2f} p99_ms={p99:.1f}")


@contextmanager
def postgres_database(server_url: str) -> Iterator[str]:
    """A database of the benchmark's own on the server (migrated by the first server to
    start), as the URL the service takes; dropped afterwards."""
    name = f"cbp_bench_{secrets.token_hex(6)}"
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        try:
            yield urlunsplit(urlsplit(server_url)._replace(path=f"/{name}"))
        finally:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--paths", type=int, default=64, help="callback paths in the pool")
    parser.add_argument(
        "--sqlite-options",
        default="",
        help="appended to the database URL, e.g. '?synchronous=normal' (default: the store's)",
    )
    parser.add_argument(
        "--postgres",
        default=os.environ.get(
            "CALLBACKPOOL_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
        help="the PostgreSQL server to make the benchmark's database on",
    )
    parser.add_argument(
        "--postgres-options",
        default="",
        help="appended to the PostgreSQL database URL, e.g. '?pool_max_size=16'",
    )
    parser.add_argument("--instances", type=int, default=2, help="server processes on PostgreSQL")
    parser.add_argument("--only", choices=("sqlite", "postgres"), help="run one store only")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="callbackpool-bench-") as folder:
        if options.only != "postgres":
            url = f"sqlite:///{Path(folder) / 'bench.db'}{options.sqlite_options}"
            with servers(Path(folder), 1, options.paths, url) as started:
                asyncio.run(measure("sqlite", started, options.clients, options.seconds))
        if options.only != "sqlite":
            with (
                postgres_database(options.postgres) as url,
                servers(
                    Path(folder), options.instances, options.paths, url + options.postgres_options
                ) as started,
            ):
                asyncio.run(measure("postgres", started, options.clients, options.seconds))


if __name__ == "__main__":
    main()
