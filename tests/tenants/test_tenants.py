"""Several tenants in one deployment: registration, isolation, the gaps of a partly consented tenant,
and removal that leaves nothing of a tenant behind."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis

from monitor.app import Runtime
from monitor.errors import ConfigError
from monitor.keys import GLOBAL_METRICS, HINTS
from monitor.metrics import metric
from monitor.settings import TenantConfig
from monitor.simulator import ALL_PERMISSIONS, SimTenant, Simulator, seed
from monitor.simulator.intune_seed import seed_intune
from monitor.status import render_tenant, tenant_status
from monitor.store import TenantStore
from monitor.sync import sync_tenant
from monitor.tenants import describe, onboard, remove, render_description
from tests.conftest import CLIENT_ID, TENANT_ID
from tests.tenants.conftest import SECOND_TENANT, Deployment

INTUNE = {
    "DeviceManagementManagedDevices.Read.All",
    "DeviceManagementConfiguration.Read.All",
    "DeviceManagementApps.Read.All",
    "DeviceManagementServiceConfig.Read.All",
    "APIConnectors.Read.All",
}


async def dump(redis: aioredis.Redis) -> dict[str, Any]:
    """Every key of the server and its whole value, as text (to search for a tenant's traces)."""
    found: dict[str, Any] = {}
    async for raw in redis.scan_iter(match="*", count=1000):
        key = _text(raw)
        kind = _text(await redis.type(key))
        if kind == "string":
            found[key] = await redis.get(key)
        elif kind == "hash":
            found[key] = sorted((await redis.hgetall(key)).items())
        elif kind == "set":
            found[key] = sorted(await redis.smembers(key))
        elif kind == "list":
            found[key] = await redis.lrange(key, 0, -1)
        elif kind == "zset":
            found[key] = await redis.zrange(key, 0, -1, withscores=True)
        elif kind == "stream":
            found[key] = await redis.xrange(key)
    return found


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def mentions(value: Any, text: str) -> bool:
    return text.encode() in repr(value).encode() or text in repr(value)


async def test_a_tenant_missing_intune_permissions_syncs_its_directory_and_reports_the_gap(
    deployment: Deployment, fabrikam: SimTenant
) -> None:
    seed_intune(deployment.sim, SECOND_TENANT, devices=5)
    deployment.sim.grant(SECOND_TENANT, CLIENT_ID, ALL_PERMISSIONS - INTUNE)
    done = await onboard(deployment.runtime, TenantConfig(id=SECOND_TENANT))
    assert "intune" not in done.jobs  # nothing of it is granted: a sweep would only find the gap again

    results, failures = await sync_tenant(deployment.runtime, done.tenant, ("account", "users", "groups", "intune"))

    by_source = {r.source: r for r in results}
    assert by_source["users"].change_count > 0 and by_source["groups"].change_count > 0
    assert not failures  # refused Intune passes are gaps, not failures: nothing deleted, nothing raised
    mirror = await TenantStore(deployment.redis, SECOND_TENANT).mirror_dump()
    types = {obj["_type"] for (kind, _), obj in mirror.items() if kind == "entity"}
    assert {"azure_user", "azure_user_group", "microsoft_365_account"} <= types
    assert not {t for t in types if t.startswith(("intune_", "user_endpoint", "mobile_device", "smartphone"))}

    status = await tenant_status(deployment.runtime, done.tenant)
    apps = status["permissions"]["DeviceManagementApps.Read.All"]
    assert (apps["granted"], apps["needed_for"]) == (False, "managed applications")
    text = render_tenant(status)
    assert "DeviceManagementApps.Read.All: MISSING: no managed applications" in text
    assert "DeviceManagementManagedDevices.Read.All: MISSING: no managed devices" in text
    shown = render_description(await describe(deployment.runtime, done.tenant))
    assert "DeviceManagementApps.Read.All: MISSING: no managed applications" in shown
    assert "User.Read.All: granted" in shown


async def test_two_tenants_synced_side_by_side_never_mix(
    deployment: Deployment, sim: Simulator, tenant: SimTenant, fabrikam: SimTenant
) -> None:
    seed(tenant, users=15, groups=3, memberships=25, rng_seed=1)
    sim.grant(SECOND_TENANT, CLIENT_ID)
    contoso = (await onboard(deployment.runtime, TenantConfig(id=TENANT_ID))).tenant
    fabrikam_config = (await onboard(deployment.runtime, TenantConfig(id=SECOND_TENANT))).tenant
    await deployment.redis.delete(HINTS)  # this test drives the syncs itself

    await asyncio.gather(
        sync_tenant(deployment.runtime, contoso, ("account", "users", "groups")),
        sync_tenant(deployment.runtime, fabrikam_config, ("account", "users", "groups")),
    )

    for sim_tenant, other in ((tenant, fabrikam), (fabrikam, tenant)):
        tid = sim_tenant.tenant_id
        mirror = await TenantStore(deployment.redis, tid).mirror_dump()
        users = {obj["_key"] for obj in mirror.values() if obj.get("_type") == "azure_user"}
        assert users == set(sim_tenant.users)
        assert not users & set(other.users)
        (account,) = [obj for obj in mirror.values() if obj.get("_type") == "microsoft_365_account"]
        assert account["name"] == sim_tenant.display_name
        changes = await TenantStore(deployment.redis, tid).read_changes(0, count=100_000)
        assert changes and {r["tenant"] for r in changes} == {tid}
        assert not any(mentions(r, other.tenant_id) for r in changes)
    records = deployment.records()
    for record in records:
        owner = tenant if record["tenant"] == TENANT_ID else fabrikam
        if record["type"] == "azure_user":
            assert record["key"] in owner.users
    everything = await dump(deployment.redis)
    tagged = {key for key in everything if key.startswith("monitor:{") and not key.startswith("monitor:{tenants}")}
    for key in tagged:
        assert key.startswith((f"monitor:{{{TENANT_ID}}}:", f"monitor:{{{SECOND_TENANT}}}:")) or key.startswith(
            ("monitor:{hints}", "monitor:{global}", "monitor:{workers}", "monitor:{scheduler}")
        )


async def test_removing_a_tenant_leaves_nothing_of_it(
    deployment: Deployment, sim: Simulator, tenant: SimTenant, fabrikam: SimTenant
) -> None:
    seed(tenant, users=10, groups=2, memberships=10, rng_seed=1)
    sim.grant(SECOND_TENANT, CLIENT_ID)
    await onboard(deployment.runtime, TenantConfig(id=TENANT_ID))
    await onboard(deployment.runtime, TenantConfig(id=SECOND_TENANT, account_name="Fabrikam"))
    await deployment.work()  # first syncs and subscriptions of both
    ours = [s for s in sim.subscriptions.all() if s.notification_url.startswith(deployment.public_url)]
    assert sorted(s.tenant_id for s in ours) == sorted([TENANT_ID, TENANT_ID, SECOND_TENANT, SECOND_TENANT])
    fabrikam_subscription = next(s for s in ours if s.tenant_id == SECOND_TENANT)
    before = await dump(deployment.redis)
    assert any(mentions(value, SECOND_TENANT) for value in before.values())
    # Work still queued for the tenant when it goes.
    await deployment.redis.xadd(
        HINTS, {"tenant": SECOND_TENANT, "job": "users", "reason": "test", "subscription": "", "event": "", "at": "1"}
    )

    removal = await remove(deployment.runtime, SECOND_TENANT)

    assert removal.was_registered and len(removal.subscriptions_deleted) == 2 and not removal.subscriptions_error
    assert removal.hints_dropped == 1 and removal.keys_deleted > 10
    assert not [s for s in sim.subscriptions.all() if s.tenant_id == SECOND_TENANT]
    after = await dump(deployment.redis)
    traces = {key for key, value in after.items() if SECOND_TENANT in key or mentions(value, SECOND_TENANT)}
    assert traces == set()
    # The other tenant is untouched, key for key and value for value.
    contoso_before = {k: v for k, v in before.items() if k.startswith(f"monitor:{{{TENANT_ID}}}")}
    contoso_after = {k: v for k, v in after.items() if k.startswith(f"monitor:{{{TENANT_ID}}}")}
    assert contoso_after == contoso_before
    assert [s.tenant_id for s in sim.subscriptions.all()] == [TENANT_ID, TENANT_ID]

    # The live web process stops serving it: a (late) notification for it is refused as unknown.
    notification = {
        "value": [
            {
                "subscriptionId": fabrikam_subscription.id,
                "tenantId": SECOND_TENANT,
                "clientState": fabrikam_subscription.client_state,
                "changeType": "updated",
                "resource": "Users/x",
            }
        ]
    }
    async with deployment.browser() as browser:
        answer = await browser.post(f"{deployment.public_url}/graph/notifications", json=notification)
    assert answer.status == 202
    counters = await deployment.redis.hgetall(GLOBAL_METRICS)
    assert counters[metric("monitor_notifications_total", outcome="unknown_tenant").encode()] == b"1"
    assert not await deployment.redis.xlen(HINTS)
    # A worker handed a stray hint for it writes nothing of it either.
    await deployment.redis.xadd(
        HINTS, {"tenant": SECOND_TENANT, "job": "users", "reason": "stray", "subscription": "", "event": "", "at": "1"}
    )
    stats = await deployment.work()
    assert stats.jobs["users:unknown_tenant"] == 1
    final = await dump(deployment.redis)
    assert not {key for key, value in final.items() if SECOND_TENANT in key or mentions(value, SECOND_TENANT)}
    assert deployment.runtime.tenant_ids() == [TENANT_ID]


async def test_configured_tenants_are_removed_in_the_settings(runtime: Runtime) -> None:
    """The `runtime` fixture's tenant is MONITOR_TENANT_ID: the operator's deployment, not the registry's."""
    with pytest.raises(ConfigError, match="MONITOR_TENANT_ID: change the setting"):
        await remove(runtime, TENANT_ID)
    assert runtime.tenant_ids() == [TENANT_ID]


async def test_the_registry_is_shared_by_every_process(deployment: Deployment, fabrikam: SimTenant) -> None:
    """Another process (here: another runtime) sees a registration and a removal on its next refresh."""
    deployment.sim.grant(SECOND_TENANT, CLIENT_ID)
    other = await Runtime.open(deployment.settings, graph=False)
    try:
        assert other.tenant_ids() == [] and other.watched_ids() == frozenset()
        await onboard(deployment.runtime, TenantConfig(id=SECOND_TENANT, description="from elsewhere"))
        await other.refresh_tenants()
        seen = other.tenant(SECOND_TENANT)
        assert seen is not None and seen.description == "from elsewhere" and seen.account_name == "Fabrikam"
        assert other.watched_ids() == {SECOND_TENANT}  # what the webhook checks notifications against
        await remove(deployment.runtime, SECOND_TENANT)
        await other.refresh_tenants()
        assert other.tenant_ids() == [] and other.watched_ids() == frozenset()
    finally:
        await other.close()


async def test_registered_entries_round_trip_with_alert_rules(deployment: Deployment) -> None:
    from monitor.alert_rules import AlertRule

    rule = AlertRule(name="admins", group_name_pattern="*admin*", send_to=("log",))
    config = TenantConfig(id=SECOND_TENANT, polling_interval=None, alert=(rule,), tag_account_name=False)
    await deployment.runtime.registry.save(config)
    await deployment.runtime.refresh_tenants()
    assert deployment.runtime.tenant(SECOND_TENANT) == config
    raw = await deployment.redis.hget("monitor:{tenants}:registry", SECOND_TENANT)
    assert orjson.loads(raw or b"{}")["polling_interval"] is None
