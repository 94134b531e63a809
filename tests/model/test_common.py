from __future__ import annotations

from typing import Any

import pytest

from monitor.model.common import (
    CLASS_REQUIRED,
    direct_relationship,
    drop_none,
    epoch_ms,
    relationship_key,
    relationship_type,
    required_properties,
)

from .j1_schema import check_relationship, class_names, required_by_class


@pytest.mark.parametrize(
    ("iso", "expected"),
    [
        pytest.param(None, None, id="none"),
        pytest.param("", None, id="empty"),
        pytest.param("2024-03-01T10:00:00Z", 1709287200000, id="z"),
        pytest.param("2024-03-01T10:00:00.1234567Z", 1709287200123, id="seven-fraction-digits"),
        pytest.param("2024-03-01T10:00:00.9999999Z", 1709287200999, id="truncated-not-rounded"),
        pytest.param("2024-03-01T10:00:00.5Z", 1709287200500, id="one-fraction-digit"),
        pytest.param("2024-03-01T11:00:00+01:00", 1709287200000, id="positive-offset"),
        pytest.param("2024-03-01T02:00:00.25-08:00", 1709287200250, id="negative-offset-fraction"),
        pytest.param("2024-03-01T10:00:00", 1709287200000, id="no-offset-is-utc"),
        pytest.param("2019-04-23T18:06:05Z", 1556042765000, id="public-integration-example"),
        pytest.param("1970-01-01T00:00:00Z", 0, id="epoch"),
        pytest.param("1969-12-31T23:59:59.999Z", -1, id="before-epoch"),
        pytest.param("0001-01-01T00:00:00Z", -62135596800000, id="graph-min-value"),
    ],
)
def test_epoch_ms(iso: str | None, expected: int | None) -> None:
    assert epoch_ms(iso) == expected


@pytest.mark.parametrize(
    "garbage",
    ["yesterday", "2024-13-01T00:00:00Z", "2024-03-01T25:00:00Z", "1709287200000", "2024-03-01T10:00:00ZZ"],
)
def test_epoch_ms_rejects_garbage_naming_the_value(garbage: str) -> None:
    with pytest.raises(ValueError, match="not an ISO-8601 timestamp") as raised:
        epoch_ms(garbage)
    assert repr(garbage) in str(raised.value)


def test_epoch_ms_rejects_a_non_string() -> None:
    with pytest.raises(ValueError, match="1709287200"):
        epoch_ms(1709287200)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("properties", "keep", "expected"),
    [
        pytest.param({"a": 1, "b": None}, frozenset(), {"a": 1}, id="drops-none"),
        pytest.param({"a": None, "b": None}, frozenset({"a"}), {"a": None}, id="keeps-required"),
        pytest.param(
            {"f": False, "z": 0, "s": "", "l": []}, frozenset(), {"f": False, "z": 0, "s": "", "l": []}, id="falsy-stay"
        ),
    ],
)
def test_drop_none(properties: dict[str, Any], keep: frozenset[str], expected: dict[str, Any]) -> None:
    before = dict(properties)
    assert drop_none(properties, keep) == expected
    assert properties == before  # pure: the input is untouched


# The relationship types of docs/jupiterone.md 2.1, generated from (from type, verb, to type) as the SDK does.
@pytest.mark.parametrize(
    ("from_type", "verb", "to_type", "expected"),
    [
        ("microsoft_365_account", "HAS", "azure_user", "microsoft_365_account_has_azure_user"),
        # The default the public integration overrides with microsoft_365_account_has_azure_group.
        ("microsoft_365_account", "HAS", "azure_user_group", "microsoft_365_account_has_azure_user_group"),
        ("azure_user", "HAS", "laptop", "azure_user_has_laptop"),
        ("azure_user", "USES", "smartphone", "azure_user_uses_smartphone"),
        ("intune_host_agent", "MANAGES", "user_endpoint", "intune_host_agent_manages_user_endpoint"),
        ("intune_host_agent", "ASSIGNED", "intune_compliance_policy", "intune_host_agent_assigned_compliance_policy"),
        (
            "intune_host_agent",
            "ASSIGNED",
            "intune_device_configuration",
            "intune_host_agent_assigned_device_configuration",
        ),
        (
            "intune_compliance_policy",
            "IDENTIFIED",
            "intune_noncompliance_finding",
            "intune_compliance_policy_identified_noncompliance_finding",
        ),
        (
            "intune_device_configuration",
            "IDENTIFIED",
            "intune_noncompliance_finding",
            "intune_device_configuration_identified_noncompliance_finding",
        ),
        ("smartphone", "HAS", "intune_noncompliance_finding", "smartphone_has_intune_noncompliance_finding"),
        ("desktop", "ASSIGNED", "intune_managed_application", "desktop_assigned_intune_managed_application"),
        (
            "workstation",
            "INSTALLED",
            "intune_detected_application",
            "workstation_installed_intune_detected_application",
        ),
        # Nested groups: every shared word but the last is stripped.
        ("azure_user_group", "HAS", "azure_user_group", "azure_user_group_has_group"),
        ("azure_user_group", "HAS", "azure_user", "azure_user_group_has_user"),
        ("azure_user_group", "has", "azure_group_member", "azure_user_group_has_group_member"),
        # The SDK's do-while strips a one-word to type equal to the from type's first word.
        ("laptop", "HAS", "laptop", "laptop_has_"),
    ],
)
def test_relationship_type(from_type: str, verb: str, to_type: str, expected: str) -> None:
    assert relationship_type(from_type, verb, to_type) == expected


def test_relationship_key() -> None:
    assert relationship_key("microsoft_365_account-x", "HAS", "u1") == "microsoft_365_account-x|has|u1"


ACCOUNT = "microsoft_365_account-0b5e8f1c-3a7d-4c2e-9f61-8d4a2b7c9e10"
USER = "87d349ed-44d7-43e1-9a83-5f2406dee5bd"
GROUP = "45b7d2e7-b882-4a80-ba97-10b7a63b8fa4"


@pytest.mark.parametrize(
    ("args", "kwargs", "expected"),
    [
        pytest.param(
            ("microsoft_365_account", ACCOUNT, "HAS", "azure_user", USER),
            {},
            {
                "_key": f"{ACCOUNT}|has|{USER}",
                "_type": "microsoft_365_account_has_azure_user",
                "_class": "HAS",
                "_fromEntityKey": ACCOUNT,
                "_toEntityKey": USER,
                "displayName": "HAS",
            },
            id="account-has-user",
        ),
        pytest.param(
            ("microsoft_365_account", ACCOUNT, "HAS", "azure_user_group", GROUP),
            {"type_override": "microsoft_365_account_has_azure_group"},
            {
                "_key": f"{ACCOUNT}|has|{GROUP}",
                "_type": "microsoft_365_account_has_azure_group",
                "_class": "HAS",
                "_fromEntityKey": ACCOUNT,
                "_toEntityKey": GROUP,
                "displayName": "HAS",
            },
            id="account-has-group-overridden-type",
        ),
        pytest.param(
            ("intune_host_agent", "intune-host-agent:dev1", "assigned", "intune_device_configuration", "cfg1"),
            {
                "key_override": "status1|intune-host-agent:dev1|cfg1",
                "extra": {"complianceStatus": "unknown", "compliant": None},
            },
            {
                "_key": "status1|intune-host-agent:dev1|cfg1",
                "_type": "intune_host_agent_assigned_device_configuration",
                "_class": "ASSIGNED",
                "_fromEntityKey": "intune-host-agent:dev1",
                "_toEntityKey": "cfg1",
                "displayName": "ASSIGNED",
                "complianceStatus": "unknown",
            },
            id="custom-key-lower-case-verb-none-extra-dropped",
        ),
    ],
)
def test_direct_relationship(args: tuple[str, str, str, str, str], kwargs: dict[str, Any], expected: Any) -> None:
    relationship = direct_relationship(*args, **kwargs)
    assert relationship == expected
    assert check_relationship(relationship) == []


@pytest.mark.parametrize("name", ["_key", "_type", "_class", "_fromEntityKey", "_toEntityKey"])
def test_direct_relationship_refuses_metadata_in_extra(name: str) -> None:
    with pytest.raises(ValueError, match=name):
        direct_relationship("azure_user", "u1", "HAS", "laptop", "d1", extra={name: "x"})


def test_class_required_matches_the_vendored_data_model() -> None:
    assert set(CLASS_REQUIRED) <= set(class_names())
    for class_name, required in CLASS_REQUIRED.items():
        assert required == required_by_class(class_name), class_name


def test_required_properties_is_the_union() -> None:
    assert required_properties("Host", "Device") == CLASS_REQUIRED["Host"] | CLASS_REQUIRED["Device"]
    assert "vendor" in required_properties("Account")
    with pytest.raises(KeyError):
        required_properties("NotAClass")
