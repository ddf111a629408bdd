"""Real ``callbackpool serve`` processes for the tests: each on a free port of loopback, with
a configuration file of its own (the example's, with the test's keys over it) and its output
in a log file."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

REPO = Path(__file__).parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def executable() -> str:
    beside = Path(sys.executable).parent / "callbackpool"
    found = str(beside) if beside.exists() else shutil.which("callbackpool")
    assert found, "the callbackpool executable is not installed"
    return found


def example_config(**keys: Any) -> dict[str, Any]:
    """The shipped example configuration with ``keys`` (camelCase) over it."""
    example: dict[str, Any] = json.loads((REPO / "examples" / "paygistix-forms.json").read_text())
    return {**example, **keys}


@dataclass
class ServeProcess:
    """One ``callbackpool serve``: its process, where it answers, its log."""

    name: str
    process: subprocess.Popen[bytes]
    base_url: str
    log: Path

    def client(self, timeout: float = 10) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, timeout=timeout)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_until_serving(self, seconds: float = 30) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"{self.name} exited with {self.process.returncode}:\n{self.output()}")
            try:
                if httpx.get(f"{self.base_url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.1)
        self.process.kill()
        pytest.fail(f"{self.name} did not answer in time:\n{self.output()}")

    def stop(self) -> int | None:
        """Stop it as an orchestrator would (SIGTERM, then SIGKILL after 10 s)."""
        return stop_server(self.process)


def launch(
    folder: Path,
    config: Mapping[str, Any],
    *,
    name: str = "serve",
    environment: Mapping[str, str] | None = None,
    port: int | None = None,
    arguments: Sequence[str] = (),
) -> ServeProcess:
    """Start ``callbackpool serve`` on a free port without waiting for it to answer.

    ``config`` is written to ``folder/<name>.json`` with ``baseUrl`` set to where it listens
    (``port``, or a free one); ``arguments`` go after ``serve``'s own (``--access-log``).
    The process sees none of the test run's ``CALLBACKPOOL_*`` variables, only those of
    ``environment``.
    """
    folder.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    base_url = f"http://127.0.0.1:{port}"
    config_path = folder / f"{name}.json"
    config_path.write_text(json.dumps({**config, "baseUrl": base_url}))
    log = folder / f"{name}.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLBACKPOOL_")}
    env.update(environment or {})
    with log.open("wb") as output:
        process = subprocess.Popen(
            [executable(), "--config", str(config_path), "serve", "--port", str(port), *arguments],
            stdout=output,
            stderr=subprocess.STDOUT,
            env=env,
        )
    return ServeProcess(name=name, process=process, base_url=base_url, log=log)


def start_servers(
    folder: Path, config: Mapping[str, Any], count: int, **options: Any
) -> list[ServeProcess]:
    """``count`` servers of one configuration, started side by side (as a rollout would)."""
    servers = [launch(folder, config, name=f"serve-{n}", **options) for n in range(count)]
    try:
        for server in servers:
            server.wait_until_serving()
    except BaseException:
        for server in servers:
            server.stop()
        raise
    return servers


def stop_server(process: subprocess.Popen[bytes]) -> int | None:
    if process.poll() is None:
        process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    return process.returncode
