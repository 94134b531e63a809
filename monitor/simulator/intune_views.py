"""What the simulated Intune endpoints return: Graph-shaped JSON built from `IntuneTenant` state.

Shapes follow the (beta) managedDevice, deviceComplianceDeviceStatus / deviceConfigurationDeviceStatus,
mobileApp, detectedApp resources and the reports API's Schema/Values table (docs/jupiterone.md 3); the views
carry beta's properties, and conformance.py cuts a v1.0 answer to what v1.0's metadata has.
Values derived from a device's index are stable between calls, so an unchanged tenant answers an
unchanged sweep with identical objects. The costliest of those that depend on nothing but the device's
index, kind, id and enrolment time (serial number, MAC addresses, Entra device id, enrolment time) are
derived once per device (`_fixed`); its name, last sync, owner, statuses and compliance state are read
afresh on every call, so a change shows in the next answer.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

from monitor.simulator.intune import NEVER, IntuneTenant, SimDevice, _iso, _mix, iso_time, serial_number
from monitor.simulator.intune_catalog import INSTALL_STATES

_INSTALL_STATE_NAMES = {code: name for name, code in INSTALL_STATES.items()}
# The columns of the DeviceInstallStatusByApp report and their types, as Intune documents them
# (https://learn.microsoft.com/en-us/mem/intune/fundamentals/reports-export-graph-available-reports);
# the report is filtered on ApplicationId. A `_loc` column is the localized text of the column before it
# and comes with it (https://learn.microsoft.com/en-us/mem/intune/fundamentals/reports-export-graph-apis,
# "LocalizedValuesAsAdditionalColumn", the default).
REPORT_COLUMNS: tuple[tuple[str, str], ...] = (
    ("DeviceName", "String"),
    ("UserPrincipalName", "String"),
    ("Platform", "String"),
    ("AppVersion", "String"),
    ("DeviceId", "String"),
    ("AssignmentFilterIdsExist", "Boolean"),
    ("LastModifiedDateTime", "DateTime"),
    ("AppInstallState", "Int32"),
    ("AppInstallState_loc", "String"),
    ("AppInstallStateDetails", "Int32"),
    ("AppInstallStateDetails_loc", "String"),
    ("HexErrorCode", "String"),
)


def _model(device: SimDevice) -> str:
    models = device.spec.models
    return models[device.index % len(models)]


# Fields a device listing can render without building the whole object.
_CHEAP: dict[str, Callable[[SimDevice], Any]] = {
    "id": lambda device: device.id,
    "deviceName": lambda device: device.name,
    "deviceType": lambda device: device.spec.device_type,
    "model": _model,
    "operatingSystem": lambda device: device.spec.operating_system,
    "userId": lambda device: device.user_id,
}
_CHEAP_FIELDS = frozenset(_CHEAP)


def _mac(index: int, salt: int) -> str:
    return f"{(_mix(index, salt) << 16 | _mix(salt, index) & 0xFFFF) & 0xFFFFFFFFFFFF:012X}"


class _Fixed(NamedTuple):
    """The costliest of a device's values that follow from its index, kind, id and enrolment time alone,
    with the index, kind, id and enrolment time they were derived from."""

    of_index: int
    of_kind: int
    of_id: str
    of_enrolled: float
    serial: str
    wifi: str
    ethernet: str | None
    aad_id: str
    enrolled: str  # kept here, it takes none of `_iso`'s places


def _fixed(device: SimDevice) -> _Fixed:
    """The device's `_Fixed`, derived on first use and whenever its index, kind, id or enrolment time is
    not what it was derived from (a test may change a device's kind)."""
    fixed = device.fixed
    if (
        isinstance(fixed, _Fixed)
        and fixed.of_index == device.index
        and fixed.of_kind == device.kind
        and fixed.of_id == device.id
        and fixed.of_enrolled == device.enrolled
    ):
        return fixed
    index = device.index
    fixed = device.fixed = _Fixed(
        index,
        device.kind,
        device.id,
        device.enrolled,
        serial=serial_number(index),
        wifi=_mac(index, 11),
        ethernet=_mac(index, 12) if device.spec.ethernet else None,
        aad_id=str(uuid.uuid5(uuid.NAMESPACE_OID, device.id)),
        enrolled=iso_time(device.enrolled),
    )
    return fixed


def _owner(intune: IntuneTenant, device: SimDevice) -> Mapping[str, Any]:
    return intune.directory.users.get(device.user_id or "") or {}


def select_view(view: Mapping[str, Any], select: Iterable[str] | None) -> dict[str, Any]:
    """`view` cut to `$select` (id and @odata.type always stay); absent names come back as null."""
    if select is None:
        return dict(view)
    keep = {"@odata.type": view["@odata.type"]} if "@odata.type" in view else {}
    return {**keep, "id": view.get("id"), **{name: view.get(name) for name in select if name != "id"}}


def device_view(intune: IntuneTenant, device: SimDevice, select: tuple[str, ...] | None = None) -> dict[str, Any]:
    if select is not None and _CHEAP_FIELDS.issuperset(select):
        view = {"id": device.id}
        for name in select:
            if name != "id":
                view[name] = _CHEAP[name](device)
        return view
    return select_view(_full_device(intune, device), select)


def _full_device(intune: IntuneTenant, device: SimDevice) -> dict[str, Any]:
    spec, index = device.spec, device.index
    owner = _owner(intune, device)
    fixed = _fixed(device)
    model = spec.models[index % len(spec.models)]
    serial, wifi, aad_id = fixed.serial, fixed.wifi, fixed.aad_id
    ip = f"10.{(index >> 16) & 255}.{(index >> 8) & 255}.{(index & 255) or 1}"
    windows = spec.operating_system == "Windows"
    return {
        "id": device.id,
        "userId": device.user_id,
        "deviceName": device.name,
        "managedDeviceOwnerType": spec.owner_type,
        "enrolledDateTime": fixed.enrolled,
        "lastSyncDateTime": _iso(device.last_sync),
        "operatingSystem": spec.operating_system,
        "complianceState": intune.compliance_state(device),
        "jailBroken": "False" if spec.phone else "Unknown",
        "managementAgent": spec.management_agent,
        "osVersion": spec.os_versions[index % len(spec.os_versions)],
        "easActivated": spec.phone,
        "easDeviceId": f"EAS{serial}" if spec.phone else "",
        "easActivationDateTime": NEVER,
        "azureADRegistered": True,
        "azureADDeviceId": aad_id,
        "azureActiveDirectoryDeviceId": aad_id,
        "deviceRegistrationState": "registered",
        "deviceCategoryDisplayName": "Corporate" if spec.owner_type == "company" else "Unknown",
        "isSupervised": spec.platform == "ios" and spec.owner_type == "company",
        "isEncrypted": index % 10 != 0,
        "emailAddress": owner.get("mail") or "",
        "userPrincipalName": owner.get("userPrincipalName") or "",
        "userDisplayName": owner.get("displayName") or "",
        "model": model,
        "manufacturer": spec.manufacturer,
        "serialNumber": serial,
        "imei": f"35{_mix(index, 21) % 10**13:013d}" if spec.phone else "",
        "meid": "",
        "iccid": f"8901{_mix(index, 22) % 10**15:015d}" if spec.phone else "",
        "udid": f"{_mix(index, 23):08x}-{_mix(index, 24):016x}" if spec.platform == "ios" else "",
        "phoneNumber": f"+1 206 555 {index % 10000:04d}" if spec.phone else "",
        "wiFiMacAddress": wifi,
        "ethernetMacAddress": fixed.ethernet,
        "managementState": "managed",
        "deviceType": spec.device_type,
        "hardwareInformation": {
            "serialNumber": serial,
            "manufacturer": spec.manufacturer,
            "model": model,
            "ipAddressV4": ip,
            "wifiMac": wifi,
            "totalStorageSpace": 256 * 1024**3,
            "operatingSystemLanguage": "en-US",
        },
        "deviceHealthAttestationState": {"lastUpdateDateTime": fixed.enrolled} if windows else None,
        "usersLoggedOn": [
            {"userId": user_id, "lastLogOnDateTime": _iso(device.last_sync - 3600 * (n + 1))}
            for n, user_id in enumerate(device.logged_on)
        ],
    }


# A device's status for a policy, property by property: (tenant, policy id, device, status) -> value.
_STATUS: dict[str, Callable[[IntuneTenant, str, SimDevice, str], Any]] = {
    "id": lambda intune, policy_id, device, status: f"{intune.account_id}_{policy_id}_{device.id}",
    "deviceDisplayName": lambda intune, policy_id, device, status: device.name,
    "userName": lambda intune, policy_id, device, status: _owner(intune, device).get("displayName") or "",
    "deviceModel": lambda intune, policy_id, device, status: _model(device),
    "platform": lambda intune, policy_id, device, status: 0,
    "complianceGracePeriodExpirationDateTime": lambda intune, policy_id, device, status: "9999-12-31T23:59:59Z",
    "status": lambda intune, policy_id, device, status: status,
    "lastReportedDateTime": lambda intune, policy_id, device, status: _iso(device.last_sync),
    "userPrincipalName": lambda intune, policy_id, device, status: (
        _owner(intune, device).get("userPrincipalName") or ""
    ),
}


def status_view(
    intune: IntuneTenant, policy_id: str, device: SimDevice, status: str, select: tuple[str, ...] | None = None
) -> dict[str, Any]:
    """The device's status for a policy, cut to `select` as `select_view` cuts it: only what is selected
    is computed."""
    if select is None:
        return {name: value(intune, policy_id, device, status) for name, value in _STATUS.items()}
    view = {"id": _STATUS["id"](intune, policy_id, device, status)}
    for name in select:
        if name != "id":
            value = _STATUS.get(name)
            view[name] = None if value is None else value(intune, policy_id, device, status)
    return view


def app_version(app: Mapping[str, Any]) -> str:
    """The AppVersion column of a mobile app's install report rows."""
    return next((str(app[f]) for f in ("displayVersion", "versionNumber", "identityVersion") if app.get(f)), "")


def report_row(
    intune: IntuneTenant, app_id: str, device: SimDevice, state: int, version: str | None = None
) -> list[Any]:
    """One row of the DeviceInstallStatusByApp report, in `REPORT_COLUMNS` order; `version` is the app's
    `app_version`, when the caller has it."""
    owner = _owner(intune, device)
    name = _INSTALL_STATE_NAMES.get(state, "unknown")
    failed = state == INSTALL_STATES["failed"]
    if version is None:
        version = app_version(intune.mobile_apps[app_id])
    return [
        device.name,
        owner.get("userPrincipalName") or "",
        device.spec.operating_system,
        version,
        device.id,
        False,
        _iso(device.last_sync),
        state,
        name[:1].upper() + name[1:],
        0,
        "",
        "0x87D1041C" if failed else "0x0",
    ]


def detected_view(intune: IntuneTenant, app_id: str) -> dict[str, Any]:
    app = intune.detected[app_id]
    return {**app, "deviceCount": intune.device_count(app_id)}
