"""Compliance policies and device configurations (pure): the policy entities, host agent ASSIGNED
policy / configuration with the per-device status, and `intune_noncompliance_finding` with policy
IDENTIFIED finding and device HAS finding.

Mapping of docs/jupiterone.md 1.8-1.10 and 2.1. Device statuses come from
`GET .../deviceCompliancePolicies/{id}/deviceStatuses` and `.../deviceConfigurations/{id}/deviceStatuses`
(docs/graph.md 9); their `id` is Microsoft's `<intuneAccountId>_<policyId>_<managedDeviceId>`.

Decisions where the reference leaves room:

- Policies and configurations are ingested **always**, not lazily as in the public integration
  (created only when a device status applies): a policy assigned to nobody is worth seeing (an
  unassigned compliance policy protects nothing), and lazy creation would make a policy appear and
  disappear with its devices, which is churn in the change log rather than a change of the policy.
- ASSIGNED and device HAS finding are emitted only for devices the mirror knows (the caller passes
  the device's `_type`, or None): a relationship needs both ends. The finding and policy IDENTIFIED
  finding do not depend on the device.
- `updatedOn` (the policy's `lastModifiedDateTime`) is added to the policy entities.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal, NamedTuple

from monitor.model.common import direct_relationship, drop_none, required_properties
from monitor.model.intune import (
    AGENT_TYPE,
    COMPLIANCE_POLICY_TYPE,
    CONFIGURATION_TYPE,
    DEVICE_FAMILY,
    FINDING_FAMILY,
    FINDING_TYPE,
    POLICY_FAMILY,
    agent_key,
    intune_ms,
)
from monitor.model.types import JsonMapping, JsonObject, Upsert, entity_placement, relationship_placement

PolicyKind = Literal["compliance", "configuration"]

# `$select` of the policy lists (`@odata.type` is always returned for these polymorphic collections).
POLICY_SELECT: tuple[str, ...] = (
    "id",
    "displayName",
    "description",
    "version",
    "createdDateTime",
    "lastModifiedDateTime",
)
# `$select` of the device status lists.
STATUS_SELECT: tuple[str, ...] = ("id", "status", "lastReportedDateTime")

# Statuses that never relate a device to the policy (docs/jupiterone.md 1.10).
NOT_APPLYING = frozenset({"notApplicable", "notAssigned"})
# Open statuses -> (severity, numericSeverity); compliant and remediated are closed: no finding.
OPEN_SEVERITY: Mapping[str, tuple[str, int]] = {
    "nonCompliant": ("high", 6),
    "error": ("high", 6),
    "conflict": ("high", 6),
    "unknown": ("medium", 4),
}
_COMPLIANT: Mapping[str, bool] = {
    "compliant": True,
    "remediated": True,
    "nonCompliant": False,
    "error": False,
    "conflict": False,
}

_POLICY_REQUIRED = required_properties("Configuration", "ControlPolicy")
_FINDING_REQUIRED = required_properties("Finding")


class PolicyRef(NamedTuple):
    """What a status mapping needs of its policy."""

    kind: PolicyKind
    id: str
    name: str


_ENTITY_TYPE: Mapping[PolicyKind, str] = {"compliance": COMPLIANCE_POLICY_TYPE, "configuration": CONFIGURATION_TYPE}
_SHAPE: Mapping[PolicyKind, tuple[str, str, str]] = {
    # (function, ControlPolicy category, name of the property holding the @odata.type's last segment)
    "compliance": ("endpoint-compliance", "compliance", "policyType"),
    "configuration": ("endpoint-configuration", "config", "configurationType"),
}


def map_policy(kind: PolicyKind, policy: JsonMapping) -> Upsert:
    """An `intune_compliance_policy` or `intune_device_configuration` entity (docs/jupiterone.md 1.8, 1.9)."""
    policy_id: str = policy["id"]
    function, category, type_property = _SHAPE[kind]
    name = policy.get("displayName") or policy_id
    odata_type = str(policy.get("@odata.type") or "")
    properties: JsonObject = {
        "_key": policy_id,
        "_type": _ENTITY_TYPE[kind],
        "_class": ["Configuration", "ControlPolicy"],
        "id": policy_id,
        "name": name,
        "displayName": name,
        "description": policy.get("description") or name,
        "version": policy.get("version"),
        "function": function,
        "category": category,
        "createdOn": intune_ms(policy.get("createdDateTime")),
        "updatedOn": intune_ms(policy.get("lastModifiedDateTime")),
        type_property: odata_type.rsplit(".", 1)[-1] or None,
    }
    return Upsert(entity_placement(POLICY_FAMILY, policy_id), drop_none(properties, _POLICY_REQUIRED))


def policy_ref(kind: PolicyKind, policy: JsonMapping) -> PolicyRef:
    return PolicyRef(kind, policy["id"], policy.get("displayName") or policy["id"])


def status_device_id(status: JsonMapping) -> str:
    """The managed device id of a device status: the last `_` segment of its id (docs/jupiterone.md 1.10)."""
    status_id: str = status["id"]
    return status_id.rsplit("_", 1)[-1]


def _finding(policy: PolicyRef, status: JsonMapping, state: str) -> JsonObject:
    severity, numeric = OPEN_SEVERITY[state]
    reported = intune_ms(status.get("lastReportedDateTime"))
    name = f"Latest finding from {policy.name}"
    properties: JsonObject = {
        "_key": status["id"],
        "_type": FINDING_TYPE,
        "_class": ["Finding"],
        "id": status["id"],
        "name": name,
        "displayName": name,
        "assessment": policy.name,
        "category": "endpoint",
        "status": state,
        "severity": severity,
        "numericSeverity": numeric,
        "open": True,
        "lastProcessedOn": reported,
        "lastTestedOn": reported,
        "lastUpdatedOn": reported,
    }
    return drop_none(properties, _FINDING_REQUIRED)


def _assigned(policy: PolicyRef, status: JsonMapping, device_id: str, state: str) -> JsonObject:
    extra = {"complianceStatus": state, "compliant": _COMPLIANT.get(state)}
    agent = agent_key(device_id)
    if policy.kind == "compliance":
        return direct_relationship(AGENT_TYPE, agent, "ASSIGNED", COMPLIANCE_POLICY_TYPE, policy.id, extra=extra)
    # The public integration's custom key for configurations (docs/jupiterone.md 2.1).
    key = f"{status['id']}|{agent}|{policy.id}"
    return direct_relationship(
        AGENT_TYPE, agent, "ASSIGNED", CONFIGURATION_TYPE, policy.id, key_override=key, extra=extra
    )


def map_status(policy: PolicyRef, status: JsonMapping, device_type: str | None) -> list[Upsert]:
    """What one device status means: nothing when the policy does not apply; otherwise agent ASSIGNED
    policy (when the device is known: `device_type` is its `_type`), and for an open status the finding,
    policy IDENTIFIED finding and (device known) device HAS finding, all anchored on the finding.
    """
    state = str(status.get("status") or "unknown")
    if state in NOT_APPLYING:
        return []
    device_id = status_device_id(status)
    upserts: list[Upsert] = []
    if device_type is not None:
        upserts.append(
            Upsert(relationship_placement(DEVICE_FAMILY, device_id), _assigned(policy, status, device_id, state))
        )
    if state in OPEN_SEVERITY:
        finding = _finding(policy, status, state)
        finding_key = finding["_key"]
        at = relationship_placement(FINDING_FAMILY, finding_key)
        upserts.append(Upsert(entity_placement(FINDING_FAMILY, finding_key), finding))
        identified = direct_relationship(_ENTITY_TYPE[policy.kind], policy.id, "IDENTIFIED", FINDING_TYPE, finding_key)
        upserts.append(Upsert(at, identified))
        if device_type is not None:
            upserts.append(Upsert(at, direct_relationship(device_type, device_id, "HAS", FINDING_TYPE, finding_key)))
    return upserts


def finding_kind(relationship_type: str) -> PolicyKind | None:
    """Which resource a finding belongs to, from the `_type` of its IDENTIFIED relationship."""
    if relationship_type.startswith(COMPLIANCE_POLICY_TYPE):
        return "compliance"
    if relationship_type.startswith(CONFIGURATION_TYPE):
        return "configuration"
    return None
