"""The JupiterOne publisher: makes JupiterOne follow the mirror exactly, one small scope at a time.

DESIGN.md, "Emitting to JupiterOne". JupiterOne's sync API deletes single objects only through a
DIFF job that omits them (JUPITERONE.md 9.4-9.5; CREATE_OR_UPDATE no longer works), so the
publisher never sends events: each change marks its scope dirty (`TenantStore.commit` does
`HINCRBY dirty <scope>` in the same transaction as the mirror write), and the publisher uploads
each dirty scope's *complete current state* from the mirror as one job:

- an entity scope as a DIFF job (`source: api`, `scope: <prefix>/<tenant>/<scope id>`, 9.3);
- a relationship scope as a CROSS_SCOPE job of the same naming, each relationship labelled with
  the JupiterOne scope of each end (`_fromEntityScope` / `_toEntityScope`, 9.4 and 10.6), found
  with `end_placements` and `scope_of`.

For each scope: take the (tenant, scope) lease, so publisher processes never upload one scope at
once; snapshot the scope's dirty counter *before* reading the mirror; upload (requests under the
size limit), finalize, poll until FINISHED; then clear the dirty entry only if its counter is still
the snapshot (a Lua compare-and-delete that also checks the lease). So a change arriving while a
scope is in flight keeps it dirty and it is published again; a crash or a JupiterOne outage leaves
it dirty; a repeated upload of the same state changes nothing at JupiterOne (10.5). An empty
scope (everything deleted) is still published: its empty upload deletes the scope's content.

Assumptions kept here and nowhere else (unverified against JupiterOne; the simulated JupiterOne
behaves this way):

- **A CROSS_SCOPE finalize drops the relationships missing from the upload**: JupiterOne
  describes a CROSS_SCOPE job as the single owner of its relationships, and the publisher relies on
  a CROSS_SCOPE job for scope `S` replacing every relationship earlier jobs for `S` uploaded, as a
  DIFF does. If that turns out wrong, relationship deletions must move elsewhere, in this module.
- A relationship is only created if both its ends exist at finalize. So every pass publishes the
  dirty entity scopes first, and publishes relationship scopes only when none of them failed for
  a reason that may pass (otherwise the relationship scopes stay dirty for the next pass).
  Relationships JupiterOne still skips are reported from the job's answer. When an end of one
  lives in an entity scope that is dirty again (a user and its membership committed between the
  entity and the relationship phase of a pass), the relationship scope stays dirty, so the next
  pass publishes that entity first and then the relationship. Otherwise (an end left out as
  invalid) the skip stands until the end changes or the periodic reconciliation (`reconcile`).

Invalid objects (`monitor.sinks.j1_validate`) are left out of their scope's upload and reported
with their key and rule; at JupiterOne that deletes them from the scope (a DIFF omits them). A 4xx
from JupiterOne is not retried blindly: the scope is set aside until its counter moves (a new change
or a reconciliation). 429/5xx are retried by the client, and a scope that still fails stays dirty.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from redis.exceptions import RedisError

from monitor.errors import ConfigError
from monitor.keys import CLEAR_DIRTY_IF_UNCHANGED, TenantKeys
from monitor.leases import Lease, LeaseBusy
from monitor.model.registry import end_placements
from monitor.model.types import JsonObject, Placement
from monitor.redis_conn import REDIS_UNAVAILABLE, Redis
from monitor.retry import RetryPolicy
from monitor.scopes import ScopeId, scope_of
from monitor.settings import Settings, TenantConfig
from monitor.sinks.j1_client import (
    J1Error,
    J1Refused,
    J1Unavailable,
    JupiterOneClient,
    SyncMode,
    UploadKind,
)
from monitor.sinks.j1_validate import Invalid, check_entity, check_relationship, too_large
from monitor.store import TenantStore

__all__ = [
    "JupiterOneClient",
    "Payload",
    "PublishResult",
    "Publisher",
    "ScopeFailure",
    "build_payload",
    "build_publisher",
    "j1_scope_name",
    "publish_pending",
    "publishing_status",
    "reconcile",
    "render_publishing",
    "run_publisher",
]

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]
Clock = Callable[[], float]
Raw = bytes | str  # a value as redis-py returns it

ACCOUNT_NAME_TAG = "tag.AccountName"
# Room in a request body for `{"entities":[` and `]}` around one object (see `batch_bodies`).
_BODY_OVERHEAD = 32
_ERRORS_SHOWN = 10
# How long a cancelled publisher spends aborting its open job before it gives up (shutdown waits).
ABORT_TIMEOUT = 2.0


def j1_scope_name(prefix: str, tenant_id: str, scope: ScopeId) -> str:
    """The JupiterOne `scope` of one of our scopes: `<prefix>/<tenant id>/<scope id>`."""
    return f"{prefix}/{tenant_id}/{scope}"


# -- results -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ScopeFailure:
    """A scope JupiterOne did not confirm; `transient` failures are retried on a later pass."""

    scope: str
    error: str
    code: str = ""
    key: str | None = None
    transient: bool = True


@dataclass(slots=True)
class PublishResult:
    """What one publishing pass did. Requests and bytes are the client's totals over the pass."""

    jobs: int = 0
    requests: int = 0
    bytes_sent: int = 0
    raw_bytes: int = 0
    objects: int = 0
    published: list[str] = field(default_factory=list)
    rejected: list[Invalid] = field(default_factory=list)
    skipped_by_jupiterone: list[Invalid] = field(default_factory=list)
    failures: list[ScopeFailure] = field(default_factory=list)
    # Scopes not uploaded: held by another publisher, already clean, or set aside after a 4xx.
    skipped: int = 0
    # Scopes left dirty without an attempt: relationship scopes whose entity scopes were not all
    # confirmed, and every scope after JupiterOne turned out unavailable in this pass.
    postponed: int = 0
    still_dirty: int = 0

    def summary(self, tenant_id: str) -> str:
        parts = [
            f"jupiterone {tenant_id}: {self.jobs} jobs, {self.objects:,} objects, "
            f"{self.bytes_sent:,} bytes in {self.requests} requests"
        ]
        if self.rejected:
            parts.append(f"{len(self.rejected)} invalid objects left out")
        if self.failures:
            parts.append(
                f"{len(self.failures)} scopes failed (first: {self.failures[0].scope}: {self.failures[0].error})"
            )
        if self.postponed:
            parts.append(f"{self.postponed} relationship scopes postponed")
        if self.still_dirty:
            parts.append(f"{self.still_dirty} scopes still dirty")
        return "; ".join(parts)


@dataclass(frozen=True, slots=True)
class Payload:
    """One scope's upload: the job's mode and scope name, and the serialized objects that passed."""

    mode: SyncMode
    j1_scope: str
    kind: UploadKind
    encoded: list[bytes]
    rejected: list[Invalid]


# -- building a scope's upload (pure) ------------------------------------------------------------


def _entity_upload(entity: JsonObject, tenant: TenantConfig) -> tuple[JsonObject, list[Invalid]]:
    if tenant.tag_account_name and tenant.account_name:
        entity = {**entity, ACCOUNT_NAME_TAG: tenant.account_name}
    return entity, check_entity(entity)


class _EndScopes:
    """The JupiterOne scope name of a relationship end, memoised for one payload (a group's members
    share their `from` end, and a scope's relationships often share ends)."""

    def __init__(self, prefix: str, tenant_id: str) -> None:
        self.prefix, self.tenant_id = prefix, tenant_id
        self._names: dict[Placement, str] = {}

    def __call__(self, end: Placement) -> str:
        name = self._names.get(end)
        if name is None:
            name = self._names[end] = j1_scope_name(self.prefix, self.tenant_id, scope_of(end))
        return name


def _relationship_upload(relationship: JsonObject, end_scope: _EndScopes) -> tuple[JsonObject, list[Invalid]]:
    problems = check_relationship(relationship)
    if problems:
        return relationship, problems
    try:
        from_end, to_end = end_placements(relationship)
    except KeyError as exc:
        key, type_ = str(relationship.get("_key")), str(relationship.get("_type"))
        return relationship, [Invalid(key, type_, "relationship-ends", str(exc.args[0]))]
    labelled = {**relationship, "_fromEntityScope": end_scope(from_end), "_toEntityScope": end_scope(to_end)}
    return labelled, []


def build_payload(
    scope: ScopeId, objects: Mapping[str, JsonObject], *, tenant: TenantConfig, prefix: str, max_request_bytes: int
) -> Payload:
    """The upload of one scope's complete state (pure): valid objects serialized, the rest reported.

    Entities get `tag.AccountName` when the tenant asks for it; relationships get the JupiterOne
    scope of each end. Objects go in key order, so the same state gives the same bytes.
    """
    entity = scope.kind == "entity"
    room = max_request_bytes - _BODY_OVERHEAD
    encoded: list[bytes] = []
    rejected: list[Invalid] = []
    end_scope = _EndScopes(prefix, tenant.id)
    for key in sorted(objects):
        if entity:
            obj, problems = _entity_upload(objects[key], tenant)
        else:
            obj, problems = _relationship_upload(objects[key], end_scope)
        if problems:
            rejected.extend(problems)
            continue
        raw = orjson.dumps(obj)
        if len(raw) > room:
            rejected.append(too_large(obj, len(raw), max_request_bytes))
            continue
        encoded.append(raw)
    return Payload(
        mode="DIFF" if entity else "CROSS_SCOPE",
        j1_scope=j1_scope_name(prefix, tenant.id, scope),
        kind="entities" if entity else "relationships",
        encoded=encoded,
        rejected=rejected,
    )


def _job_errors(job: Mapping[str, Any]) -> list[Invalid]:
    """Objects a finished job reports it could not apply (e.g. a relationship whose end is missing)."""
    errors = job.get("errors")
    if not isinstance(errors, list):
        return []
    found = []
    for error in errors:
        if isinstance(error, Mapping):
            key = str(error.get("key", error.get("_key", "")))
            found.append(
                Invalid(key, str(error.get("type", "")), str(error.get("code", "")), str(error.get("message", "")))
            )
    return found


def _text(value: Raw) -> str:
    return value.decode() if isinstance(value, bytes) else value


# -- the publisher --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Outcome:
    """How one scope went: confirmed (`done`), nothing to do (`idle`: clean, busy, set aside), not
    tried (`postponed`), or failed (`failure`; `outage` when every other scope would fail alike)."""

    done: bool = False
    idle: bool = False
    postponed: bool = False
    failure: ScopeFailure | None = None
    outage: bool = False

    @property
    def unconfirmed(self) -> bool:
        """Left dirty for a reason that may pass: relationships must wait for it."""
        return self.postponed or (self.failure is not None and self.failure.transient)


@dataclass(slots=True)
class _Pass:
    """One pass's shared state: the result, and whether JupiterOne is unavailable (then the scopes
    not yet started are left dirty rather than each spending the whole retry budget)."""

    result: PublishResult
    unavailable: bool = False


def _outage(exc: J1Error) -> bool:
    """Whether every other scope would fail the same way: JupiterOne unreachable, or our key refused."""
    return isinstance(exc, J1Unavailable) or exc.status in (401, 403)


class Publisher:
    """Publishes dirty scopes of any tenant to one JupiterOne account. One per process; stateless
    apart from its HTTP client: everything that must survive a crash lives in Redis."""

    def __init__(
        self,
        redis: Redis,
        settings: Settings,
        client: JupiterOneClient | None = None,
        *,
        sleep: Sleep = asyncio.sleep,
        clock: Clock = time.time,
    ) -> None:
        self.redis = redis
        self.settings = settings
        self.client = client or JupiterOneClient(settings, sleep=sleep)
        self.prefix = settings.j1_scope_prefix
        self.debounce = settings.j1_debounce
        self.concurrency = settings.j1_concurrency
        self.lease_ttl = settings.j1_lease_ttl
        self._sleep = sleep
        self._clock = clock

    async def close(self) -> None:
        await self.client.close()

    # -- passes ------------------------------------------------------------------------------
    async def publish_pending(self, tenant: TenantConfig, *, debounce: float = 0.0) -> PublishResult:
        """Publish every dirty scope of `tenant` once: entity scopes, then relationship scopes.

        With `debounce`, first wait until the dirty counters stay unchanged for that long (at most
        `j1_max_debounce`), so a burst of changes to a scope costs one upload. Failures are in the
        result, not raised; Redis errors are raised.
        """
        keys = TenantKeys(tenant.id)
        dirty = await self._settled(keys, debounce)
        scopes = self._parse_scopes(dirty)
        before = self.client.stats.snapshot()
        result = PublishResult()
        state = _Pass(result)
        entity_scopes = [s for s in scopes if s.kind == "entity"]
        relationship_scopes = [s for s in scopes if s.kind == "relationship"]
        # Entity scopes held by another publisher are waited for, and relationship scopes wait for a
        # pass in which no entity scope failed transiently: entities must be at JupiterOne before
        # relationships point at them. (A scope refused with a 4xx is not waited for: retrying it
        # would not get it confirmed.)
        outcomes = await self._publish_all(tenant, entity_scopes, state, lease_wait=self.lease_ttl)
        if any(o.unconfirmed for o in outcomes):
            result.postponed += len(relationship_scopes)
        else:
            await self._publish_all(tenant, relationship_scopes, state, lease_wait=0.0)
        after = self.client.stats.snapshot()
        result.requests = int(after["requests"] - before["requests"])
        result.bytes_sent = int(after["bytes_sent"] - before["bytes_sent"])
        result.raw_bytes = int(after["raw_bytes"] - before["raw_bytes"])
        result.still_dirty = int(await self.redis.hlen(keys.dirty))
        await self._record_pass(keys, result)
        return result

    async def reconcile(self, tenant: TenantConfig) -> PublishResult:
        """The periodic reconciliation: mark every scope the mirror has ever held dirty, then publish.

        Re-uploads the tenant's whole graph scope by scope (harmless where nothing changed, 10.5);
        it repairs whatever drifted at JupiterOne and retries scopes set aside after a 4xx.
        """
        store = TenantStore(self.redis, tenant.id)
        scopes = await store.known_scopes()
        if scopes:
            pipe: Any = self.redis.pipeline(transaction=False)
            for scope in scopes:
                pipe.hincrby(store.keys.dirty, str(scope), 1)
            await pipe.execute()
        return await self.publish_pending(tenant)

    async def has_pending(self, tenant: TenantConfig) -> bool:
        """Whether a dirty scope is waiting that is not set aside after a 4xx at the same counter."""
        keys = TenantKeys(tenant.id)
        dirty = await self.redis.hgetall(keys.dirty)
        if not dirty:
            return False
        blocked = await self.redis.hgetall(keys.j1_blocked)
        return any(blocked.get(scope) != counter for scope, counter in dirty.items())

    async def _settled(self, keys: TenantKeys, debounce: float) -> dict[str, Raw]:
        snapshot: dict[Raw, Raw] = await self.redis.hgetall(keys.dirty)
        waited = 0.0
        limit = max(debounce, self.settings.j1_max_debounce)
        while debounce > 0 and snapshot and waited < limit:
            await self._sleep(debounce)
            waited += debounce
            current: dict[Raw, Raw] = await self.redis.hgetall(keys.dirty)
            if current == snapshot:
                break
            snapshot = current
        return {_text(scope): counter for scope, counter in snapshot.items()}

    def _parse_scopes(self, dirty: Mapping[str, Raw]) -> list[ScopeId]:
        scopes = []
        for text in dirty:
            try:
                scopes.append(ScopeId.parse(text))
            except ValueError:
                log.error("jupiterone: ignoring a dirty entry that is not a scope id: %r", text)
        return sorted(scopes)

    async def _publish_all(
        self, tenant: TenantConfig, scopes: Sequence[ScopeId], state: _Pass, *, lease_wait: float
    ) -> list[_Outcome]:
        if not scopes:
            return []
        gate = asyncio.Semaphore(self.concurrency)

        async def one(scope: ScopeId) -> _Outcome:
            async with gate:
                if state.unavailable:
                    state.result.postponed += 1
                    return _Outcome(postponed=True)
                outcome = await self._publish_scope(tenant, scope, state.result, lease_wait)
                state.unavailable = state.unavailable or outcome.outage
                return outcome

        try:
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(one(scope)) for scope in scopes]
        except ExceptionGroup as failed:  # e.g. Redis went away: the other scopes were cancelled
            raise failed.exceptions[0] from failed
        return [task.result() for task in tasks]

    # -- one scope ---------------------------------------------------------------------------
    async def publish_scope(self, tenant: TenantConfig, scope: ScopeId) -> PublishResult:
        """Publish one scope now if it is dirty (for tools and tests; passes use `publish_pending`)."""
        result = PublishResult()
        await self._publish_scope(tenant, scope, result, 0.0)
        return result

    async def _publish_scope(
        self, tenant: TenantConfig, scope: ScopeId, result: PublishResult, lease_wait: float
    ) -> _Outcome:
        keys = TenantKeys(tenant.id)
        lease = Lease(self.redis, keys.j1_lease(scope), ttl=self.lease_ttl)
        try:
            async with lease.held(wait=lease_wait):
                outcome = await self._upload_scope(tenant, keys, scope, lease, result)
        except LeaseBusy:
            result.skipped += 1
            return _Outcome(idle=True)
        if outcome.failure is not None:
            result.failures.append(outcome.failure)
        return outcome

    async def _upload_scope(
        self, tenant: TenantConfig, keys: TenantKeys, scope: ScopeId, lease: Lease, result: PublishResult
    ) -> _Outcome:
        name = str(scope)
        # The counter first, the mirror second: a change committed in between moves the counter,
        # so the scope stays dirty after this upload (commit writes both in one transaction).
        counter = await self.redis.hget(keys.dirty, name)
        if counter is None or await self.redis.hget(keys.j1_blocked, name) == counter:
            result.skipped += 1
            return _Outcome(idle=True)
        objects = await TenantStore(self.redis, tenant.id).scope_objects(scope)
        payload = build_payload(
            scope, objects, tenant=tenant, prefix=self.prefix, max_request_bytes=self.client.max_request_bytes
        )
        try:
            job = await self._run_job(keys, name, payload)
        except J1Error as exc:
            return await self._failed(keys, name, counter, payload, exc)
        result.jobs += 1
        result.objects += len(payload.encoded)
        result.published.append(name)
        result.rejected.extend(payload.rejected)
        skipped = _job_errors(job)
        result.skipped_by_jupiterone.extend(skipped)
        if skipped and await self._ends_pending(keys, objects, skipped):
            cleared = 0  # stays dirty: published again after the entity scopes it waits for
        else:
            cleared = await self.redis.eval(
                CLEAR_DIRTY_IF_UNCHANGED, 2, keys.dirty, lease.key, name, counter, lease.token
            )
        await self._record_success(keys, name, str(job.get("id", "")), payload.rejected, skipped)
        log.debug("jupiterone %s %s: %d objects, cleared=%s", tenant.id, name, len(payload.encoded), bool(cleared))
        return _Outcome(done=True)

    async def _ends_pending(self, keys: TenantKeys, objects: Mapping[str, JsonObject], skipped: list[Invalid]) -> bool:
        """Whether an end of a relationship JupiterOne skipped lives in an entity scope still to be
        published: dirty, and not set aside after a refusal (that would wait for a change anyway)."""
        ends: set[str] = set()
        for problem in skipped:
            relationship = objects.get(problem.key)
            if relationship is None:
                continue
            with contextlib.suppress(KeyError):  # ends it cannot name were refused before upload
                ends.update(str(scope_of(end)) for end in end_placements(relationship))
        if not ends:
            return False
        names = sorted(ends)
        dirty: list[Raw | None] = await self.redis.hmget(keys.dirty, names)
        blocked: list[Raw | None] = await self.redis.hmget(keys.j1_blocked, names)
        return any(counter is not None and counter != aside for counter, aside in zip(dirty, blocked, strict=True))

    async def _run_job(self, keys: TenantKeys, name: str, payload: Payload) -> dict[str, Any]:
        """Create, upload, finalize and wait (9.1-9.2); the job is listed as in flight meanwhile.

        A job that will not be finalized is aborted, as the SDK does (9.1): on a refused upload, on
        cancellation (shutdown, a killed pass), and, for a publisher that died, by the next one to
        publish the scope (it holds the scope's lease, so the listed job is nobody's any more). A
        publisher that dies between creating a job and listing it leaves that job open; never
        finalized, it is never applied.
        """
        await self._abort_left_open(keys, name)
        job = await self.client.create_job(scope=payload.j1_scope, sync_mode=payload.mode)
        job_id = str(job["id"])
        entry = {"job": job_id, "mode": payload.mode, "j1_scope": payload.j1_scope, "started_at": self._clock()}
        await self.redis.hset(keys.j1_inflight, name, orjson.dumps(entry))
        finalized: dict[str, Any] | None = None
        try:
            try:
                await self.client.upload(job_id, payload.kind, payload.encoded)
            except J1Refused as exc:
                if not exc.transient:
                    await self.client.abort(job_id, f"monitor: upload refused: {exc}")
                raise
            finalized = await self.client.finalize(job_id)
            return await self.client.wait_finished(job_id, finalized)
        except asyncio.CancelledError:
            if finalized is None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.client.abort(job_id, "monitor: publisher stopped"), ABORT_TIMEOUT)
            raise
        finally:
            # Also when cancelled: the status must not show a job that nobody follows any more.
            with contextlib.suppress(RedisError):
                await self.redis.hdel(keys.j1_inflight, name)

    async def _abort_left_open(self, keys: TenantKeys, name: str) -> None:
        left = await self.redis.hget(keys.j1_inflight, name)
        if left is None:
            return
        job_id = str(orjson.loads(left).get("job", ""))
        log.info("jupiterone %s: aborting job %s, left open by a publisher that stopped", name, job_id)
        await self.client.abort(job_id, "monitor: left open by a publisher that stopped")

    # -- status bookkeeping ------------------------------------------------------------------
    async def _failed(self, keys: TenantKeys, name: str, counter: Raw, payload: Payload, exc: J1Error) -> _Outcome:
        failure = ScopeFailure(name, str(exc), exc.code, exc.key, exc.transient)
        pipe: Any = self.redis.pipeline(transaction=False)
        if not exc.transient:
            # A 4xx: the same state would be refused again. Set the scope aside until it changes.
            pipe.hset(keys.j1_blocked, name, counter)
        error = {"at": self._clock(), "scope": name, "key": exc.key, "rule": exc.code, "message": str(exc)}
        pipe.lpush(keys.j1_errors, orjson.dumps(error))
        pipe.ltrim(keys.j1_errors, 0, TenantKeys.J1_ERRORS_KEPT - 1)
        pipe.hset(keys.j1_state, mapping={"last_error_at": self._clock(), "last_error": f"{name}: {exc}"})
        pipe.hincrby(keys.metrics, 'monitor_j1_jobs_total{result="failed"}', 1)
        await pipe.execute()
        log.warning("jupiterone %s: %s (%d objects not confirmed)", name, exc, len(payload.encoded))
        return _Outcome(failure=failure, outage=_outage(exc))

    async def _record_success(
        self, keys: TenantKeys, name: str, job_id: str, rejected: list[Invalid], skipped: list[Invalid]
    ) -> None:
        now = self._clock()
        pipe: Any = self.redis.pipeline(transaction=False)
        pipe.hdel(keys.j1_blocked, name)
        if rejected:
            pipe.hset(keys.j1_rejected, name, orjson.dumps([r.as_dict() for r in rejected]))
        else:
            pipe.hdel(keys.j1_rejected, name)
        for problem in [*rejected, *skipped]:
            entry = {"at": now, "scope": name, "key": problem.key, "rule": problem.rule, "message": problem.detail}
            pipe.lpush(keys.j1_errors, orjson.dumps(entry))
        if rejected or skipped:
            pipe.ltrim(keys.j1_errors, 0, TenantKeys.J1_ERRORS_KEPT - 1)
            pipe.hset(
                keys.j1_state,
                mapping={
                    "last_error_at": now,
                    "last_error": f"{name}: {len(rejected) + len(skipped)} objects not at JupiterOne",
                },
            )
        pipe.hset(keys.j1_state, mapping={"last_success_at": now, "last_job": job_id, "last_scope": name})
        pipe.hincrby(keys.metrics, 'monitor_j1_jobs_total{result="finished"}', 1)
        if rejected:
            pipe.hincrby(keys.metrics, "monitor_j1_rejected_total", len(rejected))
        await pipe.execute()

    async def _record_pass(self, keys: TenantKeys, result: PublishResult) -> None:
        pipe: Any = self.redis.pipeline(transaction=False)
        pipe.hset(keys.j1_state, mapping={"last_pass_at": self._clock(), "last_pass": result.summary(keys.tenant)})
        if result.bytes_sent:
            pipe.hincrby(keys.metrics, "monitor_j1_bytes_total", result.bytes_sent)
        if result.objects:
            pipe.hincrby(keys.metrics, "monitor_j1_objects_total", result.objects)
        await pipe.execute()

    async def status(self, tenant_id: str) -> dict[str, Any]:
        return await publishing_status(self.redis, tenant_id)

    # -- the worker loop ---------------------------------------------------------------------
    async def run(
        self,
        tenants: Iterable[TenantConfig] | Callable[[], Iterable[TenantConfig]],
        stop: asyncio.Event,
        *,
        idle: float = 0.5,
    ) -> None:
        """Publish dirty scopes of `tenants` until `stop` is set (the worker process's loop).

        `tenants` may be a callable, asked before every pass: tenants are registered and removed
        while the worker runs (`Runtime.tenants`).

        Each pass waits for the debounce first. After passes that confirm nothing while failing,
        the loop backs off through the retry policy, so an outage is not hammered.
        """
        fixed = None if callable(tenants) else list(tenants)
        backoff = RetryPolicy(max_retries=1_000_000, base_delay=idle, max_delay=self.settings.j1_max_backoff)
        failing = 0
        while not stop.is_set():
            current = fixed if fixed is not None else list(tenants())  # type: ignore[operator]
            progressed, failed = await self._run_once(current)
            failing = failing + 1 if failed and not progressed else 0
            if progressed and not failed:
                continue
            pause = backoff.delay(failing, None) if failing else idle
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), pause)

    async def _run_once(self, tenants: Sequence[TenantConfig]) -> tuple[bool, bool]:
        progressed = failed = False
        for tenant in tenants:
            try:
                if not await self.has_pending(tenant):
                    continue
                result = await self.publish_pending(tenant, debounce=self.debounce)
            except REDIS_UNAVAILABLE as exc:
                log.warning("jupiterone %s: publishing pass failed: %s", tenant.id, exc)
                failed = True
                continue
            progressed = progressed or result.jobs > 0
            failed = failed or bool(result.failures)
        return progressed, failed


# -- status --------------------------------------------------------------------------------------


async def publishing_status(redis: Redis, tenant_id: str) -> dict[str, Any]:
    """The tenant's publishing state for `monitor status`: dirty scopes, jobs in flight, last
    success, last errors (with the offending key and rule), invalid objects left out."""
    keys = TenantKeys(tenant_id)
    pipe: Any = redis.pipeline(transaction=False)
    pipe.hlen(keys.dirty)
    pipe.hgetall(keys.j1_inflight)
    pipe.hgetall(keys.j1_state)
    pipe.lrange(keys.j1_errors, 0, _ERRORS_SHOWN - 1)
    pipe.hvals(keys.j1_rejected)
    pipe.hkeys(keys.j1_blocked)
    dirty, inflight, state, errors, rejected, blocked = await pipe.execute()
    state = {_text(k): _text(v) for k, v in state.items()}
    return {
        "dirty_scopes": int(dirty),
        "in_flight": [{"scope": _text(scope), **orjson.loads(entry)} for scope, entry in sorted(inflight.items())],
        "last_success_at": _float(state.get("last_success_at")),
        "last_job": state.get("last_job"),
        "last_pass_at": _float(state.get("last_pass_at")),
        "last_pass": state.get("last_pass"),
        "last_error_at": _float(state.get("last_error_at")),
        "last_error": state.get("last_error"),
        "errors": [orjson.loads(entry) for entry in errors],
        "invalid_objects_left_out": sum(len(orjson.loads(entry)) for entry in rejected),
        "set_aside_scopes": sorted(_text(scope) for scope in blocked),
    }


def _float(value: str | None) -> float | None:
    return None if value is None else float(value)


def _when(epoch: float | None) -> str:
    return "never" if epoch is None else datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")


def render_publishing(status: Mapping[str, Any]) -> list[str]:
    """`monitor status` lines for `publishing_status(...)`."""
    in_flight = status["in_flight"]
    lines = [
        f"  jupiterone   {status['dirty_scopes']:,} dirty scopes, {len(in_flight)} jobs in flight, "
        f"last success {_when(status['last_success_at'])}"
    ]
    for job in in_flight:
        lines.append(f"  j1 job       {job['scope']}: {job['mode']} job {job['job']} since {_when(job['started_at'])}")
    if status["invalid_objects_left_out"]:
        lines.append(
            f"  j1 invalid   {status['invalid_objects_left_out']:,} invalid objects left out (not at JupiterOne)"
        )
    if status["set_aside_scopes"]:
        lines.append(f"  j1 refused   {', '.join(status['set_aside_scopes'])} (retried when they change)")
    if status["last_error_at"] is not None:
        lines.append(f"  j1 error     {_when(status['last_error_at'])}: {status['last_error']}")
    for error in status["errors"][:3]:
        key = f" key {error['key']}" if error.get("key") else ""
        lines.append(f"    {error['scope']}{key} [{error.get('rule') or '?'}]: {error['message']}")
    return lines


# -- wiring and the functions the commands call ------------------------------------------------------


def build_publisher(settings: Settings, redis: Redis) -> Publisher | None:
    """The publisher when `MONITOR_SINK` names `jupiterone`, else None (no I/O until used)."""
    if not settings.jupiterone_enabled:
        return None
    for tenant in settings.tenants:
        if tenant.tag_account_name and not tenant.account_name:
            raise ConfigError(f"tenant {tenant.id}: tag_account_name needs account_name (the tag's value)")
    return Publisher(redis, settings)


async def publish_pending(publisher: Publisher, tenant: TenantConfig, *, debounce: float = 0.0) -> PublishResult:
    """Publish every dirty scope of `tenant` once (see `Publisher.publish_pending`)."""
    return await publisher.publish_pending(tenant, debounce=debounce)


async def reconcile(publisher: Publisher, tenant: TenantConfig) -> PublishResult:
    """Mark every known scope of `tenant` dirty and publish (see `Publisher.reconcile`)."""
    return await publisher.reconcile(tenant)


async def run_publisher(publisher: Publisher, tenants: Iterable[TenantConfig], stop: asyncio.Event) -> None:
    """The worker's publishing loop until `stop` is set (see `Publisher.run`)."""
    await publisher.run(tenants, stop)
