"""Soft deletes under every reading of what Graph leaves undocumented (monitor.sources.parking).

Graph documents that a soft-deleted object is `@removed` with reason `changed` and that a removed
member entry means the membership was removed "either by removing the membership or by deleting
the user object itself" (https://learn.microsoft.com/en-us/graph/delta-query-groups). It does not
say whether a soft delete also produces such entries, whether a restored group comes with its
members, or whether a full round lists memberships of soft-deleted members. The simulator sends
only what is documented, so these pages are written by hand and fed to the sources directly,
against the real Redis: under each reading every membership leaves and comes back exactly once,
and no relationship ever points at a missing entity.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from monitor.app import Runtime
from monitor.model.account import account_key, map_account
from monitor.records import ChangeRecord
from monitor.simulator import SimTenant
from monitor.sources.base import DeltaSource
from monitor.sources.groups import GroupsSource
from monitor.sources.users import UsersSource
from monitor.store import PageWrite
from tests.conftest import TENANT_ID
from tests.directory_helpers import dangling, replay

ACCOUNT = account_key(TENANT_ID)
NOW = datetime(2026, 12, 1, tzinfo=UTC)
USER_TYPE, GROUP_TYPE = "#microsoft.graph.user", "#microsoft.graph.group"
PARENT, CHILD = "0a000000-0000-4000-8000-00000000000p", "0a000000-0000-4000-8000-00000000000c"
ADA, BOB = "0b000000-0000-4000-8000-00000000000a", "0b000000-0000-4000-8000-00000000000b"


def group(group_id: str, name: str, *members: tuple[str, str], removed: bool = False) -> dict[str, Any]:
    entries = [
        {"@odata.type": t, "id": m, **({"@removed": {"reason": "deleted"}} if removed else {})} for m, t in members
    ]
    obj: dict[str, Any] = {"id": group_id, "displayName": name, "securityEnabled": True, "mailEnabled": False}
    return {**obj, "members@delta": entries} if members else obj


def user(user_id: str, name: str) -> dict[str, Any]:
    return {"id": user_id, "displayName": name, "userPrincipalName": f"{name.lower()}@contoso.example"}


def slice_of(group_id: str, *members: tuple[str, str], removed: bool = False) -> dict[str, Any]:
    """A later appearance of a group carrying only a slice of members@delta."""
    return {key: value for key, value in group(group_id, "", *members, removed=removed).items() if key != "displayName"}


def gone(object_id: str, reason: str = "changed") -> dict[str, Any]:
    return {"id": object_id, "@removed": {"reason": reason}}


class Directory:
    def __init__(self, runtime: Runtime) -> None:
        context = runtime.context(runtime.settings.tenants[0])
        self.store = context.store
        self.users: DeltaSource = UsersSource(context)
        self.groups: DeltaSource = GroupsSource(context)

    async def page(
        self, source: DeltaSource, *objects: dict[str, Any], full: bool = False
    ) -> set[tuple[str, str, str | None]]:
        """Feed one page; (op, key, reason) of its records. The whole log, replayed, must match the
        mirror and hold no dangling relationship."""
        page_ops = await source.page_ops(list(objects), full=full)
        write = await source.expand(page_ops.ops, page_ops.hint)
        records: list[ChangeRecord] = await self.store.commit(write, source=source.name, observed_at=NOW)
        state = replay(await self.store.read_changes(0, 100_000))
        assert state == await self.store.mirror_dump()
        assert dangling(state) == []
        return {(r["op"], r["key"], r.get("reason")) for r in records}


@pytest.fixture
async def directory(runtime: Runtime, tenant: SimTenant) -> Directory:
    """The account, and a parent group holding a child group that holds Ada and Bob."""
    found = Directory(runtime)
    account = map_account(tenant.organization, key=ACCOUNT, display_name=None)
    await found.store.commit(PageWrite(ops=[account]), source="account", observed_at=NOW)
    await found.page(found.users, user(ADA, "Ada"), user(BOB, "Bob"))
    await found.page(
        found.groups,
        group(PARENT, "Parent", (CHILD, GROUP_TYPE)),
        group(CHILD, "Child", (ADA, USER_TYPE), (BOB, USER_TYPE)),
    )
    return found


CHILD_EDGES = {f"{CHILD}|has|{ADA}", f"{CHILD}|has|{BOB}"}
CHILD_OWN = {CHILD, f"{ACCOUNT}|has|{CHILD}"}


@pytest.mark.parametrize("restore", ["props-only", "with-members", "members-on-a-later-page"])
async def test_a_restored_group_gets_its_memberships_back_once(directory: Directory, restore: str) -> None:
    deleted = await directory.page(directory.groups, gone(CHILD))
    assert deleted == (
        {("delete", k, None) for k in CHILD_OWN}
        | {("delete", k, "group_deleted") for k in CHILD_EDGES}
        | {("delete", f"{PARENT}|has|{CHILD}", "member_deleted")}
    )
    members = ((ADA, USER_TYPE), (BOB, USER_TYPE))
    pages = {
        "props-only": [[group(CHILD, "Child")]],
        "with-members": [[group(CHILD, "Child", *members)]],
        "members-on-a-later-page": [[group(CHILD, "Child")], [slice_of(CHILD, *members)]],
    }[restore]
    restored = set()
    for objects in pages:
        restored |= await directory.page(directory.groups, *objects)
    assert restored == (
        {("upsert", k, None) for k in CHILD_OWN}
        | {("upsert", k, "group_restored") for k in CHILD_EDGES}
        | {("upsert", f"{PARENT}|has|{CHILD}", "member_restored")}
    )


async def test_removal_entries_sent_for_a_soft_deleted_member_are_final(directory: Directory) -> None:
    """If Graph did send a removed entry for the memberships of a soft-deleted user, the membership
    was removed: the user's restore must not bring it back; an addition from Graph does."""
    assert await directory.page(directory.users, gone(ADA)) >= {("delete", f"{CHILD}|has|{ADA}", "member_deleted")}
    assert await directory.page(directory.groups, slice_of(CHILD, (ADA, USER_TYPE), removed=True)) == set()
    restored = await directory.page(directory.users, user(ADA, "Ada"))
    assert {key for _, key, _ in restored} == {ADA, f"{ACCOUNT}|has|{ADA}"}
    assert await directory.page(directory.groups, slice_of(CHILD, (ADA, USER_TYPE))) == {
        ("upsert", f"{CHILD}|has|{ADA}", None)
    }


async def test_a_full_round_listing_a_deleted_member_does_not_bring_it_back(directory: Directory) -> None:
    await directory.page(directory.users, gone(BOB))
    relisted = await directory.page(
        directory.groups,
        group(PARENT, "Parent", (CHILD, GROUP_TYPE)),
        group(CHILD, "Child", (ADA, USER_TYPE), (BOB, USER_TYPE)),
        full=True,
    )
    assert relisted == set()
    assert await directory.page(directory.users, user(BOB, "Bob")) >= {
        ("upsert", f"{CHILD}|has|{BOB}", "member_restored")
    }


async def test_additions_for_a_restored_member_that_the_groups_round_sees_first(directory: Directory) -> None:
    """Graph may announce a restored user's memberships before our users round sees the restore:
    they are parked, and come back with the user, once."""
    await directory.page(directory.users, gone(ADA))
    assert await directory.page(directory.groups, slice_of(CHILD, (ADA, USER_TYPE))) == set()
    restored = await directory.page(directory.users, user(ADA, "Ada"))
    assert ("upsert", f"{CHILD}|has|{ADA}", "member_restored") in restored
    assert await directory.page(directory.groups, slice_of(CHILD, (ADA, USER_TYPE))) == set()


async def test_a_purge_clears_what_was_parked_under_the_other_end(directory: Directory) -> None:
    await directory.page(directory.users, gone(ADA))
    await directory.page(directory.groups, gone(CHILD))
    assert await directory.page(directory.groups, gone(CHILD, "deleted")) == set()
    assert await directory.store.parked([ADA]) == {ADA: {"~": await _tombstone(directory, ADA)}}
    assert await directory.page(directory.users, user(ADA, "Ada")) == {
        ("upsert", ADA, None),
        ("upsert", f"{ACCOUNT}|has|{ADA}", None),
    }
    assert await directory.store.parked([ADA, CHILD]) == {ADA: {}, CHILD: {}}


async def _tombstone(directory: Directory, object_id: str) -> bytes:
    return (await directory.store.parked([object_id]))[object_id]["~"]
