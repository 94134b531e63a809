"""Alerts that wait for their actor, and the `actors` job that finds it (monitor.actors).

When alerts go out (monitor.sinks.alerts), each one about a single membership change gets
`actorStatus`: `pending`, or `unavailable` when the tenant's audit log was found unreadable (within
the last `RECHECK`; afterwards it is tried again). A pending alert is kept in Redis
(`TenantKeys.actors_pending`) with its JSON, its destinations, its change and its deadline
(`MONITOR_ACTOR_WAIT` after it was sent).

The `actors` job (the scheduler asks for it every `MONITOR_ACTOR_POLL_INTERVAL` for tenants with
alert rules; a worker runs it, under a per-tenant lease) reads the audit log once for all the
tenant's waiting alerts (monitor.sources.audits), then sends each alert whose entry it finds again,
same `id`, with `update: "actor"`, `actorStatus: "found"` and the `actor`; an alert past its deadline
goes out with `actorStatus: "unknown"`; and if the audit log turns out to be unreadable, every
waiting alert goes out with `actorStatus: "unavailable"`. Updates are delivered at least once: an
update is forgotten only after every destination took it (receivers drop what they hold by `id`
and `actorStatus`). The outcome goes to the tenant's status (`audits`), which `monitor status`
shows.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from monitor.actors import AuditEntry, actor_json, epoch, find_entry, iso
from monitor.alerts import ActorStatus, Alert, Cause, Deliverable
from monitor.graph.client import GraphError
from monitor.leases import Lease, LeaseBusy
from monitor.metrics import metric, tenant_increment
from monitor.model.types import JsonObject
from monitor.settings import Settings
from monitor.sinks.signing import DeliveryError
from monitor.sources.audits import AuditRead, read_audits
from monitor.sources.base import SourceContext
from monitor.store import TenantStore

log = logging.getLogger(__name__)

STATUS = "audits"
ACTORS_LEASE = "actors"
# An audit log found unreadable is tried again this often (the permission may be granted since).
RECHECK = 3600.0
# How far before monitor saw a change its audit entry may lie: the safety-net round finds what a
# lost notification did not announce, up to `MONITOR_DELTA_INTERVAL` later; plus a margin.
LOOKBACK_MARGIN = 300.0


@dataclass(frozen=True, slots=True)
class AlertUpdate:
    """An alert sent again with its actor: its JSON, and where it goes."""

    body: JsonObject
    send_to: tuple[str, ...]

    @property
    def id(self) -> str:
        return str(self.body["id"])

    @property
    def tenant(self) -> str:
        return str(self.body["tenant"])

    @property
    def seq(self) -> int:
        return int(self.body["seq"])

    def to_json(self) -> JsonObject:
        return self.body


@dataclass(frozen=True, slots=True)
class ActorRun:
    """What one `run_actors` did."""

    found: int = 0
    unknown: int = 0
    unavailable: int = 0
    waiting: int = 0
    error: str | None = None


def lookback(settings: Settings) -> float:
    return settings.delta_interval + LOOKBACK_MARGIN


async def mark(store: TenantStore, alerts: Sequence[Alert], now: float) -> list[Alert]:
    """The alerts with `actorStatus` set: `pending`, or `unavailable` while the audit log is known
    to be unreadable. Alerts without a single membership change have none."""
    if not any(alert.cause is not None for alert in alerts):
        return list(alerts)
    status = await store.status(STATUS)
    state: ActorStatus = "unavailable" if _unavailable(status, now) else "pending"
    return [dataclasses.replace(a, actor_status=state) if a.cause is not None else a for a in alerts]


def _unavailable(status: Mapping[str, str], now: float) -> bool:
    checked = epoch(status.get("checked_at"))
    return status.get("state") == "unavailable" and checked is not None and now - checked < RECHECK


async def remember_pending(store: TenantStore, alerts: Sequence[Alert], *, deadline: float) -> None:
    """Keep the alerts sent with `actorStatus: pending` until their update goes out."""
    pending = {
        alert.id: orjson.dumps(
            {
                "alert": alert.to_json(),
                "sendTo": list(alert.send_to),
                "cause": alert.cause.to_json(),
                "deadline": deadline,
            }
        )
        for alert in alerts
        if alert.actor_status == "pending" and alert.cause is not None
    }
    if pending:
        await store.redis.hset(store.keys.actors_pending, mapping=pending)  # type: ignore[arg-type]


class Dispatcher(Protocol):
    async def dispatch(self, alerts: Sequence[Deliverable]) -> None: ...


async def run_actors(context: SourceContext, dispatcher: Dispatcher, settings: Settings) -> ActorRun:
    """Resolve the tenant's waiting alerts (module doc); `DeliveryError`s are logged and returned."""
    store = context.store
    pending = await _pending(store)
    now = context.clock().timestamp()
    if not pending and not _recheck_due(await store.status(STATUS), now):
        return ActorRun()
    try:
        async with Lease(store.redis, store.keys.lease(ACTORS_LEASE), ttl=60.0).held():
            return await _resolve(context, dispatcher, settings, pending, now)
    except LeaseBusy:
        return ActorRun(waiting=len(pending))


def _recheck_due(status: Mapping[str, str], now: float) -> bool:
    """Whether an unreadable audit log is due to be tried again (nothing waits for it otherwise)."""
    checked = epoch(status.get("checked_at"))
    return status.get("state") == "unavailable" and (checked is None or now - checked >= RECHECK)


async def _pending(store: TenantStore) -> dict[str, JsonObject]:
    raw = await store.redis.hgetall(store.keys.actors_pending)
    return {_text(k): orjson.loads(v) for k, v in raw.items()}


async def _resolve(
    context: SourceContext, dispatcher: Dispatcher, settings: Settings, pending: dict[str, JsonObject], now: float
) -> ActorRun:
    store = context.store
    causes = {ident: Cause.from_json(entry["cause"]) for ident, entry in pending.items()}
    observed = [t for t in (epoch(c.observed_at) for c in causes.values()) if t is not None]
    floor = min(observed, default=now) - lookback(settings)
    keep = 2 * settings.actor_wait + lookback(settings)
    read, error = AuditRead(), None
    try:
        read = await read_audits(context, floor=floor, overlap=settings.actor_wait, keep=keep)
    except GraphError as exc:  # the entries read before still count, and deadlines still pass
        error = str(exc)
        log.warning("tenant %s: cannot read the directory audit log: %s", context.tenant.id, exc)
    entries = await _entries(store, causes) if read.unavailable is None else {}
    updates = _updates(pending, causes, entries, read.unavailable, now, lookback(settings))
    run = await _send(context, dispatcher, updates, len(pending))
    await _record(store, read, error or run.error, now, run.waiting)
    return dataclasses.replace(run, error=error or run.error)


async def _entries(store: TenantStore, causes: Mapping[str, Cause]) -> dict[str, list[AuditEntry]]:
    """The stored audit entries of each waiting alert's (group, member)."""
    idents = sorted(causes)
    reader: Any = store.redis.pipeline(transaction=False)
    for ident in idents:
        reader.hvals(store.keys.audit_pair(causes[ident].group_id, causes[ident].member_id))
    found = await reader.execute()
    return {
        ident: [AuditEntry.from_json(orjson.loads(v)) for v in values]
        for ident, values in zip(idents, found, strict=True)
    }


def _updates(
    pending: Mapping[str, JsonObject],
    causes: Mapping[str, Cause],
    entries: Mapping[str, list[AuditEntry]],
    unavailable: str | None,
    now: float,
    window: float,
) -> list[tuple[ActorStatus, AlertUpdate]]:
    updates: list[tuple[ActorStatus, AlertUpdate]] = []
    for ident, waiting in sorted(pending.items()):
        entry = None if unavailable else find_entry(entries.get(ident, []), causes[ident], lookback=window)
        status: ActorStatus | None = "unavailable" if unavailable else ("found" if entry else None)
        if status is None and now >= float(waiting["deadline"]):
            status = "unknown"
        if status is not None:
            actor = actor_json(entry) if entry is not None else None
            body = {**waiting["alert"], "actor": actor, "actorStatus": status, "update": "actor"}
            updates.append((status, AlertUpdate(_ordered(body), tuple(waiting["sendTo"]))))
    return updates


def _ordered(body: JsonObject) -> JsonObject:
    """The update's JSON in the alert's own order (`seq` and `observedAt` last)."""
    tail: JsonObject = {k: body[k] for k in ("seq", "observedAt") if k in body}
    return {**{k: v for k, v in body.items() if k not in tail}, **tail}


async def _send(
    context: SourceContext, dispatcher: Dispatcher, updates: list[tuple[ActorStatus, AlertUpdate]], pending: int
) -> ActorRun:
    if not updates:
        return ActorRun(waiting=pending)
    store = context.store
    try:
        await dispatcher.dispatch([update for _, update in updates])
    except DeliveryError as exc:  # kept: the next run sends them again
        log.error("tenant %s: alert updates not delivered, will retry: %s", context.tenant.id, exc)
        return ActorRun(waiting=pending, error=str(exc))
    await store.redis.hdel(store.keys.actors_pending, *(update.id for _, update in updates))
    counts = Counter(status for status, _ in updates)
    series = {metric("monitor_alert_actors_total", status=status): n for status, n in counts.items()}
    await tenant_increment(store.redis, context.tenant.id, series)
    return ActorRun(counts["found"], counts["unknown"], counts["unavailable"], pending - len(updates))


async def _record(store: TenantStore, read: AuditRead, error: str | None, now: float, waiting: int) -> None:
    fields: dict[str, Any] = {"checked_at": iso(now), "waiting": waiting, "error": error or ""}
    if error is None or read.pages:
        fields |= {"state": "unavailable" if read.unavailable else "available", "detail": read.unavailable or ""}
        fields |= {"entries": read.entries, "pages": read.pages, "behind": ",".join(read.behind)}
    await store.record_status(STATUS, fields)


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
