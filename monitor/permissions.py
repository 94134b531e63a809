"""The Graph application permissions monitor uses, and what each one is needed for.

Listed by name in status output and onboarding reports, so that a missing permission is reported
as what it costs ("no sign-in activity on users") rather than as an HTTP status.
"""

from __future__ import annotations

NEEDED_FOR: dict[str, str] = {
    "User.Read.All": "users (and change notifications for /users)",
    "Group.Read.All": "groups (and change notifications for /groups)",
    "GroupMember.Read.All": "group memberships (groups delta)",
    "Directory.Read.All": (
        "users, groups and memberships (covers the three above), and the names of device, service-principal "
        "and contact group members (getByIds accepts nothing narrower)"
    ),
    "Organization.Read.All": "the account entity (tenant name and domains)",
    "AuditLog.Read.All": "sign-in activity on users (also needs an Entra ID P1/P2 licence)",
    "DeviceManagementManagedDevices.Read.All": "managed devices, host agents and detected applications",
    "DeviceManagementConfiguration.Read.All": "compliance policies, device configurations and findings",
    "DeviceManagementApps.Read.All": "managed applications",
    "DeviceManagementServiceConfig.Read.All": "Intune subscription information",
    "APIConnectors.Read.All": "Intune subscription information",
}
