"""A small, consistent directory for publisher tests, built through the real mappers.

Graph-shaped objects come from `tests/data/graph_directory.py` plus generated users and groups (fixed
GUIDs), so the mirror spreads over several scopes. Every membership points at an entity the
mirror holds (a user, a group, or a placeholder member), as after a complete sync.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from monitor.model.account import account_key, map_account
from monitor.model.groups import (
    GROUP_FAMILY,
    group_removed,
    map_group,
    map_member_change,
    placeholder_removed,
)
from monitor.model.intune_apps import DetectedAppCatalog, map_install_row, map_installed, map_managed_app
from monitor.model.intune_devices import map_device
from monitor.model.types import Delete, JsonObject, Kind, Op, relationship_placement
from monitor.model.users import map_user, user_removed
from monitor.records import ChangeRecord
from monitor.scopes import ScopeId, scope_of
from monitor.simulator.jupiterone import SimJupiterOne, strip_system
from monitor.sinks.j1_payload import END_LABELS
from monitor.sinks.jupiterone import ACCOUNT_NAME_TAG, j1_scope_name
from monitor.store import PageWrite, TenantStore
from tests.data import graph_directory as gd
from tests.intune import data as intune

TENANT_ID = gd.TENANT_ID
ACCOUNT_KEY = account_key(TENANT_ID)
PREFIX = "monitor"
NOW = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)
_IDS = uuid.UUID("0f6c2d8e-3b1a-4c5d-9e7f-8a9b0c1d2e3f")

# The nested group that GROUP_ROLE_ASSIGNABLE contains (MEMBER_GROUP): present, so the edge has an end.
NESTED_GROUP: dict[str, Any] = {
    **gd.GROUP_SECURITY,
    "id": gd.MEMBER_GROUP["id"],
    "displayName": "Helpdesk Tier 1",
    "mailNickname": "helpdesk-t1",
    "members@delta": [],
}
GROUPS: tuple[dict[str, Any], ...] = (
    gd.GROUP_SECURITY,
    gd.GROUP_M365,
    gd.GROUP_ROLE_ASSIGNABLE,
    gd.GROUP_NO_DISPLAY_NAME,
    NESTED_GROUP,
)


def guid(name: str) -> str:
    return str(uuid.uuid5(_IDS, name))


def generated_user(n: int, **overrides: Any) -> dict[str, Any]:
    first, last = f"Given{n}", f"Family{n}"
    user = {
        **gd.USER_NULLS,
        "id": guid(f"user-{n}"),
        "displayName": f"{first} {last}",
        "givenName": first,
        "surname": last,
        "userPrincipalName": f"user{n}@contoso.com",
        "mail": f"user{n}@contoso.com",
        "jobTitle": "Engineer",
        "userType": "Member",
        "accountEnabled": True,
    }
    return {**user, **overrides}


def generated_group(n: int, members: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    return {
        **gd.GROUP_SECURITY,
        "id": guid(f"group-{n}"),
        "displayName": f"Team {n}",
        "mailNickname": f"team-{n}",
        "members@delta": list(members),
    }


def user_member(user: dict[str, Any]) -> dict[str, Any]:
    return {"@odata.type": "#microsoft.graph.user", "id": user["id"]}


def removed(member: dict[str, Any]) -> dict[str, Any]:
    return {**member, "@removed": {"reason": "deleted"}}


def user_ops(users: Iterable[dict[str, Any]]) -> list[Op]:
    return [op for user in users for op in map_user(user, account_key=ACCOUNT_KEY)]


def group_ops(groups: Iterable[dict[str, Any]]) -> list[Op]:
    ops: list[Op] = []
    for group in groups:
        ops.extend(map_group(group, account_key=ACCOUNT_KEY))
        for member in group.get("members@delta", []):
            ops.extend(map_member_change(group["id"], member))
    return ops


GENERATED_USERS = [generated_user(n) for n in range(40)]
GENERATED_GROUPS = [
    generated_group(n, [user_member(GENERATED_USERS[(n * 3 + k) % 40]) for k in range(5)]) for n in range(12)
]


DEVICES = [
    {**intune.IPHONE, "userId": GENERATED_USERS[0]["id"], "usersLoggedOn": [{"userId": GENERATED_USERS[0]["id"]}]},
    {**intune.IPHONE, "id": "5a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d", "userId": GENERATED_USERS[1]["id"]},
]
DETECTED = [
    {"id": "d-0001", "displayName": "Contoso VPN", "version": "2.1"},
    {"id": "d-0002", "displayName": "Notepad++", "version": "8.6"},
]
KNOWN_USERS = {user["id"] for user in GENERATED_USERS}


def intune_ops() -> list[Op]:
    """Two devices with their agents and users, a managed app assigned to both, detected apps installed."""
    ops: list[Op] = []
    catalog = DetectedAppCatalog()
    for app in DETECTED:
        catalog.add(app)
    ops += list(catalog.entities())
    ops.append(map_managed_app(intune.WIN32_APP))
    for device in DEVICES:
        mapped = map_device(device, known_users=KNOWN_USERS)
        ops += mapped
        device_type = mapped[0].obj["_type"]
        row = {
            "DeviceId": device["id"],
            "AppVersion": "3.2.1",
            "HexErrorCode": "0x00000000",
            "AppInstallState": 1,
            "AppInstallStateDetails": 0,
        }
        assigned = map_install_row(intune.WIN32_APP, row, device_type)
        assert assigned is not None
        ops.append(assigned)
        ops += [map_installed(app, device["id"], device_type) for app in DETECTED]
    return ops


def initial_ops() -> list[Op]:
    """The account, every fixture user, 40 generated users, the fixture and generated groups with members."""
    account = map_account(gd.ORGANIZATION, key=ACCOUNT_KEY, display_name="Contoso Production")
    return [account, *user_ops([*gd.USERS, *GENERATED_USERS]), *group_ops([*GROUPS, *GENERATED_GROUPS])]


async def commit(store: TenantStore, ops: Iterable[Op]) -> list[ChangeRecord]:
    return await store.commit(PageWrite(ops=list(ops)), source="test", observed_at=NOW)


async def seed(store: TenantStore) -> None:
    await commit(store, initial_ops())


async def group_deletion(store: TenantStore, group_id: str) -> list[Op]:
    """What the groups source does for a removed group: the group, its HAS edge, and its memberships."""
    ops: list[Op] = list(group_removed(group_id, account_key=ACCOUNT_KEY))
    placement = relationship_placement(GROUP_FAMILY, group_id)
    for key in await store.scope_keys(scope_of(placement), prefix=f"{group_id}|"):
        ops.append(Delete(placement, key))
    return ops


def placeholder_deletion(member_id: str) -> Delete:
    return placeholder_removed(member_id)


def user_deletion(user_id: str) -> list[Op]:
    return list(user_removed(user_id, account_key=ACCOUNT_KEY))


async def mark_every_scope_dirty(store: TenantStore) -> None:
    """What a blind re-publication of the whole tenant does (the reconciliation before it read back)."""
    for scope in await store.known_scopes():
        await store.redis.hincrby(store.keys.dirty, str(scope), 1)


async def metric_values(store: TenantStore) -> dict[str, int]:
    """The tenant's metric series (counters and gauges) as kept in Redis."""
    raw = await store.redis.hgetall(store.keys.metrics)
    return {(k.decode() if isinstance(k, bytes) else k): int(float(v)) for k, v in raw.items()}


async def dirty_counters(store: TenantStore) -> dict[str, int]:
    """The tenant's dirty scopes and their change counters."""
    raw = await store.redis.hgetall(store.keys.dirty)
    return {(k.decode() if isinstance(k, bytes) else k): int(v) for k, v in raw.items()}


# -- comparing JupiterOne with the mirror -------------------------------------------------------------


def j1_prefix(tenant_id: str = TENANT_ID) -> str:
    return f"{PREFIX}/{tenant_id}/"


async def mirror_by_scope(store: TenantStore) -> dict[tuple[Kind, str], tuple[ScopeId, JsonObject]]:
    found: dict[tuple[Kind, str], tuple[ScopeId, JsonObject]] = {}
    for scope in await store.known_scopes():
        for key, obj in (await store.scope_objects(scope)).items():
            found[(scope.kind, key)] = (scope, obj)
    return found


async def assert_j1_matches_mirror(
    sim: SimJupiterOne, store: TenantStore, *, account_name: str | None = None, exclude: Iterable[str] = ()
) -> None:
    """JupiterOne holds exactly the mirror: the same entities and relationships with the same properties,
    each in the upload scope the mirror puts it in (a relationship with its anchor), each relationship
    joining the entities it names where they live, and (with `account_name`) `tag.AccountName` on
    every entity. `exclude`: keys known to be left out."""
    skip = set(exclude)
    mirror = await mirror_by_scope(store)
    graph = sim.graph_for_prefix(j1_prefix(store.tenant))  # raises if a key sits in two scopes
    for kind, uploaded in (("entity", graph.entities), ("relationship", graph.relationships)):
        expected = {key: entry for (k, key), entry in mirror.items() if k == kind and key not in skip}
        assert sorted(uploaded) == sorted(expected), f"{kind} keys differ"
        for key, obj in uploaded.items():
            scope, mirrored = expected[key]
            assert obj["_scope"] == j1_scope_name(PREFIX, store.tenant, scope.upload)
            plain = {k: v for k, v in strip_system(obj).items() if k not in END_LABELS}
            if kind == "entity" and account_name is not None:
                assert plain.pop(ACCOUNT_NAME_TAG) == account_name
            if kind == "relationship":
                assert obj["_fromEntityScope"] == graph.entities[plain["_fromEntityKey"]]["_scope"]
                assert obj["_toEntityScope"] == graph.entities[plain["_toEntityKey"]]["_scope"]
            assert plain == mirrored, f"{kind} {key} differs"
