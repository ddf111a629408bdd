"""A real ``callbackpool serve`` process on a free port, its database an SQLite file, the
sandbox gateway on and its returns' hash verified."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from callbackpool.gateways.sandbox import DEFAULT_HASH_FIELDS

from ..servers import REPO, example_config, free_port, launch, stop_server

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


def start_server(
    folder: Path, *, status_query: bool = False, arguments: Sequence[str] = (), **config: Any
) -> tuple[subprocess.Popen[bytes], Server]:
    """``status_query``: the sandbox's status query is configured, on this server;
    ``arguments``: more of ``serve``'s (``--access-log``)."""
    port = free_port()
    if status_query:
        config["statusQuery"] = {
            "url": f"http://127.0.0.1:{port}/sandbox/query",
            "apiKey": SANDBOX_SECRET,
        }
    settings = example_config(
        **{
            "databaseUrl": f"sqlite:///{folder / 'service.db'}",
            "adminToken": ADMIN_TOKEN,
            "sandbox": {"enabled": True, "secret": SANDBOX_SECRET},
            "callbackHash": {"secret": SANDBOX_SECRET, "fields": list(DEFAULT_HASH_FIELDS)},
            **config,
        }
    )
    started = launch(folder, settings, name="server", port=port, arguments=arguments)
    started.wait_until_serving(20)
    server = Server(base_url=started.base_url, admin_token=ADMIN_TOKEN, log=started.log)
    return started.process, server


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
