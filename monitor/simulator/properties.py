"""Property sets of the simulated directory objects, and `$select` handling.

Two rules from docs/graph.md 7.3 shape this module:
- in a delta response "a property that has never been set doesn't appear at all", while `null`
  means it was cleared; list calls (GET /users) instead return every selected property, `null`
  when unset. So the tenant stores only properties that were set, and projection differs.
- "properties that aren't selected aren't tracked": the selected set decides which changes make
  an object reappear in a delta round.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from monitor.simulator.errors import bad_request

USER_TYPE = "#microsoft.graph.user"
GROUP_TYPE = "#microsoft.graph.group"
DEVICE_TYPE = "#microsoft.graph.device"
SERVICE_PRINCIPAL_TYPE = "#microsoft.graph.servicePrincipal"
CONTACT_TYPE = "#microsoft.graph.orgContact"

# Short names accepted by SimTenant.add_directory_object and the control API.
OBJECT_KINDS: dict[str, str] = {
    "user": USER_TYPE,
    "group": GROUP_TYPE,
    "device": DEVICE_TYPE,
    "servicePrincipal": SERVICE_PRINCIPAL_TYPE,
    "orgContact": CONTACT_TYPE,
}

USER_PROPERTIES: tuple[str, ...] = (
    "id",
    "displayName",
    "givenName",
    "surname",
    "userPrincipalName",
    "mail",
    "jobTitle",
    "department",
    "mobilePhone",
    "officeLocation",
    "preferredLanguage",
    "usageLocation",
    "userType",
    "accountEnabled",
    "businessPhones",
    "createdDateTime",
)
# What Graph returns for a user when there is no $select (v1.0 default property set).
USER_DEFAULT: tuple[str, ...] = (
    "businessPhones",
    "displayName",
    "givenName",
    "jobTitle",
    "mail",
    "mobilePhone",
    "officeLocation",
    "preferredLanguage",
    "surname",
    "userPrincipalName",
    "id",
)
SIGN_IN_ACTIVITY = "signInActivity"
SIGN_IN_FIELDS: tuple[str, ...] = (
    "lastSignInDateTime",
    "lastSignInRequestId",
    "lastNonInteractiveSignInDateTime",
    "lastNonInteractiveSignInRequestId",
    "lastSuccessfulSignInDateTime",
    "lastSuccessfulSignInRequestId",
)

GROUP_PROPERTIES: tuple[str, ...] = (
    "id",
    "displayName",
    "description",
    "classification",
    "mailEnabled",
    "mailNickname",
    "mail",
    "securityEnabled",
    "groupTypes",
    "visibility",
    "isAssignableToRole",
    "createdDateTime",
    "renewedDateTime",
    "deletedDateTime",
)
MEMBERS = "members"

# Properties Graph sets itself; callers may not write them.
READ_ONLY = frozenset({"id", "createdDateTime", "renewedDateTime", "deletedDateTime"})

OTHER_OBJECT_PROPERTIES: dict[str, tuple[str, ...]] = {
    DEVICE_TYPE: ("id", "displayName", "deviceId", "operatingSystem", "operatingSystemVersion", "accountEnabled"),
    SERVICE_PRINCIPAL_TYPE: ("id", "displayName", "appId", "servicePrincipalType", "accountEnabled"),
    CONTACT_TYPE: ("id", "displayName", "mail", "jobTitle", "givenName", "surname", "companyName"),
}


def _lookup(names: Iterable[str]) -> dict[str, str]:
    return {name.lower(): name for name in names}


_USER_LOOKUP = _lookup((*USER_PROPERTIES, SIGN_IN_ACTIVITY))
_GROUP_LOOKUP = _lookup((*GROUP_PROPERTIES, MEMBERS))


def parse_select(raw: str | None, entity: str) -> tuple[str, ...] | None:
    """Canonical property names from a `$select` value (Graph matches them case-insensitively).

    None when there is no `$select`. An unknown name is Graph's 400 "Could not find a property".
    """
    if raw is None or not raw.strip():
        return None
    lookup = _USER_LOOKUP if entity == "user" else _GROUP_LOOKUP
    names: list[str] = []
    for part in raw.split(","):
        name = lookup.get(part.strip().lower())
        if name is None:
            raise bad_request(f"Could not find a property named '{part.strip()}' on type 'microsoft.graph.{entity}'.")
        if name not in names:
            names.append(name)
    return tuple(names)


def check_writable(props: Mapping[str, Any], known: tuple[str, ...], entity: str) -> None:
    """Refuse unknown or read-only property names in a mutation (a simulator usage error)."""
    for name in props:
        if name not in known or name in READ_ONLY:
            raise ValueError(f"{entity} property {name!r} cannot be set")


def delta_view(obj: Mapping[str, Any], props: Iterable[str]) -> dict[str, Any]:
    """`id` plus the selected properties that were ever set (docs/graph.md 7.3: never-set ones don't appear)."""
    view = {"id": obj["id"]}
    for name in props:
        if name in obj:
            view[name] = obj[name]
    return view


def list_view(obj: Mapping[str, Any], props: Iterable[str]) -> dict[str, Any]:
    """Every selected property, `null` when unset: what list and get calls return."""
    view = {"id": obj["id"]}
    for name in props:
        view[name] = obj.get(name)
    return view
