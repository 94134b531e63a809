"""Effective-membership alerts (monitor.effective) as a change-log consumer with its own cursor.

Each run judges the stretch of the log from the cursor to its end: which members of which watched
groups gained or lost effective membership between the two. Both ends must be exact, so the run
holds the tenant's directory lease (`DIRECTORY_LEASE`), the one the users and groups rounds take
before they write a membership: while it is held the mirror's memberships are those of the log's
end, and the start is the end with the stretch's membership changes taken back (each record has
the `before`). If a round holds the lease, the run waits a few seconds and otherwise leaves the
stretch to the next delivery (the worker delivers after every round), with nothing lost: the cursor
has not moved.

Per stretch, for each membership it changed: the groups above (the nesting index,
monitor.nesting), the watched ones among them, and the members concerned (the member itself, or
everyone below a nested group); then, per watched group, its effective members at both ends among
those: single memberships checked one by one when few are asked about, whole member lists read
otherwise. The alerts go out first, then the cursor moves with the index in one script: a crash in
between judges the stretch again and sends the same alerts (same ids), which receivers drop.

The cursor starts, like the plain alerts', after the tenant's first groups round, from an index
built by one scan of the mirror; a tenant whose rules stop asking for effective membership has its
cursor and index dropped, so that they start afresh if asked again.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field

from monitor.alert_rules import AlertRule
from monitor.alerts import Alert, MembershipChange, Ref, batch_facts, member_kind, membership_changes, watches
from monitor.effective import EdgeChange, EffectiveChange, Moment, Pair, judge, named_members, net_changes, render
from monitor.keys import DIRECTORY_LEASE
from monitor.leases import Lease, LeaseBusy
from monitor.model.groups import GROUP_FAMILY, PLACEHOLDER_FAMILY
from monitor.model.types import JsonObject
from monitor.model.users import USER_FAMILY
from monitor.nesting import Nesting, advance, build_index, entity_facts, member_sets, pairs_present
from monitor.settings import TenantConfig
from monitor.sinks.base import BATCH
from monitor.source_registry import MEMBERSHIP_SOURCE
from monitor.store import TenantStore

log = logging.getLogger(__name__)

EFFECTIVE_CURSOR = "effective"
# How long a run waits for a round to release the directory lease before leaving the stretch to the
# next delivery, and the lease's time to live while held.
LEASE_WAIT = 5.0
LEASE_TTL = 60.0
# Above this many (group, member) pairs for one watched group, whole member lists are read instead.
PAIR_LIMIT = 2000

SendAlerts = Callable[[Sequence[Alert]], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class EffectiveRun:
    """What one `run_effective` did: records judged, alerts sent, or why it waited."""

    judged: int = 0
    alerts: tuple[Alert, ...] = ()
    deferred: bool = False


async def run_effective(store: TenantStore, tenant: TenantConfig, send: SendAlerts) -> EffectiveRun:
    """Judge the stretch of the log after the effective cursor and `send` its alerts; raises what
    `send` raises (the cursor then stays, and the stretch is judged again next time)."""
    rules = tuple(rule for rule in tenant.alerts if rule.effective)
    cursor_key = store.keys.sink_cursor(EFFECTIVE_CURSOR)
    if not rules:
        if await store.redis.exists(cursor_key):
            await store.redis.delete(cursor_key, store.keys.nesting)
        return EffectiveRun()
    lease = Lease(store.redis, store.keys.lease(DIRECTORY_LEASE), ttl=LEASE_TTL)
    try:
        async with lease.held(wait=LEASE_WAIT):
            return await _judge_to_end(store, tenant.id, rules, cursor_key, send)
    except LeaseBusy:
        log.info("tenant %s: effective membership waits for a directory round", tenant.id)
        return EffectiveRun(deferred=True)


async def _judge_to_end(
    store: TenantStore, tenant: str, rules: Sequence[AlertRule], cursor_key: str, send: SendAlerts
) -> EffectiveRun:
    end = await store.last_seq()
    raw = await store.redis.get(cursor_key)
    if raw is None:
        await _start(store, cursor_key, end)
        return EffectiveRun()
    start = int(raw)
    if start >= end:
        return EffectiveRun()
    changes, facts = await read_stretch(store, start, end)
    judged = await judge_stretch(store, tenant, rules, changes, facts)
    if judged.alerts:
        await send(judged.alerts)
    updates = judged.nesting.index_updates() if judged.nesting is not None else {}
    await advance(store, cursor_key, str(start), end, updates)
    return EffectiveRun(end - start, tuple(judged.alerts))


async def _start(store: TenantStore, cursor_key: str, end: int) -> None:
    """The baseline: the nesting index of the mirror as it is, the cursor at the log's end (once the
    first groups round has completed; before it, there is nothing to judge against)."""
    if await store.delta_state(MEMBERSHIP_SOURCE) is None:
        return
    fields = await build_index(store)
    await store.redis.delete(store.keys.nesting)
    if await advance(store, cursor_key, "", end, fields):
        log.info(
            "tenant %s: effective membership starts after seq %d (%d nested groups)", store.tenant, end, len(fields)
        )


async def read_stretch(
    store: TenantStore, start: int, end: int
) -> tuple[list[MembershipChange], dict[Ref, JsonObject]]:
    """The membership changes of records (start, end], and the facts of the entities they carry."""
    changes: list[MembershipChange] = []
    facts: dict[Ref, JsonObject] = {}
    cursor = start
    while cursor < end:
        records = [r for r in await store.read_changes(cursor, BATCH) if r["seq"] <= end]
        if not records:
            break
        changes += membership_changes(records)
        facts.update(batch_facts(records))
        cursor = int(records[-1]["seq"])
    return changes, facts


class Lookups:
    """Memberships as the mirror has them now (the stretch's end) and as they were at its start (the
    stretch's changes taken back), read once each."""

    def __init__(self, store: TenantStore, at_start: dict[Pair, bool]) -> None:
        self.store = store
        self.at_start = at_start
        self.sets: dict[str, frozenset[str]] = {}
        self.pairs: dict[Pair, bool] = {}
        self._touched: dict[str, dict[str, bool]] = {}
        for (group, member), present in at_start.items():
            self._touched.setdefault(group, {})[member] = present

    async def read_sets(self, groups: set[str]) -> None:
        self.sets.update(await member_sets(self.store, groups - self.sets.keys()))

    async def read_pairs(self, pairs: set[Pair]) -> None:
        missing = {p for p in pairs if p not in self.pairs and p[0] not in self.sets}
        self.pairs.update(await pairs_present(self.store, missing))

    def members(self, group: str, *, end: bool) -> frozenset[str]:
        """A group whose members were read whole, at one end of the stretch."""
        now = self.sets[group]
        if end:
            return now
        touched = self._touched.get(group, {})
        return frozenset({m for m in now if touched.get(m, True)} | {m for m, there in touched.items() if there})

    def moment(self, children: dict[str, frozenset[str]], *, end: bool) -> Moment:
        sets = {group: self.members(group, end=end) for group in self.sets}
        pairs = dict(self.pairs) if end else {p: self.at_start.get(p, there) for p, there in self.pairs.items()}
        return Moment(children, sets, pairs)


@dataclass
class Judged:
    alerts: list[Alert] = field(default_factory=list)
    nesting: Nesting | None = None


async def judge_stretch(
    store: TenantStore,
    tenant: str,
    rules: Sequence[AlertRule],
    changes: Sequence[MembershipChange],
    stretch_facts: dict[Ref, JsonObject],
) -> Judged:
    """The effective-membership alerts of a stretch of the log, and its nesting (for the index)."""
    net, at_start = net_changes(changes)
    nesting = Nesting(store, net)
    if not net:
        return Judged([], nesting)
    above_group = {group: await nesting.closure([group], up=True) for group in {c.group_id for c in net}}
    above = {change.pair: above_group[change.group_id] for change in net}
    roots = set().union(*above_group.values())
    facts = await _facts(store, {(GROUP_FAMILY, group) for group in roots}, stretch_facts)
    watching = {g: [r for r in rules if watches(r, g, facts.get((GROUP_FAMILY, g)))] for g in sorted(roots)}
    watched = {group: found for group, found in watching.items() if found}
    if not watched:
        return Judged([], nesting)
    lookups = Lookups(store, at_start)
    concerned = await _concerned(nesting, lookups, net, above, watched.keys())
    found: list[EffectiveChange] = []
    for root, members in concerned.items():
        found += await _judge_root(nesting, lookups, root, members)
    alerts = await _render(store, tenant, watched, found, net, facts)
    return Judged(alerts, nesting)


async def _concerned(
    nesting: Nesting,
    lookups: Lookups,
    net: Sequence[EdgeChange],
    above: dict[Pair, set[str]],
    watched: Iterable[str],
) -> dict[str, dict[str, list[EdgeChange]]]:
    """Per watched group, the members whose effective membership the stretch may have changed, each
    with the membership changes that concern it."""
    wanted = set(watched)
    concerned: dict[str, dict[str, list[EdgeChange]]] = {}
    for change in net:
        roots = above[change.pair] & wanted
        if not roots:
            continue
        for member in await _members_below(nesting, lookups, change):
            for root in roots:
                concerned.setdefault(root, {}).setdefault(member, []).append(change)
    return concerned


async def _members_below(nesting: Nesting, lookups: Lookups, change: EdgeChange) -> set[str]:
    """Who a membership change concerns: its member, or for a nested group everyone (not a group)
    in it or below it, at either end of the stretch."""
    if not change.nesting:
        return {change.member_id}
    groups = await nesting.closure([change.member_id], up=False)
    await lookups.read_sets(groups)
    members: set[str] = set()
    for group in groups:
        members |= lookups.members(group, end=True) | lookups.members(group, end=False)
    return members - groups - {g for group in groups for side in nesting.children[group] for g in side}


async def _judge_root(
    nesting: Nesting, lookups: Lookups, root: str, members: dict[str, list[EdgeChange]]
) -> list[EffectiveChange]:
    groups = await nesting.closure([root], up=False)
    if len(groups) * len(members) <= PAIR_LIMIT:
        await lookups.read_pairs({(group, member) for group in groups for member in members})
    else:
        await lookups.read_sets(groups)
    before = lookups.moment(nesting.children_at(False), end=False)
    after = lookups.moment(nesting.children_at(True), end=True)
    judged = (judge(root, member, causes, before, after) for member, causes in sorted(members.items()))
    return [change for change in judged if change is not None]


async def _facts(store: TenantStore, refs: set[Ref], known: dict[Ref, JsonObject]) -> dict[Ref, JsonObject]:
    """Facts the stretch does not carry, from the mirror; the stretch's own win."""
    return {**await entity_facts(store, refs - known.keys()), **known}


async def _render(
    store: TenantStore,
    tenant: str,
    watched: dict[str, list[AlertRule]],
    found: Sequence[EffectiveChange],
    net: Sequence[EdgeChange],
    facts: dict[Ref, JsonObject],
) -> list[Alert]:
    per_rule: dict[str, tuple[AlertRule, list[EffectiveChange]]] = {}
    for change in found:
        for rule in watched[change.group_id]:
            per_rule.setdefault(rule.name, (rule, []))[1].append(change)
    named = set().union(*(named_members(rule, changes) for rule, changes in per_rule.values()))
    through = {group for change in found if change.member_id in named for group in change.through}
    refs = {(family, m) for m in named for family in (USER_FAMILY, PLACEHOLDER_FAMILY)}
    facts = await _facts(store, refs | {(GROUP_FAMILY, g) for g in through}, facts)
    kinds = _kinds(named, net, facts)
    alerts = [a for rule, changes in per_rule.values() for a in render(tenant, rule, changes, kinds, facts)]
    return sorted(alerts, key=lambda alert: alert.seq)


def _kinds(members: set[str], net: Sequence[EdgeChange], facts: dict[Ref, JsonObject]) -> dict[str, str]:
    """user, device, servicePrincipal, contact: from the mirrored entity, else from a membership change."""
    from_changes = {change.member_id: change.member_kind for change in net}
    kinds = {}
    for member in members:
        placeholder = facts.get((PLACEHOLDER_FAMILY, member))
        if (USER_FAMILY, member) in facts:
            kinds[member] = "user"
        elif placeholder is not None:
            kinds[member] = member_kind(placeholder.get("memberType"))
        else:
            kinds[member] = from_changes.get(member, "unknown")
    return kinds
