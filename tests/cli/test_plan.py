"""``callbackpool plan``: Erlang B from the command line, no configuration needed."""

from __future__ import annotations

import json

import pytest

from .conftest import Cli, one_error_line


def test_what_ten_slots_carry(cli: Cli) -> None:
    result = cli.bare("plan", "--slots", "10", "--hold", "10m", "--target", "0.01")

    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "10 slots, at most 1% turned away, payments holding a slot 10m on average:",
        "  offered load      4.461 erlangs",
        "  payments an hour  26.8",
    ]


def test_what_ten_slots_carry_as_json(cli: Cli) -> None:
    result = cli.bare("plan", "--slots", "10", "--hold", "3m", "--target", "1%", "--json")

    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document == {
        "holdSeconds": 180.0,
        "target": 0.01,
        "slots": 10,
        "offeredErlangs": pytest.approx(4.4612, abs=1e-4),
        "maxArrivalsPerHour": pytest.approx(89.22, abs=0.01),
    }


def test_slots_needed_for_sixty_an_hour(cli: Cli) -> None:
    result = cli.bare("plan", "--arrivals", "60", "--hold", "10m", "--target", "0.01", "--json")

    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["offeredErlangs"] == 10.0
    assert document["slotsNeeded"] == 18
    assert document["maxArrivalsPerHour"] == pytest.approx(62.6, abs=0.1)
    text = cli.bare("plan", "--arrivals", "60").stdout
    assert "slots needed      18 (for at most 1% turned away)" in text


def test_both_give_the_share_turned_away(cli: Cli) -> None:
    document = json.loads(cli.bare("plan", "--slots", "10", "--arrivals", "60", "--json").stdout)

    # 10 erlangs on 10 slots: Erlang B = 0.2146.
    assert document["turnedAway"] == pytest.approx(0.2146, abs=1e-4)
    assert document["slotsNeeded"] == 18
    assert document["maxArrivalsPerHour"] == pytest.approx(26.77, abs=0.01)


def test_a_table_over_n_by_default(cli: Cli) -> None:
    result = cli.bare("plan")

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "leases held 10m on average, at most 1% turned away"
    assert lines[1].split() == ["SLOTS", "ERLANGS", "PAYMENTS/HOUR"]
    assert lines[11].split() == ["10", "4.461", "26.8"]
    assert len(lines) == 2 + 20
    rows = json.loads(cli.bare("plan", "--max-slots", "5", "--json").stdout)["rows"]
    assert [row["slots"] for row in rows] == [1, 2, 3, 4, 5]
    assert set(rows[0]) == {"slots", "offeredErlangs", "maxArrivalsPerHour"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--target", "2"], "'2' must be between 0 and 1"),
        (["--target", "often"], "'often' is not a share such as 0.01 or 1%"),
        (["--hold", "0s"], "'0s' must be longer than zero"),
        (["--hold", "ten"], "'ten' is not a duration"),
        (["--slots", "0"], "--slots"),
        (["--arrivals", "-3"], "'-3' must be a number above zero"),
        (["--arrivals", "nan"], "'nan' must be a number above zero"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(cli: Cli, args: list[str], message: str) -> None:
    result = cli.bare("plan", *args)

    assert result.exit_code == 2
    assert message in one_error_line(result)


def test_traffic_no_pool_could_carry_is_a_clear_error(cli: Cli) -> None:
    result = cli.bare("plan", "--arrivals", "100000000", "--target", "0.000001")

    assert result.exit_code == 2
    assert one_error_line(result) == "error: more than 100000 slots would be needed"
