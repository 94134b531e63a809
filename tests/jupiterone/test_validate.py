"""Validation before upload (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from monitor.model.types import JsonObject, Upsert
from monitor.sinks.j1_validate import check_entity, check_relationship
from tests.jupiterone.directory import initial_ops
from tests.model.j1_schema import check_entity as schema_check_entity
from tests.model.j1_schema import check_relationship as schema_check_relationship

MAPPED = [op for op in initial_ops() if isinstance(op, Upsert)]
ENTITIES = [op.obj for op in MAPPED if op.placement.kind == "entity"]
RELATIONSHIPS = [op.obj for op in MAPPED if op.placement.kind == "relationship"]
USER: JsonObject = next(e for e in ENTITIES if e["_type"] == "azure_user" and e.get("jobTitle"))
EDGE: JsonObject = next(r for r in RELATIONSHIPS if r["_type"] == "azure_group_has_member")


def test_every_mapped_object_passes_and_agrees_with_the_data_model_schemas() -> None:
    assert {e["_type"] for e in ENTITIES} >= {"microsoft_365_account", "azure_user", "azure_user_group"}
    for entity in ENTITIES:
        assert check_entity(entity) == [] and schema_check_entity(entity) == [], entity["_key"]
    for relationship in RELATIONSHIPS:
        assert check_relationship(relationship) == [] and schema_check_relationship(relationship) == []


@pytest.mark.parametrize(
    ("change", "rule"),
    [
        ({"_key": "short"}, "key-length"),
        ({"_type": "ab"}, "type-length"),
        ({"_class": []}, "class"),
        ({"manager": {"id": "x"}}, "nested-object"),
        ({"tags": ["a", 1]}, "mixed-array"),
        ({"tags": ["a", None]}, "array-items"),
        ({"tags": [["a"]]}, "array-items"),
        ({"_secret": "x"}, "underscore-property"),
        ({"bad/name": "x"}, "property-name"),
        ({"createdOn": "2024-01-01T00:00:00Z"}, "timestamp"),
        ({"createdOn": True}, "timestamp"),
        ({"loginOn": ["2024-01-01"]}, "timestamp"),
        ({"name": None}, "required-property"),
    ],
)
def test_entity_rules(change: dict[str, Any], rule: str) -> None:
    problems = check_entity({**USER, **change})
    assert [p.rule for p in problems] == [rule]
    assert problems[0].key == str({**USER, **change}["_key"]) and problems[0].detail


@pytest.mark.parametrize("missing", ["username", "email", "firstName", "displayName"])
def test_a_property_the_class_requires_must_be_present(missing: str) -> None:
    entity = {k: v for k, v in USER.items() if k != missing}
    [problem] = check_entity(entity)
    assert problem.rule == "required-property" and repr(missing) in problem.detail


def test_null_is_allowed_where_the_data_model_allows_it() -> None:
    assert check_entity({**USER, "firstName": None, "email": None, "createdOn": None, "mobilePhone": None}) == []
    assert check_entity({**USER, "createdOn": 1_700_000_000_000, "tag.AccountName": "Contoso"}) == []


@pytest.mark.parametrize(
    ("change", "rule"),
    [
        ({"_class": "has"}, "class"),
        ({"_class": ["HAS"]}, "class"),
        ({"_toEntityKey": ""}, "relationship-end"),
        ({"weight": {"x": 1}}, "nested-object"),
        ({"_note": "x"}, "underscore-property"),
    ],
)
def test_relationship_rules(change: dict[str, Any], rule: str) -> None:
    assert rule in [p.rule for p in check_relationship({**EDGE, **change})]
