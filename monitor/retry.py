"""The retry policy, in one place: which failures are retried, how long to wait, and counting.

Graph (GRAPH.md 10.1) and JupiterOne (JUPITERONE.md 10.3-10.4) both throttle with 429 and may send
`Retry-After`, as seconds (possibly fractional, e.g. `2.128`) or as an HTTP date, or not at all.
Every client in this project retries through `RetryPolicy`: it honours `Retry-After` when present,
otherwise backs off exponentially with full jitter, caps every wait, and gives up after a bounded
number of attempts.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

# 429 throttled; 500/502/503/504 transient service faults (GRAPH.md 10.1: 503 and 504 are
# transient; 500/502 are retried too, as the public integration learned: JUPITERONE.md 4.2).
RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait according to a `Retry-After` header, or None when absent or unreadable."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    return max(0.0, seconds)


@dataclass(slots=True)
class RetryStats:
    """What a client did, for summaries and metrics."""

    requests: int = 0
    retries: int = 0
    throttled: int = 0
    waited: float = 0.0
    by_reason: Counter[str] = field(default_factory=Counter)

    def snapshot(self) -> dict[str, float]:
        return {"requests": self.requests, "retries": self.retries, "throttled": self.throttled, "waited": self.waited}


@dataclass(slots=True)
class RetryPolicy:
    """Bounded exponential backoff with full jitter, `Retry-After` first."""

    max_retries: int = 6
    base_delay: float = 0.5
    max_delay: float = 60.0
    rng: random.Random = field(default_factory=random.Random)

    def delay(self, attempt: int, retry_after: float | None) -> float:
        """How long to wait before retry number `attempt` (1-based)."""
        if retry_after is not None:
            # The server said how long; a small jitter keeps a fleet of workers from returning at
            # the same instant, and the cap protects us from an absurd header.
            return min(self.max_delay, retry_after + self.rng.uniform(0, min(1.0, retry_after * 0.1)))
        ceiling = min(self.max_delay, self.base_delay * (2 ** (attempt - 1)))
        return self.rng.uniform(ceiling / 2, ceiling)

    def plan(self, stats: RetryStats, attempt: int, *, reason: str, retry_after: float | None) -> float:
        """Count retry number `attempt` in `stats` and return how long to wait before it.

        `reason` is the HTTP status as text (or the error's name); a 429 also counts as throttled.
        """
        delay = self.delay(attempt, retry_after)
        stats.retries += 1
        stats.throttled += reason == "429"
        stats.by_reason[reason] += 1
        stats.waited += delay
        return delay

    def should_retry(self, attempt: int) -> bool:
        return attempt <= self.max_retries

    @staticmethod
    def retryable_status(status: int) -> bool:
        return status in RETRYABLE_STATUSES
