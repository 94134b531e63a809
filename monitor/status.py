"""What `monitor status` reports per tenant, as data (for `--json` and `/status`) and as text."""

from __future__ import annotations

import time
from collections.abc import Sequence

from monitor.app import Runtime
from monitor.durations import format_duration
from monitor.graph.subscriptions import parse_graph_time
from monitor.hints import queue_status
from monitor.keys import WORKER_HEARTBEAT_PATTERN, worker_of_heartbeat
from monitor.metrics import metric
from monitor.model.types import JsonObject
from monitor.permission_check import render_permission
from monitor.records import decode_registry
from monitor.settings import TenantConfig
from monitor.sinks.actors import STATUS as ACTORS_STATUS
from monitor.sinks.alerts import ALERTS_SINK, recent_alerts
from monitor.sinks.base import log_restart
from monitor.sinks.effective import EFFECTIVE_CURSOR
from monitor.sinks.jupiterone import publishing_status, render_publishing
from monitor.source_registry import SOURCES

# Directory delta tokens expire after 7 days (docs/graph.md 8); warn well before.
DELTA_TOKEN_WARN_AGE = 6 * 86400
# The worker records each subscription check under this status name (monitor.worker).
UPKEEP_STATUS = "subscriptions"
RECENT_ALERTS_SHOWN = 10


async def tenant_status(runtime: Runtime, tenant: TenantConfig) -> JsonObject:
    store = runtime.store(tenant.id)
    last_seq = await store.last_seq()
    sources: JsonObject = {}
    for source in SOURCES:
        entry: JsonObject = dict(await store.status(source.name))
        if entry.get("last_round_at"):
            entry["last_round_age_seconds"] = _age_seconds(runtime, entry["last_round_at"])
        if source.reading == "delta":
            state = await store.delta_state(source.name)
            entry["delta_token_age_seconds"] = None if state is None else round(time.time() - state.saved_at)
        sources[source.name] = entry
    sinks = {}
    for sink in runtime.sinks:
        cursor = await store.cursor(sink.name)
        health = await _sink_health(runtime, tenant, sink.name)
        restart = await log_restart(store, sink.name)
        sinks[sink.name] = {"cursor": cursor, "behind": last_seq - cursor, **health, "log_restart": restart}
    return {
        "tenant": tenant.id,
        "account_name": tenant.account_name,
        "description": tenant.description,
        "polling_interval": tenant.polling_interval,
        # seq starts at 1 and the log is never trimmed, so the last seq is the number of records.
        "change_log": {"records": last_seq, "entries": await store.changelog_entries(), "last_seq": last_seq},
        "sources": sources,
        "permissions": await store.permissions(),
        "subscriptions": await _subscriptions(runtime, tenant),
        # The last subscription check (renewals, re-creations) and its error, if any.
        "subscription_upkeep": await store.status(UPKEEP_STATUS) or None,
        "sinks": sinks,
        "alerts": await _alerts(runtime, tenant, last_seq),
        "actors": await _actors(runtime, tenant) if tenant.alerts else None,
        "jupiterone": await _jupiterone(runtime, tenant) if runtime.publisher is not None else None,
    }


async def all_statuses(runtime: Runtime) -> list[JsonObject]:
    """`tenant_status` of every tenant watched (configured and registered), for `status` and `/status`."""
    await runtime.refresh_tenants()
    return [await tenant_status(runtime, tenant) for tenant in runtime.tenants()]


async def deployment_status(runtime: Runtime) -> JsonObject:
    """What belongs to no tenant: the hint queue every worker reads, and the workers alive."""
    return {
        "hints": await queue_status(runtime.redis, int(runtime.clock().timestamp() * 1000)),
        "workers": await live_workers(runtime),
    }


async def live_workers(runtime: Runtime) -> list[JsonObject]:
    """The workers whose heartbeat key has not expired (`monitor.keys.worker_heartbeat`: every running
    worker refreshes it, and deletes it when it stops), by name: when each last sent one, how long
    ago. A worker killed without stopping drops out once its key expires."""
    keys = sorted({_text(key) async for key in runtime.redis.scan_iter(match=WORKER_HEARTBEAT_PATTERN, count=1000)})
    if not keys:
        return []
    beats = await runtime.redis.mget(keys)  # one hash tag: one slot, also on Redis Cluster
    workers = []
    for key, beat in zip(keys, beats, strict=True):
        if beat is not None:  # None: expired between the scan and the read
            when = _text(beat)
            workers.append(
                {"name": worker_of_heartbeat(key), "last_heartbeat": when, "age_seconds": _age_seconds(runtime, when)}
            )
    return workers


def _age_seconds(runtime: Runtime, timestamp: str) -> int | None:
    """Seconds since `timestamp` (ISO 8601) by the runtime's clock; None if it cannot be read."""
    try:
        moment = parse_graph_time(timestamp)
    except ValueError:
        return None
    return round((runtime.clock() - moment).total_seconds())


async def operational_gauges(runtime: Runtime) -> dict[str, float]:
    """`status_gauges` of the status right now (what `/metrics` adds to the counters)."""
    return status_gauges(await all_statuses(runtime), await deployment_status(runtime))


def status_gauges(statuses: Sequence[JsonObject], deployment: JsonObject) -> dict[str, float]:
    """The status's figures as Prometheus gauges, so the alerting rules watch the very numbers the
    status page shows: the hint queue, each source's last round, each sink's cursor, subscription
    upkeep and JupiterOne publishing."""
    hints = deployment["hints"]
    gauges = {
        "monitor_hints_pending": float(hints["pending"]),
        "monitor_hints_oldest_age_seconds": float(hints["oldest_age_seconds"]),
        "monitor_workers_live": float(len(deployment.get("workers", []))),
    }
    for status in statuses:
        gauges.update(_tenant_gauges(status))
    return gauges


def _tenant_gauges(status: JsonObject) -> dict[str, float]:
    tenant = status["tenant"]
    gauges: dict[str, float] = {}
    for source, entry in status["sources"].items():
        if entry.get("last_round_age_seconds") is not None:
            gauges[metric("monitor_source_last_round_age_seconds", tenant=tenant, source=source)] = float(
                entry["last_round_age_seconds"]
            )
        if entry.get("last_round_at") or entry.get("error"):
            gauges[metric("monitor_source_failing", tenant=tenant, source=source)] = float(bool(entry.get("error")))
    sinks = dict(status["sinks"])
    alerts = status.get("alerts") or {}
    if alerts.get("rules") and alerts.get("cursor"):
        sinks[ALERTS_SINK] = alerts
    for sink, entry in sinks.items():
        gauges[metric("monitor_sink_cursor", tenant=tenant, sink=sink)] = float(entry["cursor"])
        gauges[metric("monitor_sink_records_behind", tenant=tenant, sink=sink)] = float(entry["behind"])
        gauges[metric("monitor_sink_failing", tenant=tenant, sink=sink)] = float(bool(entry.get("error")))
    upkeep = status.get("subscription_upkeep") or {}
    if upkeep.get("checked_at"):
        gauges[metric("monitor_subscription_upkeep_failed", tenant=tenant)] = float(bool(upkeep.get("error")))
    j1 = status.get("jupiterone")
    if j1 is not None:
        gauges[metric("monitor_jupiterone_dirty_scopes", tenant=tenant)] = float(j1["dirty_scopes"])
        if j1.get("lag_seconds") is not None:
            gauges[metric("monitor_jupiterone_lag_seconds", tenant=tenant)] = float(j1["lag_seconds"])
        if j1.get("last_success_at") is not None:
            gauges[metric("monitor_jupiterone_last_success_timestamp_seconds", tenant=tenant)] = float(
                j1["last_success_at"]
            )
    return gauges


async def _subscriptions(runtime: Runtime, tenant: TenantConfig) -> list[JsonObject]:
    """Our Graph subscriptions of the tenant (the registry the webhook checks) and when each expires.
    The clientState is a shared secret with Graph and is left out."""
    registry = decode_registry(await runtime.redis.hgetall(runtime.store(tenant.id).keys.subscriptions))
    now = runtime.clock()
    found = []
    for name, record in sorted(registry.items()):
        expiration = record["expiration"]
        left = (parse_graph_time(expiration) - now).total_seconds() if expiration else None
        found.append(
            {
                "id": name,
                "resource": record["resource"],
                "expiration": expiration or None,
                "expires_in_seconds": None if left is None else round(left),
            }
        )
    return found


async def _alerts(runtime: Runtime, tenant: TenantConfig, last_seq: int) -> JsonObject:
    rules = tenant.alerts
    cursor = await runtime.store(tenant.id).cursor(ALERTS_SINK) if rules else 0
    effective = await runtime.store(tenant.id).cursor(EFFECTIVE_CURSOR) if any(r.effective for r in rules) else 0
    return {
        "rules": len(rules),
        "names": [rule.name for rule in rules],
        "destinations": sum(len(rule.send_to) for rule in rules),
        "cursor": cursor,
        "behind": max(0, last_seq - cursor) if rules and cursor else 0,
        # Effective membership (monitor.sinks.effective) has a cursor of its own.
        "effective_behind": max(0, last_seq - effective) if effective else None,
        "recent": await recent_alerts(runtime.store(tenant.id), RECENT_ALERTS_SHOWN),
        **(await _sink_health(runtime, tenant, ALERTS_SINK) if rules else {"error": None}),
    }


async def _sink_health(runtime: Runtime, tenant: TenantConfig, sink: str) -> JsonObject:
    """Whether deliveries to a sink fail: the last error (None when healthy), since when, how many
    deliveries in a row failed. The records meanwhile wait in the change log."""
    state = await runtime.store(tenant.id).sink_state(sink)
    return {
        "error": state.get("error") or None,
        "error_at": state.get("error_at"),
        "failing_since": state.get("failing_since"),
        "failed_deliveries": int(state.get("failures", 0)),
    }


async def _actors(runtime: Runtime, tenant: TenantConfig) -> JsonObject:
    """Who made each change (monitor.sinks.actors): the last read of the audit log, alerts waiting."""
    store = runtime.store(tenant.id)
    waiting = int(await store.redis.hlen(store.keys.actors_pending))
    return {**await store.status(ACTORS_STATUS), "waiting": waiting}


async def _jupiterone(runtime: Runtime, tenant: TenantConfig) -> JsonObject:
    """The publishing state, plus the lag: how long changes have waited since the last confirmed
    upload (0 when nothing is waiting; None when nothing was ever confirmed)."""
    state = await publishing_status(runtime.redis, tenant.id)
    last = state.get("last_success_at")
    if not state["dirty_scopes"]:
        state["lag_seconds"] = 0
    else:
        state["lag_seconds"] = None if last is None else round(time.time() - float(last))
    return state


def render_tenant(status: JsonObject) -> str:
    name = f" ({status['account_name']})" if status.get("account_name") else ""
    log = status["change_log"]
    lines = [
        f"tenant {status['tenant']}{name}",
        f"  change log   {log['records']:,} records, last seq {log['last_seq']:,}",
    ]
    for source, entry in status["sources"].items():
        lines.append(f"  {source:<12} {_source_line(entry)}")
    for permission, entry in sorted(status["permissions"].items()):
        lines.append(f"  permission   {render_permission(permission, entry)}")
    for subscription in status.get("subscriptions", []):
        left = subscription["expires_in_seconds"]
        when = "no expiry known" if left is None else (f"expires in {format_duration(left)}" if left > 0 else "EXPIRED")
        lines.append(f"  subscription {subscription['resource']}: {when} ({subscription['expiration']})")
    upkeep = status.get("subscription_upkeep") or {}
    if upkeep.get("checked_at"):
        outcome = f"FAILED: {upkeep['error']}" if upkeep.get("error") else "ok"
        lines.append(f"  subscriptions last checked {upkeep['checked_at']}: {outcome}")
    for sink, entry in status["sinks"].items():
        lines.append(f"  sink         {sink}: at seq {entry['cursor']:,} ({entry['behind']:,} behind){_stuck(entry)}")
        if entry.get("log_restart"):
            lines.append(f"  sink         {sink}: {_restarted(entry['log_restart'])}")
    alerts = status.get("alerts") or {}
    if alerts.get("rules"):
        effective = alerts.get("effective_behind")
        lines.append(
            f"  alerts       {alerts['rules']} rule(s) ({', '.join(alerts['names'])}), "
            f"{alerts['destinations']} destination(s), {alerts['behind']:,} records behind"
            + (f" (effective membership: {effective:,} behind)" if effective is not None else "")
            + _stuck(alerts)
        )
        for alert in alerts.get("recent", [])[:3]:
            group = (alert.get("group") or {}).get("name") or (alert.get("group") or {}).get("id")
            lines.append(
                f"  alert        {alert.get('observedAt')} {alert.get('change')} in {group} ({alert.get('rule')})"
            )
    if status.get("actors") is not None:
        lines.append(f"  actors       {_actors_line(status['actors'])}")
    if status.get("jupiterone") is not None:
        lines.extend(render_publishing(status["jupiterone"]))
        lag = status["jupiterone"].get("lag_seconds")
        lines.append(f"  j1 lag       {'nothing confirmed yet' if lag is None else format_duration(lag)}")
    return "\n".join(lines)


def render_deployment(deployment: JsonObject) -> str:
    hints = deployment["hints"]
    age = hints["oldest_age_seconds"]
    waited = f", the oldest waiting {format_duration(age)}" if hints["length"] else ""
    lines = [f"hint queue   {hints['length']:,} hints, {hints['pending']:,} taken by a worker{waited}"]
    workers = deployment.get("workers", [])
    if not workers:
        lines.append("workers      NONE live: no worker has sent a heartbeat lately (queued hints wait for one)")
    for worker in workers:
        since = worker["age_seconds"]
        ago = "" if since is None else f" ({format_duration(max(0, since))} ago)"
        lines.append(f"worker       {worker['name']}: live, last heartbeat {worker['last_heartbeat']}{ago}")
    return "\n".join(lines)


def _restarted(note: JsonObject) -> str:
    return (
        f"WARNING: the change log started again (found {note['at']}): it holds seq up to "
        f"{note['held_seq']:,} of an earlier log, then the new log from seq {note['new_log_from_seq']:,} "
        "(tenant removed and added back, or Redis lost its data)"
    )


def _stuck(entry: JsonObject) -> str:
    if not entry.get("error"):
        return ""
    return (
        f"; STUCK since {entry['failing_since']} ({entry['failed_deliveries']} failed deliveries, "
        f"last {entry['error_at']}): {entry['error']}"
    )


def _actors_line(entry: JsonObject) -> str:
    waiting = f"{entry['waiting']} alert(s) waiting for their actor"
    if entry.get("state") == "unavailable":
        return f"UNAVAILABLE: {entry.get('detail')} (checked {entry.get('checked_at')}); alerts carry actor: null"
    if not entry.get("checked_at"):
        return f"directory audit log not read yet; {waiting}"
    read = f"directory audit log read {entry['checked_at']}: {entry.get('entries', 0)} membership entries"
    behind = f"; catching up on {entry['behind']}" if entry.get("behind") else ""
    error = f"; LAST ERROR: {entry['error']}" if entry.get("error") else ""
    return f"{read}; {waiting}{behind}{error}"


def _source_line(entry: JsonObject) -> str:
    if entry.get("skipped"):
        return f"skipped: {entry['skipped']}"
    if not entry.get("last_round_at") and not entry.get("error"):
        return "never run"
    parts = []
    if entry.get("last_round_at"):
        objects, changes = int(entry.get("objects", 0)), int(entry.get("changes", 0))
        parts.append(
            f"last {entry.get('kind', '')} round {entry['last_round_at']}: {objects:,} objects, "
            f"{changes:,} changes, {entry.get('requests', 0)} requests, {entry.get('duration', 0)}s"
        )
    age = entry.get("delta_token_age_seconds")
    if age is not None:
        warning = "  WARNING: near Graph's 7-day limit" if age > DELTA_TOKEN_WARN_AGE else ""
        parts.append(f"delta token age {format_duration(age)}{warning}")
    if entry.get("reread"):
        parts.append(f"re-read {entry['reread']}")
    if entry.get("partial"):
        parts.append(f"skipped parts: {entry['partial']}")
    if entry.get("busy"):
        parts.append(str(entry["busy"]))
    if entry.get("beta"):
        parts.append(f"reads Graph beta for {entry['beta']}")
    if entry.get("member_names"):
        parts.append(str(entry["member_names"]))
    if entry.get("error"):
        parts.append(f"LAST ERROR {entry.get('error_at', '')}: {entry['error']}")
    return "; ".join(parts)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
