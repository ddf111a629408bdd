"""The capacity commands, which need no configuration and no database: ``plan`` (how many
callback paths for how much traffic, from Erlang B) and ``simulate`` (the guide's policy,
this pool and an oracle replayed side by side on a virtual clock)."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Iterator
from datetime import timedelta
from functools import partial
from typing import Annotated, Any

import typer

from .. import views
from ..capacity import erlang
from ..capacity import simulate as sim
from .app import USAGE, CliError, JsonFlag, emit, parse_duration
from .text import percent, span, table


def parse_share(text: str | float) -> float:
    """``0.01`` or ``1%``: a share strictly between 0 and 1."""
    if isinstance(text, float):  # the option's default
        return text
    raw = text.strip()
    try:
        share = float(raw[:-1]) / 100 if raw.endswith("%") else float(raw)
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not a share such as 0.01 or 1%") from None
    if not 0 < share < 1:
        raise typer.BadParameter(f"{text!r} must be between 0 and 1 (or 0% and 100%), exclusive")
    return share


def _positive_duration(text: str | timedelta) -> timedelta:
    if isinstance(text, timedelta):  # the option's default
        return text
    duration = parse_duration(text)
    if duration <= timedelta(0):
        raise typer.BadParameter(f"{text!r} must be longer than zero")
    return duration


def _positive_rate(text: str) -> float:
    try:
        rate = float(text)
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not a number") from None
    if not 0 < rate < 1e9:
        raise typer.BadParameter(f"{text!r} must be a number above zero")
    return rate


def _duration_or_zero(text: str | timedelta) -> timedelta:
    if isinstance(text, timedelta):  # the option's default
        return text
    return timedelta(0) if text.strip() == "0" else parse_duration(text)


HoldOption = Annotated[
    timedelta,
    typer.Option(
        "--hold",
        parser=_positive_duration,
        metavar="DURATION",
        help="How long a lease is held on average: 90s, 3m, 10m (the lock timeout, if "
        "every customer held their slot to the end).",
    ),
]
TargetOption = Annotated[
    float,
    typer.Option(
        "--target",
        parser=parse_share,
        metavar="SHARE",
        help="The most customers turned away: 0.01 or 1%.",
    ),
]


def plan(
    slots: Annotated[
        int | None,
        typer.Option(
            "--slots", min=1, max=erlang.MAX_SLOTS, help="What N slots carry at the target."
        ),
    ] = None,
    arrivals: Annotated[
        float | None,
        typer.Option(
            "--arrivals",
            parser=_positive_rate,
            metavar="PER_HOUR",
            help="How many slots this many payments an hour need.",
        ),
    ] = None,
    hold: HoldOption = timedelta(minutes=10),
    target: TargetOption = 0.01,
    max_slots: Annotated[
        int,
        typer.Option("--max-slots", min=1, max=1000, help="The last row of the table."),
    ] = 20,
    as_json: JsonFlag = False,
) -> None:
    """How many callback paths for how much traffic, from Erlang B.

    --slots N: the offered load (erlangs) and the most payments an hour N slots carry with at
    most --target turned away. --arrivals R: the slots R payments an hour need. Both: also
    the share R would find every slot busy. Neither: a table over N. Needs no configuration."""
    hold_seconds = hold.total_seconds()
    plan_for = partial(erlang.plan_for_slots, hold_seconds=hold_seconds, target=target)
    if slots is None and arrivals is None:
        rows = [plan_for(n) for n in range(1, max_slots + 1)]
        table_document = views.PlanTableOut(hold_seconds=hold_seconds, target=target, rows=rows)
        emit(as_json, table_document, _plan_table_lines(rows, hold, target))
        return
    figures: dict[str, Any] = {}
    if slots is not None:
        figures.update(views.PlanRowOut.model_validate(plan_for(slots)).model_dump())
    if arrivals is not None:
        offered = erlang.erlangs_of(arrivals, hold_seconds)
        try:
            needed = erlang.slots_needed(offered, target)
        except ValueError as exc:
            raise CliError(str(exc), USAGE) from None
        figures.update(
            arrivals_per_hour=arrivals, offered_erlangs=round(offered, 4), slots_needed=needed
        )
        if slots is None:
            carried = views.PlanRowOut.model_validate(plan_for(needed))
            figures["max_arrivals_per_hour"] = carried.max_arrivals_per_hour
        else:
            figures["turned_away"] = round(erlang.erlang_b(slots, offered), 6)
    document = views.PlanOut(hold_seconds=hold_seconds, target=target, **figures)
    emit(as_json, document, _plan_lines(document, hold))


def simulate(
    arrivals: Annotated[
        float,
        typer.Option(
            "--arrivals",
            parser=_positive_rate,
            metavar="PER_HOUR",
            help="Payments an hour for the side-by-side run (Poisson arrivals).",
        ),
    ] = 60.0,
    customers: Annotated[
        int,
        typer.Option(
            "--customers",
            min=100,
            max=1_000_000,
            help="Customers replayed in each run (more: steadier figures, longer runs).",
        ),
    ] = 10_000,
    seed: Annotated[
        int, typer.Option("--seed", help="Draws the customers: same seed, same run.")
    ] = 1,
    slots: Annotated[int, typer.Option("--slots", min=1, max=1000, help="Callback paths.")] = 10,
    uniform_amount: Annotated[
        bool,
        typer.Option("--uniform-amount", help="Everybody pays the same amount."),
    ] = False,
    patience: Annotated[
        timedelta,
        typer.Option(
            "--patience",
            parser=_duration_or_zero,
            metavar="DURATION",
            help="How long a customer waits for a slot before leaving (a longer wait counts "
            "as turned away).",
        ),
    ] = timedelta(seconds=30),
    target: TargetOption = 0.01,
    policies: Annotated[
        list[str] | None,
        typer.Option(
            "--policy",
            metavar="NAME",
            help=f"Only this policy (repeatable): {', '.join(sim.POLICIES)}. Default: all.",
        ),
    ] = None,
    find_max: Annotated[
        bool,
        typer.Option(
            "--max/--no-max",
            help="Also find each policy's most payments an hour at the target, by bisection.",
        ),
    ] = True,
    jobs: Annotated[
        int,
        typer.Option("--jobs", min=1, max=64, help="Policies run in this many processes at once."),
    ] = min(3, os.cpu_count() or 1),
    as_json: JsonFlag = False,
) -> None:
    """Replay a workload against the pool on a virtual clock: the guide's policy (seed), this
    pool (callbackpool) and one that learns every departure at once (oracle), side by side.

    The workload is the issue's: 65% pay (95% approved), 15% close the payment window, 18%
    leave silently, 2% pay 10 to 25 minutes late; 8 catalogue amounts. Seeded and repeatable;
    progress on stderr. Needs no configuration and no database."""
    unknown = sorted(set(policies or ()) - set(sim.POLICIES))
    if unknown:
        raise CliError(
            f"unknown policy {unknown[0]!r}: choose from {', '.join(sim.POLICIES)}", USAGE
        )
    chosen = tuple(p for p in sim.POLICIES if p in (policies or sim.POLICIES))
    workload = sim.Workload(
        arrivals_per_hour=arrivals,
        customers=customers,
        seed=seed,
        slots=slots,
        uniform_amount=uniform_amount,
        patience=patience.total_seconds(),
    )
    bar = _ProgressBar(len(chosen) * (1 + (sim.TYPICAL_SEARCH_RUNS if find_max else 0)))
    # The simulated pool's own log (thousands of ambiguous returns in the uniform-amount
    # variant) is not the command's output; --verbose still shows it.
    pool_log = logging.getLogger("callbackpool")
    level = pool_log.level
    if pool_log.getEffectiveLevel() >= logging.WARNING:
        pool_log.setLevel(logging.ERROR)
    try:
        reports = sim.compare(
            workload, policies=chosen, target=target, find_max=find_max, jobs=jobs, on_step=bar
        )
    finally:
        bar.close()
        pool_log.setLevel(level)
    document = views.SimulationOut.of(workload, target, reports)
    emit(as_json, document, _simulation_lines(document))


class _ProgressBar:
    """Runs done, on stderr: a bar redrawn in place on a terminal, a line a run elsewhere."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.done = 0
        self.tty = sys.stderr.isatty()

    def __call__(self, step: sim.Result) -> None:
        self.done += 1
        self.expected = max(self.expected, self.done + 1)
        filled = round(20 * self.done / self.expected)
        text = (
            f"simulating [{'#' * filled}{'.' * (20 - filled)}] {self.done} runs · "
            f"{step.policy} at {step.arrivals_per_hour:.1f}/h: "
            f"{percent(step.turned_away_share)} turned away"
        )
        if self.tty:
            sys.stderr.write("\r\x1b[K" + text)
            sys.stderr.flush()
        else:
            typer.echo(text, err=True)

    def close(self) -> None:
        if self.tty and self.done:
            sys.stderr.write("\n")
            sys.stderr.flush()


def _plan_table_lines(rows: list[erlang.Plan], hold: timedelta, target: float) -> Iterator[str]:
    yield f"leases held {span(hold)} on average, at most {percent(target)} turned away"
    cells = [
        [str(row.slots), f"{row.offered_erlangs:.3f}", f"{row.max_arrivals_per_hour:.1f}"]
        for row in rows
    ]
    yield from table(["SLOTS", "ERLANGS", "PAYMENTS/HOUR"], cells, right={0, 1, 2})


def _plan_lines(document: views.PlanOut, hold: timedelta) -> Iterator[str]:
    target = percent(document.target)
    held = f"holding a slot {span(hold)} on average"
    if document.arrivals_per_hour is None:
        yield f"{document.slots} slots, at most {target} turned away, payments {held}:"
        yield f"  offered load      {document.offered_erlangs:.3f} erlangs"
        yield f"  payments an hour  {document.max_arrivals_per_hour:.1f}"
        return
    yield f"{document.arrivals_per_hour:g} payments an hour {held}:"
    yield f"  offered load      {document.offered_erlangs:.3f} erlangs"
    yield f"  slots needed      {document.slots_needed} (for at most {target} turned away)"
    if document.turned_away is not None:
        yield (
            f"  with {document.slots} slots   {percent(document.turned_away)} turned away; "
            f"{document.slots} slots carry {document.max_arrivals_per_hour:.1f} "
            f"payments an hour at {target}"
        )


def _simulation_lines(document: views.SimulationOut) -> Iterator[str]:
    workload = document.workload
    policies = document.policies
    amounts = "one amount" if workload.uniform_amount else "8 amounts"
    yield (
        f"{workload.slots} slots, {workload.arrivals_per_hour:g} payments an hour, "
        f"{workload.customers} customers a run (seed {workload.seed}), {amounts}, "
        f"patience {workload.patience_seconds:g}s"
    )
    rows: list[tuple[str, Callable[[views.PolicyOut], str]]] = [
        ("arrivals", lambda p: str(p.arrivals)),
        ("admitted", lambda p: str(p.admitted)),
        ("turned away", lambda p: f"{p.turned_away} ({percent(p.turned_away_share)})"),
        ("waited", lambda p: str(p.waited)),
        ("mean wait", lambda p: f"{p.mean_wait_seconds:.1f}s"),
        ("p95 wait", lambda p: f"{p.p95_wait_seconds:.1f}s"),
        ("mean hold", lambda p: f"{p.mean_hold_seconds:.0f}s"),
        ("approved payments", lambda p: str(p.approved)),
        ("misattributed", lambda p: str(p.misattributed)),
        ("lost", lambda p: str(p.lost)),
        ("sent to review", lambda p: str(p.needs_review)),
        (f"max/hour at {percent(document.target)}",
         lambda p: "-" if p.max_arrivals_per_hour is None else f"{p.max_arrivals_per_hour:.1f}"),
    ]  # fmt: skip
    names = list(policies)
    cells = [[label, *(show(policies[name]) for name in names)] for label, show in rows]
    yield from table(["", *names], cells, right=set(range(1, len(names) + 1)))
    comparison = document.comparison
    if "callbackpoolOverSeed" in comparison:
        yield f"callbackpool carries {comparison['callbackpoolOverSeed']:.2f}× seed (target ≥ 1.5×)"
    if "callbackpoolOverOracle" in comparison:
        yield (
            f"callbackpool carries {comparison['callbackpoolOverOracle']:.2f} of oracle "
            "(target ≥ 0.85)"
        )


COMMANDS = (plan, simulate)
