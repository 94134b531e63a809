"""Groups and memberships from `GET /groups/delta` with `members` (docs/graph.md 7.5; `GroupMember.Read.All`).

Several things here need more than the page:

- An updated group is merged onto its last known Graph state before it is mapped
  (`monitor.model.graph_state`).
- A removed group takes its memberships with it, both its own members and the groups it is a
  member of, and a restored one brings them back (`monitor.sources.parking`); memberships of
  soft-deleted users and groups are parked, not mirrored.
- Members that are neither users nor groups (devices, service principals, contacts) are
  represented by a placeholder entity, as JupiterOne's mapper does for the public integration
  (docs/jupiterone.md 1.4). The placeholder exists while at least one group contains the member; the
  set of those groups is kept next to the mirror and changed in the same commit. `members@delta`
  gives only each member's id and type, so a placeholder's name comes from
  `POST /directoryObjects/getByIds` (`monitor.graph.directory_objects`), once, cached in Redis.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import orjson

from monitor.graph.client import GraphError
from monitor.graph.delta import DeltaResource
from monitor.graph.directory_objects import get_by_ids, resource_type
from monitor.model.graph_state import GROUP_STATE, selected
from monitor.model.groups import (
    GROUP_SELECT,
    is_placeholder_member,
    map_group,
    map_member_change,
    member_details,
    placeholder_entity,
    placeholder_removed,
)
from monitor.model.groups import group_removed as group_removed_ops
from monitor.model.types import Delete, JsonObject, Kind, Op, Placement, Upsert
from monitor.sources.base import PageOps, SourceContext
from monitor.sources.graph_states import residue_removal, residue_write, states_of, whole_objects
from monitor.sources.parking import Parking, removed_fates
from monitor.sources.users import DirectoryHint, removal_fate
from monitor.store import Flag, MemberOf, PageWrite, TenantStore

log = logging.getLogger(__name__)

GROUP_FAMILY = "azure_user_group"
PLACEHOLDER_FAMILY = "azure_group_member"
GROUPS = DeltaResource("groups", "/v1.0/groups/delta", GROUP_SELECT)
ACCOUNT_KEY_PREFIX = "microsoft_365_account-"
MEMBERSHIP_SEPARATOR = "|has|"
# `member_names` in the groups status when getByIds is refused.
NAMES_REFUSED = (
    "placeholders named by id: POST /directoryObjects/getByIds needs Directory.Read.All, which is not granted ({})"
)


def split_membership(key: str) -> tuple[str, str] | None:
    """(group id, member id) of a membership key; None for "account HAS group"."""
    if key.startswith(ACCOUNT_KEY_PREFIX):
        return None
    group_id, _, member_id = key.partition(MEMBERSHIP_SEPARATOR)
    return (group_id, member_id) if member_id else None


@dataclass(slots=True)
class _Hint(DirectoryHint):
    placeholder_members: set[str] = field(default_factory=set)


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
        self._context = context
        self._parking = Parking(context.store, context.account_key, groups=True)
        self._names_refused = False  # getByIds answered 403 in this round: do not ask again

    async def page_ops(self, objects: list[JsonObject], *, full: bool = False) -> PageOps:
        hint = _Hint(await self._store.soft_deleted())
        groups = await whole_objects(
            self._store, GROUP_FAMILY, GROUP_STATE, objects, full=full, soft_deleted=hint.soft_deleted
        )
        ops: list[Op] = []
        seen: list[str] = []
        for group in groups:
            group_id = group["id"]
            if "@removed" in group:
                ops.extend(group_removed_ops(group_id, account_key=self._account_key))
                hint.fates.left(group_id, removal_fate(group))
                hint.residues[group_id] = residue_removal(GROUP_FAMILY, group_id)
                continue
            hint.fates.appeared(group_id)
            # Empty for a repeated appearance that only carries another slice of members@delta.
            mapped = map_group(group, account_key=self._account_key)
            if mapped:
                state = selected(group, GROUP_STATE)
                hint.residues[group_id] = residue_write(GROUP_FAMILY, GROUP_STATE, state, mapped[0].obj)
            upserts: list[Op] = list(mapped)
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
        """Add what the page implies beyond itself: memberships moved with deleted and restored
        users and groups, placeholders, and their names.

        With the page's `hint`, a page without deletions, restores or placeholder members (nearly
        every page) costs nothing here; without one (deletions found by absence, whose groups are
        taken as soft-deleted) every op is looked at.
        """
        absent = not isinstance(hint, _Hint)
        if absent:
            hint = _Hint(await self._store.soft_deleted(), removed_fates(ops, GROUP_FAMILY))
            hint.residues = {key: residue_removal(GROUP_FAMILY, key) for key in hint.fates.removed}
            hint.placeholder_members = set(_placeholder_candidates(ops))
        leaving = [i for i, fate in hint.fates.removed.items() if fate != "deleted" and i not in hint.soft_deleted]
        states = await states_of(self._store, GROUP_FAMILY, GROUP_STATE, leaving)
        write = await self._parking.settle(ops, hint.fates, soft_deleted=hint.soft_deleted, states=states)
        write.residues = list(hint.residues.values())
        settled = write.ops is not ops
        if settled or hint.placeholder_members:
            known = None if settled else hint.placeholder_members
            placeholders = await _with_placeholders(self._store, write.ops, known)
            write.ops, write.member_of = placeholders.ops, placeholders.member_of
        if settled or hint.placeholder_members or absent:
            await self._name_placeholders(write)
        return write

    async def _name_placeholders(self, write: PageWrite) -> None:
        """Give every placeholder the page upserts its name (cached, else looked up), and drop the
        cached names of placeholders the page deletes."""
        last: dict[str, Op] = {}
        for op in write.ops:
            if op.placement.family == PLACEHOLDER_FAMILY and op.placement.kind == "entity":
                last[op.key] = op
        write.member_names.extend(Flag(key, None) for key, op in last.items() if isinstance(op, Delete))
        wanted = {key: str(op.obj.get("memberType") or "") for key, op in last.items() if isinstance(op, Upsert)}
        if not wanted:
            return
        details = await self._store.member_names(list(wanted))
        looked_up = await self._look_up({m: t for m, t in wanted.items() if m not in details})
        write.member_names.extend(Flag(m, orjson.dumps(found)) for m, found in looked_up.items())
        details |= looked_up
        write.ops = [_named(op, details) for op in write.ops]

    async def _look_up(self, members: dict[str, str]) -> JsonObject:
        if not members or self._names_refused:
            return {}
        types = {t for t in (resource_type(odata_type) for odata_type in members.values()) if t}
        tenant = self._context.tenant.id
        try:
            found = await get_by_ids(self._context.client, tenant, members, types)
        except GraphError as exc:
            self._names_refused = exc.status == 403
            detail = NAMES_REFUSED.format(exc) if exc.status == 403 else f"member names not looked up: {exc}"
            log.warning("tenant %s: %s", tenant, detail, extra={"tenant": tenant})
            await self._store.record_status(self.name, {"member_names": detail})
            return {}
        await self._store.record_status(self.name, {"member_names": ""})
        return {member: member_details(obj) for member, obj in found.items()}


def _named(op: Op, details: JsonObject) -> Op:
    if not isinstance(op, Upsert) or op.placement.family != PLACEHOLDER_FAMILY or op.key not in details:
        return op
    member = {**details[op.key], "@odata.type": op.obj.get("memberType"), "id": op.key}
    return Upsert(op.placement, placeholder_entity(member), op.preserve, op.reason)


@dataclass(slots=True)
class _Placeholder:
    groups_before: set[str]
    groups: set[str]
    upserted: bool = False


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


def _member_entry(relationship: JsonObject) -> JsonObject:
    """The members@delta shape of a membership relationship, for `is_placeholder_member`."""
    return {"@odata.type": relationship.get("memberType", ""), "id": relationship.get("memberId", "")}
