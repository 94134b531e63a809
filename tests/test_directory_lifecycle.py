"""Partial updates, and soft-deleted / restored / purged users and (nested) groups, end to end.

Every scenario runs twice: with the simulator sending only the changed properties of updated
objects, and with it sending every selected property (both are what Graph may do: "at least the
properties that have been updated"). After every round the whole change log is replayed: it must
rebuild the mirror, and no relationship may point at an entity that is not there.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from monitor.app import Runtime
from monitor.model.account import account_key
from monitor.records import ChangeRecord
from monitor.simulator import SimTenant, Simulator, seed
from monitor.sync import sync_tenant
from tests.conftest import TENANT_ID
from tests.directory_helpers import dangling, expected_mirror, replay

ACCOUNT_KEY = account_key(TENANT_ID)
Summary = set[tuple[str, str, str | None]]


@pytest.fixture(params=["changed", "all"], autouse=True)
def update_mode(request: pytest.FixtureRequest, tenant: SimTenant) -> str:
    mode: str = request.param
    tenant.delta.updated_properties = mode  # type: ignore[assignment]
    return mode


async def sync(runtime: Runtime) -> list[ChangeRecord]:
    """One `monitor sync`; checks the replayed log against the mirror (and for dangling
    relationships) and returns the records it emitted."""
    store = runtime.store(TENANT_ID)
    before = await store.last_seq()
    _, failures = await sync_tenant(runtime, runtime.settings.tenants[0])
    assert not failures, failures
    everything = await store.read_changes(0, 10_000_000)
    state = replay(everything)
    assert state == await store.mirror_dump()
    assert dangling(state) == []
    return [r for r in everything if r["seq"] > before]


def summary(records: list[ChangeRecord]) -> Summary:
    """(op, key, reason) of each record."""
    return {(r["op"], r["key"], r.get("reason")) for r in records}


def memberships_of(tenant: SimTenant, object_id: str) -> tuple[set[str], set[str]]:
    """Keys of the memberships where `object_id` is the member, and where it is the group."""
    as_member = {f"{g}|has|{object_id}" for g, members in tenant.members.items() if object_id in members}
    as_group = {f"{object_id}|has|{m}" for m in tenant.members.get(object_id, {})}
    return as_member, as_group


async def leftovers(runtime: Runtime) -> list[str]:
    """Parked hashes and soft-deleted marks left in Redis."""
    store = runtime.store(TENANT_ID)
    found = [key async for key in store.redis.scan_iter(match=store.keys.parked("*"))]
    found += list(await store.redis.smembers(store.keys.soft_deleted))
    return sorted(str(k) for k in found)


# -- partial updates ------------------------------------------------------------------------------


async def test_an_update_keeps_what_it_does_not_carry(runtime: Runtime, tenant: SimTenant, update_mode: str) -> None:
    ada = tenant.add_user(
        displayName="Ada Lovelace",
        userPrincipalName="ada@contoso.example",
        mail="ada@contoso.example",
        mobilePhone="+1 555 0100",
        accountEnabled=True,
    )
    team = tenant.add_group(
        displayName="Analytical Engines",
        mailEnabled=True,
        mail="engines@contoso.example",
        mailNickname="engines",
        securityEnabled=False,
        groupTypes=["Unified"],
    )
    await sync(runtime)
    tenant.update_user(ada, jobTitle="Countess", mobilePhone=None)
    tenant.update_group(team, description="Difference and analytical")

    records = {r["key"]: r for r in await sync(runtime)}

    assert set(records) == {ada, team}
    assert records[ada]["changed"] == ["jobTitle", "mobilePhone"]
    after = records[ada]["after"]
    assert after is not None
    assert (after["displayName"], after["userPrincipalName"], after["mail"]) == (
        "Ada Lovelace",
        "ada@contoso.example",
        "ada@contoso.example",
    )
    assert after["accountEnabled"] is True and after["jobTitle"] == "Countess" and "mobilePhone" not in after
    # createdOn is kept beside the entity (the entity alone does not say createdDateTime).
    assert records[team]["changed"] == ["description"]
    team_after = records[team]["after"]
    assert team_after is not None
    assert team_after["mail"] == "engines@contoso.example" and "createdOn" in team_after
    assert await runtime.store(TENANT_ID).mirror_dump() == expected_mirror(tenant, ACCOUNT_KEY)


# -- users ----------------------------------------------------------------------------------------


async def test_a_soft_deleted_user_leaves_with_its_memberships_and_comes_back(
    runtime: Runtime, tenant: SimTenant
) -> None:
    seed(tenant, users=30, groups=5, memberships=80)
    await sync(runtime)
    user = max(tenant.users, key=lambda u: len(memberships_of(tenant, u)[0]))
    as_member, _ = memberships_of(tenant, user)
    assert len(as_member) >= 2
    own = {user, f"{ACCOUNT_KEY}|has|{user}"}

    tenant.soft_delete_user(user)
    deleted = await sync(runtime)
    assert summary(deleted) == {("delete", k, None) for k in own} | {("delete", k, "member_deleted") for k in as_member}
    assert await runtime.store(TENANT_ID).mirror_dump() == expected_mirror(tenant, ACCOUNT_KEY)

    tenant.restore_user(user)
    restored = await sync(runtime)
    assert summary(restored) == {("upsert", k, None) for k in own} | {
        ("upsert", k, "member_restored") for k in as_member
    }
    assert await runtime.store(TENANT_ID).mirror_dump() == expected_mirror(tenant, ACCOUNT_KEY)
    assert await leftovers(runtime) == []

    tenant.soft_delete_user(user)
    await sync(runtime)
    tenant.hard_delete_user(user)  # purged from deleted items
    assert await sync(runtime) == []
    assert await leftovers(runtime) == []


async def test_a_user_deleted_and_purged_between_two_rounds(runtime: Runtime, tenant: SimTenant) -> None:
    seed(tenant, users=20, groups=4, memberships=50)
    await sync(runtime)
    user = max(tenant.users, key=lambda u: len(memberships_of(tenant, u)[0]))
    as_member, _ = memberships_of(tenant, user)
    tenant.soft_delete_user(user)
    tenant.hard_delete_user(user)
    records = await sync(runtime)
    assert summary(records) == {("delete", user, None), ("delete", f"{ACCOUNT_KEY}|has|{user}", None)} | {
        ("delete", k, "member_deleted") for k in as_member
    }
    assert await leftovers(runtime) == []


# -- nested groups --------------------------------------------------------------------------------


def nested(tenant: SimTenant) -> tuple[str, str, list[str], str]:
    """A parent group holding a child group that holds two users and a device."""
    users = [tenant.add_user(displayName=f"User {i}", userPrincipalName=f"u{i}@contoso.example") for i in range(3)]
    parent = tenant.add_group(displayName="Parent", securityEnabled=True, mailEnabled=False)
    child = tenant.add_group(displayName="Child", securityEnabled=True, mailEnabled=False)
    device = tenant.add_directory_object("device", displayName="Kiosk-07")
    tenant.add_member(parent, child)
    tenant.add_member(parent, users[2])
    for member in (users[0], users[1], device):
        tenant.add_member(child, member)
    return parent, child, users, device


async def test_a_nested_group_soft_deleted_restored_and_purged(runtime: Runtime, tenant: SimTenant) -> None:
    parent, child, users, device = nested(tenant)
    await sync(runtime)
    own = {child, f"{ACCOUNT_KEY}|has|{child}"}
    as_group = {f"{child}|has|{m}" for m in (users[0], users[1], device)}

    tenant.soft_delete_group(child)
    deleted = await sync(runtime)
    assert summary(deleted) == (
        {("delete", k, None) for k in own}
        | {("delete", k, "group_deleted") for k in as_group}
        | {("delete", f"{parent}|has|{child}", "member_deleted"), ("delete", device, None)}
    )
    assert await runtime.store(TENANT_ID).mirror_dump() == expected_mirror(tenant, ACCOUNT_KEY)

    tenant.restore_group(child)
    restored = await sync(runtime)
    assert summary(restored) == (
        {("upsert", k, None) for k in own}
        | {("upsert", k, "group_restored") for k in as_group}
        | {("upsert", f"{parent}|has|{child}", "member_restored"), ("upsert", device, None)}
    )
    [placeholder] = [r for r in restored if r["key"] == device]
    assert (placeholder["after"] or {}).get("displayName") == "Kiosk-07"
    assert await runtime.store(TENANT_ID).mirror_dump() == expected_mirror(tenant, ACCOUNT_KEY)
    assert await leftovers(runtime) == []

    tenant.soft_delete_group(child)
    await sync(runtime)
    tenant.hard_delete_group(child)
    assert await sync(runtime) == []
    assert await runtime.store(TENANT_ID).mirror_dump() == expected_mirror(tenant, ACCOUNT_KEY)
    assert await leftovers(runtime) == []


@pytest.mark.parametrize("restore_first", ["user", "group"])
async def test_a_member_and_its_group_both_deleted_come_back_in_either_order(
    runtime: Runtime, tenant: SimTenant, restore_first: str
) -> None:
    parent, child, users, _ = nested(tenant)
    await sync(runtime)
    edge = f"{child}|has|{users[0]}"
    tenant.soft_delete_user(users[0])
    tenant.soft_delete_group(child)
    deleted = await sync(runtime)
    assert [r.get("reason") for r in deleted if r["key"] == edge] == ["member_deleted"]

    restores: list[Callable[[], None]] = [lambda: tenant.restore_user(users[0]), lambda: tenant.restore_group(child)]
    first, second = restores if restore_first == "user" else restores[::-1]
    first()
    assert edge not in {r["key"] for r in await sync(runtime)}, "one end is still deleted"
    second()
    again = [r for r in await sync(runtime) if r["key"] == edge]
    last_back = "group" if restore_first == "user" else "member"
    assert [(r["op"], r["reason"]) for r in again] == [("upsert", f"{last_back}_restored")]
    assert await runtime.store(TENANT_ID).mirror_dump() == expected_mirror(tenant, ACCOUNT_KEY)
    assert await leftovers(runtime) == []


async def test_a_purged_group_takes_its_parked_memberships_with_it(runtime: Runtime, tenant: SimTenant) -> None:
    """A member deleted with its group; the group purged; the member restored: the membership
    to the purged group must not come back."""
    _, child, users, _ = nested(tenant)
    await sync(runtime)
    tenant.soft_delete_user(users[0])
    tenant.soft_delete_group(child)
    await sync(runtime)
    tenant.hard_delete_group(child)
    assert await sync(runtime) == []
    tenant.restore_user(users[0])
    restored = await sync(runtime)
    assert {r["key"] for r in restored} == {users[0], f"{ACCOUNT_KEY}|has|{users[0]}"}
    assert await leftovers(runtime) == []


# -- resyncs --------------------------------------------------------------------------------------


async def test_deleted_while_the_token_expired_then_restored(
    runtime: Runtime, tenant: SimTenant, sim: Simulator
) -> None:
    """A user soft-deleted while the delta tokens were lost: the full round's silence about it
    is taken as a soft deletion (its memberships are parked), and its restore brings them back."""
    parent, child, users, _ = nested(tenant)
    await sync(runtime)
    tenant.soft_delete_user(users[2])
    for resource in ("users", "groups"):
        sim.expire_delta_tokens(TENANT_ID, resource, "410")
    records = await sync(runtime)
    assert summary(records) >= {("delete", f"{parent}|has|{users[2]}", "member_deleted")}
    assert await runtime.store(TENANT_ID).mirror_dump() == expected_mirror(tenant, ACCOUNT_KEY)
    tenant.restore_user(users[2])
    restored = await sync(runtime)
    assert ("upsert", f"{parent}|has|{users[2]}", "member_restored") in summary(restored)
    assert await runtime.store(TENANT_ID).mirror_dump() == expected_mirror(tenant, ACCOUNT_KEY)
