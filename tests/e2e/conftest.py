"""A real ``callbackpool serve`` process on a free port, its database an SQLite file, the
sandbox gateway on and its returns' hash verified."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from callbackpool.gateways.sandbox import DEFAULT_HASH_FIELDS

REPO = Path(__file__).parents[2]
ADMIN_TOKEN = "e2e-admin-token"
SANDBOX_SECRET = "e2e-sandbox-secret"


@dataclass(frozen=True)
class Server:
    base_url: str
    admin_token: str
    log: Path

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, timeout=10)

    def pool_stats(self) -> dict[str, Any]:
        with self.client() as client:
            response = client.get(
                "/api/v1/payments/pool-stats",
                headers={"Authorization": f"Bearer {self.admin_token}"},
            )
        response.raise_for_status()
        stats: dict[str, Any] = response.json()["stats"]
        return stats


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


def start_server(
    folder: Path, *, status_query: bool = False, **config: Any
) -> tuple[subprocess.Popen[bytes], Server]:
    """``status_query``: the sandbox's status query is configured, on this server."""
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    if status_query:
        config["statusQuery"] = {"url": f"{base_url}/sandbox/query", "apiKey": SANDBOX_SECRET}
    example = json.loads((REPO / "examples" / "paygistix-forms.json").read_text())
    settings = {
        **example,
        "baseUrl": base_url,
        "databaseUrl": f"sqlite:///{folder / 'service.db'}",
        "adminToken": ADMIN_TOKEN,
        "sandbox": {"enabled": True, "secret": SANDBOX_SECRET},
        "callbackHash": {"secret": SANDBOX_SECRET, "fields": list(DEFAULT_HASH_FIELDS)},
        **config,
    }
    config_path = folder / "paygistix-forms.json"
    config_path.write_text(json.dumps(settings))
    log = folder / "server.log"
    environment = {k: v for k, v in os.environ.items() if not k.startswith("CALLBACKPOOL_")}
    with log.open("wb") as output:
        process = subprocess.Popen(
            [executable(), "--config", str(config_path), "serve", "--port", str(port)],
            stdout=output,
            stderr=subprocess.STDOUT,
            env=environment,
        )
    server = Server(base_url=base_url, admin_token=ADMIN_TOKEN, log=log)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"callbackpool serve exited with {process.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"{base_url}/healthz", timeout=1).status_code == 200:
                return process, server
        except httpx.TransportError:
            time.sleep(0.1)
    process.kill()
    pytest.fail(f"callbackpool serve did not answer in time:\n{log.read_text()}")


def stop_server(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    process, server = start_server(tmp_path_factory.mktemp("serve"))
    yield server
    stop_server(process)
    log = server.log.read_text()
    # A clean shutdown (uvicorn ends by the signal it stopped for, once the lifespan is done).
    assert process.returncode in (0, -signal.SIGTERM), log
    assert "Application shutdown complete" in log
    assert "Traceback" not in log


# --- the browser: Debian's Chromium, driven by Playwright --------------------------------------

ARTIFACTS = REPO / "test-artifacts"
# What lets Chromium start here: no sandbox as root, and none of its calls home.
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str | None:
    """Debian's Chromium (or the one CALLBACKPOOL_TEST_CHROMIUM names)."""
    configured = os.environ.get("CALLBACKPOOL_TEST_CHROMIUM")
    if configured is not None:
        return configured if Path(configured).is_file() else None
    return shutil.which("chromium") or shutil.which("chromium-browser")


def missing(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI needs the browser tests: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing("Playwright for Python is not installed")
    executable = chromium_path()
    if executable is None:
        missing("Chromium is not installed (Debian: apt-get install chromium)")
    from playwright.sync_api import expect

    expect.set_options(timeout=10_000)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable, headless=True, args=CHROMIUM_FLAGS
        )
        yield browser
        browser.close()
