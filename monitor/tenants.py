"""Tenant operations: onboard (validate, save, start), remove (Graph subscriptions and every key), list
and show. Shared by the admin-consent callback (`monitor.onboarding`) and `monitor tenants ...`.

Where a tenant comes from decides what may be done to it: one from `MONITOR_TENANT_ID` or
`MONITOR_TENANTS_FILE` is the operator's deployment and is changed there; one registered at run time
lives in the Redis registry (`monitor.tenant_registry`) and can be removed here.

Removal, in an order that leaves nothing behind:

1. deregister: every process re-reads the registry before its next request, batch or tick, so the
   webhook refuses the tenant's notifications (`unknown_tenant`), workers drop its hints and the
   scheduler stops enqueueing for it;
2. delete its subscriptions at Graph (a failure, e.g. consent already revoked, is reported: Graph
   ends them at their expiry, and the webhook refuses them meanwhile);
3. wait for its jobs in flight (each holds a lease of the tenant, renewed while it works) to end;
4. drop its hints from the queue, then delete every key of the tenant (one hash tag: one SCAN).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError

from monitor.app import Runtime
from monitor.errors import ConfigError, MonitorError
from monitor.graph.subscriptions import SubscriptionManager
from monitor.hints import Hint, HintQueue, enqueue
from monitor.keys import TenantKeys
from monitor.metrics import now_ms
from monitor.permission_check import PermissionReport, check_permissions, record_report, render_permission
from monitor.permissions import NEEDED_FOR
from monitor.redis_conn import Redis
from monitor.settings import TenantConfig, load_alerts_file
from monitor.source_registry import SOURCES
from monitor.store import iso_ms

log = logging.getLogger(__name__)

Origin = Literal["environment", "file", "registered"]
# How long removal waits for the tenant's running jobs (a runner renews its lease while it works; a
# dead one's lease expires within `monitor.sync.LEASE_TTL`).
REMOVE_WAIT = 300.0


class OnboardingRefused(MonitorError):
    """The tenant consented, but the app cannot read its directory: nothing was saved."""

    def __init__(self, tenant: str, report: PermissionReport) -> None:
        missing = ", ".join(report.missing_required)
        super().__init__(f"tenant {tenant}: not saved: the app cannot read the directory without {missing}")
        self.report = report


@dataclass(slots=True)
class Onboarded:
    tenant: TenantConfig
    origin: Origin
    report: PermissionReport
    jobs: list[str]


@dataclass(slots=True)
class Removal:
    tenant: str
    was_registered: bool
    subscriptions_deleted: list[str] = field(default_factory=list)
    subscriptions_error: str = ""
    hints_dropped: int = 0
    keys_deleted: int = 0

    def summary(self) -> str:
        parts = [
            f"tenant {self.tenant} removed" if self.was_registered else f"tenant {self.tenant} was not registered",
            f"{len(self.subscriptions_deleted)} subscription(s) deleted at Graph",
            f"{self.hints_dropped} queued hint(s) dropped",
            f"{self.keys_deleted} Redis key(s) deleted",
        ]
        if self.subscriptions_error:
            parts.append(f"subscriptions NOT deleted at Graph ({self.subscriptions_error}); Graph ends them at expiry")
        return "; ".join(parts)


def origin(runtime: Runtime, tenant_id: str) -> Origin | None:
    wanted = tenant_id.lower()
    if any(t.id == wanted for t in runtime.settings.tenants):
        return "environment" if runtime.settings.tenant_id is not None else "file"
    return "registered" if wanted in runtime.registered.tenants else None


def tenant_from_options(
    tenant_id: str,
    *,
    account_name: str | None = None,
    description: str | None = None,
    polling_interval: str | None = None,
    tag_account_name: bool = False,
    integration_instance_id: str | None = None,
    alerts_file: str | None = None,
) -> TenantConfig:
    """A `TenantConfig` from command-line options; a ConfigError names what is wrong."""
    values: dict[str, Any] = {"id": tenant_id, "tag_account_name": tag_account_name}
    optional = {
        "account_name": account_name,
        "description": description,
        "polling_interval": polling_interval,
        "integration_instance_id": integration_instance_id,
    }
    values.update({name: value for name, value in optional.items() if value is not None})
    if alerts_file is not None:
        values["alert"] = load_alerts_file(Path(alerts_file))
    try:
        return TenantConfig.model_validate(values)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"tenant {tenant_id}: {problems}") from None


# -- onboarding ---------------------------------------------------------------------------------


async def validate(runtime: Runtime, tenant_id: str) -> PermissionReport:
    """A fresh token (AuthError when the tenant has not consented), `/organization`, every probe."""
    client = runtime.graph
    client.token_provider.reset(tenant_id)
    return await check_permissions(client, tenant_id)


async def onboard(runtime: Runtime, tenant: TenantConfig) -> Onboarded:
    """Validate a consented tenant, save it (unless the settings already hold it), record its
    permissions and enqueue its first sync and subscriptions. Raises AuthError (no token),
    OnboardingRefused (directory unreadable) or ConfigError (inconsistent options)."""
    await runtime.refresh_tenants()
    report = await validate(runtime, tenant.id)
    if report.missing_required:
        await record_report(runtime.redis, tenant.id, report, iso_ms(runtime.clock()))
        raise OnboardingRefused(tenant.id, report)
    if tenant.account_name is None and report.display_name:
        tenant = tenant.model_copy(update={"account_name": report.display_name})
    check_options(runtime, tenant)
    where = origin(runtime, tenant.id)
    if where in ("environment", "file"):
        tenant = runtime.tenant(tenant.id) or tenant
    else:
        await runtime.registry.save(tenant)
        await runtime.refresh_tenants()
        where = "registered"
    await record_report(runtime.redis, tenant.id, report, iso_ms(runtime.clock()))
    jobs = first_jobs(runtime, report)
    stamp = now_ms()
    await enqueue(runtime.redis, [Hint(tenant.id, job, "onboarding", at=stamp) for job in jobs])
    log.info("tenant %s onboarded (%s); first jobs: %s", tenant.id, where, ", ".join(jobs), extra={"tenant": tenant.id})
    return Onboarded(tenant, where, report, jobs)


def check_options(runtime: Runtime, tenant: TenantConfig) -> None:
    """What the settings check for configured tenants, for one registered at run time."""
    if tenant.tag_account_name and not tenant.account_name:
        raise ConfigError(f"tenant {tenant.id}: tag_account_name needs account_name (the tag's value)")
    if any(rule.webhooks for rule in tenant.alerts) and runtime.settings.webhook_secret is None:
        raise ConfigError("MONITOR_WEBHOOK_SECRET is required to sign the alert rules' webhook deliveries")


def first_jobs(runtime: Runtime, report: PermissionReport) -> list[str]:
    """The jobs of a first sync: the sources that need nothing more (the directory); subscriptions
    with a public URL; the others (sign-ins, Intune) only when one of the permissions they need is
    granted (they would only record the gap otherwise; `Source.needs_any_of`)."""
    first = [source for source in SOURCES if source.in_first_sync]
    jobs = [source.name for source in first if not source.needs_any_of]
    if runtime.settings.public_url is not None:
        jobs.append("subscriptions")
    for source in first:
        if source.needs_any_of and any(report.verdict(name).granted for name in source.needs_any_of):
            jobs.append(source.name)
    return jobs


# -- removal ------------------------------------------------------------------------------------


async def remove(runtime: Runtime, tenant_id: str, *, wait: float = REMOVE_WAIT) -> Removal:
    """Stop watching a registered tenant and delete everything of it (see the module docstring).
    Idempotent: removing an unknown tenant deletes whatever is left of it."""
    tenant_id = tenant_id.lower()
    await runtime.refresh_tenants()
    where = origin(runtime, tenant_id)
    if where == "environment":
        raise ConfigError(f"tenant {tenant_id} is MONITOR_TENANT_ID: change the setting to stop watching it")
    if where == "file":
        raise ConfigError(f"tenant {tenant_id} is in MONITOR_TENANTS_FILE: remove its [[tenant]] table there")
    removal = Removal(tenant_id, await runtime.registry.delete(tenant_id))
    await runtime.refresh_tenants()
    await _delete_subscriptions(runtime, tenant_id, removal)
    await _wait_for_jobs(runtime.redis, tenant_id, wait)
    removal.hints_dropped = await drop_hints(runtime.redis, tenant_id)
    removal.keys_deleted = await purge_keys(runtime.redis, tenant_id)
    log.info("%s", removal.summary(), extra={"tenant": tenant_id})
    return removal


async def _delete_subscriptions(runtime: Runtime, tenant_id: str, removal: Removal) -> None:
    store = runtime.store(tenant_id)
    if not await runtime.redis.hlen(store.keys.subscriptions):
        return
    if runtime.graph_client is None:
        removal.subscriptions_error = "no Graph credentials in this process"
        return
    manager = SubscriptionManager(
        runtime.graph,
        store,
        runtime.settings.public_url or "https://unused.invalid",
        renew_before=runtime.settings.subscription_renew_before,
    )
    try:
        removal.subscriptions_deleted = await manager.delete_all()
    except MonitorError as exc:  # GraphError, AuthError: the tenant may have revoked consent already
        removal.subscriptions_error = str(exc).splitlines()[0][:300]
        log.warning("tenant %s: subscriptions not deleted at Graph: %s", tenant_id, exc, extra={"tenant": tenant_id})


async def _wait_for_jobs(redis: Redis, tenant_id: str, wait: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    while held := await _leases(redis, tenant_id):
        if loop.time() >= deadline:
            raise MonitorError(
                f"tenant {tenant_id} is deregistered, but jobs of it still run ({', '.join(held[:3])}); "
                "run the removal again once they end"
            )
        await asyncio.sleep(0.2)


async def _leases(redis: Redis, tenant_id: str) -> list[str]:
    found: list[str] = []
    for pattern in TenantKeys(tenant_id).lease_patterns:
        found += [_text(key) async for key in redis.scan_iter(match=pattern, count=1000)]
    return found


async def drop_hints(redis: Redis, tenant_id: str) -> int:
    """Delete the tenant's hints from the queue, delivered or not. Returns how many."""
    return await HintQueue(redis).drop_tenant(tenant_id)


async def purge_keys(redis: Redis, tenant_id: str) -> int:
    """Delete every key of the tenant (all share its hash tag). Returns how many."""
    deleted = 0
    batch: list[str] = []
    async for key in redis.scan_iter(match=TenantKeys(tenant_id).pattern, count=1000):
        batch.append(_text(key))
        if len(batch) >= 500:
            deleted += await redis.unlink(*batch)
            batch = []
    if batch:
        deleted += await redis.unlink(*batch)
    return deleted


# -- list and show ------------------------------------------------------------------------------


async def describe(runtime: Runtime, tenant: TenantConfig) -> dict[str, Any]:
    """A tenant's configuration, origin and permission verdicts (`tenants show`, `tenants list`)."""
    permissions = await runtime.store(tenant.id).permissions()
    return {
        "tenant": tenant.id,
        "origin": origin(runtime, tenant.id),
        "account_name": tenant.account_name,
        "description": tenant.description,
        "polling_interval": tenant.polling_interval,
        "tag_account_name": tenant.tag_account_name,
        "integration_instance_id": tenant.integration_instance_id,
        "alert_rules": [rule.name for rule in tenant.alerts],
        "permissions": {name: permissions[name] for name in NEEDED_FOR if name in permissions},
    }


def render_description(entry: dict[str, Any]) -> str:
    interval = entry["polling_interval"]
    lines = [
        f"tenant {entry['tenant']} ({entry['origin']})",
        f"  account name      {entry['account_name'] or '-'}",
        f"  description       {entry['description'] or '-'}",
        f"  polling interval  {'DISABLED' if interval is None else f'{interval:g}s'}",
        f"  tag AccountName   {'yes' if entry['tag_account_name'] else 'no'}",
        f"  alert rules       {', '.join(entry['alert_rules']) or 'none'}",
    ]
    if not entry["permissions"]:
        lines.append("  permissions       not checked yet (`monitor tenants show --check`)")
    for name, verdict in entry["permissions"].items():
        lines.append(f"  permission        {render_permission(name, verdict)}")
    return "\n".join(lines)


def render_list_line(entry: dict[str, Any]) -> str:
    states = [v.get("state") or ("granted" if v.get("granted") else "missing") for v in entry["permissions"].values()]
    missing = states.count("missing")
    checked = f"{missing} permission(s) missing" if states else "permissions not checked"
    name = entry["account_name"] or "-"
    return f"{entry['tenant']}  {entry['origin']:<11} {name:<24} {checked}"


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
