"""Validation before upload and the payload of one scope (pure)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from monitor.model.types import JsonObject, Upsert
from monitor.scopes import ScopeId, scope_of
from monitor.settings import TenantConfig
from monitor.sinks.j1_validate import check_entity, check_relationship
from monitor.sinks.jupiterone import build_payload, j1_scope_name
from tests.jupiterone.directory import ACCOUNT_KEY, TENANT_ID, initial_ops
from tests.model.j1_schema import check_entity as schema_check_entity
from tests.model.j1_schema import check_relationship as schema_check_relationship

MAPPED = [op for op in initial_ops() if isinstance(op, Upsert)]
ENTITIES = [op.obj for op in MAPPED if op.placement.kind == "entity"]
RELATIONSHIPS = [op.obj for op in MAPPED if op.placement.kind == "relationship"]
USER: JsonObject = next(e for e in ENTITIES if e["_type"] == "azure_user" and e.get("jobTitle"))
EDGE: JsonObject = next(r for r in RELATIONSHIPS if r["_type"] == "azure_group_has_member")
TENANT = TenantConfig(id=TENANT_ID, account_name="Contoso")


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


def test_an_entity_scope_is_a_diff_of_its_valid_entities_in_key_order() -> None:
    scope = ScopeId("entity", "azure_user", 3)
    objects = {"b" * 12: {**USER, "_key": "b" * 12}, "a" * 12: {**USER, "_key": "a" * 12}, "c": {**USER, "_key": "c"}}

    payload = build_payload(scope, objects, tenant=TENANT, prefix="monitor", max_request_bytes=5_000_000)

    assert (payload.mode, payload.kind, payload.j1_scope) == ("DIFF", "entities", f"monitor/{TENANT_ID}/e:azure_user:3")
    assert [orjson.loads(raw)["_key"] for raw in payload.encoded] == ["a" * 12, "b" * 12]
    assert [(p.key, p.rule) for p in payload.rejected] == [("c", "key-length")]
    assert all("tag.AccountName" not in orjson.loads(raw) for raw in payload.encoded)


def test_the_account_name_tag_is_added_when_the_tenant_asks() -> None:
    tagged = TenantConfig(id=TENANT_ID, account_name="Contoso EU", tag_account_name=True)
    payload = build_payload(
        ScopeId("entity", "azure_user", 0), {USER["_key"]: USER}, tenant=tagged, prefix="p", max_request_bytes=10**6
    )
    assert orjson.loads(payload.encoded[0])["tag.AccountName"] == "Contoso EU"


def test_a_relationship_scope_is_cross_scope_with_both_ends_labelled() -> None:
    scope = ScopeId("relationship", "azure_user_group", 7)
    has_user = next(r for r in RELATIONSHIPS if r["_type"] == "microsoft_365_account_has_azure_user")
    unknown = {**EDGE, "_key": "some-unknown-edge", "_type": "azure_user_likes_coffee"}
    objects = {r["_key"]: r for r in (EDGE, has_user, unknown)}

    payload = build_payload(scope, objects, tenant=TENANT, prefix="monitor", max_request_bytes=5_000_000)

    assert (payload.mode, payload.kind) == ("CROSS_SCOPE", "relationships")
    labelled = {r["_key"]: r for r in map(orjson.loads, payload.encoded)}
    assert labelled[has_user["_key"]]["_fromEntityScope"] == f"monitor/{TENANT_ID}/e:microsoft_365_account:0"
    member = labelled[EDGE["_key"]]
    group_scope = scope_of(next(op.placement for op in MAPPED if op.obj["_key"] == EDGE["_fromEntityKey"]))
    assert member["_fromEntityScope"] == j1_scope_name("monitor", TENANT_ID, group_scope)
    assert member["_toEntityScope"].startswith(f"monitor/{TENANT_ID}/e:")
    assert [(p.key, p.rule) for p in payload.rejected] == [("some-unknown-edge", "relationship-ends")]
    assert ACCOUNT_KEY in has_user["_fromEntityKey"]


def test_an_object_too_large_for_one_request_is_left_out() -> None:
    big = {**USER, "_key": "big-user-0001", "jobTitle": "x" * 2_000}
    payload = build_payload(
        ScopeId("entity", "azure_user", 0),
        {big["_key"]: big, USER["_key"]: USER},
        tenant=TENANT,
        prefix="monitor",
        max_request_bytes=1_500,
    )
    assert [orjson.loads(raw)["_key"] for raw in payload.encoded] == [USER["_key"]]
    assert [(p.key, p.rule) for p in payload.rejected] == [("big-user-0001", "too-large")]


def test_an_empty_scope_is_an_empty_upload() -> None:
    payload = build_payload(ScopeId("entity", "azure_user", 0), {}, tenant=TENANT, prefix="m", max_request_bytes=10**6)
    assert payload.encoded == [] and payload.rejected == [] and payload.mode == "DIFF"
