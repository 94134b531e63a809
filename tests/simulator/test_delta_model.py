"""Delta rounds computed from the tenant model (no HTTP): docs/graph.md 7.2-7.5 behaviours."""

from __future__ import annotations

from typing import Any

import pytest

from monitor.simulator.delta import DeltaRequest, plan_round
from monitor.simulator.properties import DEVICE_TYPE, GROUP_TYPE, USER_TYPE
from monitor.simulator.tenant import DeltaOptions, Resource, SimTenant
from tests.simulator.support import TENANT_ID


def _tenant(**options: Any) -> SimTenant:
    return SimTenant(TENANT_ID, "Contoso", delta=DeltaOptions(**options), rng_seed=3)


def _round(tenant: SimTenant, request: DeltaRequest) -> tuple[list[list[dict[str, Any]]], int]:
    """Every page of a round, and the version its deltaLink would carry."""
    planned = plan_round(tenant, request)
    pages, position, page_no = [], 0, 0
    while True:
        values, following = planned.page(position, page_no)
        pages.append(values)
        if following is None:
            return pages, planned.version
        position, page_no = following, page_no + 1


def _objects(tenant: SimTenant, request: DeltaRequest) -> list[dict[str, Any]]:
    pages, _ = _round(tenant, request)
    return [obj for page in pages for obj in page]


def _by_id(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {obj["id"]: obj for obj in objects}


def test_initial_round_returns_every_user_with_selected_properties_only() -> None:
    tenant = _tenant(page_size=2)
    ada = tenant.add_user(displayName="Ada", jobTitle="Engineer", mail="ada@contoso.com")
    bob = tenant.add_user(displayName="Bob")
    carl = tenant.add_user(displayName="Carl")
    pages, _ = _round(tenant, DeltaRequest("users", select=("displayName", "jobTitle")))
    assert [len(page) for page in pages] == [2, 1]
    objects = _by_id([obj for page in pages for obj in page])
    assert objects[ada] == {"id": ada, "displayName": "Ada", "jobTitle": "Engineer"}
    # docs/graph.md 7.3: a property that has never been set doesn't appear at all.
    assert objects[bob] == {"id": bob, "displayName": "Bob"}
    assert set(objects) == {ada, bob, carl}


def test_incremental_round_shows_exactly_the_changes() -> None:
    tenant = _tenant()
    ada = tenant.add_user(displayName="Ada", jobTitle="Engineer")
    tenant.add_user(displayName="Bob")
    _, version = _round(tenant, DeltaRequest("users"))
    tenant.update_user(ada, jobTitle="Architect")
    carl = tenant.add_user(displayName="Carl")
    objects = _by_id(_objects(tenant, DeltaRequest("users", since=version)))
    assert set(objects) == {ada, carl}
    assert objects[ada]["jobTitle"] == "Architect"
    assert objects[ada]["displayName"] == "Ada"  # by default every selected property comes back


def test_changes_to_unselected_properties_are_not_tracked() -> None:
    tenant = _tenant()
    ada = tenant.add_user(displayName="Ada", accountEnabled=True)
    _, version = _round(tenant, DeltaRequest("users", select=("displayName",)))
    tenant.update_user(ada, accountEnabled=False)
    assert _objects(tenant, DeltaRequest("users", select=("displayName",), since=version)) == []
    # Without $select, accountEnabled isn't in the default set either.
    assert _objects(tenant, DeltaRequest("users", since=version)) == []
    tracked = _objects(tenant, DeltaRequest("users", select=("accountEnabled",), since=version))
    assert tracked == [{"id": ada, "accountEnabled": False}]


def test_cleared_property_comes_back_as_null() -> None:
    tenant = _tenant()
    ada = tenant.add_user(displayName="Ada", mobilePhone="+1 555 0100")
    _, version = _round(tenant, DeltaRequest("users"))
    tenant.update_user(ada, mobilePhone=None)
    (obj,) = _objects(tenant, DeltaRequest("users", since=version))
    assert obj["mobilePhone"] is None


def test_minimal_mode_returns_only_changed_properties() -> None:
    tenant = _tenant()
    ada = tenant.add_user(displayName="Ada", jobTitle="Engineer", officeLocation="Seattle")
    _, version = _round(tenant, DeltaRequest("users"))
    tenant.update_user(ada, jobTitle="Architect")
    objects = _objects(tenant, DeltaRequest("users", since=version, minimal=True))
    assert objects == [{"id": ada, "jobTitle": "Architect"}]


def test_removed_reasons_and_restore() -> None:
    tenant = _tenant()
    soft, hard, back = (tenant.add_user(displayName=name) for name in ("Soft", "Hard", "Back"))
    _, version = _round(tenant, DeltaRequest("users"))
    tenant.soft_delete_user(soft)
    tenant.hard_delete_user(hard)
    tenant.soft_delete_user(back)
    tenant.restore_user(back)
    objects = _by_id(_objects(tenant, DeltaRequest("users", since=version)))
    assert objects[soft] == {"id": soft, "@removed": {"reason": "changed"}}
    assert objects[hard] == {"id": hard, "@removed": {"reason": "deleted"}}
    # docs/graph.md 7.4: restored objects reappear as if newly created, in full.
    assert objects[back]["displayName"] == "Back" and "@removed" not in objects[back]


def test_an_object_changed_many_times_appears_once_in_its_last_state() -> None:
    tenant = _tenant()
    ada = tenant.add_user(displayName="Ada")
    _, version = _round(tenant, DeltaRequest("users"))
    for title in ("One", "Two", "Three"):
        tenant.update_user(ada, jobTitle=title)
    assert _objects(tenant, DeltaRequest("users", since=version)) == [
        {"id": ada, "displayName": "Ada", "jobTitle": "Three"}
    ]


def test_groups_initial_round_carries_members_by_default() -> None:
    tenant = _tenant()
    ada = tenant.add_user(displayName="Ada")
    device = tenant.add_directory_object("device", displayName="PC-1")
    parent, child = tenant.add_group(displayName="Parent"), tenant.add_group(displayName="Child")
    for member in (ada, device, child):
        tenant.add_member(parent, member)
    objects = _by_id(_objects(tenant, DeltaRequest("groups")))
    assert objects[parent]["members@delta"] == [
        {"@odata.type": USER_TYPE, "id": ada},
        {"@odata.type": DEVICE_TYPE, "id": device},
        {"@odata.type": GROUP_TYPE, "id": child},
    ]
    # Without members selected there is no members@delta.
    selected = _by_id(_objects(tenant, DeltaRequest("groups", select=("displayName",))))
    assert selected[parent] == {"id": parent, "displayName": "Parent"}


def test_member_changes_show_the_net_effect_per_member() -> None:
    tenant = _tenant()
    users = [tenant.add_user(displayName=f"U{i}") for i in range(4)]
    group = tenant.add_group(displayName="G")
    tenant.add_member(group, users[0])
    tenant.add_member(group, users[1])
    _, version = _round(tenant, DeltaRequest("groups", select=("displayName", "members")))
    tenant.remove_member(group, users[0])  # removed
    tenant.add_member(group, users[2])  # added
    tenant.add_member(group, users[3])  # added then removed: the last entry decides
    tenant.remove_member(group, users[3])
    tenant.remove_member(group, users[1])  # removed then re-added
    tenant.add_member(group, users[1])
    (obj,) = _objects(tenant, DeltaRequest("groups", select=("displayName", "members"), since=version, minimal=True))
    removed = {"reason": "deleted"}
    assert obj == {
        "id": group,
        "members@delta": [
            {"@odata.type": USER_TYPE, "id": users[0], "@removed": removed},
            {"@odata.type": USER_TYPE, "id": users[2]},
            {"@odata.type": USER_TYPE, "id": users[3], "@removed": removed},
            {"@odata.type": USER_TYPE, "id": users[1]},
        ],
    }


def test_hard_deleted_user_leaves_every_group_but_soft_deleted_user_stays() -> None:
    tenant = _tenant()
    soft, hard = tenant.add_user(displayName="Soft"), tenant.add_user(displayName="Hard")
    groups = [tenant.add_group(displayName=f"G{i}") for i in range(3)]
    for group in groups:
        tenant.add_member(group, soft)
        tenant.add_member(group, hard)
    _, version = _round(tenant, DeltaRequest("groups"))
    tenant.soft_delete_user(soft)
    tenant.hard_delete_user(hard)
    objects = _by_id(_objects(tenant, DeltaRequest("groups", since=version)))
    assert set(objects) == set(groups)
    for group in groups:
        # docs/graph.md 7.5: a soft-deleted user keeps its memberships; a hard-deleted one is removed.
        assert objects[group]["members@delta"] == [
            {"@odata.type": USER_TYPE, "id": hard, "@removed": {"reason": "deleted"}}
        ]
        assert soft in tenant.members[group]


def test_large_group_members_are_split_across_appearances_and_pages() -> None:
    tenant = _tenant(page_size=10, page_member_budget=250, member_slice=100)
    members = [tenant.add_user(displayName=f"U{i}") for i in range(620)]
    big = tenant.add_group(displayName="Big")
    small = tenant.add_group(displayName="Small")
    for member in members:
        tenant.add_member(big, member)
    tenant.add_member(small, members[0])
    pages, _ = _round(tenant, DeltaRequest("groups", select=("displayName", "members")))
    appearances = [(index, obj) for index, page in enumerate(pages) for obj in page if obj["id"] == big]
    assert len(appearances) == 7  # 620 members in slices of 100
    assert len({index for index, _ in appearances}) > 1  # the group appears again on later pages
    first, later = appearances[0][1], [obj for _, obj in appearances[1:]]
    assert first["displayName"] == "Big"
    assert all(set(obj) == {"id", "members@delta"} for obj in later)  # repeat_style="minimal"
    seen = [entry["id"] for _, obj in appearances for entry in obj["members@delta"]]
    assert sorted(seen) == sorted(members)
    assert all(sum(len(obj.get("members@delta", [])) for obj in page) <= 250 for page in pages)


def test_full_repeat_style_repeats_the_properties() -> None:
    tenant = _tenant(member_slice=2, repeat_style="full")
    group = tenant.add_group(displayName="G")
    for i in range(5):
        tenant.add_member(group, tenant.add_user(displayName=f"U{i}"))
    appearances = [obj for obj in _objects(tenant, DeltaRequest("groups")) if obj["id"] == group]
    assert len(appearances) == 3
    assert all(obj["displayName"] == "G" for obj in appearances)


def test_duplicates_are_deterministic_and_carry_the_same_state() -> None:
    def objects() -> list[dict[str, Any]]:
        tenant = _tenant(duplicate_rate=0.3, seed=5)
        for i in range(50):
            tenant.add_user(displayName=f"U{i}")
        return _objects(tenant, DeltaRequest("users"))

    first, second = objects(), objects()
    assert first == second
    ids = [obj["id"] for obj in first]
    assert len(ids) > len(set(ids)) == 50
    by_id: dict[str, list[dict[str, Any]]] = {}
    for obj in first:
        by_id.setdefault(obj["id"], []).append(obj)
    assert all(all(copy == copies[0] for copy in copies) for copies in by_id.values())


def test_empty_pages_still_lead_to_the_end_of_the_round() -> None:
    tenant = _tenant(page_size=5, empty_page_rate=0.5, seed=2)
    users = {tenant.add_user(displayName=f"U{i}") for i in range(40)}
    pages, _ = _round(tenant, DeltaRequest("users"))
    assert any(page == [] for page in pages)
    assert {obj["id"] for page in pages for obj in page} == users


def test_filter_limits_the_round_to_the_given_ids() -> None:
    tenant = _tenant()
    ada, bob = tenant.add_user(displayName="Ada"), tenant.add_user(displayName="Bob")
    _, version = _round(tenant, DeltaRequest("users", filter_ids=frozenset({ada})))
    tenant.update_user(ada, displayName="Ada L.")
    tenant.update_user(bob, displayName="Bob M.")
    objects = _objects(tenant, DeltaRequest("users", filter_ids=frozenset({ada}), since=version))
    assert [obj["id"] for obj in objects] == [ada]


def test_a_round_is_a_snapshot_of_its_start() -> None:
    tenant = _tenant(page_size=1, member_slice=1)
    ada = tenant.add_user(displayName="Ada")
    bob = tenant.add_user(displayName="Bob")
    group = tenant.add_group(displayName="G")
    tenant.add_member(group, ada)
    tenant.add_member(group, bob)
    planned = plan_round(tenant, DeltaRequest("groups"))
    tenant.remove_member(group, bob)
    tenant.update_group(group, displayName="Renamed")
    objects: list[dict[str, Any]] = []
    position: int | None = 0
    page_no = 0
    while position is not None:
        values, position = planned.page(position, page_no)
        objects.extend(values)
        page_no += 1
    assert objects[0]["displayName"] == "G"
    assert [entry["id"] for obj in objects for entry in obj["members@delta"]] == [ada, bob]


def test_a_group_created_after_the_token_comes_whole() -> None:
    tenant = _tenant()
    _, version = _round(tenant, DeltaRequest("groups"))
    ada = tenant.add_user(displayName="Ada")
    group = tenant.add_group(displayName="New")
    tenant.add_member(group, ada)
    (obj,) = _objects(tenant, DeltaRequest("groups", since=version, minimal=True))
    assert obj["displayName"] == "New"
    assert obj["members@delta"] == [{"@odata.type": USER_TYPE, "id": ada}]


@pytest.mark.parametrize("resource", ["users", "groups"])
def test_soft_deleted_then_hard_deleted(resource: Resource) -> None:
    tenant = _tenant()
    kind = resource[:-1]
    add = tenant.add_user if kind == "user" else tenant.add_group
    object_id = add(displayName="X")
    _, version = _round(tenant, DeltaRequest(resource))
    if kind == "user":
        tenant.soft_delete_user(object_id)
        tenant.hard_delete_user(object_id)
    else:
        tenant.soft_delete_group(object_id)
        tenant.hard_delete_group(object_id)
    assert _objects(tenant, DeltaRequest(resource, since=version)) == [
        {"id": object_id, "@removed": {"reason": "deleted"}}
    ]
