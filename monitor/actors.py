"""Who made a membership change (pure): directory audit entries, and which one an alert is about.

Graph's change notifications and delta queries say what changed, never who changed it. The tenant's
directory audit log does (docs/graph.md 13): an entry per member added to or removed from a group,
with `initiatedBy` (a user: id, displayName, userPrincipalName; or an application: appId,
displayName, servicePrincipalId) and `targetResources` (the group and the member). Entries appear
minutes after the change, so an alert goes out at once with `actorStatus: pending`, and an update
with the same `id` follows once the entry is found (`found`, with the actor), or after
`MONITOR_ACTOR_WAIT` without it (`unknown`). A tenant whose audit log cannot be read (no
`AuditLog.Read.All`, or no Entra ID P1/P2 licence) gets `actor: null` and `actorStatus:
unavailable`, and `monitor status` says why.

Matching an alert to an entry, under every reading Microsoft's pages leave open (docs/graph.md
13.3): the activity says the direction; the entry's target ids must be exactly the group and the
member (the documentation lists the group first, entries seen in practice the member first); when
a target carries `Group.ObjectID` in its `modifiedProperties`, that names the group. The time must
fit: the change happened before monitor saw it (allowing for clocks, `CLOCK_SKEW`), at most a
safety-net interval earlier (a change found by the timer round rather than a notification). Of
several candidates (added, removed, added again), the latest wins. Only successful entries count.

Alerts about several memberships at once (a mass removal, a group's members folded into one
effective alert) and memberships that moved because their member or group was deleted or restored
(those have no "member" entry of their own) carry no actor.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from monitor.alert_rules import AlertEvent
from monitor.alerts import Cause
from monitor.model.types import JsonMapping, JsonObject

# https://learn.microsoft.com/en-us/entra/identity/monitoring-health/reference-audit-activities,
# category GroupManagement. The owner activities exist too ("Add owner to group", "Remove owner from
# group"), but monitor mirrors group members, not owners, so only these two are read.
ADD_MEMBER = "Add member to group"
REMOVE_MEMBER = "Remove member from group"
MEMBER_ACTIVITIES: dict[str, AlertEvent] = {ADD_MEMBER: "added", REMOVE_MEMBER: "removed"}
# An entry may carry a time a little after monitor's own observation (the clocks differ).
CLOCK_SKEW = 120.0
# Where `modifiedProperties` names the group a member was added to or removed from.
GROUP_OBJECT_ID = "Group.ObjectID"
# The error code Microsoft documents for a tenant without the licence the reporting API needs.
NON_PREMIUM_CODE = "Authentication_RequestFromNonPremiumTenantOrB2CTenant"


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One membership entry of the directory audit log, as much of it as matching needs."""

    id: str
    at: float  # activityDateTime, epoch seconds
    event: AlertEvent
    targets: frozenset[str]
    group_id: str | None  # from Group.ObjectID, when the entry carries it
    actor: JsonObject

    def pairs(self) -> list[tuple[str, str]]:
        """The (group, member) pairs the entry may be about: one when it names its group, else both
        orders of its two targets."""
        if len(self.targets) != 2:
            return []
        first, second = sorted(self.targets)
        if self.group_id in self.targets:
            return [(self.group_id, second if self.group_id == first else first)]
        return [(first, second), (second, first)]

    def to_json(self) -> JsonObject:
        return {
            "id": self.id,
            "at": self.at,
            "event": self.event,
            "targets": sorted(self.targets),
            "group": self.group_id,
            "actor": self.actor,
        }

    @classmethod
    def from_json(cls, body: JsonMapping) -> AuditEntry:
        event: AlertEvent = "added" if body["event"] == "added" else "removed"
        group = body.get("group")
        return cls(str(body["id"]), float(body["at"]), event, frozenset(body["targets"]), group, dict(body["actor"]))


def parse_entry(raw: JsonMapping) -> AuditEntry | None:
    """An entry of `GET /auditLogs/directoryAudits`, or None when it is not a successful membership
    change with a known initiator."""
    event = MEMBER_ACTIVITIES.get(str(raw.get("activityDisplayName", "")))
    if event is None or str(raw.get("result", "")).lower() != "success":
        return None
    targets = [t for t in raw.get("targetResources") or [] if isinstance(t, Mapping) and t.get("id")]
    actor = _actor(raw.get("initiatedBy"))
    at = epoch(raw.get("activityDateTime"))
    if actor is None or at is None or not raw.get("id") or not targets:
        return None
    return AuditEntry(
        str(raw["id"]), at, event, frozenset(str(t["id"]) for t in targets), _group_object_id(targets), actor
    )


def _actor(initiated_by: object) -> JsonObject | None:
    if not isinstance(initiated_by, Mapping):
        return None
    user, app = initiated_by.get("user"), initiated_by.get("app")
    if isinstance(user, Mapping) and user.get("id"):
        name, upn = user.get("displayName"), user.get("userPrincipalName")
        return {"type": "user", "id": str(user["id"]), "name": name, "userPrincipalName": upn}
    if isinstance(app, Mapping) and (app.get("servicePrincipalId") or app.get("appId")):
        return {
            "type": "application",
            "id": app.get("servicePrincipalId"),
            "appId": app.get("appId"),
            "name": app.get("displayName") or app.get("servicePrincipalName"),
        }
    return None


def _group_object_id(targets: Iterable[JsonMapping]) -> str | None:
    for target in targets:
        for prop in target.get("modifiedProperties") or []:
            if isinstance(prop, Mapping) and prop.get("displayName") == GROUP_OBJECT_ID:
                value = prop.get("newValue") or prop.get("oldValue")
                if isinstance(value, str) and value.strip('"'):
                    return value.strip('"')
    return None


def epoch(value: object) -> float | None:
    """Seconds since the epoch of Graph's `activityDateTime` (up to seven fractional digits)."""
    if not isinstance(value, str) or not value:
        return None
    head, _, fraction = value.rstrip("Zz").partition(".")
    try:
        moment = datetime.fromisoformat(head).replace(tzinfo=UTC)
    except ValueError:
        return None
    digits = "".join(ch for ch in fraction if ch.isdigit())
    return moment.timestamp() + (int(digits) / 10 ** len(digits) if digits else 0.0)


def graph_time(epoch: float) -> str:
    """An `activityDateTime` filter value: UTC, whole seconds, a trailing Z."""
    return datetime.fromtimestamp(int(epoch), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def find_entry(entries: Iterable[AuditEntry], cause: Cause, *, lookback: float) -> AuditEntry | None:
    """The entry recording `cause`, the latest of the candidates (see the module doc)."""
    observed = epoch(cause.observed_at)
    if observed is None:
        return None
    candidates = [
        entry
        for entry in entries
        if entry.event == cause.event
        and entry.targets == {cause.group_id, cause.member_id}
        and entry.group_id in (None, cause.group_id)
        and observed - lookback <= entry.at <= observed + CLOCK_SKEW
    ]
    return max(candidates, key=lambda entry: (entry.at, entry.id), default=None)


def actor_json(entry: AuditEntry) -> JsonObject:
    """The alert's `actor`: who, and the audit entry that says so."""
    return {**entry.actor, "auditEntry": {"id": entry.id, "activityDateTime": iso(entry.at)}}


def unavailable_reason(status: int, code: str, message: str) -> str | None:
    """Why the audit log cannot be read, from Graph's refusal; None when the refusal says nothing
    lasting (not a 403)."""
    if status != 403:
        return None
    if code == NON_PREMIUM_CODE or "premium" in message.lower():
        return "the tenant has no Entra ID P1/P2 licence"
    return "missing permission AuditLog.Read.All (Microsoft's permission table also names Directory.Read.All)"
