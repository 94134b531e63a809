"""Change records and mirror facts for the alert tests, built with the real mappers (monitor.model), so
the records have exactly the shape the pipeline writes."""

from __future__ import annotations

from typing import Any

from monitor.alerts import Ref
from monitor.model.groups import GROUP_FAMILY, PLACEHOLDER_FAMILY, map_group, map_member_change, membership_key
from monitor.model.types import JsonObject, Kind
from monitor.model.users import USER_FAMILY, map_user
from monitor.records import ChangeRecord, RecordOp

TENANT = "7d1a4c3e-5b6f-4a2d-9e8c-1f2a3b4c5d6e"
ACCOUNT = f"microsoft_365_account-{TENANT}"
OBSERVED = "2026-03-01T10:00:00.000Z"

ADMINS = "0a000000-0000-4000-8000-000000000001"  # role-assignable, "Global Admins"
SALES = "0a000000-0000-4000-8000-000000000002"  # ordinary, "Sales"
NESTED = "0a000000-0000-4000-8000-000000000003"  # ordinary, "Helpdesk Operators"
ADA = "0b000000-0000-4000-8000-000000000001"
BOB = "0b000000-0000-4000-8000-000000000002"
DEVICE = "0c000000-0000-4000-8000-000000000001"
APP = "0c000000-0000-4000-8000-000000000002"
CONTACT = "0c000000-0000-4000-8000-000000000003"

ODATA = {
    "user": "#microsoft.graph.user",
    "group": "#microsoft.graph.group",
    "device": "#microsoft.graph.device",
    "servicePrincipal": "#microsoft.graph.servicePrincipal",
    "contact": "#microsoft.graph.orgContact",
}


def group(group_id: str, name: str, *, role_assignable: bool = False) -> JsonObject:
    graph = {"id": group_id, "displayName": name, "securityEnabled": True, "mailEnabled": False}
    graph["isAssignableToRole"] = role_assignable
    return map_group(graph, account_key=ACCOUNT)[0].obj


def user(user_id: str, name: str, upn: str) -> JsonObject:
    return map_user({"id": user_id, "displayName": name, "userPrincipalName": upn}, account_key=ACCOUNT)[0].obj


def placeholder(member_id: str, kind: str, name: str) -> JsonObject:
    ops = map_member_change(ADMINS, {"@odata.type": ODATA[kind], "id": member_id, "displayName": name})
    obj: JsonObject = ops[1].obj  # type: ignore[union-attr]
    return obj


def edge(group_id: str, member_id: str, kind: str) -> JsonObject:
    obj: JsonObject = map_member_change(group_id, {"@odata.type": ODATA[kind], "id": member_id})[0].obj  # type: ignore[union-attr]
    return obj


def record(seq: int, op: RecordOp, kind: Kind, obj_type: str, key: str, before: Any, after: Any) -> ChangeRecord:
    changed = sorted(set(before or {}) | set(after or {}))
    return {
        "seq": seq,
        "tenant": TENANT,
        "source": "groups",
        "op": op,
        "kind": kind,
        "type": obj_type,
        "key": key,
        "changed": changed,
        "before": before,
        "after": after,
        "observedAt": OBSERVED,
    }


def added(seq: int, group_id: str, member_id: str, kind: str = "user") -> ChangeRecord:
    rel = edge(group_id, member_id, kind)
    return record(seq, "upsert", "relationship", "azure_group_has_member", rel["_key"], None, rel)


def removed(seq: int, group_id: str, member_id: str, kind: str = "user") -> ChangeRecord:
    rel = edge(group_id, member_id, kind)
    return record(seq, "delete", "relationship", "azure_group_has_member", rel["_key"], rel, None)


def edge_changed(seq: int, group_id: str, member_id: str) -> ChangeRecord:
    """The edge kept its ends but a property changed (here `memberType`'s casing)."""
    before = {**edge(group_id, member_id, "user"), "memberType": "#microsoft.graph.User"}
    after = edge(group_id, member_id, "user")
    return record(
        seq, "upsert", "relationship", "azure_group_has_member", membership_key(group_id, member_id), before, after
    )


def entity_upsert(seq: int, obj: JsonObject, before: JsonObject | None = None) -> ChangeRecord:
    return record(seq, "upsert", "entity", obj["_type"], obj["_key"], before, obj)


def entity_delete(seq: int, obj: JsonObject) -> ChangeRecord:
    return record(seq, "delete", "entity", obj["_type"], obj["_key"], obj, None)


MIRROR: dict[Ref, JsonObject] = {
    (GROUP_FAMILY, ADMINS): group(ADMINS, "Global Admins", role_assignable=True),
    (GROUP_FAMILY, SALES): group(SALES, "Sales"),
    (GROUP_FAMILY, NESTED): group(NESTED, "Helpdesk Operators"),
    (USER_FAMILY, ADA): user(ADA, "Ada Lovelace", "ada@contoso.com"),
    (USER_FAMILY, BOB): user(BOB, "Bob Builder", "bob@contoso.com"),
    (PLACEHOLDER_FAMILY, DEVICE): placeholder(DEVICE, "device", "LAPTOP-0042"),
    (PLACEHOLDER_FAMILY, APP): placeholder(APP, "servicePrincipal", "Backup Robot"),
    (PLACEHOLDER_FAMILY, CONTACT): placeholder(CONTACT, "contact", "Eve Vendor"),
}
