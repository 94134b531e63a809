"""What `monitor status` reports per tenant, as data (for `--json` and `/status`) and as text."""

from __future__ import annotations

import time
from typing import Any

from monitor.app import Runtime
from monitor.durations import format_duration
from monitor.settings import TenantConfig
from monitor.sinks.jupiterone import publishing_status, render_publishing
from monitor.sync import ALL_SOURCES, DELTA_PERMISSION, INTUNE_SOURCE

# Directory delta tokens expire after 7 days (GRAPH.md 8); warn well before.
DELTA_TOKEN_WARN_AGE = 6 * 86400


async def tenant_status(runtime: Runtime, tenant: TenantConfig) -> dict[str, Any]:
    store = runtime.store(tenant.id)
    last_seq = await store.last_seq()
    sources: dict[str, Any] = {}
    for name in (*ALL_SOURCES, INTUNE_SOURCE):
        entry: dict[str, Any] = dict(await store.status(name))
        if name in DELTA_PERMISSION:
            state = await store.delta_state(name)
            entry["delta_token_age_seconds"] = None if state is None else round(time.time() - state.saved_at)
        sources[name] = entry
    sinks = {}
    for sink in runtime.sinks:
        cursor = await store.cursor(sink.name)
        sinks[sink.name] = {"cursor": cursor, "behind": last_seq - cursor}
    return {
        "tenant": tenant.id,
        "account_name": tenant.account_name,
        # seq starts at 1 and the log is never trimmed, so the last seq is the number of records.
        "change_log": {"records": last_seq, "entries": await store.changelog_entries(), "last_seq": last_seq},
        "sources": sources,
        "permissions": await store.permissions(),
        "sinks": sinks,
        "jupiterone": await publishing_status(runtime.redis, tenant.id) if runtime.publisher is not None else None,
    }


def render_tenant(status: dict[str, Any]) -> str:
    name = f" ({status['account_name']})" if status.get("account_name") else ""
    log = status["change_log"]
    lines = [
        f"tenant {status['tenant']}{name}",
        f"  change log   {log['records']:,} records, last seq {log['last_seq']:,}",
    ]
    for source, entry in status["sources"].items():
        lines.append(f"  {source:<12} {_source_line(entry)}")
    for permission, entry in sorted(status["permissions"].items()):
        state = "granted" if entry.get("granted") else f"MISSING: no {entry.get('needed_for')}"
        lines.append(f"  permission   {permission}: {state}")
    for sink, entry in status["sinks"].items():
        lines.append(f"  sink         {sink}: at seq {entry['cursor']:,} ({entry['behind']:,} behind)")
    if status.get("jupiterone") is not None:
        lines.extend(render_publishing(status["jupiterone"]))
    return "\n".join(lines)


def _source_line(entry: dict[str, Any]) -> str:
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
    if entry.get("partial"):
        parts.append(f"skipped parts: {entry['partial']}")
    if entry.get("error"):
        parts.append(f"LAST ERROR {entry.get('error_at', '')}: {entry['error']}")
    return "; ".join(parts)
