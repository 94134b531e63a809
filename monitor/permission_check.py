"""Which of the permissions in `monitor.permissions` a tenant granted, and what each missing one costs.

Two sources of truth, used together:

1. **The token's `roles` claim.** An app-only token for Graph is a JWT whose `roles` lists exactly
   the application permissions an administrator consented to (the simulator issues the same shape).
   It is the only way to tell permissions apart that open the same endpoints (`Group.Read.All`,
   which subscriptions on `/groups` need, versus `GroupMember.Read.All`, which suffices for the
   groups delta). It is read, never trusted for anything but this report: the token comes straight
   from the authority over TLS, and Graph is what enforces it. Microsoft may make tokens opaque
   (encrypted) one day; then the report falls back to the probes alone.
2. **A cheap probe per capability** (`$top=1&$select=id`): proves the permission works, and finds
   what consent does not show: no Entra ID P1/P2 licence behind `AuditLog.Read.All`, no Intune
   licence behind the Intune permissions ("Request not applicable to target tenant").

A permission is `granted`, `missing`, or `not needed` (a broader alternative such as
`Directory.Read.All` when what it would cover is granted anyway). `detail` says what a probe found.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from monitor.graph.client import GraphClient, GraphError
from monitor.model.types import JsonObject
from monitor.permissions import NEEDED_FOR
from monitor.redis_conn import Redis
from monitor.store import TenantStore

State = Literal["granted", "missing", "not needed"]

# One cheap read per permission that opens an endpoint of its own (docs/graph.md 1 and 9).
PROBES: dict[str, tuple[str, dict[str, str]]] = {
    "User.Read.All": ("/v1.0/users", {"$top": "1", "$select": "id"}),
    "GroupMember.Read.All": ("/v1.0/groups", {"$top": "1", "$select": "id"}),
    "Organization.Read.All": ("/v1.0/organization", {"$select": "id,displayName,verifiedDomains"}),
    "AuditLog.Read.All": ("/v1.0/users", {"$top": "1", "$select": "id,signInActivity"}),
    "DeviceManagementManagedDevices.Read.All": (
        "/v1.0/deviceManagement/managedDevices",
        {"$top": "1", "$select": "id"},
    ),
    "DeviceManagementConfiguration.Read.All": (
        "/v1.0/deviceManagement/deviceCompliancePolicies",
        {"$top": "1", "$select": "id"},
    ),
    "DeviceManagementApps.Read.All": ("/v1.0/deviceAppManagement/mobileApps", {"$top": "1", "$select": "id"}),
    "DeviceManagementServiceConfig.Read.All": (
        "/v1.0/deviceManagement",
        {"$select": "intuneAccountId,subscriptionState"},
    ),
}
# Permissions that include others (a ReadWrite form includes its Read form, docs/graph.md 1).
INCLUDES: dict[str, frozenset[str]] = {
    "Directory.Read.All": frozenset(
        {"User.Read.All", "Group.Read.All", "GroupMember.Read.All", "Organization.Read.All"}
    ),
    "Directory.ReadWrite.All": frozenset(
        {"Directory.Read.All", "User.Read.All", "Group.Read.All", "GroupMember.Read.All", "Organization.Read.All"}
    ),
    "Group.Read.All": frozenset({"GroupMember.Read.All"}),
    "User.ReadWrite.All": frozenset({"User.Read.All"}),
    "Group.ReadWrite.All": frozenset({"Group.Read.All", "GroupMember.Read.All"}),
    "APIConnectors.Read.All": frozenset({"DeviceManagementServiceConfig.Read.All"}),
}
# Broader alternatives: not needed when what they would give is granted some other way.
ALTERNATIVES: dict[str, tuple[str, ...]] = {
    "Directory.Read.All": ("User.Read.All", "GroupMember.Read.All", "Organization.Read.All"),
    "APIConnectors.Read.All": ("DeviceManagementServiceConfig.Read.All",),
}
# Without these the tenant has no directory at all: onboarding refuses to save it.
REQUIRED = ("User.Read.All", "GroupMember.Read.All")
NOT_APPLICABLE = "request not applicable to target tenant"


@dataclass(frozen=True, slots=True)
class PermissionVerdict:
    name: str
    state: State
    needed_for: str
    detail: str = ""

    @property
    def granted(self) -> bool:
        return self.state == "granted"


@dataclass(slots=True)
class PermissionReport:
    """The verdicts, in the order of `monitor.permissions`, and what `/organization` said."""

    verdicts: list[PermissionVerdict] = field(default_factory=list)
    roles: frozenset[str] | None = None  # None: the token did not say (opaque)
    organization: JsonObject | None = None

    def verdict(self, name: str) -> PermissionVerdict:
        return next(v for v in self.verdicts if v.name == name)

    @property
    def missing_required(self) -> list[str]:
        return [name for name in REQUIRED if not self.verdict(name).granted]

    @property
    def display_name(self) -> str | None:
        name = (self.organization or {}).get("displayName")
        return str(name) if name else None


def token_roles(token: str) -> frozenset[str] | None:
    """The `roles` claim of a JWT-shaped token, or None when the token is opaque or malformed."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        claims = orjson.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (binascii.Error, ValueError):
        return None
    roles = claims.get("roles") if isinstance(claims, dict) else None
    if not isinstance(roles, list):
        return None if not isinstance(claims, dict) or "tid" not in claims else frozenset()
    return frozenset(str(role) for role in roles)


def _effective(roles: frozenset[str]) -> frozenset[str]:
    found = set(roles)
    for role in roles:
        found |= INCLUDES.get(role, frozenset())
    return frozenset(found)


async def _probe(client: GraphClient, tenant: str, name: str) -> tuple[bool | None, str, Any]:
    """(worked, what it found, the body) for one probe; worked is None for an answer that says
    nothing about the permission (a transient error)."""
    path, params = PROBES[name]
    try:
        response = await client.request(tenant, "GET", path, params=params)
    except GraphError as exc:
        if exc.status == 403:
            return False, _first_line(exc), None
        if exc.status == 400 and NOT_APPLICABLE in str(exc).lower():
            return True, "granted, but the tenant has no Intune licence (Graph: request not applicable)", None
        return None, f"could not check: {_first_line(exc)}", None
    return True, "", response.body


async def check_permissions(client: GraphClient, tenant: str) -> PermissionReport:
    """Obtain a token for `tenant` (AuthError if consent is missing), read its roles, run the probes."""
    token = await client.token_provider.token(tenant)
    report = PermissionReport(roles=token_roles(token))
    effective = None if report.roles is None else _effective(report.roles)
    probed: dict[str, tuple[bool | None, str]] = {}
    for name in PROBES:
        worked, detail, body = await _probe(client, tenant, name)
        probed[name] = (worked, detail)
        if name == "Organization.Read.All" and body is not None:
            organizations = body.get("value") or []
            report.organization = organizations[0] if organizations else None
    for name, needed_for in NEEDED_FOR.items():
        report.verdicts.append(_verdict(name, needed_for, effective, probed.get(name)))
    report.verdicts = [_alternative(v, report) for v in report.verdicts]
    return report


def _verdict(
    name: str, needed_for: str, effective: frozenset[str] | None, probe: tuple[bool | None, str] | None
) -> PermissionVerdict:
    worked, detail = probe if probe is not None else (None, "")
    if effective is not None:
        granted = name in effective
        if granted and worked is False:
            # Consented, but Graph refuses: usually a licence (AuditLog needs Entra ID P1/P2).
            return PermissionVerdict(name, "missing", needed_for, f"consented, but Graph refused: {detail}")
        return PermissionVerdict(name, "granted" if granted else "missing", needed_for, detail if granted else "")
    if worked is None:
        return PermissionVerdict(name, "missing", needed_for, detail or "could not be checked (the token is opaque)")
    return PermissionVerdict(name, "granted" if worked else "missing", needed_for, detail)


def _alternative(verdict: PermissionVerdict, report: PermissionReport) -> PermissionVerdict:
    covered = ALTERNATIVES.get(verdict.name)
    if verdict.granted or covered is None:
        return verdict
    if all(report.verdict(name).granted for name in covered):
        return PermissionVerdict(verdict.name, "not needed", verdict.needed_for, f"{', '.join(covered)} granted")
    return verdict


async def record_report(redis: Redis, tenant: str, report: PermissionReport, checked_at: str) -> None:
    """Save the verdicts in the tenant's permissions hash (what `status` and `tenants show` list)."""
    store = TenantStore(redis, tenant)
    values = {
        v.name: orjson.dumps(
            {
                "granted": v.granted,
                "state": v.state,
                "needed_for": v.needed_for,
                "detail": v.detail,
                "checked_at": checked_at,
            }
        )
        for v in report.verdicts
    }
    await redis.hset(store.keys.permissions, mapping=values)  # type: ignore[arg-type]


def render_permission(name: str, entry: JsonObject) -> str:
    """`User.Read.All: granted` / `AuditLog.Read.All: MISSING: no sign-in activity on users (...)`."""
    state = entry.get("state") or ("granted" if entry.get("granted") else "missing")
    detail = f" ({entry['detail']})" if entry.get("detail") else ""
    if state == "granted":
        return f"{name}: granted{detail}"
    if state == "not needed":
        return f"{name}: not needed{detail}"
    return f"{name}: MISSING: no {entry.get('needed_for')}{detail}"


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
