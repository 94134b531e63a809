"""The scheduler: the clock of the deployment. It only enqueues hints; workers do the work.

Jobs (APScheduler 3.x, `coalesce=True`, `max_instances=1`, a deliberate `misfire_grace_time`):

- every `MONITOR_DELTA_INTERVAL` (15 minutes): the sources scheduled `delta` (monitor.source_registry:
  a delta round of users and groups per tenant, the safety net for notifications Graph dropped
  without telling, docs/graph.md 5.4, and the account);
- every `MONITOR_SUBSCRIPTION_CHECK_INTERVAL` (and at start): subscription upkeep per tenant
  (create, renew, replace; only with `MONITOR_PUBLIC_URL`);
- per tenant, every `polling_interval` (unless DISABLED): the sources scheduled `sweep` (the Intune
  and sign-in sweeps); and every `MONITOR_INTUNE_INCREMENTAL_INTERVAL` (unless 0) those scheduled
  `incremental` (the incremental Intune pass, `intune_live`);
- every `MONITOR_J1_RECONCILE_INTERVAL` (daily): JupiterOne reconciliation (with the publisher);
- every `MONITOR_ACTOR_POLL_INTERVAL` (a minute), per tenant with alert rules: the `actors` job,
  which reads the directory audit log while alerts wait for who made the change.

Several scheduler processes may run (for availability); a Redis lease elects one leader and only
the leader's jobs enqueue anything. Enqueuing twice would be harmless anyway: hints coalesce.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from typing import Protocol

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from monitor.app import Runtime
from monitor.hints import Hint, enqueue
from monitor.keys import SCHEDULER_LEADER
from monitor.leases import Lease
from monitor.metrics import now_ms
from monitor.redis_conn import REDIS_UNAVAILABLE
from monitor.source_registry import scheduled
from monitor.supervise import Health, Supervisor

log = logging.getLogger(__name__)

LEADER_TTL = 30.0
# A job that missed its time (process paused, leader change) still runs if it is this late.
MISFIRE_GRACE = 300


class _Trigger(Protocol):
    @property
    def interval(self) -> timedelta: ...


class _Job(Protocol):
    """What the scheduler reads of an APScheduler job (APScheduler ships no type hints)."""

    @property
    def id(self) -> str: ...

    @property
    def next_run_time(self) -> datetime | None: ...

    @property
    def trigger(self) -> _Trigger: ...

    def remove(self) -> None: ...


class JobScheduler(Protocol):
    """What the scheduler uses of APScheduler's `AsyncIOScheduler`."""

    def get_jobs(self) -> list[_Job]: ...

    def add_job(self, func: Callable[..., Awaitable[None]], trigger: str, **options: object) -> object: ...

    def start(self, *, paused: bool) -> None: ...

    def shutdown(self, *, wait: bool) -> None: ...

    def pause(self) -> None: ...

    def resume(self) -> None: ...


class Scheduler:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.lease = Lease(runtime.redis, SCHEDULER_LEADER, ttl=LEADER_TTL)
        self.leader = False
        self.enqueued = 0
        self._apscheduler: JobScheduler | None = None
        self.health = Health("scheduler")

    def jobs(self) -> list[tuple[str, float, Callable[[], list[Hint]]]]:
        """(name, interval in seconds, the hints it enqueues) for every periodic job."""
        settings = self.runtime.settings
        jobs: list[tuple[str, float, Callable[[], list[Hint]]]] = [
            ("delta", settings.delta_interval, lambda: self._hints(scheduled("delta"), "timer")),
        ]
        if settings.public_url is not None:
            jobs.append(
                (
                    "subscriptions",
                    settings.subscription_check_interval,
                    lambda: self._hints(("subscriptions",), "timer"),
                )
            )
        if self.runtime.publisher is not None:
            jobs.append(("reconcile", settings.j1_reconcile_interval, lambda: self._hints(("reconcile",), "timer")))
        jobs.append(("actors", settings.actor_poll_interval, self._actor_hints))
        for tenant in self.runtime.tenants():
            if tenant.polling_interval is not None:
                tenant_id = tenant.id
                jobs.append(
                    (f"sweep:{tenant_id}", tenant.polling_interval, lambda t=tenant_id: self._sweep_hints(t))  # type: ignore[misc]
                )
                if settings.intune_incremental_interval > 0:
                    jobs.append(
                        (
                            f"sweep:live:{tenant_id}",
                            settings.intune_incremental_interval,
                            lambda t=tenant_id: self._live_hints(t),  # type: ignore[misc]
                        )
                    )
        return jobs

    def sync_sweeps(self) -> None:
        """Add the sweep job of a tenant registered since the start, drop that of one removed (or whose
        interval changed: it comes back with the new one)."""
        scheduler = self._apscheduler
        if scheduler is None:
            return
        wanted = {name: (interval, hints) for name, interval, hints in self.jobs() if name.startswith("sweep:")}
        for job in scheduler.get_jobs():
            if job.id.startswith("sweep:") and (
                job.id not in wanted or job.trigger.interval.total_seconds() != wanted[job.id][0]
            ):
                job.remove()
        present = {job.id for job in scheduler.get_jobs()}
        for name, (interval, hints) in wanted.items():
            if name not in present:
                self._add(scheduler, name, interval, hints, first=self.runtime.clock() + timedelta(seconds=interval))

    def _hints(self, jobs: Sequence[str], reason: str) -> list[Hint]:
        stamp = now_ms()
        return [Hint(tenant, job, reason, at=stamp) for tenant in self.runtime.tenant_ids() for job in jobs]

    def _actor_hints(self) -> list[Hint]:
        """Tenants with alert rules: their alerts may wait for an actor (monitor.sinks.actors)."""
        stamp = now_ms()
        return [Hint(tenant.id, "actors", "timer", at=stamp) for tenant in self.runtime.tenants() if tenant.alerts]

    def _sweep_hints(self, tenant: str) -> list[Hint]:
        stamp = now_ms()
        return [Hint(tenant, job, "timer", at=stamp) for job in scheduled("sweep")]

    def _live_hints(self, tenant: str) -> list[Hint]:
        stamp = now_ms()
        return [Hint(tenant, job, "timer", at=stamp) for job in scheduled("incremental")]

    async def run(self, stop: asyncio.Event) -> None:
        """Hold (or wait for) leadership and run the jobs while leader, until `stop`.

        Supervised (`monitor.supervise`): when Redis goes away the jobs stop with the scheduler, which
        is restarted with backoff until Redis answers again."""
        await Supervisor(self.runtime.redis, self.health).run(lambda: self._run(stop), stop)

    async def _run(self, stop: asyncio.Event) -> None:
        scheduler: JobScheduler = AsyncIOScheduler(timezone="UTC")
        self._apscheduler = scheduler
        start = self.runtime.clock() + timedelta(seconds=1)
        for name, interval, hints in self.jobs():
            self._add(
                scheduler,
                name,
                interval,
                hints,
                first=start if name in ("delta", "subscriptions") else start + timedelta(seconds=interval),
            )
        # A leader restarted after a short Redis outage still holds the lease (it outlives the
        # outage) and renews it; a follower waits for it as before.
        scheduler.start(paused=not self.leader)
        try:
            await self._lead(scheduler, stop)
        finally:
            scheduler.shutdown(wait=False)
            if self.leader and stop.is_set():
                await self.lease.release()

    def _add(
        self, scheduler: JobScheduler, name: str, interval: float, hints: Callable[[], list[Hint]], *, first: datetime
    ) -> None:
        scheduler.add_job(
            self._fire,
            "interval",
            seconds=interval,
            args=[name, hints],
            id=name,
            next_run_time=first,
            coalesce=True,
            max_instances=1,
            misfire_grace_time=MISFIRE_GRACE,
        )

    async def _lead(self, scheduler: JobScheduler, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.runtime.refresh_tenants()
                self.sync_sweeps()
            except REDIS_UNAVAILABLE as exc:
                log.warning("scheduler: cannot re-read the tenant registry: %s", exc)
            held = (self.leader and await self.lease.renew()) or await self.lease.acquire()
            self.health.working()
            if held != self.leader:
                self.leader = held
                (scheduler.resume if held else scheduler.pause)()
                log.info("scheduler: %s", "leading: jobs running" if held else "not the leader: jobs paused")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=LEADER_TTL / 3)

    async def _fire(self, name: str, hints: Callable[[], list[Hint]]) -> None:
        if not self.leader:
            return
        try:
            with contextlib.suppress(*REDIS_UNAVAILABLE):  # the copy in hand serves if Redis blinks
                await self.runtime.refresh_tenants()
            batch = hints()
            await enqueue(self.runtime.redis, batch)
        except Exception as exc:  # the next tick tries again
            log.error("scheduler: %s: cannot enqueue: %s", name, exc)
            return
        except asyncio.CancelledError:
            # The scheduler stopping, or restarting after a Redis outage, cancels a job still
            # waiting for Redis; the next run enqueues again. Not a failure to log with a traceback.
            log.info("scheduler: %s: stopped before its hints were stored", name)
            return
        self.enqueued += len(batch)
        log.info("scheduler: %s: enqueued %d hint(s)", name, len(batch))


def next_runs(scheduler: Scheduler) -> dict[str, datetime | None]:
    """When each job runs next (for status)."""
    if scheduler._apscheduler is None:
        return {}
    return {job.id: job.next_run_time for job in scheduler._apscheduler.get_jobs()}
