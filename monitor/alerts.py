"""Membership-change alerts (pure): which change records raise which alerts under a tenant's rules.

The change log already says exactly what changed (docs/change-record.md), so alerting is a
function of a batch of records and a few facts about the groups and members they name:

- A membership is an `azure_group_has_member` relationship record. An upsert without `before` is a
  member added; a delete is a member removed. An upsert *with* a `before` only changed a property of
  the edge (its `memberType`, say): nobody joined or left, so it raises nothing.
- Facts (a group's display name and `isAssignableToRole`, a member's name and UPN) come from the
  batch itself when it holds the entity (a group created or deleted together with its memberships:
  its `after`, or its `before` once deleted, which the mirror no longer has), otherwise from the
  mirror. The caller fetches mirror facts; `group_refs` and `member_refs` say which, so a batch costs
  only the lookups that can matter.
- More than `mass_removal_threshold` removals from one group under one rule in one batch become one
  `mass_removal` alert (the count and a sample of members): a group emptied by a script or deleted
  outright should page someone once, not hundreds of times.
- A membership that leaves or comes back because its member or its group was deleted or restored
  (monitor.sources.parking) is a removal or an addition like any other; the record's `reason`
  (`member_deleted`, `group_deleted`, `member_restored`, `group_restored`) goes into the alert, so
  that "removed from the group" and "deleted from the directory" read differently.

Each alert carries a stable id derived from the tenant, the record's `seq` and the rule name: the
change log is delivered at least once (a crash after sending and before the cursor is saved sends
again), and receivers drop what they have already seen by that id.
"""

from __future__ import annotations

import fnmatch
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from monitor.alert_rules import AlertEvent, AlertRule
from monitor.model.groups import GROUP_FAMILY, GROUP_TYPE, MEMBERSHIP_TYPE, PLACEHOLDER_FAMILY, PLACEHOLDER_TYPE
from monitor.model.types import JsonObject
from monitor.model.users import USER_FAMILY, USER_TYPE
from monitor.records import ChangeRecord

AlertChange = Literal[
    "member_added",
    "member_removed",
    "mass_removal",
    "effective_member_added",
    "effective_member_removed",
    "effective_members_added",
    "effective_members_removed",
]
# Where the alert's `actor` stands (monitor.actors): an update with the same id follows `pending`.
ActorStatus = Literal["pending", "found", "unknown", "unavailable"]
# Where a fact lives in the mirror: (entity family, key), as `entity_placement(family, key)` takes them.
Ref = tuple[str, str]
Facts = Mapping[Ref, JsonObject]

# Members named in a mass-removal alert; `count` says how many there were in all.
MASS_REMOVAL_SAMPLE = 10
# The namespace of alert ids (uuid5). Never change it: receivers deduplicate by id across releases.
ALERT_ID_NAMESPACE = uuid.UUID("6f1c0e52-9a43-4f0e-8a7d-2f4b1c9e7a10")

# `memberType` of a membership is the member's raw `@odata.type` (docs/jupiterone.md 2.2), in any casing.
_MEMBER_KINDS = {
    "#microsoft.graph.user": "user",
    "#microsoft.graph.group": "group",
    "#microsoft.graph.device": "device",
    "#microsoft.graph.serviceprincipal": "servicePrincipal",
    "#microsoft.graph.orgcontact": "contact",
}
_ODATA_PREFIX = "#microsoft.graph."
# Entity `_type` -> the family it is mirrored under, for the entities alerts read facts from.
_FACT_FAMILIES = {USER_TYPE: USER_FAMILY, GROUP_TYPE: GROUP_FAMILY, PLACEHOLDER_TYPE: PLACEHOLDER_FAMILY}
# Member kind -> the family its facts are mirrored under (devices, service principals, contacts are
# placeholders).
_MEMBER_FAMILIES = {"user": USER_FAMILY, "group": GROUP_FAMILY}


@dataclass(frozen=True, slots=True)
class MembershipChange:
    """A member joining or leaving a group, as one change record tells it."""

    seq: int
    observed_at: str
    group_id: str
    member_id: str
    member_kind: str
    event: AlertEvent
    reason: str | None = None  # the record's `reason`, when the member or group itself went or came back

    @property
    def member_ref(self) -> Ref:
        return (_MEMBER_FAMILIES.get(self.member_kind, PLACEHOLDER_FAMILY), self.member_id)


@dataclass(frozen=True, slots=True)
class Cause:
    """The one membership change an alert is about, as the directory audit log records it: who made
    it is looked up by group, member, direction and time (monitor.actors)."""

    group_id: str
    member_id: str
    event: AlertEvent
    observed_at: str

    def to_json(self) -> JsonObject:
        return {"group": self.group_id, "member": self.member_id, "event": self.event, "observedAt": self.observed_at}

    @classmethod
    def from_json(cls, body: JsonObject) -> Cause:
        event: AlertEvent = "added" if body["event"] == "added" else "removed"
        return cls(str(body["group"]), str(body["member"]), event, str(body["observedAt"]))


@dataclass(frozen=True, slots=True)
class GroupInfo:
    id: str
    name: str | None
    role_assignable: bool

    def to_json(self) -> JsonObject:
        return {"id": self.id, "name": self.name, "roleAssignable": self.role_assignable}


@dataclass(frozen=True, slots=True)
class MemberInfo:
    """A member as an alert names it; `name` is None when neither the batch nor the mirror knows it."""

    id: str
    kind: str
    name: str | None
    user_principal_name: str | None = None

    def to_json(self) -> JsonObject:
        return {"id": self.id, "kind": self.kind, "name": self.name, "userPrincipalName": self.user_principal_name}


@dataclass(frozen=True, slots=True)
class Alert:
    """One alert. `send_to` routes it (the rule's destinations) and is not part of its JSON."""

    id: str
    change: AlertChange
    rule: str
    tenant: str
    group: GroupInfo
    seq: int
    observed_at: str
    member: MemberInfo | None = None
    # mass_removal only: how many members left, a sample of them, and the seq of the first removal
    # (`seq` is the last one's).
    count: int = 1
    sample: tuple[MemberInfo, ...] = ()
    first_seq: int | None = None
    reason: str | None = None
    send_to: tuple[str, ...] = field(default=(), compare=False)
    # Effective membership (monitor.effective): the groups from the watched group's member down to the
    # group the member is in ("through B"); for a folded alert, each sampled member's.
    through: tuple[GroupInfo, ...] = ()
    sample_through: tuple[tuple[GroupInfo, ...], ...] = ()
    # Who made the change (monitor.actors): the alert's one membership change, where it has one.
    cause: Cause | None = field(default=None, compare=False)
    actor_status: ActorStatus | None = None
    actor: JsonObject | None = None
    update: bool = False  # an update of an alert sent before (same id), carrying its actor

    @property
    def folded(self) -> bool:
        return self.change in ("mass_removal", "effective_members_added", "effective_members_removed")

    def to_json(self) -> JsonObject:
        body: JsonObject = {
            "id": self.id,
            "change": self.change,
            "rule": self.rule,
            "tenant": self.tenant,
            "group": self.group.to_json(),
        }
        if self.member is not None:
            body["member"] = self.member.to_json()
        if self.through:
            body["through"] = [group.to_json() for group in self.through]
        if self.reason is not None:
            body["reason"] = self.reason
        if self.folded:
            body["count"] = self.count
            body["sample"] = self._sample_json()
            body["firstSeq"] = self.first_seq
        if self.actor_status is not None:
            body["actor"] = self.actor
            body["actorStatus"] = self.actor_status
        if self.update:
            body["update"] = "actor"
        body["seq"] = self.seq
        body["observedAt"] = self.observed_at
        return body

    def _sample_json(self) -> list[JsonObject]:
        sample = [member.to_json() for member in self.sample]
        for entry, through in zip(sample, self.sample_through, strict=False):
            entry["through"] = [group.to_json() for group in through]
        return sample


class Deliverable(Protocol):
    """What the alert destinations send: an alert, or an update of one (monitor.sinks.actors)."""

    @property
    def id(self) -> str: ...

    @property
    def tenant(self) -> str: ...

    @property
    def seq(self) -> int: ...

    @property
    def send_to(self) -> tuple[str, ...]: ...

    def to_json(self) -> JsonObject: ...


@dataclass(frozen=True, slots=True)
class Match:
    """Changes of one group that one rule alerts on: one alert, a single change or a mass removal."""

    rule: AlertRule
    group_id: str
    changes: tuple[MembershipChange, ...]
    mass: bool = False

    @property
    def named(self) -> tuple[MembershipChange, ...]:
        """The changes whose members the alert names (a mass removal names only its sample)."""
        return self.changes[:MASS_REMOVAL_SAMPLE] if self.mass else self.changes


def alert_id(tenant: str, seq: int, observed_at: str, rule: str) -> str:
    """Stable across redeliveries: the same record under the same rule is the same alert. A record is
    known by its seq and its commit time (`observedAt`): a tenant's seq starts again at 1 when its log
    does (docs/change-record.md), and a new alert must not take an old alert's id, which receivers and
    the alerts file would drop as a repeat."""
    return str(uuid.uuid5(ALERT_ID_NAMESPACE, f"{tenant}/{seq}/{observed_at}/{rule}"))


def member_kind(member_type: object) -> str:
    """`user`, `group`, `device`, `servicePrincipal`, `contact`; another `@odata.type` without its
    namespace; `unknown` when the record has none."""
    if not isinstance(member_type, str) or not member_type:
        return "unknown"
    kind = _MEMBER_KINDS.get(member_type.lower())
    if kind is not None:
        return kind
    return member_type[len(_ODATA_PREFIX) :] if member_type.lower().startswith(_ODATA_PREFIX) else member_type


def membership_changes(records: Iterable[ChangeRecord]) -> list[MembershipChange]:
    """The members added and removed in `records`, in seq order."""
    changes = []
    for record in records:
        if record.get("kind") != "relationship" or record.get("type") != MEMBERSHIP_TYPE:
            continue
        if record["op"] == "delete":
            event: AlertEvent = "removed"
            edge = record.get("before")
        elif record.get("before") is None:
            event, edge = "added", record.get("after")
        else:
            continue  # a property of the edge changed; the membership itself did not
        if not isinstance(edge, Mapping):
            continue
        group_id = edge.get("groupId") or edge.get("_fromEntityKey")
        member_id = edge.get("memberId") or edge.get("_toEntityKey")
        if not group_id or not member_id:
            continue
        changes.append(
            MembershipChange(
                seq=int(record["seq"]),
                observed_at=str(record.get("observedAt", "")),
                group_id=str(group_id),
                member_id=str(member_id),
                member_kind=member_kind(edge.get("memberType")),
                event=event,
                reason=str(record["reason"]) if record.get("reason") else None,
            )
        )
    return changes


def batch_facts(records: Iterable[ChangeRecord]) -> dict[Ref, JsonObject]:
    """Users, groups and placeholders as the batch leaves them: `after` of an upsert, `before` of a
    delete (a deleted group's name is known only here). The last record of an object wins."""
    facts: dict[Ref, JsonObject] = {}
    for record in records:
        family = _FACT_FAMILIES.get(record.get("type", ""))
        if family is None or record.get("kind") != "entity":
            continue
        obj = record.get("before") if record["op"] == "delete" else record.get("after")
        if isinstance(obj, dict):
            facts[(family, str(record["key"]))] = obj
    return facts


def group_refs(changes: Iterable[MembershipChange]) -> set[Ref]:
    """The groups whose facts decide which rules match."""
    return {(GROUP_FAMILY, change.group_id) for change in changes}


def member_refs(matches: Iterable[Match]) -> set[Ref]:
    """The members whose facts the alerts will name."""
    return {change.member_ref for match_ in matches for change in match_.named}


def watches(rule: AlertRule, group_id: str, group: JsonObject | None) -> bool:
    """Whether `rule` watches the group (`group`: its facts, None when unknown)."""
    if group_id.lower() in {g.lower() for g in rule.groups}:
        return True
    if group is None:
        return False  # neither the batch nor the mirror knows the group: only an id can match it
    if rule.role_assignable and group.get("isAssignableToRole") is True:
        return True
    name = group.get("displayName")
    pattern = rule.group_name_pattern
    return pattern is not None and isinstance(name, str) and fnmatch.fnmatchcase(name.lower(), pattern.lower())


def _rule_matches(rule: AlertRule, by_group: Mapping[str, list[MembershipChange]], facts: Facts) -> list[Match]:
    matches: list[Match] = []
    for group_id, group_changes in by_group.items():
        if not watches(rule, group_id, facts.get((GROUP_FAMILY, group_id))):
            continue
        relevant = [
            c for c in group_changes if c.event in rule.events and (rule.include_nested or c.member_kind != "group")
        ]
        removed = [c for c in relevant if c.event == "removed"]
        if len(removed) > rule.mass_removal_threshold:
            matches.append(Match(rule, group_id, tuple(removed), mass=True))
            relevant = [c for c in relevant if c.event != "removed"]
        matches += [Match(rule, group_id, (change,)) for change in relevant]
    return matches


def match(rules: Sequence[AlertRule], changes: Sequence[MembershipChange], facts: Facts) -> list[Match]:
    """Which rules alert on which changes. Needs the facts of `group_refs(changes)`."""
    by_group: dict[str, list[MembershipChange]] = {}
    for change in changes:
        by_group.setdefault(change.group_id, []).append(change)
    return [m for rule in rules for m in _rule_matches(rule, by_group, facts)]


def group_info(group_id: str, facts: Facts) -> GroupInfo:
    group = facts.get((GROUP_FAMILY, group_id))
    if group is None:
        return GroupInfo(group_id, None, False)
    name = group.get("displayName") or group.get("name")
    return GroupInfo(group_id, str(name) if name else None, group.get("isAssignableToRole") is True)


def _member_info(change: MembershipChange, facts: Facts) -> MemberInfo:
    return member_info(change.member_id, change.member_kind, facts)


def member_info(member_id: str, kind: str, facts: Facts) -> MemberInfo:
    """A member as alerts name it, from the facts of its family (`member_ref`)."""
    member = facts.get((_MEMBER_FAMILIES.get(kind, PLACEHOLDER_FAMILY), member_id))
    if member is None:
        return MemberInfo(member_id, kind, None)
    name = member.get("displayName") or member.get("name")
    upn = member.get("userPrincipalName") if kind == "user" else None
    return MemberInfo(member_id, kind, str(name) if name else None, upn)


def _alert(tenant: str, found: Match, facts: Facts) -> Alert:
    rule, last = found.rule, found.changes[-1]
    group = group_info(found.group_id, facts)
    ident = alert_id(tenant, last.seq, last.observed_at, rule.name)
    if found.mass:
        return Alert(
            ident,
            "mass_removal",
            rule.name,
            tenant,
            group,
            last.seq,
            last.observed_at,
            count=len(found.changes),
            sample=tuple(_member_info(change, facts) for change in found.named),
            first_seq=found.changes[0].seq,
            reason=_common_reason(found.changes),
            send_to=rule.send_to,
        )
    change: AlertChange = "member_added" if last.event == "added" else "member_removed"
    member = _member_info(last, facts)
    # A membership that moved with a deleted or restored object has no audit entry of its own.
    cause = None if last.reason else Cause(found.group_id, last.member_id, last.event, last.observed_at)
    return Alert(
        ident,
        change,
        rule.name,
        tenant,
        group,
        last.seq,
        last.observed_at,
        member,
        reason=last.reason,
        send_to=rule.send_to,
        cause=cause,
    )


def _common_reason(changes: Sequence[MembershipChange]) -> str | None:
    """The reason of a mass removal: the one all its removals share, if they share one."""
    reasons = {change.reason for change in changes}
    return reasons.pop() if len(reasons) == 1 else None


def render(tenant: str, matches: Iterable[Match], facts: Facts) -> list[Alert]:
    """The alerts for `matches`, in seq order (a mass removal at its last removal). Needs the facts
    of `member_refs(matches)` too."""
    return sorted((_alert(tenant, found, facts) for found in matches), key=lambda alert: alert.seq)


def evaluate(tenant: str, rules: Sequence[AlertRule], records: Sequence[ChangeRecord], mirror: Facts) -> list[Alert]:
    """The alerts `rules` raise for a batch of change records of `tenant`.

    `mirror` holds the facts the batch lacks (at least those of `group_refs` and `member_refs`;
    more is harmless). Facts in the batch win over the mirror's: they are what the change saw.
    """
    changes = membership_changes(records)
    if not changes or not rules:
        return []
    facts = {**mirror, **batch_facts(records)}
    return render(tenant, match(rules, changes, facts), facts)
