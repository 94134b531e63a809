"""Managed devices (pure): the device entity, its `intune_host_agent`, agent MANAGES device, and the
user HAS (enrolled user) / USES (logged-on users) device relationships.

Mapping of docs/jupiterone.md 1.6, 1.7 and 2.1 (property names of the public integration), made
to satisfy the current data model's `Host` and `Device` classes (section 13): the address arrays,
`fqdn`, `deviceId` (an array) and `osType` (a fixed list) are always present, `null` when unknown;
`hostname` is `null` unless the device name is a valid host name (the model's pattern refuses
"Adele's iPhone"); `assetTag` is an array.

Decisions where the reference leaves room:

- `_type`: `select_device_type` (monitor.model.intune); a device without a `model` is no longer taken
  for a virtual server.
- user HAS / USES device are emitted only for users the mirror knows (`known_users`), as the public
  integration did for USES (it falls back to a mapped relationship for HAS, which `monitor` does not
  emit): a relationship to a user entity that does not exist would be dangling in JupiterOne. The
  enrolling user of a managed device is a directory user in practice; an unknown one (a user
  deleted since, a guest not yet synced) gets the relationship on the first sweep after the
  directory has it.
- `hardwareInformation` comes from the list call, as in the public integration (Graph fills most
  of it only on a per-device GET; one request per device per sweep is not worth an IP address);
  the top-level `manufacturer` / `model` / `serialNumber` are the fallbacks.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Container

from monitor.model.common import direct_relationship, drop_none, required_properties
from monitor.model.intune import (
    AGENT_TYPE,
    DEVICE_FAMILY,
    USER_TYPE,
    agent_key,
    intune_ms,
    select_device_type,
)
from monitor.model.types import JsonMapping, JsonObject, Upsert, entity_placement, relationship_placement

# `$select` of the managed device list: only what the mapping reads.
MANAGED_DEVICE_SELECT: tuple[str, ...] = (
    "id",
    "deviceName",
    "deviceType",
    "model",
    "manufacturer",
    "serialNumber",
    "hardwareInformation",
    "wiFiMacAddress",
    "ethernetMacAddress",
    "meid",
    "imei",
    "iccid",
    "udid",
    "phoneNumber",
    "easActivated",
    "easDeviceId",
    "azureActiveDirectoryDeviceId",
    "azureADDeviceId",
    "operatingSystem",
    "osVersion",
    "emailAddress",
    "userId",
    "userDisplayName",
    "userPrincipalName",
    "managedDeviceOwnerType",
    "isEncrypted",
    "isSupervised",
    "managementState",
    "jailBroken",
    "deviceCategoryDisplayName",
    "enrolledDateTime",
    "lastSyncDateTime",
    "deviceHealthAttestationState",
    "managementAgent",
    "deviceRegistrationState",
    "complianceState",
    "usersLoggedOn",
)

_DEVICE_REQUIRED = required_properties("Host", "Device")
_AGENT_REQUIRED = required_properties("HostAgent")
AGENT_FUNCTIONS = ("endpoint-compliance", "endpoint-protection")

# The data model's patterns (Host.json / Device.json).
_HOSTNAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9-]{0,61}[a-zA-Z0-9]$")
_FQDN = re.compile(r"(?=^.{4,253}$)(^((?!-)[a-zA-Z0-9-]{0,62}[a-zA-Z0-9]\.)+[a-zA-Z]{2,63}$)")
_MAC = re.compile(r"^([0-9a-f]{2}:){5}[0-9a-f]{2}$")
_HEX12 = re.compile(r"^[0-9a-f]{12}$")

# `operatingSystem` prefixes (lower case) -> the data model's `osType`; first match wins.
_OS_TYPES: tuple[tuple[str, str], ...] = (
    ("windows", "windows"),
    ("macos", "darwin"),
    ("mac os", "darwin"),
    ("osx", "darwin"),
    ("ios", "ios"),
    ("ipados", "ios"),
    ("android", "android"),
    ("chrome", "chromeos"),
    ("linux", "linux"),
    ("ubuntu", "linux"),
    ("unix", "unix"),
    ("blackberry", "legacy"),
    ("palm", "legacy"),
    ("nokia", "legacy"),
)
# complianceState values that say nothing about compliance (docs/jupiterone.md 1.7).
_UNKNOWN_COMPLIANCE = frozenset({"unknown", "configmanager"})


def os_type(operating_system: str | None) -> str | None:
    """The data model's `osType` for an Intune `operatingSystem`; "other" when unrecognised."""
    name = (operating_system or "").strip().lower()
    if not name:
        return None
    return next((kind for prefix, kind in _OS_TYPES if name.startswith(prefix)), "other")


def normalize_mac(raw: object) -> str | None:
    """`aa:bb:cc:dd:ee:ff` (lower case, colons) or None; Intune sends 12 bare hex digits or separators."""
    if not isinstance(raw, str):
        return None
    value = raw.strip().lower().replace("-", ":")
    if _HEX12.match(value):
        value = ":".join(value[i : i + 2] for i in range(0, 12, 2))
    return value if _MAC.match(value) and value != "00:00:00:00:00:00" else None


def host_names(device_name: str | None) -> tuple[str | None, list[str] | None]:
    """(`hostname`, `fqdn`) from a device name: a dotted name is a FQDN whose first label is the host."""
    if not device_name:
        return None, None
    if "." in device_name and _FQDN.match(device_name):
        label = device_name.split(".", 1)[0]
        return (label if _HOSTNAME.match(label) else None), [device_name]
    return (device_name if _HOSTNAME.match(device_name) else None), None


def _addresses(ip_text: object) -> JsonObject:
    """The address arrays of the data model from `hardwareInformation.ipAddressV4` (IPv4 only)."""
    result: JsonObject = dict.fromkeys(("ipv4Addresses", "ipv6Addresses", "publicIpAddresses", "privateIpAddresses"))
    try:
        address = ipaddress.IPv4Address(str(ip_text).strip()) if ip_text else None
    except ValueError:
        address = None
    if address is None or address.is_unspecified:
        return result
    text = str(address)
    result["ipAddress"] = text
    result["ipv4Addresses"] = [text]
    result["privateIpAddresses" if address.is_private else "publicIpAddresses"] = [text]
    return result


def _text(value: object) -> str | None:
    """A non-empty string or None (Intune sends "" for unknown serials, IMEIs and the like)."""
    return value if isinstance(value, str) and value.strip() else None


def _jail_broken(value: object) -> bool | None:
    if not isinstance(value, str) or value.lower() == "unknown":
        return None
    return value != "False"


def _display_name(device: JsonMapping) -> str:
    name = _text(device.get("deviceName"))
    if name:
        return name
    owner = _text(device.get("userDisplayName")) or _text(device.get("emailAddress")) or "Unknown User"
    return f"{owner}'s {_text(device.get('model')) or 'Device'}"


def _hardware(device: JsonMapping) -> JsonObject:
    hardware = device.get("hardwareInformation") or {}
    vendor = _text(hardware.get("manufacturer")) or _text(device.get("manufacturer"))
    model = _text(hardware.get("model")) or _text(device.get("model"))
    return {
        "hardwareVendor": vendor,
        "hardwareManufacturer": vendor,
        "hardwareModel": model,
        "hardwareVersion": model,
        "hardwareSerial": _text(hardware.get("serialNumber")) or _text(device.get("serialNumber")),
        **_addresses(hardware.get("ipAddressV4")),
    }


def _macs(device: JsonMapping) -> list[str] | None:
    macs = [normalize_mac(device.get("wiFiMacAddress")), normalize_mac(device.get("ethernetMacAddress"))]
    unique = list(dict.fromkeys(mac for mac in macs if mac))
    return unique or None


def _os(device: JsonMapping) -> JsonObject:
    os_name, os_version = _text(device.get("operatingSystem")), _text(device.get("osVersion"))
    return {
        "osName": os_name,
        "osVersion": os_version,
        "osDetails": f"{os_name} version {os_version}" if os_name and os_version else os_name,
        "osType": os_type(os_name),
    }


def _owner(device: JsonMapping) -> JsonObject:
    email = _text(device.get("emailAddress"))
    owner_type = device.get("managedDeviceOwnerType")
    return {
        "userEmails": [email] if email and "@" in email else None,
        "userId": _text(device.get("userId")),
        "userDisplayName": _text(device.get("userDisplayName")),
        "username": _text(device.get("userPrincipalName")),
        "ownerType": owner_type,
        "BYOD": None if owner_type is None else owner_type == "personal",
    }


def _dates(device: JsonMapping) -> JsonObject:
    attestation = device.get("deviceHealthAttestationState") or {}
    last_sync = intune_ms(device.get("lastSyncDateTime"))
    return {
        "enrolledDateTime": intune_ms(device.get("enrolledDateTime")),
        "lastSyncDateTime": last_sync,
        "lastUpdateDateTime": intune_ms(attestation.get("lastUpdateDateTime")),
        "lastSeenOn": last_sync,
    }


def device_entity(device: JsonMapping) -> JsonObject:
    """The device entity (one of the seven `_type`s) for a Graph managedDevice."""
    device_id: str = device["id"]
    device_type, physical = select_device_type(device.get("deviceType"), device.get("model"))
    display_name = _display_name(device)
    device_name = _text(device.get("deviceName"))
    hostname, fqdn = host_names(device_name)
    aad_id = _text(device.get("azureActiveDirectoryDeviceId")) or _text(device.get("azureADDeviceId"))
    macs = _macs(device)
    serial = _text(device.get("serialNumber"))
    properties: JsonObject = {
        "_key": device_id,
        "_type": device_type,
        "_class": ["Host", "Device"] if physical else ["Host"],
        "id": device_id,
        "deviceId": [device_id],
        "name": device_name or display_name,
        "displayName": display_name,
        "deviceName": device_name,
        "hostname": hostname,
        "fqdn": fqdn,
        "category": "endpoint",
        "deviceType": device.get("deviceType"),
        "model": _text(device.get("model")),
        "version": _text(device.get("model")),
        "make": _text(device.get("manufacturer")),
        "serial": serial,
        "serialNumber": serial,
        **_hardware(device),
        "wifiMacAddress": device.get("wiFiMacAddress") or None,
        "ethernetMacAddress": device.get("ethernetMacAddress") or None,
        "macAddress": macs,
        "macAddresses": macs,
        **{name: _text(device.get(name)) for name in ("meid", "imei", "iccid", "udid", "phoneNumber")},
        "easDeviceId": device.get("easDeviceId") if device.get("easActivated") else False,
        "assetTag": [aad_id] if aad_id else None,
        "aadDeviceId": aad_id,
        **_os(device),
        **_owner(device),
        "encrypted": device.get("isEncrypted"),
        "supervised": device.get("isSupervised"),
        "managed": device.get("managementState") != "discovered",
        "jailBroken": _jail_broken(device.get("jailBroken")),
        "physical": physical,
        "deviceCategoryDisplayName": _text(device.get("deviceCategoryDisplayName")),
        **_dates(device),
    }
    return drop_none(properties, _DEVICE_REQUIRED)


def agent_entity(device: JsonMapping) -> JsonObject:
    """The device's `intune_host_agent` (docs/jupiterone.md 1.7)."""
    state = device.get("complianceState")
    compliant = None if state is None or str(state).lower() in _UNKNOWN_COMPLIANCE else state == "compliant"
    properties: JsonObject = {
        "_key": agent_key(device["id"]),
        "_type": AGENT_TYPE,
        "_class": ["HostAgent"],
        "name": "intune-host-agent",
        "displayName": "Intune Host Agent",
        "function": list(AGENT_FUNCTIONS),
        "managementAgent": device.get("managementAgent"),
        "state": device.get("managementState"),
        "registrationState": device.get("deviceRegistrationState"),
        "complianceState": state,
        "compliant": compliant,
        "lastSeenOn": intune_ms(device.get("lastSyncDateTime")),
    }
    return drop_none(properties, _AGENT_REQUIRED)


def _logged_on_users(device: JsonMapping) -> list[str]:
    users = device.get("usersLoggedOn") or []
    return list(dict.fromkeys(u["userId"] for u in users if isinstance(u, dict) and _text(u.get("userId"))))


def map_device(device: JsonMapping, *, known_users: Container[str]) -> list[Upsert]:
    """Device, host agent, agent MANAGES device, and user HAS / USES device for users in `known_users`.

    Everything is anchored on the managed device id (family `intune_device`).
    """
    entity = device_entity(device)
    agent = agent_entity(device)
    device_id, device_type = entity["_key"], entity["_type"]
    entity_at = entity_placement(DEVICE_FAMILY, device_id)
    relationship_at = relationship_placement(DEVICE_FAMILY, device_id)
    upserts = [
        Upsert(entity_at, entity),
        Upsert(entity_at, agent),
        Upsert(relationship_at, direct_relationship(AGENT_TYPE, agent["_key"], "MANAGES", device_type, device_id)),
    ]
    owner = _text(device.get("userId"))
    if owner and owner in known_users:
        upserts.append(Upsert(relationship_at, direct_relationship(USER_TYPE, owner, "HAS", device_type, device_id)))
    for user_id in _logged_on_users(device):
        if user_id in known_users:
            relationship = direct_relationship(USER_TYPE, user_id, "USES", device_type, device_id)
            upserts.append(Upsert(relationship_at, relationship))
    return upserts


def device_user_ids(device: JsonMapping) -> list[str]:
    """The user ids a device's relationships may point at (enrolled and logged-on users)."""
    owner = _text(device.get("userId"))
    return [*([owner] if owner else []), *_logged_on_users(device)]
