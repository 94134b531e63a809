"""Policies, statuses, findings, managed and detected applications (pure mapping, table-driven)."""

from __future__ import annotations

from typing import Any

import pytest

from monitor.model.intune import APPLICATION_FAMILY, DEVICE_FAMILY, FINDING_FAMILY, POLICY_FAMILY
from monitor.model.intune_apps import (
    DetectedAppCatalog,
    ReportShapeError,
    app_version,
    detected_key,
    error_code,
    map_install_row,
    map_installed,
    map_managed_app,
    report_rows,
    version_order,
)
from monitor.model.intune_policies import PolicyRef, finding_kind, map_policy, map_status, policy_ref
from monitor.model.registry import end_placements
from monitor.model.types import Placement
from tests.model.j1_schema import check_entity, check_relationship

from . import data as d

AGENT = f"intune-host-agent:{d.DEVICE_ID}"
COMPLIANCE = PolicyRef("compliance", d.POLICY_ID, "iOS compliance")
CONFIGURATION = PolicyRef("configuration", d.CONFIG_ID, "Windows security baseline")


def test_compliance_policy_entity() -> None:
    upsert = map_policy("compliance", d.COMPLIANCE_POLICY)
    assert upsert.placement == Placement("entity", POLICY_FAMILY, d.POLICY_ID)
    assert upsert.obj == {
        "_key": d.POLICY_ID,
        "_type": "intune_compliance_policy",
        "_class": ["Configuration", "ControlPolicy"],
        "id": d.POLICY_ID,
        "name": "iOS compliance",
        "displayName": "iOS compliance",
        "description": "iOS compliance",  # the display name when the description is empty
        "version": 3,
        "function": "endpoint-compliance",
        "category": "compliance",
        "createdOn": 1682928000000,
        "updatedOn": 1704873600000,
        "policyType": "iosCompliancePolicy",
    }
    assert check_entity(upsert.obj) == []


def test_device_configuration_entity() -> None:
    obj = map_policy("configuration", d.CONFIGURATION).obj
    assert (obj["_type"], obj["function"], obj["category"], obj["configurationType"]) == (
        "intune_device_configuration",
        "endpoint-configuration",
        "config",
        "windows10GeneralConfiguration",
    )
    assert obj["description"] == "Baseline for all Windows devices"
    assert policy_ref("configuration", d.CONFIGURATION) == CONFIGURATION
    assert check_entity(obj) == []


# status -> (ASSIGNED complianceStatus/compliant or None, finding severity/numeric or None)
STATUS_CASES: list[tuple[str, tuple[str, bool | None] | None, tuple[str, int] | None]] = [
    ("compliant", ("compliant", True), None),
    ("remediated", ("remediated", True), None),
    ("nonCompliant", ("nonCompliant", False), ("high", 6)),
    ("error", ("error", False), ("high", 6)),
    ("conflict", ("conflict", False), ("high", 6)),
    ("unknown", ("unknown", None), ("medium", 4)),
    ("notApplicable", None, None),
    ("notAssigned", None, None),
]


@pytest.mark.parametrize(("state", "assigned", "finding"), STATUS_CASES)
def test_compliance_status(
    state: str, assigned: tuple[str, bool | None] | None, finding: tuple[str, int] | None
) -> None:
    status = d.status(d.POLICY_ID, state)
    upserts = {u.key: u for u in map_status(COMPLIANCE, status, "smartphone")}
    assigned_key = f"{AGENT}|assigned|{d.POLICY_ID}"
    if assigned is None:
        assert assigned_key not in upserts
    else:
        relationship = upserts.pop(assigned_key)
        assert relationship.placement == Placement("relationship", DEVICE_FAMILY, d.DEVICE_ID)
        assert relationship.obj["_type"] == "intune_host_agent_assigned_compliance_policy"
        assert (relationship.obj["complianceStatus"], relationship.obj.get("compliant")) == assigned
        assert check_relationship(relationship.obj) == []
    if finding is None:
        assert upserts == {}
        return
    finding_key = status["id"]
    entity = upserts.pop(finding_key)
    assert entity.placement == Placement("entity", FINDING_FAMILY, finding_key)
    assert entity.obj == {
        "_key": finding_key,
        "_type": "intune_noncompliance_finding",
        "_class": ["Finding"],
        "id": finding_key,
        "name": "Latest finding from iOS compliance",
        "displayName": "Latest finding from iOS compliance",
        "assessment": "iOS compliance",
        "category": "endpoint",
        "status": state,
        "severity": finding[0],
        "numericSeverity": finding[1],
        "open": True,
        "lastProcessedOn": 1709294400000,
        "lastTestedOn": 1709294400000,
        "lastUpdatedOn": 1709294400000,
    }
    assert check_entity(entity.obj) == []
    identified = upserts.pop(f"{d.POLICY_ID}|identified|{finding_key}")
    has = upserts.pop(f"{d.DEVICE_ID}|has|{finding_key}")
    assert identified.obj["_type"] == "intune_compliance_policy_identified_noncompliance_finding"
    assert has.obj["_type"] == "smartphone_has_intune_noncompliance_finding"
    for relationship in (identified, has):  # both live with the finding
        assert relationship.placement == Placement("relationship", FINDING_FAMILY, finding_key)
        assert check_relationship(relationship.obj) == []
    assert upserts == {}


def test_configuration_status_uses_the_public_integrations_custom_key() -> None:
    status = d.status(d.CONFIG_ID, "error")
    keys = [u.key for u in map_status(CONFIGURATION, status, "user_endpoint")]
    assert keys == [
        f"{status['id']}|{AGENT}|{d.CONFIG_ID}",
        status["id"],
        f"{d.CONFIG_ID}|identified|{status['id']}",
        f"{d.DEVICE_ID}|has|{status['id']}",
    ]
    assert finding_kind("intune_device_configuration_identified_noncompliance_finding") == "configuration"
    assert finding_kind("intune_compliance_policy_identified_noncompliance_finding") == "compliance"
    assert finding_kind("smartphone_has_intune_noncompliance_finding") is None


def test_a_status_of_an_unknown_device_gives_only_the_finding() -> None:
    status = d.status(d.POLICY_ID, "nonCompliant")
    types = [u.obj["_type"] for u in map_status(COMPLIANCE, status, None)]
    assert types == ["intune_noncompliance_finding", "intune_compliance_policy_identified_noncompliance_finding"]


def test_managed_application() -> None:
    upsert = map_managed_app(d.WIN32_APP)
    assert upsert.placement == Placement("entity", APPLICATION_FAMILY, d.APP_ID)
    assert upsert.obj == {
        "_key": d.APP_ID,
        "_type": "intune_managed_application",
        "_class": ["Application"],
        "id": d.APP_ID,
        "name": "contoso expenses",
        "displayName": "Contoso Expenses",
        "description": "Expense reports",
        "notes": ["Required for all staff"],
        "COTS": False,  # line-of-business
        "external": False,
        "mobile": False,
        "publisher": "Contoso IT",
        "owner": "Contoso IT",
        "isPublished": True,
        "createdOn": 1672531200000,
        "lastUpdatedOn": 1704067200000,
        "featured": False,
        "informationURL": "https://www.contoso.com/it/apps",
        "version": "3.2.1",
    }
    assert check_entity(upsert.obj) == []


@pytest.mark.parametrize(
    ("odata_type", "mobile", "cots"),
    [
        ("#microsoft.graph.iosStoreApp", True, True),
        ("#microsoft.graph.androidManagedStoreApp", True, True),
        ("#microsoft.graph.managedIOSLobApp", True, False),
        ("#microsoft.graph.webApp", True, True),  # the public integration's check never matched
        ("#microsoft.graph.win32LobApp", False, False),
        ("#microsoft.graph.officeSuiteApp", False, True),
    ],
)
def test_managed_application_kinds(odata_type: str, mobile: bool, cots: bool) -> None:
    obj = map_managed_app({**d.WIN32_APP, "@odata.type": odata_type}).obj
    assert (obj["mobile"], obj["COTS"], obj["external"]) == (mobile, cots, cots)


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"versionName": "4.2", "versionCode": "42"}, "4.2"),
        ({"versionCode": "42"}, "42"),
        ({"identityVersion": "1.4.0"}, "1.4.0"),
        ({"displayVersion": "3.2.1"}, "3.2.1"),
        ({"versionNumber": ""}, "unversioned"),
        ({}, "unversioned"),
    ],
)
def test_app_version(fields: dict[str, Any], expected: str) -> None:
    assert app_version(fields) == expected


def test_install_report_rows_become_assigned_relationships() -> None:
    rows = report_rows(d.REPORT)
    assert rows[0] == {
        "DeviceId": d.DEVICE_ID,
        "AppVersion": "3.2.1",
        "AppInstallState": 2,
        "AppInstallState_loc": "Failed",
        "AppInstallStateDetails": 0,
        "AppInstallStateDetails_loc": "",
        "HexErrorCode": "0x87D1041C",
    }
    upsert = map_install_row(d.WIN32_APP, rows[0], "user_endpoint")
    assert upsert is not None
    assert upsert.placement == Placement("relationship", DEVICE_FAMILY, d.DEVICE_ID)
    assert upsert.obj == {
        "_key": f"{d.DEVICE_ID}|{d.APP_ID}",
        "_type": "user_endpoint_assigned_intune_managed_application",
        "_class": "ASSIGNED",
        "_fromEntityKey": d.DEVICE_ID,
        "_toEntityKey": d.APP_ID,
        "displayName": "ASSIGNED",
        "installState": 2,
        "installStateDetail": 0,
        "errorCode": -2016345060,
        "hexErrorCode": "0x87D1041C",
        "installedVersion": "3.2.1",
    }
    assert check_relationship(upsert.obj) == []
    assert map_install_row(d.WIN32_APP, rows[1], "user_endpoint") is None  # no device
    assert map_install_row(d.WIN32_APP, rows[0], None) is None  # device unknown to the mirror


def test_install_states_are_kept_as_the_report_sends_them() -> None:
    """The reports' enum columns hold "either a raw string, or a set of numbers" (Intune's export docs)."""
    row = {"DeviceId": d.DEVICE_ID, "AppInstallState": "installed", "AppInstallStateDetails": "noAdditionalDetails"}
    upsert = map_install_row(d.WIN32_APP, row, "user_endpoint")
    assert upsert is not None
    assert upsert.obj["installState"] == "installed"
    assert upsert.obj["installStateDetail"] == "noAdditionalDetails"
    assert "errorCode" not in upsert.obj  # no HexErrorCode column
    assert [error_code(c) for c in ("0x0", "0x87D1041C", "0x7FFFFFFF", "nonsense", None)] == [
        0,
        -2016345060,
        2147483647,
        None,
        None,
    ]


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"Values": []},
        {"Schema": [], "Values": []},  # no DeviceId column
        {"Schema": [{"Column": "DeviceId"}], "Values": {"0": ["x"]}},
        {"Schema": [{"Column": "DeviceId"}, {"Column": "AppVersion"}], "Values": [["x"]]},  # short row
        {"Schema": [{"Column": "DeviceId"}, {"Name": "AppVersion"}], "Values": []},  # a column without a name
        {"Schema": "DeviceId", "Values": []},
    ],
)
def test_what_is_not_a_report_table_is_refused(body: dict[str, Any]) -> None:
    with pytest.raises(ReportShapeError):
        report_rows(body)


def test_an_empty_report_table_has_no_rows() -> None:
    assert report_rows({"Schema": [{"Column": "DeviceId"}], "Values": []}) == []


def test_detected_keys_fall_back_to_the_detection_id() -> None:
    assert detected_key({"id": "ABC", "displayName": "Google Chrome"}) == "IntuneDetected:google chrome"
    assert detected_key({"id": "ABC", "displayName": None}) == "IntuneDetected:abc"
    assert detected_key({"id": "ABC", "displayName": ""}) == "IntuneDetected:abc"


def test_installed_relationship() -> None:
    app = {"id": d.DETECTION_ID, "displayName": "Google Chrome", "version": None}
    upsert = map_installed(app, d.DEVICE_ID, "laptop")
    key = f"{d.DEVICE_ID}|installed|IntuneDetected:google chrome|{d.DETECTION_ID}"
    assert (upsert.key, upsert.obj["_type"], upsert.obj["version"], upsert.obj["detectionId"]) == (
        key,
        "laptop_installed_intune_detected_application",
        "unversioned",
        d.DETECTION_ID,
    )
    assert upsert.placement == Placement("relationship", DEVICE_FAMILY, d.DEVICE_ID)
    assert [p.family for p in end_placements(upsert.obj)] == [DEVICE_FAMILY, APPLICATION_FAMILY]
    assert check_relationship(upsert.obj) == []


@pytest.mark.parametrize(
    ("left", "right"),
    [("1.10", "1.9"), ("124.0.6367.91", "124.0.6367.60"), ("10", "9"), ("1.0", None)],
)
def test_version_order(left: str, right: str | None) -> None:
    assert version_order(left) > version_order(right)


DETECTIONS: list[dict[str, Any]] = [
    {"id": "a3", "displayName": "Google Chrome", "version": "123.0.6312.122", "sizeInByte": 3},
    {"id": "a1", "displayName": "google chrome", "version": "124.0.6367.91", "sizeInByte": 1},
    {"id": "a2", "displayName": "Google Chrome", "version": "124.0.6367.60", "sizeInByte": 2},
    {"id": "n1", "displayName": None, "version": "1.0", "sizeInByte": 9},
    {"id": "n2", "displayName": "", "version": "1.0", "sizeInByte": 9},
]


@pytest.mark.parametrize("order", [[0, 1, 2, 3, 4], [4, 3, 2, 1, 0], [2, 0, 4, 1, 3]])
def test_detected_catalog_is_one_entity_per_name_whatever_the_order(order: list[int]) -> None:
    catalog = DetectedAppCatalog()
    for index in order:
        catalog.add(DETECTIONS[index])
    entities = {u.key: u.obj for u in catalog.entities()}
    assert entities == {
        "IntuneDetected:google chrome": {
            "_key": "IntuneDetected:google chrome",
            "_type": "intune_detected_application",
            "_class": ["Application"],
            "name": "google chrome",
            "displayName": "google chrome",
            "version": "124.0.6367.91",  # the newest detection, not the first seen
            "sizeInByte": 1,
        },
        # Nameless detections no longer collapse into one `IntuneDetected:undefined` entity.
        "IntuneDetected:n1": {
            "_key": "IntuneDetected:n1",
            "_type": "intune_detected_application",
            "_class": ["Application"],
            "name": "n1",
            "displayName": "n1",
            "version": "1.0",
            "sizeInByte": 9,
        },
        "IntuneDetected:n2": {
            "_key": "IntuneDetected:n2",
            "_type": "intune_detected_application",
            "_class": ["Application"],
            "name": "n2",
            "displayName": "n2",
            "version": "1.0",
            "sizeInByte": 9,
        },
    }
    for entity in entities.values():
        assert check_entity(entity) == []
