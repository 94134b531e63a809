"""Nothing lost: killed publishers, outages, throttling, refusals and invalid objects."""

from __future__ import annotations

import asyncio
import os
import sys

import orjson
import pytest
import redis.asyncio as aioredis

from monitor.model.types import Upsert, entity_placement
from monitor.model.users import USER_FAMILY, map_user
from monitor.scopes import scope_of
from monitor.settings import Settings, TenantConfig
from monitor.simulator.jupiterone import RunningJupiterOne, SimJupiterOne, serve_jupiterone
from monitor.sinks.jupiterone import Publisher, j1_scope_name, publishing_status
from monitor.store import TenantStore
from tests.conftest import RedisServer
from tests.jupiterone.conftest import Sleeps, make_settings
from tests.jupiterone.directory import (
    ACCOUNT_KEY,
    GENERATED_GROUPS,
    PREFIX,
    TENANT_ID,
    assert_j1_matches_mirror,
    commit,
    dirty_counters,
    generated_user,
    group_ops,
    j1_prefix,
    seed,
    user_member,
    user_ops,
)

USER = generated_user(5)
USER_SCOPE = scope_of(entity_placement(USER_FAMILY, USER["id"]))
USER_J1_SCOPE = j1_scope_name(PREFIX, TENANT_ID, USER_SCOPE)


async def dirty(redis: aioredis.Redis) -> dict[str, int]:
    return await dirty_counters(TenantStore(redis, TENANT_ID))


# What the killed publisher's job is left as, per request it was killed in: a job it had not
# finalized is aborted on the way out (9.1); one it had finalized is JupiterOne's to finish.
LEFT_AS = {"entities": "ABORTED", "finalize": "ABORTED", "status": "FINISHED"}


@pytest.mark.parametrize("action", sorted(LEFT_AS))
async def test_a_publisher_killed_mid_job_and_restarted_converges(
    action: str,
    j1: SimJupiterOne,
    publisher: Publisher,
    settings: Settings,
    store: TenantStore,
    tenant: TenantConfig,
    redis: aioredis.Redis,
) -> None:
    """Killed during the upload, during finalize, or after finalize before JupiterOne confirmed."""
    await seed(store)
    await publisher.publish_pending(tenant)
    await commit(store, map_user({**USER, "jobTitle": "Principal Engineer"}, account_key=ACCOUNT_KEY))
    blocker = j1.block(action)
    running = asyncio.create_task(publisher.publish_pending(tenant))
    await blocker.arrived.wait()

    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    blocker.release()
    await blocker.handled.wait()  # JupiterOne still processes what it had received

    killed = j1.jobs_for_scope(USER_J1_SCOPE)[-1]
    assert killed.status == LEFT_AS[action]
    assert str(USER_SCOPE) in await dirty(redis)
    assert (await publishing_status(redis, TENANT_ID))["in_flight"] == []
    restarted = Publisher(redis, settings, sleep=Sleeps())
    try:
        result = await restarted.publish_pending(tenant)
    finally:
        await restarted.close()
    j1.settle()  # anything the killed publisher had finalized is applied, in order

    assert result.failures == [] and str(USER_SCOPE) in result.published
    assert await dirty(redis) == {}
    await assert_j1_matches_mirror(j1, store)  # nothing missing, nothing duplicated
    assert j1.graph_for_prefix(j1_prefix()).entities[USER["id"]]["jobTitle"] == "Principal Engineer"


async def test_jobs_of_a_publisher_that_died_are_aborted_by_the_next(
    j1: SimJupiterOne,
    j1_server: RunningJupiterOne,
    publisher: Publisher,
    redis_server: RedisServer,
    store: TenantStore,
    tenant: TenantConfig,
) -> None:
    """`monitor reconcile` killed with SIGKILL mid-upload cannot abort its open jobs; the next
    publisher of those scopes does, then publishes them."""
    await seed(store)
    blocker = j1.block("entities")
    env = {
        "MONITOR_REDIS_URL": redis_server.url,
        "MONITOR_TENANT_ID": TENANT_ID,
        "MONITOR_SINK": "jupiterone",
        "MONITOR_J1_API_URL": j1_server.url,
        "MONITOR_J1_ACCOUNT": j1.account,
        "MONITOR_J1_API_KEY": j1.api_key,
        "MONITOR_J1_LEASE_TTL": "1",
    }
    if j1_server.ca_bundle_path is not None:
        env["MONITOR_CA_BUNDLE"] = str(j1_server.ca_bundle_path)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MONITOR_")}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "monitor", "reconcile", env={**clean, **env}, stderr=asyncio.subprocess.PIPE
    )
    exited, held = asyncio.create_task(process.wait()), asyncio.create_task(blocker.arrived.wait())
    await asyncio.wait([exited, held], return_when=asyncio.FIRST_COMPLETED)
    held.cancel()
    assert process.returncode is None, (await process.stderr.read()).decode() if process.stderr else ""
    process.kill()
    await exited
    blocker.release()
    await blocker.handled.wait()
    # Jobs it had started uploading to (it records a job before its first upload; one killed
    # between creating a job and recording it cannot be found; never finalized, it changes nothing).
    uploaded = {r.path.rsplit("/", 2)[1] for r in j1.requests if r.path.endswith(("/entities", "/relationships"))}
    left_open = [job for job in j1.jobs.values() if job.status == "AWAITING_UPLOADS" and job.id in uploaded]
    assert left_open  # at least the job whose upload was held

    await publisher.publish_pending(tenant)

    assert {job.status for job in left_open} == {"ABORTED"}
    await assert_j1_matches_mirror(j1, store)
    assert (await publishing_status(store.redis, TENANT_ID))["in_flight"] == []


async def test_jupiterone_down_then_back_converges(
    j1: SimJupiterOne, publisher: Publisher, store: TenantStore, tenant: TenantConfig, redis: aioredis.Redis
) -> None:
    await seed(store)
    dirty_before = await dirty(redis)
    j1.down(requests=10_000)

    failed = await publisher.publish_pending(tenant)

    assert failed.jobs == 0 and failed.failures and all(f.transient for f in failed.failures)
    assert await dirty(redis) == dirty_before  # every scope still dirty
    assert not [r for r in j1.requests if r.status < 400]
    # Only the scopes already started spent their retries; the rest of the pass waits untouched.
    assert len(failed.failures) <= publisher.concurrency
    assert failed.postponed == len(dirty_before) - len(failed.failures)
    assert len(j1.requests) == len(failed.failures) * (1 + publisher.client.policy.max_retries)
    status = await publishing_status(redis, TENANT_ID)
    assert status["last_error"] and status["errors"][0]["message"].count("503")
    assert publisher.client.stats.retries > 0

    j1.clear_faults()
    recovered = await publisher.publish_pending(tenant)

    assert recovered.failures == [] and await dirty(redis) == {}
    await assert_j1_matches_mirror(j1, store)


async def test_an_outage_in_the_middle_of_a_pass_postpones_relationships(
    j1: SimJupiterOne, publisher: Publisher, store: TenantStore, tenant: TenantConfig, redis: aioredis.Redis
) -> None:
    await seed(store)
    blocker = j1.block("status")  # one entity job gets through; JupiterOne goes down behind it
    running = asyncio.create_task(publisher.publish_pending(tenant))
    await blocker.arrived.wait()
    j1.down(requests=10_000)
    blocker.release()
    result = await running

    assert result.published and result.failures  # some entity scopes confirmed, others not
    # Every other scope stays dirty untried, the relationship scopes among them in any case.
    assert result.postponed == len(await store.known_scopes()) - len(result.published) - len(result.failures)
    assert not [job for job in j1.jobs.values() if job.sync_mode == "CROSS_SCOPE"]

    j1.clear_faults()
    await publisher.publish_pending(tenant)
    await assert_j1_matches_mirror(j1, store)
    assert await dirty(redis) == {}


async def test_throttling_is_retried_after_ratelimit_reset(
    j1: SimJupiterOne, publisher: Publisher, store: TenantStore, tenant: TenantConfig, sleeps: Sleeps
) -> None:
    await commit(store, map_user(USER, account_key=ACCOUNT_KEY)[:1])
    j1.throttle(requests=3, reset=7)  # 429 with RateLimit-* and no Retry-After (JUPITERONE.md 10.4)

    result = await publisher.publish_pending(tenant)

    assert result.failures == [] and publisher.client.stats.throttled == 3
    assert len(sleeps.delays) == 3 and all(delay >= 7 for delay in sleeps.delays)
    await assert_j1_matches_mirror(j1, store)


async def test_a_relationship_sent_before_its_new_end_is_sent_again_after_it(
    j1: SimJupiterOne, publisher: Publisher, store: TenantStore, tenant: TenantConfig, redis: aioredis.Redis
) -> None:
    """A user and its membership committed between a pass's entity and relationship phases: the
    membership reaches JupiterOne before its user and is skipped; the next pass sends both."""
    await seed(store)
    await publisher.publish_pending(tenant)
    newcomer, group = generated_user(107), GENERATED_GROUPS[0]
    joined = group_ops([{**group, "members@delta": [user_member(newcomer)]}])
    membership = next(op for op in joined if op.placement.kind == "relationship" and newcomer["id"] in op.key)
    await commit(store, [*user_ops([newcomer]), *joined])

    early = await publisher.publish_scope(tenant, scope_of(membership.placement))

    assert [problem.key for problem in early.skipped_by_jupiterone] == [membership.key]
    assert str(scope_of(membership.placement)) in await dirty(redis)
    await publisher.publish_pending(tenant)
    await assert_j1_matches_mirror(j1, store)
    assert await dirty(redis) == {}


async def test_an_invalid_object_is_reported_and_the_rest_of_its_scope_lands(
    j1: SimJupiterOne, publisher: Publisher, store: TenantStore, tenant: TenantConfig, redis: aioredis.Redis
) -> None:
    await seed(store)
    await publisher.publish_pending(tenant)
    nested, stringly = generated_user(105), generated_user(106)
    nested_ops, stringly_ops = map_user(nested, account_key=ACCOUNT_KEY), map_user(stringly, account_key=ACCOUNT_KEY)
    broken_nested = {**nested_ops[0].obj, "manager": {"id": "x"}}
    broken_time = {**stringly_ops[0].obj, "createdOn": "2024-01-01T00:00:00Z"}
    await commit(store, [Upsert(nested_ops[0].placement, broken_nested), nested_ops[1]])
    await commit(store, [Upsert(stringly_ops[0].placement, broken_time), stringly_ops[1]])
    edges = [f"{ACCOUNT_KEY}|has|{nested['id']}", f"{ACCOUNT_KEY}|has|{stringly['id']}"]

    result = await publisher.publish_pending(tenant)

    assert result.failures == []
    assert sorted((r.key, r.rule) for r in result.rejected) == sorted(
        [(nested["id"], "nested-object"), (stringly["id"], "timestamp")]
    )
    # Their account HAS edges have no end at JupiterOne: it skips them, and that is reported too.
    assert sorted((r.key, r.rule) for r in result.skipped_by_jupiterone) == sorted(
        (edge, "RELATIONSHIP_ENDPOINT_NOT_FOUND") for edge in edges
    )
    await assert_j1_matches_mirror(j1, store, exclude=[nested["id"], stringly["id"], *edges])  # the rest landed
    status = await publishing_status(redis, TENANT_ID)
    assert status["invalid_objects_left_out"] == 2
    reported = {(e["key"], e["rule"]) for e in status["errors"]}
    assert {(nested["id"], "nested-object"), (stringly["id"], "timestamp")} <= reported
    assert await dirty(redis) == {}

    await commit(store, stringly_ops)  # fixed at the source
    await publisher.publish_pending(tenant)
    assert stringly["id"] in j1.graph_for_prefix(j1_prefix()).entities
    assert (await publishing_status(redis, TENANT_ID))["invalid_objects_left_out"] == 1
    # Its unchanged HAS edge is not re-sent by itself; the reconciliation does it.
    await publisher.reconcile(tenant)
    await assert_j1_matches_mirror(j1, store, exclude=[nested["id"], edges[0]])


async def test_a_refused_upload_is_reported_and_set_aside_until_the_scope_changes(
    redis: aioredis.Redis, redis_server: RedisServer, store: TenantStore, tenant: TenantConfig
) -> None:
    sim = SimJupiterOne(max_body_bytes=20_000)  # refuses what our 5 MB requests may carry: 413
    async with serve_jupiterone(sim) as running:
        publisher = Publisher(redis, make_settings(redis_server, running), sleep=Sleeps())
        try:
            await commit(store, map_user({**USER, "jobTitle": "x" * 30_000}, account_key=ACCOUNT_KEY)[:1])
            refused = await publisher.publish_pending(tenant)
            requests = len(sim.requests)
            again = await publisher.publish_pending(tenant)
        finally:
            await publisher.close()

    [failure] = refused.failures
    assert (failure.scope, failure.code, failure.transient) == (
        str(USER_SCOPE),
        "RequestEntityTooLargeException",
        False,
    )
    assert len([r for r in sim.requests if r.status == 413]) == 1  # not retried
    assert [job.status for job in sim.jobs.values()] == ["ABORTED"]
    assert again.jobs == 0 and again.skipped == 1 and len(sim.requests) == requests  # set aside
    status = await publishing_status(redis, TENANT_ID)
    assert status["set_aside_scopes"] == [str(USER_SCOPE)]
    assert status["errors"][0]["rule"] == "RequestEntityTooLargeException"
    assert str(USER_SCOPE) in await dirty(redis)


async def test_a_4xx_scope_is_tried_again_once_it_changes(
    j1: SimJupiterOne, publisher: Publisher, store: TenantStore, tenant: TenantConfig, redis: aioredis.Redis
) -> None:
    await commit(store, map_user(USER, account_key=ACCOUNT_KEY)[:1])
    await redis.hset(store.keys.j1_blocked, str(USER_SCOPE), (await dirty(redis))[str(USER_SCOPE)])
    assert (await publisher.publish_pending(tenant)).jobs == 0

    await commit(store, map_user({**USER, "jobTitle": "Fixed"}, account_key=ACCOUNT_KEY)[:1])
    result = await publisher.publish_pending(tenant)

    assert result.jobs == 1 and await dirty(redis) == {}
    assert await redis.hlen(store.keys.j1_blocked) == 0
    assert j1.graph_for_prefix(j1_prefix()).entities[USER["id"]]["jobTitle"] == "Fixed"


async def test_job_not_awaiting_uploads_is_reported_and_the_scope_stays_dirty(
    j1: SimJupiterOne, publisher: Publisher, store: TenantStore, tenant: TenantConfig, redis: aioredis.Redis
) -> None:
    await commit(store, map_user(USER, account_key=ACCOUNT_KEY)[:1])
    blocker = j1.block("entities")
    running = asyncio.create_task(publisher.publish_pending(tenant))
    await blocker.arrived.wait()
    [job] = j1.jobs.values()
    j1.abort_job(job.id)  # JupiterOne ends the job while our upload is on its way
    blocker.release()
    result = await running

    [failure] = result.failures
    assert failure.code == "JOB_NOT_AWAITING_UPLOADS" and failure.transient
    assert len([r for r in j1.requests if r.path.endswith("/entities")]) == 1  # not retried blindly
    assert str(USER_SCOPE) in await dirty(redis)
    entry = orjson.loads((await redis.lrange(store.keys.j1_errors, 0, 0))[0])
    assert entry["rule"] == "JOB_NOT_AWAITING_UPLOADS" and entry["scope"] == str(USER_SCOPE)

    retried = await publisher.publish_pending(tenant)
    assert retried.failures == [] and await dirty(redis) == {}
    await assert_j1_matches_mirror(j1, store)


async def test_a_wrong_api_key_leaves_every_scope_dirty_and_nothing_set_aside(
    j1: SimJupiterOne, redis: aioredis.Redis, redis_server: RedisServer, store: TenantStore, tenant: TenantConfig
) -> None:
    await commit(store, map_user(USER, account_key=ACCOUNT_KEY)[:1])
    async with serve_jupiterone(j1) as running:
        wrong = Publisher(redis, make_settings(redis_server, running, j1_api_key="revoked"), sleep=Sleeps())
        right = Publisher(redis, make_settings(redis_server, running), sleep=Sleeps())
        try:
            refused = await wrong.publish_pending(tenant)
            assert [(f.code, f.transient) for f in refused.failures] == [("UNAUTHORIZED", True)]
            assert len(j1.requests) == 1  # a 401 is not retried
            assert str(USER_SCOPE) in await dirty(redis)
            assert (await publishing_status(redis, TENANT_ID))["set_aside_scopes"] == []

            fixed = await right.publish_pending(tenant)
        finally:
            await wrong.close()
            await right.close()
    assert fixed.failures == [] and await dirty(redis) == {}
    await assert_j1_matches_mirror(j1, store)
