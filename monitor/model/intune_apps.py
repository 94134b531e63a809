"""Managed and detected applications (pure): `intune_managed_application` with device ASSIGNED
application, and `intune_detected_application` with device INSTALLED application.

Mapping of docs/jupiterone.md 1.11, 1.12 and 2.1.

Decisions where the reference leaves room:

- Install states come from the per-app DeviceInstallStatusByApp report, read with the v1.0 action
  `deviceManagement/reports/retrieveDeviceAppInstallationStatusReport` (Graph's v1.0 metadata has it;
  the public integration's beta `getDeviceInstallStatusReport` is in neither version). Its columns are
  the documented ones (https://learn.microsoft.com/en-us/mem/intune/fundamentals/reports-export-graph-available-reports);
  its table is read by `report_rows`, which refuses anything that is not one.
- `installState` / `installStateDetail` are the report's AppInstallState / AppInstallStateDetails as
  Graph sends them: the reports' "enum value" columns hold "either a raw string, or a set of numbers"
  (https://learn.microsoft.com/en-us/mem/intune/fundamentals/reports-export-graph-apis), so either is
  kept as it is. `errorCode` is the HexErrorCode as the signed 32-bit number Intune's codes are
  (`0x87D1041C` is -2016330712), with `hexErrorCode` beside it.
- `mobile` compares case-consistently, so web apps count as the public integration meant them to.
- Detected applications: one entity per lower-cased name, as in the public integration, but a
  nameless detection gets an entity of its own keyed by its detection id (`IntuneDetected:<id>`)
  instead of all of them collapsing into `IntuneDetected:undefined`. The entity's `version` and
  `sizeInByte` come from one representative detection; where the public integration took "the first
  seen" (an order Graph does not promise, so every sweep could flip it), `DetectedAppCatalog` takes
  the newest version (ties: the smallest detection id), which is deterministic and meaningful.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from monitor.model.common import direct_relationship, drop_none, required_properties
from monitor.model.intune import (
    APPLICATION_FAMILY,
    DETECTED_APP_TYPE,
    DETECTED_KEY_PREFIX,
    DEVICE_FAMILY,
    MANAGED_APP_TYPE,
    intune_ms,
)
from monitor.model.types import JsonMapping, JsonObject, Upsert, entity_placement, relationship_placement

# `$select` of `GET /deviceManagement/detectedApps`.
DETECTED_APP_SELECT: tuple[str, ...] = ("id", "displayName", "version", "sizeInByte", "deviceCount")
# Columns asked of the DeviceInstallStatusByApp report (documented ones only; see the module docstring).
REPORT_COLUMNS: tuple[str, ...] = (
    "DeviceId",
    "AppVersion",
    "AppInstallState",
    "AppInstallStateDetails",
    "HexErrorCode",
)
UNVERSIONED = "unversioned"
# The public integration's fields, then `displayVersion` (win32LobApp, winGetApp), which it missed.
_VERSION_FIELDS = ("versionName", "versionCode", "versionNumber", "identityVersion", "version", "displayVersion")
_MOBILE_MARKERS = ("ios", "android", "mobile", "webapp")
_APP_REQUIRED = required_properties("Application")
_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://\S+$")


def _url(value: object) -> str | None:
    """A value for the data model's `format: uri` properties, or None."""
    return value if isinstance(value, str) and _URL.match(value) else None


def app_version(app: JsonMapping) -> str:
    """The first version-like field an app has (types differ in which), else "unversioned"."""
    for name in _VERSION_FIELDS:
        value = app.get(name)
        if value not in (None, ""):
            return str(value)
    return UNVERSIONED


def map_managed_app(app: JsonMapping) -> Upsert:
    """An `intune_managed_application` entity from a Graph mobileApp (docs/jupiterone.md 1.11)."""
    app_id: str = app["id"]
    odata_type = str(app.get("@odata.type") or "").lower()
    display_name = app.get("displayName") or app_id
    notes = app.get("notes")
    line_of_business = "lob" in odata_type
    properties: JsonObject = {
        "_key": app_id,
        "_type": MANAGED_APP_TYPE,
        "_class": ["Application"],
        "id": app_id,
        "name": display_name.lower(),
        "displayName": display_name,
        "description": app.get("description") or None,
        "notes": [notes] if notes else None,
        "COTS": not line_of_business,
        "external": not line_of_business,
        "mobile": any(marker in odata_type for marker in _MOBILE_MARKERS),
        "productionURL": _url(app.get("appUrl")) or _url(app.get("appStoreUrl")),
        "publisher": app.get("publisher") or None,
        "owner": app.get("owner") or None,
        "developer": app.get("developer") or None,
        "isPublished": app.get("publishingState") == "published",
        "createdOn": intune_ms(app.get("createdDateTime")),
        "lastUpdatedOn": intune_ms(app.get("lastModifiedDateTime")),
        "featured": app.get("isFeatured"),
        "privacyInformationURL": _url(app.get("privacyInformationUrl")),
        "informationURL": _url(app.get("informationUrl")),
        "version": app_version(app),
        "committedContentVersion": app.get("committedContentVersion"),
        "packageId": app.get("packageId"),
    }
    return Upsert(entity_placement(APPLICATION_FAMILY, app_id), drop_none(properties, _APP_REQUIRED))


class ReportShapeError(ValueError):
    """A reports-API answer that is not a report table."""


def report_rows(body: JsonMapping) -> list[JsonObject]:
    """The rows of a reports-API answer (`{"Schema": [{"Column": ...}], "Values": [[...]]}`) as dicts.

    Raises ReportShapeError for anything else (no Schema or Values list, a column without a name, a row
    that is not a list of the schema's length, no DeviceId column): taken for an empty report, it would
    delete every install state stored for the app.
    """
    schema, values = body.get("Schema"), body.get("Values")
    if not isinstance(schema, list) or not isinstance(values, list):
        raise ReportShapeError("a report needs a Schema list and a Values list")
    named = [column.get("Column") if isinstance(column, dict) else None for column in schema]
    columns = [column for column in named if isinstance(column, str) and column]
    if len(columns) != len(named) or "DeviceId" not in columns:
        raise ReportShapeError(f"report columns {named!r} name no DeviceId")
    rows = []
    for row in values:
        if not isinstance(row, list) or len(row) != len(columns):
            raise ReportShapeError(f"a report row of {len(columns)} columns expected, got {row!r:.80}")
        rows.append(dict(zip(columns, row, strict=True)))
    return rows


def _number(value: object) -> int | float | None:
    return value if isinstance(value, int | float) and not isinstance(value, bool) else None


def _enum_value(value: object) -> int | float | str | None:
    """A report's enum value column: a number or a raw string (see the module docstring)."""
    return value if isinstance(value, str) and value else _number(value)


def error_code(hex_code: object) -> int | None:
    """`0x87D1041C` -> -2016330712 (Intune's error codes are signed 32-bit HRESULTs); None if unreadable."""
    if not isinstance(hex_code, str):
        return None
    try:
        value = int(hex_code, 16)
    except ValueError:
        return None
    return value - (1 << 32) if value >= 1 << 31 else value


def map_install_row(app: JsonMapping, row: JsonMapping, device_type: str | None) -> Upsert | None:
    """Device ASSIGNED managed application for one install-report row; None when the device is unknown
    (`device_type` None) or the row names no device. Anchored on the device."""
    device_id = row.get("DeviceId")
    if device_type is None or not isinstance(device_id, str) or not device_id:
        return None
    app_id: str = app["id"]
    hex_code = row.get("HexErrorCode")
    extra = {
        "installState": _enum_value(row.get("AppInstallState")),
        "installStateDetail": _enum_value(row.get("AppInstallStateDetails")),
        "errorCode": error_code(hex_code),
        "hexErrorCode": hex_code if isinstance(hex_code, str) and hex_code else None,
        "installedVersion": row.get("AppVersion") or app_version(app),
    }
    relationship = direct_relationship(
        device_type, device_id, "ASSIGNED", MANAGED_APP_TYPE, app_id, key_override=f"{device_id}|{app_id}", extra=extra
    )
    return Upsert(relationship_placement(DEVICE_FAMILY, device_id), relationship)


def detected_key(app: JsonMapping) -> str:
    """`IntuneDetected:<lower-cased name>`, or `IntuneDetected:<detection id>` for a nameless app."""
    name = app.get("displayName")
    return f"{DETECTED_KEY_PREFIX}{(name if isinstance(name, str) and name else app['id']).lower()}"


def map_installed(app: JsonMapping, device_id: str, device_type: str) -> Upsert:
    """Device INSTALLED detected application: the public integration's key (the default key with
    `|<detectionId>` appended), `version` and `detectionId`; anchored on the device."""
    to_key = detected_key(app)
    extra = {"version": app.get("version") or UNVERSIONED, "detectionId": app["id"]}
    key = f"{device_id}|installed|{to_key}|{app['id']}"
    relationship = direct_relationship(
        device_type, device_id, "INSTALLED", DETECTED_APP_TYPE, to_key, key_override=key, extra=extra
    )
    return Upsert(relationship_placement(DEVICE_FAMILY, device_id), relationship)


_RUNS = re.compile(r"(\d+)")


def version_order(version: object) -> tuple[tuple[int, int | str], ...]:
    """A sort key that orders "1.10" after "1.9" (numbers by value, the rest as text)."""
    parts = _RUNS.split(str(version or ""))
    return tuple((0, int(part)) if part.isdigit() else (1, part) for part in parts if part)


@dataclass(slots=True)
class _Representative:
    detection_id: str
    display_name: str | None
    version: Any
    size: Any


@dataclass
class DetectedAppCatalog:
    """One representative detection per detected-application key, collected over a whole listing.

    Memory grows with the number of distinct application names, not with devices.
    """

    _chosen: dict[str, _Representative] = field(default_factory=dict)

    def add(self, app: JsonMapping) -> None:
        key = detected_key(app)
        candidate = _Representative(
            app["id"], app.get("displayName") or None, app.get("version"), app.get("sizeInByte")
        )
        current = self._chosen.get(key)
        if current is None or _newer(candidate, current):
            self._chosen[key] = candidate

    def __len__(self) -> int:
        return len(self._chosen)

    def entities(self) -> Iterator[Upsert]:
        for key, chosen in self._chosen.items():
            name = chosen.display_name or chosen.detection_id
            properties: JsonObject = {
                "_key": key,
                "_type": DETECTED_APP_TYPE,
                "_class": ["Application"],
                "name": name.lower(),
                "displayName": name,
                "version": chosen.version or None,
                "sizeInByte": _number(chosen.size),
            }
            yield Upsert(entity_placement(APPLICATION_FAMILY, key), drop_none(properties, _APP_REQUIRED))


def _newer(candidate: _Representative, current: _Representative) -> bool:
    left, right = version_order(candidate.version), version_order(current.version)
    if left != right:
        return left > right
    return candidate.detection_id < current.detection_id
