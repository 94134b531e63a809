"""Delta rounds for users and groups: what a round contains, and how it is cut into pages.

A round is planned once, when its first request arrives (`plan_round`): a list of
*appearances*, each a reference to an object's state at that moment (object dicts are never
changed in place, see tenant.py) plus what to show of it. Pages are then rendered from a
position in that list, so serving page N costs one page, not the round.

The rules, from docs/graph.md 7.2-7.5:
- initial round: every current object; incremental round: each object touched since the token
  whose *selected* properties or memberships changed ("properties that aren't selected aren't
  tracked"), once, in its current state;
- soft-deleted -> `@removed: {reason: changed}`, hard-deleted -> `reason: deleted`; restored ->
  the whole object "as if newly created";
- members@delta holds the net effect per member (the member's last journal entry in the range);
  removals carry `@removed: {reason: deleted}`; a large group's members are cut into slices
  and the group appears once per slice, possibly on later pages;
- `Prefer: return=minimal`: updated objects carry `id` and the changed properties only (and so
  do all updated objects when `DeltaOptions.updated_properties` is "changed"; see there).
"""

from __future__ import annotations

import random
from bisect import bisect_right
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from itertools import islice
from operator import attrgetter
from typing import Any

from monitor.simulator.properties import GROUP_PROPERTIES, MEMBERS, USER_DEFAULT, delta_view
from monitor.simulator.tenant import (
    CREATED,
    MEMBER_ADDED,
    MEMBER_REMOVED,
    UPDATED,
    DeltaOptions,
    Resource,
    SimTenant,
)

# A bare object dict in a round is an appearance of the whole object with no members: the common
# case (every user of an initial round), kept as one list slot instead of one Appearance each.
# Member entries of one appearance: the group's member dict (initial round: all adds), or the
# net changes as (member id, @odata.type, removed).
MemberSource = Mapping[str, str] | Sequence[tuple[str, str, bool]]


@dataclass(frozen=True)
class DeltaRequest:
    """What a round was asked for; carried in its delta token for the next round."""

    resource: Resource
    select: tuple[str, ...] | None = None
    filter_ids: frozenset[str] | None = None
    since: int = 0  # tenant version of the previous round's deltaLink; 0 = initial round
    minimal: bool = False  # Prefer: return=minimal on a deltaLink request, and applied (docs/graph.md 7.3)

    @cached_property
    def properties(self) -> tuple[str, ...]:
        """Selected (or default) properties to show and track, without `id` and `members`."""
        default = USER_DEFAULT if self.resource == "users" else GROUP_PROPERTIES
        chosen = self.select if self.select is not None else default
        return tuple(name for name in chosen if name not in ("id", MEMBERS))

    @property
    def members_selected(self) -> bool:
        # docs/graph.md 7.3: members@delta comes with $select=members, and by default without $select.
        return self.resource == "groups" and (self.select is None or MEMBERS in self.select)


@dataclass(slots=True)
class Appearance:
    """One object (or one slice of a group's members) as it will be rendered in a page."""

    object_id: str
    state: Mapping[str, Any] | None = None
    removed: str | None = None
    changed: frozenset[str] | None = None  # set in minimal mode: the properties to show
    members: MemberSource | None = None
    start: int = 0
    end: int = 0
    first: bool = True  # the first appearance carries the properties


@dataclass(slots=True)
class _Touch:
    created: bool = False
    changed: set[str] = field(default_factory=set)
    members: dict[str, tuple[str, bool]] = field(default_factory=dict)


Entry = Appearance | Mapping[str, Any]


@dataclass
class DeltaRound:
    """A planned round: its appearances, the version its deltaLink will carry, its paging options."""

    tenant_id: str
    request: DeltaRequest
    version: int
    appearances: list[Entry]
    options: DeltaOptions

    def page(self, position: int, page_no: int) -> tuple[list[dict[str, Any]], int | None]:
        """Objects of the page starting at `position`, and where the next page starts (None: last)."""
        total = len(self.appearances)
        if position < total and self._empty_page(page_no):
            return [], position  # docs/graph.md 7.2: "a page can be empty and still carry a nextLink"
        values: list[dict[str, Any]] = []
        budget = self.options.page_member_budget
        while position < total and len(values) < self.options.page_size:
            appearance = self.appearances[position]
            cost = appearance.end - appearance.start if isinstance(appearance, Appearance) else 0
            if cost > budget and values:
                break
            values.append(self._render(appearance))
            budget -= cost
            position += 1
        return values, (position if position < total else None)

    def _empty_page(self, page_no: int) -> bool:
        rate = self.options.empty_page_rate
        return rate > 0 and random.Random(f"{self.options.seed}:{self.version}:{page_no}").random() < rate

    def _render(self, appearance: Entry) -> dict[str, Any]:
        if not isinstance(appearance, Appearance):
            return delta_view(appearance, self.request.properties)
        if appearance.removed is not None or appearance.state is None:
            return {"id": appearance.object_id, "@removed": {"reason": appearance.removed or "deleted"}}
        if appearance.first or self.options.repeat_style == "full":
            shown = appearance.changed if appearance.changed is not None else self.request.properties
            obj = delta_view(appearance.state, shown)
        else:
            obj = {"id": appearance.object_id}
        if appearance.members is not None and appearance.end > appearance.start:
            obj["members@delta"] = member_entries(appearance.members, appearance.start, appearance.end)
        return obj


def member_entries(source: MemberSource, start: int, end: int) -> list[dict[str, Any]]:
    if isinstance(source, Mapping):
        return [{"@odata.type": kind, "id": member} for member, kind in islice(source.items(), start, end)]
    entries: list[dict[str, Any]] = []
    for member, kind, removed in source[start:end]:
        entry: dict[str, Any] = {"@odata.type": kind, "id": member}
        if removed:
            entry["@removed"] = {"reason": "deleted"}  # docs/graph.md 7.5: removed or hard-deleted member
        entries.append(entry)
    return entries


def plan_round(tenant: SimTenant, request: DeltaRequest) -> DeltaRound:
    """Compute the round's appearances now, against the tenant's current version."""
    tenant.begin_snapshot()
    options = replace(tenant.delta)
    objects = _initial(tenant, request) if request.since == 0 else _incremental(tenant, request, options)
    appearances = list(_slices(objects, max(1, options.member_slice)))
    if options.scatter_slices or options.duplicate_rate > 0:
        appearances = _reorder(appearances, options, f"{request.resource}:{request.since}:{tenant.version}")
    return DeltaRound(tenant.tenant_id, request, tenant.version, appearances, options)


def _live(tenant: SimTenant, resource: Resource) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    if resource == "users":
        return tenant.users, tenant.deleted_users
    return tenant.groups, tenant.deleted_groups


def _initial(tenant: SimTenant, request: DeltaRequest) -> Iterator[Entry]:
    live, _ = _live(tenant, request.resource)
    ids = live.keys() if request.filter_ids is None else [i for i in request.filter_ids if i in live]
    if not request.members_selected:
        yield from (live[object_id] for object_id in ids)
        return
    for object_id in ids:
        yield Appearance(object_id, live[object_id], members=tenant.members[object_id])


def _incremental(tenant: SimTenant, request: DeltaRequest, options: DeltaOptions) -> Iterator[Entry]:
    live, deleted = _live(tenant, request.resource)
    tracked = frozenset(request.properties)
    only_changed = request.minimal or options.updated_properties == "changed"
    for object_id, touch in _scan(tenant, request).items():
        state = live.get(object_id)
        if state is None:
            yield Appearance(object_id, removed="changed" if object_id in deleted else "deleted")
        elif touch.created:
            yield Appearance(object_id, state, members=tenant.members[object_id] if request.members_selected else None)
        else:
            appearance = _updated(object_id, state, touch, tracked, request, only_changed)
            if appearance is not None:
                yield appearance


def _updated(
    object_id: str,
    state: Mapping[str, Any],
    touch: _Touch,
    tracked: frozenset[str],
    request: DeltaRequest,
    only_changed: bool,
) -> Appearance | None:
    relevant = tracked.intersection(touch.changed)
    changes = [(m, kind, removed) for m, (kind, removed) in touch.members.items()] if request.members_selected else []
    if not relevant and not changes:
        return None  # only unselected properties changed: not tracked (docs/graph.md 7.3)
    shown = frozenset(relevant) if only_changed else None
    return Appearance(object_id, state, changed=shown, members=changes or None)


def _scan(tenant: SimTenant, request: DeltaRequest) -> dict[str, _Touch]:
    """Aggregate the journal after `since`, per object, in order of first touch."""
    touches: dict[str, _Touch] = {}
    start = bisect_right(tenant.journal, request.since, key=attrgetter("version"))
    wanted = request.filter_ids
    for change in islice(tenant.journal, start, None):
        if change.resource != request.resource or (wanted is not None and change.object_id not in wanted):
            continue
        touch = touches.get(change.object_id)
        if touch is None:
            touch = touches[change.object_id] = _Touch()
        if change.kind == CREATED:
            touch.created = True
        elif change.kind == UPDATED:
            touch.changed.update(change.detail)
        elif change.kind in (MEMBER_ADDED, MEMBER_REMOVED):
            member_id, kind = change.detail
            # Net effect: the member's last entry in the range decides (pop keeps that order).
            touch.members.pop(member_id, None)
            touch.members[member_id] = (kind, change.kind == MEMBER_REMOVED)
    return touches


def _slices(objects: Iterator[Entry], size: int) -> Iterator[Entry]:
    """Cut each group's members into slices; one appearance per slice (docs/graph.md 7.5)."""
    for appearance in objects:
        if not isinstance(appearance, Appearance):
            yield appearance
            continue
        count = len(appearance.members) if appearance.members is not None else 0
        if count <= size:
            appearance.end = count
            yield appearance
            continue
        for start in range(0, count, size):
            yield replace(appearance, start=start, end=min(count, start + size), first=start == 0)


def _reorder(appearances: list[Entry], options: DeltaOptions, salt: str) -> list[Entry]:
    """Scatter later slices and add duplicates, deterministically from the tenant's seed."""
    rng = random.Random(f"{options.seed}:{salt}")
    spread = 2 * options.page_size
    keyed: list[tuple[int, int, Entry]] = []
    for index, appearance in enumerate(appearances):
        position = index
        if options.scatter_slices and isinstance(appearance, Appearance) and not appearance.first:
            position += rng.randint(0, spread)
        keyed.append((position, len(keyed), appearance))
        if options.duplicate_rate > 0 and rng.random() < options.duplicate_rate:
            keyed.append((position + rng.randint(1, spread), len(keyed), appearance))
    keyed.sort(key=lambda item: (item[0], item[1]))
    return [appearance for _, _, appearance in keyed]
