"""The installed ``callbackpool`` executable, run as an operator would, on real time."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from callbackpool import build_pool, load_settings

from ..servers import free_port
from .conftest import EXAMPLE_CONFIG

EXECUTABLE = Path(sys.executable).with_name("callbackpool")


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(EXECUTABLE), *args],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=60,
        check=False,
    )


def test_the_executable_ends_expired_leases_with_the_default_config_and_database(
    tmp_path: Path,
) -> None:
    # The working directory is tmp_path: the defaults are ./paygistix-forms.json and
    # sqlite:///callbackpool.db. Leases last 60 ms.
    config = json.loads(EXAMPLE_CONFIG.read_text(encoding="utf-8"))
    config["lockTimeoutMinutes"] = 0.001
    (tmp_path / "paygistix-forms.json").write_text(json.dumps(config), encoding="utf-8")

    init = run("init", "--json")
    assert init.returncode == 0, init.stderr
    assert json.loads(init.stdout)["active"] == 10
    assert (tmp_path / "callbackpool.db").is_file()

    pool = build_pool(load_settings("paygistix-forms.json"), migrate=False, sync_slots=False)
    tokens = [pool.create_payment(items={"WDF": n}).payment.token for n in (1, 2)]
    pool.store.close()
    time.sleep(0.2)

    stuck = run("reports", "stuck", "--json")
    assert stuck.returncode == 0, stuck.stderr
    assert [lease["lockedBy"] for lease in json.loads(stuck.stdout)["leases"]] == tokens

    cleanup = run("--verbose", "cleanup", "--json")
    assert cleanup.returncode == 0, cleanup.stderr
    assert json.loads(cleanup.stdout)["expired"] == 2
    # The log names payments by a prefix of their token, never the whole bearer secret.
    assert f"(payment {tokens[0][:8]}…)" in cleanup.stderr
    assert all(token not in cleanup.stderr for token in tokens)

    status = json.loads(run("status", "--json").stdout)
    assert (status["locked"], status["stuck"], status["tainted"]) == (0, 0, 2)


def test_the_executable_fails_with_one_line_and_an_exit_code(tmp_path: Path) -> None:
    missing = run("--config", "missing.json", "status")
    no_terminal = run("--config", str(EXAMPLE_CONFIG), "cleanup", "--all")

    assert missing.returncode == 2
    assert missing.stderr == "error: cannot read missing.json: No such file or directory\n"
    assert no_terminal.returncode == 2
    assert no_terminal.stderr.startswith("error: cleanup --all releases every live lease")
    assert "Traceback" not in missing.stderr + no_terminal.stderr


def test_a_database_that_is_down_is_one_error_line_naming_why() -> None:
    # Nothing listens on a port just freed; the driver's pool warns at every attempt, and
    # none of that reaches the operator but the one line (--verbose shows the attempts).
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/pool?timeout=1"
    down = run("--database", url, "migrate")
    verbose = run("--verbose", "--database", url, "migrate")

    assert down.returncode == 1
    assert down.stderr.count("\n") == 1, down.stderr
    assert down.stderr.startswith("error: PostgreSQL is unavailable (get a connection): ")
    assert "Connection refused" in down.stderr
    assert verbose.returncode == 1
    assert "warning: error connecting" in verbose.stderr
