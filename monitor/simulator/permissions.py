"""The application permissions the simulator knows, in one place below every module that checks them.

`ALL_PERMISSIONS` is what `Simulator.grant` consents to by default: the directory and audit-log
permissions, the read permissions of Intune and `APIConnectors.Read.All`. The Intune sets name each
permission's `.Read.All` and `.ReadWrite.All` forms, either of which serves a read (docs/graph.md 9);
intune_routes.py checks them, graph_auth.py the directory ones.
"""

from __future__ import annotations

MANAGED_DEVICES_READ = frozenset(
    {"DeviceManagementManagedDevices.Read.All", "DeviceManagementManagedDevices.ReadWrite.All"}
)
CONFIGURATION_READ = frozenset(
    {"DeviceManagementConfiguration.Read.All", "DeviceManagementConfiguration.ReadWrite.All"}
)
SERVICE_CONFIG_READ = frozenset(
    {"DeviceManagementServiceConfig.Read.All", "DeviceManagementServiceConfig.ReadWrite.All"}
)
APPS_READ = frozenset({"DeviceManagementApps.Read.All", "DeviceManagementApps.ReadWrite.All"})
INTUNE_PERMISSIONS = MANAGED_DEVICES_READ | CONFIGURATION_READ | SERVICE_CONFIG_READ | APPS_READ
# The read permissions a consenting admin grants (ALL_PERMISSIONS has these, not ReadWrite).
INTUNE_READ_PERMISSIONS = frozenset(p for p in INTUNE_PERMISSIONS if p.endswith(".Read.All"))

# Every application permission the simulator knows; `grant(..., ALL_PERMISSIONS)` consents to all.
ALL_PERMISSIONS = frozenset(
    {
        "User.Read.All",
        "User.ReadWrite.All",
        "Group.Read.All",
        "Group.ReadWrite.All",
        "GroupMember.Read.All",
        "Directory.Read.All",
        "Directory.ReadWrite.All",
        "Organization.Read.All",
        "AuditLog.Read.All",
    }
    | INTUNE_READ_PERMISSIONS
    | {"APIConnectors.Read.All"}
)
