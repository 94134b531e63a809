"""The simulated Intune endpoints: paging, `$select`, permissions, tenants without Intune, `$batch`
rules, the public integration's per-device call, the install report (a stream), mutations, control API,
size."""

from __future__ import annotations

import dataclasses
import tracemalloc
import uuid
from types import SimpleNamespace
from typing import Any

import orjson
import pytest

from monitor.graph.client import BatchRequest, GraphClient, GraphError
from monitor.simulator import SimTenant, Simulator, conformance, intune_views, seed
from monitor.simulator.intune import IntuneTenant, iso_time
from monitor.simulator.intune_catalog import DEVICE_KINDS
from monitor.simulator.intune_seed import seed_intune
from monitor.simulator.intune_views import device_view, select_view, status_view
from tests.conftest import CLIENT_ID, TENANT_ID

from .conftest import ClientFactory

DEVICES = "/beta/deviceManagement/managedDevices"


async def all_pages(
    client: GraphClient, path: str, params: dict[str, str] | None = None
) -> list[list[dict[str, object]]]:
    return [page async for page in client.pages(TENANT_ID, path, params=params)]


async def test_lists_page_over_a_snapshot_with_select(make_client: ClientFactory, estate: IntuneTenant) -> None:
    client = make_client()
    pages = await all_pages(client, DEVICES, {"$select": "id,deviceName"})
    assert [len(p) for p in pages[:-1]] == [estate.page_size] * (len(pages) - 1)
    ids = [d["id"] for page in pages for d in page]
    assert ids == list(estate.devices) and all(set(d) == {"id", "deviceName"} for page in pages for d in page)
    first = await client.get(TENANT_ID, DEVICES, params={"$top": "5"})
    assert len(first.body["value"]) == 5 and "$skiptoken=" in first.body["@odata.nextLink"]


async def test_an_unknown_property_in_select_is_a_400(make_client: ClientFactory, estate: IntuneTenant) -> None:
    with pytest.raises(GraphError, match="Could not find a property named 'colour'") as caught:
        await make_client().get(TENANT_ID, DEVICES, params={"$select": "id,colour"})
    assert caught.value.status == 400


@pytest.mark.parametrize(
    ("removed", "path", "other"),
    [
        ("DeviceManagementApps.Read.All", "/v1.0/deviceAppManagement/mobileApps", DEVICES),
        (
            "DeviceManagementManagedDevices.Read.All",
            "/v1.0/deviceManagement/detectedApps",
            "/v1.0/deviceAppManagement/mobileApps",
        ),
        ("DeviceManagementConfiguration.Read.All", "/v1.0/deviceManagement/deviceConfigurations", DEVICES),
    ],
)
async def test_each_endpoint_needs_its_permission(
    make_client: ClientFactory, sim: Simulator, estate: IntuneTenant, removed: str, path: str, other: str
) -> None:
    sim.grant(TENANT_ID, CLIENT_ID, sim.grants[(TENANT_ID, CLIENT_ID)] - {removed})
    client = make_client()
    with pytest.raises(GraphError) as caught:
        await client.get(TENANT_ID, path)
    assert caught.value.status == 403 and caught.value.code == "Authorization_RequestDenied"
    assert (await client.get(TENANT_ID, other)).status == 200


async def test_a_tenant_without_intune_answers_not_applicable(
    make_client: ClientFactory, sim: Simulator, tenant: SimTenant
) -> None:
    seed_intune(sim, TENANT_ID, licensed=False)
    client = make_client()
    for path in ("/v1.0/deviceManagement", DEVICES, "/v1.0/deviceAppManagement/mobileApps"):
        with pytest.raises(GraphError, match="Request not applicable to target tenant") as caught:
            await client.get(TENANT_ID, path)
        assert caught.value.status == 400
    del sim.intune[TENANT_ID]  # a tenant the simulator never gave Intune at all: the same answer
    with pytest.raises(GraphError, match="Request not applicable"):
        await client.get(TENANT_ID, "/v1.0/deviceManagement")


async def test_batch_envelope_rules(make_client: ClientFactory, estate: IntuneTenant) -> None:
    client = make_client()
    too_many = {"requests": [{"id": str(i), "method": "GET", "url": "/deviceManagement"} for i in range(21)]}
    with pytest.raises(GraphError, match="exceeds the limit of 20"):
        await client.request(TENANT_ID, "POST", "/v1.0/$batch", json=too_many)
    twice = {"requests": [{"id": "A", "method": "GET", "url": "/deviceManagement"}] * 2}
    with pytest.raises(GraphError, match="unique"):
        await client.request(TENANT_ID, "POST", "/v1.0/$batch", json=twice)
    answers = await client.batch(
        TENANT_ID,
        [BatchRequest("GET", "https://graph.example/v1.0/deviceManagement"), BatchRequest("GET", "/deviceManagement")],
    )
    assert [a.status for a in answers] == [400, 200]
    assert answers[1].body["intuneAccountId"] == estate.account_id


async def test_the_calls_the_sweep_makes(make_client: ClientFactory, estate: IntuneTenant) -> None:
    client = make_client()
    device_id = next(iter(estate.devices))
    device = await client.get(TENANT_ID, f"{DEVICES}/{device_id}", params={"$expand": "detectedApps"})
    assert [a["id"] for a in device.body["detectedApps"]] == estate.device_apps(device_id)
    app_id = next(a for a in estate.mobile_apps if estate.mobile_apps[a]["displayName"] == "Contoso Expenses")
    body = {"filter": f"(ApplicationId eq '{app_id}')", "select": ["DeviceId", "AppInstallState"], "top": 3, "skip": 0}
    report = "/deviceManagement/reports/retrieveDeviceAppInstallationStatusReport"
    # A stream (whose bytes are the report's JSON); inside $batch it comes base64-encoded.
    direct = await client.request(TENANT_ID, "POST", f"/v1.0{report}", json=body)
    assert direct.headers["Content-Type"] == "application/octet-stream" and direct.body["TotalRowCount"] > 3
    first, second = await client.batch(
        TENANT_ID, [BatchRequest("POST", report, body), BatchRequest("POST", report, {**body, "skip": 3})]
    )
    assert first.headers["Content-Type"] == "application/octet-stream" and isinstance(first.content, str)
    page = first.stream_json()
    columns = ["DeviceId", "AppInstallState", "AppInstallState_loc"]  # the localized column comes along
    assert [c["Column"] for c in page["Schema"]] == columns
    rows = page["Values"]
    assert len(rows) == 3 and page["TotalRowCount"] > 3
    assert not {r[0] for r in rows} & {r[0] for r in second.stream_json()["Values"]}
    filtered = await client.get(
        TENANT_ID, "/beta/deviceAppManagement/mobileApps", params={"$filter": "isAssigned eq true"}
    )
    assigned = [a for a in estate.mobile_apps.values() if a["isAssigned"] or "Lob" in a["@odata.type"]]
    assert len(filtered.body["value"]) == len(assigned) < len(estate.mobile_apps)


async def test_graph_metadata_decides_what_a_version_accepts(make_client: ClientFactory, estate: IntuneTenant) -> None:
    """isAssigned is a beta property: v1.0 refuses it in a $filter and leaves it out of its answers."""
    client = make_client()
    with pytest.raises(GraphError, match="Could not find a property named 'isAssigned'") as refused:
        await client.get(TENANT_ID, "/v1.0/deviceAppManagement/mobileApps", params={"$filter": "isAssigned eq true"})
    assert refused.value.status == 400 and refused.value.code == "BadRequest"
    v1 = await client.get(TENANT_ID, "/v1.0/deviceAppManagement/mobileApps")
    beta = await client.get(TENANT_ID, "/beta/deviceAppManagement/mobileApps")
    assert all("isAssigned" not in app for app in v1.body["value"])
    assert all("isAssigned" in app for app in beta.body["value"])
    win32 = next(a for a in v1.body["value"] if a["@odata.type"] == "#microsoft.graph.win32LobApp")
    assert "displayVersion" not in win32  # beta-only too
    with pytest.raises(GraphError, match="Resource not found for the segment 'getDeviceInstallStatusReport'"):
        await client.request(TENANT_ID, "POST", "/beta/deviceManagement/reports/getDeviceInstallStatusReport", json={})


async def test_mutations_show_in_the_lists(make_client: ClientFactory, estate: IntuneTenant) -> None:
    client = make_client()
    device_id = next(iter(estate.devices))
    app = estate.device_apps(device_id)[0]
    count = estate.device_count(app)
    estate.uninstall_detected(device_id, app)
    assert estate.device_count(app) == count - 1
    path = f"/v1.0/deviceManagement/detectedApps/{app}/managedDevices"
    listed = {d["id"] for page in await all_pages(client, path, {"$select": "id"}) for d in page}
    assert device_id not in listed and len(listed) == count - 1
    estate.install_detected(device_id, app)
    estate.rename_device(device_id, "RENAMED-1")
    estate.retire_device(next(d for d in estate.devices if d != device_id))
    devices = {d["id"]: d for page in await all_pages(client, DEVICES, {"$select": "id,deviceName"}) for d in page}
    assert devices[device_id]["deviceName"] == "RENAMED-1" and len(devices) == len(estate.devices)
    with pytest.raises(KeyError):
        estate.uninstall_detected(device_id, "not-an-app")


async def test_a_device_listed_again_shows_what_changed_since(
    make_client: ClientFactory, tenant: SimTenant, estate: IntuneTenant
) -> None:
    """A device keeps only values its index, kind and id decide (intune_views._fixed): a rename, a
    check-in, a compliance flip and its owner's new name all show in the next listing, and its status
    lists show the new name, time and status."""
    client = make_client()
    select = {"$select": "id,deviceName,lastSyncDateTime,complianceState,userDisplayName,serialNumber,wiFiMacAddress"}
    before = {str(d["id"]): d for page in await all_pages(client, DEVICES, select) for d in page}
    device_id = next(
        d
        for d, device in estate.devices.items()
        if device.user_id in tenant.users and estate.compliance_state(device) == "compliant"
    )
    device = estate.devices[device_id]
    policy = next(p for p in estate.compliance_policies if estate.policy_platform[p] == device.spec.platform)
    statuses = f"/v1.0/deviceManagement/deviceCompliancePolicies/{policy}/deviceStatuses"
    status_select = {"$select": "id,deviceDisplayName,status,lastReportedDateTime,userName"}
    status_before = {str(s["id"]): s for page in await all_pages(client, statuses, status_select) for s in page}
    estate.rename_device(device_id, "RENAMED-2")
    estate.set_status(policy, device_id, "error")
    estate.check_in(device_id)
    assert device.user_id is not None
    tenant.update_user(device.user_id, displayName="Adele Renamed")
    after = {str(d["id"]): d for page in await all_pages(client, DEVICES, select) for d in page}
    changed = {name for name, value in after[device_id].items() if value != before[device_id][name]}
    assert changed == {"deviceName", "lastSyncDateTime", "complianceState", "userDisplayName"}
    assert after[device_id]["deviceName"] == "RENAMED-2" and after[device_id]["userDisplayName"] == "Adele Renamed"
    assert after[device_id]["complianceState"] == "noncompliant"
    assert all(after[d] == before[d] for d in before if d != device_id and estate.devices[d].user_id != device.user_id)
    status_after = {str(s["id"]): s for page in await all_pages(client, statuses, status_select) for s in page}
    [status_id] = [s for s in status_after if s.endswith(device_id)]
    changed = {name for name, value in status_after[status_id].items() if value != status_before[status_id][name]}
    assert changed == {"deviceDisplayName", "status", "lastReportedDateTime", "userName"}


def test_a_device_derives_what_it_keeps_once_and_again_when_its_kind_or_enrolment_changes(
    monkeypatch: pytest.MonkeyPatch, estate: IntuneTenant
) -> None:
    """The Entra device id (a uuid5), serial number, MAC addresses and enrolment time are derived on a
    device's first full view only; a device whose kind or enrolment time a test changes shows what a
    device of that kind and enrolment time shows."""
    derived: list[str] = []
    formatted: list[float] = []
    uuid5 = uuid.uuid5

    def counting(namespace: uuid.UUID, name: str) -> uuid.UUID:
        derived.append(name)
        return uuid5(namespace, name)

    def formatting(timestamp: float) -> str:
        formatted.append(timestamp)
        return iso_time(timestamp)

    monkeypatch.setattr(uuid, "uuid5", counting)
    monkeypatch.setattr(intune_views, "iso_time", formatting)
    first = [device_view(estate, device) for device in estate.devices.values()]
    assert sorted(derived) == sorted(estate.devices)
    assert sorted(formatted) == sorted(device.enrolled for device in estate.devices.values())
    assert [device_view(estate, device) for device in estate.devices.values()] == first
    assert len(derived) == len(formatted) == len(estate.devices)
    device = next(d for d in estate.devices.values() if DEVICE_KINDS[d.kind].ethernet)
    device.kind = next(n for n, kind in enumerate(DEVICE_KINDS) if not kind.ethernet and kind.phone)
    device.enrolled -= 86400
    fresh = dataclasses.replace(device, fixed=None)
    assert device_view(estate, device) == device_view(estate, fresh)
    assert device_view(estate, device)["ethernetMacAddress"] is None and device_view(estate, device)["imei"]
    assert device_view(estate, device)["enrolledDateTime"] == iso_time(device.enrolled)


def test_a_selected_view_is_the_whole_view_cut_to_the_selection(estate: IntuneTenant) -> None:
    """Device and status views compute only the selected properties; what they answer is the whole
    view cut by `select_view`, an unknown name as null."""
    policy = next(iter(estate.compliance_policies))
    selections = [("id",), ("deviceName", "model", "id"), ("status", "lastReportedDateTime", "shoeSize")]
    selections += [("userName", "deviceModel", "userPrincipalName", "deviceType", "complianceState")]
    for device in estate.devices.values():
        status = estate.status(policy, device)
        for select in selections:
            assert device_view(estate, device, select) == select_view(device_view(estate, device), select)
            whole = status_view(estate, policy, device, status)
            assert status_view(estate, policy, device, status, select) == select_view(whole, select)


async def test_an_intune_answer_is_conformed_without_parsing_it_again(
    monkeypatch: pytest.MonkeyPatch, make_client: ClientFactory, estate: IntuneTenant
) -> None:
    """Conformance reads the Intune handler's answer where it stands (request_keys.ANSWER): a beta page it
    need not cut is not parsed again; a v1.0 page that loses beta-only properties still is, and is cut."""
    parsed: list[bytes] = []

    def loads(raw: bytes) -> Any:
        parsed.append(raw)
        return orjson.loads(raw)

    monkeypatch.setattr(conformance, "orjson", SimpleNamespace(loads=loads, JSONDecodeError=orjson.JSONDecodeError))
    client = make_client()
    beta = await all_pages(client, DEVICES)
    assert parsed == [] and all("deviceType" in d for page in beta for d in page)
    v1 = await all_pages(client, "/v1.0/deviceManagement/managedDevices")
    assert len(parsed) == len(v1) > 1 and not any("deviceType" in d for page in v1 for d in page)


async def test_control_api_churns_and_sets_limits(make_client: ClientFactory, estate: IntuneTenant) -> None:
    client = make_client()
    before = estate.version
    done = await client.request(TENANT_ID, "POST", f"/_sim/tenants/{TENANT_ID}/intune/churn", json={"fraction": 0.2})
    assert sum(done.body.values()) >= 1 and estate.version > before
    churned = await client.request(
        TENANT_ID, "POST", f"/_sim/tenants/{TENANT_ID}/intune/churn", json={"fraction": 0.2, "devices": True}
    )
    by_kind = churned.body["devices"]
    assert {kind: len(ids) for kind, ids in by_kind.items()} == churned.body["done"]
    assert all(d not in estate.devices for d in by_kind.get("retired", []))
    assert set(by_kind.get("renamed", [])) <= set(estate.devices)
    updated = await client.request(
        TENANT_ID, "PATCH", f"/_sim/tenants/{TENANT_ID}/intune", json={"limits": {"devices": 7}}
    )
    assert estate.limits == {"devices": 7} and updated.body["devices"] == len(estate.devices)


def test_a_large_estate_is_compact(sim: Simulator, tenant: SimTenant) -> None:
    seed(tenant, users=2000, groups=0, memberships=0)
    tracemalloc.start()
    try:
        intune = seed_intune(sim, TENANT_ID, devices=20_000, detected_titles=300, apps_per_profile=10)
        used, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(intune.devices) == 20_000
    assert used / 20_000 < 1024  # bytes per device: 100,000 devices stay under 100 MB
    kinds = {d.spec.device_type for d in intune.devices.values()}
    assert {"windowsRT", "iPhone", "macMDM", "cloudPC", "linux", "winEmbedded", "androidEnterprise"} <= kinds
