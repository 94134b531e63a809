"""Alert delivery: a tenant's alert rules as a change-log consumer, and the alert destinations.

`run_alerts` reads the tenant's change log from its own cursor (`alerts`), asks the pure core
(`monitor.alerts`) which alerts a batch raises, fetching from the mirror only the facts the core says
it needs, and hands them to the `AlertDispatcher`, which sends each to its rule's destinations:

- `log`: one WARNING line on logger `monitor.alerts`, the alert as JSON;
- `jsonl:PATH`: one alert per line, appended and fsynced like the JSONL sink's records (a failed write
  leaves nothing behind, a torn last line is repaired: `monitor.sinks.jsonl.JsonlFile`); an alert
  that the end of the file already holds (same id and actor status) is skipped, so a redelivered batch
  is not written twice (ids differ across a restarted log: `monitor.alerts.alert_id`);
- `webhook:URL`: one signed JSON POST per alert (`monitor.sinks.signing`).

Delivery is at least once. The cursor advances only when every destination took the batch; when a
webhook is unreachable after its retries, or a file cannot be written, the other destinations still
get the batch, and the whole batch comes again on the next delivery (receivers deduplicate by alert
id; the log may repeat a line). A webhook that *refuses* an alert (4xx other than 429) is not asked
again: the refusal is logged at ERROR with the complete alert, and later alerts are not held up
behind one the receiver will never take.

The first time alerts run for a tenant, the cursor starts at the end of the log: the tenant's first
groups round reports every existing membership as added, and history from before the rules existed
is not news. Until that first groups round has completed, nothing is evaluated.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from monitor.alerts import (
    Alert,
    Deliverable,
    Facts,
    Ref,
    batch_facts,
    evaluate,
    group_refs,
    match,
    member_refs,
    membership_changes,
)
from monitor.metrics import metric, queue_increments
from monitor.model.types import JsonMapping, JsonObject, entity_placement
from monitor.records import ChangeRecord
from monitor.settings import Settings, TenantConfig
from monitor.sinks.actors import mark, remember_pending
from monitor.sinks.base import drain
from monitor.sinks.effective import run_effective
from monitor.sinks.jsonl import JsonlFile
from monitor.sinks.signing import DeliveryError, WebhookClient, WebhookRejected, redact
from monitor.source_registry import MEMBERSHIP_SOURCE
from monitor.sources.base import Clock, utc_now
from monitor.store import TenantStore

log = logging.getLogger(__name__)
# The `log` destination: operators route and filter alerts by this logger's name.
alert_log = logging.getLogger("monitor.alerts")

ALERTS_SINK = "alerts"
DEFAULT_ACTOR_WAIT: float = Settings.model_fields["actor_wait"].default


class AlertDispatcher:
    """Sends alerts to their destinations. One per process; `close()` at the end.

    `actor_wait` and `clock`: how long an alert sent with `actorStatus: pending` waits for its actor
    (`MONITOR_ACTOR_WAIT`, monitor.sinks.actors), by which clock."""

    def __init__(
        self, webhooks: WebhookClient, *, actor_wait: float = DEFAULT_ACTOR_WAIT, clock: Clock = utc_now
    ) -> None:
        self.webhooks = webhooks
        self.actor_wait = actor_wait
        self.clock = clock

    async def dispatch(self, alerts: Sequence[Deliverable]) -> None:
        """Send each alert to every destination of its rule; `DeliveryError` if any destination
        failed (after trying all of them), naming each failure."""
        by_destination: dict[str, list[Deliverable]] = {}
        for alert in alerts:
            for destination in alert.send_to:
                by_destination.setdefault(destination, []).append(alert)
        failures = []
        for destination, batch in by_destination.items():
            kind, _, target = destination.partition(":")
            try:
                if kind == "log":
                    _log(batch)
                elif kind == "jsonl":
                    await asyncio.to_thread(append_alerts, Path(target), batch)
                else:
                    await self._post(target, batch)
            except DeliveryError as exc:
                failures.append(str(exc))
            except OSError as exc:
                failures.append(f"alerts file {target}: {exc}")
        if failures:
            raise DeliveryError("; ".join(failures))

    async def _post(self, url: str, alerts: Iterable[Deliverable]) -> None:
        # In seq order, one at a time: an unreachable receiver stops here (WebhookUnavailable) and
        # gets the rest with the redelivered batch.
        for alert in alerts:
            body = alert.to_json()
            try:
                await self.webhooks.post(url, orjson.dumps(body))
            except WebhookRejected as exc:
                log.error(
                    "alert %s not delivered to %s: %s; the alert: %s",
                    alert.id,
                    redact(url),
                    exc,
                    orjson.dumps(body).decode(),
                    extra={"tenant": alert.tenant},
                )

    async def close(self) -> None:
        await self.webhooks.close()


def _log(alerts: Iterable[Deliverable]) -> None:
    for alert in alerts:
        alert_log.warning("%s", orjson.dumps(alert.to_json()).decode(), extra={"tenant": alert.tenant})


def append_alerts(path: Path, alerts: Sequence[Deliverable]) -> int:
    """Append, durably, the alerts the end of the file does not hold yet (by id, and for an update by
    what it says of the actor); returns how many."""
    file = JsonlFile(path, identity=_delivery_key)
    try:
        return file.append([(alert.tenant, alert.seq, alert.to_json()) for alert in alerts]).written
    finally:
        file.close()


def _delivery_key(body: JsonMapping) -> str:
    """What tells one delivery of an alert from another: its id, and for an update its actor status
    (a pending alert, then its update, are two deliveries)."""
    return f"{body.get('id')}/{body.get('actorStatus') if body.get('update') else ''}"


async def _mirror_facts(store: TenantStore, refs: Iterable[Ref]) -> dict[Ref, JsonObject]:
    facts = {}
    for family, key in sorted(refs):
        obj = await store.get(entity_placement(family, key), key)
        if obj is not None:
            facts[(family, key)] = obj
    return facts


async def alerts_for(store: TenantStore, tenant: TenantConfig, records: Sequence[ChangeRecord]) -> list[Alert]:
    """The alerts a batch raises: the pure core, with the mirror facts it needs fetched first.

    Two stages of lookups, each only for what the batch does not say itself: the groups (which rules
    match depends on their names and role-assignability), then the members the alerts will name.
    """
    changes = membership_changes(records)
    if not changes or not tenant.alerts:
        return []
    known = batch_facts(records)
    mirror = await _mirror_facts(store, group_refs(changes) - known.keys())
    facts: Facts = {**mirror, **known}
    matches = match(tenant.alerts, changes, facts)
    mirror |= await _mirror_facts(store, member_refs(matches) - facts.keys())
    return evaluate(tenant.id, tenant.alerts, records, mirror)


async def remember_alerts(store: TenantStore, alerts: Sequence[Alert]) -> None:
    """Keep the newest alerts for the status page and count them by rule (`monitor_alerts_total`).

    Called once a batch's alerts went out, so a batch delivered again after a failure is counted
    once. A mass removal is kept without its sample of members (the count says how many)."""
    keys = store.keys
    pipeline: Any = store.redis.pipeline(transaction=False)
    for alert in alerts:
        body = {k: v for k, v in alert.to_json().items() if k != "sample"}
        pipeline.lpush(keys.recent_alerts, orjson.dumps(body))
    pipeline.ltrim(keys.recent_alerts, 0, keys.RECENT_ALERTS_KEPT - 1)
    queue_increments(pipeline, keys.metrics, Counter(metric("monitor_alerts_total", rule=a.rule) for a in alerts))
    await pipeline.execute()


async def recent_alerts(store: TenantStore, count: int) -> list[JsonObject]:
    """The newest `count` alerts `remember_alerts` kept, newest first."""
    raw = await store.redis.lrange(store.keys.recent_alerts, 0, count - 1)
    return [orjson.loads(entry) for entry in raw]


async def send_alerts(store: TenantStore, dispatcher: AlertDispatcher, alerts: Sequence[Alert]) -> None:
    """Send alerts to their destinations, with where their actor stands (monitor.sinks.actors), then
    keep the pending ones for their update and all for the status page; `DeliveryError` when a
    destination failed (the caller sends them again later)."""
    now = dispatcher.clock().timestamp()
    marked = await mark(store, alerts, now)
    await dispatcher.dispatch(marked)
    await remember_pending(store, marked, deadline=now + dispatcher.actor_wait)
    await remember_alerts(store, marked)


class AlertSink:
    """One tenant's alert rules as a change-log consumer (a `Sink` for `drain`)."""

    name = ALERTS_SINK

    def __init__(self, store: TenantStore, tenant: TenantConfig, dispatcher: AlertDispatcher) -> None:
        self.store = store
        self.tenant = tenant
        self.dispatcher = dispatcher

    async def deliver(self, records: Sequence[ChangeRecord]) -> None:
        alerts = await alerts_for(self.store, self.tenant, records)
        if alerts:
            await send_alerts(self.store, self.dispatcher, alerts)

    async def close(self) -> None:
        return None


@dataclass(frozen=True, slots=True)
class AlertRun:
    """What one `run_alerts` did: records evaluated, and why it stopped early (if it did)."""

    evaluated: int
    error: str | None = None


async def _started(store: TenantStore) -> bool:
    """Whether the tenant's alert cursor exists; creates it at the end of the log once the first
    groups round (the membership baseline) has completed."""
    if await store.redis.exists(store.keys.sink_cursor(ALERTS_SINK)):
        return True
    if await store.delta_state(MEMBERSHIP_SOURCE) is None:
        return False
    end = await store.last_seq()
    # NX: of two processes starting the cursor at once, the first wins and neither moves it back.
    if await store.redis.set(store.keys.sink_cursor(ALERTS_SINK), end, nx=True):
        log.info("tenant %s: alerts start after seq %d (the existing directory is the baseline)", store.tenant, end)
    return False


async def run_alerts(store: TenantStore, tenant: TenantConfig, dispatcher: AlertDispatcher) -> AlertRun:
    """Evaluate the tenant's rules on the change records the alert cursor has not passed, and send
    the alerts; then the effective-membership rules (monitor.sinks.effective) on theirs. A delivery
    failure is logged and returned, never raised: the cursor stays at the failed batch, and the next
    call (after the next round) delivers it again."""
    if not tenant.alerts:
        return AlertRun(0)
    run = await _run_plain(store, tenant, dispatcher)
    if run.error is not None:
        return run
    try:
        await run_effective(store, tenant, lambda alerts: send_alerts(store, dispatcher, alerts))
    except DeliveryError as exc:
        log.error("tenant %s: effective-membership alerts not delivered, will retry: %s", tenant.id, exc)
        return AlertRun(run.evaluated, str(exc))
    return run


async def _run_plain(store: TenantStore, tenant: TenantConfig, dispatcher: AlertDispatcher) -> AlertRun:
    if not await _started(store):
        return AlertRun(0)
    sink = AlertSink(store, tenant, dispatcher)
    before = await store.cursor(ALERTS_SINK)
    try:
        evaluated = await drain(store, sink)
    except DeliveryError as exc:
        done = await store.cursor(ALERTS_SINK) - before
        log.error("tenant %s: alerts not delivered, will retry: %s", tenant.id, exc, extra={"tenant": tenant.id})
        return AlertRun(done, str(exc))
    return AlertRun(evaluated)
