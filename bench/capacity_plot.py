"""The share turned away against payments an hour, for the three policies of
``callbackpool simulate``, as a PNG for docs/capacity.md.

Each point is one simulation run of the issue's workload (10 slots, the same customers at
every rate). Needs matplotlib (``pip install -e '.[plot]'``); run on demand, not a test:

    .venv/bin/python bench/capacity_plot.py                      # docs/capacity-turned-away.png
    .venv/bin/python bench/capacity_plot.py --uniform-amount --out uniform.png

The last line is machine-readable: ``capacity_plot points=<n> out=<path>``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from callbackpool.capacity.erlang import erlang_b
from callbackpool.capacity.simulate import POLICIES, Workload, simulate

DOCS = Path(__file__).resolve().parents[1] / "docs"
RATES = tuple(range(20, 201, 10))
COLOURS = {"seed": "#c0392b", "callbackpool": "#2471a3", "oracle": "#7f8c8d"}
LABELS = {
    "seed": "seed (the guide's pool)",
    "callbackpool": "callbackpool (heartbeat + 30 s waiting room)",
    "oracle": "oracle (learns every departure at once)",
}


def point(policy: str, workload: Workload) -> tuple[str, float, float, float]:
    logging.getLogger("callbackpool").setLevel(logging.ERROR)
    result = simulate(policy, workload)
    return policy, workload.arrivals_per_hour, result.turned_away_share, result.mean_hold


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--uniform-amount", action="store_true")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--out", type=Path, default=DOCS / "capacity-turned-away.png")
    args = parser.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    base = Workload(customers=args.customers, seed=args.seed, uniform_amount=args.uniform_amount)
    runs = [
        (policy, Workload(**{**base.__dict__, "arrivals_per_hour": float(rate)}))
        for policy in POLICIES
        for rate in RATES
    ]
    shares: dict[str, list[tuple[float, float]]] = {policy: [] for policy in POLICIES}
    holds: dict[str, list[float]] = {policy: [] for policy in POLICIES}
    with ProcessPoolExecutor(max_workers=args.jobs) as workers:
        for done, (policy, rate, share, hold) in enumerate(
            workers.map(point, *zip(*runs, strict=True)), start=1
        ):
            shares[policy].append((rate, share))
            holds[policy].append(hold)
            print(f"\r{done}/{len(runs)} runs", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)

    figure, axes = plt.subplots(figsize=(8, 4.8), dpi=120)
    for policy in POLICIES:
        rates, values = zip(*shares[policy], strict=True)
        axes.plot(
            rates,
            [100 * v for v in values],
            marker="o",
            markersize=3.5,
            color=COLOURS[policy],
            label=LABELS[policy],
        )
    # Erlang B with the seed policy's own mean holding time: a loss system of 10 slots.
    seed_hold = sum(holds["seed"]) / len(holds["seed"])
    axes.plot(
        RATES,
        [100 * erlang_b(10, rate * seed_hold / 3600) for rate in RATES],
        linestyle=":",
        color=COLOURS["seed"],
        label=f"Erlang B, 10 slots, {seed_hold:.0f} s mean hold",
    )
    axes.axhline(1.0, color="black", linewidth=0.8, linestyle="--")
    axes.annotate("1% target", xy=(RATES[0], 1.0), xytext=(0, 4), textcoords="offset points")
    variant = "one amount for everybody" if args.uniform_amount else "8 catalogue amounts"
    axes.set_title(f"Turned away on 10 slots (issue 7 workload, {variant}, seed {args.seed})")
    axes.set_xlabel("payments an hour (Poisson arrivals)")
    axes.set_ylabel("turned away (%)")
    axes.set_xlim(RATES[0], RATES[-1])
    axes.set_ylim(0, 20)
    axes.grid(alpha=0.3)
    axes.legend(loc="upper left", fontsize=8)
    figure.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.out, metadata={"Software": None})
    print(json.dumps({p: [[r, round(s, 5)] for r, s in shares[p]] for p in POLICIES}))
    print(f"capacity_plot points={len(runs)} out={args.out.name}")


if __name__ == "__main__":
    main()
