from __future__ import annotations

from typing import Any

import pytest
from dirty_equals import IsPartialDict

from monitor.model.common import direct_relationship
from monitor.model.groups import (
    GROUP_SELECT,
    MEMBERSHIP_TYPE,
    group_removed,
    is_placeholder_member,
    map_group,
    map_member_change,
    membership_key,
    membership_relationship,
    placeholder_removed,
)
from monitor.model.types import Delete, Placement, Upsert
from tests.data import graph_directory as g

from .j1_schema import check_entity, check_relationship

ACCOUNT = f"microsoft_365_account-{g.INSTANCE_ID}"


@pytest.mark.parametrize(
    ("group", "expected"),
    [
        pytest.param(
            g.GROUP_SECURITY,
            {
                "_key": "45b7d2e7-b882-4a80-ba97-10b7a63b8fa4",
                "_type": "azure_user_group",
                "_class": ["UserGroup"],
                "id": "45b7d2e7-b882-4a80-ba97-10b7a63b8fa4",
                "name": "Finance Approvers",
                "displayName": "Finance Approvers",
                "description": "Approvers for supplier invoices",
                "mailEnabled": False,
                "mailNickname": "finance-approvers",
                "securityEnabled": True,
                "createdOn": 1556042765000,
                "renewedOn": 1556042765000,
                "groupTypes": [],
            },
            id="security-group",
        ),
        pytest.param(
            g.GROUP_M365,
            {
                "_key": "02bd9fd6-8f93-4758-87c3-1fb73740a315",
                "_type": "azure_user_group",
                "_class": ["UserGroup"],
                "id": "02bd9fd6-8f93-4758-87c3-1fb73740a315",
                "name": "Mark 8 Project Team",
                "displayName": "Mark 8 Project Team",
                "description": "Welcome to the team that we've assembled to launch our product.",
                "classification": "General",
                "mailEnabled": True,
                "mailNickname": "Mark8ProjectTeam",
                "securityEnabled": False,
                "email": "Mark8ProjectTeam@contoso.com",
                "mail": "Mark8ProjectTeam@contoso.com",
                "createdOn": 1705336800000,
                "renewedOn": 1736500365000,
                "groupTypes": ["Unified"],
                "visibility": "Public",
            },
            id="microsoft-365-group-with-mail",
        ),
        pytest.param(
            g.GROUP_MAIL_DISABLED_WITH_MAIL,
            IsPartialDict(name="Legacy Distribution Copy", mailEnabled=False),
            id="mail-disabled-mail-omitted",
        ),
        pytest.param(
            g.GROUP_ROLE_ASSIGNABLE,
            IsPartialDict(isAssignableToRole=True, securityEnabled=True, visibility="Private", createdOn=1709367330000),
            id="role-assignable",
        ),
        pytest.param(
            g.GROUP_NO_DISPLAY_NAME,
            IsPartialDict(name="unnamed-sg", displayName="unnamed-sg"),
            id="name-falls-back-to-mail-nickname",
        ),
    ],
)
def test_map_group_entity(group: dict[str, Any], expected: Any) -> None:
    entity_op, _ = map_group(group, account_key=ACCOUNT)
    assert entity_op.obj == expected
    assert entity_op.placement == Placement("entity", "azure_user_group", group["id"])
    assert check_entity(entity_op.obj) == []


@pytest.mark.parametrize(
    ("group", "absent"),
    [
        pytest.param(
            g.GROUP_SECURITY, {"email", "mail", "classification", "visibility", "isAssignableToRole"}, id="sg"
        ),
        pytest.param(g.GROUP_MAIL_DISABLED_WITH_MAIL, {"email", "mail", "description"}, id="mail-disabled"),
        pytest.param(g.GROUP_NO_DISPLAY_NAME, {"createdOn", "renewedOn", "deletedOn", "groupTypes"}, id="nulls"),
        pytest.param(g.GROUP_M365, {"deletedOn", "isAssignableToRole", "members@delta", "members"}, id="m365"),
    ],
)
def test_map_group_omits_unknown_and_non_properties(group: dict[str, Any], absent: set[str]) -> None:
    entity = map_group(group, account_key=ACCOUNT)[0].obj
    assert absent.isdisjoint(entity)


@pytest.mark.parametrize("group", g.GROUPS, ids=lambda grp: grp["id"][:8])
def test_map_group_account_relationship(group: dict[str, Any]) -> None:
    before = repr(group)
    ops = map_group(group, account_key=ACCOUNT)
    assert len(ops) == 2
    assert ops[1] == Upsert(
        Placement("relationship", "azure_user_group", group["id"]),
        {
            "_key": f"{ACCOUNT}|has|{group['id']}",
            "_type": "microsoft_365_account_has_azure_group",
            "_class": "HAS",
            "_fromEntityKey": ACCOUNT,
            "_toEntityKey": group["id"],
            "displayName": "HAS",
        },
    )
    assert check_relationship(ops[1].obj) == []
    assert repr(group) == before


@pytest.mark.parametrize(
    "group",
    [
        pytest.param(g.GROUP_M365_MEMBERS_SLICE, id="members-slice"),
        pytest.param(g.GROUP_M365_MEMBERS_SLICE_ANNOTATED, id="members-slice-with-odata-annotations"),
        pytest.param({"id": g.GROUP_M365["id"]}, id="id-only"),
    ],
)
def test_map_group_members_only_repeat_is_not_an_update(group: dict[str, Any]) -> None:
    assert map_group(group, account_key=ACCOUNT) == []


def test_map_group_with_one_property_is_an_update() -> None:
    ops = map_group({"id": g.GROUP_M365["id"], "displayName": "Renamed", "members@delta": []}, account_key=ACCOUNT)
    assert [op.obj["_type"] for op in ops] == ["azure_user_group", "microsoft_365_account_has_azure_group"]


def test_map_group_refuses_a_removed_group() -> None:
    with pytest.raises(ValueError, match="group_removed"):
        map_group(g.GROUP_REMOVED, account_key=ACCOUNT)


def test_group_removed_deletes_what_map_group_created() -> None:
    group_id = g.GROUP_SECURITY["id"]
    deleted = group_removed(group_id, account_key=ACCOUNT)
    assert deleted == [
        Delete(Placement("entity", "azure_user_group", group_id), group_id),
        Delete(Placement("relationship", "azure_user_group", group_id), f"{ACCOUNT}|has|{group_id}"),
    ]
    created = map_group(g.GROUP_SECURITY, account_key=ACCOUNT)
    assert [(op.placement, op.key) for op in created] == [(op.placement, op.key) for op in deleted]


def test_group_select() -> None:
    assert {"members", "isAssignableToRole", "groupTypes", "visibility"} <= set(GROUP_SELECT)
    assert set(GROUP_SELECT) - {"members"} == set(g.GROUP_SECURITY) - {"members@delta"}
    assert len(set(GROUP_SELECT)) == len(GROUP_SELECT)


GROUP_ID = g.GROUP_ROLE_ASSIGNABLE["id"]
MEMBERSHIP_PLACEMENT = Placement("relationship", "azure_user_group", GROUP_ID)


def _membership(member_id: str, member_type: str) -> dict[str, Any]:
    return {
        "_key": f"{GROUP_ID}|has|{member_id}",
        "_type": "azure_group_has_member",
        "_class": "HAS",
        "_fromEntityKey": GROUP_ID,
        "_toEntityKey": member_id,
        "displayName": "HAS",
        "groupId": GROUP_ID,
        "memberId": member_id,
        "memberType": member_type,
    }


def _placeholder(member_id: str, member_type: str, name: str | None = None, **more: Any) -> Upsert:
    return Upsert(
        Placement("entity", "azure_group_member", member_id),
        {
            "_key": member_id,
            "_type": "azure_group_member",
            "_class": ["User"],
            "name": name or member_id,
            "displayName": name or member_id,
            "firstName": None,
            "lastName": None,
            "username": None,
            "shortLoginId": None,
            "email": None,
            "memberType": member_type,
            **more,
        },
    )


def _case(member: dict[str, Any], *placeholder: Upsert) -> tuple[dict[str, Any], list[Upsert]]:
    relationship = Upsert(MEMBERSHIP_PLACEMENT, _membership(member["id"], member["@odata.type"]))
    return member, [relationship, *placeholder]


@pytest.mark.parametrize(
    ("member", "expected"),
    [
        pytest.param(*_case(g.MEMBER_USER), id="user"),
        pytest.param(*_case(g.MEMBER_GROUP), id="nested-group"),
        pytest.param(*_case(g.MEMBER_USER_ODD_CASE), id="user-odd-casing"),
        pytest.param(*_case(g.MEMBER_GROUP_ODD_CASE), id="group-odd-casing"),
        pytest.param(
            *_case(g.MEMBER_DEVICE, _placeholder(g.MEMBER_DEVICE["id"], "#microsoft.graph.device")), id="device"
        ),
        pytest.param(
            *_case(
                g.MEMBER_SERVICE_PRINCIPAL,
                _placeholder(g.MEMBER_SERVICE_PRINCIPAL["id"], "#microsoft.graph.servicePrincipal"),
            ),
            id="service-principal",
        ),
        pytest.param(
            *_case(
                g.MEMBER_ORG_CONTACT,
                _placeholder(
                    g.MEMBER_ORG_CONTACT["id"],
                    "#microsoft.graph.orgContact",
                    "Fabrikam Support",
                    email=["support@fabrikam.com"],
                    jobTitle="Vendor support desk",
                ),
            ),
            id="org-contact-with-name",
        ),
        pytest.param(
            *_case(g.MEMBER_DEVICE_ODD_CASE, _placeholder(g.MEMBER_DEVICE_ODD_CASE["id"], "#Microsoft.Graph.Device")),
            id="device-odd-casing",
        ),
        pytest.param(
            g.MEMBER_USER_REMOVED,
            [Delete(MEMBERSHIP_PLACEMENT, f"{GROUP_ID}|has|{g.MEMBER_USER['id']}")],
            id="user-removed",
        ),
        pytest.param(
            g.MEMBER_DEVICE_REMOVED,
            [Delete(MEMBERSHIP_PLACEMENT, f"{GROUP_ID}|has|{g.MEMBER_DEVICE['id']}")],
            id="device-removed-placeholder-left-to-caller",
        ),
    ],
)
def test_map_member_change(member: dict[str, Any], expected: list[Upsert | Delete]) -> None:
    ops = map_member_change(GROUP_ID, member)
    assert ops == expected
    for op in ops:
        if isinstance(op, Upsert) and op.placement.kind == "entity":
            assert check_entity(op.obj) == []
        elif isinstance(op, Upsert):
            assert check_relationship(op.obj) == []


@pytest.mark.parametrize(
    ("member", "placeholder"),
    [
        (g.MEMBER_USER, False),
        (g.MEMBER_USER_ODD_CASE, False),
        (g.MEMBER_GROUP, False),
        (g.MEMBER_GROUP_ODD_CASE, False),
        (g.MEMBER_DEVICE, True),
        (g.MEMBER_DEVICE_ODD_CASE, True),
        (g.MEMBER_SERVICE_PRINCIPAL, True),
        (g.MEMBER_ORG_CONTACT, True),
        ({"id": "9b8a7c6d-5e4f-4321-8fed-cba987654321"}, True),
    ],
)
def test_is_placeholder_member(member: dict[str, Any], placeholder: bool) -> None:
    assert is_placeholder_member(member) is placeholder
    assert (len(map_member_change(GROUP_ID, member)) == 2) is placeholder


def test_membership_key_and_type() -> None:
    assert membership_key("g-0000000001", "m-0000000001") == "g-0000000001|has|m-0000000001"
    assert MEMBERSHIP_TYPE == "azure_group_has_member"


def test_placeholder_removed_deletes_what_map_member_change_created() -> None:
    created = map_member_change(GROUP_ID, g.MEMBER_SERVICE_PRINCIPAL)[1]
    assert placeholder_removed(g.MEMBER_SERVICE_PRINCIPAL["id"]) == Delete(created.placement, created.key)


def test_every_member_of_every_fixture_group_maps_cleanly() -> None:
    for group in (*g.GROUPS, g.GROUP_M365_MEMBERS_SLICE, g.GROUP_M365_MEMBERS_SLICE_ANNOTATED):
        for member in group["members@delta"]:
            for op in map_member_change(group["id"], member):
                assert op.placement.anchor_key in (group["id"], member["id"])
                if isinstance(op, Upsert):
                    checker = check_entity if op.placement.kind == "entity" else check_relationship
                    assert checker(op.obj) == [], (group["id"], member)


@pytest.mark.parametrize("member", g.MEMBERS, ids=lambda m: m["@odata.type"])
def test_membership_relationship_is_the_sdk_direct_relationship(member: dict[str, Any]) -> None:
    target_type = "azure_group_member" if is_placeholder_member(member) else "azure_user"
    expected = direct_relationship(
        "azure_user_group",
        GROUP_ID,
        "HAS",
        target_type,
        member["id"],
        type_override="azure_group_has_member",
        extra={"groupId": GROUP_ID, "memberId": member["id"], "memberType": member["@odata.type"]},
    )
    assert membership_relationship(GROUP_ID, member["id"], member["@odata.type"]) == expected
