"""A throw-away PostgreSQL server for the tests that stop, freeze or restart one (the shared
server must never be touched): its own data folder, a free port on 127.0.0.1, trust
authentication, removed afterwards.

It needs the server programs (initdb, pg_ctl) and, when run as root, the ``postgres`` account
to run them as. Missing either skips the test, or fails it under ``CI=true``.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest

from .databases import unavailable


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
                with suppress(OSError, ValueError):
                    self.thaw()  # a frozen server would not stop
                self.stop("immediate")
        except subprocess.CalledProcessError:
            pass  # already stopped: the folder goes all the same
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)

    def postmaster_pid(self) -> int:
        """The server's main process (the first line of its ``postmaster.pid``)."""
        return int((self.data / "postmaster.pid").read_text().split()[0])

    def freeze(self) -> None:
        """Stop the server's main process and every backend (SIGSTOP): a server that keeps
        its connections open and answers nothing, like a machine that hangs."""
        for pid in self._processes():
            os.kill(pid, signal.SIGSTOP)

    def thaw(self) -> None:
        for pid in self._processes():
            os.kill(pid, signal.SIGCONT)

    def _processes(self) -> list[int]:
        main = self.postmaster_pid()
        children = Path(f"/proc/{main}/task/{main}/children").read_text().split()
        return [main, *map(int, children)]


@contextmanager
def private_server() -> Iterator[PrivateServer]:
    """A private server, initialised and started; stopped and removed afterwards."""
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
