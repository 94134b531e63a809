"""Sign-in activity (its own sweep), certificate credentials, and clear auth failures."""

from __future__ import annotations

from pathlib import Path

import pytest

from monitor.app import Runtime
from monitor.model.account import account_key
from monitor.model.common import epoch_ms
from monitor.model.types import entity_placement
from monitor.settings import Settings, load_settings
from monitor.simulator import (
    ALL_PERMISSIONS,
    RunningSimulator,
    SimTenant,
    Simulator,
    create_self_signed_client_certificate,
    seed,
)
from monitor.source_registry import sync_selection
from monitor.sync import sync_tenant
from tests.conftest import CLIENT_ID, TENANT_ID, RedisServer
from tests.directory_helpers import expected_mirror, without_sign_in

ALL_SOURCES = sync_selection({"signins"})
ACCOUNT_KEY = account_key(TENANT_ID)


async def user_entity(runtime: Runtime, user_id: str) -> dict[str, object]:
    entity = await runtime.store(TENANT_ID).get(entity_placement("azure_user", user_id), user_id)
    assert entity is not None
    return entity


async def test_sign_in_activity_is_patched_on_as_graph_sends_it_with_epoch_ms_twins_and_survives_updates(
    runtime: Runtime, tenant: SimTenant
) -> None:
    seed(tenant, users=10, groups=1, memberships=5)
    user = next(iter(tenant.users))
    activity = tenant.set_sign_in(user, interactive=True, success=True, when="2026-11-20T08:15:30.1234567Z")
    await sync_tenant(runtime, runtime.settings.tenants[0], ALL_SOURCES)
    entity = await user_entity(runtime, user)
    # The public integration's property as Graph sends it, and its epoch-ms twin for J1QL date comparisons.
    assert entity["lastSignInDateTime"] == "2026-11-20T08:15:30.1234567Z"
    assert entity["lastSignInOn"] == epoch_ms("2026-11-20T08:15:30.1234567Z") == 1795162530123
    assert entity["lastSignInRequestId"] == activity["lastSignInRequestId"]

    tenant.update_user(user, jobTitle="Promoted")
    store = runtime.store(TENANT_ID)
    seq = await store.last_seq()
    await sync_tenant(runtime, runtime.settings.tenants[0])
    [record] = await store.read_changes(seq)
    assert record["changed"] == ["jobTitle"], "a directory update keeps the sign-in properties"
    assert (await user_entity(runtime, user))["lastSignInOn"] == 1795162530123
    status = await store.status("signins")
    assert status["skipped"] == ""


@pytest.mark.parametrize(
    ("grant_audit_log", "premium", "reason"),
    [(False, True, "missing permission AuditLog.Read.All"), (True, False, "the tenant has no Entra ID P1/P2 licence")],
)
async def test_without_sign_in_access_the_tenant_still_syncs(
    sim: Simulator, tenant: SimTenant, runtime: Runtime, grant_audit_log: bool, premium: bool, reason: str
) -> None:
    permissions = ALL_PERMISSIONS if grant_audit_log else ALL_PERMISSIONS - {"AuditLog.Read.All"}
    sim.grant(TENANT_ID, CLIENT_ID, permissions)
    tenant.premium = premium
    seed(tenant, users=10, groups=2, memberships=8)
    results, failures = await sync_tenant(runtime, runtime.settings.tenants[0], ALL_SOURCES)
    assert not failures
    store = runtime.store(TENANT_ID)
    assert without_sign_in(dict(await store.mirror_dump())) == expected_mirror(tenant, ACCOUNT_KEY)
    assert (await store.status("signins"))["skipped"] == reason
    permission = (await store.permissions())["AuditLog.Read.All"]
    assert permission["granted"] is False and permission["detail"] == reason


async def test_certificate_credentials_sign_in_with_msal(
    sim: Simulator, tenant: SimTenant, graph: RunningSimulator, redis_server: RedisServer, tmp_path: Path, redis: object
) -> None:
    cert_pem, key_pem = create_self_signed_client_certificate("monitor-test")
    client_id = "5a5a5a5a-1111-2222-3333-444444444444"
    sim.register_app(client_id, certificate_pem=cert_pem)
    sim.grant(TENANT_ID, client_id)
    credential = tmp_path / "monitor.pem"
    credential.write_bytes(cert_pem + key_pem)
    settings = _settings(graph, redis_server, client_id=client_id, client_certificate=str(credential))
    seed(tenant, users=5, groups=1, memberships=2)
    runtime = await Runtime.open(settings)
    try:
        results, failures = await sync_tenant(runtime, settings.tenants[0])
    finally:
        await runtime.close()
    assert not failures
    assert [r.objects for r in results if r.source == "users"] == [5]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"client_secret": "Xq-not-our-secret-7"}, "the client secret is wrong"),
        ({"client_id": "99999999-9999-9999-9999-999999999999"}, "not registered or not consented"),
        ({"tenant_id": "00000000-0000-0000-0000-00000000dead"}, "does not know this tenant"),
    ],
    ids=["bad secret", "unknown app", "unknown tenant"],
)
async def test_auth_failures_are_one_clear_line(
    graph: RunningSimulator, redis_server: RedisServer, redis: object, overrides: dict[str, str], message: str
) -> None:
    settings = _settings(graph, redis_server, **overrides)
    runtime = await Runtime.open(settings)
    try:
        results, failures = await sync_tenant(runtime, settings.tenants[0])
    finally:
        await runtime.close()
    assert results == []
    assert {f.source for f in failures} == {"account", "users", "groups"}
    for failure in failures:
        assert message in failure.reason
        assert "\n" not in failure.reason
        assert "Xq-not-our-secret-7" not in failure.reason and "sim-secret" not in failure.reason


def _settings(graph: RunningSimulator, redis_server: RedisServer, **overrides: str) -> Settings:
    values = {
        "redis_url": redis_server.url,
        "graph_url": graph.url,
        "authority_url": graph.url,
        "ca_bundle": str(graph.ca_bundle_path),
        "client_id": CLIENT_ID,
        "client_secret": "sim-secret-~value~-do-not-log",
        "tenant_id": TENANT_ID,
        **overrides,
    }
    if "client_certificate" in overrides:
        values.pop("client_secret")
    return load_settings({}, **values)
