"""The worker: reads hints from the stream's consumer group and runs the jobs they ask for.

- Coalescing: hints are read in batches (waiting `MONITOR_COALESCE_WINDOW` after the first of a
  burst) and grouped by job, so one delta round answers every hint queued before it started.
- One runner per (tenant, source): `monitor.sync.run_source` holds a Redis lease, whichever
  worker process runs the job.
- At-least-once: a hint is acknowledged (and deleted) only after its job committed. A worker that
  dies leaves its hints pending; other workers claim them once they have been idle for
  `claim_idle` seconds (XAUTOCLAIM). A job that keeps failing is dropped after `max_attempts`,
  with its error in the tenant's status (the timer brings the job back later anyway).
- Nothing committed waits for the next hint: a starting worker first delivers what earlier runs
  committed and did not deliver (a run killed between its commit and its delivery), and a running
  one checks again every few seconds and retries a failing sink with backoff (`keep_delivered`).
- Burst mode (`monitor worker --burst`, tests, one-off runs) drains the queue and returns.
- Graceful stop: on SIGTERM the worker finishes the jobs in hand and stops reading.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from monitor.app import Runtime
from monitor.graph.subscriptions import RESOURCES, SubscriptionManager
from monitor.hints import SOURCE_JOBS, Hint, ensure_group
from monitor.keys import GLOBAL_METRICS, HINTS, HINTS_GROUP, WORKER_HEARTBEAT_TTL, worker_heartbeat
from monitor.metrics import increment, metric, tenant_increment
from monitor.redis_conn import REDIS_UNAVAILABLE
from monitor.settings import TenantConfig
from monitor.sinks.actors import run_actors
from monitor.supervise import Health, Supervisor
from monitor.sync import START_WAIT, SourceFailed, catch_up, deliver, keep_delivered, publish_tenant, run_source

log = logging.getLogger(__name__)

READ_COUNT = 1000
MAX_CONCURRENT_JOBS = 8


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
        self.name = name or f"{socket.gethostname()}-{os.getpid()}"
        self.burst = burst
        self.claim_idle = claim_idle
        self.max_attempts = max_attempts
        self.publish = publish
        self.coalesce_window = runtime.settings.coalesce_window
        self.stats = WorkerStats()
        self._semaphore = asyncio.Semaphore(MAX_CONCURRENT_JOBS)
        self.health = Health("worker")
        self._resume = False

    async def run(self, stop: asyncio.Event | None = None) -> WorkerStats:
        """Work until `stop` is set (or, in burst mode, until nothing is left to do).

        A long-running worker is supervised (`monitor.supervise`): when Redis goes away it is
        restarted with backoff until Redis answers again. A burst run fails instead: it is a one-off.
        """
        stop = stop or asyncio.Event()
        if self.burst:
            await self._work(stop)
        else:
            await Supervisor(self.redis, self.health).run(lambda: self._work(stop), stop)
        log.info("worker %s stopped; %s", self.name, self.stats.summary())
        return self.stats

    async def _work(self, stop: asyncio.Event) -> None:
        await ensure_group(self.redis)
        # Hints this worker read before a restart are still pending under its name: take them first.
        self._resume = True
        background = [asyncio.create_task(self._heartbeat(), name="heartbeat")]
        if self.publish and self.runtime.publisher is not None and not self.burst:
            background.append(asyncio.create_task(self._publish_loop(stop), name="publisher"))
        if not self.burst:
            background.append(asyncio.create_task(keep_delivered(self.runtime, stop), name="deliverer"))
        try:
            if self.burst:
                await catch_up(self.runtime, wait=START_WAIT)
            while not stop.is_set():
                _raise_if_ended(background)
                entries = await self._next_batch(stop)
                if entries:
                    await self._process(entries)
                elif self.burst and await self._drained():
                    break
            if self.burst and self.publish:
                for tenant in self.runtime.tenants():
                    await publish_tenant(self.runtime, tenant.id)
        finally:
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            with contextlib.suppress(*REDIS_UNAVAILABLE):  # Redis may be what failed
                await self.redis.delete(worker_heartbeat(self.name))

    # -- reading -----------------------------------------------------------------------------
    async def _next_batch(self, stop: asyncio.Event) -> list[tuple[str, dict[Any, Any]]]:
        entries = await self._claim()
        if self._resume:
            entries += await self._read(block=None, start="0")
            self._resume = False
        self.health.working()
        entries += await self._read(block=None if self.burst else 1000)
        if entries and self.coalesce_window > 0 and not stop.is_set():
            # The rest of a burst usually arrives within moments: wait, then take it all.
            await asyncio.sleep(self.coalesce_window)
            entries += await self._read(block=None)
        return entries

    async def _read(self, block: int | None, start: str = ">") -> list[tuple[str, dict[Any, Any]]]:
        """New hints (`start` ">"), or with "0" those read earlier by this worker and still pending."""
        streams: Any = {HINTS: start}
        response: Any = await self.redis.xreadgroup(HINTS_GROUP, self.name, streams, count=READ_COUNT, block=block)
        entries = []
        for _, stream_entries in response or []:
            entries += [(_text(entry_id), fields) for entry_id, fields in stream_entries if fields is not None]
        return entries

    async def _claim(self) -> list[tuple[str, dict[Any, Any]]]:
        """Hints a dead (or failed) worker left pending for longer than `claim_idle`."""
        result: Any = await self.redis.xautoclaim(
            HINTS, HINTS_GROUP, self.name, min_idle_time=int(self.claim_idle * 1000), start_id="0-0", count=READ_COUNT
        )
        claimed = result[1] if result else []
        return [(_text(entry_id), fields) for entry_id, fields in claimed if fields]

    async def _drained(self) -> bool:
        pending: Any = await self.redis.xpending(HINTS, HINTS_GROUP)
        if not pending or not pending.get("pending"):
            return True
        # Someone else's work is pending and not yet claimable: give it time to become so.
        await asyncio.sleep(min(1.0, max(0.05, self.claim_idle / 4)))
        return False

    # -- running -----------------------------------------------------------------------------
    async def _process(self, entries: list[tuple[str, dict[Any, Any]]]) -> None:
        # Tenants registered or removed since the last batch (one GET when nothing changed).
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
            await self._ack(invalid)
        # A task group, so that a Redis outage in one job stops the others too: the supervisor
        # restarts the worker, and the hints of every unfinished job are still pending.
        async with asyncio.TaskGroup() as group:
            for job in jobs.values():
                group.create_task(self._run(job))
        for tenant in {job.hint.tenant for job in jobs.values()}:
            if self.runtime.tenant(tenant) is not None:  # a removed tenant gets no keys written again
                await self._deliver(tenant)

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
                await self._ack(job.entries)
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
        attempts = await self._attempts(job.entries)
        # A burst run (a test, a one-off) does not wait for `claim_idle` between tries: two will do.
        limit = min(self.max_attempts, 2) if self.burst else self.max_attempts
        if attempts >= limit:
            log.error("worker: giving up on %s after %d attempts: %s", job.hint.job_key, attempts, error)
            await self._ack(job.entries)
            self.stats.dropped += len(job.entries)
        else:
            log.warning("worker: %s failed (attempt %d), will retry: %s", job.hint.job_key, attempts, error)

    async def _attempts(self, entries: Sequence[str]) -> int:
        details: Any = await self.redis.xpending_range(HINTS, HINTS_GROUP, min=entries[0], max=entries[0], count=1)
        return int(details[0]["times_delivered"]) if details else 1

    async def _ack(self, entries: Sequence[str]) -> None:
        if entries:
            pipeline: Any = self.redis.pipeline(transaction=True)
            pipeline.xack(HINTS, HINTS_GROUP, *entries)
            pipeline.xdel(HINTS, *entries)
            await pipeline.execute()

    async def _dispatch(self, hint: Hint) -> None:
        tenant = self.runtime.tenant(hint.tenant)
        if tenant is None:
            log.warning("worker: hint for unknown tenant %s dropped", hint.tenant)
            return
        if hint.job in SOURCE_JOBS:
            await run_source(self.runtime.context(tenant), hint.job)
        elif hint.job == "subscriptions":
            await self._subscriptions(tenant)
        elif hint.job == "lifecycle":
            await self._lifecycle(tenant, hint)
        elif hint.job == "reconcile" and self.runtime.publisher is not None:
            await self.runtime.publisher.reconcile(tenant)
        elif hint.job == "actors":
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
        registry = await manager.registry()
        resource = str(registry.get(hint.subscription, {}).get("resource", ""))
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
    async def _heartbeat(self) -> None:
        while True:
            await self.redis.set(worker_heartbeat(self.name), self.runtime.clock().isoformat(), ex=WORKER_HEARTBEAT_TTL)
            # Also when no hints come: the publisher loop follows the registered tenants.
            await self.runtime.refresh_tenants()
            await asyncio.sleep(WORKER_HEARTBEAT_TTL / 3)

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


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
