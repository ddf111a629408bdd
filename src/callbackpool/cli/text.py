"""The pieces every command's text output is made of: aligned tables, path labels, counts,
shares, times and durations as an operator reads them."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta

from ..views import span

__all__ = ["NO_PATHS", "ago", "clock_time", "count", "path_table", "percent", "span", "table"]

NO_PATHS = "no callback paths: run 'callbackpool init'"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: set[int]) -> Iterator[str]:
    """Aligned columns; the columns in ``right`` (numbers) aligned to the right."""
    widths = [max(len(cell) for cell in column) for column in zip(headers, *rows, strict=True)]
    for cells in (headers, *rows):
        yield "  ".join(
            cell.rjust(width) if index in right else cell.ljust(width)
            for index, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()


def path_table(
    headers: Sequence[str], rows: Sequence[Sequence[str]], right: set[int]
) -> Iterator[str]:
    """``table`` over rows whose first cell is a callback path: the folder all the paths
    share is named once above it (``paths under /api/v1/payments/callback/``), and each row
    shows what follows."""
    paths = [row[0] for row in rows]
    shared = paths[0][: paths[0].rfind("/") + 1] if paths else ""
    for path in paths:
        while not path.startswith(shared):
            shared = shared[: shared.rstrip("/").rfind("/") + 1]
    prefix = "" if shared == "/" else shared
    if prefix:
        yield f"paths under {prefix}"
    yield from table(headers, [[row[0][len(prefix) :], *row[1:]] for row in rows], right)


def count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def percent(share: float) -> str:
    return f"{share * 100:.3g}%"


def clock_time(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def ago(moment: datetime | None, now: datetime) -> str:
    """``5m 10s ago``, ``in 9m 55s``, or ``-``."""
    if moment is None:
        return "-"
    delta = now - moment
    if delta >= timedelta(0):
        return f"{span(delta)} ago"
    return f"in {span(-delta)}"
