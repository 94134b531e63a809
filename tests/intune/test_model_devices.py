"""Managed devices, host agents and user HAS/USES device (pure mapping, table-driven)."""

from __future__ import annotations

from typing import Any

import pytest

from monitor.model.intune import (
    DEVICE_FAMILY,
    account_enrichment,
    intune_ms,
    relationship_ends,
    select_device_type,
)
from monitor.model.intune_devices import (
    agent_entity,
    device_entity,
    host_names,
    map_device,
    normalize_mac,
    os_type,
)
from monitor.model.registry import end_placements
from monitor.model.types import Patch, Placement
from tests.model.j1_schema import check_entity, check_relationship

from . import data as d


@pytest.mark.parametrize(
    ("device_type", "model", "expected"),
    [
        ("iPhone", "iPhone 15", ("smartphone", True)),
        ("androidEnterprise", "Pixel 8", ("smartphone", True)),
        ("androidForWork", "SM-S911B", ("smartphone", True)),
        ("desktop", "OptiPlex", ("desktop", True)),
        ("mac", "iMac21,1", ("desktop", True)),
        ("linux", "ThinkPad", ("desktop", True)),
        ("winEmbedded", "t640", ("workstation", True)),
        ("winCE", "x", ("workstation", True)),
        ("macMDM", "MacBookPro18,3", ("laptop", True)),
        ("windows10x", "Surface Neo", ("laptop", True)),
        ("cloudPC", "Cloud PC Enterprise 2vCPU/8GB/128GB", ("server", True)),
        ("windowsRT", "Latitude 7440", ("user_endpoint", True)),
        ("windows", "Surface Pro 9", ("user_endpoint", True)),
        ("iPad", "iPad Air", ("user_endpoint", True)),
        ("holoLens", "HoloLens 2", ("user_endpoint", True)),
        ("somethingNew", "x", ("user_endpoint", True)),
        (None, "x", ("user_endpoint", True)),
        ("windows", "Virtual Machine", ("server", False)),
        ("windowsRT", "virtual machine", ("server", False)),
        # The fix (docs/jupiterone.md 6): no model is not a virtual machine, and not a server.
        ("windowsRT", None, ("user_endpoint", True)),
        ("iPhone", "", ("smartphone", True)),
    ],
)
def test_select_device_type(device_type: str | None, model: str | None, expected: tuple[str, bool]) -> None:
    assert select_device_type(device_type, model) == expected


def test_device_entity_maps_the_public_integration_properties() -> None:
    entity = device_entity(d.IPHONE)
    assert entity == d.IPHONE_ENTITY
    assert check_entity(entity) == []


def test_a_device_without_model_keeps_the_device_class() -> None:
    entity = device_entity({**d.IPHONE, "model": None, "deviceType": "windowsRT", "hardwareInformation": None})
    assert (entity["_type"], entity["_class"], entity["physical"]) == ("user_endpoint", ["Host", "Device"], True)
    assert entity["model"] is None and "version" not in entity
    assert check_entity(entity) == []


def test_a_virtual_machine_is_a_host_only_server() -> None:
    entity = device_entity({**d.IPHONE, "model": "Virtual Machine", "deviceType": "windows"})
    assert (entity["_type"], entity["_class"], entity["physical"]) == ("server", ["Host"], False)
    assert check_entity(entity) == []


def test_a_sparse_device_still_satisfies_the_data_model() -> None:
    entity = device_entity({"id": d.DEVICE_ID})
    assert entity["displayName"] == "Unknown User's Device" == entity["name"]
    for name in ("ipv4Addresses", "macAddresses", "fqdn", "hostname", "serial", "osType", "lastSeenOn", "make"):
        assert entity[name] is None
    assert entity["easDeviceId"] is False  # the public integration's value when EAS is not activated
    assert check_entity(entity) == []


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("DESKTOP-4F2A9", ("DESKTOP-4F2A9", None)),
        ("Adele's iPhone", (None, None)),
        ("ubuntu-12.corp.contoso.com", ("ubuntu-12", ["ubuntu-12.corp.contoso.com"])),
        ("x", (None, None)),
        ("", (None, None)),
        (None, (None, None)),
    ],
)
def test_host_names(name: str | None, expected: tuple[str | None, list[str] | None]) -> None:
    assert host_names(name) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("A4B1C1D2E3F4", "a4:b1:c1:d2:e3:f4"),
        ("a4-b1-c1-d2-e3-f4", "a4:b1:c1:d2:e3:f4"),
        ("A4:B1:C1:D2:E3:F4", "a4:b1:c1:d2:e3:f4"),
        ("000000000000", None),
        ("not a mac", None),
        ("", None),
        (None, None),
    ],
)
def test_normalize_mac(raw: Any, expected: str | None) -> None:
    assert normalize_mac(raw) == expected


@pytest.mark.parametrize(
    ("operating_system", "expected"),
    [
        ("Windows", "windows"),
        ("Windows Holographic for Business", "windows"),
        ("macOS", "darwin"),
        ("iOS", "ios"),
        ("iPadOS", "ios"),
        ("Android", "android"),
        ("AndroidForWork", "android"),
        ("Linux", "linux"),
        ("Chrome OS", "chromeos"),
        ("BlackBerry", "legacy"),
        ("Tizen", "other"),
        ("", None),
        (None, None),
    ],
)
def test_os_type(operating_system: str | None, expected: str | None) -> None:
    assert os_type(operating_system) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2024-03-01T12:00:00Z", 1709294400000),
        ("0001-01-01T00:00:00Z", None),  # Intune's "never"
        ("not a date", None),
        ("", None),
        (None, None),
    ],
)
def test_intune_ms(value: Any, expected: int | None) -> None:
    assert intune_ms(value) == expected


@pytest.mark.parametrize(
    ("state", "compliant"),
    [
        ("compliant", True),
        ("noncompliant", False),
        ("inGracePeriod", False),
        ("unknown", None),
        ("configManager", None),
    ],
)
def test_agent_entity(state: str, compliant: bool | None) -> None:
    agent = agent_entity({**d.IPHONE, "complianceState": state})
    expected = {
        "_key": f"intune-host-agent:{d.DEVICE_ID}",
        "_type": "intune_host_agent",
        "_class": ["HostAgent"],
        "name": "intune-host-agent",
        "displayName": "Intune Host Agent",
        "function": ["endpoint-compliance", "endpoint-protection"],
        "managementAgent": "mdm",
        "state": "managed",
        "registrationState": "registered",
        "complianceState": state,
        "lastSeenOn": 1709294400123,
    }
    if compliant is not None:
        expected["compliant"] = compliant
    assert agent == expected
    assert check_entity(agent) == []


def test_map_device_relationships_only_to_known_users() -> None:
    upserts = map_device(d.IPHONE, known_users={d.ADELE, d.ALEX})
    agent = f"intune-host-agent:{d.DEVICE_ID}"
    assert [(u.placement, u.key, u.obj["_type"]) for u in upserts] == [
        (Placement("entity", DEVICE_FAMILY, d.DEVICE_ID), d.DEVICE_ID, "smartphone"),
        (Placement("entity", DEVICE_FAMILY, d.DEVICE_ID), agent, "intune_host_agent"),
        (
            Placement("relationship", DEVICE_FAMILY, d.DEVICE_ID),
            f"{agent}|manages|{d.DEVICE_ID}",
            "intune_host_agent_manages_smartphone",
        ),
        (
            Placement("relationship", DEVICE_FAMILY, d.DEVICE_ID),
            f"{d.ADELE}|has|{d.DEVICE_ID}",
            "azure_user_has_smartphone",
        ),
        (
            Placement("relationship", DEVICE_FAMILY, d.DEVICE_ID),
            f"{d.ADELE}|uses|{d.DEVICE_ID}",
            "azure_user_uses_smartphone",
        ),
        (  # logged on twice: one relationship; the unknown GHOST gets none
            Placement("relationship", DEVICE_FAMILY, d.DEVICE_ID),
            f"{d.ALEX}|uses|{d.DEVICE_ID}",
            "azure_user_uses_smartphone",
        ),
    ]
    for upsert in upserts[2:]:
        assert check_relationship(upsert.obj) == []
        assert upsert.obj["_class"] in ("MANAGES", "HAS", "USES")


def test_map_device_without_known_users_has_no_user_relationships() -> None:
    types = [u.obj["_type"] for u in map_device(d.IPHONE, known_users=set())]
    assert types == ["smartphone", "intune_host_agent", "intune_host_agent_manages_smartphone"]


def test_every_intune_relationship_type_names_its_end_families() -> None:
    ends = relationship_ends()
    assert len(ends) == 4 + 6 * 7
    relationship = {
        "_type": "intune_host_agent_manages_laptop",
        "_fromEntityKey": f"intune-host-agent:{d.DEVICE_ID}",
        "_toEntityKey": d.DEVICE_ID,
    }
    # The agent's end is anchored on its device (monitor.model.registry.ENTITY_ANCHORS).
    assert end_placements(relationship) == (
        Placement("entity", DEVICE_FAMILY, d.DEVICE_ID),
        Placement("entity", DEVICE_FAMILY, d.DEVICE_ID),
    )
    for relationship_type in ends:
        end_placements({"_type": relationship_type, "_fromEntityKey": "a", "_toEntityKey": "b"})


def test_account_enrichment_is_a_patch_that_removes_what_is_unknown() -> None:
    patch = account_enrichment(
        "microsoft_365_account-x", intune_account_id="a", subscription_state=None, mdm_authority="intune"
    )
    assert patch == Patch(
        Placement("entity", "microsoft_365_account", "microsoft_365_account-x"),
        "microsoft_365_account-x",
        {"intuneAccountId": "a", "intuneSubscriptionState": None, "mobileDeviceManagementAuthority": "intune"},
    )
