"""Every failure is one ``error: …`` line on stderr and an exit code: 2 for bad usage or
configuration, 1 for an operational failure. Never a traceback."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from callbackpool.pool import CallbackPool
from callbackpool.store.queries import load_migrations

from .conftest import EXAMPLE_CONFIG, Cli, one_error_line


def test_a_command_that_needs_a_configuration_says_how_to_give_one(cli: Cli) -> None:
    result = cli.bare("--database", cli.database, "status")

    assert result.exit_code == 2
    assert one_error_line(result) == (
        "error: no configuration: pass --config PATH, set CALLBACKPOOL_CONFIG, "
        "or run where paygistix-forms.json is"
    )


def test_paygistix_forms_json_in_the_working_directory_is_the_default(
    cli: Cli, tmp_path: Path
) -> None:
    shutil.copy(EXAMPLE_CONFIG, tmp_path / "paygistix-forms.json")  # tmp_path is the cwd

    result = cli.bare("--database", cli.database, "init", "--json")

    assert result.exit_code == 0, result.output
    assert '"active": 10' in result.stdout


def test_the_environment_names_the_configuration_and_the_database(cli: Cli, tmp_path: Path) -> None:
    env = {"CALLBACKPOOL_CONFIG": str(cli.config), "CALLBACKPOOL_DATABASE_URL": cli.database}

    result = cli.bare("init", env=env)

    assert result.exit_code == 0, result.output
    assert (tmp_path / "pool.db").is_file()
    assert not (tmp_path / "callbackpool.db").exists()


def test_the_database_option_wins_over_the_configuration_file(cli: Cli, tmp_path: Path) -> None:
    cli.write_config(databaseUrl=f"sqlite:///{tmp_path / 'from-file.db'}")

    assert cli("init").exit_code == 0
    assert (tmp_path / "pool.db").is_file()
    assert not (tmp_path / "from-file.db").exists()
    assert cli.bare("--config", str(cli.config), "init").exit_code == 0
    assert (tmp_path / "from-file.db").is_file()


def test_help_names_the_environment_variables(cli: Cli) -> None:
    result = cli.bare("--help")

    assert result.exit_code == 0
    text = " ".join(result.stdout.split())  # however the terminal wraps it
    assert "Default: ./paygistix-forms.json if it exists. [env var: CALLBACKPOOL_CONFIG]" in text
    assert "else sqlite:///callbackpool.db. [env var: CALLBACKPOOL_DATABASE_URL]" in text


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{nope", "is not valid JSON (line 1, column 2"),
        ("[1, 2]", "must hold a JSON object"),
    ],
)
def test_a_configuration_file_that_is_not_a_json_object(
    cli: Cli, content: str, message: str
) -> None:
    cli.config.write_text(content, encoding="utf-8")

    result = cli("status")

    assert result.exit_code == 2
    assert message in one_error_line(result)


def test_a_missing_configuration_file(cli: Cli) -> None:
    result = cli.bare("--config", "missing.json", "status")

    assert result.exit_code == 2
    assert one_error_line(result) == "error: cannot read missing.json: No such file or directory"


@pytest.mark.parametrize(
    ("changes", "line"),
    [
        (
            {"lockTimeoutMinutes": 0},
            "error: configuration key 'lockTimeoutMinutes': Input should be greater than 0",
        ),
        (
            {"callbackPaths": ["/a", "/a"]},
            "error: configuration key 'callbackPaths': duplicate paths: /a",
        ),
        ({"baseUrl": "shop.example"}, "error: configuration key 'baseUrl': 'shop.example' is not"),
        ({"form": None}, "error: configuration key 'form': is required"),
    ],
)
def test_an_invalid_configuration_names_the_key(
    cli: Cli, changes: dict[str, object], line: str
) -> None:
    cli.write_config(**changes)

    result = cli("init")

    assert result.exit_code == 2
    assert one_error_line(result).startswith(line)
    assert not Path(cli.database.removeprefix("sqlite:///")).exists()  # stopped before the db


def test_an_unknown_key_is_a_warning_not_an_error(cli: Cli) -> None:
    cli.write_config(lockTimout=5)

    result = cli("init", "--json")

    assert result.exit_code == 0, result.output
    assert result.stderr == "warning: unknown configuration key 'lockTimout' ignored (a typo?)\n"
    assert result.stdout.startswith("{")  # stdout stays one JSON document


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://localhost/pool", "error: configuration key 'databaseUrl': unsupported"),
        ("sqlite://", "error: configuration key 'databaseUrl': no file in 'sqlite://'"),
        ("sqlite:///x.db?synchronous=sometimes", "error: configuration key 'databaseUrl':"),
    ],
)
def test_a_bad_database_url_is_a_configuration_error(cli: Cli, url: str, message: str) -> None:
    for args in (("--config", str(cli.config)), ()):
        result = cli.bare(*args, "--database", url, "migrate")
        assert result.exit_code == 2
        assert one_error_line(result).startswith(message)


def test_a_database_that_cannot_be_opened(cli: Cli, tmp_path: Path) -> None:
    result = cli.bare("--database", f"sqlite:///{tmp_path / 'no-such-dir' / 'x.db'}", "migrate")

    assert result.exit_code == 1
    assert one_error_line(result).startswith("error: cannot open SQLite database")


def test_a_database_not_initialised(cli: Cli) -> None:
    result = cli("reports", "usage")

    assert result.exit_code == 1
    assert one_error_line(result) == (
        "error: the database is not initialised or not up to date "
        f"(pending: {', '.join(name for name, _ in load_migrations('sqlite'))}): "
        "run 'callbackpool init'"
    )


def test_a_locked_database(ready: Cli) -> None:
    ready.database += "?busy_timeout=0.05"
    holder = sqlite3.connect(ready.database.removeprefix("sqlite:///").split("?")[0])
    holder.execute("BEGIN EXCLUSIVE")
    try:
        for command in (["init"], ["cleanup"], ["release", "--path", "handler-1"]):
            result = ready(*command)
            assert result.exit_code == 1, command
            assert "database is locked" in one_error_line(result)
    finally:
        holder.rollback()
        holder.close()
    assert ready("cleanup").exit_code == 0


def test_nothing_to_release(ready: Cli) -> None:
    by_path = ready("release", "--path", "handler-4")
    by_token = ready("release", "--token", "not-a-live-token")

    assert (by_path.exit_code, by_token.exit_code) == (1, 1)
    assert one_error_line(by_path) == "error: no live lease on /api/v1/payments/callback/handler-4"
    assert one_error_line(by_token) == "error: no live lease for that payment token"


def test_release_names_exactly_one_slot(ready: Cli) -> None:
    neither = ready("release")
    both = ready("release", "--path", "handler-1", "--token", "t")
    unknown = ready("release", "--path", "handler-11")
    unknown_full = ready("release", "--path", "/api/v1/payments/callback/handler-1/")

    for result in (neither, both):
        assert result.exit_code == 2
        assert one_error_line(result) == "error: name exactly one of --path and --token"
    assert unknown.exit_code == 2
    assert one_error_line(unknown) == "error: no callback path 'handler-11' in the pool"
    assert unknown_full.exit_code == 2


def test_usage_errors_are_one_line_with_a_pointer_to_help(ready: Cli) -> None:
    unknown_option = ready("status", "--bogus")
    unknown_command = ready("stats")
    bad_duration = ready("reports", "orphans", "--older-than", "30 minutes")

    assert [r.exit_code for r in (unknown_option, unknown_command, bad_duration)] == [2, 2, 2]
    assert one_error_line(unknown_option) == (
        "error: no such option: --bogus (see 'callbackpool status --help')"
    )
    assert one_error_line(unknown_command).startswith("error: no such command 'stats'")
    assert one_error_line(bad_duration) == (
        "error: invalid value for '--older-than': '30 minutes' is not a duration such as "
        "90s, 30m, 2h or 1h30m (see 'callbackpool reports orphans --help')"
    )


def test_a_bare_group_shows_its_help(cli: Cli) -> None:
    result = cli.bare("reports")

    assert result.exit_code == 2
    assert "Commands:\n  stuck" in result.stderr


def test_a_bug_is_one_line_and_verbose_shows_its_traceback(
    ready: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: CallbackPool) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(CallbackPool, "status", broken)

    quiet = ready("status")
    verbose = ready("--verbose", "status")

    assert quiet.exit_code == 1
    assert one_error_line(quiet) == (
        "error: unexpected RuntimeError: boom (--verbose shows the traceback)"
    )
    assert verbose.exit_code == 1
    assert "Traceback (most recent call last)" in verbose.stderr
    assert verbose.stderr.splitlines()[-1].startswith("error: unexpected RuntimeError: boom")


def test_serve_in_production_without_an_admin_token_exits_naming_the_key(cli: Cli) -> None:
    cli.write_config(env="production")
    result = cli("serve", "--port", "1")
    assert result.exit_code == 2
    assert "adminToken" in one_error_line(result)
