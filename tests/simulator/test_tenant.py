"""The tenant model: mutations, the journal, deleted items, copy-on-write member dicts."""

from __future__ import annotations

import pytest

from monitor.simulator.properties import USER_TYPE
from monitor.simulator.tenant import SimTenant
from tests.simulator.support import TENANT_ID


@pytest.fixture
def tenant() -> SimTenant:
    return SimTenant(TENANT_ID, "Contoso", rng_seed=1)


def test_every_mutation_bumps_the_version_and_journals(tenant: SimTenant) -> None:
    ada = tenant.add_user(displayName="Ada")
    group = tenant.add_group(displayName="G")
    tenant.add_member(group, ada)
    assert tenant.update_user(ada, jobTitle="CTO") == frozenset({"jobTitle"})
    assert [change.version for change in tenant.journal] == [1, 2, 3, 4]
    assert tenant.version == 4
    assert tenant.journal[-1].detail == frozenset({"jobTitle"})


def test_update_records_only_real_changes(tenant: SimTenant) -> None:
    ada = tenant.add_user(displayName="Ada")
    version = tenant.version
    assert tenant.update_user(ada, displayName="Ada", mobilePhone=None) == frozenset()
    assert tenant.version == version
    assert "mobilePhone" not in tenant.users[ada]  # clearing a never-set property leaves it absent


def test_objects_are_replaced_not_changed_in_place(tenant: SimTenant) -> None:
    ada = tenant.add_user(displayName="Ada")
    before = tenant.users[ada]
    tenant.update_user(ada, displayName="Ada L.")
    assert before["displayName"] == "Ada" and tenant.users[ada]["displayName"] == "Ada L."


def test_member_dicts_are_copied_on_the_first_write_after_a_snapshot(tenant: SimTenant) -> None:
    group, ada, bob = tenant.add_group(displayName="G"), tenant.add_user(), tenant.add_user()
    tenant.add_member(group, ada)
    tenant.begin_snapshot()
    held = tenant.members[group]
    tenant.add_member(group, bob)
    assert held == {ada: USER_TYPE}
    assert tenant.members[group] == {ada: USER_TYPE, bob: USER_TYPE}


def test_soft_delete_restore_and_purge(tenant: SimTenant) -> None:
    group, ada = tenant.add_group(displayName="G"), tenant.add_user(displayName="Ada")
    tenant.add_member(group, ada)
    tenant.soft_delete_group(group)
    assert tenant.deleted_groups[group]["deletedDateTime"]
    with pytest.raises(KeyError):
        tenant.add_member(group, ada)
    tenant.restore_group(group)
    assert tenant.groups[group]["deletedDateTime"] is None
    assert tenant.members[group] == {ada: USER_TYPE}
    tenant.soft_delete_user(ada)
    tenant.hard_delete_user(ada)  # purges from deletedItems
    assert ada not in tenant.deleted_users and tenant.members[group] == {}


def test_invalid_mutations_are_refused(tenant: SimTenant) -> None:
    group, ada = tenant.add_group(displayName="G"), tenant.add_user()
    with pytest.raises(ValueError, match="cannot be set"):
        tenant.add_user(id="mine")
    with pytest.raises(ValueError, match="cannot be set"):
        tenant.update_group(group, colour="blue")
    tenant.add_member(group, ada)
    with pytest.raises(ValueError):
        tenant.add_member(group, ada)
    with pytest.raises(ValueError):
        tenant.add_member(group, group)
    with pytest.raises(KeyError):
        tenant.remove_member(group, "nobody")
    with pytest.raises(ValueError):
        tenant.add_directory_object("printer", displayName="P")


def test_bulk_load_refuses_members_for_existing_groups(tenant: SimTenant) -> None:
    group = tenant.add_group(displayName="Old")
    with pytest.raises(ValueError):
        tenant.bulk_load([], [], {group: {}})
