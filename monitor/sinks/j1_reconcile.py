"""The reconciliation: read back what JupiterOne holds of the tenant, compare it with the mirror,
re-publish only the scopes that differ, remove what must go, and report the drift.

This turns what the publisher relies on into something measured in production: if JupiterOne ever
keeps a relationship we removed, lacks an entity we sent, or holds a property we did not send, the
next reconciliation finds it, says so (per tenant and `_type`, in `monitor status`, `/status` and
`monitor_j1_drift_objects`), and repairs it with the same DIFF jobs as every other publication.

How it reads (J1QL through the GraphQL `queryV1` resolver, `monitor.sinks.j1_client.query`; every
query paged until its cursor is null):

1. The inventory: which JupiterOne scopes under `<prefix>/<tenant>/` hold entities
   (`FIND UNIQUE * WITH _scope ^= '<prefix>' AS e RETURN e._scope`) or relationships
   (`... AS a THAT RELATES TO AS r * WHERE r._scope ^= '<prefix>' RETURN r._scope`); deferred
   answers, as JupiterOne recommends for queries that may run long.
2. Per upload scope that the mirror or the inventory knows, and that is not dirty (a dirty scope
   is about to be published anyway): its entities (`FIND * WITH _scope = '<scope>'`) and its
   relationships with the entities at their ends (`FIND * WITH _scope = '<scope>' AS a THAT RELATES
   TO AS r * AS b WHERE r._scope = '<scope>' RETURN r.*, a._key, a._scope, b._key, b._scope`; every
   relationship of ours has its anchor end in its own scope). A scope the mirror holds objects for
   and the inventory does not list is all missing, without a query.
3. `monitor.sinks.j1_compare` against what the publisher would upload now (`build_payload`).

Repair (not with `check`): a differing upload scope is marked dirty, and every dirty scope is
published (a DIFF: what is missing is sent, what is stale is deleted); a JupiterOne scope under the
tenant's prefix that is no upload scope of the current layout is emptied by an empty DIFF job. A
scope published by the worker while it was being read may show as drift once and is then
re-published, which is harmless.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from monitor.keys import TenantKeys
from monitor.metrics import metric
from monitor.model.types import JsonObject
from monitor.redis_conn import Redis
from monitor.scopes import UploadScope
from monitor.settings import TenantConfig
from monitor.sinks.j1_client import J1Error, JupiterOneClient
from monitor.sinks.j1_compare import Difference, compare, expected, held_entities, held_relationships, tally
from monitor.sinks.j1_payload import Payload, tenant_prefix
from monitor.sinks.j1_state import PublishResult, PublishState, text
from monitor.store import TenantStore

log = logging.getLogger(__name__)

_EXAMPLES = 20


class Publisher(Protocol):
    """What a reconciliation uses of `monitor.sinks.jupiterone.Publisher`, which runs it
    (`Publisher.reconcile`): this module does not import the publisher back (docs/architecture.md,
    "Layers")."""

    @property
    def client(self) -> JupiterOneClient: ...

    @property
    def redis(self) -> Redis: ...

    @property
    def prefix(self) -> str: ...

    @property
    def concurrency(self) -> int: ...

    def clock(self) -> float: ...

    def state(self, tenant_id: str) -> PublishState: ...

    async def payload(self, tenant: TenantConfig, scope: UploadScope) -> Payload: ...

    async def remove_scope(self, tenant_id: str, j1_scope: str) -> JsonObject: ...

    async def publish_pending(self, tenant: TenantConfig, *, debounce: float = 0.0) -> PublishResult: ...


@dataclass(slots=True)
class ReconcileReport:
    """What one reconciliation found and did, and what reading JupiterOne back cost."""

    tenant: str
    check: bool
    started_at: float
    finished_at: float = 0.0
    scopes_compared: int = 0
    scopes_pending: int = 0
    differing: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    drift: dict[str, dict[str, int]] = field(default_factory=dict)
    examples: list[dict[str, str]] = field(default_factory=list)
    requests: int = 0
    queries: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    repair: PublishResult | None = None
    error: str | None = None

    @property
    def drifted(self) -> bool:
        return bool(self.differing)

    def as_dict(self) -> JsonObject:
        return {
            "tenant": self.tenant,
            "check": self.check,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "scopes_compared": self.scopes_compared,
            "scopes_pending": self.scopes_pending,
            "scopes_differing": len(self.differing),
            "differing": self.differing[:_EXAMPLES],
            "removed": self.removed,
            "drift": self.drift,
            "examples": self.examples,
            "requests": self.requests,
            "queries": self.queries,
            "bytes_sent": self.bytes_sent,
            "bytes_received": self.bytes_received,
            "repair": None if self.repair is None else self.repair.summary(self.tenant),
            "error": self.error,
        }

    def summary(self) -> str:
        head = (
            f"jupiterone {self.tenant}: reconcile{' --check' if self.check else ''}: "
            f"{self.scopes_compared:,} scopes compared in {self.requests:,} requests "
            f"({self.bytes_received:,} bytes read), {self.scopes_pending:,} dirty scopes left to the publisher"
        )
        if self.error:
            return f"{head}; FAILED: {self.error}"
        if not self.drift:
            return f"{head}; no drift{self._repaired() if self.repair and self.repair.jobs else ''}"
        kinds = "; ".join(
            f"{type_}: {', '.join(f'{n} {kind}' for kind, n in sorted(counts.items()))}"
            for type_, counts in sorted(self.drift.items())
        )
        return f"{head}; DRIFT in {len(self.differing)} scopes: {kinds}{self._repaired()}"

    def _repaired(self) -> str:
        return "" if self.repair is None else f"; published: {self.repair.summary(self.tenant)}"


def _quoted(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


async def _inventory(client: JupiterOneClient, prefix: str) -> set[str]:
    """The JupiterOne scopes under `prefix` that hold entities or relationships."""
    found: set[str] = set()
    queries = (
        f"FIND UNIQUE * WITH _scope ^= {_quoted(prefix)} AS e RETURN e._scope",
        f"FIND UNIQUE * WITH _scope ^= {_quoted(prefix)} AS a THAT RELATES TO AS r * "
        f"WHERE r._scope ^= {_quoted(prefix)} RETURN r._scope",
    )
    for j1ql in queries:
        async for page in client.query(j1ql, deferred=True):
            for row in page.data or []:
                for value in row.values():
                    if isinstance(value, str) and value.startswith(prefix):
                        found.add(value)
    return found


async def _read_scope(client: JupiterOneClient, j1_scope: str) -> dict[Any, Any]:
    """What JupiterOne holds in one scope, in the compared form."""
    held: dict[Any, Any] = {}
    async for page in client.query(f"FIND * WITH _scope = {_quoted(j1_scope)}"):
        held.update(held_entities(page.data or []))
    relationships = (
        f"FIND * WITH _scope = {_quoted(j1_scope)} AS a THAT RELATES TO AS r * AS b "
        f"WHERE r._scope = {_quoted(j1_scope)} RETURN r.*, a._key, a._scope, b._key, b._scope"
    )
    async for page in client.query(relationships):
        held.update(held_relationships(page.data or [], j1_scope))
    return held


class _Reconciliation:
    """One tenant's reconciliation (see the module docstring)."""

    def __init__(self, publisher: Publisher, tenant: TenantConfig, report: ReconcileReport) -> None:
        self.publisher = publisher
        self.tenant = tenant
        self.report = report
        self.client = publisher.client
        self.store = TenantStore(publisher.redis, tenant.id)
        self.prefix = tenant_prefix(publisher.prefix, tenant.id)
        self.differences: list[Difference] = []
        self.to_mark: list[UploadScope] = []
        self.to_empty: list[str] = []

    async def run(self) -> None:
        inventory = await _inventory(self.client, self.prefix)
        dirty = {text(k) for k in await self.publisher.redis.hkeys(self.store.keys.dirty)}
        mirrored = {scope.upload for scope in await self.store.known_scopes()}
        names: dict[str, UploadScope | None] = {f"{self.prefix}{scope}": scope for scope in mirrored}
        for j1_scope in inventory - names.keys():
            names[j1_scope] = _layout_scope(j1_scope, self.prefix)
        gate = asyncio.Semaphore(self.publisher.concurrency)

        async def one(j1_scope: str, scope: UploadScope | None) -> None:
            async with gate:
                await self._scope(j1_scope, scope, inventory, dirty)

        try:
            async with asyncio.TaskGroup() as group:
                for j1_scope, scope in sorted(names.items()):
                    group.create_task(one(j1_scope, scope))
        except ExceptionGroup as failed:  # the first failure (JupiterOne, Redis) cancelled the rest
            raise failed.exceptions[0] from failed
        self.report.drift = tally(self.differences)
        self.report.examples = [
            {"kind": d.kind, "key": d.key, "type": d.type, "drift": d.drift} for d in self.differences[:_EXAMPLES]
        ]
        self.report.differing.sort()

    async def _scope(self, j1_scope: str, scope: UploadScope | None, inventory: set[str], dirty: set[str]) -> None:
        if scope is not None and {str(scope.entities), str(scope.relationships)} & dirty:
            self.report.scopes_pending += 1
            return
        wanted = {}
        if scope is not None:
            wanted = expected(await self.publisher.payload(self.tenant, scope))
        if j1_scope not in inventory and not wanted:
            return
        held = await _read_scope(self.client, j1_scope) if j1_scope in inventory else {}
        self.report.scopes_compared += 1
        found = compare(wanted, held)
        if not found:
            return
        self.differences.extend(found)
        self.report.differing.append(j1_scope)
        if scope is not None:
            self.to_mark.append(scope)
        else:
            self.to_empty.append(j1_scope)

    async def repair(self) -> None:
        """Mark the differing upload scopes dirty, empty the scopes outside the layout, and publish
        every dirty scope (those just marked and those that were waiting)."""
        keys = self.store.keys
        if self.to_mark:
            pipe: Any = self.publisher.redis.pipeline(transaction=False)
            for scope in self.to_mark:
                pipe.hincrby(keys.dirty, str(scope.entities), 1)
                pipe.hincrby(keys.dirty, str(scope.relationships), 1)
            await pipe.execute()
        for j1_scope in sorted(self.to_empty):
            await self.publisher.remove_scope(self.tenant.id, j1_scope)
            self.report.removed.append(j1_scope)
        self.report.repair = await self.publisher.publish_pending(self.tenant)


def _layout_scope(j1_scope: str, prefix: str) -> UploadScope | None:
    """The upload scope a JupiterOne scope of the tenant names, or None if it is none of the layout."""
    try:
        return UploadScope.parse(j1_scope.removeprefix(prefix))
    except ValueError:
        return None


async def reconcile_tenant(publisher: Publisher, tenant: TenantConfig, *, check: bool) -> ReconcileReport:
    """Reconcile one tenant; with `check`, only read and report (nothing is published or marked)."""
    report = ReconcileReport(tenant.id, check, publisher.clock())
    before = publisher.client.stats.snapshot()
    started = time.monotonic()
    work = _Reconciliation(publisher, tenant, report)
    try:
        await work.run()
        if not check:
            await work.repair()
    except J1Error as failed:
        report.error = str(failed)
        log.warning("jupiterone %s: reconcile failed: %s", tenant.id, report.error)
    after = publisher.client.stats.snapshot()
    report.requests = int(after["requests"] - before["requests"])
    report.queries = int(after["queries"] - before["queries"])
    report.bytes_sent = int(after["bytes_sent"] - before["bytes_sent"])
    report.bytes_received = int(after["bytes_received"] - before["bytes_received"])
    report.finished_at = publisher.clock()
    log.info("%s (%.1fs)", report.summary(), time.monotonic() - started)
    await _record(publisher, report)
    return report


async def _record(publisher: Publisher, report: ReconcileReport) -> None:
    series = {
        metric("monitor_j1_drift_objects", type=type_, drift=drift): count
        for type_, counts in report.drift.items()
        for drift, count in counts.items()
    }
    series["monitor_j1_drift_scopes"] = len(report.differing)
    await publisher.state(report.tenant).record_reconcile(report.as_dict(), series)
    result = "failed" if report.error else ("drift" if report.drifted else "clean")
    mode = "check" if report.check else "repair"
    name = metric("monitor_j1_reconciles_total", mode=mode, result=result)
    await publisher.redis.hincrby(TenantKeys(report.tenant).metrics, name, 1)
