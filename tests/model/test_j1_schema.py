"""The schema helper itself: it must reject what the data model rejects, or the other tests prove nothing."""

from __future__ import annotations

from typing import Any

import pytest

from .j1_schema import check_entity, check_relationship, class_names, required_by_class, validate_entity

GOOD_USER: dict[str, Any] = {
    "_key": "87d349ed-44d7-43e1-9a83-5f2406dee5bd",
    "_type": "azure_user",
    "_class": ["User"],
    "name": "Adele Vance",
    "displayName": "Adele Vance",
    "firstName": None,
    "lastName": None,
    "email": ["AdeleV@contoso.com"],
    "shortLoginId": ["AdeleV"],
    "username": ["AdeleV@contoso.com"],
}

GOOD_RELATIONSHIP: dict[str, Any] = {
    "_key": "microsoft_365_account-x|has|87d349ed",
    "_type": "microsoft_365_account_has_azure_user",
    "_class": "HAS",
    "_fromEntityKey": "microsoft_365_account-x",
    "_toEntityKey": "87d349ed",
    "displayName": "HAS",
}


def test_vendored_classes() -> None:
    assert set(class_names()) == {
        "GraphObject",
        "Entity",
        "RecordEntity",
        "Account",
        "User",
        "UserGroup",
        "Device",
        "Host",
        "HostAgent",
        "Application",
        "Configuration",
        "ControlPolicy",
        "Finding",
    }
    assert required_by_class("Finding") >= {"_key", "name", "category", "severity", "numericSeverity", "open"}


def test_good_objects_pass() -> None:
    assert check_entity(GOOD_USER) == []
    assert check_relationship(GOOD_RELATIONSHIP) == []


@pytest.mark.parametrize(
    ("change", "expected_fragment"),
    [
        pytest.param({"email": "AdeleV@contoso.com"}, "User: email:", id="email-as-string"),
        pytest.param({"email": ["not-an-address"]}, "User: email:", id="email-format"),
        pytest.param({"username": "AdeleV@contoso.com"}, "User: username:", id="username-as-string"),
        pytest.param({"username": ["a", "a"]}, "User: username:", id="username-not-unique"),
        pytest.param({"shortLoginId": None, "firstName": 3}, "User: firstName:", id="first-name-number"),
        pytest.param({"name": None}, "User: name:", id="name-null"),
        pytest.param({"_key": "short"}, "_key", id="short-key"),
        pytest.param({"_class": []}, "_class", id="empty-class"),
        pytest.param({"bad name!": "x"}, "'bad name!'", id="bad-property-name"),
        pytest.param({"_custom": "x"}, "_custom: custom properties may not start with '_'", id="underscore-name"),
        pytest.param({"nested": {"a": 1}}, "nested: not a primitive", id="nested-object"),
        pytest.param({"mixed": ["a", 1]}, "mixed: mixed-type array", id="mixed-array"),
        pytest.param({"nullItem": ["a", None]}, "nullItem: array holds", id="null-in-array"),
        pytest.param({"jobTitle": None}, "jobTitle: None (undefined)", id="none-where-not-required"),
        pytest.param({"active": None}, "active", id="active-null"),
        pytest.param({"description": None}, "description", id="description-null"),
    ],
)
def test_bad_user_fails(change: dict[str, Any], expected_fragment: str) -> None:
    errors = check_entity({**GOOD_USER, **change})
    assert any(expected_fragment in e for e in errors), errors


@pytest.mark.parametrize("missing", ["firstName", "lastName", "email", "shortLoginId", "username", "displayName"])
def test_missing_required_user_property_fails(missing: str) -> None:
    user = {k: v for k, v in GOOD_USER.items() if k != missing}
    assert any(f"'{missing}' is a required property" in e for e in validate_entity(user))


def test_account_requires_vendor_and_unknown_class_is_reported() -> None:
    account = {"_key": "microsoft_365_account-x", "_type": "microsoft_365_account", "_class": "Account"}
    errors = validate_entity({**account, "name": "Contoso", "displayName": "Contoso"})
    assert errors == ["Account: <entity>: 'vendor' is a required property"]
    assert validate_entity({**account, "_class": ["Account", "Spaceship"]})[-1] == (
        "Spaceship: no vendored schema for this class"
    )


@pytest.mark.parametrize(
    ("change", "expected_fragment"),
    [
        pytest.param({"_class": "has"}, "_class", id="lower-case-verb"),
        pytest.param({"_class": ["HAS"]}, "_class", id="verb-list"),
        pytest.param({"_toEntityKey": None}, "_toEntityKey", id="no-to-key"),
        pytest.param({"_key": "a|has|b"}, "_key", id="short-key"),
        pytest.param({"compliant": None}, "compliant: None", id="none-property"),
    ],
)
def test_bad_relationship_fails(change: dict[str, Any], expected_fragment: str) -> None:
    errors = check_relationship({**GOOD_RELATIONSHIP, **change})
    assert any(expected_fragment in e for e in errors), errors
