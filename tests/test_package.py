"""callbackpool is installable: a wheel built from the repository and installed, with its
dependencies, into a fresh virtual environment runs ``callbackpool demo`` outside the checkout.

The demo answers from a folder of its own, with no path leading back to ``src/``: its pages
render (the templates are in the wheel), the static files they name are served, a payment is
created (the SQL and the migrations are, the SQLite file is made in that folder), and the
sandbox gateway takes the hosted form's post, shows its card page and returns the payment,
completed (the demo's configuration is). So ``[tool.setuptools.package-data]`` names all that
the code reads at run time, not only what the checkout has on disk.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from .servers import free_port

REPO = Path(__file__).resolve().parents[1]


def run(command: list[str | Path], *, timeout: float, **options: Any) -> str:
    """Run ``command`` to the end; its output, or a failure that shows it."""
    result = subprocess.run(
        [str(part) for part in command],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        **options,
    )
    assert result.returncode == 0, (
        f"{' '.join(map(str, command))} exited with {result.returncode}:\n"
        f"{result.stdout}\n{result.stderr}"
    )
    return str(result.stdout)


def copy_of_the_repository(folder: Path) -> Path:
    """The checkout's files as git sees them (committed or not, ignored ones left out).

    pip builds a local folder in place, and setuptools writes ``build/`` and an ``.egg-info``
    there: a copy keeps the checkout untouched, and a ``build/lib`` left by an earlier build
    cannot slip into the wheel a file that ``package-data`` no longer names.
    """
    listed = run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        timeout=30,
    )
    for name in filter(None, listed.split("\0")):
        source = REPO / name
        if source.is_file():  # a tracked file deleted in the work tree is still listed
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, folder / name)
    return folder


def build_wheel(source: Path, folder: Path) -> Path:
    """``pip wheel`` with build isolation: it builds with the ``setuptools>=68`` that
    ``[build-system]`` asks for (pip fetches it, under 1 MB), as any installer would; this
    venv's own setuptools may be older (65 here), so ``--no-build-isolation`` would not build
    the wheel that users get."""
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", folder, source], timeout=180)
    (wheel,) = folder.glob("callbackpool-*.whl")
    return wheel


def fresh_venv(folder: Path, wheel: Path) -> Path:
    """A new venv with ``wheel`` and its dependencies installed; its ``bin`` folder.

    The venv is made without pip (ensurepip costs some 6 s) and this environment's pip
    installs into it with ``--python``: the venv still sees no site-packages but its own.
    """
    run([sys.executable, "-m", "venv", "--without-pip", folder], timeout=60)
    bin_dir = folder / "bin"
    run(
        [sys.executable, "-m", "pip", "--python", bin_dir / "python", "install", wheel],
        timeout=240,
    )
    return bin_dir


def environment_outside_the_checkout(bin_dir: Path) -> dict[str, str]:
    """This process's environment without a way back to the checkout or its venv."""
    dropped = {"PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV"}
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in dropped and not key.startswith("CALLBACKPOOL_")
    }
    elsewhere = [p for p in env.get("PATH", "").split(os.pathsep) if not p.startswith(str(REPO))]
    env["PATH"] = os.pathsep.join([str(bin_dir), *elsewhere])
    return env


def wait_until_answering(base_url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, f"the demo exited with {process.returncode}"
        try:
            httpx.get(f"{base_url}/healthz", timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise AssertionError("the demo did not answer within 30 s")


def stop(process: subprocess.Popen[bytes]) -> int:
    """SIGTERM, as a service manager stops it; SIGKILL if it has not exited in 15 s."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()  # -SIGKILL: not a clean exit


def read(logs: Path) -> str:
    return "".join(
        f"--- {name}\n{(logs / name).read_text(errors='replace')}\n"
        for name in ("stderr", "stdout")
        if (logs / name).exists()
    )


def check_the_demo(client: httpx.Client, run_dir: Path) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}

    page = client.get("/checkout")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "<form" in page.text
    static = re.findall(r'(?:src|href)="([^"]*/static/[^"]+)"', page.text)
    assert any("checkout.js" in url for url in static), static
    for url in static:
        served = client.get(url)
        assert served.status_code == 200, url
        assert served.content, url

    created = client.post("/api/v1/payments/create-token", json={"paymentData": {"amount": 1000}})
    assert created.status_code == 201, created.text
    answer = created.json()
    assert answer["token"]
    assert (run_dir / "callbackpool-demo.db").is_file()

    form = answer["formConfig"]
    card_page = client.post(form["formActionUrl"], data=form["fields"])
    assert card_page.status_code == 200, card_page.text
    assert card_page.headers["content-type"].startswith("text/html")
    assert 'id="card-form"' in card_page.text

    paid = client.post(card_page.url, data={"card_number": "4111111111111111", "expiry": "12/30"})
    assert paid.status_code == 200, paid.text
    assert paid.url.path == "/payment-success"
    status = client.get(f"/api/v1/payments/check-status/{answer['token']}").json()
    assert status["status"] == "completed", status


@pytest.mark.slow
def test_an_installed_wheel_runs_the_demo_outside_the_checkout(tmp_path: Path) -> None:
    wheel = build_wheel(copy_of_the_repository(tmp_path / "source"), tmp_path / "wheels")
    bin_dir = fresh_venv(tmp_path / "venv", wheel)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    env = environment_outside_the_checkout(bin_dir)

    imported = run(
        [bin_dir / "python", "-c", "import callbackpool; print(callbackpool.__file__)"],
        cwd=run_dir,
        env=env,
        timeout=60,
    )
    package = Path(imported.strip()).resolve()
    assert package.is_relative_to((tmp_path / "venv").resolve()), package
    assert not package.is_relative_to(REPO), package

    port = free_port()
    logs = tmp_path / "logs"
    logs.mkdir()
    with (logs / "stdout").open("wb") as stdout, (logs / "stderr").open("wb") as stderr:
        process = subprocess.Popen(
            [bin_dir / "callbackpool", "demo", "--port", str(port)],
            cwd=run_dir,
            env=env,
            stdout=stdout,
            stderr=stderr,
        )
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_until_answering(base_url, process)
        with httpx.Client(base_url=base_url, timeout=10, follow_redirects=True) as client:
            check_the_demo(client, run_dir)
    except AssertionError as failure:
        stop(process)
        raise AssertionError(f"{failure}\n{read(logs)}") from failure
    finally:
        code = stop(process)
    # uvicorn shuts down gracefully on SIGTERM, then raises the signal again so that the
    # parent sees how it ended: -SIGTERM is its clean stop, as 0 would be; the lifespan's end
    # in the log tells it from a kill.
    assert code in (0, -signal.SIGTERM), f"the demo exited with {code} on SIGTERM:\n{read(logs)}"
    assert "Application shutdown complete" in read(logs), read(logs)
