"""Running sources for a tenant: one runner per (tenant, source) at a time, status recorded.

Used by `monitor sync` (every requested source once, then exit) and by the worker and scheduler
(one source when a notification or a timer says so). Also the delivery of committed change records
to the sinks, and the catching up that makes sure no committed record waits: a run killed between
its commit and its delivery, or a sink that failed, is made good by the next `monitor sync` (it
delivers first) or by any running worker (at start, then every `CATCH_UP_INTERVAL`, backing off
while a sink fails).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

from monitor.app import Runtime
from monitor.collector import fewer_collections
from monitor.graph.auth import AuthError
from monitor.graph.client import GraphError
from monitor.leases import DEFAULT_TTL, Lease, LeaseBusy, LeaseLost
from monitor.permissions import NEEDED_FOR
from monitor.retry import RetryPolicy
from monitor.rounds import Progress, RecordListener, RoundResult, run_delta_round
from monitor.settings import TenantConfig
from monitor.sinks.actors import run_actors
from monitor.sinks.alerts import ALERTS_SINK, run_alerts
from monitor.sinks.base import deliver_to
from monitor.source_registry import SYNC_DEFAULT, Source, source
from monitor.sources.base import DeltaSource, SourceContext
from monitor.store import iso_ms

log = logging.getLogger(__name__)

# How long a runner waits for another runner of the same (tenant, source) to finish. The lease
# itself is short (monitor.leases.DEFAULT_TTL): a killed runner blocks its successor for seconds.
LEASE_WAIT = 300.0
# A running worker looks this often for committed records that no sink has taken yet...
CATCH_UP_INTERVAL = 10.0
# ... and a starting one waits this long for the deliverer's lease of a run that just died.
START_WAIT = 2 * DEFAULT_TTL
# While a sink fails, a worker retries its deliveries this way, until it works again.
DELIVERY_RETRY = RetryPolicy(max_retries=1_000_000, base_delay=1.0, max_delay=30.0)


class SweepRunner(Protocol):
    """A sweep source's entry point (`Source.runs`, monitor.source_registry)."""

    async def __call__(
        self, context: SourceContext, *, on_records: RecordListener | None = ..., progress: Progress | None = ...
    ) -> RoundResult: ...


Runner = Callable[[SourceContext, Progress | None, RecordListener | None], Awaitable[RoundResult]]


class SourceFailed(Exception):
    """A source's run failed; the status records why and other sources still run."""

    def __init__(self, source: str, reason: str) -> None:
        super().__init__(f"{source}: {reason}")
        self.source = source
        self.reason = reason


async def run_source(
    context: SourceContext,
    name: str,
    *,
    progress: Progress | None = None,
    on_records: RecordListener | None = None,
    full: bool = False,
) -> RoundResult:
    """Run one source once, under its lease, and record the outcome in the tenant's status."""
    store = context.store
    entry = source(name)
    lease = Lease(store.redis, store.keys.lease(entry.lease_name))
    started, requests = time.monotonic(), context.client.stats.requests
    if entry.skip_while_busy:
        try:
            async with lease.held():
                return await _run_held(context, entry, lease, started, requests, progress, on_records, full)
        except LeaseBusy:
            busy = f"skipped at {iso_ms(context.clock())}: the {entry.lease_name} sweep was running"
            await store.record_status(name, {"busy": busy})
            return RoundResult(context.tenant.id, name, sweep=True)
    async with lease.held(wait=LEASE_WAIT):
        return await _run_held(context, entry, lease, started, requests, progress, on_records, full)


async def _run_held(
    context: SourceContext,
    entry: Source,
    lease: Lease,
    started: float,
    requests: int,
    progress: Progress | None,
    on_records: RecordListener | None,
    full: bool,
) -> RoundResult:
    """`run_source` once its lease is held."""
    store, name = context.store, entry.name
    # Every write of the run that a stale runner could get wrong is fenced by the lease.
    fenced = replace(context, store=store.fenced(lease.fence))
    try:
        if full and entry.reading == "delta":
            await fenced.store.drop_delta_link(name)
        with fewer_collections():
            result = await source_runner(entry)(fenced, progress, on_records)
    except (GraphError, AuthError, LeaseLost) as exc:
        await _record_failure(context, entry, exc, time.monotonic() - started)
        raise SourceFailed(name, str(exc)) from exc
    result.duration = time.monotonic() - started
    result.requests = context.client.stats.requests - requests
    await store.record_status(
        name,
        {
            "last_round_at": iso_ms(context.clock()),
            "kind": result.kind,
            "pages": result.pages,
            "objects": result.objects,
            "changes": result.change_count,
            "requests": result.requests,
            "duration": round(result.duration, 3),
            "error": "",
        },
    )
    if entry.permission is not None:
        permission = entry.permission
        await store.record_permission(permission, True, NEEDED_FOR[permission], "", iso_ms(context.clock()))
    return result


@functools.cache
def source_runner(entry: Source) -> Runner:
    """How `entry` runs, from its registry entry (monitor.source_registry): a delta round of its
    `DeltaSource`, or its sweep function. Resolved here, in the runtime, so that the registry
    itself imports no source code."""
    module, _, attribute = entry.runs.partition(":")
    target = getattr(importlib.import_module(module), attribute)
    if entry.reading == "delta":
        make: Callable[[SourceContext], DeltaSource] = target

        async def delta(
            context: SourceContext, progress: Progress | None, listener: RecordListener | None
        ) -> RoundResult:
            return await run_delta_round(context, make(context), progress=progress, on_records=listener)

        return delta
    sweep: SweepRunner = target

    async def sweep_once(
        context: SourceContext, progress: Progress | None, listener: RecordListener | None
    ) -> RoundResult:
        return await sweep(context, on_records=listener, progress=progress)

    return sweep_once


async def _record_failure(context: SourceContext, entry: Source, exc: Exception, duration: float) -> None:
    store = context.store
    now = iso_ms(context.clock())
    await store.record_status(entry.name, {"error": str(exc), "error_at": now, "duration": round(duration, 3)})
    if isinstance(exc, GraphError) and exc.status == 403 and entry.permission is not None:
        permission = entry.permission
        await store.record_permission(permission, False, NEEDED_FOR[permission], str(exc), now)
    log.error("tenant %s %s failed: %s", context.tenant.id, entry.name, exc, extra={"tenant": context.tenant.id})


async def sync_tenant(
    runtime: Runtime,
    tenant: TenantConfig,
    sources: Sequence[str] = SYNC_DEFAULT,
    *,
    progress: Progress | None = None,
    on_records: RecordListener | None = None,
    full: bool = False,
) -> tuple[list[RoundResult], list[SourceFailed]]:
    """Deliver what earlier runs committed and did not deliver; run `sources` in order for one
    tenant; then deliver the new change records to the sinks. A sink that fails is reported as the
    failure `delivery` (its records wait in the change log for the next run or a worker).

    Alerts of earlier runs that wait for who made their change get their update before that last
    delivery (what the scheduler's `actors` job does in a deployment), so that `monitor sync` run on
    its own resolves them too."""
    context = runtime.context(tenant)
    results, failures = [], []
    await deliver(runtime, tenant.id)
    for name in sources:
        try:
            results.append(await run_source(context, name, progress=progress, on_records=on_records, full=full))
        except SourceFailed as failure:
            failures.append(failure)
    if tenant.alerts:
        await run_actors(context, runtime.alert_dispatcher(), runtime.settings)
    delivery = await deliver(runtime, tenant.id)
    failures += [SourceFailed("delivery", failure) for failure in delivery.failures]
    if delivery.unpublished is not None:  # JupiterOne did not confirm every scope
        failures.append(SourceFailed("jupiterone", delivery.unpublished))
    return results, failures


@dataclass(slots=True)
class Delivery:
    """What one `deliver` did: records delivered to the sinks, one line per sink that failed, and
    what JupiterOne did not confirm (those scopes stay dirty for the next run)."""

    delivered: int = 0
    failures: list[str] = field(default_factory=list)
    unpublished: str | None = None


async def deliver(runtime: Runtime, tenant_id: str, *, publish: bool = True, wait: float = LEASE_WAIT) -> Delivery:
    """Deliver new change records to the log sinks; then, with the JupiterOne publisher configured
    and `publish`, publish the tenant's dirty scopes (failures stay dirty for the worker or the next
    run, and `Delivery.unpublished` names them). The worker passes
    `publish=False`: its own publisher loop debounces and publishes.

    Alert rules run first, as near to the change as possible; an alert destination that is down is
    logged and retried on the next call without holding up the sinks (monitor.sinks.alerts). A sink
    that fails keeps its cursor and is reported in the result, its status and its metric.

    One deliverer per tenant at a time (a lease, waited for up to `wait` seconds, else `LeaseBusy`):
    two workers draining the same cursors at once would deliver the same records twice. The cursors
    are fenced by that lease, so a deliverer that stalled past it cannot move them back."""
    store = runtime.store(tenant_id)
    watched = runtime.tenant(tenant_id)
    delivery = Delivery()
    lease = Lease(store.redis, store.keys.lease("deliver"))
    async with lease.held(wait=wait):
        fenced = store.fenced(lease.fence)
        at = iso_ms(runtime.clock())
        if watched is not None and watched.alerts:
            alerts = await run_alerts(fenced, watched, runtime.alert_dispatcher())
            if alerts.error is not None:
                await fenced.record_sink_failure(ALERTS_SINK, alerts.error, at)
                delivery.failures.append(f"alerts: {alerts.error}")
        for sink in runtime.sinks:
            count, error = await deliver_to(fenced, sink, at)
            delivery.delivered += count
            if error is not None:
                delivery.failures.append(f"sink {sink.name}: {error}")
    if publish:
        delivery.unpublished = await publish_tenant(runtime, tenant_id)
    return delivery


async def publish_tenant(runtime: Runtime, tenant_id: str) -> str | None:
    """Publish the tenant's dirty scopes to JupiterOne once, when the publisher is configured: the
    one place a run (`monitor sync`, `deliver`, `monitor worker --burst`) starts publishing. The
    worker's background loop (`Publisher.run`) and a reconciliation's repair run the same pass,
    `Publisher.publish_pending` (docs/architecture.md, "Emitting to JupiterOne").

    The outcome is logged (a warning when a scope failed or an object was left out); the summary is
    returned when a scope failed: it stays dirty for the next pass, and the caller must know."""
    if runtime.publisher is None:
        return None
    tenant = runtime.tenant(tenant_id) or TenantConfig(id=tenant_id)
    result = await runtime.publisher.publish_pending(tenant)
    (log.warning if result.failures or result.rejected else log.info)("%s", result.summary(tenant_id))
    return result.summary(tenant_id) if result.failures else None


async def catch_up(runtime: Runtime, *, wait: float = 0.0) -> bool:
    """Deliver, for every tenant, the committed records a sink (or the alert rules) has not taken
    yet; True when no delivery failed. Tenants whose sinks are up to date are skipped, and so are
    tenants whose deliverer's lease stays held for `wait` seconds: someone else is delivering them.
    JupiterOne is not included: publishing works from dirty scopes, which a worker's publisher loop
    and `monitor sync` publish anyway."""
    healthy = True
    for tenant in runtime.tenants():
        try:
            if not await _behind(runtime, tenant):
                continue
            delivery = await deliver(runtime, tenant.id, publish=False, wait=wait)
        except LeaseBusy:
            continue
        except Exception as exc:  # one tenant's trouble (or Redis's) must not stop the others
            log.error("tenant %s: catching up deliveries failed: %s", tenant.id, exc, extra={"tenant": tenant.id})
            healthy = False
            continue
        healthy = healthy and not delivery.failures
    return healthy


async def keep_delivered(runtime: Runtime, stop: asyncio.Event) -> None:
    """A worker's background task until `stop`: `catch_up` at once, then every `CATCH_UP_INTERVAL`,
    or sooner while a delivery fails (backing off through `DELIVERY_RETRY`). The first catch-up
    waits out the deliverer's lease of a run that just died (`START_WAIT`)."""
    failed, wait = 0, START_WAIT
    while not stop.is_set():
        failed = 0 if await catch_up(runtime, wait=wait) else failed + 1
        wait = 0.0
        pause = DELIVERY_RETRY.delay(failed, None) if failed else CATCH_UP_INTERVAL
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), pause)


async def _behind(runtime: Runtime, tenant: TenantConfig) -> bool:
    """Whether a sink (or the alert rules, once started) has not taken every committed record."""
    names = [sink.name for sink in runtime.sinks] + ([ALERTS_SINK] if tenant.alerts else [])
    if not names:
        return False
    last, cursors = await runtime.store(tenant.id).cursors(names)
    for name, cursor in cursors.items():
        if cursor is None and name == ALERTS_SINK:
            continue  # alerts start after the first groups round (monitor.sinks.alerts)
        if (cursor or 0) < last:
            return True
    return False
