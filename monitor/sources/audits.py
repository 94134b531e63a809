"""The membership entries of a tenant's directory audit log, read incrementally into Redis.

`GET /v1.0/auditLogs/directoryAudits` (docs/graph.md 13.1), once per membership activity, filtered
by `activityDateTime ge <start> and activityDisplayName eq '<activity>'` and ordered by
`activityDateTime` (both documented for the list, 13.2), following `@odata.nextLink`:

- **Incremental.** Per activity, the newest `activityDateTime` read through is kept in Redis
  (`TenantKeys.audit_state`); the next read starts `overlap` before it, because entries arrive
  minutes late and not necessarily in order (13.4), and never earlier than the oldest change an
  alert still waits for (`floor`). Entries are stored per (group, member) under their own id
  (`TenantKeys.audit_pair`), so what the overlap reads again adds nothing.
- **Bounded.** At most `MAX_PAGES` pages per activity and run. A read cut short resumes where it
  stopped, without the overlap, until it has caught up.
- **Refusals.** A 403 (no `AuditLog.Read.All`, or no Entra ID P1/P2 licence, 13.5) is not an error
  of the run: it is returned as the reason the audit log is unavailable. Anything else propagates.

Nothing here runs on the webhook's path: the worker runs it for the `actors` job
(monitor.sinks.actors), which the scheduler asks for while alerts wait.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from monitor.actors import MEMBER_ACTIVITIES, AuditEntry, epoch, graph_time, parse_entry, unavailable_reason
from monitor.graph.client import GraphError
from monitor.sources.base import SourceContext

PATH = "/v1.0/auditLogs/directoryAudits"
MAX_PAGES = 20


@dataclass(slots=True)
class AuditRead:
    """What one read did: entries stored, requests made, whether it caught up, or why it could not."""

    entries: int = 0
    pages: int = 0
    behind: list[str] = field(default_factory=list)
    unavailable: str | None = None


async def read_audits(context: SourceContext, *, floor: float, overlap: float, keep: float) -> AuditRead:
    """Read the membership entries from each activity's high-water mark (less `overlap`, not before
    `floor`) and store them for `keep` seconds."""
    store = context.store
    state = {_text(k): _text(v) for k, v in (await store.redis.hgetall(store.keys.audit_state)).items()}
    read = AuditRead()
    for activity in MEMBER_ACTIVITIES:
        try:
            await _read_activity(context, activity, state, floor, overlap, keep, read)
        except GraphError as exc:
            reason = unavailable_reason(exc.status, exc.code, str(exc))
            if reason is None:
                raise
            read.unavailable = reason
            return read
    return read


async def _read_activity(
    context: SourceContext,
    activity: str,
    state: dict[str, str],
    floor: float,
    overlap: float,
    keep: float,
    read: AuditRead,
) -> None:
    mark, behind = state.get(f"hwm:{activity}"), state.get(f"behind:{activity}") == "1"
    known = epoch(mark) if mark else None
    start = floor if known is None else max(floor, known if behind else known - overlap)
    params = {
        "$filter": f"activityDateTime ge {graph_time(start)} and activityDisplayName eq '{activity}'",
        "$orderby": "activityDateTime asc",
    }
    newest, pages, cut = known or start, 0, False
    async for page in context.client.pages(context.tenant.id, PATH, params=params):
        entries = [entry for entry in (parse_entry(raw) for raw in page) if entry is not None]
        await _store(context, entries, keep)
        newest = max([newest, *(epoch(raw.get("activityDateTime")) or 0.0 for raw in page)])
        pages += 1
        read.entries += len(entries)
        if pages >= MAX_PAGES:
            cut = True
            break
    read.pages += pages
    if cut:
        read.behind.append(activity)
    await context.store.redis.hset(
        context.store.keys.audit_state,
        mapping={f"hwm:{activity}": graph_time(newest), f"behind:{activity}": "1" if cut else "0"},
    )


async def _store(context: SourceContext, entries: list[AuditEntry], keep: float) -> None:
    if not entries:
        return
    keys = context.store.keys
    writer: Any = context.store.redis.pipeline(transaction=False)
    for entry in entries:
        for group, member in entry.pairs():
            key = keys.audit_pair(group, member)
            writer.hset(key, entry.id, orjson.dumps(entry.to_json()))
            writer.expire(key, int(keep))
    await writer.execute()


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
