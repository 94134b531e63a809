"""Reading JupiterOne's answers and comparing them with what monitor would upload (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from monitor.sinks.j1_compare import Difference, compare, expected, held_entities, held_relationships, tally
from monitor.sinks.j1_payload import Payload

SCOPE = "monitor/t/azure_user_group:1"
USERS = "monitor/t/azure_user:2"
GROUP = {"_key": "group-000001", "_type": "azure_user_group", "_class": ["UserGroup"], "name": "G", "displayName": "G"}
EDGE = {
    "_key": "group-000001|has|user-000001",
    "_type": "azure_group_has_member",
    "_class": "HAS",
    "_fromEntityKey": "group-000001",
    "_toEntityKey": "user-000001",
    "displayName": "HAS",
    "memberType": "#microsoft.graph.user",
    "_toEntitySource": "api",
    "_toEntityScope": USERS,
}


def payload(entities: list[dict[str, Any]], relationships: list[dict[str, Any]]) -> Payload:
    return Payload(SCOPE, entities, relationships, [], [], [], frozenset())


def entity_row(obj: dict[str, Any], **extra: Any) -> dict[str, Any]:
    metadata = {"_id": "x", "_key": obj["_key"], "_type": [obj["_type"]], "_class": obj["_class"], "_scope": SCOPE}
    properties = {k: v for k, v in obj.items() if not k.startswith("_") and k != "displayName"}
    return {"id": "x", "entity": {**metadata, "displayName": obj["displayName"]}, "properties": {**properties, **extra}}


def edge_row(rel: dict[str, Any], a: tuple[str, str], b: tuple[str, str], *, whole: bool = False) -> dict[str, Any]:
    shown = {k: v for k, v in rel.items() if not k.endswith(("EntitySource", "EntityScope"))} | {"_scope": SCOPE}
    columns: dict[str, Any] = {"r": shown} if whole else {f"r.{k}": v for k, v in shown.items()}
    return {**columns, "a._scope": a[0], "a._key": a[1], "b._scope": b[0], "b._key": b[1]}


GROUP_END, USER_END = (SCOPE, "group-000001"), (USERS, "user-000001")


@pytest.mark.parametrize("whole", [False, True], ids=["r.-columns", "r-object"])
def test_what_jupiterone_holds_compares_equal_to_what_we_upload(whole: bool) -> None:
    wanted = expected(payload([GROUP], [EDGE]))
    held = held_entities([entity_row(GROUP)]) | held_relationships(
        [edge_row(EDGE, GROUP_END, USER_END, whole=whole)], SCOPE
    )
    assert compare(wanted, held) == []


def test_an_edge_seen_from_its_other_end_has_the_same_ends() -> None:
    [held] = held_relationships([edge_row(EDGE, USER_END, GROUP_END)], SCOPE).values()
    assert held.ends == (GROUP_END, USER_END)


def test_null_and_absent_are_the_same_and_arrays_compare_as_multisets() -> None:
    mine = {**GROUP, "groupTypes": ["Unified", "DynamicMembership"], "description": None}
    theirs = entity_row({**GROUP, "groupTypes": ["DynamicMembership", "Unified"]})
    assert compare(expected(payload([mine], [])), held_entities([theirs])) == []


def test_missing_stale_and_changed_are_told_apart_and_counted_per_type() -> None:
    other = {**GROUP, "_key": "group-000002"}
    wanted = expected(payload([GROUP, other], [EDGE]))
    wrong_end = edge_row(EDGE, GROUP_END, ("monitor/t/azure_user:3", "user-000001"))  # the same key elsewhere
    stale = {**GROUP, "_key": "group-000009"}
    held = held_entities([entity_row(GROUP, description="edited"), entity_row(stale)])
    held |= held_relationships([wrong_end], SCOPE)

    found = compare(wanted, held)

    assert sorted(found, key=lambda d: d.key) == [
        Difference("entity", "group-000001", "azure_user_group", "changed"),
        Difference("relationship", EDGE["_key"], "azure_group_has_member", "changed"),
        Difference("entity", "group-000002", "azure_user_group", "missing"),
        Difference("entity", "group-000009", "azure_user_group", "stale"),
    ]
    assert tally(found) == {
        "azure_group_has_member": {"changed": 1},
        "azure_user_group": {"changed": 1, "missing": 1, "stale": 1},
    }


def test_relationships_of_other_scopes_in_the_answer_are_not_this_scopes() -> None:
    elsewhere = {**edge_row(EDGE, GROUP_END, USER_END), "r._scope": USERS}
    assert held_relationships([elsewhere], SCOPE) == {}
