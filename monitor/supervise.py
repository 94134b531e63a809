"""Supervision of the long-running loops: the worker and the scheduler, run apart or in `monitor serve`.

One mechanism for every loop instead of a try/except around each Redis call: a supervised loop
that fails (Redis stopped, restarted, failed over, or a bug) is restarted after a backoff, and
counted, until the process is asked to stop. A loop restarted after Redis went away starts from
scratch against the Redis that came back: it re-creates its consumer group, re-reads its own
pending hints and takes its leases again (first releasing those its failed runs could not,
`monitor.leases.release_abandoned`), so nothing depends on state a failed connection held.

- The backoff is `monitor.retry.RetryPolicy` with a short cap (`RESTART_MAX_DELAY`): a loop is
  back at work within that many seconds of Redis answering again.
- Each restart adds to `monitor_task_restarts_total{task, reason}` (`reason` is `redis` for a
  Redis outage, `crash` for anything else). Counts that could not be written while Redis was down
  are written with the next successful one.
- `Health` says whether the loop is working; the loop itself reports progress (`Health.working()`)
  after each successful Redis round trip, the supervisor reports failures. `/readyz` (`monitor
  serve`) and the probes of `monitor worker` / `monitor scheduler` (`monitor.probes`) answer 503
  while a loop is not working, so an orchestrator can tell.

A Redis outage is logged as one WARNING line when it starts and one INFO line when the loop is back;
any other failure is logged with its traceback (ERROR), since it is a bug to fix.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from monitor.keys import GLOBAL_METRICS
from monitor.leases import release_abandoned
from monitor.metrics import increment, metric
from monitor.model.types import JsonObject
from monitor.redis_conn import REDIS_UNAVAILABLE, Redis
from monitor.retry import RetryPolicy

log = logging.getLogger(__name__)

T = TypeVar("T")

# The longest wait between two restarts: a loop resumes within this of Redis answering again.
RESTART_MAX_DELAY = 5.0
RESTART_BASE_DELAY = 0.5


def is_redis_outage(error: BaseException) -> bool:
    """Whether `error` says Redis could not be used (connection refused or lost, timed out, a node
    down, a script or group gone with a restarted server), not that our code is wrong. A group of
    errors (a task group's siblings failing together) counts when every member does."""
    if isinstance(error, BaseExceptionGroup):
        return all(is_redis_outage(member) for member in error.exceptions)
    return isinstance(error, REDIS_UNAVAILABLE)


@dataclass(slots=True)
class Health:
    """Whether one supervised loop is doing its work, for readiness probes and status."""

    task: str
    ok: bool = False
    reason: str = "starting"
    restarts: int = 0
    stopped: bool = False
    since: float = field(default_factory=time.monotonic)

    def working(self) -> None:
        """The loop completed a round trip to Redis: it can work."""
        if not self.ok:
            if self.restarts:
                log.info("%s: working again after %.1fs", self.task, time.monotonic() - self.since)
            self.ok, self.reason, self.since = True, "", time.monotonic()

    def failing(self, reason: str) -> None:
        if self.ok:
            self.since = time.monotonic()
        self.ok, self.reason = False, reason

    @property
    def ready(self) -> bool:
        return self.ok and not self.stopped

    def describe(self) -> JsonObject:
        state = "stopped" if self.stopped else "working" if self.ok else "not working"
        described: JsonObject = {"state": state, "restarts": self.restarts}
        if not self.ok and self.reason:
            described["reason"] = self.reason
        return described


class Supervisor:
    """Runs one loop until `stop`, restarting it (with backoff) whenever it fails."""

    def __init__(self, redis: Redis, health: Health, *, policy: RetryPolicy | None = None) -> None:
        self.redis = redis
        self.health = health
        self.policy = policy or RetryPolicy(base_delay=RESTART_BASE_DELAY, max_delay=RESTART_MAX_DELAY)
        self._uncounted: dict[str, int] = {}

    async def run(self, loop: Callable[[], Awaitable[T]], stop: asyncio.Event) -> T | None:
        """`loop()` until it returns (it returns when `stop` is set), restarted after each failure."""
        failures = 0
        try:
            while not stop.is_set():
                if await self._resume(failures):
                    started = time.monotonic()
                    try:
                        return await loop()
                    except Exception as exc:
                        if stop.is_set():
                            log.warning("%s: failed while stopping: %s", self.health.task, one_line(exc))
                            return None
                        # A loop that worked for a while starts its backoff afresh.
                        failures = 1 if time.monotonic() - started > self.policy.max_delay * 2 else failures + 1
                        self._failed(exc, failures)
                else:
                    failures += 1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.policy.delay(failures, None))
            return None
        finally:
            self.health.stopped = True

    async def _resume(self, failures: int) -> bool:
        """Before a restart: count the restarts and release the leases the failed loop left held.
        False while Redis does not answer (the loop would only fail again)."""
        if not failures:
            return True
        try:
            if self._uncounted:
                await increment(self.redis, GLOBAL_METRICS, self._uncounted)
                self._uncounted = {}
            await release_abandoned(self.redis)
        except REDIS_UNAVAILABLE:
            return False
        return True

    def _failed(self, error: Exception, failures: int) -> None:
        outage = is_redis_outage(error)
        reason = "redis" if outage else "crash"
        self.health.restarts += 1
        self.health.failing(f"{'Redis unavailable' if outage else 'crashed'}: {one_line(error)}")
        series = metric("monitor_task_restarts_total", task=self.health.task, reason=reason)
        self._uncounted[series] = self._uncounted.get(series, 0) + 1
        if not outage:
            log.error("%s crashed; restarting it", self.health.task, exc_info=error)
        elif failures == 1:
            log.warning("%s: Redis unavailable (%s); retrying until it answers", self.health.task, one_line(error))


def one_line(error: BaseException) -> str:
    if isinstance(error, BaseExceptionGroup) and error.exceptions:
        return one_line(error.exceptions[0])
    text = str(error).splitlines()[0] if str(error) else ""
    return f"{type(error).__name__}: {text}"[:300] if text else type(error).__name__
