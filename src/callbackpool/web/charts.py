"""The dashboard's charts, drawn on the server as SVG geometry (no script, no library: the
pages keep a strict Content-Security-Policy). Colours come from classes in the style sheet."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from ..analytics import PoolSeries
from ..domain.model import LeaseEnd

WIDTH, HEIGHT = 560, 170
LEFT, RIGHT, TOP, BOTTOM = 44, 10, 10, 24
PLOT_W, PLOT_H = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

# How each lease ending is named and coloured (the class) on the outcome chart.
ENDINGS: tuple[tuple[LeaseEnd, str], ...] = (
    (LeaseEnd.CALLBACK, "returned"),
    (LeaseEnd.CANCELLED, "cancelled"),
    (LeaseEnd.EXPIRED, "expired"),
    (LeaseEnd.ADMIN, "released by an operator"),
)


@dataclass(frozen=True, kw_only=True)
class Rect:
    x: float
    y: float
    w: float
    h: float
    css: str
    title: str


@dataclass(frozen=True, kw_only=True)
class Path:
    d: str
    css: str


@dataclass(frozen=True, kw_only=True)
class Chart:
    key: str
    title: str
    summary: str  # what a screen reader says, and the caption
    width: int = WIDTH
    height: int = HEIGHT
    rects: tuple[Rect, ...] = ()
    paths: tuple[Path, ...] = ()
    y_ticks: tuple[tuple[float, str], ...] = ()
    x_ticks: tuple[tuple[float, str], ...] = ()
    legend: tuple[tuple[str, str], ...] = ()
    empty: str | None = None  # why there is nothing to draw
    plot: tuple[int, int, int, int] = field(default=(LEFT, TOP, PLOT_W, PLOT_H))


def charts(series: PoolSeries) -> list[Chart]:
    """The four charts of the dashboard, for one window."""
    return [
        _utilisation(series),
        _turn_aways(series),
        _endings(series),
        _durations(series),
    ]


def _x_ticks(series: PoolSeries) -> tuple[tuple[float, str], ...]:
    count = len(series.utilisation)
    fmt = "%d %b %H:%M" if series.bucket * count > timedelta(days=1) else "%H:%M"
    ticks = []
    for index in (0, count // 2, count):
        moment: datetime = series.since + index * series.bucket
        ticks.append((LEFT + PLOT_W * index / count, moment.strftime(fmt)))
    return tuple(ticks)


def _nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 5 × 10ⁿ at or above ``value`` (at least 1)."""
    if value <= 1:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if value <= step * power:
            return float(step * power)
    return float(10 * power)  # pragma: no cover - the loop always returns


def _y(value: float, top: float) -> float:
    return TOP + PLOT_H * (1 - value / top)


def _y_ticks(top: float, label: str = "{:g}") -> tuple[tuple[float, str], ...]:
    return tuple((_y(v, top), label.format(v)) for v in (0, top / 2, top))


def _line(values: Sequence[float | None], top: float, css: str) -> Path | None:
    """A polyline through the buckets' middles; a gap where a bucket has no value."""
    count = len(values)
    parts: list[str] = []
    pen_down = False
    for index, value in enumerate(values):
        if value is None:
            pen_down = False
            continue
        x = LEFT + PLOT_W * (index + 0.5) / count
        parts.append(f"{'L' if pen_down else 'M'}{x:.1f},{_y(min(value, top), top):.1f}")
        pen_down = True
    return Path(d=" ".join(parts), css=css) if parts else None


def _utilisation(series: PoolSeries) -> Chart:
    values = series.utilisation
    count = len(values)
    line = _line([v * 100 for v in values], 100, "line-util")
    area = ""
    if line is not None:
        first = LEFT + PLOT_W * 0.5 / count
        last = LEFT + PLOT_W * (count - 0.5) / count
        area = f"{line.d} L{last:.1f},{TOP + PLOT_H} L{first:.1f},{TOP + PLOT_H} Z"
    peak = max(values, default=0.0)
    mean = sum(values) / count if count else 0.0
    return Chart(
        key="utilisation",
        title="Utilisation",
        summary=f"Slots leased, share of {series.slots}: mean {mean:.0%}, peak {peak:.0%}",
        paths=tuple(p for p in (Path(d=area, css="area-util"), line) if p is not None and p.d),
        y_ticks=_y_ticks(100, "{:g}%"),
        x_ticks=_x_ticks(series),
    )


def _bars(
    series: PoolSeries, stacks: Sequence[tuple[str, str, Sequence[int]]], unit: str
) -> tuple[tuple[Rect, ...], float]:
    count = len(series.utilisation)
    totals = [sum(values[i] for _, _, values in stacks) for i in range(count)]
    top = _nice_ceiling(max(totals, default=0))
    slot_w = PLOT_W / count
    rects = []
    for index in range(count):
        base = 0
        start = series.since + index * series.bucket
        for css, label, values in stacks:
            value = values[index]
            if not value:
                continue
            y0, y1 = _y(base, top), _y(base + value, top)
            rects.append(
                Rect(
                    x=round(LEFT + index * slot_w + slot_w * 0.15, 1),
                    y=round(y1, 1),
                    w=round(slot_w * 0.7, 1),
                    h=round(y0 - y1, 1),
                    css=css,
                    title=f"{start:%H:%M}: {value} {label if label else unit}",
                )
            )
            base += value
    return tuple(rects), top


def _turn_aways(series: PoolSeries) -> Chart:
    if series.turned_away is None:
        return Chart(
            key="turn-aways",
            title="Turned away",
            summary="Turn-aways are not recorded",
            empty="not recorded",
        )
    total = sum(series.turned_away)
    rects, top = _bars(series, [("bar-refused", "", series.turned_away)], "turned away")
    return Chart(
        key="turn-aways",
        title="Turned away",
        summary=f"Requests turned away, every slot leased: {total} in the window",
        rects=rects,
        y_ticks=_y_ticks(top),
        x_ticks=_x_ticks(series),
        empty=None if total else "no one was turned away",
    )


def _endings(series: PoolSeries) -> Chart:
    stacks = [
        (f"bar-{reason.value}", label, series.ended[reason])
        for reason, label in ENDINGS
        if reason in series.ended
    ]
    extra = [r for r in series.ended if r not in dict(ENDINGS)]
    stacks += [(f"bar-{r.value}", r.value, series.ended[r]) for r in extra]
    total = sum(sum(values) for _, _, values in stacks)
    rects, top = _bars(series, stacks, "leases")
    counts = ", ".join(f"{sum(values)} {label}" for _, label, values in stacks if sum(values))
    return Chart(
        key="endings",
        title="How leases ended",
        summary=f"Leases ended in the window: {counts or 'none'}",
        rects=rects,
        y_ticks=_y_ticks(top),
        x_ticks=_x_ticks(series),
        legend=tuple((css, label) for css, label, _ in stacks),
        empty=None if total else "no lease ended",
    )


def _durations(series: PoolSeries) -> Chart:
    longest = max((v for v in series.duration_p95 if v is not None), default=0.0)
    # Minutes, unless every lease was short: then seconds.
    scale, unit = (60.0, "min") if longest >= 120 else (1.0, "s")
    p50 = [None if v is None else v / scale for v in series.duration_p50]
    p95 = [None if v is None else v / scale for v in series.duration_p95]
    top = _nice_ceiling(longest / scale)
    lines = tuple(
        line
        for line in (_line(p95, top, "line-p95"), _line(p50, top, "line-p50"))
        if line is not None
    )
    medians = sorted(v for v in p50 if v is not None)
    summary = (
        f"How long leases held their slots: median {medians[len(medians) // 2]:.1f} {unit}"
        if medians
        else "No lease ended in the window"
    )
    return Chart(
        key="durations",
        title="Lease duration",
        summary=summary,
        paths=lines,
        y_ticks=_y_ticks(top, "{:g} " + unit),
        x_ticks=_x_ticks(series),
        legend=(("line-p50", "median"), ("line-p95", "95th percentile")),
        empty=None if lines else "no lease ended",
    )
