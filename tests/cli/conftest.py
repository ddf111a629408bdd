"""The CLI under test: Typer's CliRunner on a real SQLite file, the example configuration,
and the shared fake clock (passed in through ``CliState``)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from callbackpool import CallbackPool, build_pool, load_settings
from callbackpool.cli import CliState, app
from callbackpool.testing import FakeClock

EXAMPLE_CONFIG = Path(__file__).resolve().parents[2] / "examples" / "paygistix-forms.json"


@dataclass
class Cli:
    """Runs ``callbackpool --config … --database … ARGS`` in-process on the fake clock."""

    config: Path
    database: str
    clock: FakeClock
    runner: CliRunner = field(default_factory=CliRunner)
    pools: list[CallbackPool] = field(default_factory=list)

    def __call__(self, *args: str, input: str | None = None) -> Result:
        global_options = ("--config", str(self.config), "--database", self.database)
        return self.bare(*global_options, *args, input=input)

    def bare(
        self, *args: str, input: str | None = None, env: dict[str, str] | None = None
    ) -> Result:
        """Without the global options the fixture adds."""
        return self.runner.invoke(
            app, list(args), input=input, env=env, obj=CliState(clock=self.clock)
        )

    def json(self, *args: str) -> Any:
        result = self(*args, "--json")
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    def pool(self) -> CallbackPool:
        """The library's pool on the same database and clock: to create payments."""
        settings = load_settings(self.config, overrides={"database_url": self.database})
        pool = build_pool(settings, clock=self.clock, migrate=False, sync_slots=False)
        self.pools.append(pool)
        return pool

    def write_config(self, **changes: Any) -> Path:
        """The example configuration with some keys changed (None removes a key)."""
        data = json.loads(EXAMPLE_CONFIG.read_text(encoding="utf-8"))
        for key, value in changes.items():
            if value is None:
                data.pop(key, None)
            else:
                data[key] = value
        self.config.write_text(json.dumps(data), encoding="utf-8")
        return self.config


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No configuration from the machine, and a working directory of the test's own."""
    monkeypatch.delenv("CALLBACKPOOL_CONFIG", raising=False)
    monkeypatch.delenv("CALLBACKPOOL_DATABASE_URL", raising=False)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def cli(tmp_path: Path, clock: FakeClock) -> Iterator[Cli]:
    config = tmp_path / "config" / "forms.json"
    config.parent.mkdir()
    shutil.copy(EXAMPLE_CONFIG, config)
    runner = Cli(config=config, database=f"sqlite:///{tmp_path / 'pool.db'}", clock=clock)
    yield runner
    for pool in runner.pools:
        pool.store.close()


@pytest.fixture
def ready(cli: Cli) -> Cli:
    """The CLI on a database that ``init`` has set up."""
    result = cli("init")
    assert result.exit_code == 0, result.output
    return cli


def one_error_line(result: Result) -> str:
    """The single ``error: …`` line a failed command prints, and nothing on stdout."""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), result.stderr
    assert result.stdout == ""
    return lines[0]
