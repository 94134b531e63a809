from __future__ import annotations

from typing import Any

import pytest
from dirty_equals import IsPartialDict

from monitor.model.types import Delete, Placement, Upsert
from monitor.model.users import (
    SIGN_IN_PROPERTIES,
    USER_SELECT,
    map_user,
    sign_in_of,
    sign_in_properties,
    user_removed,
    with_sign_in,
)
from tests.data import graph_directory as g

from .j1_schema import check_entity, check_relationship

ACCOUNT = f"microsoft_365_account-{g.INSTANCE_ID}"

FULL_USER_ENTITY = {
    "_key": "87d349ed-44d7-43e1-9a83-5f2406dee5bd",
    "_type": "azure_user",
    "_class": ["User"],
    "id": "87d349ed-44d7-43e1-9a83-5f2406dee5bd",
    "name": "Adele Vance",
    "displayName": "Adele Vance",
    "username": ["AdeleV@contoso.com"],
    "userPrincipalName": "AdeleV@contoso.com",
    "shortLoginId": ["AdeleV"],
    "email": ["AdeleV@contoso.com"],
    "mail": "AdeleV@contoso.com",
    "givenName": "Adele",
    "firstName": "Adele",
    "surname": "Vance",
    "lastName": "Vance",
    "jobTitle": "Retail Manager",
    "mobilePhone": "+1 425 555 0109",
    "officeLocation": "18/2111",
    "preferredLanguage": "en-US",
    "usageLocation": "US",
    "userType": "Member",
    "active": True,
    "accountEnabled": True,
}


def _nameless(user_id: str) -> dict[str, Any]:
    return {
        "_key": user_id,
        "_type": "azure_user",
        "_class": ["User"],
        "id": user_id,
        "name": user_id,
        "displayName": user_id,
        "username": None,
        "shortLoginId": None,
        "email": None,
        "firstName": None,
        "lastName": None,
    }


@pytest.mark.parametrize(
    ("user", "expected"),
    [
        pytest.param(g.USER_FULL, FULL_USER_ENTITY, id="full"),
        pytest.param(g.USER_NULLS, _nameless(g.USER_NULLS["id"]), id="nulls-everywhere"),
        pytest.param(g.USER_ID_ONLY, _nameless(g.USER_ID_ONLY["id"]), id="absent-is-null"),
        pytest.param(
            g.USER_NAME_FROM_DISPLAY,
            IsPartialDict(name="Megan  Bowen", firstName="Megan", lastName="Bowen", shortLoginId=["MeganB"]),
            id="first-last-from-display-name",
        ),
        pytest.param(g.USER_THREE_TOKENS, IsPartialDict(firstName="Conf", lastName="Adams"), id="first-and-last-token"),
        pytest.param(
            g.USER_ONE_TOKEN,
            IsPartialDict(firstName="Helpdesk", lastName="Helpdesk", email=None, shortLoginId=["helpdesk"]),
            id="one-token-no-mail",
        ),
        pytest.param(
            g.USER_GUEST,
            IsPartialDict(
                name="Alex Wilber (Fabrikam)",
                firstName="Alex",
                lastName="Wilber",
                username=["alex.wilber_fabrikam.com#EXT#@contoso.onmicrosoft.com"],
                shortLoginId=["alex.wilber_fabrikam.com#EXT#"],
                email=["alex.wilber@fabrikam.com"],
                mail="alex.wilber@fabrikam.com",
                userType="Guest",
                active=True,
            ),
            id="guest",
        ),
        pytest.param(
            g.USER_DISABLED,
            IsPartialDict(active=False, accountEnabled=False, name="Lee Gu", shortLoginId=["LeeG"]),
            id="disabled",
        ),
        pytest.param(
            g.USER_UPN_WITHOUT_AT,
            IsPartialDict(username=["svc-backup"], shortLoginId=["svc-backup"], userPrincipalName="svc-backup"),
            id="upn-without-at",
        ),
        pytest.param(
            g.USER_NO_DISPLAY_NAME,
            IsPartialDict(
                name="PattiF@contoso.com", displayName="PattiF@contoso.com", firstName="Patti", lastName="Fernandez"
            ),
            id="display-name-falls-back-to-upn",
        ),
    ],
)
def test_map_user_entity(user: dict[str, Any], expected: Any) -> None:
    entity_op, _ = map_user(user, account_key=ACCOUNT)
    assert entity_op.obj == expected
    assert entity_op.placement == Placement("entity", "azure_user", user["id"])
    assert check_entity(entity_op.obj) == []


@pytest.mark.parametrize("user", g.USERS, ids=lambda u: u["id"][:8])
def test_map_user_account_relationship(user: dict[str, Any]) -> None:
    ops = map_user(user, account_key=ACCOUNT)
    assert len(ops) == 2
    relationship = ops[1]
    assert relationship == Upsert(
        Placement("relationship", "azure_user", user["id"]),
        {
            "_key": f"{ACCOUNT}|has|{user['id']}",
            "_type": "microsoft_365_account_has_azure_user",
            "_class": "HAS",
            "_fromEntityKey": ACCOUNT,
            "_toEntityKey": user["id"],
            "displayName": "HAS",
        },
    )
    assert check_relationship(relationship.obj) == []


@pytest.mark.parametrize("user", g.USERS, ids=lambda u: u["id"][:8])
def test_map_user_output_is_data_model_clean_and_input_untouched(user: dict[str, Any]) -> None:
    before = repr(user)
    entity = map_user(user, account_key=ACCOUNT)[0].obj
    # check_entity also fails on a None outside the User class's required properties.
    assert check_entity(entity) == []
    assert {k for k, v in entity.items() if v is None} <= {"firstName", "lastName", "email", "shortLoginId", "username"}
    assert repr(user) == before


def test_map_user_refuses_a_removed_user() -> None:
    with pytest.raises(ValueError, match="user_removed"):
        map_user(g.USER_REMOVED, account_key=ACCOUNT)


def test_user_removed() -> None:
    user_id = g.USER_REMOVED["id"]
    assert user_removed(user_id, account_key=ACCOUNT) == [
        Delete(Placement("entity", "azure_user", user_id), user_id),
        Delete(Placement("relationship", "azure_user", user_id), f"{ACCOUNT}|has|{user_id}"),
    ]


def test_user_removed_deletes_what_map_user_created() -> None:
    created = map_user(g.USER_DISABLED, account_key=ACCOUNT)
    deleted = user_removed(g.USER_DISABLED["id"], account_key=ACCOUNT)
    assert [(op.placement, op.key) for op in created] == [(op.placement, op.key) for op in deleted]


def test_user_select_covers_every_property_read_and_not_sign_in() -> None:
    assert set(USER_SELECT) == set(g.USER_FULL)
    assert "signInActivity" not in USER_SELECT
    assert len(set(USER_SELECT)) == len(USER_SELECT)


@pytest.mark.parametrize(
    ("activity", "expected"),
    [
        pytest.param(None, {}, id="none"),
        pytest.param({}, {}, id="empty"),
        pytest.param(
            g.SIGN_IN_FULL,
            {
                "lastSignInDateTime": "2024-03-01T10:00:00.1234567Z",
                "lastSignInOn": 1709287200123,
                "lastSignInRequestId": "a1b2c3d4-0000-4000-8000-000000000001",
                "lastNonInteractiveSignInDateTime": "2024-03-02T08:15:30Z",
                "lastNonInteractiveSignInOn": 1709367330000,
                "lastNonInteractiveSignInRequestId": "a1b2c3d4-0000-4000-8000-000000000002",
                "lastSuccessfulSignInDateTime": "2024-03-01T10:00:00Z",
                "lastSuccessfulSignInOn": 1709287200000,
                "lastSuccessfulSignInRequestId": "a1b2c3d4-0000-4000-8000-000000000001",
            },
            id="full-fractional-seconds",
        ),
        pytest.param(
            g.SIGN_IN_PARTIAL,
            {
                "lastSignInDateTime": "2024-02-29T23:59:59.5Z",
                "lastSignInOn": 1709251199500,
                "lastSignInRequestId": "a1b2c3d4-0000-4000-8000-000000000003",
            },
            id="missing-and-null-fields-omitted",
        ),
        pytest.param(
            g.SIGN_IN_WITH_UNKNOWN_KEYS,
            {
                "lastSignInDateTime": "2024-03-01T11:00:00+01:00",
                "lastSignInOn": 1709287200000,
                "lastSignInRequestId": "a1b2c3d4-0000-4000-8000-000000000004",
            },
            id="unknown-keys-ignored-offset",
        ),
    ],
)
def test_sign_in_properties(activity: dict[str, Any] | None, expected: dict[str, Any]) -> None:
    assert sign_in_properties(activity) == expected
    assert set(expected) <= set(SIGN_IN_PROPERTIES)


def test_sign_in_properties_rejects_a_malformed_timestamp() -> None:
    with pytest.raises(ValueError, match="last week"):
        sign_in_properties({"lastSignInDateTime": "last week"})


def test_with_sign_in_replaces_previous_sign_in_and_is_pure() -> None:
    entity = map_user(g.USER_FULL, account_key=ACCOUNT)[0].obj
    first = with_sign_in(entity, sign_in_properties(g.SIGN_IN_FULL))
    assert first == {**FULL_USER_ENTITY, **sign_in_properties(g.SIGN_IN_FULL)}
    assert check_entity(first) == []
    second = with_sign_in(first, sign_in_properties(g.SIGN_IN_PARTIAL))
    partial = {
        "lastSignInDateTime": g.SIGN_IN_PARTIAL["lastSignInDateTime"],
        "lastSignInOn": 1709251199500,
        "lastSignInRequestId": g.SIGN_IN_PARTIAL["lastSignInRequestId"],
    }
    assert second == {**FULL_USER_ENTITY, **partial}
    assert with_sign_in(second, {}) == FULL_USER_ENTITY
    assert entity == FULL_USER_ENTITY  # inputs untouched
    assert first == {**FULL_USER_ENTITY, **sign_in_properties(g.SIGN_IN_FULL)}


def test_sign_in_survives_a_remap_through_sign_in_of() -> None:
    old = with_sign_in(map_user(g.USER_FULL, account_key=ACCOUNT)[0].obj, sign_in_properties(g.SIGN_IN_FULL))
    renamed = map_user({**g.USER_FULL, "jobTitle": "Store Manager"}, account_key=ACCOUNT)[0].obj
    carried = with_sign_in(renamed, sign_in_of(old))
    assert carried == {**old, "jobTitle": "Store Manager"}


@pytest.mark.parametrize("sign_in", [{"lastSignIn": 1}, {"@odata.type": "#microsoft.graph.signInActivity"}])
def test_with_sign_in_refuses_other_properties(sign_in: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="not sign-in properties"):
        with_sign_in(FULL_USER_ENTITY, sign_in)
