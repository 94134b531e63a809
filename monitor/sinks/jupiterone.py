"""The JupiterOne publisher: makes JupiterOne follow the mirror exactly, one small scope at a time.

Deletions rest on one documented behaviour. JupiterOne's DIFF sync mode: "On finalize, the persister
treats your upload as the complete state of the scope: anything that existed in the scope last time
and is missing from this upload is deleted" (https://docs.jupiterone.io/api/sync-jobs/diff; "Both
entities and relationships are in scope"). So the publisher never sends events, and never uses
CROSS_SCOPE, whose finalize "Adds/updates relationships" and is documented to delete nothing
(https://docs.jupiterone.io/api/sync-jobs/overview), nor PATCH ("Nothing is deleted"). Each change
marks its mirror scope dirty (`TenantStore.commit` does `HSET dirty <scope> <seq>` in the same
transaction as the mirror write), and the publisher uploads each dirty *upload scope*'s complete
current state from the mirror as one DIFF job (`source: api`, `scope: <prefix>/<tenant>/F:b`):

- **entity deletions**: an entity no longer in the mirror is missing from its scope's next upload,
  and the DIFF deletes it;
- **relationship deletions, same scope and across scopes alike**: every relationship travels in
  the job of its anchor end (`monitor.scopes`: an upload scope holds the entities of a bucket and
  the relationships anchored on them), so a relationship no longer in the mirror is missing from
  that scope's next upload and the DIFF deletes it. Its far end, when it lives in another upload
  scope, is labelled with that scope and our source, as JupiterOne documents for a relationship to
  an entity the job does not own ("you will need to use a _key and include a _source and _scope of
  the existing entities in the graph", https://docs.jupiterone.io/features/assets/relationships-across-scopes);
  a relationship whose ends share a scope carries no label and is a plain DIFF relationship, as the
  CROSS_SCOPE page asks ("If the entities in question are in the same scope, use DIFF or PATCH",
  https://docs.jupiterone.io/api/sync-jobs/cross-scope).
- Whether deleting an entity also deletes relationships to it held by *other* scopes (the archived
  bulk-upload docs say so) is not relied upon: the mirror drops those relationships too (a deleted
  user leaves its groups' memberships), their scopes are dirty, and their own DIFF deletes them.
  Either way `monitor reconcile` reads JupiterOne back (`monitor.sinks.j1_reconcile`) and finds and
  repairs whatever stayed.

For each upload scope: take the (tenant, scope) lease, so publisher processes never upload one scope
at once; snapshot the scope's dirty counters (`e:F:b`, `r:F:b`) *before* reading the mirror; upload
(requests under the size limit), finalize, poll until FINISHED; then clear the dirty entries only if
their counters are still the snapshot (a Lua compare-and-delete that also checks the lease). So a
change arriving while a scope is in flight keeps it dirty and it is published again; a crash or a
JupiterOne outage leaves it dirty; a repeated upload of the same state changes nothing at
JupiterOne. An emptied scope is still published: its empty upload deletes the scope's content.

**Job results as JupiterOne reports them.** A FINISHED job is read for its error counters
(`numEntityCreateErrors`, `numRelationshipCreateErrors`, ...: `SyncJob` of JupiterOne's Node.js
client; the job object carries no per-object error list). A job with any of them above zero leaves
its scope dirty: the scope backs off (`j1_scope_backoff`, doubling) and is reported (status line,
`monitor_j1_job_errors_total`). A relationship is created only when both its ends exist, so a pass
publishes families in waves (`monitor.scopes.PUBLISH_WAVES`: users before the groups whose
memberships point at them), and a scope whose job reports relationship errors while a scope its
relationships point into was published in the same pass is published once more at the end of the
pass before it counts as failed (two new groups nesting each other).

**Refusals.** 429/5xx and network failures are retried by the client; a scope that still fails
stays dirty, and the scopes of the pass not started yet are left for the next pass (the worker loop
backs off). A 401 or 403 stops the pass the same way and sets the tenant's problem (one status line
saying what to fix, gauge `monitor_j1_problem`). Another 4xx refuses that scope's request: it backs
off like a job with errors. Invalid objects (`monitor.sinks.j1_validate`) are left out of their
scope's upload and reported with their key and rule; at JupiterOne that deletes them from the scope.
Nothing is lost: every scope stays dirty until JupiterOne confirms it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import orjson
from redis.exceptions import RedisError

from monitor.errors import ConfigError
from monitor.keys import CLEAR_DIRTY_IF_UNCHANGED, TenantKeys
from monitor.leases import Lease, LeaseBusy
from monitor.model.types import JsonObject
from monitor.redis_conn import REDIS_UNAVAILABLE, Redis
from monitor.retry import RetryPolicy
from monitor.scopes import ScopeId, UploadScope, upload_scopes_of
from monitor.settings import Settings, TenantConfig
from monitor.sinks.j1_client import (
    J1Error,
    J1Refused,
    J1Unavailable,
    JupiterOneClient,
    job_errors,
)
from monitor.sinks.j1_payload import ACCOUNT_NAME_TAG, SOURCE, Payload, build_payload, j1_scope_name
from monitor.sinks.j1_reconcile import ReconcileReport, reconcile_tenant
from monitor.sinks.j1_state import (
    PublishResult,
    PublishState,
    ScopeFailure,
    publishing_status,
    render_publishing,
    text,
)
from monitor.store import TenantStore

__all__ = [
    "ACCOUNT_NAME_TAG",
    "JupiterOneClient",
    "PublishResult",
    "Publisher",
    "ScopeFailure",
    "build_publisher",
    "j1_scope_name",
    "publishing_status",
    "render_publishing",
]

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]
Clock = Callable[[], float]
Raw = bytes | str  # a value as redis-py returns it

# How long a cancelled publisher spends aborting its open job before it gives up (shutdown waits).
ABORT_TIMEOUT = 2.0
RELATIONSHIP_CREATE_ERRORS = "numRelationshipCreateErrors"


# -- results (PublishResult and ScopeFailure live in monitor.sinks.j1_state, which j1_reconcile reads) --


@dataclass(frozen=True, slots=True)
class _Outcome:
    """How one scope went: confirmed (`done`), nothing to do (`idle`: clean or busy), waiting for its
    backoff, not tried (`postponed`), put after the others of its step (`deferred`), failed
    (`failure`; `outage` when every other scope would fail alike), or finished with error counters
    (`errors`, not yet recorded: the pass decides)."""

    scope: UploadScope
    done: bool = False
    idle: bool = False
    deferred: bool = False
    backing_off: bool = False
    postponed: bool = False
    failure: ScopeFailure | None = None
    outage: bool = False
    errors: Mapping[str, int] | None = None
    far_scopes: frozenset[str] = frozenset()
    job_id: str = ""
    counters: str = ""

    @property
    def unconfirmed(self) -> bool:
        """Left dirty for a reason that may pass soon: later waves wait for it."""
        return self.postponed or (self.failure is not None and self.failure.transient)


@dataclass(slots=True)
class _Pass:
    """One pass's shared state: the result, the scopes confirmed so far, and whether JupiterOne is
    unavailable (then the scopes not yet started are left dirty rather than each spending the whole
    retry budget)."""

    result: PublishResult
    confirmed: set[str] = field(default_factory=set)
    waiting: set[str] = field(default_factory=set)  # scopes of the current step not finished yet
    unavailable: bool = False


def _outage(exc: J1Error) -> bool:
    """Whether every other scope would fail the same way: JupiterOne unreachable, or our key refused."""
    return isinstance(exc, J1Unavailable) or exc.status in (401, 403)


def upload_scopes(dirty: Iterable[str]) -> list[UploadScope]:
    """The upload scopes of dirty mirror scope ids (an `e:` and an `r:` entry make one scope)."""
    names = list(dirty)
    for name in names:
        try:
            ScopeId.parse(name)
        except ValueError:
            log.error("jupiterone: ignoring a dirty entry that is not a scope id: %r", name)
    return upload_scopes_of(names)


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
        self.backoff = RetryPolicy(
            max_retries=1_000_000, base_delay=settings.j1_scope_backoff, max_delay=settings.j1_scope_max_backoff
        )
        self._sleep = sleep
        self._clock = clock

    async def close(self) -> None:
        await self.client.close()

    def clock(self) -> float:
        return self._clock()

    def state(self, tenant_id: str) -> PublishState:
        return PublishState(self.redis, tenant_id, clock=self._clock, backoff=self.backoff)

    # -- passes ------------------------------------------------------------------------------
    async def publish_pending(self, tenant: TenantConfig, *, debounce: float = 0.0) -> PublishResult:
        """Publish every dirty upload scope of `tenant` once, family wave by family wave.

        With `debounce`, first wait until the dirty counters stay unchanged for that long (at most
        `j1_max_debounce`), so a burst of changes to a scope costs one upload. Failures are in the
        result, not raised; Redis errors are raised.
        """
        keys = TenantKeys(tenant.id)
        scopes = upload_scopes(await self._settled(keys, debounce))
        before = self.client.stats.snapshot()
        state = _Pass(PublishResult())
        outcomes: list[_Outcome] = []
        waves = sorted({scope.wave for scope in scopes})
        for wave in waves:
            members = [scope for scope in scopes if scope.wave == wave]
            if any(o.unconfirmed for o in outcomes):
                state.result.postponed += len(members)
                continue
            # Wait for a scope another publisher holds, except in the last wave: nothing waits on it.
            wait = self.lease_ttl if wave != waves[-1] else 0.0
            outcomes += await self._publish_all(tenant, members, state, lease_wait=wait)
        outcomes = await self._second_chance(tenant, outcomes, state)
        for outcome in outcomes:
            if outcome.errors:
                await self._job_errored(tenant.id, outcome, state.result)
        await self._finish_pass(keys, state.result, before)
        return state.result

    async def _second_chance(self, tenant: TenantConfig, outcomes: list[_Outcome], state: _Pass) -> list[_Outcome]:
        """Publish once more the scopes whose relationships JupiterOne could not create while a scope
        they point into was confirmed in this pass (its new entities may not have been there yet)."""
        again = [
            o.scope
            for o in outcomes
            if o.errors and set(o.errors) == {RELATIONSHIP_CREATE_ERRORS} and o.far_scopes & state.confirmed
        ]
        if not again:
            return outcomes
        state.result.retried += len(again)
        retried = {o.scope: o for o in await self._publish_all(tenant, again, state, lease_wait=self.lease_ttl)}
        return [retried.get(o.scope, o) for o in outcomes]

    async def _finish_pass(self, keys: TenantKeys, result: PublishResult, before: Mapping[str, float]) -> None:
        after = self.client.stats.snapshot()
        result.requests = int(after["requests"] - before["requests"])
        result.bytes_sent = int(after["bytes_sent"] - before["bytes_sent"])
        result.raw_bytes = int(after["raw_bytes"] - before["raw_bytes"])
        result.bytes_received = int(after["bytes_received"] - before["bytes_received"])
        result.still_dirty = len(upload_scopes(text(k) for k in await self.redis.hkeys(keys.dirty)))
        await self.state(keys.tenant).record_pass(
            result.summary(keys.tenant), bytes_sent=result.bytes_sent, objects=result.objects
        )

    async def reconcile(self, tenant: TenantConfig, *, check: bool = False) -> ReconcileReport:
        """Read JupiterOne back, compare with the mirror, and (unless `check`) repair what differs
        (`monitor.sinks.j1_reconcile`)."""
        return await reconcile_tenant(self, tenant, check=check)

    async def has_pending(self, tenant: TenantConfig) -> bool:
        """Whether a dirty scope is waiting that is not backing off."""
        keys = TenantKeys(tenant.id)
        dirty: dict[Raw, Raw] = await self.redis.hgetall(keys.dirty)
        if not dirty:
            return False
        counters = {text(k): text(v) for k, v in dirty.items()}
        backoffs = await self.state(tenant.id).backoffs()
        now = self._clock()
        for scope in upload_scopes(counters):
            entry = backoffs.get(str(scope))
            if entry is None or not entry.waiting(_counters(counters, scope), now):
                return True
        return False

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
        return {text(scope): counter for scope, counter in snapshot.items()}

    async def _publish_all(
        self, tenant: TenantConfig, scopes: Sequence[UploadScope], state: _Pass, *, lease_wait: float
    ) -> list[_Outcome]:
        """Publish `scopes` side by side. A scope whose relationships point into another of them
        not finished yet waits for the others, once (a group whose nested group is new)."""
        state.waiting = {str(scope) for scope in scopes}
        outcomes = await self._publish_side_by_side(tenant, scopes, state, lease_wait, defer=True)
        deferred = [o.scope for o in outcomes if o.deferred]
        if deferred:
            again = {o.scope: o for o in await self._publish_side_by_side(tenant, deferred, state, lease_wait)}
            outcomes = [again.get(o.scope, o) for o in outcomes]
        return outcomes

    async def _publish_side_by_side(
        self,
        tenant: TenantConfig,
        scopes: Sequence[UploadScope],
        state: _Pass,
        lease_wait: float,
        *,
        defer: bool = False,
    ) -> list[_Outcome]:
        if not scopes:
            return []
        gate = asyncio.Semaphore(self.concurrency)

        async def one(scope: UploadScope) -> _Outcome:
            async with gate:
                if state.unavailable:
                    state.result.postponed += 1
                    return _Outcome(scope, postponed=True)
                outcome = await self._publish_scope(tenant, scope, state, lease_wait, defer=defer)
                state.unavailable = state.unavailable or outcome.outage
                if outcome.done:
                    state.confirmed.add(str(scope))
                if not outcome.deferred:
                    state.waiting.discard(str(scope))
                return outcome

        try:
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(one(scope)) for scope in scopes]
        except ExceptionGroup as failed:  # e.g. Redis went away: the other scopes were cancelled
            raise failed.exceptions[0] from failed
        return [task.result() for task in tasks]

    # -- one scope ---------------------------------------------------------------------------
    async def publish_scope(self, tenant: TenantConfig, scope: UploadScope) -> PublishResult:
        """Publish one upload scope now if it is dirty (for tools and tests; passes use `publish_pending`)."""
        result = PublishResult()
        outcome = await self._publish_scope(tenant, scope, _Pass(result), 0.0)
        if outcome.errors:
            await self._job_errored(tenant.id, outcome, result)
        return result

    async def _publish_scope(
        self, tenant: TenantConfig, scope: UploadScope, state: _Pass, lease_wait: float, *, defer: bool = False
    ) -> _Outcome:
        keys = TenantKeys(tenant.id)
        lease = Lease(self.redis, keys.j1_lease(str(scope)), ttl=self.lease_ttl)
        try:
            async with lease.held(wait=lease_wait):
                outcome = await self._upload_scope(tenant, keys, scope, lease, state, defer)
        except LeaseBusy:
            state.result.skipped += 1
            return _Outcome(scope, idle=True)
        if outcome.failure is not None:
            state.result.failures.append(outcome.failure)
        return outcome

    async def _upload_scope(
        self, tenant: TenantConfig, keys: TenantKeys, scope: UploadScope, lease: Lease, state: _Pass, defer: bool
    ) -> _Outcome:
        name, result = str(scope), state.result
        # The counters first, the mirror second: a change committed in between moves a counter, so
        # the scope stays dirty after this upload (commit writes both in one transaction).
        names = [str(scope.entities), str(scope.relationships)]
        snapshot: list[Raw | None] = await self.redis.hmget(keys.dirty, names)
        if all(counter is None for counter in snapshot):
            result.skipped += 1
            return _Outcome(scope, idle=True)
        counters = ",".join("" if c is None else text(c) for c in snapshot)
        entry = (await self.state(tenant.id).backoffs()).get(name)
        if entry is not None and entry.waiting(counters, self._clock()):
            result.backing_off += 1
            return _Outcome(scope, backing_off=True)
        payload = await self.payload(tenant, scope)
        if defer and payload.far_scopes & (state.waiting - {name}):
            return _Outcome(scope, deferred=True)
        try:
            job = await self._run_job(keys, name, payload)
        except J1Error as exc:
            return await self._failed(tenant.id, scope, counters, exc)
        result.jobs += 1
        result.objects += payload.objects
        result.published.append(name)
        errors = job_errors(job)
        job_id = str(job.get("id", ""))
        if errors:
            return _Outcome(scope, errors=errors, far_scopes=payload.far_scopes, job_id=job_id, counters=counters)
        result.rejected.extend(payload.rejected)
        pairs = [item for pair in zip(names, counters.split(","), strict=True) for item in pair]
        await self.redis.eval(CLEAR_DIRTY_IF_UNCHANGED, 2, keys.dirty, lease.key, lease.token, *pairs)
        await self.state(tenant.id).record_success(name, job_id, payload.rejected)
        log.debug("jupiterone %s %s: %d objects", tenant.id, name, payload.objects)
        return _Outcome(scope, done=True)

    async def payload(self, tenant: TenantConfig, scope: UploadScope) -> Payload:
        """What publishing `scope` of `tenant` would upload now, from the mirror."""
        store = TenantStore(self.redis, tenant.id)
        entities = await store.scope_objects(scope.entities)
        relationships = await store.scope_objects(scope.relationships)
        return build_payload(
            scope,
            entities,
            relationships,
            tenant=tenant,
            prefix=self.prefix,
            max_request_bytes=self.client.max_request_bytes,
        )

    async def _run_job(self, keys: TenantKeys, name: str, payload: Payload) -> JsonObject:
        """Create, upload, finalize and wait; the job is listed as in flight meanwhile.

        A job that will not be finalized is aborted, as the SDK does: on a refused upload, on
        cancellation (shutdown, a killed pass), and, for a publisher that died, by the next one to
        publish the scope (it holds the scope's lease, so the listed job is nobody's any more). A
        publisher that dies between creating a job and listing it leaves that job open; never
        finalized, it is never applied.
        """
        await self._abort_left_open(keys, name)
        job = await self.client.create_job(scope=payload.j1_scope, sync_mode="DIFF", source=SOURCE)
        job_id = str(job["id"])
        entry = {"job": job_id, "mode": "DIFF", "j1_scope": payload.j1_scope, "started_at": self._clock()}
        await self.redis.hset(keys.j1_inflight, name, orjson.dumps(entry))
        finalized: JsonObject | None = None
        try:
            try:
                # Entities first: a relationship between two of them is created at finalize either way.
                await self.client.upload(job_id, "entities", payload.encoded_entities)
                await self.client.upload(job_id, "relationships", payload.encoded_relationships)
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

    async def remove_scope(self, tenant_id: str, j1_scope: str) -> JsonObject:
        """Empty a JupiterOne scope of ours that the mirror has no scope for (an empty DIFF deletes
        everything in it); for `monitor reconcile`."""
        keys = TenantKeys(tenant_id)
        name = j1_scope.rsplit("/", 1)[-1]
        empty = Payload(j1_scope, [], [], [], [], [], frozenset())
        return await self._run_job(keys, f"removal:{name}", empty)

    # -- outcomes ------------------------------------------------------------------------------
    async def _failed(self, tenant_id: str, scope: UploadScope, counters: str, exc: J1Error) -> _Outcome:
        name = str(scope)
        failure = ScopeFailure(name, str(exc), exc.code, exc.key, exc.transient, exc.reason)
        await self.state(tenant_id).record_failure(name, counters, exc)
        log.warning("jupiterone %s %s: %s", tenant_id, name, exc)
        return _Outcome(scope, failure=failure, outage=_outage(exc))

    async def _job_errored(self, tenant_id: str, outcome: _Outcome, result: PublishResult) -> None:
        """Record a job that finished with error counters. If a scope its relationships point into is
        dirty (a new user whose membership was published first), it is tried again in the next
        pass, after that scope; otherwise after its backoff."""
        name = str(outcome.scope)
        errors = dict(outcome.errors or {})
        far = [UploadScope.parse(n) for n in sorted(outcome.far_scopes)]
        names = [str(s) for scope in far for s in (scope.entities, scope.relationships)]
        pending = bool(names) and any(c is not None for c in await self.redis.hmget(TenantKeys(tenant_id).dirty, names))
        state = self.state(tenant_id)
        entry = await state.record_job_errors(name, outcome.counters, outcome.job_id, errors, retry_now=pending)
        result.job_errors[name] = errors
        result.failures.append(ScopeFailure(name, entry.message, "job_errors", None, False, "job_errors"))
        wait = entry.until - self._clock()
        log.warning(
            "jupiterone %s %s: %s; tried again in %.0fs or when it changes", tenant_id, name, entry.message, wait
        )

    async def status(self, tenant_id: str) -> JsonObject:
        return await publishing_status(self.redis, tenant_id, now=self._clock())

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

        Each pass waits for the debounce first. After passes that confirm nothing while failing (an
        outage, a refused key), the loop backs off through the retry policy, so an outage is not
        hammered; the scopes stay dirty and go out once JupiterOne accepts again.
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


def _counters(dirty: Mapping[str, str], scope: UploadScope) -> str:
    return ",".join(dirty.get(str(s), "") for s in (scope.entities, scope.relationships))


# -- wiring and the functions the commands call ------------------------------------------------------


def build_publisher(settings: Settings, redis: Redis) -> Publisher | None:
    """The publisher when `MONITOR_SINK` names `jupiterone`, else None (no I/O until used)."""
    if not settings.jupiterone_enabled:
        return None
    for tenant in settings.tenants:
        if tenant.tag_account_name and not tenant.account_name:
            raise ConfigError(f"tenant {tenant.id}: tag_account_name needs account_name (the tag's value)")
    return Publisher(redis, settings)
