"""Managed-app install state from a call Graph has, and answers that are not what their call returns.

Install states come from v1.0 `retrieveDeviceAppInstallationStatusReport` (a stream, base64 inside
`$batch`), for the apps that are assigned (`isAssigned`, beta); an answer of the wrong kind fails its
pass, which then deletes nothing, and says so in the status and in `monitor_intune_passes_total`.
"""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest

from monitor.app import Runtime
from monitor.graph.client import INVALID_RESPONSE, BatchRequest, BatchResponse, GraphError
from monitor.keys import TenantKeys
from monitor.model.types import entity_placement
from monitor.simulator import SimTenant, Simulator
from monitor.simulator.intune import IntuneTenant
from monitor.sources.intune_passes import INSTALL_REPORT_URL
from monitor.status import render_tenant, tenant_status
from tests.conftest import TENANT_ID

from .helpers import expected_intune
from .test_sweep import deletes, first_sweep, mirror, pick, sync

REPORT = f"/v1.0{INSTALL_REPORT_URL}"


def app_named(estate: IntuneTenant, name: str) -> str:
    return next(a for a, app in estate.mobile_apps.items() if app["displayName"] == name)


async def test_install_states_come_from_the_v1_report_of_each_assigned_app(
    runtime: Runtime, sim: Simulator, estate: IntuneTenant
) -> None:
    await first_sweep(runtime)
    reported = {r.body["filter"].split("'")[1] for r in sim.requests.matching(f"^{REPORT}$", method="POST")}
    assigned = {a for a, app in estate.mobile_apps.items() if app["isAssigned"]}
    assert reported == assigned and assigned < set(estate.mobile_apps)  # isAssigned (beta) is read
    assert sim.count(r"getDeviceInstallStatusReport") == 0
    assert sim.count(r"^/beta/deviceAppManagement/mobileApps$", method="GET") >= 1
    win32 = app_named(estate, "Contoso Expenses")
    entity = await runtime.store(TENANT_ID).get(entity_placement("intune_application", win32), win32)
    assert entity is not None and entity["version"] == "3.2.1"  # win32LobApp.displayVersion (beta)
    status = await tenant_status(runtime, runtime.settings.tenants[0])
    assert "managed apps (isAssigned, win32LobApp.displayVersion)" in status["sources"]["intune"]["beta"]
    assert "reads Graph beta for managed devices (deviceType" in render_tenant(status)


def report_of(rows: list[list[Any]]) -> dict[str, Any]:
    return {"TotalRowCount": len(rows), "Schema": [{"Column": "DeviceId"}, {"Column": "AppVersion"}], "Values": rows}


def answer(content: Any) -> BatchResponse:
    request = BatchRequest("POST", INSTALL_REPORT_URL, {})
    return BatchResponse(request, 200, {"Content-Type": "application/octet-stream"}, content)


REPORT_BYTES = orjson.dumps(report_of([["d1", "1.0"]]))


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(base64.b64encode(REPORT_BYTES).decode(), id="base64"),
        pytest.param(base64.urlsafe_b64encode(REPORT_BYTES).decode().rstrip("="), id="base64url-unpadded"),
        pytest.param(REPORT_BYTES.decode(), id="json-text"),
        pytest.param(report_of([["d1", "1.0"]]), id="json-object"),
    ],
)
def test_every_reading_of_a_stream_in_batch_decodes(content: Any) -> None:
    assert answer(content).stream_json() == report_of([["d1", "1.0"]])


@pytest.mark.parametrize(
    "content",
    [
        pytest.param("not base64 at all!", id="not-base64"),
        pytest.param(base64.b64encode(b"<html>busy</html>").decode(), id="base64-of-html"),
        pytest.param(base64.b64encode(b"[1, 2]").decode(), id="base64-of-a-list"),
        pytest.param(["DeviceId"], id="a-list"),
        pytest.param(None, id="no-body"),
    ],
)
def test_a_stream_that_is_not_json_is_refused(content: Any) -> None:
    with pytest.raises(GraphError) as refused:
        answer(content).stream_json()
    assert refused.value.code == INVALID_RESPONSE


WRONG_BODIES = [
    pytest.param("not base64 at all!", id="not-json"),
    pytest.param(base64.b64encode(b"<html>busy</html>").decode(), id="base64-not-json"),
    pytest.param(base64.b64encode(b'{"value": []}').decode(), id="base64-wrong-shape"),
    pytest.param({"Schema": [{"Column": "DeviceId"}]}, id="json-without-values"),
    pytest.param([], id="a-list"),
]


async def passes_counted(runtime: Runtime, outcome: str) -> int:
    series = f'monitor_intune_passes_total{{intune_pass="apps",outcome="{outcome}"}}'
    return int(await runtime.redis.hget(TenantKeys(TENANT_ID).metrics, series) or 0)


@pytest.mark.parametrize("body", WRONG_BODIES)
async def test_a_report_that_is_not_a_report_deletes_nothing(
    runtime: Runtime, sim: Simulator, tenant: SimTenant, estate: IntuneTenant, body: Any
) -> None:
    await first_sweep(runtime)
    before = await mirror(runtime)
    app = app_named(estate, "Contoso Expenses")
    device = pick(estate, "windowsRT", lambda d: estate.install_state(app, d) is not None)
    estate.set_install_state(app, device.id, None)  # no longer targeted: a complete pass would delete it
    sim.faults.inject("POST", "retrieveDeviceAppInstallationStatusReport", 200, body=body, times=10_000)
    records, failures = await sync(runtime)
    assert [f.source for f in failures] == ["intune"] and "apps" in failures[0].reason
    assert deletes(records) == [] and await mirror(runtime) == before
    status = await tenant_status(runtime, runtime.settings.tenants[0])
    assert "apps: invalid response" in status["sources"]["intune"]["partial"]
    assert "skipped parts: apps: invalid response" in render_tenant(status)
    assert await passes_counted(runtime, "invalid_response") == 1
    # Once the answers are right again, the link goes, exactly.
    sim.faults.clear()
    records, failures = await sync(runtime)
    assert failures == [] and [r["key"] for r in deletes(records)] == [f"{device.id}|{app}"]
    assert await mirror(runtime) == expected_intune(estate, set(tenant.users))
    assert await passes_counted(runtime, "complete") == 2  # the first sweep and this one


async def test_a_list_page_without_a_value_deletes_nothing(
    runtime: Runtime, sim: Simulator, estate: IntuneTenant
) -> None:
    await first_sweep(runtime)
    before = await mirror(runtime)
    estate.retire_device(pick(estate, "iPhone").id)
    sim.faults.inject("GET", r"^/beta/deviceManagement/managedDevices\?", 200, body={"@odata.context": "x"})
    records, failures = await sync(runtime)
    assert [f.source for f in failures] == ["intune"] and "a list page without a value" in failures[0].reason
    assert deletes(records) == [] and await mirror(runtime) == before


async def test_a_batched_list_page_without_a_value_deletes_nothing(
    runtime: Runtime, sim: Simulator, estate: IntuneTenant
) -> None:
    await first_sweep(runtime)
    before = await mirror(runtime)
    policy = next(iter(estate.compliance_policies))
    device = next(d for d in estate.devices.values() if estate.status(policy, d) not in ("notApplicable",))
    estate.retire_device(device.id)
    sim.faults.inject("GET", r"deviceCompliancePolicies/.*/deviceStatuses", 200, body={"values": []}, times=10_000)
    records, failures = await sync(runtime)
    assert "compliance:" in failures[0].reason and "without a value list" in failures[0].reason
    assert not any(r["type"].endswith("assigned_compliance_policy") for r in deletes(records))
    after = await mirror(runtime)
    compliance_links = {k for (_, k), o in before.items() if o["_type"].endswith("assigned_compliance_policy")}
    assert compliance_links <= {k for (_, k) in after}
