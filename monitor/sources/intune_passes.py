"""The five passes of an Intune sweep: what each reads from Graph and which objects it owns.

Every pass lists its resource tenant-wide with `$select` and commits page by page; the only
per-object calls (a policy's device statuses, an app's install report, a detected app's devices)
go through `$batch`, 20 at a time (GRAPH.md 10.4), paced in their Intune bucket (GRAPH.md 10.3).

- devices: `GET /beta/deviceManagement/managedDevices` (DeviceManagementManagedDevices.Read.All);
  owns devices, host agents, agent MANAGES device, user HAS / USES device.
- compliance: `GET /deviceCompliancePolicies`, then `/{id}/deviceStatuses` per policy
  (DeviceManagementConfiguration.Read.All); owns compliance policies, agent ASSIGNED policy, and
  the findings (with IDENTIFIED and HAS) of compliance policies.
- configurations: the same over `/deviceConfigurations`.
- apps: `GET /deviceAppManagement/mobileApps`, then the install report per assigned app
  (DeviceManagementApps.Read.All); owns managed apps and device ASSIGNED app.
- detected: `GET /deviceManagement/detectedApps`, then `/{id}/managedDevices` per app
  (DeviceManagementManagedDevices.Read.All); owns detected apps and device INSTALLED app.

The managed device list is read from beta: `deviceType` (which decides the `_type`), `usersLoggedOn`,
`hardwareInformation` and `managementState` are beta properties (the public integration reads the
same beta list, JUPITERONE.md 3). The install report is the public integration's undocumented beta
`POST reports/getDeviceInstallStatusReport` (JUPITERONE.md 3, 6): Graph has no v1.0 source of
per-device install states. Both beta calls sit in constants here; when beta changes under them the
pass fails with Graph's error in the status, and deletes nothing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from monitor.graph.client import BatchRequest, BatchResponse
from monitor.model.common import relationship_type
from monitor.model.intune import (
    AGENT_TYPE,
    APPLICATION_FAMILY,
    COMPLIANCE_POLICY_TYPE,
    CONFIGURATION_TYPE,
    DETECTED_APP_TYPE,
    DEVICE_FAMILY,
    DEVICE_TYPES,
    FINDING_FAMILY,
    FINDING_TYPE,
    MANAGED_APP_TYPE,
    POLICY_FAMILY,
    USER_TYPE,
)
from monitor.model.intune_apps import (
    DETECTED_APP_SELECT,
    REPORT_COLUMNS,
    DetectedAppCatalog,
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
from monitor.model.types import JsonObject, Kind, Op
from monitor.sources.intune_mirror import device_types, known_users
from monitor.sources.intune_sweep import Batched, Owned, PassWriter, next_link

MANAGED_DEVICES_PATH = "/beta/deviceManagement/managedDevices"
INSTALL_REPORT_URL = "/deviceManagement/reports/getDeviceInstallStatusReport"  # below /beta
REPORT_PAGE = 1000

MANAGED_DEVICES = "DeviceManagementManagedDevices.Read.All"
CONFIGURATION = "DeviceManagementConfiguration.Read.All"
APPS = "DeviceManagementApps.Read.All"


def _types(*names: str) -> Callable[[JsonObject], bool]:
    wanted = frozenset(names)
    return lambda obj: obj.get("_type") in wanted


@dataclass(frozen=True)
class IntunePass:
    """One resource of the sweep: its name, the permission it needs, how it runs, what it owns.

    `owned` is built when the pass deletes (findings need to know which policies are whose).
    `required`: the later passes depend on it (they look up its devices), so when it fails the sweep
    stops there; the later passes would otherwise delete relationships of devices it did not update.
    """

    name: str
    permission: str
    run: Callable[[PassWriter], Awaitable[None]]
    owned: Callable[[PassWriter], Awaitable[tuple[Owned, ...]]]
    families: tuple[tuple[Kind, str], ...]
    required: bool = False


# -- devices -------------------------------------------------------------------------------------

_DEVICE_PASS_RELATIONSHIPS = [relationship_type(AGENT_TYPE, "MANAGES", t) for t in DEVICE_TYPES] + [
    relationship_type(USER_TYPE, verb, t) for t in DEVICE_TYPES for verb in ("HAS", "USES")
]


async def run_devices(writer: PassWriter) -> None:
    """Managed devices and their agents (permission DeviceManagementManagedDevices.Read.All)."""
    context = writer.context
    params = {"$select": ",".join(MANAGED_DEVICE_SELECT)}
    async for page in context.client.pages(context.tenant.id, MANAGED_DEVICES_PATH, params=params):
        users = await known_users(context.store, (u for device in page for u in device_user_ids(device)))
        ops: list[Op] = [op for device in page for op in map_device(device, known_users=users)]
        await writer.commit(ops, objects=len(page))


async def owned_by_devices(_: PassWriter) -> tuple[Owned, ...]:
    return (
        Owned("entity", DEVICE_FAMILY, _types(*DEVICE_TYPES, AGENT_TYPE)),
        Owned("relationship", DEVICE_FAMILY, _types(*_DEVICE_PASS_RELATIONSHIPS)),
    )


# -- compliance policies and device configurations -------------------------------------------------

_POLICY_LISTS: dict[PolicyKind, str] = {
    "compliance": "/deviceManagement/deviceCompliancePolicies",
    "configuration": "/deviceManagement/deviceConfigurations",
}
_POLICY_TYPES: dict[PolicyKind, str] = {"compliance": COMPLIANCE_POLICY_TYPE, "configuration": CONFIGURATION_TYPE}


def _policy_pass(
    kind: PolicyKind,
) -> tuple[Callable[[PassWriter], Awaitable[None]], Callable[[PassWriter], Awaitable[tuple[Owned, ...]]]]:
    list_path = _POLICY_LISTS[kind]

    async def run(writer: PassWriter) -> None:
        """Policies and their device statuses (permission DeviceManagementConfiguration.Read.All)."""
        context = writer.context
        client, tenant = context.client, context.tenant.id
        params = {"$select": ",".join(POLICY_SELECT)}
        batched: Batched[PolicyRef] = Batched(client, tenant, next_link(client, "v1.0"))
        async for page in client.pages(tenant, f"/v1.0{list_path}", params=params):
            await writer.commit([map_policy(kind, policy) for policy in page], objects=len(page))
            select = ",".join(STATUS_SELECT)
            first = [
                (policy_ref(kind, p), BatchRequest("GET", f"{list_path}/{p['id']}/deviceStatuses?$select={select}"))
                for p in page
            ]
            async for policy, answer in batched.pages(first):
                await _commit_statuses(writer, policy, answer.body.get("value") or [])

    async def owned(writer: PassWriter) -> tuple[Owned, ...]:
        mine = await _policy_keys(writer, _POLICY_TYPES[kind])
        others = await _policy_keys(writer, _POLICY_TYPES["configuration" if kind == "compliance" else "compliance"])
        return (
            Owned("entity", POLICY_FAMILY, _types(_POLICY_TYPES[kind])),
            Owned(
                "relationship", DEVICE_FAMILY, _types(relationship_type(AGENT_TYPE, "ASSIGNED", _POLICY_TYPES[kind]))
            ),
            Owned("entity", FINDING_FAMILY, _finding_owner(mine, others)),
            Owned("relationship", FINDING_FAMILY, _finding_owner(mine, others)),
        )

    return run, owned


async def _commit_statuses(writer: PassWriter, policy: PolicyRef, statuses: list[dict[str, Any]]) -> None:
    known = await device_types(writer.context.store, (status_device_id(s) for s in statuses))
    ops: list[Op] = [op for s in statuses for op in map_status(policy, s, known.get(status_device_id(s)))]
    await writer.commit(ops, objects=len(statuses))


async def _policy_keys(writer: PassWriter, policy_type: str) -> frozenset[str]:
    store = writer.context.store
    keys: set[str] = set()
    for scope in await store.known_scopes("entity", POLICY_FAMILY):
        keys.update(key for key, obj in (await store.scope_objects(scope)).items() if obj["_type"] == policy_type)
    return frozenset(keys)


def _finding_owner(mine: frozenset[str], others: frozenset[str]) -> Callable[[JsonObject], bool]:
    """Findings of both kinds share their `_type`s and scopes: a finding (and its IDENTIFIED and HAS)
    belongs to the pass whose policy its key names (`<account>_<policy>_<device>`). A finding whose
    policy the mirror no longer has is stale, and either pass may delete it."""
    relationship_types = {relationship_type(t, "HAS", FINDING_TYPE) for t in DEVICE_TYPES} | {
        relationship_type(COMPLIANCE_POLICY_TYPE, "IDENTIFIED", FINDING_TYPE),
        relationship_type(CONFIGURATION_TYPE, "IDENTIFIED", FINDING_TYPE),
    }

    def owns(obj: JsonObject) -> bool:
        if obj.get("_type") == FINDING_TYPE:
            finding = str(obj["_key"])
        elif obj.get("_type") in relationship_types:
            finding = str(obj["_toEntityKey"])
        else:
            return False
        parts = finding.split("_")
        policy = parts[-2] if len(parts) >= 3 else ""
        return policy in mine or policy not in others

    return owns


# -- managed applications ------------------------------------------------------------------------


def _report_request(app_id: str, skip: int) -> BatchRequest:
    body = {
        "filter": f"(ApplicationId eq '{app_id}')",
        "select": list(REPORT_COLUMNS),
        "top": REPORT_PAGE,
        "skip": skip,
    }
    return BatchRequest("POST", INSTALL_REPORT_URL, body=body)


def _next_report_page(request: BatchRequest, answer: BatchResponse) -> BatchRequest | None:
    """The reports API pages by `skip`; `TotalRowCount` says when the rows run out."""
    body = request.body if isinstance(request.body, dict) else {}
    skip = int(body.get("skip", 0)) + len(answer.body.get("Values") or [])
    total = int(answer.body.get("TotalRowCount") or 0)
    if skip >= total or not answer.body.get("Values"):
        return None
    app_id = str(body["filter"]).split("'")[1]
    return _report_request(app_id, skip)


async def run_apps(writer: PassWriter) -> None:
    """Managed apps and their per-device install states (permission DeviceManagementApps.Read.All).

    No `$select` on mobileApps: the version lives in properties of the derived types (`versionName`,
    `identityVersion`, ...), which a `$select` on the base collection cannot name.
    """
    context = writer.context
    client, tenant = context.client, context.tenant.id
    batched: Batched[dict[str, Any]] = Batched(client, tenant, _next_report_page, version="beta")
    async for page in client.pages(tenant, "/v1.0/deviceAppManagement/mobileApps"):
        await writer.commit([map_managed_app(app) for app in page], objects=len(page))
        # An app assigned to no group is installed by no one: its report would be empty.
        first = [(app, _report_request(app["id"], 0)) for app in page if app.get("isAssigned") is not False]
        async for app, answer in batched.pages(first):
            rows = list(report_rows(answer.body))
            known = await device_types(context.store, (str(row.get("DeviceId")) for row in rows))
            ops: list[Op] = []
            for row in rows:
                upsert = map_install_row(app, row, known.get(str(row.get("DeviceId"))))
                if upsert is not None:
                    ops.append(upsert)
            await writer.commit(ops, objects=len(rows))


async def owned_by_apps(_: PassWriter) -> tuple[Owned, ...]:
    return (
        Owned("entity", APPLICATION_FAMILY, _types(MANAGED_APP_TYPE)),
        Owned(
            "relationship",
            DEVICE_FAMILY,
            _types(*(relationship_type(t, "ASSIGNED", MANAGED_APP_TYPE) for t in DEVICE_TYPES)),
        ),
    )


# -- detected applications -----------------------------------------------------------------------


async def run_detected(writer: PassWriter) -> None:
    """Detected apps and the devices they are on (permission DeviceManagementManagedDevices.Read.All).

    `GET /detectedApps/{id}/managedDevices` per app (batched) instead of the public integration's
    `GET /managedDevices/{id}?$expand=detectedApps` per device: a tenant has far fewer distinct
    detected apps than devices. The app entities are written once the whole list is read (one per
    name, `DetectedAppCatalog`).
    """
    context = writer.context
    client, tenant = context.client, context.tenant.id
    catalog = DetectedAppCatalog()
    batched: Batched[dict[str, Any]] = Batched(client, tenant, next_link(client, "v1.0"))
    params = {"$select": ",".join(DETECTED_APP_SELECT)}
    async for page in client.pages(tenant, "/v1.0/deviceManagement/detectedApps", params=params):
        for app in page:
            catalog.add(app)
        first = [
            (app, BatchRequest("GET", f"/deviceManagement/detectedApps/{app['id']}/managedDevices?$select=id"))
            for app in page
            if app.get("deviceCount") != 0
        ]
        async for app, answer in batched.pages(first):
            devices = [str(d["id"]) for d in answer.body.get("value") or []]
            known = await device_types(context.store, devices)
            ops: list[Op] = [map_installed(app, d, known[d]) for d in devices if d in known]
            await writer.commit(ops, objects=len(devices))
    entities = list(catalog.entities())
    for start in range(0, len(entities), 1000):
        await writer.commit(entities[start : start + 1000], objects=0)


async def owned_by_detected(_: PassWriter) -> tuple[Owned, ...]:
    installed = (relationship_type(t, "INSTALLED", DETECTED_APP_TYPE) for t in DEVICE_TYPES)
    return (
        Owned("entity", APPLICATION_FAMILY, _types(DETECTED_APP_TYPE)),
        Owned("relationship", DEVICE_FAMILY, _types(*installed)),
    )


_run_compliance, _owned_by_compliance = _policy_pass("compliance")
_run_configurations, _owned_by_configurations = _policy_pass("configuration")

PASSES: tuple[IntunePass, ...] = (
    IntunePass(
        "devices",
        MANAGED_DEVICES,
        run_devices,
        owned_by_devices,
        (("entity", DEVICE_FAMILY), ("relationship", DEVICE_FAMILY)),
        required=True,
    ),
    IntunePass(
        "compliance",
        CONFIGURATION,
        _run_compliance,
        _owned_by_compliance,
        (("entity", POLICY_FAMILY), ("relationship", DEVICE_FAMILY), ("entity", FINDING_FAMILY)),
    ),
    IntunePass(
        "configurations",
        CONFIGURATION,
        _run_configurations,
        _owned_by_configurations,
        (("entity", POLICY_FAMILY), ("relationship", DEVICE_FAMILY), ("entity", FINDING_FAMILY)),
    ),
    IntunePass(
        "apps",
        APPS,
        run_apps,
        owned_by_apps,
        (("entity", APPLICATION_FAMILY), ("relationship", DEVICE_FAMILY)),
    ),
    IntunePass(
        "detected",
        MANAGED_DEVICES,
        run_detected,
        owned_by_detected,
        (("entity", APPLICATION_FAMILY), ("relationship", DEVICE_FAMILY)),
    ),
)
