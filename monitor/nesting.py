"""The group-in-group edges of a tenant's mirror, kept as a small index in Redis, and the member lists
of groups read from their relationship scopes (for monitor.sinks.effective).

Memberships are anchored on their group (monitor.model.groups), so "the members of B" is one prefix of
B's relationship scope, but "the groups B is a member of" would need a scan of every membership scope
(monitor.sources.parking). Effective membership walks both ways, so the nesting edges, and only
they, are indexed: one field per group that takes part in nesting (`TenantKeys.nesting`), a few
dozen bytes per nested edge, against a reverse index of every membership at about 120 bytes each
(BENCHMARKS.md). The index describes the change log at the effective-membership cursor and moves
with it in one script (`ADVANCE_NESTING`); `Nesting` adds the nesting changes of the stretch being
judged, so both of its ends can be walked.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from monitor.effective import EdgeChange, Pair
from monitor.keys import ADVANCE_NESTING
from monitor.mirror_codec import pack_key
from monitor.model.account import ACCOUNT_TYPE
from monitor.model.groups import GROUP_FAMILY, MEMBERSHIP_TYPE, membership_key
from monitor.model.types import JsonObject, entity_placement, relationship_placement
from monitor.scopes import scope_of
from monitor.store import TenantStore

Edges = dict[str, set[str]]


@dataclass
class Nesting:
    """The nesting edges around the groups loaded so far, at the start of a stretch of the log (the
    index) and at its end (the index plus the stretch's nesting changes)."""

    store: TenantStore
    changes: list[EdgeChange]
    parents: dict[str, tuple[set[str], set[str]]] = field(default_factory=dict)  # group -> (start, end)
    children: dict[str, tuple[set[str], set[str]]] = field(default_factory=dict)

    async def load(self, groups: Iterable[str]) -> None:
        wanted = sorted(set(groups) - self.parents.keys())
        if not wanted:
            return
        values = await self.store.redis.hmget(self.store.keys.nesting, wanted)
        for group, raw in zip(wanted, values, strict=True):
            entry = orjson.loads(raw) if raw else {}
            start_parents, start_children = set(entry.get("p", ())), set(entry.get("c", ()))
            self.parents[group] = (start_parents, set(start_parents))
            self.children[group] = (start_children, set(start_children))
        for change in self.changes:
            if change.nesting:
                self._apply(change, wanted)

    def _apply(self, change: EdgeChange, loaded: list[str]) -> None:
        if change.group_id in loaded:
            ends = self.children[change.group_id][1]
            (ends.add if change.added else ends.discard)(change.member_id)
        if change.member_id in loaded:
            ends = self.parents[change.member_id][1]
            (ends.add if change.added else ends.discard)(change.group_id)

    async def closure(self, groups: Iterable[str], *, up: bool) -> set[str]:
        """`groups` and every group above them (`up`) or below them, at either end of the stretch."""
        seen = set(groups)
        frontier = set(seen)
        while frontier:
            await self.load(frontier)
            edges = self.parents if up else self.children
            following = {g for group in frontier for side in edges[group] for g in side} - seen
            seen |= following
            frontier = following
        return seen

    def children_at(self, end: bool) -> dict[str, frozenset[str]]:
        return {group: frozenset(sides[1] if end else sides[0]) for group, sides in self.children.items()}

    def index_updates(self) -> dict[str, str]:
        """The index fields the stretch's nesting changes rewrite: group -> JSON, or "" to delete."""
        updates = {}
        for change in self.changes:
            if change.nesting:
                for group in (change.group_id, change.member_id):
                    updates[group] = _field(self.parents[group][1], self.children[group][1])
        return updates


def _field(parents: set[str], children: set[str]) -> str:
    if not parents and not children:
        return ""
    return orjson.dumps({"p": sorted(parents), "c": sorted(children)}).decode()


async def advance(store: TenantStore, cursor_key: str, start: str, end: int, updates: Mapping[str, str]) -> bool:
    """Move the cursor from `start` to `end` with the index updates, if nobody moved it meanwhile."""
    script: Any = store.redis.register_script(ADVANCE_NESTING)
    moved: int = await script(keys=[cursor_key, store.keys.nesting], args=[start, end, orjson.dumps(dict(updates))])
    return moved == 1


async def build_index(store: TenantStore) -> dict[str, str]:
    """The index fields of the whole mirror: every membership whose member is a group, found by one
    scan of the membership scopes inside Redis (once, when effective rules start for a tenant)."""
    groups: set[str] = set()
    for scope in await store.known_scopes("entity", GROUP_FAMILY):
        groups.update(await store.scope_keys(scope))
    scopes = await store.known_scopes("relationship", GROUP_FAMILY)
    found = await store.memberships_of(groups, scopes, skip_prefix=ACCOUNT_TYPE)
    parents: Edges = {}
    children: Edges = {}
    for key, relationship in found.items():
        if relationship.get("_type") != MEMBERSHIP_TYPE:
            continue
        group, _, member = key.partition("|has|")
        children.setdefault(group, set()).add(member)
        parents.setdefault(member, set()).add(group)
    return {g: _field(parents.get(g, set()), children.get(g, set())) for g in parents.keys() | children.keys()}


def relationship_scope_key(store: TenantStore, group: str) -> str:
    return store.mirror_key(scope_of(relationship_placement(GROUP_FAMILY, group)))


async def member_sets(store: TenantStore, groups: Iterable[str]) -> dict[str, frozenset[str]]:
    """Every member of each group as the mirror has it now (a prefix of its relationship scope)."""
    sets = {}
    for group in sorted(set(groups)):
        prefix = f"{group}|has|"
        keys = await store.scope_keys(scope_of(relationship_placement(GROUP_FAMILY, group)), prefix)
        sets[group] = frozenset(key[len(prefix) :] for key in keys)
    return sets


async def pairs_present(store: TenantStore, pairs: Iterable[Pair]) -> dict[Pair, bool]:
    """Whether the mirror has each membership now (one round trip; fields as `monitor.mirror_codec`
    stores them)."""
    await store.upgrade()
    wanted = sorted(set(pairs))
    if not wanted:
        return {}
    reader: Any = store.redis.pipeline(transaction=False)
    for group, member in wanted:
        reader.hexists(relationship_scope_key(store, group), pack_key(membership_key(group, member)))
    found = await reader.execute()
    return {pair: bool(flag) for pair, flag in zip(wanted, found, strict=True)}


async def entity_facts(store: TenantStore, refs: Iterable[tuple[str, str]]) -> dict[tuple[str, str], JsonObject]:
    """Mirrored entities by (family, key), read side by side; absent ones are left out."""
    wanted = sorted(set(refs))
    values = await asyncio.gather(*(store.get(entity_placement(family, key), key) for family, key in wanted))
    return {ref: value for ref, value in zip(wanted, values, strict=True) if value is not None}
