"""Bursts, changes during an upload, several publishers, and the worker loop."""

from __future__ import annotations

import asyncio
from collections import defaultdict

import redis.asyncio as aioredis

from monitor.model.types import Op, entity_placement
from monitor.model.users import USER_FAMILY, map_user
from monitor.scopes import scope_of, upload_scopes_of
from monitor.settings import Settings, TenantConfig
from monitor.simulator.jupiterone import SimJupiterOne
from monitor.sinks.jupiterone import Publisher, j1_scope_name
from monitor.store import TenantStore
from tests.jupiterone.conftest import Sleeps
from tests.jupiterone.directory import (
    ACCOUNT_KEY,
    PREFIX,
    TENANT_ID,
    assert_j1_matches_mirror,
    commit,
    dirty_counters,
    generated_user,
    j1_prefix,
    seed,
)

USER = generated_user(9)
USER_SCOPE = scope_of(entity_placement(USER_FAMILY, USER["id"]))
USER_J1_SCOPE = j1_scope_name(PREFIX, TENANT_ID, USER_SCOPE.upload)


def title(n: int) -> list[Op]:
    return list(map_user({**USER, "jobTitle": f"Title {n}"}, account_key=ACCOUNT_KEY)[:1])


async def dirty(redis: aioredis.Redis) -> set[str]:
    return set(await dirty_counters(TenantStore(redis, TENANT_ID)))


async def test_a_burst_of_changes_to_one_scope_costs_one_job(
    j1: SimJupiterOne, publisher: Publisher, store: TenantStore, tenant: TenantConfig
) -> None:
    for n in range(5):
        await commit(store, title(n))  # five pages, five change records, one dirty counter

    result = await publisher.publish_pending(tenant)

    assert result.jobs == 1 and len(j1.jobs_for_scope(USER_J1_SCOPE)) == 1
    assert j1.graph_for_prefix(j1_prefix()).entities[USER["id"]]["jobTitle"] == "Title 4"


async def test_the_debounce_waits_for_a_burst_to_end(
    j1: SimJupiterOne, publisher: Publisher, store: TenantStore, tenant: TenantConfig, sleeps: Sleeps
) -> None:
    await commit(store, title(0))

    async def more_changes(call: int) -> None:
        if call == 1:  # the rest of the burst arrives during the first debounce wait
            for n in range(1, 4):
                await commit(store, title(n))

    sleeps.hook = more_changes
    result = await publisher.publish_pending(tenant, debounce=1.5)

    assert sleeps.delays == [1.5, 1.5]  # counters moved during the first wait, then stayed
    assert result.jobs == 1 and len(j1.jobs_for_scope(USER_J1_SCOPE)) == 1
    assert j1.graph_for_prefix(j1_prefix()).entities[USER["id"]]["jobTitle"] == "Title 3"


async def test_the_debounce_is_capped_so_a_busy_scope_still_publishes(
    j1: SimJupiterOne, redis: aioredis.Redis, settings: Settings, store: TenantStore, tenant: TenantConfig
) -> None:
    sleeps = Sleeps()
    publisher = Publisher(redis, settings.model_copy(update={"j1_max_debounce": 3.0}), sleep=sleeps)
    await commit(store, title(0))

    async def keep_changing(call: int) -> None:
        await commit(store, title(call))

    sleeps.hook = keep_changing
    try:
        result = await publisher.publish_pending(tenant, debounce=1.0)
    finally:
        await publisher.close()

    assert sleeps.delays == [1.0, 1.0, 1.0] and result.jobs == 1


async def test_changes_during_an_upload_keep_the_scope_dirty_and_are_published_next(
    j1: SimJupiterOne, publisher: Publisher, store: TenantStore, tenant: TenantConfig, redis: aioredis.Redis
) -> None:
    await commit(store, title(1))
    blocker = j1.block("finalize")
    running = asyncio.create_task(publisher.publish_pending(tenant))
    await blocker.arrived.wait()
    await commit(store, title(2))  # arrives while "Title 1" is being finalized
    blocker.release()
    first = await running

    assert first.failures == [] and first.jobs == 1
    assert str(USER_SCOPE) in await dirty(redis)
    assert j1.graph_for_prefix(j1_prefix()).entities[USER["id"]]["jobTitle"] == "Title 1"

    second = await publisher.publish_pending(tenant)

    assert second.jobs == 1 and await dirty(redis) == set()
    assert j1.graph_for_prefix(j1_prefix()).entities[USER["id"]]["jobTitle"] == "Title 2"


async def test_two_publishers_never_upload_the_same_scope_at_once(
    j1: SimJupiterOne, redis: aioredis.Redis, settings: Settings, store: TenantStore, tenant: TenantConfig
) -> None:
    await seed(store)
    scopes = upload_scopes_of(await dirty(redis))
    j1.slow_finalize(3)  # jobs stay open over several requests, so that they interleave
    first, second = Publisher(redis, settings, sleep=Sleeps()), Publisher(redis, settings, sleep=Sleeps())
    try:
        results = await asyncio.gather(first.publish_pending(tenant), second.publish_pending(tenant))
    finally:
        await first.close()
        await second.close()

    assert all(r.failures == [] for r in results)
    assert sum(r.jobs for r in results) == len(scopes)  # every scope uploaded exactly once
    by_scope: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for job in j1.jobs.values():
        by_scope[job.scope].append((job.created_seq, job.last_seq))
    assert all(len(spans) == 1 for spans in by_scope.values())
    # They did meet: one found scopes the other held or had just published (and skipped them).
    assert sum(r.skipped for r in results) > 0
    await assert_j1_matches_mirror(j1, store)


async def test_a_scope_held_by_another_publisher_is_not_uploaded(
    j1: SimJupiterOne, publisher: Publisher, store: TenantStore, tenant: TenantConfig, redis: aioredis.Redis
) -> None:
    await commit(store, title(1))
    await redis.set(store.keys.j1_lease(str(USER_SCOPE.upload)), "another-process", px=60_000)

    result = await publisher.publish_scope(tenant, USER_SCOPE.upload)

    assert result.jobs == 0 and result.skipped == 1 and j1.jobs == {}
    assert str(USER_SCOPE) in await dirty(redis)


async def test_the_worker_loop_publishes_until_stopped(
    j1: SimJupiterOne, publisher: Publisher, store: TenantStore, tenant: TenantConfig, redis: aioredis.Redis
) -> None:
    stop = asyncio.Event()
    loop = asyncio.create_task(publisher.run([tenant], stop))
    await seed(store)
    await commit(store, title(7))
    # The loop runs in this process but its progress lives in Redis: poll it (no event to wait on).
    while await dirty(redis):  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    stop.set()
    await loop

    await assert_j1_matches_mirror(j1, store)
    assert j1.graph_for_prefix(j1_prefix()).entities[USER["id"]]["jobTitle"] == "Title 7"
