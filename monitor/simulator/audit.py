"""The directory audit log of a simulated tenant: an entry per membership change, listed by
`GET /v1.0/auditLogs/directoryAudits` once it has had time to arrive (docs/graph.md 13).

What Microsoft documents, and what the simulator does with it:

- Each add or removal of a group member is an entry of category `GroupManagement`, activity
  "Add member to group" or "Remove member from group", logged by "Core Directory"
  (https://learn.microsoft.com/en-us/entra/identity/monitoring-health/reference-audit-activities),
  with `initiatedBy` (a `user` or an `app`) and `targetResources`
  (https://learn.microsoft.com/en-us/graph/api/resources/directoryaudit).
- Entries appear minutes after the change: Microsoft's former latency table gave 2 minutes for 95%
  and 5 minutes for 99% of audit entries; the current page names only what delays them
  (https://learn.microsoft.com/en-us/entra/identity/monitoring-health/reference-log-latency).
  `AuditOptions.delay` is when an entry becomes listable (2 minutes by default).
- The list supports `$filter` (`eq`, `ge`, `le` on `activityDateTime`; `eq` and `startswith` on
  `activityDisplayName`; `eq` on `loggedByService`, `correlationId` and `id`), `$orderby` on
  `activityDateTime`, `$top` and paging by `@odata.nextLink`
  (https://learn.microsoft.com/en-us/graph/api/directoryaudit-list). Anything else in `$filter`
  (`or`, `category`, other properties) is refused with a 400 rather than guessed at.

Where Microsoft's pages leave a choice open, `AuditOptions` holds each reading, and the product is
tested under all of them:

- `targets`: the order and shape of `targetResources`. The documentation's example lists the group
  first and the member second; entries seen in practice list the member first, carrying
  `Group.ObjectID` and `Group.DisplayName` in its `modifiedProperties` (JSON-quoted values), then
  the group.
- `permissions`: which application permissions open the list. The generated permissions table
  says `AuditLog.Read.All` and `Directory.Read.All` ("both"); a later version of the page lists
  `AuditLog.Read.All`, with `Directory.Read.All` as the higher-privileged alternative
  ("audit_log"); the reporting how-to says "either" is enough.
- `requires_premium`: whether a tenant without Entra ID P1/P2 is refused. The reporting API's
  prerequisites state the licence for sign-in reports; the error they document for it is
  `Authentication_RequestFromNonPremiumTenantOrB2CTenant`, "Neither tenant is B2C or tenant doesn't
  have premium license"
  (https://learn.microsoft.com/en-us/entra/identity/monitoring-health/howto-configure-prerequisites-for-reporting-api).
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from monitor.simulator.clock import SimClock
from monitor.simulator.errors import GraphError, bad_request

ADD_MEMBER = "Add member to group"
REMOVE_MEMBER = "Remove member from group"
CORE_DIRECTORY = "Core Directory"
NON_PREMIUM = GraphError(
    403,
    "Authentication_RequestFromNonPremiumTenantOrB2CTenant",
    "Neither tenant is B2C or tenant doesn't have premium license",
)
# The Graph `@odata.type` of a member -> the `type` of its target resource.
TARGET_TYPES = {
    "#microsoft.graph.user": "User",
    "#microsoft.graph.group": "Group",
    "#microsoft.graph.device": "Device",
    "#microsoft.graph.servicePrincipal": "ServicePrincipal",
}


@dataclass
class AuditOptions:
    """How the tenant's audit log behaves where Microsoft's pages leave a choice (module doc)."""

    delay: float = 120.0
    targets: Literal["member_first", "group_first"] = "member_first"
    permissions: Literal["both", "audit_log", "either"] = "both"
    requires_premium: bool = True


def user_initiator(user: dict[str, Any]) -> dict[str, Any]:
    """`initiatedBy` of a change made by a signed-in user (an administrator in the portal)."""
    identity = {
        "id": user["id"],
        "displayName": user.get("displayName"),
        "userPrincipalName": user.get("userPrincipalName"),
        "ipAddress": "203.0.113.24",
    }
    return {"user": identity, "app": None}


def app_initiator(app_id: str, name: str, service_principal_id: str) -> dict[str, Any]:
    """`initiatedBy` of a change made by an application (a script calling Graph with its own token)."""
    identity = {
        "appId": app_id,
        "displayName": name,
        "servicePrincipalId": service_principal_id,
        "servicePrincipalName": name,
    }
    return {"user": None, "app": identity}


class AuditedTenant(Protocol):
    """What the audit log reads of its tenant (a `SimTenant`, which owns the log and imports this module)."""

    tenant_id: str
    domain: str
    clock: SimClock
    groups: dict[str, dict[str, Any]]

    def new_id(self) -> str: ...

    def directory_object(self, object_id: str) -> dict[str, Any] | None: ...


@dataclass
class DirectoryAudit:
    """One tenant's directory audit log: entries with the time from which they can be listed."""

    tenant: AuditedTenant
    options: AuditOptions = field(default_factory=AuditOptions)
    entries: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    initiator: dict[str, Any] | None = None  # who makes changes when nobody is named; an admin by default

    def default_initiator(self) -> dict[str, Any]:
        if self.initiator is None:
            admin_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{self.tenant.tenant_id}/admin"))
            admin = {"id": admin_id, "displayName": "MOD Administrator"}
            self.initiator = user_initiator({**admin, "userPrincipalName": f"admin@{self.tenant.domain}"})
        return self.initiator

    def membership(
        self, group_id: str, member_id: str, odata_type: str, *, added: bool, initiator: dict[str, Any] | None
    ) -> dict[str, Any]:
        """Log a member added to (or removed from) a group; returns the entry."""
        now = self.tenant.clock.timestamp()
        correlation = self.tenant.new_id()
        entry = {
            "id": f"Directory_{correlation}_{len(self.entries) + 1:08d}",
            "category": "GroupManagement",
            "correlationId": correlation,
            "result": "success",
            "resultReason": "",
            "activityDisplayName": ADD_MEMBER if added else REMOVE_MEMBER,
            "activityDateTime": _audit_time(self.tenant.clock.now()),
            "loggedByService": CORE_DIRECTORY,
            "operationType": "Assign" if added else "Unassign",
            "initiatedBy": initiator or self.default_initiator(),
            "targetResources": self._targets(group_id, member_id, odata_type, added),
            "additionalDetails": [],
        }
        self.entries.append((now + self.options.delay, entry))
        return entry

    def _targets(self, group_id: str, member_id: str, odata_type: str, added: bool) -> list[dict[str, Any]]:
        group = self.tenant.groups.get(group_id) or {}
        member = self.tenant.directory_object(member_id) or {}
        group_target = _target(group_id, group.get("displayName"), "Group", None)
        group_target["groupType"] = "unifiedGroups" if "Unified" in (group.get("groupTypes") or []) else "azureAD"
        member_target = _target(
            member_id, member.get("displayName"), TARGET_TYPES.get(odata_type, "Other"), member.get("userPrincipalName")
        )
        if self.options.targets == "group_first":
            return [group_target, member_target]
        quoted_id, quoted_name = f'"{group_id}"', f'"{group.get("displayName", "")}"'
        member_target["modifiedProperties"] = [
            _modified("Group.ObjectID", quoted_id, added),
            _modified("Group.DisplayName", quoted_name, added),
        ]
        return [member_target, group_target]

    def listable(self, now: float) -> list[dict[str, Any]]:
        return [entry for visible_at, entry in self.entries if visible_at <= now]


def _target(object_id: str, name: Any, kind: str, upn: Any) -> dict[str, Any]:
    return {"id": object_id, "displayName": name, "type": kind, "userPrincipalName": upn, "modifiedProperties": []}


def _modified(name: str, value: str, added: bool) -> dict[str, Any]:
    return {"displayName": name, "oldValue": None if added else value, "newValue": value if added else None}


def _audit_time(moment: datetime) -> str:
    """`activityDateTime` as Graph writes it: UTC, seven fractional digits, a trailing Z."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f") + "0Z"


# -- $filter -----------------------------------------------------------------------------------

_DATE = r"(\d{4}-\d{2}-\d{2}(?:T\d{2}:\d{2}(?::\d{2}(?:\.\d{1,7})?)?(?:Z|[+-]\d{2}:\d{2})?)?)"
_CLAUSES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"^activityDateTime (eq|ge|le) " + _DATE + "$", re.I), "activityDateTime"),
    (re.compile(r"^activityDisplayName eq '((?:[^']|'')*)'$", re.I), "activityDisplayName"),
    (re.compile(r"^startswith\(activityDisplayName, ?'((?:[^']|'')*)'\)$", re.I), "activityDisplayName^"),
    (re.compile(r"^(loggedByService|correlationId|id) eq '((?:[^']|'')*)'$", re.I), "eq"),
]


def parse_filter(text: str) -> list[tuple[str, str, str]]:
    """The clauses of a `$filter` joined by `and`, as (property, operator, value); a 400 for anything
    the list's page does not document."""
    clauses = []
    for raw in re.split(r"\s+and\s+", text.strip(), flags=re.I):
        clause = raw.strip()
        while clause.startswith("(") and clause.endswith(")"):
            clause = clause[1:-1].strip()
        clauses.append(_clause(clause))
    return clauses


def _clause(clause: str) -> tuple[str, str, str]:
    for pattern, kind in _CLAUSES:
        found = pattern.match(clause)
        if found is None:
            continue
        if kind == "activityDateTime":
            return ("activityDateTime", found.group(1).lower(), found.group(2))
        if kind == "activityDisplayName":
            return ("activityDisplayName", "eq", found.group(1).replace("''", "'"))
        if kind == "activityDisplayName^":
            return ("activityDisplayName", "startswith", found.group(1).replace("''", "'"))
        return (found.group(1), "eq", found.group(2).replace("''", "'"))
    raise bad_request(f"Invalid filter clause: {clause}")


def matches(entry: dict[str, Any], clauses: list[tuple[str, str, str]]) -> bool:
    return all(_holds(entry, clause) for clause in clauses)


def _holds(entry: dict[str, Any], clause: tuple[str, str, str]) -> bool:
    prop, operator, value = clause
    if prop == "activityDateTime":
        mine, theirs = instant(entry["activityDateTime"]), instant(value)
        return {"eq": mine == theirs, "ge": mine >= theirs, "le": mine <= theirs}[operator]
    actual = next((v for k, v in entry.items() if k.lower() == prop.lower()), None)
    if operator == "startswith":
        return isinstance(actual, str) and actual.lower().startswith(value.lower())
    return isinstance(actual, str) and actual.lower() == value.lower()


def instant(text: str) -> float:
    """Seconds since the epoch of an OData date-time (a bare date is its midnight, UTC)."""
    cleaned = text.upper().replace("Z", "+00:00")
    if "T" not in cleaned:
        cleaned += "T00:00:00+00:00"
    head, _, rest = cleaned.partition(".")
    if rest:  # Python reads at most six fractional digits
        digits = re.match(r"\d+", rest)
        fraction = digits.group(0) if digits else ""
        cleaned = f"{head}.{fraction[:6].ljust(6, '0')}{rest[len(fraction) :]}"
    moment = datetime.fromisoformat(cleaned)
    return (moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)).timestamp()
