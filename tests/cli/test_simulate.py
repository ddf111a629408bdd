"""``callbackpool simulate``: the three policies side by side, progress on stderr, one JSON
document on stdout. No configuration, no database."""

from __future__ import annotations

import json

import pytest

from .conftest import Cli, one_error_line

POLICY_KEYS = {
    "arrivals", "admitted", "turnedAway", "turnedAwayShare", "waited", "meanWaitSeconds",
    "p95WaitSeconds", "meanHoldSeconds", "approved", "misattributed", "lost", "needsReview",
    "unmatchedReturns", "maxArrivalsPerHour",
}  # fmt: skip
SMALL = ("--customers", "400", "--jobs", "1")


def test_three_policies_side_by_side_as_json(cli: Cli) -> None:
    result = cli.bare("simulate", *SMALL, "--arrivals", "100", "--no-max", "--json")

    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert list(document["policies"]) == ["seed", "callbackpool", "oracle"]
    for figures in document["policies"].values():
        assert set(figures) == POLICY_KEYS
        assert figures["maxArrivalsPerHour"] is None
        assert figures["admitted"] + figures["turnedAway"] == figures["arrivals"]
    assert document["workload"] == {
        "arrivalsPerHour": 100.0,
        "customers": 400,
        "seed": 1,
        "slots": 10,
        "uniformAmount": False,
        "patienceSeconds": 30.0,
        "pollSeconds": 3.0,
    }
    assert document["policies"]["callbackpool"]["misattributed"] == 0
    # A progress line a run on stderr (no terminal here), nothing else.
    progress = result.stderr.splitlines()
    assert len(progress) == 3
    assert all(line.startswith("simulating [") for line in progress)


def test_the_most_arrivals_an_hour_and_the_comparison(cli: Cli) -> None:
    result = cli.bare("simulate", *SMALL, "--customers", "2000", "--json")

    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    best = {name: p["maxArrivalsPerHour"] for name, p in document["policies"].items()}
    assert 0 < best["seed"] < best["callbackpool"] <= best["oracle"] * 1.05
    comparison = document["comparison"]
    assert comparison["callbackpoolOverSeed"] == pytest.approx(
        best["callbackpool"] / best["seed"], abs=0.002
    )
    assert set(comparison) == {"callbackpoolOverSeed", "callbackpoolOverOracle"}
    assert len(result.stderr.splitlines()) > 3  # the searches' runs too


def test_the_text_table(cli: Cli) -> None:
    result = cli.bare("simulate", *SMALL, "--no-max", "--policy", "seed", "--policy", "oracle")

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == (
        "10 slots, 60 payments an hour, 400 customers a run (seed 1), 8 amounts, patience 30s"
    )
    assert lines[1].split() == ["seed", "oracle"]
    assert [line.split()[0] for line in lines[2:]] == [
        "arrivals", "admitted", "turned", "waited", "mean", "p95", "mean", "approved",
        "misattributed", "lost", "sent", "max/hour",
    ]  # fmt: skip
    assert lines[-1].split() == ["max/hour", "at", "1%", "-", "-"]


def test_same_seed_same_document(cli: Cli) -> None:
    args = ("simulate", *SMALL, "--no-max", "--uniform-amount", "--seed", "4", "--json")
    first = cli.bare(*args)
    assert first.exit_code == 0, first.output
    assert cli.bare(*args).stdout == first.stdout
    assert json.loads(first.stdout)["workload"]["uniformAmount"] is True


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--policy", "fifo"], "unknown policy 'fifo': choose from seed, callbackpool, oracle"),
        (["--customers", "10"], "--customers"),
        (["--arrivals", "0"], "'0' must be a number above zero"),
        (["--slots", "0"], "--slots"),
        (["--patience", "soon"], "'soon' is not a duration"),
        (["--target", "150%"], "must be between 0 and 1"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(cli: Cli, args: list[str], message: str) -> None:
    result = cli.bare("simulate", *args)

    assert result.exit_code == 2
    assert message in one_error_line(result)
