"""A settable clock shared by everything in the simulator.

Token lifetimes (docs/graph.md 11.1), delta-token expiry after 7 days (docs/graph.md 8) and throttling
refill (docs/graph.md 10.2) all read this clock, so a test can jump a week ahead in one call instead of
waiting. A running clock follows the wall clock (plus whatever was advanced), which is what the
standalone simulator and the benchmarks want; a frozen clock only moves when told to, which is
what deterministic tests want.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime


class SimClock:
    """`now()` in UTC; `advance()` moves it forward."""

    def __init__(self, start: datetime | None = None, *, frozen: bool = False) -> None:
        self._start = (start or datetime.now(UTC)).astimezone(UTC)
        self._frozen = frozen
        self._origin = time.monotonic()
        self._offset = 0.0

    @property
    def frozen(self) -> bool:
        return self._frozen

    def timestamp(self) -> float:
        """Seconds since the epoch by this clock."""
        elapsed = 0.0 if self._frozen else time.monotonic() - self._origin
        return self._start.timestamp() + elapsed + self._offset

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.timestamp(), UTC)

    def advance(self, seconds: float = 0.0, *, days: float = 0.0) -> datetime:
        """Move the clock forward; returns the new time. Going backwards is refused."""
        delta = seconds + days * 86400
        if delta < 0:
            raise ValueError("the simulated clock only moves forward")
        self._offset += delta
        return self.now()


def graph_datetime(moment: datetime) -> str:
    """Graph's date-time form: UTC, whole seconds, a trailing Z (e.g. createdDateTime)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def inner_error_date(moment: datetime) -> str:
    """The form of `innerError.date` in Graph error bodies (no zone suffix)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")
