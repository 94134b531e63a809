"""The incremental Intune pass (monitor.sources.intune_live) end to end: the simulated tenant over HTTPS,
the real redis-server. Changes show after the next incremental pass, before any sweep; deletions come
only from a complete sweep; the sweep afterwards agrees exactly with what Intune holds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from monitor.app import Runtime
from monitor.model.intune_policies import map_status, policy_ref
from monitor.records import ChangeRecord
from monitor.simulator import SimTenant, Simulator
from monitor.simulator.intune import IntuneTenant, SimDevice
from monitor.simulator.intune_views import status_view
from monitor.sources.intune_live import OVERLAP, SOURCE
from monitor.status import render_tenant, tenant_status
from monitor.store import iso_ms
from monitor.sync import SourceFailed
from tests.conftest import TENANT_ID

from .helpers import expected_intune
from .test_sweep import first_sweep, mirror, sync


def pick(estate: IntuneTenant, device_type: str = "windowsRT") -> SimDevice:
    return next(d for d in estate.devices.values() if d.spec.device_type == device_type)


async def live(runtime: Runtime) -> tuple[list[ChangeRecord], list[SourceFailed]]:
    return await sync(runtime, (SOURCE,))


def shown(sim: Simulator, estate: IntuneTenant) -> None:
    """Move the simulated clock past Intune's delay before audit events list."""
    sim.clock.advance(estate.audit_delay + 1)


async def test_a_renamed_device_shows_after_the_next_incremental_pass(
    runtime: Runtime, sim: Simulator, tenant: SimTenant, estate: IntuneTenant
) -> None:
    await first_sweep(runtime)
    device = pick(estate)
    estate.rename_device(device.id, "renamed-laptop")
    shown(sim, estate)
    records, failures = await live(runtime)
    assert failures == []
    expected = expected_intune(estate, set(tenant.users))
    mirrored = await mirror(runtime)
    device_entity = next(key for key in expected if key == ("entity", device.id))
    assert mirrored[device_entity] == expected[device_entity]
    assert mirrored[device_entity]["displayName"] == "renamed-laptop"
    assert {(r["op"], r["key"]) for r in records} >= {("upsert", device.id)}
    assert all(r["op"] != "delete" for r in records)
    # The sweep after it finds nothing left to say about the device, and the mirror is exact.
    after, failures = await sync(runtime)
    assert failures == [] and not [r for r in after if r["key"] == device.id]
    assert await mirror(runtime) == expected


async def test_a_policy_assignment_change_shows_after_the_next_incremental_pass(
    runtime: Runtime, sim: Simulator, tenant: SimTenant, estate: IntuneTenant
) -> None:
    policy_id = next(iter(estate.compliance_policies))
    targets = list(estate.by_platform[estate.policy_platform[policy_id]])[:3]
    for device_id in targets:  # devices the policy does not target yet
        estate.status_overrides[(policy_id, device_id)] = "notAssigned"
    await first_sweep(runtime)
    before = await mirror(runtime)
    estate.assign_policy(policy_id, targets, assigned=True)
    shown(sim, estate)
    records, failures = await live(runtime)
    assert failures == []
    ref = policy_ref("compliance", estate.compliance_policies[policy_id])
    device_types = {key: obj["_type"] for (kind, key), obj in before.items() if kind == "entity"}
    wanted = {}
    for device_id in targets:
        view = status_view(estate, policy_id, estate.devices[device_id], "unknown")
        for upsert in map_status(ref, view, device_types.get(device_id)):
            wanted[(upsert.placement.kind, upsert.key)] = upsert.obj
    assert wanted
    mirrored = await mirror(runtime)
    assert {key: mirrored.get(key) for key in wanted} == wanted
    assert {r["key"] for r in records} >= {
        key for _, key in wanted if (_, key) not in before or before[(_, key)] != wanted[(_, key)]
    }
    assert all(r["op"] != "delete" for r in records)
    _, failures = await sync(runtime)
    assert failures == [] and await mirror(runtime) == expected_intune(estate, set(tenant.users))


async def test_deletions_come_only_from_a_complete_sweep(
    runtime: Runtime, sim: Simulator, tenant: SimTenant, estate: IntuneTenant
) -> None:
    await first_sweep(runtime)
    retired = pick(estate, "iPhone")
    estate.retire_device(retired.id)
    renamed = pick(estate)
    estate.rename_device(renamed.id, "still-here")
    shown(sim, estate)
    records, failures = await live(runtime)
    assert failures == [] and records and all(r["op"] != "delete" for r in records)
    assert ("entity", retired.id) in await mirror(runtime)
    records, failures = await sync(runtime)
    assert failures == [] and ("delete", retired.id) in {(r["op"], r["key"]) for r in records}
    assert await mirror(runtime) == expected_intune(estate, set(tenant.users))


async def test_a_change_made_back_before_the_sweep_is_still_found_by_the_sweep(
    runtime: Runtime, sim: Simulator, tenant: SimTenant, estate: IntuneTenant
) -> None:
    """The incremental pass leaves the unit's record stale on purpose: a record it refreshed would make
    the sweep skip a device changed back to what the sweep last read."""
    await first_sweep(runtime)
    device = pick(estate)
    old_name, old_sync = device.name, device.last_sync
    estate.rename_device(device.id, "briefly")
    shown(sim, estate)
    await live(runtime)
    device.name, device.last_sync = old_name, old_sync  # as the last sweep read it
    _, failures = await sync(runtime)
    assert failures == [] and await mirror(runtime) == expected_intune(estate, set(tenant.users))


async def _live_with_audit_answering(runtime: Runtime, sim: Simulator, estate: IntuneTenant, status: int) -> None:
    """After a first sweep, a renamed device and one incremental pass whose audit read Graph answers with
    `status`: the device is still re-read and its change emitted."""
    await first_sweep(runtime)
    device = pick(estate)
    estate.rename_device(device.id, "seen-by-sync")
    sim.faults.inject("GET", r"^/v1\.0/deviceManagement/auditEvents", status, times=1)
    records, failures = await live(runtime)
    assert failures == [] and device.id in {r["key"] for r in records}


async def test_a_missing_permission_is_in_the_status_and_the_devices_still_run(
    runtime: Runtime, sim: Simulator, tenant: SimTenant, estate: IntuneTenant
) -> None:
    await _live_with_audit_answering(runtime, sim, estate, 403)
    status = await tenant_status(runtime, runtime.settings.tenants[0])
    entry = status["sources"][SOURCE]
    assert "audit: missing DeviceManagementApps.Read.All" in entry["partial"]
    assert status["permissions"]["DeviceManagementApps.Read.All"]["granted"] is False
    text = render_tenant(status)
    assert "intune_live" in text and "missing DeviceManagementApps.Read.All" in text and "re-read 1 device(s)" in text


async def test_a_refused_audit_filter_turns_the_audit_read_off_and_the_devices_still_run(
    runtime: Runtime, sim: Simulator, estate: IntuneTenant
) -> None:
    """One reading of the List auditEvents page, which documents no query options: Graph answers the
    activityDateTime filter with a 400 (docs/graph.md 9.1)."""
    await _live_with_audit_answering(runtime, sim, estate, 400)
    entry = (await tenant_status(runtime, runtime.settings.tenants[0]))["sources"][SOURCE]
    assert "audit: Graph refused the activityDateTime filter" in entry["partial"]


async def test_events_a_graph_that_ignores_the_filter_lists_from_before_the_mark_are_not_read(
    runtime: Runtime, sim: Simulator, estate: IntuneTenant
) -> None:
    """The other reading: Graph ignores the filter and lists every event; the pass counts and re-reads
    only the events after its mark less the overlap."""
    estate.audit_filter_honoured = False
    await first_sweep(runtime)
    estate.rename_device(pick(estate).id, "renamed-before-the-mark")
    shown(sim, estate)
    store = runtime.store(TENANT_ID)
    # The last pass ran an hour after the rename (its mark), so the rename is older than this one reads.
    mark = iso_ms(datetime.now(UTC) + timedelta(seconds=OVERLAP + 3600))
    await store.redis.hset(store.keys.intune_incremental_mark, mapping={"audit": mark})
    _, failures = await live(runtime)
    assert failures == []
    assert "0 policy(ies), 0 audit event(s)" in (await store.status(SOURCE))["reread"]


async def test_the_marks_advance_only_after_their_commits(
    runtime: Runtime, sim: Simulator, tenant: SimTenant, estate: IntuneTenant
) -> None:
    await first_sweep(runtime)
    store = runtime.store(TENANT_ID)
    key = store.keys.intune_incremental_mark
    await live(runtime)
    marks = await store.redis.hgetall(key)
    assert set(marks) == {b"devices", b"audit"}
    for device_id in list(estate.devices)[:30]:
        estate.check_in(device_id)  # pages of 25: a second page to fail on
    sim.faults.inject("GET", r"managedDevices\?.*skiptoken", 500, times=100)
    _, failures = await live(runtime)
    assert [f.source for f in failures] == [SOURCE]
    after = await store.redis.hgetall(key)
    assert after[b"devices"] == marks[b"devices"]  # the failed read keeps its mark: read again next time
    assert after[b"audit"] != marks[b"audit"]
    status = await store.status(SOURCE)
    assert status["error"] and "devices: failed" in status["partial"]


async def test_the_pass_is_skipped_while_a_sweep_holds_the_lease(runtime: Runtime, estate: IntuneTenant) -> None:
    await first_sweep(runtime)
    store = runtime.store(TENANT_ID)
    await store.redis.set(store.keys.lease("intune"), "a sweep", px=5000)
    records, failures = await live(runtime)
    assert records == [] and failures == []
    assert "the intune sweep was running" in (await store.status(SOURCE))["busy"]
    assert not await store.redis.exists(store.keys.intune_incremental_mark)
