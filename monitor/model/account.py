"""The account entity `microsoft_365_account` (pure; docs/jupiterone.md 1.1 and 13).

One account entity per JupiterOne integration instance, as in the public integration; without a configured
instance id the tenant id stands in (docs/architecture.md, "Emitting to JupiterOne").
"""

from __future__ import annotations

from monitor.model.common import drop_none, required_properties
from monitor.model.types import JsonMapping, JsonObject, Upsert, entity_placement

ACCOUNT_FAMILY = "microsoft_365_account"
ACCOUNT_TYPE = "microsoft_365_account"
ACCOUNT_CLASS = "Account"
ACCOUNT_VENDOR = "Microsoft"
INTUNE_PROPERTIES = ("intuneAccountId", "intuneSubscriptionState", "mobileDeviceManagementAuthority")

_REQUIRED = required_properties(ACCOUNT_CLASS)


def account_key(instance_or_tenant_id: str) -> str:
    """`microsoft_365_account-<id>`: the JupiterOne integration instance id if configured, else the tenant id."""
    return f"{ACCOUNT_TYPE}-{instance_or_tenant_id}"


def _domains(organization: JsonMapping) -> tuple[list[str] | None, str | None]:
    """(`verifiedDomains` names, the default domain's name), as the public integration derives them."""
    verified = organization.get("verifiedDomains")
    if verified is None:
        return None, None
    names: list[str] = []
    default: str | None = None
    for domain in verified:
        name = domain.get("name")
        if name is None:
            continue
        names.append(name)
        if domain.get("isDefault"):
            default = name
    return names, default


def map_account(
    organization: JsonMapping,
    *,
    key: str,
    display_name: str | None,
    intune: JsonMapping | None = None,
) -> Upsert:
    """The account entity from a Graph `organization` object (`GET /organization`).

    - `key`: from `account_key`.
    - `display_name`: the JupiterOne instance (account) name when configured, else None for the
      organization's name (the public integration shows the instance name there).
    - `intune`: optional enrichment with exactly the keys in `INTUNE_PROPERTIES`; `None` values are left
      out (tenants without Intune). Any other key raises ValueError, so a misspelt key is not lost silently.

    `vendor` ("Microsoft") is required by the current data model. `name` and `displayName` fall back to
    the organization id when the organization has no name.
    """
    org_id: str = organization["id"]
    org_name: str | None = organization.get("displayName")
    verified, default_domain = _domains(organization)
    properties: JsonObject = {
        "_key": key,
        "_type": ACCOUNT_TYPE,
        "_class": [ACCOUNT_CLASS],
        "id": org_id,
        "name": org_name or org_id,
        "displayName": display_name or org_name or org_id,
        "organizationName": org_name,
        "vendor": ACCOUNT_VENDOR,
        "defaultDomain": default_domain,
        "verifiedDomains": verified,
    }
    if intune:
        unknown = intune.keys() - set(INTUNE_PROPERTIES)
        if unknown:
            raise ValueError(f"unknown Intune account properties: {sorted(unknown)}")
        properties.update(intune)
    return Upsert(entity_placement(ACCOUNT_FAMILY, key), drop_none(properties, _REQUIRED))
