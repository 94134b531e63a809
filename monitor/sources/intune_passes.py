"""The five passes of an Intune sweep: what each reads from Graph and which objects it owns.

Every pass lists its resource tenant-wide with `$select` and commits page by page; the only
per-object calls (a policy's device statuses, an app's install report, a detected app's devices)
go through `$batch`, 20 at a time (docs/graph.md 10.4), paced in their Intune bucket (docs/graph.md 10.3).

- devices: `GET /beta/deviceManagement/managedDevices` (DeviceManagementManagedDevices.Read.All);
  owns devices, host agents, agent MANAGES device, user HAS / USES device.
- compliance: `GET /deviceCompliancePolicies`, then `/{id}/deviceStatuses` per policy
  (DeviceManagementConfiguration.Read.All); owns compliance policies, agent ASSIGNED policy, and
  the findings (with IDENTIFIED and HAS) of compliance policies.
- configurations: the same over `/deviceConfigurations`.
- apps: `GET /beta/deviceAppManagement/mobileApps`, then the install report per assigned app
  (DeviceManagementApps.Read.All); owns managed apps and device ASSIGNED app.
- detected: `GET /deviceManagement/detectedApps`, then `/{id}/managedDevices` per app
  (DeviceManagementManagedDevices.Read.All); owns detected apps and device INSTALLED app.

Versions, by Graph's published metadata (v1.0: https://github.com/microsoftgraph/msgraph-metadata;
beta: the generated SDK, https://pypi.org/project/msgraph-beta-sdk/):

- The managed device list is read from beta: `deviceType` (which decides the `_type`),
  `hardwareInformation`, `azureActiveDirectoryDeviceId` and `usersLoggedOn` are beta-only properties.
- The managed app list is read from beta: `isAssigned` (which apps have an install report worth
  reading) and `win32LobApp.displayVersion` (a Win32 app's version) are beta-only; v1.0 would answer
  without them and they would be silently missing.
- Install states come from v1.0: `POST /deviceManagement/reports/retrieveDeviceAppInstallationStatusReport`
  (the DeviceInstallStatusByApp report of one app). It returns a stream (`Edm.Stream`), which `$batch`
  carries as a string; `BatchResponse.stream_json` decodes it and `report_rows` refuses anything that
  is not a report table. The public integration's beta `getDeviceInstallStatusReport` is in neither
  version.

The beta calls sit in the constants below and `BETA_READS` says so in `monitor status`; when beta
changes under them, or any answer is not what its call returns, the pass fails with the error in the
status and deletes nothing.
"""

from __future__ import annotations

import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson

from monitor.graph.client import BatchRequest, BatchResponse
from monitor.model.intune import (
    AGENT_KEY_PREFIX,
    APPLICATION_FAMILY,
    COMPLIANCE_POLICY_TYPE,
    CONFIGURATION_TYPE,
    DETECTED_KEY_PREFIX,
    DEVICE_FAMILY,
    FINDING_FAMILY,
    POLICY_FAMILY,
)
from monitor.model.intune_apps import (
    DETECTED_APP_SELECT,
    REPORT_COLUMNS,
    DetectedAppCatalog,
    ReportShapeError,
    app_version,
    map_install_row,
    map_installed,
    map_managed_app,
    report_rows,
)
from monitor.model.intune_devices import MANAGED_DEVICE_SELECT, device_user_ids, map_device
from monitor.model.intune_policies import (
    POLICY_SELECT,
    STATUS_SELECT,
    PolicyKind,
    PolicyRef,
    map_policy,
    map_status,
    policy_ref,
    status_device_id,
)
from monitor.model.types import Kind, Op
from monitor.sources.intune_mirror import device_types, known_users
from monitor.sources.intune_sweep import Batched, Ownership, PassWriter, next_link, seen_source
from monitor.sources.intune_units import PagePart, Unit, page_digest, unit, unit_of

MANAGED_DEVICES_PATH = "/beta/deviceManagement/managedDevices"
MOBILE_APPS_PATH = "/beta/deviceAppManagement/mobileApps"
INSTALL_REPORT_URL = "/deviceManagement/reports/retrieveDeviceAppInstallationStatusReport"  # below /v1.0
REPORT_PAGE = 1000
# What the sweep reads from Graph beta, for `monitor status`.
BETA_READS = (
    "managed devices (deviceType, hardwareInformation, azureActiveDirectoryDeviceId, usersLoggedOn), "
    "managed apps (isAssigned, win32LobApp.displayVersion)"
)

MANAGED_DEVICES = "DeviceManagementManagedDevices.Read.All"
CONFIGURATION = "DeviceManagementConfiguration.Read.All"
APPS = "DeviceManagementApps.Read.All"


@dataclass(frozen=True)
class IntunePass:
    """One resource of the sweep: its name, the permission it needs, and how it runs.

    `required`: the later passes depend on it (they look up its devices), so when it fails the sweep
    stops there; the later passes would otherwise delete relationships of devices it did not update.
    """

    name: str
    permission: str
    run: Callable[[PassWriter], Awaitable[None]]
    required: bool = False


# -- devices -------------------------------------------------------------------------------------


async def run_devices(writer: PassWriter) -> None:
    """Managed devices and their agents (permission DeviceManagementManagedDevices.Read.All)."""
    context = writer.context
    params = {"$select": ",".join(MANAGED_DEVICE_SELECT)}
    async for page in context.client.pages(context.tenant.id, MANAGED_DEVICES_PATH, params=params):
        users = await known_users(context.store, (u for device in page for u in device_user_ids(device)))
        await writer.commit_units([device_unit(device, users) for device in page], objects=len(page))


def device_unit(device: dict[str, Any], users: set[str]) -> Unit:
    """A device read with which of its users the mirror knows (its HAS and USES depend on it)."""
    known = [user for user in device_user_ids(device) if user in users]
    return unit(_DEVICES, str(device.get("id")), device, known, lambda: map_device(device, known_users=users))


# -- compliance policies and device configurations -------------------------------------------------

_POLICY_LISTS: dict[PolicyKind, str] = {
    "compliance": "/deviceManagement/deviceCompliancePolicies",
    "configuration": "/deviceManagement/deviceConfigurations",
}
_POLICY_TYPES: dict[PolicyKind, str] = {"compliance": COMPLIANCE_POLICY_TYPE, "configuration": CONFIGURATION_TYPE}


def _policy_pass(kind: PolicyKind) -> Callable[[PassWriter], Awaitable[None]]:
    list_path = _POLICY_LISTS[kind]

    async def run(writer: PassWriter) -> None:
        """Policies and their device statuses (permission DeviceManagementConfiguration.Read.All)."""
        context = writer.context
        client, tenant = context.client, context.tenant.id
        params = {"$select": ",".join(POLICY_SELECT)}
        batched: Batched[PolicyRef] = Batched(client, tenant, next_link(client, "v1.0"))
        select = ",".join(STATUS_SELECT)
        refs: list[PolicyRef] = []
        async for page in client.pages(tenant, f"/v1.0{list_path}", params=params):
            await writer.commit([map_policy(kind, policy) for policy in page], objects=len(page))
            refs += [policy_ref(kind, policy) for policy in page]
        first = [(ref, BatchRequest("GET", f"{list_path}/{ref.id}/deviceStatuses?$select={select}")) for ref in refs]
        async for policy, statuses in batched.pages(first):
            await _commit_statuses(writer, policy, statuses["value"])

    return run


async def _commit_statuses(writer: PassWriter, policy: PolicyRef, statuses: list[dict[str, Any]]) -> None:
    known = await device_types(writer.context.store, (status_device_id(s) for s in statuses), writer.device_types)
    source = seen_source(writer.pass_name)
    units = [status_unit(source, policy, s, known.get(status_device_id(s))) for s in statuses]
    await writer.commit_units(units, objects=len(statuses))


def status_unit(source: str, policy: PolicyRef, status: dict[str, Any], device_type: str | None) -> Unit:
    """A device status read with its policy and the `_type` of its device (None: not in the mirror)."""
    unit_id = f"{policy.kind}|{policy.id}|{status.get('id')}"
    return unit(source, unit_id, status, [*policy, device_type], lambda: map_status(policy, status, device_type))


# -- managed applications ------------------------------------------------------------------------


def _report_request(app_id: str, skip: int) -> BatchRequest:
    """One page of an app's DeviceInstallStatusByApp report. Parameters that are not used are left out,
    as Microsoft's SDKs leave out unset ones."""
    body = {
        "filter": f"(ApplicationId eq '{app_id}')",
        "select": list(REPORT_COLUMNS),
        "top": REPORT_PAGE,
        "skip": skip,
    }
    return BatchRequest("POST", INSTALL_REPORT_URL, body=body)


def _report_page(answer: BatchResponse) -> dict[str, Any]:
    """The decoded report (a stream in `$batch`), with its rows checked: invalidResponse otherwise."""
    report = answer.stream_json()
    try:
        rows = report_rows(report)
    except ReportShapeError as exc:
        raise answer.invalid(f"a stream that is not a report table: {exc}") from None
    return {**report, "rows": rows}


def _next_report_page(request: BatchRequest, page: dict[str, Any]) -> BatchRequest | None:
    """The reports API pages by `skip`. `TotalRowCount` says when the rows run out; without it (the
    documentation does not promise it) a full page means there may be more."""
    body = request.body if isinstance(request.body, dict) else {}
    got = len(page["rows"])
    skip = int(body.get("skip", 0)) + got
    total = page.get("TotalRowCount")
    more = skip < total if isinstance(total, int) and not isinstance(total, bool) else got >= REPORT_PAGE
    if not got or not more:
        return None
    app_id = str(body["filter"]).split("'")[1]
    return _report_request(app_id, skip)


async def run_apps(writer: PassWriter) -> None:
    """Managed apps and their per-device install states (permission DeviceManagementApps.Read.All).

    The app list is read to its end before the reports start, so its page token stays fresh while
    the reports take their time (a tenant has hundreds of apps, not devices).

    No `$select` on mobileApps: the version lives in properties of the derived types (`versionName`,
    `identityVersion`, ...), which a `$select` on the base collection cannot name.
    """
    context = writer.context
    client, tenant = context.client, context.tenant.id
    batched: Batched[dict[str, Any]] = Batched(client, tenant, _next_report_page, decode=_report_page)
    assigned: list[dict[str, Any]] = []
    async for page in client.pages(tenant, MOBILE_APPS_PATH):
        await writer.commit([map_managed_app(app) for app in page], objects=len(page))
        # An app assigned to no group is installed by no one: its report would be empty.
        assigned += [{"id": app["id"], **_versions(app)} for app in page if app.get("isAssigned") is not False]
    async for app, report in batched.pages((app, _report_request(app["id"], 0)) for app in assigned):
        rows = report["rows"]
        known = await device_types(context.store, (str(row.get("DeviceId")) for row in rows), writer.device_types)
        units = [_install_unit(app, row, known.get(str(row.get("DeviceId")))) for row in rows]
        await writer.commit_units(units, objects=len(rows))


def _install_unit(app: dict[str, Any], row: dict[str, Any], device_type: str | None) -> Unit:
    """An install-report row read with its app (id, version) and the `_type` of its device."""

    def mapping() -> list[Op]:
        upsert = map_install_row(app, row, device_type)
        return [] if upsert is None else [upsert]

    return unit(_APPS, f"{app['id']}|{row.get('DeviceId')}", row, [app, device_type], mapping)


def _versions(app: dict[str, Any]) -> dict[str, Any]:
    """What an install row needs of its app besides the id (the app's version, `app_version`)."""
    return {"version": app_version(app)}


# -- detected applications -----------------------------------------------------------------------


async def run_detected(writer: PassWriter) -> None:
    """Detected apps and the devices they are on (permission DeviceManagementManagedDevices.Read.All).

    `GET /detectedApps/{id}/managedDevices` per app (batched) instead of the public integration's
    `GET /managedDevices/{id}?$expand=detectedApps` per device: a tenant has far fewer distinct
    detected apps than devices. The list of detected apps is read to its end before the per-app
    lists start (its page token stays fresh; memory grows with distinct apps, not devices), and the
    app entities are written at the end (one per name, `DetectedAppCatalog`).
    """
    context = writer.context
    client, tenant = context.client, context.tenant.id
    catalog = DetectedAppCatalog()
    batched: Batched[dict[str, Any]] = Batched(client, tenant, next_link(client, "v1.0"))
    params = {"$select": ",".join(DETECTED_APP_SELECT)}
    wanted: list[dict[str, Any]] = []
    async for page in client.pages(tenant, "/v1.0/deviceManagement/detectedApps", params=params):
        for app in page:
            catalog.add(app)
        wanted += [
            {name: app.get(name) for name in ("id", "displayName", "version")}
            for app in page
            if app.get("deviceCount") != 0
        ]
    first = (
        (app, BatchRequest("GET", f"/deviceManagement/detectedApps/{app['id']}/managedDevices?$select=id"))
        for app in wanted
    )
    await writer.start_pages()
    async for app, listed in batched.pages(first):
        devices = [str(d["id"]) for d in listed["value"]]
        known = await device_types(context.store, devices, writer.device_types)
        read_with = orjson.dumps(app, option=orjson.OPT_SORT_KEYS)
        parts = [_detected_part(app, read_with, group, known) for group in device_groups(devices)]
        await writer.commit_page(parts, objects=len(devices))
    await writer.finish_pages()
    entities = list(catalog.entities())
    for start in range(0, len(entities), 1000):
        await writer.commit(entities[start : start + 1000], objects=0)


# The parts of a detected application's page of devices, each with a page record: a device retired,
# enrolled or retyped changes one part, not the page (`monitor.sources.intune_units`, "Page records").
DETECTED_PAGE_PARTS = 16


def device_groups(devices: list[str]) -> list[list[str]]:
    """`devices` in `DETECTED_PAGE_PARTS` groups (the non-empty ones), each device's by its id alone,
    so a device that comes or goes changes only its own group."""
    groups: list[list[str]] = [[] for _ in range(DETECTED_PAGE_PARTS)]
    for device in devices:
        groups[zlib.crc32(device.encode()) % DETECTED_PAGE_PARTS].append(device)
    return [group for group in groups if group]


def _detected_part(app: dict[str, Any], app_json: bytes, devices: list[str], known: dict[str, str | None]) -> PagePart:
    """A part of a page of an application's devices; its units (built only when it has no record): one
    per device in the mirror. Its content is constant within a sweep (the application as the list
    of detected apps gave it, the device ids, their `_type`s read once per sweep), which is what
    lets a page record stand for its units (`monitor.sources.intune_units`, "Page records")."""
    kinds = [known.get(device) for device in devices]

    def build() -> list[Unit]:
        return [
            _detected_unit(app, app_json, device, kind) for device, kind in zip(devices, kinds, strict=True) if kind
        ]

    digest = page_digest(_DETECTED, app_json + b"\0" + orjson.dumps([devices, kinds]))
    return PagePart(digest, build, len(devices))


def _detected_unit(app: dict[str, Any], app_json: bytes, device_id: str, device_type: str) -> Unit:
    """A device listed under a detected application (`app_json`: its canonical JSON), read with the
    application and the device's `_type`: a unit per device, so one installation costs one unit."""
    mapping = lambda: [map_installed(app, device_id, device_type)]  # noqa: E731
    content = b"\0".join((app_json, device_id.encode(), device_type.encode()))
    return unit_of(_DETECTED, f"{app['id']}|{device_id}", content, mapping)


_DEVICES, _APPS, _DETECTED = seen_source("devices"), seen_source("apps"), seen_source("detected")

PASSES: tuple[IntunePass, ...] = (
    IntunePass("devices", MANAGED_DEVICES, run_devices, required=True),
    IntunePass("compliance", CONFIGURATION, _policy_pass("compliance")),
    IntunePass("configurations", CONFIGURATION, _policy_pass("configuration")),
    IntunePass("apps", APPS, run_apps),
    IntunePass("detected", MANAGED_DEVICES, run_detected),
)

# -- ownership: which pass may delete an object by absence -----------------------------------------

# The families that hold objects committed without unit records (policies, managed and detected
# application entities): few, and always checked for absence.
UNRECORDED_FAMILIES: tuple[tuple[Kind, str], ...] = (("entity", POLICY_FAMILY), ("entity", APPLICATION_FAMILY))

# Every family an Intune pass writes, in the order the deletion phase walks them.
FAMILIES: tuple[tuple[Kind, str], ...] = (
    ("relationship", DEVICE_FAMILY),
    ("relationship", FINDING_FAMILY),
    ("entity", FINDING_FAMILY),
    ("entity", DEVICE_FAMILY),
    ("entity", POLICY_FAMILY),
    ("entity", APPLICATION_FAMILY),
)


# The passes that write each family: an object is seen only by the pass that owns it (`make_ownership`),
# so the scan for absence asks only their seen sets.
FAMILY_OWNERS: dict[tuple[Kind, str], tuple[str, ...]] = {
    ("relationship", DEVICE_FAMILY): ("devices", "compliance", "configurations", "apps", "detected"),
    ("relationship", FINDING_FAMILY): ("compliance", "configurations"),
    ("entity", FINDING_FAMILY): ("compliance", "configurations"),
    ("entity", DEVICE_FAMILY): ("devices",),
    ("entity", POLICY_FAMILY): ("compliance", "configurations"),
    ("entity", APPLICATION_FAMILY): ("apps", "detected"),
}


def _device_relationship_owner(key: str) -> str | None:
    """The pass of a relationship anchored on a device, from its key (docs/jupiterone.md 2.1 formats):
    `<device>|<app>` ASSIGNED app; `<from>|manages|`, `|has|`, `|uses|` the device pass's;
    `<agent>|assigned|<policy>`; `<statusId>|<agent>|<configuration>`; `<device>|installed|...`."""
    parts = key.split("|", 2)
    if len(parts) == 2:
        return "apps"
    verb = parts[1]
    if verb in ("manages", "has", "uses"):
        return "devices"
    if verb == "assigned":
        return "compliance"
    if verb == "installed":
        return "detected"
    return "configurations" if verb.startswith(AGENT_KEY_PREFIX) else None


def make_ownership(compliance: frozenset[str], configurations: frozenset[str]) -> Ownership:
    """Who owns what, by key; `compliance` / `configurations` are the policy ids of each kind.

    Findings of both kinds share their `_type`s and scopes: a finding (and its IDENTIFIED and HAS)
    belongs to the pass whose policy its key names (`<account>_<policy>_<device>`); a finding whose
    policy the mirror no longer has is stale and goes with the compliance pass.
    """

    def owner(kind: Kind, family: str, key: str) -> str | None:
        if family == DEVICE_FAMILY:
            return "devices" if kind == "entity" else _device_relationship_owner(key)
        if family == APPLICATION_FAMILY:
            return "detected" if key.startswith(DETECTED_KEY_PREFIX) else "apps"
        if family == POLICY_FAMILY:
            return "compliance" if key in compliance else "configurations" if key in configurations else None
        if family == FINDING_FAMILY:
            finding = key if kind == "entity" else key.rsplit("|", maxsplit=1)[-1]
            parts = finding.split("_")
            policy = parts[-2] if len(parts) >= 3 else ""
            return "configurations" if policy in configurations else "compliance"
        return None

    return owner


async def ownership(writer: PassWriter) -> Ownership:
    """The ownership of the mirror as it is now (reads the policy entities: a few hundred)."""
    store = writer.context.store
    kinds: dict[str, set[str]] = {COMPLIANCE_POLICY_TYPE: set(), CONFIGURATION_TYPE: set()}
    for scope in await store.known_scopes("entity", POLICY_FAMILY):
        for key, obj in (await store.scope_objects(scope)).items():
            kinds.get(obj["_type"], set()).add(key)
    return make_ownership(frozenset(kinds[COMPLIANCE_POLICY_TYPE]), frozenset(kinds[CONFIGURATION_TYPE]))
