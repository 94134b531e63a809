"""The JupiterOne publisher's bookkeeping in Redis, and what `monitor status` and `/metrics` show of it.

Everything a status line or a metric needs is written here, next to the publisher's work:

- per upload scope, a **backoff** entry when JupiterOne did not take it (a 4xx for its request, a
  job that finished with error counters, a job ending in an error status): the scope stays dirty and
  is tried again at `until`, sooner if it changes;
- per tenant, a **problem** while JupiterOne refuses or cannot be reached (401, 403, an outage): one
  status line saying what to do and a gauge, cleared by the next confirmed job;
- the last errors with the offending scope, key and rule; the objects left out as invalid;
- the last reconciliation's report (`monitor.sinks.j1_reconcile`).

Metrics (tenant-labelled by `monitor.metrics.render`): `monitor_j1_jobs_total{result}`,
`monitor_j1_job_errors_total{counter}`, `monitor_j1_failures_total{reason}`, gauges
`monitor_j1_problem{reason}`, `monitor_j1_backoff_scopes`, `monitor_j1_drift_objects{type,drift}` and
`monitor_j1_drift_scopes`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from monitor.keys import TenantKeys
from monitor.metrics import metric
from monitor.model.types import JsonMapping, JsonObject
from monitor.redis_conn import Redis
from monitor.retry import RetryPolicy
from monitor.scopes import upload_scopes_of
from monitor.sinks.j1_client import J1Error
from monitor.sinks.j1_validate import Invalid

Clock = Callable[[], float]
Raw = bytes | str  # a value as redis-py returns it

# Failures that stop every scope of the tenant alike (status shows one line for them).
PROBLEMS = ("unauthorized", "forbidden", "unavailable")
_ADVICE = {
    "unauthorized": "JupiterOne refuses the API key (401): check MONITOR_J1_API_KEY and MONITOR_J1_ACCOUNT",
    "forbidden": "the API key lacks a permission (403): it needs to write data (sync jobs) and to read it (J1QL)",
    "unavailable": "JupiterOne is unavailable: retrying with backoff",
}
_ERRORS_SHOWN = 10
_BACKOFF_SHOWN = 3


def text(value: Raw) -> str:
    return value.decode() if isinstance(value, bytes) else value


@dataclass(frozen=True, slots=True)
class Backoff:
    """A scope JupiterOne did not take: tried again at `until`, or when its dirty `counters` move."""

    counters: str
    attempts: int
    until: float
    reason: str
    message: str

    def waiting(self, counters: str, now: float) -> bool:
        return self.counters == counters and now < self.until

    def dumps(self) -> bytes:
        return orjson.dumps(
            {
                "counters": self.counters,
                "attempts": self.attempts,
                "until": self.until,
                "reason": self.reason,
                "message": self.message,
            }
        )

    @classmethod
    def loads(cls, raw: Raw) -> Backoff:
        data = orjson.loads(raw)
        return cls(str(data["counters"]), int(data["attempts"]), float(data["until"]), data["reason"], data["message"])


class PublishState:
    """Reads and writes one tenant's publishing bookkeeping. Stateless apart from its arguments."""

    def __init__(self, redis: Redis, tenant_id: str, *, clock: Clock, backoff: RetryPolicy) -> None:
        self.redis = redis
        self.keys = TenantKeys(tenant_id)
        self.clock = clock
        self.backoff = backoff

    async def backoffs(self) -> dict[str, Backoff]:
        raw: dict[Raw, Raw] = await self.redis.hgetall(self.keys.j1_backoff)
        return {text(k): Backoff.loads(v) for k, v in raw.items()}

    async def record_success(self, name: str, job_id: str, rejected: list[Invalid]) -> None:
        now = self.clock()
        pipe: Any = self.redis.pipeline(transaction=False)
        pipe.hdel(self.keys.j1_backoff, name)
        if rejected:
            pipe.hset(self.keys.j1_rejected, name, orjson.dumps([r.as_dict() for r in rejected]))
            for problem in rejected:
                self._error(pipe, now, name, problem.key, problem.rule, problem.detail)
            detail = f"{name}: {len(rejected)} invalid objects left out"
            pipe.hset(self.keys.j1_state, mapping={"last_error_at": now, "last_error": detail})
            pipe.hincrby(self.keys.metrics, "monitor_j1_rejected_total", len(rejected))
        else:
            pipe.hdel(self.keys.j1_rejected, name)
        pipe.hset(self.keys.j1_state, mapping={"last_success_at": now, "last_job": job_id, "last_scope": name})
        pipe.hdel(self.keys.j1_state, "problem")
        for reason in PROBLEMS:
            pipe.hset(self.keys.metrics, metric("monitor_j1_problem", reason=reason), 0)
        pipe.hincrby(self.keys.metrics, metric("monitor_j1_jobs_total", result="finished"), 1)
        await pipe.execute()

    async def record_failure(self, name: str, counters: str, exc: J1Error) -> Backoff | None:
        """A scope JupiterOne did not confirm. Not transient: backoff. A tenant-wide kind: the problem."""
        now = self.clock()
        entry = None if exc.transient else await self._next_backoff(name, counters, exc.reason, str(exc))
        pipe: Any = self.redis.pipeline(transaction=False)
        if entry is not None:
            pipe.hset(self.keys.j1_backoff, name, entry.dumps())
        self._error(pipe, now, name, exc.key, exc.code or exc.reason, str(exc))
        pipe.hset(self.keys.j1_state, mapping={"last_error_at": now, "last_error": f"{name}: {exc}"})
        pipe.hincrby(self.keys.metrics, metric("monitor_j1_jobs_total", result="failed"), 1)
        pipe.hincrby(self.keys.metrics, metric("monitor_j1_failures_total", reason=exc.reason), 1)
        await pipe.execute()
        if exc.reason in PROBLEMS:
            await self._problem(exc.reason, str(exc), now)
        return entry

    async def record_job_errors(
        self, name: str, counters: str, job_id: str, errors: Mapping[str, int], *, retry_now: bool = False
    ) -> Backoff:
        """A job that finished with error counters: the scope stays dirty and backs off (`retry_now`:
        the next pass may try it again, though its attempts still count)."""
        now = self.clock()
        listed = ", ".join(f"{counter}={count}" for counter, count in sorted(errors.items()))
        message = f"job {job_id} finished with {listed}"
        entry = await self._next_backoff(name, counters, "job_errors", message)
        if retry_now:
            entry = Backoff(entry.counters, entry.attempts, now, entry.reason, entry.message)
        pipe: Any = self.redis.pipeline(transaction=False)
        pipe.hset(self.keys.j1_backoff, name, entry.dumps())
        self._error(pipe, now, name, None, "job_errors", message)
        pipe.hset(self.keys.j1_state, mapping={"last_error_at": now, "last_error": f"{name}: {message}"})
        pipe.hincrby(self.keys.metrics, metric("monitor_j1_jobs_total", result="errors"), 1)
        pipe.hincrby(self.keys.metrics, metric("monitor_j1_failures_total", reason="job_errors"), 1)
        for counter, count in errors.items():
            pipe.hincrby(self.keys.metrics, metric("monitor_j1_job_errors_total", counter=counter), count)
        await pipe.execute()
        return entry

    async def record_pass(self, summary: str, *, bytes_sent: int, objects: int) -> None:
        pipe: Any = self.redis.pipeline(transaction=False)
        pipe.hset(self.keys.j1_state, mapping={"last_pass_at": self.clock(), "last_pass": summary})
        if bytes_sent:
            pipe.hincrby(self.keys.metrics, "monitor_j1_bytes_total", bytes_sent)
        if objects:
            pipe.hincrby(self.keys.metrics, "monitor_j1_objects_total", objects)
        pipe.hset(self.keys.metrics, "monitor_j1_backoff_scopes", await self.redis.hlen(self.keys.j1_backoff))
        await pipe.execute()

    async def _next_backoff(self, name: str, counters: str, reason: str, message: str) -> Backoff:
        raw = await self.redis.hget(self.keys.j1_backoff, name)
        attempts = (Backoff.loads(raw).attempts if raw is not None else 0) + 1
        return Backoff(counters, attempts, self.clock() + self.backoff.delay(attempts, None), reason, message)

    async def _problem(self, reason: str, message: str, now: float) -> None:
        raw = await self.redis.hget(self.keys.j1_state, "problem")
        since = now
        if raw is not None:
            previous = orjson.loads(raw)
            since = float(previous["since"]) if previous.get("reason") == reason else now
        pipe: Any = self.redis.pipeline(transaction=False)
        problem = {"reason": reason, "since": since, "message": message, "advice": _ADVICE[reason]}
        pipe.hset(self.keys.j1_state, "problem", orjson.dumps(problem))
        for other in PROBLEMS:
            pipe.hset(self.keys.metrics, metric("monitor_j1_problem", reason=other), int(other == reason))
        await pipe.execute()

    def _error(self, pipe: Any, now: float, scope: str, key: str | None, rule: str, message: str) -> None:
        entry = {"at": now, "scope": scope, "key": key, "rule": rule, "message": message}
        pipe.lpush(self.keys.j1_errors, orjson.dumps(entry))
        pipe.ltrim(self.keys.j1_errors, 0, TenantKeys.J1_ERRORS_KEPT - 1)

    async def record_reconcile(self, report: JsonMapping, drift_series: Mapping[str, int]) -> None:
        """Keep the last reconciliation's report; replace the drift gauges with `drift_series`."""
        stale = [text(f) for f in await self.redis.hkeys(self.keys.metrics) if text(f).startswith("monitor_j1_drift")]
        pipe: Any = self.redis.pipeline(transaction=False)
        pipe.set(self.keys.j1_reconcile, orjson.dumps(report))
        if stale:
            pipe.hdel(self.keys.metrics, *stale)
        for series, value in drift_series.items():
            pipe.hset(self.keys.metrics, series, value)
        await pipe.execute()


# -- status --------------------------------------------------------------------------------------


async def publishing_status(redis: Redis, tenant_id: str, *, now: float | None = None) -> JsonObject:
    """The tenant's publishing state for `monitor status` and `/status`: dirty scopes, jobs in
    flight, last success, the tenant-wide problem if any, scopes in backoff, last errors (with the
    offending key and rule), invalid objects left out, and the last reconciliation."""
    keys = TenantKeys(tenant_id)
    pipe: Any = redis.pipeline(transaction=False)
    pipe.hkeys(keys.dirty)
    pipe.hgetall(keys.j1_inflight)
    pipe.hgetall(keys.j1_state)
    pipe.lrange(keys.j1_errors, 0, _ERRORS_SHOWN - 1)
    pipe.hvals(keys.j1_rejected)
    pipe.hgetall(keys.j1_backoff)
    pipe.get(keys.j1_reconcile)
    dirty, inflight, state, errors, rejected, backoff, reconcile = await pipe.execute()
    state = {text(k): text(v) for k, v in state.items()}
    current = time.time() if now is None else now
    backoffs = [_backoff_view(text(scope), Backoff.loads(raw), current) for scope, raw in sorted(backoff.items())]
    return {
        "dirty_scopes": len(upload_scopes_of(text(name) for name in dirty)),
        "in_flight": [{"scope": text(scope), **orjson.loads(entry)} for scope, entry in sorted(inflight.items())],
        "last_success_at": _float(state.get("last_success_at")),
        "last_job": state.get("last_job"),
        "last_pass_at": _float(state.get("last_pass_at")),
        "last_pass": state.get("last_pass"),
        "last_error_at": _float(state.get("last_error_at")),
        "last_error": state.get("last_error"),
        "problem": orjson.loads(state["problem"]) if "problem" in state else None,
        "backoff": backoffs,
        "set_aside_scopes": [entry["scope"] for entry in backoffs],
        "errors": [orjson.loads(entry) for entry in errors],
        "invalid_objects_left_out": sum(len(orjson.loads(entry)) for entry in rejected),
        "reconcile": None if reconcile is None else orjson.loads(reconcile),
    }


def _backoff_view(scope: str, entry: Backoff, now: float) -> JsonObject:
    return {
        "scope": scope,
        "reason": entry.reason,
        "attempts": entry.attempts,
        "retry_at": entry.until,
        "retry_in_seconds": max(0, round(entry.until - now)),
        "message": entry.message,
    }


def _float(value: str | None) -> float | None:
    return None if value is None else float(value)


def when(epoch: float | None) -> str:
    return "never" if epoch is None else datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")


def render_publishing(status: JsonMapping) -> list[str]:
    """`monitor status` lines for `publishing_status(...)`."""
    in_flight = status["in_flight"]
    lines = [
        f"  jupiterone   {status['dirty_scopes']:,} dirty scopes, {len(in_flight)} jobs in flight, "
        f"last success {when(status['last_success_at'])}"
    ]
    problem = status.get("problem")
    if problem:
        lines.append(
            f"  j1 PROBLEM   since {when(problem['since'])}: {problem['advice']}; "
            f"{status['dirty_scopes']:,} scopes wait, none is lost ({problem['message']})"
        )
    for job in in_flight:
        lines.append(f"  j1 job       {job['scope']}: {job['mode']} job {job['job']} since {when(job['started_at'])}")
    backoff = status.get("backoff") or []
    for entry in backoff[:_BACKOFF_SHOWN]:
        lines.append(
            f"  j1 backoff   {entry['scope']}: {entry['reason']}, attempt {entry['attempts']}, "
            f"next try {when(entry['retry_at'])} (or when it changes): {entry['message']}"
        )
    if len(backoff) > _BACKOFF_SHOWN:
        lines.append(f"  j1 backoff   ... and {len(backoff) - _BACKOFF_SHOWN} more scopes")
    if status["invalid_objects_left_out"]:
        lines.append(
            f"  j1 invalid   {status['invalid_objects_left_out']:,} invalid objects left out (not at JupiterOne)"
        )
    if status["last_error_at"] is not None:
        lines.append(f"  j1 error     {when(status['last_error_at'])}: {status['last_error']}")
    for error in status["errors"][:3]:
        key = f" key {error['key']}" if error.get("key") else ""
        lines.append(f"    {error['scope']}{key} [{error.get('rule') or '?'}]: {error['message']}")
    if status.get("reconcile"):
        lines.append(render_reconcile(status["reconcile"]))
    return lines


def render_reconcile(report: JsonMapping) -> str:
    """One line for the last reconciliation: when, how, and the drift per type."""
    mode = "check" if report.get("check") else "repair"
    head = f"  j1 reconcile {when(report.get('finished_at'))} ({mode}, {report.get('scopes_compared', 0):,} scopes)"
    if report.get("error"):
        return f"{head}: FAILED: {report['error']}"
    drift = report.get("drift") or {}
    if not drift:
        return f"{head}: no drift"
    parts = [
        f"{type_} {', '.join(f'{count} {kind}' for kind, count in sorted(kinds.items()))}"
        for type_, kinds in sorted(drift.items())
    ]
    action = "repaired" if not report.get("check") else "not repaired (--check)"
    return f"{head}: DRIFT in {report.get('scopes_differing', 0)} scopes, {action}: {'; '.join(parts)}"


# -- results of a publishing pass (monitor.sinks.jupiterone) ---------------------------------------


@dataclass(frozen=True, slots=True)
class ScopeFailure:
    """A scope JupiterOne did not confirm; `transient` failures are retried on a later pass, the
    others after a backoff (or when the scope changes)."""

    scope: str
    error: str
    code: str = ""
    key: str | None = None
    transient: bool = True
    reason: str = ""


@dataclass(slots=True)
class PublishResult:
    """What one publishing pass did. Requests and bytes are the client's totals over the pass."""

    jobs: int = 0
    requests: int = 0
    bytes_sent: int = 0
    raw_bytes: int = 0
    bytes_received: int = 0
    objects: int = 0
    published: list[str] = field(default_factory=list)
    rejected: list[Invalid] = field(default_factory=list)
    failures: list[ScopeFailure] = field(default_factory=list)
    # Scopes whose job finished with error counters (after the pass's second chance), by counter.
    job_errors: dict[str, dict[str, int]] = field(default_factory=dict)
    # Scopes not uploaded: held by another publisher, or already clean.
    skipped: int = 0
    # Scopes left dirty, waiting for their backoff to pass.
    backing_off: int = 0
    # Scopes left dirty without an attempt: after an outage or a refused key, or behind a wave
    # that JupiterOne did not confirm.
    postponed: int = 0
    # Scopes published a second time in the pass (relationships waiting for a scope of the pass).
    retried: int = 0
    still_dirty: int = 0

    def summary(self, tenant_id: str) -> str:
        parts = [
            f"jupiterone {tenant_id}: {self.jobs} jobs, {self.objects:,} objects, "
            f"{self.bytes_sent:,} bytes in {self.requests} requests"
        ]
        if self.rejected:
            parts.append(f"{len(self.rejected)} invalid objects left out")
        if self.job_errors:
            first, counters = next(iter(self.job_errors.items()))
            listed = ", ".join(f"{name}={count}" for name, count in sorted(counters.items()))
            parts.append(f"{len(self.job_errors)} jobs finished with errors (first: {first}: {listed})")
        if self.failures:
            parts.append(
                f"{len(self.failures)} scopes failed (first: {self.failures[0].scope}: {self.failures[0].error})"
            )
        if self.backing_off:
            parts.append(f"{self.backing_off} scopes backing off")
        if self.postponed:
            parts.append(f"{self.postponed} scopes postponed")
        if self.still_dirty:
            parts.append(f"{self.still_dirty} scopes still dirty")
        return "; ".join(parts)
