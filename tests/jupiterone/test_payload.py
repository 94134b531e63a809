"""What one upload scope sends (pure): its entities and the relationships anchored on them, in one
DIFF job, far ends labelled with their scope and source, same-scope ends not."""

from __future__ import annotations

import itertools
import uuid
from typing import Any

import orjson

from monitor.model.groups import map_group, map_member_change
from monitor.model.types import JsonObject, Upsert
from monitor.model.users import map_user
from monitor.scopes import UploadScope, upload_scope_of
from monitor.settings import TenantConfig
from monitor.sinks.j1_payload import Payload, build_payload, j1_scope_name
from tests.jupiterone.directory import ACCOUNT_KEY, TENANT_ID, generated_group, generated_user, user_member

TENANT = TenantConfig(id=TENANT_ID, account_name="Contoso")
USER: JsonObject = map_user(generated_user(1), account_key=ACCOUNT_KEY)[0].obj


def payload_of(ops: list[Upsert], scope: UploadScope, **options: object) -> Payload:
    entities = {
        op.key: op.obj for op in ops if op.placement.kind == "entity" and upload_scope_of(op.placement) == scope
    }
    relationships = {
        op.key: op.obj for op in ops if op.placement.kind == "relationship" and upload_scope_of(op.placement) == scope
    }
    settings = {"tenant": TENANT, "prefix": "monitor", "max_request_bytes": 5_000_000, **options}
    return build_payload(scope, entities, relationships, **settings)  # type: ignore[arg-type]


def upserts(ops: object) -> list[Upsert]:
    return [op for op in ops if isinstance(op, Upsert)]  # type: ignore[attr-defined]


def two_groups_in_one_scope() -> tuple[dict[str, Any], dict[str, Any]]:
    """Two generated groups whose ids fall in the same upload scope (a nested group next to its parent)."""
    seen: dict[UploadScope, dict[str, Any]] = {}
    for n in itertools.count():
        group = {**generated_group(n), "id": str(uuid.uuid5(uuid.NAMESPACE_OID, f"group-{n}"))}
        scope = upload_scope_of(map_group(group, account_key=ACCOUNT_KEY)[0].placement)
        if scope in seen:
            return seen[scope], group
        seen[scope] = group
    raise AssertionError("unreachable")


def test_entities_in_key_order_invalid_ones_left_out_and_no_tag_unless_asked() -> None:
    scope = UploadScope("azure_user", 3)
    users = {"b" * 12: {**USER, "_key": "b" * 12}, "a" * 12: {**USER, "_key": "a" * 12}, "c": {**USER, "_key": "c"}}

    payload = build_payload(scope, users, {}, tenant=TENANT, prefix="monitor", max_request_bytes=5_000_000)

    assert payload.j1_scope == f"monitor/{TENANT_ID}/azure_user:3"
    assert [orjson.loads(raw)["_key"] for raw in payload.encoded_entities] == ["a" * 12, "b" * 12]
    assert [(p.key, p.rule) for p in payload.rejected] == [("c", "key-length")]
    assert all("tag.AccountName" not in entity for entity in payload.entities)


def test_the_account_name_tag_is_added_when_the_tenant_asks() -> None:
    tagged = TenantConfig(id=TENANT_ID, account_name="Contoso EU", tag_account_name=True)
    scope = UploadScope("azure_user", 0)
    payload = build_payload(scope, {USER["_key"]: USER}, {}, tenant=tagged, prefix="p", max_request_bytes=10**6)
    assert orjson.loads(payload.encoded_entities[0])["tag.AccountName"] == "Contoso EU"


def test_a_relationship_goes_with_its_anchor_and_its_far_end_is_labelled_with_scope_and_source() -> None:
    user = generated_user(2)
    group = generated_group(2, [user_member(user)])
    ops = upserts([*map_user(user, account_key=ACCOUNT_KEY), *map_group(group, account_key=ACCOUNT_KEY)])
    ops += upserts(map_member_change(group["id"], user_member(user)))
    group_scope = upload_scope_of(ops[2].placement)
    user_scope = upload_scope_of(ops[0].placement)

    in_group = payload_of(ops, group_scope)
    in_user = payload_of(ops, user_scope)

    by_key = {r["_key"]: r for r in in_group.relationships}
    membership, account_edge = by_key[f"{group['id']}|has|{user['id']}"], by_key[f"{ACCOUNT_KEY}|has|{group['id']}"]
    assert "_fromEntityScope" not in membership and "_fromEntitySource" not in membership  # the anchor: own scope
    assert (membership["_toEntitySource"], membership["_toEntityScope"]) == (
        "api",
        j1_scope_name("monitor", TENANT_ID, user_scope),
    )
    account_scope = j1_scope_name("monitor", TENANT_ID, UploadScope("microsoft_365_account", 0))
    assert (account_edge["_fromEntitySource"], account_edge["_fromEntityScope"]) == ("api", account_scope)
    assert "_toEntityScope" not in account_edge
    assert in_group.far_scopes == {str(user_scope), "microsoft_365_account:0"}
    assert [r["_key"] for r in in_user.relationships] == [f"{ACCOUNT_KEY}|has|{user['id']}"]
    assert [e["_key"] for e in in_user.entities] == [user["id"]]


def test_a_relationship_between_two_entities_of_one_scope_carries_no_label() -> None:
    parent, nested = two_groups_in_one_scope()
    member = {"@odata.type": "#microsoft.graph.group", "id": nested["id"]}
    ops = upserts([*map_group(parent, account_key=ACCOUNT_KEY), *map_group(nested, account_key=ACCOUNT_KEY)])
    ops += upserts(map_member_change(str(parent["id"]), member))
    scope = upload_scope_of(ops[0].placement)

    payload = payload_of(ops, scope)

    [edge] = [r for r in payload.relationships if r["_type"] == "azure_group_has_member"]
    assert not {"_fromEntityScope", "_toEntityScope", "_fromEntitySource", "_toEntitySource"} & edge.keys()
    assert payload.far_scopes == {"microsoft_365_account:0"}


def test_relationships_that_cannot_be_placed_are_left_out_with_their_rule() -> None:
    scope = UploadScope("azure_user", 0)
    user = {**USER, "_key": "user-in-scope-0"}
    unknown = {**map_user(generated_user(3), account_key=ACCOUNT_KEY)[1].obj, "_type": "azure_user_likes_coffee"}
    elsewhere = map_user(generated_user(4), account_key=ACCOUNT_KEY)[1].obj  # anchored on a user of another scope
    broken_user = {**USER, "_key": "user-broken-01", "createdOn": "yesterday"}
    to_broken = {**elsewhere, "_key": "edge-to-broken", "_toEntityKey": "user-broken-01"}
    relationships = {r["_key"]: r for r in (unknown, elsewhere, to_broken)}
    entities = {e["_key"]: e for e in (user, broken_user)}

    payload = build_payload(scope, entities, relationships, tenant=TENANT, prefix="m", max_request_bytes=10**6)

    rules = sorted((p.key, p.rule) for p in payload.rejected)
    assert rules == sorted(
        [
            ("user-broken-01", "timestamp"),
            ("edge-to-broken", "end-left-out"),
            (unknown["_key"], "relationship-ends"),
            (elsewhere["_key"], "relationship-anchor"),
        ]
    )
    assert payload.relationships == [] and [e["_key"] for e in payload.entities] == ["user-in-scope-0"]


def test_an_object_too_large_for_one_request_is_left_out() -> None:
    big = {**USER, "_key": "big-user-0001", "jobTitle": "x" * 2_000}
    payload = build_payload(
        UploadScope("azure_user", 0),
        {big["_key"]: big, USER["_key"]: USER},
        {},
        tenant=TENANT,
        prefix="monitor",
        max_request_bytes=1_500,
    )
    assert [orjson.loads(raw)["_key"] for raw in payload.encoded_entities] == [USER["_key"]]
    assert [(p.key, p.rule) for p in payload.rejected] == [("big-user-0001", "too-large")]


def test_an_empty_scope_is_an_empty_upload() -> None:
    payload = build_payload(UploadScope("azure_user", 0), {}, {}, tenant=TENANT, prefix="m", max_request_bytes=10**6)
    assert payload.objects == 0 and payload.rejected == [] and payload.far_scopes == frozenset()
