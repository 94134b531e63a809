"""The retry policy and the one retry loop: which failures are retried, how long to wait, counting.

Graph (docs/graph.md 10.1) and JupiterOne (docs/jupiterone.md 10.3-10.4) both throttle with 429 and may send
`Retry-After`, as seconds (possibly fractional, e.g. `2.128`) or as an HTTP date, or not at all.
Every client in this project retries through `RetryPolicy.run`: it honours `Retry-After` when
present, otherwise backs off exponentially with full jitter, caps every wait, counts every retry,
and gives up after a bounded number of attempts.

The loop knows nothing of HTTP. A caller gives it one attempt (an HTTP exchange through
`monitor.http`, a `$batch` round, an MSAL token request) and a classifier that turns the attempt's
outcome into a verdict: a result (success), an exception it raises (give up at once), `Retry`
(worth another try, possibly after the wait the server asked for; with what becomes of the call
once the budget is spent), or `Again` (send again at once, not a retry: the caller fixed something
on its own side, such as a stale token).
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Generic, NoReturn, TypeAlias, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
Outcome = TypeVar("Outcome")
Sleep = Callable[[float], Awaitable[None]]

# 429 throttled; 500/502/503/504 transient service faults (docs/graph.md 10.1: 503 and 504 are
# transient; 500/502 are retried too, as the public integration learned: docs/jupiterone.md 4.2).
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

    def plan(self, stats: RetryStats, attempt: int, retry: Retry[T]) -> float:
        """Count retry number `attempt` in `stats` (each request it sends again) and return how long
        to wait before it."""
        delay = self.delay(attempt, retry.retry_after)
        stats.retries += len(retry.reasons)
        stats.throttled += retry.throttled
        stats.by_reason.update(retry.reasons)
        stats.waited += delay
        return delay

    async def run(
        self,
        attempt: Callable[[], Awaitable[Outcome]],
        classify: Callable[[Outcome], Verdict[T]],
        *,
        stats: RetryStats,
        sleep: Sleep,
        label: str,
        logger: logging.Logger | logging.LoggerAdapter[logging.Logger] = log,
        level: int = logging.INFO,
    ) -> T:
        """Attempt, classify, and on `Retry` wait and attempt again until the budget is spent; the
        one retry loop of the project. `label` names the call in the log line of each retry."""
        retries = 0
        while True:
            verdict = classify(await attempt())
            if isinstance(verdict, Again):
                continue
            if not isinstance(verdict, Retry):
                return verdict
            if not self.should_retry(retries + 1):
                return verdict.give_up(retries)
            retries += 1
            delay = self.plan(stats, retries, verdict)
            asked = f" (Retry-After {verdict.retry_after:g}s)" if verdict.retry_after is not None else ""
            logger.log(level, "%s: %s, retry %d in %.2fs%s", label, verdict.describe(), retries, delay, asked)
            await sleep(delay)

    def should_retry(self, attempt: int) -> bool:
        return attempt <= self.max_retries

    @staticmethod
    def retryable_status(status: int) -> bool:
        return status in RETRYABLE_STATUSES


@dataclass(frozen=True, slots=True)
class Retry(Generic[T]):
    """The verdict "worth another try".

    `give_up` is what becomes of the call once the budget is spent, told how many retries were made:
    it raises the caller's error (`raising`), or returns a final result (a `$batch` hands back the
    inner answers that still failed). `reasons` name each request that goes again (the HTTP status as
    text, or the transport error's name; a `$batch` sends several again at once), `throttled` how many
    of them were 429s; both are counted in `RetryStats`. `retry_after` is the wait the server asked
    for in seconds (None: the policy's backoff); `detail` says what happened, for the log.
    """

    give_up: Callable[[int], T]
    reasons: tuple[str, ...]
    retry_after: float | None = None
    throttled: int = 0
    detail: str = ""

    def describe(self) -> str:
        return self.detail or ", ".join(self.reasons)


@dataclass(frozen=True, slots=True)
class Again:
    """The verdict "send again at once": not a retry, neither counted nor waited for. The caller fixed
    something on its own side (Graph answered 401 and the token was dropped); the caller makes sure
    it answers so at most once per call."""


Verdict: TypeAlias = T | Retry[T] | Again


def raising(error: Callable[[int], Exception]) -> Callable[[int], NoReturn]:
    """A `Retry.give_up` that raises `error(retries)`."""

    def give_up(retries: int) -> NoReturn:
        raise error(retries)

    return give_up
