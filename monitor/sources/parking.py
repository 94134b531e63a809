"""Soft-deleted users and groups leave with their memberships, and come back with them.

What Graph documents, and what it leaves open:

- A removed user or group is `{"id", "@removed": {"reason": ...}}`: `changed` means "the item was
  deleted and can be restored from deletedItems", `deleted` that it "is deleted and cannot be
  restored" (https://learn.microsoft.com/en-us/graph/delta-query-overview). A deleted item stays
  restorable for up to 30 days, then is deleted permanently
  (https://learn.microsoft.com/en-us/graph/api/directory-deleteditems-restore). Users and groups
  (Microsoft 365 groups, and since 2025 cloud security groups) are soft-deleted first
  (https://learn.microsoft.com/en-us/entra/architecture/recover-from-deletions).
- A soft-deleted object keeps its memberships in the directory, and the groups delta sends no
  `members@delta` entry for it; a removed entry (`@removed`) means the membership was removed
  "either by removing the membership or by deleting the user object itself"
  (https://learn.microsoft.com/en-us/graph/delta-query-groups).
- Not documented: whether a restore or a purge produces `members@delta` entries, whether a
  restored group comes with its whole member list, and whether a full round lists memberships
  whose member is soft-deleted. Every reading is handled below; the simulator sends only what the
  pages say.

So the mirror (and JupiterOne) never shows a membership one of whose ends is soft-deleted: the
membership leaves the mirror with a change record saying why (`reason`), and is *parked* in Redis
under both of its ends (`TenantKeys.parked`). Each page then settles every membership it may
affect into one of three places:

- **gone**, when one end is purged (`reason: deleted`) or Graph removed the membership;
- **parked**, when one end is soft-deleted (now, or still);
- **mirrored**, otherwise: a restored object brings back each parked membership whose other end
  is live, exactly once, whether or not Graph also sends it again.

A purge after a soft delete emits nothing (the memberships left already); later removals from
Graph find nothing to remove. Parked hashes expire 31 days after their last write (Graph has
purged the object by then). An object absent from a complete full round is treated like a
soft-deleted one: whether it was purged cannot be told, and parking is the reading that loses
nothing.

Finding a member's memberships: they are anchored on their groups (`monitor.sources.groups`), one
relationship scope per group bucket, so a member's memberships are spread over every scope. A
reverse index (member -> groups) would be kept for every one of 1,000,000 memberships so that the
rare deletion can skip a scan: as Redis sets, about 110 MB (120 bytes a membership) at that size.
Instead the scan runs inside Redis over the membership scopes (`TenantStore.memberships_of`) and
sends back only the hits, only for pages that delete a user or group: about 0.7 s for such a page
at that size (BENCHMARKS.md), nothing otherwise.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

import orjson

from monitor.model.account import ACCOUNT_TYPE
from monitor.model.groups import GROUP_FAMILY, map_member_change, membership_key, membership_relationship
from monitor.model.types import Delete, JsonObject, Op, Upsert, relationship_placement
from monitor.scopes import scope_of
from monitor.store import Flag, PageWrite, Parked, TenantStore

# The field of a parked hash that marks its object soft-deleted and holds its last Graph state.
TOMBSTONE = "~"
MEMBERSHIP_SEPARATOR = "|has|"

Fate = Literal["changed", "deleted", "absent"]
# Reasons on the change records of memberships that move with one of their ends.
MEMBER_DELETED, GROUP_DELETED = "member_deleted", "group_deleted"
MEMBER_RESTORED, GROUP_RESTORED = "member_restored", "group_restored"


@dataclass(frozen=True, slots=True)
class Edge:
    group: str
    member: str
    member_type: str  # the member's raw `@odata.type` ("" when unknown)

    @property
    def key(self) -> str:
        return membership_key(self.group, self.member)


def edge_of(key: str, member_type: str) -> Edge | None:
    """The membership a relationship key names; None for "account HAS group", which shares its scopes."""
    group, _, member = key.partition(MEMBERSHIP_SEPARATOR)
    return Edge(group, member, member_type) if member and not group.startswith(f"{ACCOUNT_TYPE}-") else None


@dataclass(slots=True)
class PageFates:
    """What a page says about users or groups (the last word on an object counts)."""

    live: set[str] = field(default_factory=set)
    removed: dict[str, Fate] = field(default_factory=dict)

    def appeared(self, object_id: str) -> None:
        self.removed.pop(object_id, None)
        self.live.add(object_id)

    def left(self, object_id: str, fate: Fate) -> None:
        self.live.discard(object_id)
        self.removed[object_id] = fate


@dataclass(slots=True)
class _Candidate:
    edge: Edge
    parked: bool = False
    mirrored: bool = False
    page: Op | None = None  # the page's last operation on the membership


@dataclass(slots=True)
class _Plan:
    """The page's outcome for users and groups: who is soft-deleted after it, who was restored or purged."""

    before: set[str]
    soft: set[str]  # soft-deleted (or absent) in this page, and not before
    restored: set[str]
    purged: set[str]
    after: set[str]

    def is_special(self, object_id: str) -> bool:
        return object_id in self.before or object_id in self.after or object_id in self.purged


def plan(fates: PageFates, soft_deleted: set[str]) -> _Plan:
    """Who is soft-deleted, restored and purged once the page is applied (`soft_deleted`: before it)."""
    soft = {i for i, fate in fates.removed.items() if fate != "deleted" and i not in soft_deleted}
    purged = {i for i, fate in fates.removed.items() if fate == "deleted"}
    restored = fates.live & soft_deleted
    after = (soft_deleted | soft) - restored - purged
    return _Plan(set(soft_deleted), soft, restored, purged, after)


class Parking:
    """Settles one page's memberships around soft-deleted, restored and purged users and groups."""

    def __init__(self, store: TenantStore, account_key: str, *, groups: bool) -> None:
        """`groups`: the objects whose fates the pages tell are groups (they have members of their
        own), else users."""
        self._store = store
        self._account_prefix = f"{account_key}|"
        self._groups = groups

    async def settle(
        self, ops: list[Op], fates: PageFates, *, soft_deleted: set[str], states: Mapping[str, JsonObject]
    ) -> PageWrite:
        """`ops` with every membership the page's fates affect moved where it belongs, plus the
        parked writes and tombstones. `states`: the last Graph state of each object soft-deleted
        now (kept for its restore)."""
        outlook = plan(fates, soft_deleted)
        if not outlook.before and not outlook.soft and not outlook.purged:
            return PageWrite(ops=ops)  # nothing deleted, nothing to restore: nearly every page
        candidates, passing = _page_candidates(ops, outlook)
        await self._add_mirrored(candidates, outlook.soft | (outlook.purged - outlook.before))
        await self._add_parked(candidates, outlook.restored | outlook.purged)
        write = PageWrite(ops=passing)
        for candidate in candidates.values():
            _settle_one(candidate, outlook, write)
        _tombstones(outlook, states, write)
        return write

    async def _add_mirrored(self, candidates: dict[str, _Candidate], leaving: set[str]) -> None:
        """The mirrored memberships of objects leaving now: as member (a scan) and as group."""
        if not leaving:
            return
        scopes = await self._store.known_scopes("relationship", GROUP_FAMILY)
        found = await self._store.memberships_of(leaving, scopes, skip_prefix=self._account_prefix)
        for group in sorted(leaving) if self._groups else ():
            found |= await self._own_memberships(group)
        for key, relationship in found.items():
            edge = edge_of(key, str(relationship.get("memberType") or ""))
            if edge is not None:
                _candidate(candidates, edge).mirrored = True

    async def _own_memberships(self, group: str) -> dict[str, JsonObject]:
        placement = relationship_placement(GROUP_FAMILY, group)
        prefix = f"{group}{MEMBERSHIP_SEPARATOR}"
        objects = await self._store.scope_objects(scope_of(placement))
        return {key: obj for key, obj in objects.items() if key.startswith(prefix)}

    async def _add_parked(self, candidates: dict[str, _Candidate], owners: set[str]) -> None:
        for fields in (await self._store.parked(sorted(owners))).values():
            for key, value in fields.items():
                edge = edge_of(key, value.decode()) if key != TOMBSTONE else None
                if edge is not None:
                    _candidate(candidates, edge).parked = True


def _candidate(candidates: dict[str, _Candidate], edge: Edge) -> _Candidate:
    found = candidates.get(edge.key)
    if found is None:
        found = candidates[edge.key] = _Candidate(edge)
    return found


def _page_candidates(ops: list[Op], outlook: _Plan) -> tuple[dict[str, _Candidate], list[Op]]:
    """The page's membership operations that touch a special object become candidates (their
    placeholder upserts stay: placeholders are counted afterwards); every other op passes."""
    candidates: dict[str, _Candidate] = {}
    passing: list[Op] = []
    for op in ops:
        edge = _membership(op)
        if edge is None or not (outlook.is_special(edge.group) or outlook.is_special(edge.member)):
            passing.append(op)
            continue
        candidate = _candidate(candidates, edge)
        candidate.page = op
    return candidates, passing


def _membership(op: Op) -> Edge | None:
    if op.placement.kind != "relationship" or op.placement.family != GROUP_FAMILY:
        return None
    if isinstance(op, Upsert):
        member_type = op.obj.get("memberType")
        return edge_of(op.key, str(member_type or ""))
    return edge_of(op.key, "") if isinstance(op, Delete) else None


def _settle_one(candidate: _Candidate, outlook: _Plan, write: PageWrite) -> None:
    edge = candidate.edge
    ends = (edge.group, edge.member)
    placement = relationship_placement(GROUP_FAMILY, edge.group)
    removed_by_graph = isinstance(candidate.page, Delete) and candidate.page.reason is None
    if removed_by_graph or any(end in outlook.purged for end in ends):
        reason = None if removed_by_graph else _deleted_reason(edge, outlook.purged)
        write.ops.append(Delete(placement, edge.key, reason))
        write.parked.extend(Parked(end, edge.key, None) for end in ends)
    elif any(end in outlook.after for end in ends):
        write.ops.append(Delete(placement, edge.key, _deleted_reason(edge, outlook.after)))
        value = edge.member_type.encode()
        write.parked.extend(Parked(end, edge.key, value) for end in ends)
    else:
        reason = _restored_reason(edge, outlook.restored) if candidate.parked and not candidate.mirrored else None
        if isinstance(candidate.page, Upsert):  # the page's own upsert (its placeholder, if any, passed)
            write.ops.append(Upsert(candidate.page.placement, candidate.page.obj, reason=reason))
        else:
            write.ops.extend(_restored(edge, reason))
        write.parked.extend(Parked(end, edge.key, None) for end in ends)


def _restored(edge: Edge, reason: str | None) -> list[Op]:
    """A parked membership back in the mirror, with its member's placeholder when it needs one."""
    placement = relationship_placement(GROUP_FAMILY, edge.group)
    relationship = Upsert(
        placement, membership_relationship(edge.group, edge.member, edge.member_type or None), reason=reason
    )
    if not edge.member_type:
        return [relationship]
    # map_member_change gives the relationship, then the placeholder of a member that is neither a user nor a group.
    _, *placeholder = map_member_change(edge.group, {"@odata.type": edge.member_type, "id": edge.member})
    return [relationship, *placeholder]


def _deleted_reason(edge: Edge, deleted: set[str]) -> str:
    return MEMBER_DELETED if edge.member in deleted else GROUP_DELETED


def _restored_reason(edge: Edge, restored: set[str]) -> str:
    return MEMBER_RESTORED if edge.member in restored else GROUP_RESTORED


def _tombstones(outlook: _Plan, states: Mapping[str, JsonObject], write: PageWrite) -> None:
    for object_id in sorted(outlook.soft):
        write.parked.append(Parked(object_id, TOMBSTONE, orjson.dumps(states.get(object_id) or {})))
        write.soft_deleted.append(Flag(object_id, b""))
    for object_id in sorted((outlook.restored | outlook.purged) & outlook.before):
        write.parked.append(Parked(object_id, TOMBSTONE, None))
        write.soft_deleted.append(Flag(object_id, None))


def removed_fates(ops: Iterable[Op], family: str) -> PageFates:
    """The fates of a batch of deletions found by absence (no page to say why): objects of
    `family` that a complete full round did not list."""
    fates = PageFates()
    for op in ops:
        if isinstance(op, Delete) and op.placement.kind == "entity" and op.placement.family == family:
            fates.left(op.key, "absent")
    return fates
