"""The Intune and account sweep: Graph has neither delta queries nor change notifications for Intune
(docs/graph.md 9), so a periodic sweep lists it, diffs it against the mirror, and emits only what changed.

One sweep (`sweep_intune`, run by `run_source(context, "intune")`):

1. Probe the tenant with `GET /v1.0/deviceManagement?$select=intuneAccountId,subscriptionState`
   (docs/graph.md 9; `DeviceManagementServiceConfig.Read.All` or `DeviceManagementConfiguration.Read.All`).
   A 400 "Request not applicable to target tenant." means the tenant has no Intune, and a
   `subscriptionState` other than active or warning means its subscription is not usable: either
   way the sweep is off, says so in the status, and deletes nothing. A 403 on the probe is a
   missing permission, not a missing Intune: it is recorded and the passes still run (each one
   finds out for itself). The public integration read any probe failure as "no Intune" and then
   dropped the data (docs/jupiterone.md 6).
2. Patch the account entity with `intuneAccountId`, `intuneSubscriptionState` and
   `mobileDeviceManagementAuthority` (`GET /organization/{id}?$select=mobileDeviceManagementAuthority`,
   `Organization.Read.All`); the account source owns the entity, so this is a `Patch`.
3. Run the passes (`monitor.sources.intune_passes`): devices first, since the others look up the
   `_type` of the devices they relate to. The others do not depend on one another, and they run
   `PASSES_SIDE_BY_SIDE` at a time so that Graph, Redis and this process work at once. When the
   mirror already holds the estate, most of their pages are only checked (`intune_units`); a first
   sweep writes every object into the device-anchored scopes they share, and its pages of new units
   are committed fresh (`PageWrite.fresh`): each checks that its own objects are absent, not that
   the scopes are unchanged, so passes side by side do not collide. A pass answered 403 is skipped and its permission
   recorded as missing by name; a pass that fails otherwise is recorded, the other passes still
   run, and the sweep ends with the error, so the status shows it. A failed device pass stops the
   sweep: the others relate to its devices. An answer that is not what its call returns (a report
   stream that is not a report, a list page without `value`) fails its pass the same way, as
   "invalid response" in the status and in `monitor_intune_passes_total`.
4. Delete by absence what the *complete* passes own and did not see (`intune_sweep.delete_owed`),
   looking only for the objects owed a check (each complete pass, as it ended, pruned the records of
   its units that went and owed a check of their objects); nothing that a skipped, refused or failed
   pass owns is deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Literal

from monitor.graph.client import INVALID_RESPONSE, GraphError
from monitor.metrics import metric, tenant_increment
from monitor.model.intune import account_enrichment
from monitor.permissions import NEEDED_FOR
from monitor.sources.base import Progress, RecordListener, RoundResult, SourceContext
from monitor.sources.intune_passes import (
    BETA_READS,
    FAMILIES,
    FAMILY_OWNERS,
    PASSES,
    UNRECORDED_FAMILIES,
    IntunePass,
    ownership,
)
from monitor.sources.intune_sweep import (
    SOURCE,
    PassWriter,
    delete_absent,
    delete_owed,
    has_objects,
    prune_pages,
    prune_units,
    seen_source,
)
from monitor.sources.intune_units import ALL_SCOPES, earlier_prefixes
from monitor.store import iso_ms

log = logging.getLogger(__name__)

PROBE_PERMISSION = "DeviceManagementServiceConfig.Read.All"
ORGANIZATION_PERMISSION = "Organization.Read.All"
NOT_APPLICABLE = "Request not applicable to target tenant"
# subscriptionState values under which Intune serves data (docs/graph.md 9 lists the others).
USABLE_STATES = frozenset({"active", "warning"})
FAILED = ("failed", "invalid response")
# Passes after the device pass that run at once on a sweep that checks more than it writes.
PASSES_SIDE_BY_SIDE = 2

PassStatus = Literal["complete", "forbidden", "not applicable", "failed", "invalid response"]


def not_applicable(exc: GraphError) -> bool:
    """Graph's answer for a tenant without Intune (docs/jupiterone.md 1.1, 4.3)."""
    return exc.status == 400 and NOT_APPLICABLE.lower() in str(exc).lower()


@dataclass(slots=True)
class Probe:
    """What `GET /deviceManagement` said: on, off (with why), or unknown (the probe was refused)."""

    state: Literal["on", "off", "unknown"]
    account_id: str | None = None
    subscription_state: str | None = None
    reason: str = ""


@dataclass(slots=True)
class PassOutcome:
    name: str
    permission: str
    status: PassStatus
    detail: str = ""
    objects: int = 0
    http_status: int = 0


@dataclass(slots=True)
class SweepReport:
    probe: Probe
    passes: list[PassOutcome] = field(default_factory=list)

    def partial(self) -> str:
        return "; ".join(f"{o.name}: {o.status} ({o.detail})" for o in self.passes if o.status != "complete")


async def sweep_intune(
    context: SourceContext, *, on_records: RecordListener | None = None, progress: Progress | None = None
) -> RoundResult:
    """One sweep of the tenant's Intune estate and account enrichment; raises GraphError when a pass
    failed (after the other passes ran and the complete ones deleted), so the caller records the
    sweep as failed."""
    result = RoundResult(context.tenant.id, SOURCE, sweep=True)
    stats = context.client.stats
    waits = (stats.paced, stats.throttled, stats.waited)
    probe = await _probe(context)
    await _enrich_account(context, probe, result, on_records)
    if probe.state == "off":
        log.warning("tenant %s: Intune sweep off: %s", context.tenant.id, probe.reason)
        await context.store.record_status(SOURCE, {"skipped": probe.reason, "partial": ""})
        return result
    report = SweepReport(probe)
    # Nothing to delete on a first sweep (an empty mirror): it skips the seen-set bookkeeping.
    track = await has_objects(context, FAMILIES)
    setup = PassSetup(track, {}, on_records, progress)
    async with _pruning(setup):
        for intune_pass in (p for p in PASSES if p.required):
            report.passes.append(await _run_pass(context, intune_pass, result, setup))
        if not any(outcome.status in FAILED for outcome in report.passes):
            others = [p for p in PASSES if not p.required]
            report.passes += await _run_side_by_side(context, others, result, setup, PASSES_SIDE_BY_SIDE)
    await _delete_absent_objects(context, report, result, track, on_records)
    if track:
        for intune_pass in PASSES:
            await context.store.reset_seen(seen_source(intune_pass.name))
    await _record_permissions(context, report)
    await _count_passes(context, report)
    status = {
        "skipped": "",
        "partial": report.partial(),
        "beta": BETA_READS,
        "unchanged": result.skipped,
        "paced": round(stats.paced - waits[0], 3),  # seconds waited for Intune's limits, before sending
        "throttled": stats.throttled - waits[1],  # 429s all the same, and the seconds they cost
        "throttle_wait": round(stats.waited - waits[2], 3),
    }
    await context.store.record_status(SOURCE, status)
    failed = [o for o in report.passes if o.status in FAILED]
    if failed:
        detail = "; ".join(f"{o.name}: {o.detail}" for o in failed)
        raise GraphError(f"Intune sweep incomplete, nothing deleted for {detail}", status=failed[0].http_status)
    return result


async def _probe(context: SourceContext) -> Probe:
    """`GET /v1.0/deviceManagement` (DeviceManagementServiceConfig.Read.All, or
    DeviceManagementConfiguration.Read.All; docs/graph.md 9): is Intune there, and usable?"""
    now = iso_ms(context.clock())
    try:
        response = await context.client.get(
            context.tenant.id, "/v1.0/deviceManagement", params={"$select": "intuneAccountId,subscriptionState"}
        )
    except GraphError as exc:
        if not_applicable(exc):
            return Probe("off", reason="the tenant has no Intune (Graph: Request not applicable to target tenant)")
        if not exc.forbidden:
            raise
        detail = f"{exc} (DeviceManagementConfiguration.Read.All also allows it)"
        await context.store.record_permission(PROBE_PERMISSION, False, NEEDED_FOR[PROBE_PERMISSION], detail, now)
        return Probe("unknown", reason=str(exc))
    await context.store.record_permission(PROBE_PERMISSION, True, NEEDED_FOR[PROBE_PERMISSION], "", now)
    state = str(response.body.get("subscriptionState") or "")
    account_id = response.body.get("intuneAccountId")
    if state not in USABLE_STATES:
        return Probe("off", account_id, state or None, f"the tenant's Intune subscription is {state or 'unknown'}")
    return Probe("on", account_id, state)


async def _mdm_authority(context: SourceContext) -> tuple[bool, str | None]:
    """(known, value) of the organization's `mobileDeviceManagementAuthority`:
    `GET /v1.0/organization/{id}?$select=mobileDeviceManagementAuthority` (Organization.Read.All)."""
    tenant = context.tenant.id
    try:
        response = await context.client.get(
            tenant, f"/v1.0/organization/{tenant}", params={"$select": "mobileDeviceManagementAuthority"}
        )
    except GraphError as exc:
        if not_applicable(exc):
            return True, None
        if not exc.forbidden:
            raise
        now = iso_ms(context.clock())
        needed = NEEDED_FOR[ORGANIZATION_PERMISSION]
        await context.store.record_permission(ORGANIZATION_PERMISSION, False, needed, str(exc), now)
        return False, None
    return True, response.body.get("mobileDeviceManagementAuthority")


async def _enrich_account(
    context: SourceContext, probe: Probe, result: RoundResult, on_records: RecordListener | None
) -> None:
    """Patch the account entity; what could not be read (a refused probe) is left as it was."""
    known, authority = await _mdm_authority(context)
    patch = account_enrichment(
        context.account_key,
        intune_account_id=probe.account_id,
        subscription_state=probe.subscription_state,
        mdm_authority=authority,
    )
    if probe.state == "unknown":
        patch.props.pop("intuneAccountId")
        patch.props.pop("intuneSubscriptionState")
    if not known:
        patch.props.pop("mobileDeviceManagementAuthority")
    if not patch.props:
        return
    writer = PassWriter(context, "account", result, track=False, on_records=on_records)
    await writer.commit([patch])


async def _delete_absent_objects(
    context: SourceContext, report: SweepReport, result: RoundResult, track: bool, on_records: RecordListener | None
) -> None:
    """After the passes (each complete one has pruned the records of its units that went): delete by
    absence what the complete passes own and did not see. Only the objects owed a check are looked for
    (`sweep_owed_refs`: those of a unit that went, or of one that now maps to fewer objects), in the
    scopes where one of them was seen by no pass; every scope is scanned whole when records were
    incomplete (`sweep_scan_owed`), and the families written without unit records
    (`UNRECORDED_FAMILIES`) are. Then the complete passes' records are complete, and when no pass failed
    what was checked is no longer owed."""
    complete = frozenset(o.name for o in report.passes if o.status == "complete")
    if track and complete:
        owed, refs = await context.store.owed_scans(SOURCE), await context.store.owed_refs(SOURCE)
        writer = PassWriter(context, "deletions", result, track=False, on_records=on_records)
        owner_of = await ownership(writer)
        recorded = [each for each in FAMILIES if each not in UNRECORDED_FAMILIES]
        if ALL_SCOPES.encode() in owed:
            await delete_absent(writer, recorded, complete, owner_of, FAMILY_OWNERS)
        else:
            earlier = {int(p) for p in owed} | earlier_prefixes(refs)
            if earlier:
                await delete_absent(writer, recorded, complete, owner_of, FAMILY_OWNERS, earlier)
            await delete_owed(writer, refs, complete, owner_of, FAMILY_OWNERS)
        await delete_absent(writer, UNRECORDED_FAMILIES, complete, owner_of, FAMILY_OWNERS)
        if (owed or refs) and not any(o.status in FAILED for o in report.passes):
            # Checked for every pass that can complete: what a failed pass owns waits for its next try.
            await context.store.scanned(SOURCE, owed, refs)
    for name in sorted(complete):
        await context.store.redis.set(context.store.keys.sweep_units_complete(seen_source(name)), 1)


@dataclass(frozen=True, slots=True)
class PassSetup:
    """What every pass of one sweep shares: whether to track what it sees (not on a first sweep), the
    device `_type`s read so far, the record listener and progress callback, and the prunes of the
    complete passes still running (`_pruning`)."""

    track: bool
    device_types: dict[str, str | None]
    on_records: RecordListener | None
    progress: Progress | None
    prunes: list[asyncio.Future[int]] = field(default_factory=list)


@contextlib.asynccontextmanager
async def _pruning(setup: PassSetup) -> AsyncIterator[None]:
    """Around the passes: on leaving, wait for every prune a complete pass started (raising the first
    error), so deletion by absence finds the scopes they owe; on an error, cancel them. A prune runs in
    Redis while the next pass reads and maps here, instead of holding up that pass."""
    try:
        yield
        await asyncio.gather(*setup.prunes)
    finally:
        for prune in setup.prunes:
            prune.cancel()
        await asyncio.gather(*setup.prunes, return_exceptions=True)


async def _run_side_by_side(
    context: SourceContext, passes: list[IntunePass], result: RoundResult, setup: PassSetup, lanes: int
) -> list[PassOutcome]:
    """Run `passes`, `lanes` at a time, the last first (the detected applications, the largest, then
    runs beside all the others); their outcomes in the order given. An exception other than a pass's
    own failure (a lost lease, Redis gone) stops the others and is raised."""
    gate = asyncio.Semaphore(lanes)

    async def run(intune_pass: IntunePass) -> PassOutcome:
        async with gate:
            return await _run_pass(context, intune_pass, result, setup)

    tasks = {p.name: asyncio.ensure_future(run(p)) for p in reversed(passes)}
    try:
        await asyncio.gather(*tasks.values())
    except BaseException:
        for task in tasks.values():
            task.cancel()
        await asyncio.gather(*tasks.values(), return_exceptions=True)
        raise
    return [tasks[p.name].result() for p in passes]


async def _run_pass(
    context: SourceContext, intune_pass: IntunePass, result: RoundResult, setup: PassSetup
) -> PassOutcome:
    name, permission = intune_pass.name, intune_pass.permission
    if setup.track:
        await context.store.reset_seen(seen_source(name))
    recorded = setup.track and bool(
        await context.store.redis.exists(context.store.keys.sweep_units_complete(seen_source(name)))
    )
    writer = PassWriter(
        context,
        name,
        result,
        track=setup.track,
        on_records=setup.on_records,
        progress=setup.progress,
        recorded=recorded,
        device_types=setup.device_types,
    )
    try:
        try:
            await intune_pass.run(writer)
        finally:  # the page in flight is committed (or fails) before the pass is judged
            await writer.settle()
    except GraphError as exc:
        if exc.forbidden:
            log.warning("tenant %s: Intune %s skipped, nothing deleted: %s", context.tenant.id, name, exc)
            return PassOutcome(name, permission, "forbidden", f"missing {permission}: {exc}", writer.objects)
        if not_applicable(exc):
            return PassOutcome(name, permission, "not applicable", str(exc), writer.objects)
        log.error("tenant %s: Intune %s failed, nothing deleted: %s", context.tenant.id, name, exc)
        status: PassStatus = "invalid response" if exc.code == INVALID_RESPONSE else "failed"
        return PassOutcome(name, permission, status, str(exc), writer.objects, http_status=exc.status)
    if setup.track and not writer.same_units:
        # Started now, and run while the next passes do: the records of its units that went dropped, and
        # their objects owed a check (a pass that saw the units the last one left has none
        # to prune; one whose page records named every unit reads only those of the pages it did not
        # find again). Deletion by absence waits for it (`_pruning`).
        setup.prunes.append(asyncio.ensure_future(_prune(context, writer)))
    return PassOutcome(name, permission, "complete", "", writer.objects)


async def _prune(context: SourceContext, writer: PassWriter) -> int:
    """The prune of a complete pass: of the records named by the page records it did not find, when its
    page records named every unit record (`PassWriter.prunes_named`), else of all its records. After it,
    a pass's page records name every unit record it has."""
    prune = prune_pages if writer.prunes_named else prune_units
    dropped = await prune(context, writer.pass_name, writer.recorded)
    if writer.paged:
        await writer.pages_name_every_unit()
    return dropped


async def _count_passes(context: SourceContext, report: SweepReport) -> None:
    """`monitor_intune_passes_total{intune_pass, outcome}`: an answer that was not what its call returns
    counts as `invalid_response`, apart from other failures."""
    counts = {
        metric("monitor_intune_passes_total", intune_pass=o.name, outcome=o.status.replace(" ", "_")): 1
        for o in report.passes
    }
    await tenant_increment(context.store.redis, context.tenant.id, counts)


async def _record_permissions(context: SourceContext, report: SweepReport) -> None:
    """Each pass permission: missing if any pass needing it was refused, granted if one succeeded."""
    now = iso_ms(context.clock())
    verdicts: dict[str, tuple[bool, str]] = {}
    for outcome in report.passes:
        if outcome.status == "forbidden":
            verdicts[outcome.permission] = (False, outcome.detail)
        elif outcome.status == "complete":
            verdicts.setdefault(outcome.permission, (True, ""))
    for permission, (granted, detail) in verdicts.items():
        await context.store.record_permission(permission, granted, NEEDED_FOR[permission], detail, now)
