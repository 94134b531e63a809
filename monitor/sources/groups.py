"""Groups and memberships from `GET /groups/delta` with `members` (GRAPH.md 7.5; `GroupMember.Read.All`).

Two things here need the mirror, not only the page:

- A removed group takes its memberships with it. They are anchored on the group, so they are all
  in one relationship scope and found by key prefix.
- Members that are neither users nor groups (devices, service principals, contacts) are
  represented by a placeholder entity, as JupiterOne's mapper does for the public integration
  (JUPITERONE.md 1.4). The placeholder exists while at least one group contains the member; the
  set of those groups is kept next to the mirror and changed in the same commit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from monitor.graph.delta import DeltaResource
from monitor.model.groups import GROUP_SELECT, is_placeholder_member, map_group, map_member_change, placeholder_removed
from monitor.model.groups import group_removed as group_removed_ops
from monitor.model.types import Delete, Kind, Op, Placement, Upsert, relationship_placement
from monitor.scopes import scope_of
from monitor.sources.base import PageOps, SourceContext
from monitor.store import MemberOf, PageWrite, TenantStore

GROUP_FAMILY = "azure_user_group"
PLACEHOLDER_FAMILY = "azure_group_member"
GROUPS = DeltaResource("groups", "/v1.0/groups/delta", GROUP_SELECT)
ACCOUNT_KEY_PREFIX = "microsoft_365_account-"
MEMBERSHIP_SEPARATOR = "|has|"


def split_membership(key: str) -> tuple[str, str] | None:
    """(group id, member id) of a membership key; None for "account HAS group"."""
    if key.startswith(ACCOUNT_KEY_PREFIX):
        return None
    group_id, _, member_id = key.partition(MEMBERSHIP_SEPARATOR)
    return (group_id, member_id) if member_id else None


class GroupsSource:
    name = "groups"
    resource = GROUPS
    owned: tuple[tuple[Kind, str], ...] = (
        ("entity", GROUP_FAMILY),
        ("relationship", GROUP_FAMILY),
        ("entity", PLACEHOLDER_FAMILY),
    )

    def __init__(self, context: SourceContext) -> None:
        self._account_key = context.account_key
        self._store = context.store

    def page_ops(self, objects: list[dict[str, Any]]) -> PageOps:
        ops: list[Op] = []
        seen: list[str] = []
        hint = _Hint()
        for group in objects:
            group_id = group["id"]
            if "@removed" in group:
                ops.extend(group_removed_ops(group_id, account_key=self._account_key))
                hint.group_deleted = True
                continue
            # Empty for a repeated appearance that only carries another slice of members@delta.
            upserts: list[Op] = list(map_group(group, account_key=self._account_key))
            for member in group.get("members@delta") or ():
                upserts.extend(map_member_change(group_id, member))
                if is_placeholder_member(member):
                    hint.placeholder_members.add(member["id"])
            ops.extend(upserts)
            seen.extend(op.key for op in upserts if isinstance(op, Upsert))
        return PageOps(ops, seen, hint)

    def placement_of(self, kind: Kind, family: str, key: str) -> Placement:
        if kind == "entity":
            return Placement(kind, family, key)
        membership = split_membership(key)
        anchor = membership[0] if membership else key.rsplit("|", 1)[1]
        return Placement(kind, family, anchor)

    async def expand(self, ops: list[Op], hint: Any = None) -> PageWrite:
        """Add what the page implies beyond itself: cascaded membership deletions and placeholders.

        With the page's `hint`, a page without group deletions or placeholder members (nearly
        every page) costs nothing here; without one (deletions found by absence) every op is looked at.
        """
        if isinstance(hint, _Hint) and not hint.group_deleted:
            if not hint.placeholder_members:
                return PageWrite(ops=ops)
            return await _with_placeholders(self._store, ops, hint.placeholder_members)
        ops = await _with_cascades(self._store, ops)
        return await _with_placeholders(self._store, ops)


async def _with_cascades(store: TenantStore, ops: list[Op]) -> list[Op]:
    """Insert, right after each group deletion, the deletion of that group's memberships."""
    added_in_page: dict[str, set[str]] = {}
    expanded: list[Op] = []
    for op in ops:
        expanded.append(op)
        membership = split_membership(op.key) if op.placement.kind == "relationship" else None
        if membership is not None:
            group_members = added_in_page.setdefault(membership[0], set())
            (group_members.add if isinstance(op, Upsert) else group_members.discard)(op.key)
        elif isinstance(op, Delete) and op.placement.kind == "entity" and op.placement.family == GROUP_FAMILY:
            placement = relationship_placement(GROUP_FAMILY, op.key)
            mirrored = await store.scope_keys(scope_of(placement), prefix=f"{op.key}{MEMBERSHIP_SEPARATOR}")
            doomed = sorted(set(mirrored) | added_in_page.pop(op.key, set()))
            expanded.extend(Delete(placement, key) for key in doomed)
    return expanded


@dataclass(slots=True)
class _Placeholder:
    groups_before: set[str]
    groups: set[str]
    upserted: bool = False


@dataclass(slots=True)
class _Hint:
    group_deleted: bool = False
    placeholder_members: set[str] = field(default_factory=set)


async def _with_placeholders(store: TenantStore, ops: list[Op], known: set[str] | None = None) -> PageWrite:
    """Keep placeholder entities and their group sets in step with the page's membership changes.

    `known`: the placeholder members the page touches, when the mapping already knows them.
    """
    candidates = list(known) if known is not None else _placeholder_candidates(ops)
    if not candidates:
        return PageWrite(ops=ops)
    current = await store.member_of(candidates)
    state = {m: _Placeholder(set(groups), set(groups)) for m, groups in current.items()}
    for op in ops:
        membership = split_membership(op.key) if op.placement.kind == "relationship" else None
        if membership is None or membership[1] not in state:
            if isinstance(op, Upsert) and op.placement.family == PLACEHOLDER_FAMILY and op.key in state:
                state[op.key].upserted = True
            continue
        group_id, member_id = membership
        if isinstance(op, Upsert) and is_placeholder_member(_member_entry(op.obj)):
            state[member_id].groups.add(group_id)
        elif isinstance(op, Delete):
            state[member_id].groups.discard(group_id)
    return _placeholder_write(ops, state)


def _placeholder_candidates(ops: list[Op]) -> list[str]:
    candidates: list[str] = []
    for op in ops:
        membership = split_membership(op.key) if op.placement.kind == "relationship" else None
        if membership is None:
            continue
        if isinstance(op, Upsert) and not is_placeholder_member(_member_entry(op.obj)):
            continue
        candidates.append(membership[1])
    return candidates


def _placeholder_write(ops: list[Op], state: dict[str, _Placeholder]) -> PageWrite:
    write = PageWrite(ops=list(ops))
    for member_id, placeholder in state.items():
        for group_id in placeholder.groups - placeholder.groups_before:
            write.member_of.append(MemberOf(member_id, group_id, True))
        for group_id in placeholder.groups_before - placeholder.groups:
            write.member_of.append(MemberOf(member_id, group_id, False))
        if not placeholder.groups and (placeholder.groups_before or placeholder.upserted):
            write.ops.append(placeholder_removed(member_id))
    return write


def _member_entry(relationship: dict[str, Any]) -> dict[str, Any]:
    """The members@delta shape of a membership relationship, for `is_placeholder_member`."""
    return {"@odata.type": relationship.get("memberType", ""), "id": relationship.get("memberId", "")}
