"""Graph's published metadata in the simulator: what a request may name, what an answer may carry.

The checks read `monitor/simulator/graph_metadata.json`; the facts asserted here are Microsoft's (v1.0
CSDL, beta SDK), e.g. that `managedDevice.deviceType` and `mobileApp.isAssigned` are beta-only.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import orjson
import pytest

from monitor.simulator.graph_app import Simulator
from monitor.simulator.graph_metadata import (
    Target,
    check_request,
    conform_response,
    conforms,
    filter_paths,
    header,
    metadata,
)
from monitor.simulator.tenant import SimTenant
from tests.simulator.support import GraphClient


def messages(method: str, path: str, query: dict[str, str] | None = None, body: Any = None) -> list[str]:
    return [problem.message for problem in check_request(method, path, query or {}, body)]


def test_the_artifact_says_where_it_comes_from() -> None:
    top = header()
    assert "msgraph-metadata" in top["v1.0"] and "sha256" in top["v1.0"]
    assert "msgraph_beta_sdk-1.66.0" in top["beta"] and "sha256" in top["beta"]
    assert top["generated"][:2] == "20" and "deviceManagement" in top["roots"]


@pytest.mark.parametrize(
    ("method", "path", "query", "body"),
    [
        ("GET", "/v1.0/users/delta", {"$select": "id,displayName,accountEnabled"}, None),
        ("GET", "/v1.0/Users/microsoft.graph.delta()", {"$select": "ID,DisplayName"}, None),  # any case
        ("GET", "/v1.0/groups/g1/members/microsoft.graph.user", {"$select": "id,userPrincipalName"}, None),
        ("GET", "/v1.0/groups/delta", {"$select": "id,members", "$filter": "id eq 'a' or id eq 'b'"}, None),
        ("POST", "/v1.0/directoryObjects/getByIds", {}, {"ids": ["a"], "types": ["user"]}),
        # derived types' properties on directoryObjects, as Graph's description of group.members shows
        ("GET", "/v1.0/groups/g1/members", {"$select": "id,displayName,userPrincipalName,appId"}, None),
        ("POST", "/v1.0/directoryObjects/getByIds", {"$select": "id,displayName"}, {"ids": ["a"]}),
        ("GET", "/v1.0/organization/o1", {"$select": "verifiedDomains/name"}, None),
        ("GET", "/beta/deviceManagement/managedDevices/d1", {"$expand": "detectedApps($select=id)"}, None),
        (
            "GET",
            "/beta/deviceAppManagement/mobileApps",
            {"$select": "id,microsoft.graph.win32LobApp/displayVersion"},
            None,
        ),
        ("GET", "/beta/deviceAppManagement/mobileApps", {"$filter": "isAssigned eq true and isof('x.y')"}, None),
        (
            "GET",
            "/v1.0/users",
            {"$filter": "assignedLicenses/any(l: l/skuId eq 6fd2c87f-b296-42f0-b197-1e91e994b900)"},
            None,
        ),
        ("GET", "/v1.0/deviceManagement/managedDevices('d1')", {"$select": "id"}, None),
        ("PATCH", "/v1.0/subscriptions/s1", {}, {"expirationDateTime": "2026-01-01T00:00:00Z"}),
        ("GET", "/v1.0/users/$count", {}, None),
    ],
)
def test_what_the_metadata_has_passes(method: str, path: str, query: dict[str, str], body: Any) -> None:
    assert messages(method, path, query, body) == []


@pytest.mark.parametrize(
    ("method", "path", "query", "body", "expected"),
    [
        (
            "GET",
            "/v1.0/deviceManagement/managedDevices",
            {"$select": "id,deviceType"},
            None,
            "Could not find a property named 'deviceType' on type 'microsoft.graph.managedDevice'.",
        ),
        (
            "GET",
            "/v1.0/deviceAppManagement/mobileApps",
            {"$filter": "isAssigned eq true"},
            None,
            "Could not find a property named 'isAssigned' on type 'microsoft.graph.mobileApp'.",
        ),
        (
            "GET",
            "/beta/deviceAppManagement/mobileApps",
            {"$select": "displayVersion"},  # a derived type's property needs its cast
            None,
            "Could not find a property named 'displayVersion' on type 'microsoft.graph.mobileApp'.",
        ),
        (
            "GET",
            "/v1.0/deviceManagement/managedDevices/d1",
            {"$expand": "detectedApps"},
            None,
            "Could not find a property named 'detectedApps' on type 'microsoft.graph.managedDevice'.",
        ),
        (
            "GET",
            "/beta/deviceManagement/managedDevices/d1",
            {"$expand": "deviceName"},  # not a navigation property
            None,
            "Could not find a property named 'deviceName' on type 'microsoft.graph.managedDevice'.",
        ),
        (
            "POST",
            "/beta/deviceManagement/reports/getDeviceInstallStatusReport",
            {},
            {},
            "Resource not found for the segment 'getDeviceInstallStatusReport'.",
        ),
        (
            "POST",
            "/v1.0/deviceManagement/reports/retrieveDeviceAppInstallationStatusReport",
            {},
            {"filter": "x", "rows": 5},
            "The parameter 'rows' in the request payload is not a valid parameter for the operation "
            "'retrieveDeviceAppInstallationStatusReport'.",
        ),
        (
            "POST",
            "/v1.0/subscriptions",
            {},
            {"resource": "/users", "vapidPublicKey": "k"},
            "The property 'vapidPublicKey' does not exist on type 'microsoft.graph.subscription'. Make sure to only "
            "use property names that are defined by the type or mark the type as open type.",
        ),
        ("GET", "/v1.0/groups/g1/owners2", {}, None, "Resource not found for the segment 'owners2'."),
        (
            "GET",
            "/v1.0/groups/g1/members",
            {"$select": "id,shoeSize"},
            None,
            "Could not find a property named 'shoeSize' on type 'microsoft.graph.directoryObject'.",
        ),
        ("GET", "/v1.0/devicemanagment", {}, None, "Resource not found for the segment 'devicemanagment'."),
        (
            "GET",
            "/v1.0/groups/g1/members/microsoft.graph.deviceManagement",  # not a directoryObject
            {},
            None,
            "Resource not found for the segment 'microsoft.graph.deviceManagement'.",
        ),
    ],
)
def test_what_the_metadata_lacks_is_named_as_graph_refuses_it(
    method: str, path: str, query: dict[str, str], body: Any, expected: str
) -> None:
    assert messages(method, path, query, body) == [expected]


def test_a_path_the_artifact_does_not_cover_says_to_regenerate_it() -> None:
    [problem] = check_request("GET", "/v1.0/deviceManagement/roleDefinitions", {})
    assert problem.kind == "uncovered" and "scripts/graph_metadata.py" in problem.message


def test_filter_paths_leave_out_literals_keywords_functions_and_lambda_variables() -> None:
    found = list(
        filter_paths(
            "startswith(displayName,'a b') and (id eq 'it''s' or createdDateTime ge 2024-01-01T00:00:00Z) "
            "and assignedLicenses/any(x:x/skuId eq 00000000-0000-0000-0000-000000000000) and not accountEnabled"
        )
    )
    assert found == [["displayName"], ["id"], ["createdDateTime"], ["assignedLicenses"], ["accountEnabled"]]


def test_a_v1_answer_loses_beta_only_properties_and_beta_only_types() -> None:
    app = {"@odata.type": "#microsoft.graph.win32LobApp", "id": "a", "displayName": "X", "isAssigned": True}
    store_app = {"@odata.type": "#microsoft.graph.winGetApp", "id": "b", "packageIdentifier": "9WZ", "notes": ""}
    body = {"value": [dict(app), dict(store_app)]}
    v1 = conform_response("v1.0", Target("microsoft.graph.mobileApp", collection=True), body)
    assert v1.changed and v1.invented == []
    assert v1.body["value"] == [
        {"@odata.type": "#microsoft.graph.win32LobApp", "id": "a", "displayName": "X"},
        {"@odata.type": "#microsoft.graph.mobileApp", "id": "b", "notes": ""},  # v1.0 has no winGetApp
    ]
    beta = conform_response("beta", Target("microsoft.graph.mobileApp", collection=True), {"value": [dict(app)]})
    assert not beta.changed and beta.body["value"] == [app]


def test_a_property_no_version_has_is_an_invention() -> None:
    device = {"id": "d", "deviceName": "PC", "hardwareInformation": {"serialNumber": "1", "shoeSize": 44}}
    result = conform_response("beta", Target("microsoft.graph.managedDevice"), device)
    assert result.invented == ["microsoft.graph.hardwareInformation.shoeSize (in neither v1.0 nor beta)"]
    assert result.body == {"id": "d", "deviceName": "PC", "hardwareInformation": {"serialNumber": "1"}}


def test_every_object_of_a_shape_is_conformed_however_often_the_shape_comes() -> None:
    """Conforming remembers per shape (type, @odata.type, keys) what an object needs: a clean shape still
    has its nested objects walked, and every object that loses a property loses it and is reported."""
    clean = {"id": "a", "deviceName": "PC", "hardwareInformation": {"serialNumber": "1"}}
    nested_invention = {"id": "b", "deviceName": "PC", "hardwareInformation": {"serialNumber": "2", "shoeSize": 4}}
    invention = {"id": "c", "deviceName": "PC", "shoeSize": 44}
    body = {"value": [copy.deepcopy(item) for item in [clean, nested_invention, invention] * 2]}
    result = conform_response("beta", Target("microsoft.graph.managedDevice", collection=True), body)
    assert result.changed
    reported = [
        "microsoft.graph.hardwareInformation.shoeSize (in neither v1.0 nor beta)",
        "microsoft.graph.managedDevice.shoeSize (in neither v1.0 nor beta)",
    ]
    assert result.invented == reported * 2
    cut = [clean, {**nested_invention, "hardwareInformation": {"serialNumber": "2"}}, {"id": "c", "deviceName": "PC"}]
    assert result.body["value"] == cut * 2
    for device_id in ("d", "e"):  # a beta-only property, dropped from each v1.0 object and not reported
        v1 = conform_response("v1.0", Target("microsoft.graph.managedDevice"), {"id": device_id, "deviceType": "x"})
        assert v1.body == {"id": device_id} and v1.changed and not v1.invented


@dataclass
class Hardware:
    """Not JSON until orjson writes it (as an object)."""

    serialNumber: str
    shoeSize: int


WINDOWS = {"@odata.type": "#microsoft.graph.windowsManagedDevice", "id": "w", "deviceName": "PC"}


@pytest.mark.parametrize(
    ("version", "body"),
    [
        ("beta", {"value": [{"id": "a", "hardwareInformation": {"serialNumber": "1"}, "usersLoggedOn": []}]}),
        ("beta", {"value": [{"id": "a", "usersLoggedOn": ({"userId": "u", "lastLogOnDateTime": None},)}]}),
        ("beta", {"value": [{"id": "a", "usersLoggedOn": ({"userId": "u", "shoeSize": 4},)}]}),
        ("beta", {"value": [{"id": "a", "hardwareInformation": Hardware("1", 44)}]}),
        ("beta", {"value": ({"id": "a", "shoeSize": 44},)}),
        ("beta", {"value": [WINDOWS, {"@odata.type": "#microsoft.graph.user", "id": "u"}]}),
        ("v1.0", {"value": [{"id": "a", "deviceName": "PC"}, {"id": "b", "deviceType": "iPhone"}]}),
        ("v1.0", {"value": [{"id": "a", "deviceName": "PC"}, {"id": "b", "hardwareInformation": None}]}),
        ("v1.0", {"value": [{"@odata.type": "#microsoft.graph.managedDevice", "id": "a"}, "x", 1, None]}),
        ("v1.0", {"value": []}),
    ],
)
def test_an_answer_conforms_as_it_stands_exactly_when_its_json_would_need_nothing(
    version: str, body: dict[str, Any]
) -> None:
    """`conforms` reads a handler's answer instead of parsing the JSON it became (conformance.py): it
    says the answer conforms only when conforming that JSON would change and report nothing."""
    target = Target("microsoft.graph.managedDevice", collection=True)
    parsed = conform_response(version, target, orjson.loads(orjson.dumps(body)))
    assert conforms(version, target, body) == (not parsed.changed and not parsed.invented)


def test_the_beta_only_facts_the_sweep_relies_on() -> None:
    v1, beta = metadata()["v1.0"], metadata()["beta"]
    for type_name, names in [
        (
            "microsoft.graph.managedDevice",
            ("deviceType", "hardwareInformation", "azureActiveDirectoryDeviceId", "usersLoggedOn"),
        ),
        ("microsoft.graph.mobileApp", ("isAssigned",)),
        ("microsoft.graph.win32LobApp", ("displayVersion",)),
    ]:
        for name in names:
            assert name.lower() not in v1.type(type_name).properties, (type_name, name)
            assert name.lower() in beta.type(type_name).properties, (type_name, name)


async def test_the_simulator_refuses_with_graphs_error_and_answers_only_what_the_type_has(
    graph: GraphClient, sim: Simulator, tenant: SimTenant
) -> None:
    status, body, _ = await graph.get("/v1.0/users?$select=id,shoeSize")
    assert status == 400
    assert body["error"]["code"] == "BadRequest"
    assert body["error"]["message"] == "Could not find a property named 'shoeSize' on type 'microsoft.graph.user'."
    assert set(body["error"]["innerError"]) == {"request-id", "date"}
    tenant.organization["shoeSize"] = 44  # a seed with an invented property
    tenant.organization["onPremisesSyncEnabled"] = False  # a real one
    [organization] = (await graph.get_ok("/v1.0/organization"))["value"]
    assert "shoeSize" not in organization and organization["onPremisesSyncEnabled"] is False
    assert sim.conformance.problems == [
        "/v1.0/organization: microsoft.graph.organization.shoeSize (in neither v1.0 nor beta)"
    ]
    sim.conformance.problems.clear()  # seen: the fixture would fail the test on it
