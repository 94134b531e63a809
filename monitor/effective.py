"""Effective membership through nested groups (pure): who gained or lost membership of a watched
group through any chain of groups nested in it.

Entra ID lets a group be a member of another (docs/graph.md 7.8): when user U is a member of group
B and B is a member of group A, U holds what A grants. The mirror already has every membership, so
this needs no Graph call: a rule with `effective = true` alerts when someone who is not a group (a
user, device, service principal or contact) becomes an effective member of a watched group A, or
stops being one:

- U is an *effective member* of A when U is a member of A or of a group reachable from A along
  nesting edges (B is a member of A, C of B, ...). Cycles are harmless: every walk keeps a visited
  set.
- The change is judged over a stretch of the change log (monitor.sinks.effective): U's effective
  membership at its start against its end. An alert says through which groups U now is (or was) an
  effective member, the shortest chain: "U is now an effective member of A through B".
- A removal alerts only when no other path remains. A direct membership of A counts as a path, and
  a change of the direct membership itself is left to the rule's plain `member_added` /
  `member_removed` alert, so nobody is told twice.
- More than `effective_fold_threshold` members gaining (or losing) effective membership of one
  group at once (a group of 5,000 nested into a watched group) fold into one alert with the count
  and a sample, as a mass removal does (monitor.alerts).
- A soft-deleted member leaves with its memberships (reason `member_deleted`), so it loses its
  effective memberships too, and the alert carries the reason.

The caller gathers what the stretch needs from Redis: the memberships it changed (`net_changes`),
the nesting edges and member lists of the groups involved at both ends (`Moment`), and the facts
that name groups and members.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from monitor.alert_rules import AlertEvent, AlertRule
from monitor.alerts import (
    ALERT_ID_NAMESPACE,
    MASS_REMOVAL_SAMPLE,
    Alert,
    AlertChange,
    Cause,
    Facts,
    GroupInfo,
    MembershipChange,
    group_info,
    member_info,
)

Pair = tuple[str, str]  # (group id, member id)


@dataclass(frozen=True, slots=True)
class EdgeChange:
    """The net change of one membership over a stretch of the log (it was there and is not, or the
    reverse); `seq`, `observed_at` and `reason` are those of its last record."""

    group_id: str
    member_id: str
    member_kind: str
    added: bool
    seq: int
    observed_at: str
    reason: str | None = None

    @property
    def pair(self) -> Pair:
        return (self.group_id, self.member_id)

    @property
    def nesting(self) -> bool:
        return self.member_kind == "group"


def net_changes(changes: Iterable[MembershipChange]) -> tuple[list[EdgeChange], dict[Pair, bool]]:
    """The memberships whose presence differs between the start and the end of a stretch of the log,
    and, for every membership the stretch touched, whether it was there at the start."""
    first: dict[Pair, MembershipChange] = {}
    last: dict[Pair, MembershipChange] = {}
    for change in changes:
        pair = (change.group_id, change.member_id)
        first.setdefault(pair, change)
        last[pair] = change
    at_start = {pair: change.event == "removed" for pair, change in first.items()}
    net = [
        EdgeChange(c.group_id, c.member_id, c.member_kind, c.event == "added", c.seq, c.observed_at, c.reason)
        for pair, c in last.items()
        if (c.event == "added") == (not at_start[pair])
    ]
    return net, at_start


@dataclass
class Moment:
    """The nesting graph and the memberships of one end of the stretch, as far as they were read.

    `children`: group -> the groups that are its members. `member_sets`: group -> all its members
    (read whole when many pairs are asked about); `pairs`: single memberships that were checked."""

    children: Mapping[str, frozenset[str]]
    member_sets: Mapping[str, frozenset[str]] = field(default_factory=dict)
    pairs: Mapping[Pair, bool] = field(default_factory=dict)

    def has(self, group: str, member: str) -> bool:
        members = self.member_sets.get(group)
        if members is not None:
            return member in members
        return self.pairs.get((group, member), False)


def reach(children: Mapping[str, Iterable[str]], root: str) -> dict[str, str | None]:
    """Every group reachable from `root` along nesting edges (`root` included), in breadth-first
    order, each mapped to the group it was first reached from (so paths are shortest)."""
    came_from: dict[str, str | None] = {root: None}
    frontier = [root]
    while frontier:
        following = []
        for group in frontier:
            for child in sorted(children.get(group, ())):
                if child not in came_from:
                    came_from[child] = group
                    following.append(child)
        frontier = following
    return came_from


def effective_path(
    came_from: Mapping[str, str | None], member: str, has: Callable[[str, str], bool]
) -> list[str] | None:
    """The shortest chain through which `member` is an effective member of the root of `came_from`:
    the groups below the root down to the one `member` is in (`[]` for a direct member); None when
    it is not an effective member."""
    for group in came_from:  # breadth-first order: the first group that has the member is nearest
        if has(group, member):
            path = []
            step: str | None = group
            while step is not None and came_from[step] is not None:
                path.append(step)
                step = came_from[step]
            return path[::-1]
    return None


@dataclass(frozen=True, slots=True)
class EffectiveChange:
    """A member that became, or stopped being, an effective member of a watched group through nested
    groups; `through` is the chain (see `effective_path`), `causes` the memberships that did it."""

    group_id: str
    member_id: str
    event: AlertEvent
    through: tuple[str, ...]
    causes: tuple[EdgeChange, ...]

    @property
    def seq(self) -> int:
        return max(cause.seq for cause in self.causes)

    @property
    def observed_at(self) -> str:
        return max(self.causes, key=lambda cause: cause.seq).observed_at

    @property
    def reason(self) -> str | None:
        """Why, when the member or a group on the way was deleted or restored: the reason of the
        member's own membership change if it has one, else the one its causes share."""
        own = {c.reason for c in self.causes if c.member_id == self.member_id and c.reason}
        if len(own) == 1:
            return own.pop()
        reasons = {c.reason for c in self.causes}
        return reasons.pop() if len(reasons) == 1 else None


def judge(
    root: str, member: str, causes: Sequence[EdgeChange], before: Moment, after: Moment
) -> EffectiveChange | None:
    """Whether `member`'s effective membership of `root` changed between the two moments through
    nested groups (a change of the direct membership is the plain alert's, see the module doc)."""
    path_before = effective_path(reach(before.children, root), member, before.has)
    path_after = effective_path(reach(after.children, root), member, after.has)
    if (path_before is None) == (path_after is None):
        return None
    event: AlertEvent = "added" if path_after is not None else "removed"
    path = path_after if path_after is not None else path_before
    if not path:
        return None  # the direct membership itself changed
    return EffectiveChange(root, member, event, tuple(path), tuple(causes))


def effective_alert_id(tenant: str, seq: int, observed_at: str, rule: str, group: str, subject: str) -> str:
    """Stable across redeliveries, distinct from the plain alert of the same record, and from an alert
    of a later log of the tenant whose seq started again (`monitor.alerts.alert_id`)."""
    return str(uuid.uuid5(ALERT_ID_NAMESPACE, f"{tenant}/{seq}/{observed_at}/{rule}/effective/{group}/{subject}"))


def render(
    tenant: str, rule: AlertRule, changes: Sequence[EffectiveChange], kinds: Mapping[str, str], facts: Facts
) -> list[Alert]:
    """The alerts of one rule for the effective changes of its watched groups: one each, or one per
    group and direction when more than `effective_fold_threshold` members changed at once.
    `kinds`: member id -> kind (user, device, ...)."""
    grouped: dict[tuple[str, AlertEvent], list[EffectiveChange]] = {}
    for change in sorted(changes, key=lambda c: (c.seq, c.member_id)):
        if change.event in rule.events:
            grouped.setdefault((change.group_id, change.event), []).append(change)
    alerts = []
    for (group_id, event), batch in grouped.items():
        if len(batch) > rule.effective_fold_threshold:
            alerts.append(_folded(tenant, rule, group_id, event, batch, kinds, facts))
        else:
            alerts += [_single(tenant, rule, change, kinds, facts) for change in batch]
    return sorted(alerts, key=lambda alert: alert.seq)


def _chain(through: Iterable[str], facts: Facts) -> tuple[GroupInfo, ...]:
    return tuple(group_info(group, facts) for group in through)


def _cause(causes: Iterable[EdgeChange]) -> Cause | None:
    """The alert's one membership change, when there is exactly one and it was not a deletion."""
    distinct = {(c.group_id, c.member_id): c for c in causes}
    if len(distinct) != 1:
        return None
    [cause] = distinct.values()
    if cause.reason:
        return None
    return Cause(cause.group_id, cause.member_id, "added" if cause.added else "removed", cause.observed_at)


def _single(tenant: str, rule: AlertRule, change: EffectiveChange, kinds: Mapping[str, str], facts: Facts) -> Alert:
    kind: AlertChange = "effective_member_added" if change.event == "added" else "effective_member_removed"
    return Alert(
        effective_alert_id(tenant, change.seq, change.observed_at, rule.name, change.group_id, change.member_id),
        kind,
        rule.name,
        tenant,
        group_info(change.group_id, facts),
        change.seq,
        change.observed_at,
        member_info(change.member_id, kinds.get(change.member_id, "unknown"), facts),
        reason=change.reason,
        send_to=rule.send_to,
        through=_chain(change.through, facts),
        cause=_cause(change.causes),
    )


def _folded(
    tenant: str,
    rule: AlertRule,
    group_id: str,
    event: AlertEvent,
    batch: Sequence[EffectiveChange],
    kinds: Mapping[str, str],
    facts: Facts,
) -> Alert:
    kind: AlertChange = "effective_members_added" if event == "added" else "effective_members_removed"
    last = max(batch, key=lambda c: c.seq)
    sample = batch[:MASS_REMOVAL_SAMPLE]
    reasons = {change.reason for change in batch}
    return Alert(
        effective_alert_id(tenant, last.seq, last.observed_at, rule.name, group_id, event),
        kind,
        rule.name,
        tenant,
        group_info(group_id, facts),
        last.seq,
        last.observed_at,
        count=len(batch),
        sample=tuple(member_info(c.member_id, kinds.get(c.member_id, "unknown"), facts) for c in sample),
        sample_through=tuple(_chain(c.through, facts) for c in sample),
        first_seq=min(change.seq for change in batch),
        reason=reasons.pop() if len(reasons) == 1 else None,
        send_to=rule.send_to,
        cause=_cause(cause for change in batch for cause in change.causes),
    )


def named_members(rule: AlertRule, changes: Sequence[EffectiveChange]) -> set[str]:
    """The members `render` names for `rule` (all of a group's changes, or the sample of a folded
    alert), so that only their facts need looking up."""
    grouped: dict[tuple[str, AlertEvent], list[str]] = {}
    for change in sorted(changes, key=lambda c: (c.seq, c.member_id)):
        if change.event in rule.events:
            grouped.setdefault((change.group_id, change.event), []).append(change.member_id)
    named: set[str] = set()
    for members in grouped.values():
        named.update(members[:MASS_REMOVAL_SAMPLE] if len(members) > rule.effective_fold_threshold else members)
    return named
