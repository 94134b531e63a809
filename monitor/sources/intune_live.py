"""The incremental Intune pass: changes within minutes between the hourly sweeps.

Graph has neither delta queries nor change notifications for Intune (docs/graph.md 9), so the sweep
(`monitor.sources.intune`) reads everything every `polling_interval`. Between sweeps, every
`MONITOR_INTUNE_INCREMENTAL_INTERVAL` (5 minutes; 0: off), this pass re-reads what Graph says changed
(docs/graph.md 9.1):

1. **Devices that synced**: `GET /beta/deviceManagement/managedDevices?$filter=lastSyncDateTime gt <mark>`
   (DeviceManagementManagedDevices.Read.All). The v1.0 metadata says of `lastSyncDateTime`: "Supports
   $filter operator 'lt' and 'gt'"; the List managedDevices page
   (https://learn.microsoft.com/en-us/graph/api/intune-devices-manageddevice-list) documents no query
   options. A device reports its changes (its name, compliance, ...) when it syncs.
2. **Objects named by new audit events**: `GET /v1.0/deviceManagement/auditEvents?$filter=activityDateTime
   gt <mark>` (DeviceManagementApps.Read.All, https://learn.microsoft.com/en-us/graph/api/intune-auditing-auditevent-list),
   paged and bounded (`MAX_AUDIT_PAGES`). Each event's `resources` (auditResource: `resourceId`,
   `auditResourceType`) name what an admin changed: a device (renamed, ...) is re-read, a compliance
   policy or configuration (its assignment changed, ...) is re-read with its device statuses.

What the documentation leaves open, and how the pass is right under every reading:

- Whether the `lastSyncDateTime` filter is exact, how late a sync or an audit event shows, and whether
  Graph's clock agrees with ours: each mark is the time the pass *started* (our clock), and the next
  pass reads from `OVERLAP` (15 minutes) before it. Reading an object twice
  costs a call, never a record: what did not change diffs to nothing.
- Whether auditEvents honours `$filter` (not documented): the events are also checked here against
  the mark; a 400 to the filter turns the audit read off with the reason in the status (the devices
  still run). In what order Graph lists events is not documented either: when the bound is reached
  before the end, the objects of the events read are re-read, the mark still moves, and the status
  says the rest is left to the next sweep.
- What `auditResourceType` says for each object is not documented: a `resourceId` is recognised by what
  the mirror holds under it (a device, a compliance policy or configuration), the type only for an
  object the mirror does not hold yet.

Rules (docs/architecture.md, "Rules that keep it correct"): objects are mapped and committed by the
sweep's own code (`PassWriter.commit_rereads`), so only real changes emit records; this pass never
deletes (a retired device, a status gone, stay until a complete sweep); it runs under the sweep's
lease and does not wait for it (a sweep running makes it skip: the sweep reads everything anyway);
and each mark is stored only after everything read up to it is committed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from monitor.graph.client import BatchRequest, BatchResponse, GraphError
from monitor.metrics import metric, tenant_increment
from monitor.model.intune import COMPLIANCE_POLICY_TYPE, CONFIGURATION_TYPE, POLICY_FAMILY
from monitor.model.intune_devices import MANAGED_DEVICE_SELECT, device_user_ids
from monitor.model.intune_policies import (
    POLICY_SELECT,
    STATUS_SELECT,
    PolicyKind,
    map_policy,
    policy_ref,
    status_device_id,
)
from monitor.permissions import NEEDED_FOR
from monitor.sources.base import Progress, RecordListener, RoundResult, SourceContext
from monitor.sources.intune import not_applicable
from monitor.sources.intune_mirror import device_types, known_users
from monitor.sources.intune_passes import (
    APPS,
    CONFIGURATION,
    MANAGED_DEVICES,
    MANAGED_DEVICES_PATH,
    device_unit,
    status_unit,
)
from monitor.sources.intune_sweep import Batched, PassWriter, next_link, seen_source
from monitor.store import iso_ms

log = logging.getLogger(__name__)

SOURCE = "intune_live"
AUDIT_PATH = "/v1.0/deviceManagement/auditEvents"
# At most this many pages of audit events per pass (Graph's page size is not documented): a burst of
# admin activity costs a bounded pass, and the sweep reads the rest.
MAX_AUDIT_PAGES = 20
# Each pass reads from this long before its mark: how late a sync or an audit event shows in Graph is
# not documented, and our clock and Graph's need not agree.
OVERLAP = 900.0
_POLICY_PATHS: dict[PolicyKind, str] = {
    "compliance": "/deviceManagement/deviceCompliancePolicies",
    "configuration": "/deviceManagement/deviceConfigurations",
}
_PASS_OF: dict[PolicyKind, str] = {"compliance": "compliance", "configuration": "configurations"}


@dataclass(slots=True)
class LiveReport:
    """What one incremental pass did, for the status and the metric."""

    devices: int = 0  # devices re-read
    policies: int = 0  # policies re-read (with their device statuses)
    events: int = 0  # audit events read
    off: dict[str, str] = field(default_factory=dict)  # stream -> why it did not run
    truncated: str = ""


@dataclass(slots=True)
class Named:
    """What new audit events name: device ids and policy ids by kind."""

    devices: set[str] = field(default_factory=set)
    policies: dict[PolicyKind, set[str]] = field(default_factory=lambda: {"compliance": set(), "configuration": set()})


async def run_incremental(
    context: SourceContext, *, on_records: RecordListener | None = None, progress: Progress | None = None
) -> RoundResult:
    """One incremental pass (called by `run_source` under the sweep's lease; it shows no progress).
    Raises GraphError when a stream failed otherwise than by a missing permission or Intune, after
    the other stream ran; the failed stream's mark stays, so the next pass reads its span again."""
    result = RoundResult(context.tenant.id, SOURCE, sweep=True)
    store = context.store
    started = context.clock()
    stored = await store.redis.hgetall(store.keys.intune_incremental_mark)
    marks = {_text(k): _text(v) for k, v in stored.items()}
    overlap = timedelta(seconds=OVERLAP)
    report = LiveReport()
    new_marks: dict[Any, Any] = {}  # stream -> ISO time (redis-py types its mapping loosely)
    errors: list[GraphError] = []
    devices_writer = PassWriter(context, "devices", result, track=False, on_records=on_records)
    read_devices: set[str] = set()
    for stream in ("devices", "audit"):
        since = _since(marks.get(stream), started, overlap)
        try:
            if stream == "devices":
                read_devices = await _synced_devices(devices_writer, since)
                report.devices += len(read_devices)
            else:
                named = await _audited(context, since, report)
                await _reread(context, result, on_records, named, read_devices, report)
        except GraphError as exc:
            reason = _off_reason(stream, exc)
            if reason is None:
                log.error("tenant %s: incremental Intune %s failed: %s", context.tenant.id, stream, exc)
                errors.append(exc)
                report.off[stream] = f"failed: {exc}"
                continue
            report.off[stream] = reason
            await _record_refusal(context, stream, exc)
        new_marks[stream] = iso_ms(started)
    if new_marks:  # everything read up to them is committed
        await store.redis.hset(store.keys.intune_incremental_mark, mapping=new_marks)
    await _record(context, report, errors)
    if errors:
        raise GraphError(f"incremental Intune pass: {errors[0]}", status=errors[0].status)
    return result


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _since(mark: str | None, started: datetime, overlap: timedelta) -> datetime:
    """Where a stream reads from: its mark less the overlap; without a mark (a first pass), the overlap
    before now (what came before is the sweep's)."""
    if mark is None:
        return started - overlap
    return datetime.fromisoformat(mark.replace("Z", "+00:00")) - overlap


def _graph_time(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _off_reason(stream: str, exc: GraphError) -> str | None:
    """Why a stream is off for good (a missing permission, no Intune, a refused filter), or None: a
    failure to retry."""
    permission = MANAGED_DEVICES if stream == "devices" else APPS
    if exc.forbidden:
        return f"missing {permission}: {exc}"
    if not_applicable(exc):
        return f"the tenant has no Intune: {exc}"
    if exc.status == 400:
        what = "lastSyncDateTime" if stream == "devices" else "activityDateTime"
        return f"Graph refused the {what} filter (the full sweep still reads everything): {exc}"
    return None


async def _record_refusal(context: SourceContext, stream: str, exc: GraphError) -> None:
    if exc.forbidden:
        permission = MANAGED_DEVICES if stream == "devices" else APPS
        now = iso_ms(context.clock())
        await context.store.record_permission(permission, False, NEEDED_FOR[permission], str(exc), now)


# -- devices that synced ---------------------------------------------------------------------------


async def _synced_devices(writer: PassWriter, since: datetime) -> set[str]:
    """Re-read the devices whose lastSyncDateTime is after `since`; returns their ids."""
    context = writer.context
    params = {"$select": ",".join(MANAGED_DEVICE_SELECT), "$filter": f"lastSyncDateTime gt {_graph_time(since)}"}
    seen: set[str] = set()
    async for page in context.client.pages(context.tenant.id, MANAGED_DEVICES_PATH, params=params):
        await _commit_devices(writer, page)
        seen.update(str(device.get("id")) for device in page)
    return seen


async def _commit_devices(writer: PassWriter, devices: list[dict[str, Any]]) -> None:
    users = await known_users(writer.context.store, (u for device in devices for u in device_user_ids(device)))
    units = [device_unit(device, users) for device in devices]
    await writer.commit_rereads(units, objects=len(devices))


# -- objects named by audit events ------------------------------------------------------------------


async def _audited(context: SourceContext, since: datetime, report: LiveReport) -> Named:
    """The objects named by audit events after `since` (bounded by `MAX_AUDIT_PAGES`)."""
    named = Named()
    resources: list[dict[str, Any]] = []
    params = {"$filter": f"activityDateTime gt {_graph_time(since)}"}
    pages = 0
    async for page in context.client.pages(context.tenant.id, AUDIT_PATH, params=params):
        pages += 1
        for event in page:
            if _after(event.get("activityDateTime"), since):
                report.events += 1
                resources += [r for r in event.get("resources") or [] if isinstance(r, dict)]
        if pages >= MAX_AUDIT_PAGES:
            report.truncated = f"more than {MAX_AUDIT_PAGES} pages of audit events: the rest is left to the next sweep"
            break
    await _resolve(context, resources, named)
    return named


def _after(value: Any, since: datetime) -> bool:
    """Whether an event's activityDateTime is after `since` (an event without one counts: re-reading
    is harmless)."""
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")) > since
    except ValueError:
        return True


async def _resolve(context: SourceContext, resources: list[dict[str, Any]], named: Named) -> None:
    """Sort the resources' ids into devices and policies: by what the mirror holds under each id, and
    for an id it does not hold, by `auditResourceType`."""
    ids = list(dict.fromkeys(str(r.get("resourceId")) for r in resources if r.get("resourceId")))
    if not ids:
        return
    kinds = await device_types(context.store, ids)
    policies = await _policy_kinds(context)
    hint = {str(r.get("resourceId")): str(r.get("auditResourceType") or r.get("type") or "").lower() for r in resources}
    for resource_id in ids:
        kind = policies.get(resource_id)
        if kinds.get(resource_id) is not None or (kind is None and "manageddevice" in hint[resource_id]):
            named.devices.add(resource_id)
        elif kind is not None:
            named.policies[kind].add(resource_id)
        elif "compliancepolic" in hint[resource_id]:
            named.policies["compliance"].add(resource_id)
        elif "deviceconfiguration" in hint[resource_id]:
            named.policies["configuration"].add(resource_id)


async def _policy_kinds(context: SourceContext) -> dict[str, PolicyKind]:
    """Policy id -> its kind, for the policies in the mirror (a few hundred entities)."""
    by_type: dict[str, PolicyKind] = {COMPLIANCE_POLICY_TYPE: "compliance", CONFIGURATION_TYPE: "configuration"}
    kinds: dict[str, PolicyKind] = {}
    for scope in await context.store.known_scopes("entity", POLICY_FAMILY):
        for key, obj in (await context.store.scope_objects(scope)).items():
            if obj.get("_type") in by_type:
                kinds[key] = by_type[obj["_type"]]
    return kinds


async def _reread(
    context: SourceContext,
    result: RoundResult,
    on_records: RecordListener | None,
    named: Named,
    already: set[str],
    report: LiveReport,
) -> None:
    """Re-read the named devices (not read already by their sync) and policies with their statuses."""
    client, tenant = context.client, context.tenant.id
    devices = sorted(named.devices - already)
    if devices:
        writer = PassWriter(context, "devices", result, track=False, on_records=on_records)
        batched: Batched[str] = Batched(client, tenant, _no_follow, version="beta", decode=_body)
        select = ",".join(MANAGED_DEVICE_SELECT)
        first = ((d, BatchRequest("GET", f"/deviceManagement/managedDevices/{d}?$select={select}")) for d in devices)
        async for _, device in batched.pages(first):
            await _commit_devices(writer, [device])
            report.devices += 1
    for kind, ids in named.policies.items():
        if not ids:
            continue
        try:
            report.policies += await _reread_policies(context, result, on_records, kind, sorted(ids))
        except GraphError as exc:
            if not exc.forbidden:
                raise
            report.off[f"{kind} policies"] = f"missing {CONFIGURATION}: {exc}"
            now = iso_ms(context.clock())
            await context.store.record_permission(CONFIGURATION, False, NEEDED_FOR[CONFIGURATION], str(exc), now)


async def _reread_policies(
    context: SourceContext, result: RoundResult, on_records: RecordListener | None, kind: PolicyKind, ids: list[str]
) -> int:
    """Re-read policies of one kind and their device statuses (a policy gone since is the sweep's)."""
    client, tenant = context.client, context.tenant.id
    path = _POLICY_PATHS[kind]
    writer = PassWriter(context, _PASS_OF[kind], result, track=False, on_records=on_records)
    select = ",".join(POLICY_SELECT)
    found = Batched[str](client, tenant, _no_follow, decode=_body)
    refs = []
    async for _, policy in found.pages((i, BatchRequest("GET", f"{path}/{i}?$select={select}")) for i in ids):
        await writer.commit([map_policy(kind, policy)], objects=1)
        refs.append(policy_ref(kind, policy))
    statuses = ",".join(STATUS_SELECT)
    batched = Batched[Any](client, tenant, next_link(client, "v1.0"))
    first = [(ref, BatchRequest("GET", f"{path}/{ref.id}/deviceStatuses?$select={statuses}")) for ref in refs]
    source = seen_source(writer.pass_name)
    async for policy, page in batched.pages(first):
        listed = page["value"]
        known = await device_types(context.store, (status_device_id(s) for s in listed))
        units = [status_unit(source, policy, s, known.get(status_device_id(s))) for s in listed]
        await writer.commit_rereads(units, objects=len(listed))
    return len(refs)


def _no_follow(_: BatchRequest, __: dict[str, Any]) -> BatchRequest | None:
    return None


def _body(answer: BatchResponse) -> dict[str, Any]:
    """An inner answer that is one object (a GET by id)."""
    body = answer.body
    if not isinstance(body.get("id"), str):
        raise answer.invalid("a JSON object without an id where one object belongs")
    return body


# -- status and metric -------------------------------------------------------------------------------


async def _record(context: SourceContext, report: LiveReport, errors: list[GraphError]) -> None:
    """The pass in `monitor status` (`intune_live`) and `monitor_intune_incremental_total{outcome}`."""
    off = "; ".join(f"{stream}: {why}" for stream, why in report.off.items())
    await context.store.record_status(
        SOURCE,
        {
            "reread": f"{report.devices} device(s), {report.policies} policy(ies), {report.events} audit event(s)",
            "partial": "; ".join(p for p in (off, report.truncated) if p),
            "busy": "",
        },
    )
    outcome = "failed" if errors else "partial" if report.off or report.truncated else "complete"
    counts = {metric("monitor_intune_incremental_total", outcome=outcome): 1}
    if report.devices or report.policies:
        counts[metric("monitor_intune_incremental_objects_total")] = report.devices + report.policies
    await tenant_increment(context.store.redis, context.tenant.id, counts)
