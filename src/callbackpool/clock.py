"""Clocks. The pool reads time only through the store, which reads it from one of these
(or, on PostgreSQL, from the database: docs/design.md, invariant 6)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware, UTC."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)
