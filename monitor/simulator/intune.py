"""Intune in the simulated tenant: managed devices, compliance policies, device configurations,
mobile apps with install states, and detected apps. No HTTP here (intune_routes.py serves it).

Compact for 100,000 devices: a device is a small slotted record (ids, kind, name, user, times), and
everything else about it (serial, MACs, IP, hardware, statuses, installed software) is derived on
demand from its index and its kind; the views keep the costliest of those values (serial number, MAC
addresses, Entra device id, enrolment time) on the device once derived, about 420 bytes a device.
Per-device state only exists where a test or the benchmark changed something: status overrides,
install-state overrides, software added or removed. Detected software comes in "profiles" (a device
has the apps of its profile), so the devices of one detected app are found by walking the profiles
that contain it, not all devices.

`IntuneTenant.version` moves on every mutation (caches of derived lists key on it).
"""

from __future__ import annotations

import random
import uuid
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from monitor.simulator.clock import graph_datetime
from monitor.simulator.intune_catalog import (
    COMPLIANCE_POLICIES,
    DETECTED_SOFTWARE,
    DEVICE_CONFIGURATIONS,
    DEVICE_KINDS,
    INSTALL_STATES,
    MOBILE_APPS,
    PLATFORMS,
    DeviceKind,
)
from monitor.simulator.tenant import SimTenant

NEVER = "0001-01-01T00:00:00Z"  # Intune's unset date-time
PROFILES_PER_PLATFORM = 64
INTUNE_LIMITS = {"devices": 2000, "configuration": 1000, "apps": 1000, "other": 1000}
# Per mille thresholds of a derived status (compliance; configurations say "remediated" for some).
_STATUS_TABLE = ((800, "compliant"), (880, "nonCompliant"), (905, "error"), (920, "conflict"), (960, "unknown"))
_NOT_APPLYING = ((985, "notApplicable"), (1000, "notAssigned"))
_ASSIGNED_SHARE = 600  # per mille of a platform's devices a mobile app is assigned to


@dataclass(slots=True)
class SimDevice:
    index: int
    id: str
    kind: int
    name: str
    user_id: str | None
    logged_on: tuple[str, ...]
    enrolled: float
    last_sync: float
    profile: int
    # Values the views derive from index, kind, id and enrolled alone, with the index, kind, id and enrolled
    # they were derived from: intune_views.py derives them on first use and again whenever those differ.
    fixed: Any = field(default=None, compare=False, repr=False)

    @property
    def spec(self) -> DeviceKind:
        return DEVICE_KINDS[self.kind]


def _mix(*numbers: int) -> int:
    """A cheap, stable hash of small integers (Knuth's multiplicative hash, folded)."""
    value = 0x9E3779B1
    for number in numbers:
        value = ((value ^ (number + 0x7F4A7C15)) * 2654435761) & 0xFFFFFFFF
    return value ^ (value >> 15)


def _timestamp(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def iso_time(timestamp: float) -> str:
    """A timestamp in Graph's date-time form."""
    return graph_datetime(datetime.fromtimestamp(timestamp, UTC))


@lru_cache(maxsize=1 << 18)
def _iso(timestamp: float) -> str:
    """Cached: every listing renders the same check-in times again (the views keep each device's
    enrolment time on the device, so 100,000 devices' times fit)."""
    return iso_time(timestamp)


class IntuneTenant:
    """The Intune side of one simulated tenant (`Simulator.intune[tenant_id]`)."""

    def __init__(
        self,
        directory: SimTenant,
        *,
        licensed: bool = True,
        subscription_state: str = "active",
        page_size: int = 1000,
        rng_seed: int = 1,
    ) -> None:
        self.directory = directory
        self.licensed = licensed  # False: every Intune call answers 400 "not applicable" (docs/graph.md 9)
        self.subscription_state = subscription_state
        self.page_size = page_size
        self.rng = random.Random(f"intune:{rng_seed}:{directory.tenant_id}")
        self.account_id = self.new_id()
        self.version = 0
        self.devices: dict[str, SimDevice] = {}
        self.by_platform: dict[str, dict[str, None]] = {p: {} for p in PLATFORMS}
        self.compliance_policies: dict[str, dict[str, Any]] = {}
        self.configurations: dict[str, dict[str, Any]] = {}
        self.policy_platform: dict[str, str] = {}
        self.policy_serial: dict[str, int] = {}
        self.mobile_apps: dict[str, dict[str, Any]] = {}
        self.app_platform: dict[str, str] = {}
        self.app_serial: dict[str, int] = {}
        self.detected: dict[str, dict[str, Any]] = {}
        self.profiles: dict[str, list[tuple[str, ...]]] = {p: [] for p in PLATFORMS}
        self.profile_devices: dict[tuple[str, int], dict[str, None]] = {}
        self.profiles_of_app: dict[str, list[int]] = {}
        self.apps_added: dict[str, set[str]] = {}  # device id -> detected app ids beyond its profile
        self.apps_removed: dict[str, set[str]] = {}  # device id -> profile apps it no longer has
        self.added_devices_of_app: dict[str, dict[str, None]] = {}
        self.status_overrides: dict[tuple[str, str], str] = {}
        self.install_overrides: dict[tuple[str, str], int | None] = {}
        # Intune throttling (docs/graph.md 10.3): requests per 20 s per app per tenant, by bucket, and the
        # recent request times per (client id, bucket) that enforce it.
        self.limits: dict[str, int] = dict(INTUNE_LIMITS)
        self.windows: dict[tuple[str, str], deque[float]] = {}
        # Intune audit events (`GET /deviceManagement/auditEvents`), oldest first: each is listed from
        # `audit_delay` seconds after its activityDateTime. How long Intune takes to show an event is
        # not documented (https://learn.microsoft.com/en-us/graph/api/intune-auditing-auditevent-list);
        # a client must not assume it is zero.
        self.audit_events: list[dict[str, Any]] = []
        self.audit_delay = 120.0
        # Whether the list honours `$filter=activityDateTime gt|ge ...`: the same page documents no
        # query options, so tests also run the reading where Graph ignores the filter and lists every
        # event (and, by an injected 400, the one where it refuses it).
        self.audit_filter_honoured = True
        self._serial = 0
        self._counts: tuple[int, dict[str, int]] = (-1, {})

    def new_id(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def _bump(self) -> None:
        self.version += 1

    # -- catalogue ---------------------------------------------------------------------------

    def add_policy(self, kind: str, name: str, odata_type: str, platform: str) -> str:
        """A compliance policy (`kind` "compliance") or device configuration ("configuration")."""
        policy_id = self.new_id()
        created = _iso(self.directory.clock.timestamp() - 86400 * (30 + len(self.policy_serial)))
        policy = {
            "@odata.type": odata_type,
            "id": policy_id,
            "displayName": name,
            "description": f"{name} (managed by the endpoint team)" if len(name) % 2 else "",
            "version": 1 + len(self.policy_serial) % 4,
            "createdDateTime": created,
            "lastModifiedDateTime": created,
        }
        target = self.compliance_policies if kind == "compliance" else self.configurations
        target[policy_id] = policy
        self.policy_platform[policy_id] = platform
        self.policy_serial[policy_id] = len(self.policy_serial) + 1
        self._bump()
        return policy_id

    def add_mobile_app(self, index: int) -> str:
        spec = MOBILE_APPS[index % len(MOBILE_APPS)]
        app_id = self.new_id()
        created = _iso(self.directory.clock.timestamp() - 86400 * (90 + index))
        app: dict[str, Any] = {
            "@odata.type": spec.odata_type,
            "id": app_id,
            "displayName": spec.name if index < len(MOBILE_APPS) else f"{spec.name} ({index})",
            "description": f"{spec.name}, deployed by Contoso IT",
            "publisher": spec.publisher,
            "createdDateTime": created,
            "lastModifiedDateTime": created,
            "isFeatured": index % 5 == 0,
            "privacyInformationUrl": None,
            "informationUrl": "https://www.contoso.com/it/apps" if index % 2 else None,
            "owner": "Contoso IT" if "Lob" in spec.odata_type else "",
            "developer": "",
            "notes": "Required for all staff" if index % 3 == 0 else "",
            "publishingState": "published",
            "isAssigned": index % 6 != 5,  # an app assigned to no group is installed by no one
        }
        if spec.version_field:
            app[spec.version_field] = spec.version
        if spec.odata_type.endswith(("StoreApp", "VppApp")):
            app["appStoreUrl"] = f"https://apps.example.com/{app_id[:8]}"
        if spec.odata_type.endswith("webApp"):
            app["appUrl"] = "https://intranet.contoso.com"
        self.mobile_apps[app_id] = app
        self.app_platform[app_id] = spec.platform
        self.app_serial[app_id] = index + 1
        self._bump()
        return app_id

    def build_detected_software(self, extra_titles: int, apps_per_profile: int) -> None:
        """Detected apps (one per name and version) and the per-platform profiles devices draw from."""
        by_platform: dict[str, list[str]] = {p: [] for p in PLATFORMS}
        for name, publisher, platform, versions in DETECTED_SOFTWARE:
            for number, version in enumerate(versions):
                by_platform[platform].append(self._detected(name, publisher, platform, version, 150_000_000 + number))
        for title in range(extra_titles):
            platform = PLATFORMS[title % len(PLATFORMS)]
            name = f"Contoso Line-of-Business Tool {title:04d}"
            by_platform[platform].append(
                self._detected(name, "Contoso IT", platform, f"1.{title % 7}.{title % 13}", 2_000_000 + title * 4096)
            )
        for platform, apps in by_platform.items():
            for profile in range(PROFILES_PER_PLATFORM):
                chosen = tuple(dict.fromkeys(self.rng.choice(apps) for _ in range(apps_per_profile))) if apps else ()
                self.profiles[platform].append(chosen)
                self.profile_devices[(platform, profile)] = {}
                for app_id in chosen:
                    self.profiles_of_app.setdefault(app_id, []).append(profile)
        self._bump()

    def _detected(self, name: str, publisher: str, platform: str, version: str, size: int) -> str:
        app_id = self.new_id()
        self.detected[app_id] = {
            "id": app_id,
            "displayName": name or None,
            "version": version,
            "sizeInByte": size,
            "platform": platform,
            "publisher": publisher,
        }
        return app_id

    # -- devices -----------------------------------------------------------------------------

    def add_device(self, kind: int, user_id: str | None, logged_on: tuple[str, ...] = (), name: str = "") -> str:
        self._serial += 1
        index = self._serial
        device_id = self.new_id()
        spec = DEVICE_KINDS[kind]
        now = self.directory.clock.timestamp()
        user = self.directory.users.get(user_id or "")
        first = str((user or {}).get("givenName") or "Shared")
        device_name = name or spec.name_pattern.format(first=first, serial=serial_number(index)[-7:], n=index)
        device = SimDevice(
            index,
            device_id,
            kind,
            device_name,
            user_id,
            logged_on,
            enrolled=now - 86400 * (1 + _mix(index, 1) % 700),
            last_sync=now - 60 * (_mix(index, 2) % 4320),
            profile=_mix(index, 3) % PROFILES_PER_PLATFORM,
        )
        self.devices[device_id] = device
        self.by_platform[spec.platform][device_id] = None
        if (spec.platform, device.profile) in self.profile_devices:
            self.profile_devices[(spec.platform, device.profile)][device_id] = None
        self._bump()
        return device_id

    def rename_device(self, device_id: str, name: str) -> None:
        """An admin renames the device (the setDeviceName action, audited); the device applies it and
        reports it at its next sync, which is taken to be now."""
        device = self.devices[device_id]
        old, device.name = device.name, name
        self._audit(
            "setDeviceName ManagedDevice", "Device", "ManagedDevice", device_id, name, ("deviceName", old, name)
        )
        self.check_in(device_id)

    def check_in(self, device_id: str) -> None:
        """The device syncs with Intune: its lastSyncDateTime ("the date and time that the device last
        completed a successful sync with Intune", managedDevice in the v1.0 metadata) becomes now, and its
        status report times move with it."""
        self.devices[device_id].last_sync = max(self.devices[device_id].last_sync + 1, self.directory.clock.timestamp())
        self._bump()

    def assign_policy(self, policy_id: str, device_ids: list[str], assigned: bool) -> None:
        """An admin changes a policy's assignment (audited): the devices it now targets report `unknown`
        until they sync, those it no longer targets `notAssigned`."""
        if policy_id not in self.policy_platform:
            raise KeyError(policy_id)
        for device_id in device_ids:
            self.status_overrides[(policy_id, device_id)] = "unknown" if assigned else "notAssigned"
        compliance = policy_id in self.compliance_policies
        policy = (self.compliance_policies if compliance else self.configurations)[policy_id]
        kind = "DeviceCompliancePolicy" if compliance else "DeviceConfiguration"
        component = "DeviceCompliance" if compliance else "DeviceConfiguration"
        self._audit(f"assign {kind}", component, kind, policy_id, str(policy.get("displayName") or ""), None)
        self._bump()

    def _audit(
        self, activity: str, component: str, kind: str, resource_id: str, name: str, change: tuple[str, str, str] | None
    ) -> None:
        """Record an auditEvent (properties of auditEvent, auditActor, auditResource and auditProperty in
        the v1.0 metadata) for an admin's change."""
        modified = [] if change is None else [{"displayName": change[0], "oldValue": change[1], "newValue": change[2]}]
        self.audit_events.append(
            {
                "@odata.type": "#microsoft.graph.auditEvent",
                "id": self.new_id(),
                "displayName": activity,
                "componentName": component,
                "actor": {"auditActorType": "ItPro", "userPrincipalName": "admin@" + self.directory.tenant_id},
                "activity": activity,
                "activityDateTime": _iso(self.directory.clock.timestamp()),
                "activityType": activity,
                "activityOperationType": "Action" if change else "Patch",
                "activityResult": "Success",
                "correlationId": self.new_id(),
                "resources": [
                    {
                        "displayName": name,
                        "auditResourceType": kind,
                        "resourceId": resource_id,
                        "modifiedProperties": modified,
                    }
                ],
                "category": component,
            }
        )

    def listed_audit_events(self) -> list[dict[str, Any]]:
        """The audit events Graph lists now: those at least `audit_delay` old."""
        cutoff = self.directory.clock.timestamp() - self.audit_delay
        return [e for e in self.audit_events if _timestamp(e["activityDateTime"]) <= cutoff]

    def set_status(self, policy_id: str, device_id: str, status: str) -> None:
        """Flip a device's status for a compliance policy or configuration (e.g. to "nonCompliant")."""
        if policy_id not in self.policy_platform or device_id not in self.devices:
            raise KeyError((policy_id, device_id))
        self.status_overrides[(policy_id, device_id)] = status
        self._bump()

    def set_install_state(self, app_id: str, device_id: str, state: str | None) -> None:
        """A managed app's install state on a device ("installed", "failed", ...; None: no longer targeted)."""
        if app_id not in self.mobile_apps or device_id not in self.devices:
            raise KeyError((app_id, device_id))
        self.install_overrides[(app_id, device_id)] = None if state is None else INSTALL_STATES[state]
        self._bump()

    def install_detected(self, device_id: str, app_id: str) -> None:
        """Software shows up on a device (a detected app, by detection id)."""
        if device_id not in self.devices or app_id not in self.detected:
            raise KeyError((device_id, app_id))
        removed = self.apps_removed.get(device_id, set())
        if app_id in removed:
            removed.discard(app_id)
        elif app_id not in self.device_apps(device_id):
            self.apps_added.setdefault(device_id, set()).add(app_id)
            self.added_devices_of_app.setdefault(app_id, {})[device_id] = None
        self._bump()

    def uninstall_detected(self, device_id: str, app_id: str) -> None:
        if app_id in self.apps_added.get(device_id, set()):
            self.apps_added[device_id].discard(app_id)
            self.added_devices_of_app[app_id].pop(device_id, None)
        elif app_id in self.device_apps(device_id):
            self.apps_removed.setdefault(device_id, set()).add(app_id)
        else:
            raise KeyError((device_id, app_id))
        self._bump()

    def retire_device(self, device_id: str) -> None:
        """The device leaves Intune (retired or deleted): it is gone from every list."""
        device = self.devices.pop(device_id)
        self.by_platform[device.spec.platform].pop(device_id, None)
        self.profile_devices.get((device.spec.platform, device.profile), {}).pop(device_id, None)
        for app_id in self.apps_added.pop(device_id, set()):
            self.added_devices_of_app[app_id].pop(device_id, None)
        self.apps_removed.pop(device_id, None)
        self._bump()

    # -- derived state -----------------------------------------------------------------------

    def status(self, policy_id: str, device: SimDevice) -> str:
        override = self.status_overrides.get((policy_id, device.id))
        if override is not None:
            return override
        roll = _mix(device.index, self.policy_serial[policy_id]) % 1000
        for limit, status in _STATUS_TABLE + _NOT_APPLYING:
            if roll < limit:
                if status == "compliant" and policy_id in self.configurations and roll < 200:
                    return "remediated"
                return status
        return "notAssigned"

    def compliance_state(self, device: SimDevice) -> str:
        """The device's complianceState, from its compliance policies' statuses."""
        platform = device.spec.platform
        statuses = [self.status(p, device) for p in self.compliance_policies if self.policy_platform[p] == platform]
        applying = [s for s in statuses if s not in ("notApplicable", "notAssigned")]
        if any(s in ("nonCompliant", "error", "conflict") for s in applying):
            return "noncompliant"
        if not applying or all(s == "unknown" for s in applying):
            return "unknown"
        return "compliant"

    def install_state(self, app_id: str, device: SimDevice) -> int | None:
        """The device's install state code for a managed app; None when the app is not targeted at it."""
        key = (app_id, device.id)
        if key in self.install_overrides:
            return self.install_overrides[key]
        if not self.mobile_apps[app_id].get("isAssigned"):
            return None
        platform = self.app_platform[app_id]
        if platform not in ("all", device.spec.platform):
            return None
        roll = _mix(device.index, 1000 + self.app_serial[app_id]) % 1000
        if roll >= _ASSIGNED_SHARE:
            return None
        return INSTALL_STATES["installed"] if roll < 520 else INSTALL_STATES["failed"] if roll < 560 else 5

    def device_apps(self, device_id: str) -> list[str]:
        """Detection ids of the software on a device."""
        device = self.devices[device_id]
        profiles = self.profiles.get(device.spec.platform) or [()]
        base = profiles[device.profile % len(profiles)]
        removed = self.apps_removed.get(device_id, set())
        return [a for a in base if a not in removed] + sorted(self.apps_added.get(device_id, set()))

    def devices_with_app(self, app_id: str) -> Iterator[str]:
        platform = self.detected[app_id]["platform"]
        for profile in self.profiles_of_app.get(app_id, []):
            for device_id in self.profile_devices.get((platform, profile), {}):
                if app_id not in self.apps_removed.get(device_id, ()):
                    yield device_id
        yield from self.added_devices_of_app.get(app_id, {})

    def device_count(self, app_id: str) -> int:
        """Devices that have a detected app; all counts are computed at once per tenant version."""
        version, counts = self._counts
        if version != self.version:
            counter: Counter[str] = Counter()
            for device_id in self.devices:
                counter.update(self.device_apps(device_id))
            counts = dict(counter)
            self._counts = (self.version, counts)
        return counts.get(app_id, 0)

    def stats(self) -> dict[str, int]:
        return {
            "devices": len(self.devices),
            "compliancePolicies": len(self.compliance_policies),
            "deviceConfigurations": len(self.configurations),
            "mobileApps": len(self.mobile_apps),
            "detectedApps": len(self.detected),
            "version": self.version,
        }


def serial_number(index: int) -> str:
    return f"SN{_mix(index, 7):08X}{index % 100:02d}"


def seed_policies(intune: IntuneTenant, compliance: int, configurations: int) -> None:
    for name, odata_type, platform in COMPLIANCE_POLICIES[:compliance]:
        intune.add_policy("compliance", name, odata_type, platform)
    for name, odata_type, platform in DEVICE_CONFIGURATIONS[:configurations]:
        intune.add_policy("configuration", name, odata_type, platform)
