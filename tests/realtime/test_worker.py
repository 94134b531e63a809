"""The worker and the scheduler against the real Redis and the simulated tenant."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis

from monitor.app import Runtime
from monitor.hints import Hint, HintQueue, enqueue
from monitor.keys import HINTS, worker_heartbeat
from monitor.model.account import account_key
from monitor.scheduler import Scheduler
from monitor.settings import Settings
from monitor.simulator import SimTenant, Simulator, seed
from monitor.store import TenantStore
from monitor.worker import Worker
from tests.conftest import TENANT_ID
from tests.directory_helpers import expected_mirror

ACCOUNT_KEY = account_key(TENANT_ID)


def hints(job: str, count: int, reason: str = "notification") -> list[Hint]:
    return [Hint(TENANT_ID, job, reason) for _ in range(count)]


async def eventually(check: Callable[[], Awaitable[bool]]) -> None:
    """Wait until `check` holds (the suite's per-test timeout bounds the wait)."""
    for _ in itertools.count():
        if await check():
            return
        await asyncio.sleep(0.05)


async def test_a_burst_of_hints_costs_one_round_per_resource(
    runtime: Runtime, tenant: SimTenant, sim: Simulator, redis: aioredis.Redis
) -> None:
    seed(tenant, users=20, groups=3, memberships=30)
    await enqueue(redis, hints("users", 50) + hints("groups", 30) + hints("account", 5, "timer"))
    stats = await Worker(runtime, burst=True).run()
    assert sim.count(r"/v1.0/users/delta") == 1
    assert sim.count(r"/v1.0/groups/delta") == 1
    assert sim.count(r"/v1.0/organization") == 1
    assert stats.hints == 85 and stats.jobs == {"users:done": 1, "groups:done": 1, "account:done": 1}
    assert await redis.xlen(HINTS) == 0
    assert await runtime.store(TENANT_ID).mirror_dump() == expected_mirror(tenant, ACCOUNT_KEY)


async def test_a_worker_killed_mid_round_loses_nothing(
    settings: Settings, tenant: SimTenant, sim: Simulator, redis: aioredis.Redis
) -> None:
    tenant.delta.page_size = 5
    seed(tenant, users=40, groups=2, memberships=10)
    await enqueue(redis, hints("users", 3) + hints("groups", 2))
    # The fourth page of the users round hangs; the first worker dies while waiting for it.
    sim.faults.inject("GET", r"/v1.0/users/delta", kind="delay", seconds=3, after=3)
    first = await Runtime.open(settings)
    doomed = asyncio.create_task(Worker(first, name="doomed", claim_idle=0.2).run())
    store = TenantStore(redis, TENANT_ID)
    await eventually(lambda: _has_records(store))
    doomed.cancel()
    with pytest.raises(asyncio.CancelledError):
        await doomed
    await first.close()
    assert await redis.xlen(HINTS) >= 3, "the dead worker's users hints are still there, unacknowledged"
    sim.faults.clear()

    second = await Runtime.open(settings)
    try:
        await Worker(second, name="survivor", burst=True, claim_idle=0.2).run()
    finally:
        await second.close()
    assert await redis.xlen(HINTS) == 0
    records = await store.read_changes(0, 10_000)
    assert len({(r["kind"], r["key"]) for r in records}) == len(records), "nothing emitted twice"
    assert await store.mirror_dump() == expected_mirror(tenant, ACCOUNT_KEY, account=False)


async def _has_records(store: TenantStore) -> bool:
    return await store.last_seq() > 0


async def test_a_failing_job_is_retried_then_succeeds(
    runtime: Runtime, tenant: SimTenant, sim: Simulator, redis: aioredis.Redis
) -> None:
    seed(tenant, users=8, groups=1, memberships=4)
    sim.faults.inject(
        "GET", r"/v1.0/users/delta", status=400, body={"error": {"code": "BadRequest", "message": "once"}}
    )
    await enqueue(redis, hints("users", 2))
    stats = await Worker(runtime, burst=True, claim_idle=0.1).run()
    assert stats.jobs == {"users:failed": 1, "users:done": 1}
    assert await redis.xlen(HINTS) == 0
    status = await runtime.store(TENANT_ID).status("users")
    assert status["error"] == "" and status["objects"] == "8"


async def test_hints_for_unknown_tenants_and_garbage_are_dropped(
    runtime: Runtime, redis: aioredis.Redis, sim: Simulator
) -> None:
    await enqueue(redis, [Hint("00000000-0000-4000-8000-000000000000", "users", "notification")])
    await redis.xadd(HINTS, {"job": "rm -rf", "tenant": TENANT_ID})
    stats = await Worker(runtime, burst=True).run()
    assert stats.dropped == 1 and stats.hints == 2
    assert await redis.xlen(HINTS) == 0
    assert sim.count(r"/v1.0/") == 0


async def test_one_scheduler_leads_and_enqueues_the_safety_net(settings: Settings, redis: aioredis.Redis) -> None:
    fast = settings.model_copy(update={"delta_interval": 0.3})
    runtimes = [await Runtime.open(fast, graph=False) for _ in range(2)]
    schedulers = [Scheduler(runtime) for runtime in runtimes]
    stop = asyncio.Event()
    tasks = [asyncio.create_task(s.run(stop)) for s in schedulers]
    try:
        await eventually(lambda: _queued_at_least(redis, 6))
    finally:
        stop.set()
        await asyncio.gather(*tasks)
        for runtime in runtimes:
            await runtime.close()
    assert sorted(s.enqueued > 0 for s in schedulers) == [False, True], "exactly one leader enqueued"
    entries: Any = await redis.xrange(HINTS)
    jobs = {fields[b"job"].decode() for _, fields in entries}
    assert jobs == {"account", "users", "groups"}
    assert {fields[b"reason"] for _, fields in entries} == {b"timer"}


async def _queued_at_least(redis: aioredis.Redis, count: int) -> bool:
    length: int = await redis.xlen(HINTS)
    return length >= count


class Running:
    """A long-running worker (not burst) in the background of a test."""

    def __init__(self, runtime: Runtime, **options: Any) -> None:
        self.stop = asyncio.Event()
        self.worker = Worker(runtime, **options)
        self.task = asyncio.create_task(self.worker.run(self.stop))

    async def __aenter__(self) -> Worker:
        return self.worker

    async def __aexit__(self, *exc: object) -> None:
        self.stop.set()
        await self.task


async def _queue_empty(redis: aioredis.Redis) -> bool:
    return await _queued_at_least(redis, 1) is False


async def test_a_hint_for_an_idle_job_runs_at_once_while_another_job_runs(
    runtime: Runtime, tenant: SimTenant, sim: Simulator, redis: aioredis.Redis
) -> None:
    seed(tenant, users=5, groups=1, memberships=2)
    queue = HintQueue(redis)
    # The users round hangs on its delta request until the account hint has been answered.
    sim.faults.inject("GET", r"/v1.0/users/delta", kind="delay", seconds=5)
    async with Running(runtime, publish=False) as worker:
        await enqueue(redis, hints("users", 1))
        await eventually(lambda: _pending_with(queue, worker.name, 1))
        await enqueue(redis, hints("account", 1))
        await eventually(lambda: _account_recorded(runtime))
        assert sim.count(r"/v1.0/organization") == 1
        assert sim.count(r"/v1.0/users/delta") == 0, "the users round is still waiting for Graph"
        assert await redis.xlen(HINTS) == 1, "the users hint waits for its round, the account hint is done"
        sim.faults.clear()


async def _requested(sim: Simulator, path: str) -> bool:
    return sim.count(path) > 0


async def _account_recorded(runtime: Runtime) -> bool:
    status = await runtime.store(TENANT_ID).status("account")
    return bool(status.get("last_round_at"))


async def test_a_burst_during_a_round_is_answered_by_one_follow_up_round_and_loses_no_change(
    runtime: Runtime, tenant: SimTenant, sim: Simulator, redis: aioredis.Redis
) -> None:
    seed(tenant, users=20, groups=2, memberships=10)
    await enqueue(redis, hints("users", 1) + hints("groups", 1))
    await Worker(runtime, burst=True).run()  # the first rounds; the notifications come after
    users = list(tenant.users)
    for user in users[:8]:
        tenant.update_user(user, jobTitle="Changed before the round")
    sim.requests.clear()
    # The next users round takes two pages, and its second page is slow: the burst arrives meanwhile.
    tenant.delta.page_size = 5
    sim.faults.inject("GET", r"/v1.0/users/delta.*skiptoken", kind="delay", seconds=1.0)
    async with Running(runtime, publish=False):
        await enqueue(redis, hints("users", 1))
        await eventually(lambda: _users_rounds_started(sim, 1))
        # Changed while the round runs, after it started reading: a later round must see it.
        tenant.update_user(users[-1], jobTitle="Changed mid-round")
        for _ in range(49):
            await enqueue(redis, hints("users", 1))
        await eventually(lambda: _queue_empty(redis))
    rounds = _users_rounds(sim)
    assert 2 <= rounds <= 3, "the running round, then one follow-up for the whole burst"
    mirrored = await runtime.store(TENANT_ID).mirror_dump()
    assert mirrored == expected_mirror(tenant, ACCOUNT_KEY, account=False), "the mid-round change is mirrored"


def _users_rounds(sim: Simulator) -> int:
    """Incremental users rounds asked of Graph (each starts from a deltaLink: docs/graph.md 7.2)."""
    return sum(1 for r in sim.requests.matching(r"/v1.0/users/delta") if "$deltatoken" in r.query)


async def _users_rounds_started(sim: Simulator, count: int) -> bool:
    return _users_rounds(sim) >= count


async def test_a_stopped_workers_hints_are_claimed_at_once_and_a_live_workers_never(
    runtime: Runtime, tenant: SimTenant, sim: Simulator, redis: aioredis.Redis
) -> None:
    seed(tenant, users=5, groups=1, memberships=2)
    queue = HintQueue(redis)
    await queue.ensure_group()
    await enqueue(redis, hints("users", 2))
    await queue.read("gone", block=None, count=2)  # taken by a worker that then died
    await enqueue(redis, hints("account", 1))
    await queue.read("slow", block=None, count=1)  # taken by a worker still at it
    await redis.set(worker_heartbeat("slow"), "now", ex=60)
    async with Running(runtime, claim_idle=60.0, publish=False):
        await eventually(lambda: _pending_with(queue, "gone", 0))
        await eventually(lambda: _queued_exactly(redis, 1))
    assert await queue.consumers() == {"slow": 1}, "the live worker keeps its hint"
    assert sim.count(r"/v1.0/users/delta") == 1 and sim.count(r"/v1.0/organization") == 0


async def _pending_with(queue: HintQueue, consumer: str, count: int) -> bool:
    return (await queue.consumers()).get(consumer, 0) == count


async def _queued_exactly(redis: aioredis.Redis, count: int) -> bool:
    length: int = await redis.xlen(HINTS)
    return length == count
