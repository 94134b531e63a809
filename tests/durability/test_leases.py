"""A killed run blocks the next one for seconds only, and a run that lost its lease cannot write."""

from __future__ import annotations

import asyncio
import signal

import pytest
import redis.asyncio as aioredis

from monitor.simulator import Simulator, seed
from monitor.store import TenantStore
from tests.durability.conftest import Scene, fired, wait_until
from tests.sink_files import read_jsonl
from tests.test_cli import run

# How long a dead run may keep its lease (it used to be a minute).
A_FEW_SECONDS = 10


@pytest.mark.parametrize("command", ["sync", "worker"])
async def test_a_killed_run_holds_its_lease_for_seconds_not_a_minute(command: str, scene: Scene) -> None:
    """kill -9 in the middle of a users round; the successor's users round then needs that lease."""
    seed(scene.tenant, users=30, groups=3, memberships=20)
    path, store = scene.tmp_path / "out.jsonl", scene.store
    env = scene.env(MONITOR_GRAPH_TIMEOUT="300")
    hang = scene.sim.faults.inject("GET", r"/v1.0/users/delta", kind="delay", seconds=8)
    killed = await scene.launch(command, env=env)
    if command == "worker":
        await scene.hint("users")
    await wait_until(lambda: fired(hang), "the users round to start")
    await killed.kill()
    loop = asyncio.get_running_loop()
    killed_at = loop.time()

    # The dead run's lease runs out within seconds (one short TTL): the successor is not held up longer.
    left = [await scene.redis.pttl(key) for key in await _runner_leases(scene.redis, store)]
    assert left and all(0 < ms <= A_FEW_SECONDS * 1000 for ms in left), left

    successor = await scene.launch(command, env=env)
    if command == "worker":
        await scene.hint("account", "users", "groups")
    await wait_until(lambda: _has_delta_link(store), "the successor's users round")
    print(f"{command}: the successor's users round was done {loop.time() - killed_at:.1f} s after the kill")
    if command == "worker":
        # Not `delivered`: the dead worker's own users hint stays pending until a worker claims it,
        # `claim_idle` (a minute) after it was last delivered.
        await wait_until(lambda: _rounds_delivered(store, f"jsonl:{path}"), "the successor's delivery")
        assert await successor.terminate() == 0
    else:
        assert await successor.exited() == 0, successor.stdout + successor.stderr
    await scene.assert_complete(read_jsonl(path))


async def _rounds_delivered(store: TenantStore, sink: str) -> bool:
    """Every directory source has had a round, and the sink took what they committed (a worker
    delivers after the rounds of a batch of hints)."""
    done = [bool((await store.status(source)).get("last_round_at")) for source in ("account", "users", "groups")]
    return all(done) and await store.cursor(sink) == await store.last_seq()


async def _has_delta_link(store: TenantStore) -> bool:
    return await store.delta_state("users") is not None


async def test_a_frozen_run_that_lost_its_lease_cannot_overwrite_its_successor(scene: Scene) -> None:
    """A `monitor sync` is frozen (SIGSTOP: from outside, a long GC pause or a stalled event loop looks
    the same) holding a page Graph answered before the directory changed. Its lease runs out, a
    successor syncs the new state. Thawed, the frozen run tries to commit its stale page: refused by
    Redis (the commit checks the lease token), it says so and exits 1, and the mirror, the change log
    and the sink hold the directory as it is."""
    tenant, store = scene.tenant, scene.store
    tenant.delta.page_size = 5
    seed(tenant, users=20, groups=1, memberships=3)
    env = scene.env(MONITOR_GRAPH_TIMEOUT="300")
    second_page = scene.sim.faults.inject("GET", r"/v1.0/users/delta", kind="delay", seconds=1, after=1)
    frozen = await scene.launch("sync", env=env)
    await wait_until(lambda: fired(second_page), "the frozen run to ask for its second page")
    frozen.signal(signal.SIGSTOP)
    await wait_until(lambda: _answered(scene.sim, 2), "Graph to answer the second page")
    for user in list(tenant.users):
        tenant.update_user(user, jobTitle="Changed while the first run was frozen")
    await wait_until(lambda: _none_held(scene.redis, store), "the frozen run's lease to run out")

    code, out, err = await run("sync", env=env)
    assert code == 0, out + err
    frozen.signal(signal.SIGCONT)

    assert await frozen.exited() == 1
    [failed] = [line for line in frozen.stdout.splitlines() if "FAILED users:" in line]
    assert f"lease {store.keys.lease('')}" in failed and "was lost (expired or taken over)" in failed
    await scene.assert_complete(read_jsonl(scene.tmp_path / "out.jsonl"))


async def _answered(sim: Simulator, requests: int) -> bool:
    return sim.count(r"/v1.0/users/delta") >= requests


async def _runner_leases(redis: aioredis.Redis, store: TenantStore) -> list[bytes]:
    """The tenant's runner leases held now (which lease a source takes is the runner's business)."""
    return [key async for key in redis.scan_iter(match=store.keys.lease_patterns[0])]


async def _none_held(redis: aioredis.Redis, store: TenantStore) -> bool:
    return not await _runner_leases(redis, store)
