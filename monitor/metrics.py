"""Metrics kept as counters in Redis, rendered in the Prometheus text format by `web`.

Counters live in Redis hashes (one for the deployment, one per tenant) rather than in process
memory, so every process (web replicas, workers, the scheduler) adds to the same numbers and any
web replica serves them all. Gauges (queue depth, subscription expiry) are read at scrape time.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from redis.exceptions import RedisError

from monitor.keys import GLOBAL_METRICS, TenantKeys
from monitor.redis_conn import Redis

log = logging.getLogger(__name__)

HELP = {
    "monitor_notifications_total": "Graph notification items received, by outcome (accepted or the reason dropped).",
    "monitor_webhook_requests_total": "Webhook POSTs, by endpoint and HTTP status.",
    "monitor_lifecycle_events_total": "Lifecycle notifications received, by event.",
    "monitor_hints_queue_depth": "Hints waiting for a worker.",
    "monitor_jobs_total": "Jobs run by workers, by job and outcome.",
    "monitor_changes_total": "Change records emitted, by source, kind and op.",
    "monitor_graph_requests_total": "Graph requests made, by source.",
    "monitor_graph_retries_total": "Graph requests retried, by source.",
    "monitor_graph_throttled_total": "Graph 429 answers (each throttled request or $batch part), by tenant.",
    "monitor_subscription_expiry_seconds": "Seconds until a Graph subscription expires.",
    "monitor_delta_token_age_seconds": "Age of the saved delta link, by resource.",
    "monitor_alerts_total": "Alerts sent, by tenant and rule.",
    "monitor_j1_jobs_total": "JupiterOne sync jobs, by result (finished, errors: with error counters, failed).",
    "monitor_j1_objects_total": "Objects uploaded to JupiterOne.",
    "monitor_j1_bytes_total": "Bytes uploaded to JupiterOne.",
    "monitor_j1_rejected_total": "Invalid objects left out of JupiterOne uploads.",
    # Gauges read from the status at scrape time (monitor.status.status_gauges).
    "monitor_hints_pending": "Hints a worker has taken and not yet acknowledged.",
    "monitor_hints_oldest_age_seconds": "How long the oldest hint not yet done has waited (0 when none waits).",
    "monitor_workers_live": "Workers whose heartbeat is fresh (running now).",
    "monitor_source_last_round_age_seconds": "Seconds since the source's last completed round, by tenant and source.",
    "monitor_source_failing": "1 when the source's last run failed, by tenant and source.",
    "monitor_sink_cursor": "The last seq a sink delivered, by tenant and sink (alerts included).",
    "monitor_sink_records_behind": "Change records a sink has not delivered yet, by tenant and sink.",
    "monitor_subscription_upkeep_failed": "1 when the tenant's last subscription check (renewal, repair) failed.",
    "monitor_jupiterone_dirty_scopes": "Scopes with changes JupiterOne has not confirmed yet.",
    "monitor_jupiterone_lag_seconds": "How long changes have waited since the last confirmed JupiterOne upload.",
    "monitor_jupiterone_last_success_timestamp_seconds": "Unix time of the last confirmed JupiterOne upload.",
    "monitor_intune_passes_total": "Intune sweep passes, by pass and outcome (invalid_response: a wrong answer).",
    "monitor_intune_incremental_total": "Incremental Intune passes, by outcome (partial: a stream off).",
    "monitor_intune_incremental_objects_total": "Devices and policies re-read by incremental Intune passes.",
    "monitor_task_restarts_total": "Worker and scheduler loops restarted after they failed, by task and reason "
    "(redis: Redis unavailable; crash: anything else).",
    "monitor_j1_job_errors_total": "Error counters of JupiterOne jobs that finished with errors, by counter.",
    "monitor_j1_failures_total": "Scopes JupiterOne did not take, by reason.",
    "monitor_j1_problem": "1 while JupiterOne refuses our key (unauthorized, forbidden) or is unavailable.",
    "monitor_j1_backoff_scopes": "Upload scopes JupiterOne did not take, waiting for their next try.",
    "monitor_j1_drift_objects": "Objects that differed at JupiterOne in the last reconciliation, by type and drift.",
    "monitor_j1_drift_scopes": "Upload scopes that differed at JupiterOne in the last reconciliation.",
    "monitor_j1_reconciles_total": "Reconciliations with JupiterOne, by mode (check, repair) and result.",
    "monitor_sink_failures_total": "Deliveries to a sink (or the alert rules) that failed; the records wait, by sink.",
    "monitor_sink_failing": "1 while deliveries to a sink (or the alert rules) fail, else 0, by sink.",
    "monitor_sink_log_restarts_total": "Times a sink found it held records of an earlier log of the tenant "
    "(seq started again: tenant removed and added back, or Redis data lost), by sink.",
}
GAUGES = frozenset(
    {
        "monitor_hints_queue_depth",
        "monitor_subscription_expiry_seconds",
        "monitor_delta_token_age_seconds",
        "monitor_hints_pending",
        "monitor_hints_oldest_age_seconds",
        "monitor_workers_live",
        "monitor_source_last_round_age_seconds",
        "monitor_source_failing",
        "monitor_sink_cursor",
        "monitor_sink_records_behind",
        "monitor_subscription_upkeep_failed",
        "monitor_jupiterone_dirty_scopes",
        "monitor_jupiterone_lag_seconds",
        "monitor_jupiterone_last_success_timestamp_seconds",
        "monitor_j1_problem",
        "monitor_j1_backoff_scopes",
        "monitor_j1_drift_objects",
        "monitor_j1_drift_scopes",
        "monitor_sink_failing",
    }
)


def metric(name: str, **labels: str) -> str:
    """The series key `name{a="1",b="2"}` (labels sorted, values escaped as Prometheus wants)."""
    if not labels:
        return name
    body = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(labels.items()))
    return f"{name}{{{body}}}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def queue_increments(pipeline: Any, key: str, counts: Mapping[str, int]) -> None:
    """Add HINCRBYs for `counts` to an open pipeline (so they travel with other writes)."""
    for command in increment_commands(key, counts):
        pipeline.execute_command(*command)


def increment_commands(key: str, counts: Mapping[str, int]) -> list[tuple[str, str, str, int]]:
    """The HINCRBYs of `counts` as commands (for `queue_increments`, or `monitor.redis_conn.Pipelined`)."""
    return [("HINCRBY", key, series, count) for series, count in counts.items() if count]


async def increment(redis: Redis, key: str, counts: Mapping[str, int]) -> None:
    pipeline: Any = redis.pipeline(transaction=False)
    queue_increments(pipeline, key, counts)
    await pipeline.execute()


async def tenant_increment(redis: Redis, tenant: str, counts: Mapping[str, int]) -> None:
    await increment(redis, TenantKeys(tenant).metrics, counts)


def throttle_counter(redis: Redis) -> Callable[[str, int], Awaitable[None]]:
    """A Graph client's `on_throttled`: counts 429s per tenant (`monitor_graph_throttled_total`).

    A Redis failure here is logged, not raised: the Graph call it was counting goes on (the retry
    it is about to make does not depend on the count)."""

    async def count(tenant: str, throttled: int) -> None:
        try:
            await tenant_increment(redis, tenant, {"monitor_graph_throttled_total": throttled})
        except (RedisError, OSError) as exc:
            log.warning("cannot count Graph throttling for tenant %s: %s", tenant, exc)

    return count


async def render(redis: Redis, tenants: Iterable[str], gauges: Mapping[str, float] | None = None) -> str:
    """Every counter (deployment-wide and per tenant, the latter labelled `tenant`) and `gauges`."""
    series: dict[str, float] = {}
    for field, value in (await redis.hgetall(GLOBAL_METRICS)).items():
        series[_text(field)] = float(value)
    for tenant in tenants:
        for field, value in (await redis.hgetall(TenantKeys(tenant).metrics)).items():
            series[_with_label(_text(field), "tenant", tenant)] = float(value)
    series.update(gauges or {})
    return _format(series)


def _with_label(series: str, label: str, value: str) -> str:
    name, brace, rest = series.partition("{")
    extra = f'{label}="{_escape(value)}"'
    return f"{name}{{{extra},{rest}" if brace else f"{name}{{{extra}}}"


def _format(series: Mapping[str, float]) -> str:
    by_name: dict[str, list[tuple[str, float]]] = {}
    for key, value in series.items():
        by_name.setdefault(key.partition("{")[0], []).append((key, value))
    lines: list[str] = []
    for name in sorted(by_name):
        if name in HELP:
            lines.append(f"# HELP {name} {HELP[name]}")
        lines.append(f"# TYPE {name} {'gauge' if name in GAUGES else 'counter'}")
        lines += [f"{key} {_number(value)}" for key, value in sorted(by_name[name])]
    return "\n".join(lines) + "\n"


def _number(value: float) -> str:
    return str(int(value)) if value == int(value) else f"{value:.3f}"


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def now_ms() -> int:
    return int(time.time() * 1000)
