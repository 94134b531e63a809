"""The worker: reads hints from the stream's consumer group and runs the jobs they ask for.

- Coalescing on the leading edge, per job (a tenant and a source, or another job): a hint that
  finds its job idle starts a run at once; hints that arrive while the job runs wait, and are all
  answered by ONE follow-up run once it ends (a change made during a run may have been missed by it,
  never by the follow-up, which starts after). A burst therefore costs at most two runs per job,
  and a lone notification is answered without waiting. Delivery to the sinks after a run coalesces
  the same way, per tenant.
- One runner per (tenant, source): `monitor.sync.run_source` holds a Redis lease, whichever
  worker process runs the job.
- At-least-once: a hint is acknowledged (and deleted) only after the run that answers it committed.
  A worker that dies leaves its hints pending. Workers publish a heartbeat
  (`monitor.keys.worker_heartbeat`): the hints of a worker whose heartbeat is gone are claimed at
  once by another; a live worker's hints are never taken from it (it may be slow, not dead). A
  worker retries its own failed jobs once their hints have been idle for `claim_idle` seconds; a
  job that keeps failing is dropped after `max_attempts`, with its error in the tenant's status (the
  timer brings the job back later anyway).
- Nothing committed waits for the next hint: a starting worker first delivers what earlier runs
  committed and did not deliver (a run killed between its commit and its delivery), and a running
  one checks again every few seconds and retries a failing sink with backoff (`keep_delivered`).
- Burst mode (`monitor worker --burst`, tests, one-off runs) drains the queue and returns.
- Graceful stop: on SIGTERM the worker finishes the jobs in hand and stops reading; hints waiting
  for a follow-up run stay pending, and are claimed by another worker once this one's heartbeat is
  gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from monitor.app import Runtime
from monitor.graph.subscriptions import RESOURCES, SubscriptionManager
from monitor.hints import SOURCE_JOBS, Entry, Hint, HintQueue
from monitor.keys import GLOBAL_METRICS, WORKER_HEARTBEAT_TTL, worker_heartbeat
from monitor.metrics import increment, metric, tenant_increment
from monitor.redis_conn import REDIS_UNAVAILABLE
from monitor.settings import TenantConfig
from monitor.sinks.actors import run_actors
from monitor.supervise import Health, Supervisor
from monitor.sync import START_WAIT, SourceFailed, catch_up, deliver, keep_delivered, publish_tenant, run_source

log = logging.getLogger(__name__)

READ_COUNT = 1000
# A reader waiting for hints wakes at least this often (to notice a stop, or hints to claim).
READ_BLOCK_MS = 1000
MAX_CONCURRENT_JOBS = 8
# How often a running worker looks for hints to claim (a dead worker's, or its own failed ones).
CLAIM_EVERY = 1.0
# A dead worker's hint is claimed once idle this long: a worker that is starting (its heartbeat
# not yet written) or that just claimed it itself is not raced.
DEAD_CLAIM_IDLE = 1.0


@dataclass(slots=True)
class WorkerStats:
    jobs: Counter[str] = field(default_factory=Counter)
    hints: int = 0
    dropped: int = 0

    def summary(self) -> str:
        done = ", ".join(f"{k} {v}" for k, v in sorted(self.jobs.items())) or "none"
        return f"jobs: {done}; hints handled {self.hints}, dropped {self.dropped}"


@dataclass(slots=True)
class _Job:
    hint: Hint
    entries: list[str]
    attempts: int = 1


class JobFailed(Exception):
    pass


class Worker:
    def __init__(
        self,
        runtime: Runtime,
        *,
        name: str | None = None,
        burst: bool = False,
        claim_idle: float = 60.0,
        max_attempts: int = 5,
        publish: bool = True,
    ) -> None:
        self.runtime = runtime
        self.redis = runtime.redis
        self.queue = HintQueue(runtime.redis)
        self.name = name or f"{socket.gethostname()}-{os.getpid()}"
        self.burst = burst
        self.claim_idle = claim_idle
        self.max_attempts = max_attempts
        self.publish = publish
        self.stats = WorkerStats()
        self._semaphore = asyncio.Semaphore(MAX_CONCURRENT_JOBS)
        self.health = Health("worker")
        self._resume = False
        self._claimed_at = 0.0
        # Per job key: the run in progress, and the hints that arrived meanwhile (its follow-up).
        self._running: dict[tuple[str, ...], asyncio.Task[None]] = {}
        self._waiting: dict[tuple[str, ...], _Job] = {}
        self._in_hand: set[str] = set()  # ids of the hints being run or waiting: never claimed again
        # Per tenant: the delivery in progress, and whether another must follow it.
        self._delivering: dict[str, asyncio.Task[None]] = {}
        self._deliver_again: set[str] = set()
        self._group: asyncio.TaskGroup | None = None
        self._stop = asyncio.Event()
        self._jobs: dict[str, Callable[[TenantConfig, Hint], Awaitable[None]]] = {
            **{source: self._source for source in SOURCE_JOBS},
            "subscriptions": self._subscriptions_job,
            "lifecycle": self._lifecycle,
            "reconcile": self._reconcile,
            "actors": self._actors,
        }

    async def run(self, stop: asyncio.Event | None = None) -> WorkerStats:
        """Work until `stop` is set (or, in burst mode, until nothing is left to do).

        A long-running worker is supervised (`monitor.supervise`): when Redis goes away it is
        restarted with backoff until Redis answers again. A burst run fails instead: it is a one-off.
        """
        stop = stop or asyncio.Event()
        self._stop = stop
        if self.burst:
            await self._work(stop)
        else:
            await Supervisor(self.redis, self.health).run(lambda: self._work(stop), stop)
        log.info("worker %s stopped; %s", self.name, self.stats.summary())
        return self.stats

    async def _work(self, stop: asyncio.Event) -> None:
        await self.queue.ensure_group()
        # Live before the first read: other workers must not take this one's hints for a dead one's.
        await self._beat()
        # Hints this worker read before a restart are still pending under its name: take them first.
        self._resume, self._claimed_at = True, 0.0
        self._running.clear()
        self._waiting.clear()
        self._in_hand.clear()
        self._delivering.clear()
        self._deliver_again.clear()
        background = [asyncio.create_task(self._heartbeat(), name="heartbeat")]
        if self.publish and self.runtime.publisher is not None and not self.burst:
            background.append(asyncio.create_task(self._publish_loop(stop), name="publisher"))
        if not self.burst:
            background.append(asyncio.create_task(keep_delivered(self.runtime, stop), name="deliverer"))
        try:
            if self.burst:
                await catch_up(self.runtime, wait=START_WAIT)
            # A task group, so that a Redis outage in one job stops the others too: the supervisor
            # restarts the worker, and the hints of every unfinished job are still pending. Leaving
            # it waits for the runs in progress (the graceful stop).
            async with asyncio.TaskGroup() as group:
                self._group = group
                await self._read_loop(stop, background)
            if self.burst and self.publish:
                for tenant in self.runtime.tenants():
                    await publish_tenant(self.runtime, tenant.id)
        finally:
            self._group = None
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            with contextlib.suppress(*REDIS_UNAVAILABLE):  # Redis may be what failed
                await self.redis.delete(worker_heartbeat(self.name))

    async def _read_loop(self, stop: asyncio.Event, background: list[asyncio.Task[None]]) -> None:
        while not stop.is_set():
            _raise_if_ended(background)
            entries = await self._next_batch()
            if entries:
                await self._take(entries)
            elif not self.burst:
                continue
            elif self._running:  # nothing new: wait for a run to end (it may leave a follow-up)
                await asyncio.wait(set(self._running.values()), return_when=asyncio.FIRST_COMPLETED)
            elif await self._drained():
                break

    # -- reading -----------------------------------------------------------------------------
    async def _next_batch(self) -> list[Entry]:
        entries = await self._claim()
        if self._resume:
            entries += await self.queue.read(self.name, block=None, start="0", count=READ_COUNT)
            self._resume = False
        self.health.working()
        # Block only while there is nothing else to read; the read returns as soon as a hint comes.
        entries += await self.queue.read(self.name, block=None if self.burst else READ_BLOCK_MS, count=READ_COUNT)
        return [entry for entry in entries if entry[0] not in self._in_hand]

    async def _claim(self) -> list[Entry]:
        """Hints to take over: those of workers whose heartbeat is gone (they are dead, or stopped
        leaving hints that waited for a follow-up run), at once; and this worker's own that failed,
        once idle for `claim_idle` (a retry). A live worker's hints are left to it. Checked every
        `CLAIM_EVERY` seconds (every read in burst mode)."""
        now = time.monotonic()
        if not self.burst and now - self._claimed_at < CLAIM_EVERY:
            return []
        self._claimed_at = now
        holders = await self.queue.consumers()
        others = [name for name in holders if name != self.name]
        dead = [name for name, alive in zip(others, await self._alive(others), strict=True) if not alive]
        ids: list[str] = []
        for consumer in dead:
            ids += await self.queue.pending_of(consumer, min_idle=DEAD_CLAIM_IDLE, count=READ_COUNT)
        claimed = await self.queue.claim_ids(self.name, ids, min_idle=DEAD_CLAIM_IDLE)
        if self.name in holders:
            own = await self.queue.pending_of(self.name, min_idle=self.claim_idle, count=READ_COUNT)
            retry = [entry_id for entry_id in own if entry_id not in self._in_hand]
            claimed += await self.queue.claim_ids(self.name, retry, min_idle=self.claim_idle)
        if dead and claimed:
            log.info("worker %s: took %d hint(s) of stopped worker(s) %s", self.name, len(claimed), ", ".join(dead))
        return claimed

    async def _alive(self, workers: Sequence[str]) -> list[bool]:
        if not workers:
            return []
        pipeline: Any = self.redis.pipeline(transaction=False)
        for worker in workers:
            pipeline.exists(worker_heartbeat(worker))
        return [bool(found) for found in await pipeline.execute()]

    async def _drained(self) -> bool:
        if not await self.queue.pending():
            return True
        # Someone else's work is pending and not yet claimable: give it time to become so.
        await asyncio.sleep(min(1.0, max(0.05, self.claim_idle / 4)))
        return False

    # -- running -----------------------------------------------------------------------------
    async def _take(self, entries: list[Entry]) -> None:
        # Tenants registered or removed since the last read (one GET when nothing changed).
        await self.runtime.refresh_tenants()
        jobs: dict[tuple[str, ...], _Job] = {}
        invalid = []
        for entry_id, fields in entries:
            hint = Hint.from_fields(fields)
            if hint is None:
                invalid.append(entry_id)
                continue
            job = jobs.setdefault(hint.job_key, _Job(hint, []))
            job.entries.append(entry_id)
        self.stats.hints += len(entries)
        if invalid:
            self.stats.dropped += len(invalid)
            log.warning("worker: dropped %d entries that are not hints", len(invalid))
            await self.queue.done(invalid)
        for key, job in jobs.items():
            self._in_hand.update(job.entries)
            waiting = self._waiting.get(key)
            if waiting is not None:
                waiting.entries += job.entries
            elif key in self._running:
                self._waiting[key] = job  # answered by one follow-up run once this one ends
            else:
                self._start(key, job)

    def _start(self, key: tuple[str, ...], job: _Job) -> None:
        assert self._group is not None
        self._running[key] = self._group.create_task(self._round(key, job), name=f"job {'/'.join(key)}")

    async def _round(self, key: tuple[str, ...], job: _Job) -> None:
        try:
            await self._run(job)
        finally:
            del self._running[key]
            self._in_hand.difference_update(job.entries)
        if self.runtime.tenant(job.hint.tenant) is not None:  # a removed tenant gets no keys written again
            self._want_delivery(job.hint.tenant)
        follow_up = self._waiting.pop(key, None)
        if follow_up is not None:
            if self._stop.is_set():  # stopping: its hints stay pending for whoever runs next
                self._in_hand.difference_update(follow_up.entries)
            else:
                self._start(key, follow_up)

    def _want_delivery(self, tenant: str) -> None:
        """Deliver the tenant's new change records: at once, or after the delivery in progress."""
        if tenant in self._delivering:
            self._deliver_again.add(tenant)
        else:
            assert self._group is not None
            self._delivering[tenant] = self._group.create_task(self._delivery(tenant), name=f"deliver {tenant}")

    async def _delivery(self, tenant: str) -> None:
        try:
            while True:
                self._deliver_again.discard(tenant)
                await self._deliver(tenant)
                if tenant not in self._deliver_again:
                    break
        finally:
            del self._delivering[tenant]

    async def _run(self, job: _Job) -> None:
        async with self._semaphore:
            outcome = "done"
            try:
                await self._dispatch(job.hint)
            except (SourceFailed, JobFailed) as exc:
                outcome = "failed"
                await self._failed(job, exc)
            except REDIS_UNAVAILABLE:
                raise  # not the job's fault: the supervisor waits for Redis and restarts the worker
            except Exception:
                outcome = "failed"
                log.exception("worker: job %s crashed", job.hint.job_key)
                await self._failed(job, None)
            else:
                await self.queue.done(job.entries)
            if self.runtime.tenant(job.hint.tenant) is None:
                outcome = "unknown_tenant"  # counted deployment-wide: the tenant has no keys any more
            self.stats.jobs[f"{job.hint.job}:{outcome}"] += 1
            series = metric("monitor_jobs_total", job=job.hint.job, outcome=outcome)
            with contextlib.suppress(Exception):
                if outcome == "unknown_tenant":
                    await increment(self.redis, GLOBAL_METRICS, {series: 1})
                else:
                    await tenant_increment(self.redis, job.hint.tenant, {series: 1})

    async def _failed(self, job: _Job, error: BaseException | None) -> None:
        """Leave the hints pending for a retry, unless they have been tried too often."""
        attempts = await self.queue.attempts(job.entries[0])
        # A burst run (a test, a one-off) does not wait for `claim_idle` between tries: two will do.
        limit = min(self.max_attempts, 2) if self.burst else self.max_attempts
        if attempts >= limit:
            log.error("worker: giving up on %s after %d attempts: %s", job.hint.job_key, attempts, error)
            await self.queue.done(job.entries)
            self.stats.dropped += len(job.entries)
        else:
            log.warning("worker: %s failed (attempt %d), will retry: %s", job.hint.job_key, attempts, error)

    async def _dispatch(self, hint: Hint) -> None:
        tenant = self.runtime.tenant(hint.tenant)
        if tenant is None:
            log.warning("worker: hint for unknown tenant %s dropped", hint.tenant)
            return
        await self._jobs[hint.job](tenant, hint)

    # -- the jobs (`monitor.hints.JOBS`) ---------------------------------------------------------
    async def _source(self, tenant: TenantConfig, hint: Hint) -> None:
        await run_source(self.runtime.context(tenant), hint.job)

    async def _subscriptions_job(self, tenant: TenantConfig, hint: Hint) -> None:
        await self._subscriptions(tenant)

    async def _reconcile(self, tenant: TenantConfig, hint: Hint) -> None:
        if self.runtime.publisher is not None:
            await self.runtime.publisher.reconcile(tenant)

    async def _actors(self, tenant: TenantConfig, hint: Hint) -> None:
        await run_actors(self.runtime.context(tenant), self.runtime.alert_dispatcher(), self.runtime.settings)

    async def _subscriptions(self, tenant: TenantConfig) -> None:
        manager = self._manager(tenant)
        if manager is None:
            return
        report = await manager.reconcile(self.runtime.clock())
        await self.runtime.store(tenant.id).record_status("subscriptions", _report_status(report, self.runtime))
        for name in report.lost:
            # The subscription was gone: notifications may have been missed meanwhile.
            await run_source(self.runtime.context(tenant), name)
        if report.errors:
            raise JobFailed("; ".join(f"{k}: {v}" for k, v in report.errors.items()))

    async def _lifecycle(self, tenant: TenantConfig, hint: Hint) -> None:
        manager = self._manager(tenant)
        if manager is None:
            return
        record = (await manager.records()).get(hint.subscription)
        resource = "" if record is None else record["resource"]
        source = next((name for name, path in RESOURCES.items() if path == resource), None)
        if hint.event == "reauthorizationRequired":
            # Renewing also reauthorizes (docs/graph.md 5.1); never a reauthorize and a renew both.
            outcome = await manager.renew(hint.subscription, self.runtime.clock())
            log.info("tenant %s: reauthorizationRequired for %s: %s", tenant.id, hint.subscription, outcome)
            if outcome not in ("lost", "unknown"):
                return
        # subscriptionRemoved, missed, or a renewal that found the subscription gone: make sure
        # the subscriptions exist, and read what may have been missed (docs/graph.md 5.2-5.3).
        if hint.event != "missed" or source is None:
            await self._subscriptions(tenant)
        for name in [source] if source else list(RESOURCES):
            await run_source(self.runtime.context(tenant), name)

    def _manager(self, tenant: TenantConfig) -> SubscriptionManager | None:
        public_url = self.runtime.settings.public_url
        if public_url is None:
            return None
        return SubscriptionManager(
            self.runtime.graph,
            self.runtime.store(tenant.id),
            public_url,
            renew_before=self.runtime.settings.subscription_renew_before,
        )

    async def _deliver(self, tenant: str) -> None:
        try:
            await deliver(self.runtime, tenant, publish=self.burst and self.publish)
        except Exception as exc:  # a sink being down must not stop the worker; the cursor waits
            log.error("worker: delivering tenant %s's changes failed: %s", tenant, exc)

    # -- background --------------------------------------------------------------------------
    async def _beat(self) -> None:
        await self.redis.set(worker_heartbeat(self.name), self.runtime.clock().isoformat(), ex=WORKER_HEARTBEAT_TTL)

    async def _heartbeat(self) -> None:
        # The first beat was sent before the first read (`_work`).
        while True:
            await asyncio.sleep(WORKER_HEARTBEAT_TTL / 3)
            await self._beat()
            # Also when no hints come: the publisher loop follows the registered tenants.
            await self.runtime.refresh_tenants()

    async def _publish_loop(self, stop: asyncio.Event) -> None:
        publisher = self.runtime.publisher
        assert publisher is not None
        await publisher.run(self.runtime.tenants, stop)


def _report_status(report: Any, runtime: Runtime) -> dict[str, Any]:
    return {
        "checked_at": runtime.clock().isoformat(),
        "created": ",".join(report.created),
        "renewed": ",".join(report.renewed),
        "adopted": ",".join(report.adopted),
        "deleted": len(report.deleted),
        "error": "; ".join(f"{k}: {v}" for k, v in report.errors.items()),
    }


def _raise_if_ended(tasks: list[asyncio.Task[None]]) -> None:
    """The worker's background tasks run as long as it does; one that ended failed (its error is
    raised, so the supervisor restarts the whole worker rather than letting it run without)."""
    for task in tasks:
        if task.done():
            task.result()
            raise RuntimeError(f"worker: the {task.get_name()} task ended")
