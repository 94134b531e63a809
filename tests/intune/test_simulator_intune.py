"""The simulated Intune endpoints: paging, `$select`, permissions, tenants without Intune, `$batch`
rules, the public integration's per-device call, the install report (a stream), mutations, control API,
size."""

from __future__ import annotations

import tracemalloc

import pytest

from monitor.graph.client import BatchRequest, GraphClient, GraphError
from monitor.simulator import SimTenant, Simulator, seed
from monitor.simulator.intune import IntuneTenant
from monitor.simulator.intune_seed import seed_intune
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
