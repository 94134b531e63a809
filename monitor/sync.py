"""Running sources for a tenant: one runner per (tenant, source) at a time, status recorded.

Used by `monitor sync` (every requested source once, then exit) and by the worker and scheduler
(one source when a notification or a timer says so).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from monitor.app import Runtime
from monitor.collector import fewer_collections
from monitor.graph.auth import AuthError
from monitor.graph.client import GraphError
from monitor.leases import Lease
from monitor.permissions import NEEDED_FOR
from monitor.rounds import Progress, RecordListener, RoundResult, run_delta_round
from monitor.settings import TenantConfig
from monitor.sinks.alerts import run_alerts
from monitor.sinks.base import drain
from monitor.sinks.jupiterone import publish_pending
from monitor.sources.account import refresh_account
from monitor.sources.base import SourceContext
from monitor.sources.groups import GroupsSource
from monitor.sources.intune import sweep_intune
from monitor.sources.signins import sweep_sign_ins
from monitor.sources.users import UsersSource
from monitor.store import iso_ms

log = logging.getLogger(__name__)

DIRECTORY_SOURCES = ("account", "users", "groups")
ALL_SOURCES = ("account", "users", "groups", "signins")
# The Intune and account sweep (monitor.sources.intune): scheduled per tenant `polling_interval`,
# or run once by `monitor sync --intune`.
INTUNE_SOURCE = "intune"
# How long a runner waits for another runner of the same (tenant, source) to finish.
LEASE_WAIT = 300.0
LEASE_TTL = 60.0
# Delta permissions (GRAPH.md 7.1): what a 403 on each resource means.
DELTA_PERMISSION = {"users": "User.Read.All", "groups": "GroupMember.Read.All"}
# Sources that run under one shared lease: a user's deletion moves memberships, which the groups
# round writes too (monitor.sources.parking), so the two rounds of a tenant never overlap.
LEASE_NAMES = {"users": "directory", "groups": "directory"}


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
    lease = Lease(store.redis, store.keys.lease(LEASE_NAMES.get(name, name)), ttl=LEASE_TTL)
    started, requests = time.monotonic(), context.client.stats.requests
    async with lease.held(wait=LEASE_WAIT):
        try:
            if full and name in DELTA_PERMISSION:
                await store.drop_delta_link(name)
            with fewer_collections():
                result = await _dispatch(context, name, progress, on_records)
        except (GraphError, AuthError) as exc:
            await _record_failure(context, name, exc, time.monotonic() - started)
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
    if name in DELTA_PERMISSION:
        permission = DELTA_PERMISSION[name]
        await store.record_permission(permission, True, NEEDED_FOR[permission], "", iso_ms(context.clock()))
    return result


async def _dispatch(
    context: SourceContext, name: str, progress: Progress | None, on_records: RecordListener | None
) -> RoundResult:
    if name == "users":
        return await run_delta_round(context, UsersSource(context), progress=progress, on_records=on_records)
    if name == "groups":
        return await run_delta_round(context, GroupsSource(context), progress=progress, on_records=on_records)
    if name == "account":
        return await refresh_account(context, on_records=on_records)
    if name == "signins":
        return await sweep_sign_ins(context, on_records=on_records)
    if name == INTUNE_SOURCE:
        return await sweep_intune(context, on_records=on_records, progress=progress)
    raise ValueError(f"unknown source {name!r}")


async def _record_failure(context: SourceContext, name: str, exc: Exception, duration: float) -> None:
    store = context.store
    now = iso_ms(context.clock())
    await store.record_status(name, {"error": str(exc), "error_at": now, "duration": round(duration, 3)})
    if isinstance(exc, GraphError) and exc.status == 403 and name in DELTA_PERMISSION:
        permission = DELTA_PERMISSION[name]
        await store.record_permission(permission, False, NEEDED_FOR[permission], str(exc), now)
    log.error("tenant %s %s failed: %s", context.tenant.id, name, exc, extra={"tenant": context.tenant.id})


async def sync_tenant(
    runtime: Runtime,
    tenant: TenantConfig,
    sources: Sequence[str] = DIRECTORY_SOURCES,
    *,
    progress: Progress | None = None,
    on_records: RecordListener | None = None,
    full: bool = False,
) -> tuple[list[RoundResult], list[SourceFailed]]:
    """Run `sources` in order for one tenant, then deliver the new change records to the sinks."""
    context = runtime.context(tenant)
    results, failures = [], []
    for name in sources:
        try:
            results.append(await run_source(context, name, progress=progress, on_records=on_records, full=full))
        except SourceFailed as failure:
            failures.append(failure)
    await deliver(runtime, tenant.id)
    return results, failures


async def deliver(runtime: Runtime, tenant_id: str, *, publish: bool = True) -> int:
    """Deliver new change records to the log sinks; then, with the JupiterOne publisher configured
    and `publish`, publish the tenant's dirty scopes (failures stay dirty for the worker or the next
    run). The worker passes `publish=False`: its own publisher loop debounces and publishes.

    Alert rules run first, as near to the change as possible; an alert destination that is down is
    logged and retried on the next call without holding up the sinks (monitor.sinks.alerts).

    One deliverer per tenant at a time (a lease): two workers draining the same cursors at once
    would deliver the same records twice."""
    store = runtime.store(tenant_id)
    watched = runtime.tenant(tenant_id)
    async with Lease(store.redis, store.keys.lease("deliver"), ttl=LEASE_TTL).held(wait=LEASE_WAIT):
        if watched is not None and watched.alerts:
            await run_alerts(store, watched, runtime.alert_dispatcher())
        delivered = sum([await drain(store, sink) for sink in runtime.sinks])
    if runtime.publisher is not None and publish:
        tenant = runtime.tenant(tenant_id) or TenantConfig(id=tenant_id)
        result = await publish_pending(runtime.publisher, tenant)
        (log.warning if result.failures or result.rejected else log.info)("%s", result.summary(tenant_id))
    return delivered
