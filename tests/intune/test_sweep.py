"""The Intune sweep end to end: the simulated tenant over HTTPS, real MSAL, the real redis-server.

Each test drives `sync_tenant` (what `monitor sync --intune` and the scheduler run) and checks the
mirror against what the simulator's state maps to, and the change log against exactly the changes
made to the simulated estate.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from monitor.app import Runtime
from monitor.model.account import account_key
from monitor.model.types import entity_placement
from monitor.records import ChangeRecord
from monitor.rounds import RoundResult
from monitor.scopes import scope_of
from monitor.simulator import SimTenant, Simulator
from monitor.simulator.intune import IntuneTenant, SimDevice
from monitor.sources.intune_passes import FAMILIES, FAMILY_OWNERS, PASSES, ownership
from monitor.sources.intune_sweep import PassWriter
from monitor.status import render_tenant, tenant_status
from monitor.sync import SourceFailed, sync_tenant
from tests.conftest import TENANT_ID
from tests.model.j1_schema import check_entity, check_relationship

from .helpers import NOT_INTUNE, MirrorState, expected_changes, expected_intune, intune_part, replay, summary

ACCOUNT_KEY = account_key(TENANT_ID)
DEVICE_TYPES = {"user_endpoint", "workstation", "laptop", "desktop", "server", "smartphone"}


async def sync(
    runtime: Runtime, sources: tuple[str, ...] = ("intune",)
) -> tuple[list[ChangeRecord], list[SourceFailed]]:
    store = runtime.store(TENANT_ID)
    before = await store.last_seq()
    _, failures = await sync_tenant(runtime, runtime.settings.tenants[0], sources)
    return await store.read_changes(before, 10**7), failures


async def mirror(runtime: Runtime) -> MirrorState:
    return intune_part(await runtime.store(TENANT_ID).mirror_dump())


async def first_sweep(runtime: Runtime) -> list[ChangeRecord]:
    """The directory first (users are relationship ends), then one complete sweep."""
    _, failures = await sync(runtime, ("account", "users"))
    records, more = await sync(runtime)
    assert failures == more == []
    return records


def deletes(records: list[ChangeRecord]) -> list[ChangeRecord]:
    return [r for r in records if r["op"] == "delete"]


async def test_first_sweep_emits_the_full_model(
    runtime: Runtime, sim: Simulator, tenant: SimTenant, estate: IntuneTenant
) -> None:
    records = await first_sweep(runtime)
    expected = expected_intune(estate, set(tenant.users))
    assert await mirror(runtime) == expected
    intune_records = [r for r in records if r["type"] not in NOT_INTUNE]
    assert len(intune_records) == len(expected) and {r["op"] for r in intune_records} == {"upsert"}
    assert intune_part(replay(records)) == expected
    types = {obj["_type"] for obj in expected.values()}
    assert (
        DEVICE_TYPES
        | {
            "intune_host_agent",
            "intune_compliance_policy",
            "intune_device_configuration",
            "intune_noncompliance_finding",
            "intune_managed_application",
            "intune_detected_application",
            "intune_host_agent_assigned_compliance_policy",
            "intune_host_agent_assigned_device_configuration",
            "intune_compliance_policy_identified_noncompliance_finding",
            "intune_device_configuration_identified_noncompliance_finding",
        }
        <= types
    )
    for suffix in ("_installed_intune_detected_application", "_assigned_intune_managed_application"):
        assert any(t.endswith(suffix) for t in types)
    for prefix in ("intune_host_agent_manages_", "azure_user_has_", "azure_user_uses_"):
        assert {t.removeprefix(prefix) for t in types if t.startswith(prefix)} == DEVICE_TYPES


async def test_every_object_passes_the_data_model_and_no_relationship_dangles(
    runtime: Runtime, estate: IntuneTenant
) -> None:
    await first_sweep(runtime)
    dump = await runtime.store(TENANT_ID).mirror_dump()
    keys = {key for (kind, key) in dump if kind == "entity"}
    for (kind, _), obj in intune_part(dump).items():
        if kind == "entity":
            assert check_entity(obj) == [], obj
        else:
            assert check_relationship(obj) == [], obj
            assert {obj["_fromEntityKey"], obj["_toEntityKey"]} <= keys, obj


async def test_the_sweep_reads_lists_and_batches_never_one_device_at_a_time(
    runtime: Runtime, sim: Simulator, estate: IntuneTenant
) -> None:
    await first_sweep(runtime)
    assert sim.count(r"/managedDevices/[0-9a-f-]{36}$") == 0  # the public integration's per-device call
    pages = -(-len(estate.devices) // estate.page_size)
    assert sim.count(r"^/beta/deviceManagement/managedDevices$", method="GET") == pages
    statuses = sim.count(r"/deviceStatuses$")
    assert statuses >= len(estate.compliance_policies) + len(estate.configurations)
    assert sim.count(r"/\$batch$", method="POST") * 20 >= statuses  # all of them inside batches


async def test_account_enrichment(runtime: Runtime, estate: IntuneTenant) -> None:
    await first_sweep(runtime)
    account = await runtime.store(TENANT_ID).get(entity_placement("microsoft_365_account", ACCOUNT_KEY), ACCOUNT_KEY)
    assert account is not None
    assert (account["intuneAccountId"], account["intuneSubscriptionState"]) == (estate.account_id, "active")
    assert account["mobileDeviceManagementAuthority"] == "intune"
    assert check_entity(account) == []


async def test_a_second_sweep_without_changes_emits_nothing(runtime: Runtime, estate: IntuneTenant) -> None:
    await first_sweep(runtime)
    records, failures = await sync(runtime)
    assert (records, failures) == ([], [])
    status = await runtime.store(TENANT_ID).status("intune")
    assert (status["kind"], status["changes"], status["skipped"], status["partial"]) == ("sweep", "0", "", "")


def pick(estate: IntuneTenant, device_type: str, test: Callable[[SimDevice], bool] = lambda _: True) -> SimDevice:
    return next(d for d in estate.devices.values() if d.spec.device_type == device_type and test(d))


def rename(estate: IntuneTenant) -> set[tuple[str, str, str, tuple[str, ...]]]:
    device = pick(estate, "windowsRT")
    synced = device.last_sync
    estate.rename_device(device.id, "DESKTOP-RENAMED")
    device.last_sync = synced  # the rename alone: the sync that applies it moves report times as well
    return {("upsert", "user_endpoint", device.id, ("deviceName", "displayName", "hostname", "name"))}


def flip_compliance(estate: IntuneTenant) -> set[tuple[str, str, str, tuple[str, ...]]]:
    policy = next(p for p, v in estate.compliance_policies.items() if v["displayName"] == "iOS compliance")
    device = pick(estate, "iPhone", lambda d: estate.status(policy, d) == "compliant")
    agent = f"intune-host-agent:{device.id}"
    state_before = estate.compliance_state(device)
    estate.set_status(policy, device.id, "nonCompliant")
    finding = f"{estate.account_id}_{policy}_{device.id}"
    finding_fields = (
        "_class _key _type assessment category displayName id lastProcessedOn lastTestedOn lastUpdatedOn name "
        "numericSeverity open severity status"
    )
    identified = ("_class", "_fromEntityKey", "_key", "_toEntityKey", "_type", "displayName")
    changes = {
        (
            "upsert",
            "intune_host_agent_assigned_compliance_policy",
            f"{agent}|assigned|{policy}",
            ("complianceStatus", "compliant"),
        ),
        ("upsert", "intune_noncompliance_finding", finding, tuple(finding_fields.split())),
        (
            "upsert",
            "intune_compliance_policy_identified_noncompliance_finding",
            f"{policy}|identified|{finding}",
            identified,
        ),
        ("upsert", "smartphone_has_intune_noncompliance_finding", f"{device.id}|has|{finding}", identified),
    }
    if state_before != "noncompliant":
        changes.add(("upsert", "intune_host_agent", agent, ("complianceState", "compliant")))
    return changes


def install(estate: IntuneTenant) -> set[tuple[str, str, str, tuple[str, ...]]]:
    device = pick(estate, "windowsRT")
    installed_somewhere = {a for d in estate.devices for a in estate.device_apps(d)}
    app = next(
        a for a in installed_somewhere if a not in estate.device_apps(device.id) and estate.detected[a]["displayName"]
    )
    estate.install_detected(device.id, app)
    name = estate.detected[app]["displayName"].lower()
    fields = ("_class", "_fromEntityKey", "_key", "_toEntityKey", "_type", "detectionId", "displayName", "version")
    key = f"{device.id}|installed|IntuneDetected:{name}|{app}"
    return {("upsert", "user_endpoint_installed_intune_detected_application", key, fields)}


def uninstall(estate: IntuneTenant) -> set[tuple[str, str, str, tuple[str, ...]]]:
    device = pick(estate, "macMDM")
    app = next(a for a in estate.device_apps(device.id) if estate.device_count(a) > 1)
    estate.uninstall_detected(device.id, app)
    name = (estate.detected[app]["displayName"] or app).lower()
    fields = ("_class", "_fromEntityKey", "_key", "_toEntityKey", "_type", "detectionId", "displayName", "version")
    return {
        (
            "delete",
            "laptop_installed_intune_detected_application",
            f"{device.id}|installed|IntuneDetected:{name}|{app}",
            fields,
        )
    }


def install_fails(estate: IntuneTenant) -> set[tuple[str, str, str, tuple[str, ...]]]:
    app = next(a for a in estate.mobile_apps if estate.mobile_apps[a]["displayName"] == "Contoso Expenses")
    device = pick(estate, "windowsRT", lambda d: estate.install_state(app, d) == 1)
    estate.set_install_state(app, device.id, "failed")
    key = f"{device.id}|{app}"
    changed = ("errorCode", "hexErrorCode", "installState")
    return {("upsert", "user_endpoint_assigned_intune_managed_application", key, changed)}


def retire(estate: IntuneTenant) -> set[tuple[str, str, str, tuple[str, ...]]]:
    device = pick(estate, "iPhone")
    estate.retire_device(device.id)
    return set()  # every record is a delete of something of this device: checked below


CHANGES: list[Any] = [
    pytest.param(rename, id="device-renamed"),
    pytest.param(flip_compliance, id="compliance-flipped"),
    pytest.param(install, id="app-installed"),
    pytest.param(uninstall, id="app-removed"),
    pytest.param(install_fails, id="managed-app-install-failed"),
    pytest.param(retire, id="device-retired"),
]


@pytest.mark.parametrize("change", CHANGES)
async def test_a_change_emits_exactly_its_records(
    runtime: Runtime,
    tenant: SimTenant,
    estate: IntuneTenant,
    change: Callable[[IntuneTenant], set[tuple[str, str, str, tuple[str, ...]]]],
) -> None:
    await first_sweep(runtime)
    before = await mirror(runtime)
    expected = change(estate)
    records, failures = await sync(runtime)
    assert failures == []
    after = expected_intune(estate, set(tenant.users))
    assert await mirror(runtime) == after
    assert summary(records) == expected_changes(before, after)
    if expected:
        assert summary(records) == expected
    else:  # retired: only deletes, and each of them names the device or its findings
        assert records and {r["op"] for r in records} == {"delete"}
        gone = {d for d in (r["after"] for r in records)} == {None}
        assert gone
        device_keys = {r["key"] for r in records if r["type"] in DEVICE_TYPES}
        assert len(device_keys) == 1
        [device_id] = device_keys
        assert all(device_id in r["key"] or r["type"] == "intune_detected_application" for r in records)
        assert any(r["type"] == "intune_host_agent" for r in records)
        assert any(r["type"].endswith("_installed_intune_detected_application") for r in records)
    assert replay(records, before) == after


async def test_a_sweep_failing_on_page_3_emits_no_deletions(
    runtime: Runtime, sim: Simulator, tenant: SimTenant, estate: IntuneTenant
) -> None:
    await first_sweep(runtime)
    before = await mirror(runtime)
    retired = pick(estate, "iPhone")
    estate.retire_device(retired.id)
    # Page 3 of the device list: its page token has expired (not retryable; docs/graph.md 7.2).
    expired = {
        "error": {"code": "Directory_ExpiredPageToken", "message": "The specified page token value has expired."}
    }
    sim.faults.inject("GET", r"managedDevices\?.*skiptoken", 400, body=expired, after=1)
    records, failures = await sync(runtime)
    assert [f.source for f in failures] == ["intune"] and "devices" in failures[0].reason
    assert deletes(records) == []
    assert await mirror(runtime) == before  # nothing else changed; the retired device is still there
    status = await runtime.store(TENANT_ID).status("intune")
    assert "page token value has expired" in status["error"]
    # The next complete sweep catches up, exactly.
    records, failures = await sync(runtime)
    assert failures == []
    after = expected_intune(estate, set(tenant.users))
    assert summary(records) == expected_changes(before, after) and deletes(records)


async def test_a_pass_failing_part_way_deletes_nothing_of_its_own(
    runtime: Runtime, sim: Simulator, tenant: SimTenant, estate: IntuneTenant
) -> None:
    await first_sweep(runtime)
    retired = pick(estate, "windowsRT")
    estate.retire_device(retired.id)
    expired = {
        "error": {"code": "Directory_ExpiredPageToken", "message": "The specified page token value has expired."}
    }
    sim.faults.inject("GET", r"deviceCompliancePolicies/.*/deviceStatuses\?.*skiptoken", 400, body=expired)
    records, failures = await sync(runtime)
    assert [f.source for f in failures] == ["intune"] and "compliance" in failures[0].reason
    deleted_types = {r["type"] for r in deletes(records)}
    assert "user_endpoint" in deleted_types  # the device pass completed and deleted
    assert "intune_host_agent_assigned_compliance_policy" not in deleted_types
    assert "intune_host_agent_assigned_device_configuration" in deleted_types
    mirrored = await mirror(runtime)
    assert any(key.startswith(f"intune-host-agent:{retired.id}|assigned|") for _, key in mirrored)


async def test_a_403_on_configurations_keeps_them_and_names_the_permission(
    runtime: Runtime, sim: Simulator, tenant: SimTenant, estate: IntuneTenant
) -> None:
    await first_sweep(runtime)
    before = await mirror(runtime)
    removed = next(iter(estate.configurations))
    del estate.configurations[removed]  # gone from Intune, but the sweep cannot see that
    sim.faults.inject("GET", r"^/v1\.0/deviceManagement/deviceConfigurations\?", 403, times=1)
    records, failures = await sync(runtime)
    assert failures == []
    assert deletes(records) == []
    assert (("entity", removed) in await mirror(runtime)) and (await mirror(runtime)) == before
    status = await tenant_status(runtime, runtime.settings.tenants[0])
    permission = status["permissions"]["DeviceManagementConfiguration.Read.All"]
    assert permission["granted"] is False
    assert "configurations: forbidden" in status["sources"]["intune"]["partial"]
    text = render_tenant(status)
    assert "DeviceManagementConfiguration.Read.All: MISSING" in text and "skipped parts: configurations" in text
    # With the permission back, the configuration and everything of it go.
    records, failures = await sync(runtime)
    assert failures == [] and ("delete", "intune_device_configuration") in {(r["op"], r["type"]) for r in records}
    assert await mirror(runtime) == expected_intune(estate, set(tenant.users))
    status = await tenant_status(runtime, runtime.settings.tenants[0])
    assert status["permissions"]["DeviceManagementConfiguration.Read.All"]["granted"] is True


async def test_a_revoked_permission_skips_both_configuration_passes(
    runtime: Runtime, sim: Simulator, tenant: SimTenant, estate: IntuneTenant
) -> None:
    await first_sweep(runtime)
    before = await mirror(runtime)
    estate.retire_device(pick(estate, "macMDM").id)
    client_id = runtime.settings.client_id
    assert client_id is not None
    sim.grant(TENANT_ID, client_id, sim.grants[(TENANT_ID, client_id)] - {"DeviceManagementConfiguration.Read.All"})
    fresh = await Runtime.open(runtime.settings)  # a new token carries the new grant
    try:
        records, failures = await sync(fresh)
        status = await tenant_status(fresh, runtime.settings.tenants[0])
    finally:
        await fresh.close()
    assert failures == []
    kept = {"intune_compliance_policy", "intune_device_configuration", "intune_noncompliance_finding"}
    assert not {r["type"] for r in deletes(records)} & kept
    assert not any("_assigned_compliance_policy" in r["type"] or "identified" in r["type"] for r in deletes(records))
    assert {key for _, key in before if key in estate.policy_platform} <= {key for _, key in await mirror(runtime)}
    assert status["permissions"]["DeviceManagementConfiguration.Read.All"]["granted"] is False
    assert "compliance: forbidden" in status["sources"]["intune"]["partial"]


async def test_a_tenant_without_intune_has_the_sweep_off(runtime: Runtime, sim: Simulator, tenant: SimTenant) -> None:
    from monitor.simulator.intune_seed import seed_intune

    seed_intune(sim, TENANT_ID, licensed=False)
    records, failures = await sync(runtime, ("account", "intune"))
    assert failures == []
    assert {r["type"] for r in records} == {"microsoft_365_account"}
    assert sim.count("managedDevices") == 0
    status = await tenant_status(runtime, runtime.settings.tenants[0])
    assert "no Intune" in status["sources"]["intune"]["skipped"]
    assert "skipped: the tenant has no Intune" in render_tenant(status)


async def test_a_tenant_that_loses_intune_deletes_nothing(
    runtime: Runtime, sim: Simulator, tenant: SimTenant, estate: IntuneTenant
) -> None:
    await first_sweep(runtime)
    before = await mirror(runtime)
    estate.licensed = False
    records, failures = await sync(runtime)
    assert failures == []
    assert summary(records) == {
        ("upsert", "microsoft_365_account", ACCOUNT_KEY, ("intuneAccountId", "intuneSubscriptionState")),
    }
    assert await mirror(runtime) == before


async def test_a_refused_probe_is_a_missing_permission_not_a_missing_intune(
    runtime: Runtime, sim: Simulator, tenant: SimTenant, estate: IntuneTenant
) -> None:
    client_id = runtime.settings.client_id
    assert client_id is not None
    refused = {"DeviceManagementConfiguration.Read.All", "DeviceManagementServiceConfig.Read.All"}
    sim.grant(TENANT_ID, client_id, sim.grants[(TENANT_ID, client_id)] - refused)
    records, failures = await sync(runtime, ("account", "users", "intune"))
    assert failures == []
    assert any(r["type"] == "intune_host_agent" for r in records)  # the device pass still ran
    permissions = await runtime.store(TENANT_ID).permissions()
    assert permissions["DeviceManagementServiceConfig.Read.All"]["granted"] is False
    assert permissions["DeviceManagementConfiguration.Read.All"]["granted"] is False
    assert permissions["DeviceManagementManagedDevices.Read.All"]["granted"] is True


async def test_an_inner_429_during_the_sweep_is_retried(
    runtime: Runtime, sim: Simulator, tenant: SimTenant, estate: IntuneTenant
) -> None:
    sim.faults.inject("GET", r"deviceConfigurations/.*/deviceStatuses", 429, headers={"Retry-After": "0"}, times=3)
    await first_sweep(runtime)
    assert sim.count("deviceStatuses", status=429) == 3
    assert runtime.graph.stats.throttled >= 3
    assert await mirror(runtime) == expected_intune(estate, set(tenant.users))


def pass_of(obj: dict[str, Any], estate: IntuneTenant) -> str:
    """Which pass writes an object, by its `_type` (and, for findings, by its policy)."""
    kind = obj["_type"]
    if (
        kind in DEVICE_TYPES
        or kind == "intune_host_agent"
        or kind.startswith(("intune_host_agent_manages_", "azure_user_"))
    ):
        return "devices"
    if "noncompliance_finding" in kind and not kind.startswith(("intune_compliance", "intune_device_configuration")):
        finding = obj["_key"] if kind == "intune_noncompliance_finding" else obj["_toEntityKey"]
        return "compliance" if finding.split("_")[1] in estate.compliance_policies else "configurations"
    if "compliance_policy" in kind:
        return "compliance"
    if "device_configuration" in kind:
        return "configurations"
    return "apps" if "managed_application" in kind else "detected"


async def test_every_object_is_owned_by_the_pass_that_writes_it(runtime: Runtime, estate: IntuneTenant) -> None:
    """The deletion phase finds an object's owner from its key alone: check it on every object."""
    await first_sweep(runtime)
    context = runtime.context(runtime.settings.tenants[0])
    writer = PassWriter(context, "check", RoundResult(TENANT_ID, "intune"), track=False)
    owner_of = await ownership(writer)
    owners = set()
    for kind, family in FAMILIES:
        for scope in await context.store.known_scopes(kind, family):
            for key, obj in (await context.store.scope_objects(scope)).items():
                assert owner_of(kind, family, key) == pass_of(obj, estate), obj
                assert pass_of(obj, estate) in FAMILY_OWNERS[(kind, family)], obj  # the sets a scan asks
                owners.add(pass_of(obj, estate))
    assert owners == {p.name for p in PASSES}


async def test_account_refresh_and_sweep_together_emit_nothing_when_nothing_changed(
    runtime: Runtime, estate: IntuneTenant
) -> None:
    await first_sweep(runtime)
    records, failures = await sync(runtime, ("account", "intune"))
    assert failures == []
    assert records == []


async def test_the_objects_of_retired_devices_are_deleted_a_chunk_of_scopes_per_commit(
    runtime: Runtime, tenant: SimTenant, estate: IntuneTenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Devices that retire leave a few objects in each of many scopes (their agents, relationships and
    findings): the deletions of a chunk of scopes are read and committed together, not a commit per
    scope, and still delete exactly what went."""
    await first_sweep(runtime)
    before = await mirror(runtime)
    for device in list(estate.devices.values())[:4]:
        estate.retire_device(device.id)
    commit = PassWriter.commit
    scopes_per_commit: list[int] = []

    async def counted(writer: PassWriter, ops: Any, **kwargs: Any) -> int:
        if writer.pass_name == "deletions":
            scopes_per_commit.append(len({scope_of(op.placement) for op in ops}))
        return await commit(writer, ops, **kwargs)

    monkeypatch.setattr(PassWriter, "commit", counted)
    records, failures = await sync(runtime)

    after = expected_intune(estate, set(tenant.users))
    assert failures == [] and await mirror(runtime) == after
    assert summary(records) == expected_changes(before, after) and {r["op"] for r in records} == {"delete"}
    assert sum(scopes_per_commit) > len(scopes_per_commit)  # some commit deletes in several scopes
