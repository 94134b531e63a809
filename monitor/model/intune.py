"""Intune: what every Intune mapper shares (pure): families, `_type`s, keys, and where relationship ends live.

The mappers themselves are `intune_devices` (managed devices, host agents, users HAS/USES),
`intune_policies` (compliance policies, device configurations, ASSIGNED, noncompliance findings) and
`intune_apps` (managed and detected applications); docs/jupiterone.md 1.6-1.12 and 2.1.

Placements (families and their bucket counts are in `monitor.scopes`):

- `intune_device`: a managed device and its host agent, anchored on the managed device id, and every
  relationship that follows a device's lifecycle: agent MANAGES device, user HAS/USES device, agent
  ASSIGNED policy or configuration, device ASSIGNED managed application, device INSTALLED detected
  application. Deleting a device only looks in its own scopes.
- `intune_policy`: compliance policies and device configurations (a few hundred per tenant).
- `intune_finding`: a noncompliance finding and the two relationships that exist only with it
  (policy IDENTIFIED finding, device HAS finding), anchored on the finding: a policy identifies up
  to one finding per device, so anchoring on the policy would put 100,000 of them in one scope.
- `intune_application`: managed applications and detected applications.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from monitor.model.account import ACCOUNT_FAMILY
from monitor.model.common import epoch_ms, relationship_type
from monitor.model.types import Patch, entity_placement

DEVICE_FAMILY = "intune_device"
POLICY_FAMILY = "intune_policy"
FINDING_FAMILY = "intune_finding"
APPLICATION_FAMILY = "intune_application"

# docs/jupiterone.md 1.6: the seven device `_type`s (`computer` is declared but never chosen).
DEVICE_TYPES = ("user_endpoint", "workstation", "laptop", "desktop", "computer", "server", "smartphone")
AGENT_TYPE = "intune_host_agent"
AGENT_KEY_PREFIX = "intune-host-agent:"
COMPLIANCE_POLICY_TYPE = "intune_compliance_policy"
CONFIGURATION_TYPE = "intune_device_configuration"
FINDING_TYPE = "intune_noncompliance_finding"
MANAGED_APP_TYPE = "intune_managed_application"
DETECTED_APP_TYPE = "intune_detected_application"
DETECTED_KEY_PREFIX = "IntuneDetected:"
USER_TYPE = "azure_user"
USER_FAMILY = "azure_user"

# Intune `deviceType` (lower case) -> `_type` (docs/jupiterone.md 1.6); anything else is a user_endpoint.
_TYPE_BY_INTUNE_DEVICE_TYPE: Mapping[str, str] = {
    **dict.fromkeys(("desktop", "mac", "unix", "linux"), "desktop"),
    **dict.fromkeys(
        (
            "iphone",
            "ipod",
            "android",
            "androidforwork",
            "androidenterprise",
            "androidngms",
            "winmo6",
            "nokia",
            "blackberry",
            "palm",
        ),
        "smartphone",
    ),
    **dict.fromkeys(("wince", "winembedded"), "workstation"),
    **dict.fromkeys(("macmdm", "windows10x"), "laptop"),
    "cloudpc": "server",
}
# The model Intune reports for a virtual machine (Hyper-V, Azure): the only sign of a virtual device.
VIRTUAL_MODEL = "virtual machine"


def select_device_type(device_type: str | None, model: str | None) -> tuple[str, bool]:
    """(`_type`, physical) of a managed device, as the public integration's `selectDeviceType`, fixed.

    A virtual machine (model "Virtual Machine") is a `server` and not physical; otherwise the type
    follows `deviceType`. The fix (docs/jupiterone.md 6): the public integration also took a device whose
    `model` is *missing* for a virtual one, so it became a `server` without the `Device` class; Intune
    leaves `model` empty for devices that have not reported hardware yet (fresh enrolments, some
    Android work profiles), which are physical devices. Here an unknown model is not evidence of a
    virtual machine: such a device keeps the type its `deviceType` gives and the `Device` class.
    """
    if (model or "").strip().lower() == VIRTUAL_MODEL:
        return "server", False
    return _TYPE_BY_INTUNE_DEVICE_TYPE.get((device_type or "").lower(), "user_endpoint"), True


def agent_key(device_id: str) -> str:
    return f"{AGENT_KEY_PREFIX}{device_id}"


def device_of_agent(key: str) -> str:
    """The managed device id an entity key of family `intune_device` is anchored on."""
    return key.removeprefix(AGENT_KEY_PREFIX)


def intune_ms(value: object) -> int | None:
    """Epoch ms of an Intune timestamp; None when absent, unreadable, or Intune's "never" (year 1).

    Intune fills unset date-times with `0001-01-01T00:00:00Z`; the data model's `lastSeenOn` must not
    be negative, and "never" is no time at all.
    """
    if not isinstance(value, str):
        return None
    try:
        ms = epoch_ms(value)
    except ValueError:
        return None
    return ms if ms is not None and ms >= 0 else None


def relationship_ends() -> dict[str, tuple[str, str]]:
    """Every Intune relationship `_type` -> the families of its (from, to) ends (for the registry)."""
    ends: dict[str, tuple[str, str]] = {
        relationship_type(AGENT_TYPE, "ASSIGNED", COMPLIANCE_POLICY_TYPE): (DEVICE_FAMILY, POLICY_FAMILY),
        relationship_type(AGENT_TYPE, "ASSIGNED", CONFIGURATION_TYPE): (DEVICE_FAMILY, POLICY_FAMILY),
        relationship_type(COMPLIANCE_POLICY_TYPE, "IDENTIFIED", FINDING_TYPE): (POLICY_FAMILY, FINDING_FAMILY),
        relationship_type(CONFIGURATION_TYPE, "IDENTIFIED", FINDING_TYPE): (POLICY_FAMILY, FINDING_FAMILY),
    }
    for device_type in DEVICE_TYPES:
        ends[relationship_type(AGENT_TYPE, "MANAGES", device_type)] = (DEVICE_FAMILY, DEVICE_FAMILY)
        ends[relationship_type(USER_TYPE, "HAS", device_type)] = (USER_FAMILY, DEVICE_FAMILY)
        ends[relationship_type(USER_TYPE, "USES", device_type)] = (USER_FAMILY, DEVICE_FAMILY)
        ends[relationship_type(device_type, "HAS", FINDING_TYPE)] = (DEVICE_FAMILY, FINDING_FAMILY)
        ends[relationship_type(device_type, "ASSIGNED", MANAGED_APP_TYPE)] = (DEVICE_FAMILY, APPLICATION_FAMILY)
        ends[relationship_type(device_type, "INSTALLED", DETECTED_APP_TYPE)] = (DEVICE_FAMILY, APPLICATION_FAMILY)
    return ends


# A host agent `intune-host-agent:<id>` lives with managed device `<id>` (monitor.model.registry).
ENTITY_ANCHORS: dict[str, Callable[[str], str]] = {DEVICE_FAMILY: device_of_agent}


def account_enrichment(
    account_key: str,
    *,
    intune_account_id: str | None,
    subscription_state: str | None,
    mdm_authority: str | None,
) -> Patch:
    """The account entity's Intune properties (docs/jupiterone.md 1.1), as a patch: the account source owns
    the entity. A `None` removes the property (a tenant without Intune has none of them)."""
    props = {
        "intuneAccountId": intune_account_id,
        "intuneSubscriptionState": subscription_state,
        "mobileDeviceManagementAuthority": mdm_authority,
    }
    return Patch(entity_placement(ACCOUNT_FAMILY, account_key), account_key, props)
