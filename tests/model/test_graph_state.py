"""Merging delta updates onto the last known Graph state, and the residue kept beside the entity."""

from __future__ import annotations

from typing import Any

import pytest

from monitor.model.graph_state import GROUP_STATE, USER_STATE, merge, reconstruct, residue, selected
from monitor.model.groups import map_group
from monitor.model.users import map_user
from tests.data import graph_directory as g

ACCOUNT = "microsoft_365_account-x"


def test_merge_absent_keeps_null_clears_value_replaces() -> None:
    state = {"displayName": "Ada", "jobTitle": "Engineer", "mobilePhone": "+1 555"}
    update = {"id": "u1", "jobTitle": "Architect", "mobilePhone": None, "officeLocation": "B7", "@odata.x": 1}
    assert merge(state, update, USER_STATE) == {"displayName": "Ada", "jobTitle": "Architect", "officeLocation": "B7"}


@pytest.mark.parametrize("user", g.USERS, ids=lambda u: str(u.get("displayName") or u["id"]))
def test_a_user_is_its_entity_plus_its_residue(user: dict[str, Any]) -> None:
    state = selected(user, USER_STATE)
    entity = map_user(user, account_key=ACCOUNT)[0].obj
    assert reconstruct(entity, residue(state, entity, USER_STATE), USER_STATE) == state


@pytest.mark.parametrize("group", g.GROUPS, ids=lambda x: str(x.get("displayName") or x["id"]))
def test_a_group_is_its_entity_plus_its_residue(group: dict[str, Any]) -> None:
    state = selected(group, GROUP_STATE)
    entity = map_group(group, account_key=ACCOUNT)[0].obj
    assert reconstruct(entity, residue(state, entity, GROUP_STATE), GROUP_STATE) == state


def test_the_residue_is_only_what_the_entity_loses() -> None:
    ada = {"id": "u1", "displayName": "Ada", "userPrincipalName": "ada@contoso.com", "accountEnabled": True}
    nameless = {"id": "u2", "userPrincipalName": "bob@contoso.com"}
    assert residue(selected(ada, USER_STATE), map_user(ada, account_key=ACCOUNT)[0].obj, USER_STATE) == {}
    # The entity falls back to the UPN for its displayName; the residue remembers Graph had none.
    entity = map_user(nameless, account_key=ACCOUNT)[0].obj
    assert residue(selected(nameless, USER_STATE), entity, USER_STATE) == {"displayName": None}
    # A group's mail is mapped only when mailEnabled; timestamps become epoch ms.
    group = {
        "id": "g1",
        "displayName": "G",
        "mailEnabled": False,
        "mail": "g@x",
        "createdDateTime": "2024-01-02T03:04:05Z",
    }
    stored = residue(selected(group, GROUP_STATE), map_group(group, account_key=ACCOUNT)[0].obj, GROUP_STATE)
    assert stored == {"mail": "g@x", "createdDateTime": "2024-01-02T03:04:05Z"}
