"""Nothing lost: killed publishers, outages, throttling, refusals and invalid objects."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from dataclasses import dataclass, field

import orjson
import pytest
import redis.asyncio as aioredis

from monitor.metrics import render
from monitor.model.types import Upsert, entity_placement
from monitor.model.users import USER_FAMILY, map_user
from monitor.scopes import scope_of, upload_scopes_of
from monitor.settings import Settings, TenantConfig
from monitor.simulator.jupiterone import RunningJupiterOne, SimJupiterOne, serve_jupiterone
from monitor.sinks.j1_state import Backoff
from monitor.sinks.jupiterone import Publisher, j1_scope_name, publishing_status, render_publishing
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
USER_SCOPE = scope_of(entity_placement(USER_FAMILY, USER["id"]))  # the user's mirror scope (dirty entry)
USER_UPLOAD = USER_SCOPE.upload  # the upload scope holding the user and its account HAS edge
USER_J1_SCOPE = j1_scope_name(PREFIX, TENANT_ID, USER_UPLOAD)


async def dirty(redis: aioredis.Redis) -> dict[str, int]:
    return await dirty_counters(TenantStore(redis, TENANT_ID))


async def metric_value(redis: aioredis.Redis, series: str) -> int:
    value = await redis.hget(TenantStore(redis, TENANT_ID).keys.metrics, series)
    return int(value or 0)


@dataclass
class Clock:
    """A clock the test moves by hand (backoff deadlines are compared with it)."""

    now: float = field(default_factory=time.time)

    def __call__(self) -> float:
        return self.now


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

    assert result.failures == [] and str(USER_UPLOAD) in result.published
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
    assert failed.postponed == len(upload_scopes_of(dirty_before)) - len(failed.failures)
    assert len(j1.requests) == len(failed.failures) * (1 + publisher.client.policy.max_retries)
    status = await publishing_status(redis, TENANT_ID)
    assert status["last_error"] and status["errors"][0]["message"].count("503")
    assert publisher.client.stats.retries > 0
    # One line says what is going on, and a gauge shows it.
    assert status["problem"]["reason"] == "unavailable" and status["backoff"] == []
    assert [line for line in render_publishing(status) if "j1 PROBLEM" in line][0].count("JupiterOne is unavailable")
    assert await metric_value(redis, 'monitor_j1_problem{reason="unavailable"}') == 1

    j1.clear_faults()
    recovered = await publisher.publish_pending(tenant)

    assert recovered.failures == [] and await dirty(redis) == {}  # every dirty scope went out
    await assert_j1_matches_mirror(j1, store)
    assert (await publishing_status(redis, TENANT_ID))["problem"] is None
    assert await metric_value(redis, 'monitor_j1_problem{reason="unavailable"}') == 0


async def test_an_outage_in_the_middle_of_a_pass_postpones_the_later_waves(
    j1: SimJupiterOne, publisher: Publisher, store: TenantStore, tenant: TenantConfig, redis: aioredis.Redis
) -> None:
    await seed(store)
    blocker = j1.block("status")  # the account's job gets through; JupiterOne goes down behind it
    running = asyncio.create_task(publisher.publish_pending(tenant))
    await blocker.arrived.wait()
    j1.down(requests=10_000)
    blocker.release()
    result = await running

    assert result.published and result.failures  # some scopes confirmed, others not
    # Every other scope stays dirty untried, the groups (whose memberships need the users) in any case.
    uploads = upload_scopes_of(str(scope) for scope in await store.known_scopes())
    assert result.postponed == len(uploads) - len(result.published) - len(result.failures)
    assert not [job for job in j1.jobs.values() if "azure_user_group:" in job.scope]

    j1.clear_faults()
    await publisher.publish_pending(tenant)
    await assert_j1_matches_mirror(j1, store)
    assert await dirty(redis) == {}


async def test_throttling_is_retried_after_ratelimit_reset(
    j1: SimJupiterOne, publisher: Publisher, store: TenantStore, tenant: TenantConfig, sleeps: Sleeps
) -> None:
    await commit(store, map_user(USER, account_key=ACCOUNT_KEY)[:1])
    j1.throttle(requests=3, reset=7)  # 429 with RateLimit-* and no Retry-After (docs/jupiterone.md 10.4)

    result = await publisher.publish_pending(tenant)

    assert result.failures == [] and publisher.client.stats.throttled == 3
    assert len(sleeps.delays) == 3 and all(delay >= 7 for delay in sleeps.delays)
    await assert_j1_matches_mirror(j1, store)


async def test_a_relationship_sent_before_its_new_end_is_sent_again_after_it(
    j1: SimJupiterOne, publisher: Publisher, store: TenantStore, tenant: TenantConfig, redis: aioredis.Redis
) -> None:
    """A new user and its membership: the group's scope published before the user's (its job reports
    a relationship create error) is tried again in the next pass, right after the user's."""
    await seed(store)
    await publisher.publish_pending(tenant)
    newcomer, group = generated_user(107), GENERATED_GROUPS[0]
    joined = group_ops([{**group, "members@delta": [user_member(newcomer)]}])
    membership = next(op for op in joined if op.placement.kind == "relationship" and newcomer["id"] in op.key)
    await commit(store, [*user_ops([newcomer]), *joined])
    group_scope = scope_of(membership.placement)

    early = await publisher.publish_scope(tenant, group_scope.upload)

    assert early.job_errors == {str(group_scope.upload): {"numRelationshipCreateErrors": 1}}
    assert str(group_scope) in await dirty(redis)
    status = await publishing_status(redis, TENANT_ID)
    [entry] = status["backoff"]
    assert (entry["scope"], entry["reason"], entry["retry_in_seconds"]) == (str(group_scope.upload), "job_errors", 0)
    assert await metric_value(redis, 'monitor_j1_job_errors_total{counter="numRelationshipCreateErrors"}') == 1

    await publisher.publish_pending(tenant)
    await assert_j1_matches_mirror(j1, store)
    assert await dirty(redis) == {} and (await publishing_status(redis, TENANT_ID))["backoff"] == []


async def test_a_job_with_error_counters_stays_dirty_backs_off_and_is_reported(
    j1: SimJupiterOne,
    redis: aioredis.Redis,
    settings: Settings,
    store: TenantStore,
    tenant: TenantConfig,
) -> None:
    clock = Clock()
    publisher = Publisher(redis, settings, sleep=Sleeps(), clock=clock)
    try:
        await commit(store, map_user(USER, account_key=ACCOUNT_KEY)[:1])
        j1.reject_at_finalize(USER["id"])  # JupiterOne cannot create it: FINISHED, numEntityCreateErrors 1

        first = await publisher.publish_pending(tenant)

        assert first.jobs == 1 and first.job_errors == {str(USER_UPLOAD): {"numEntityCreateErrors": 1}}
        assert [(f.scope, f.reason, f.transient) for f in first.failures] == [(str(USER_UPLOAD), "job_errors", False)]
        assert str(USER_SCOPE) in await dirty(redis) and j1.entities() == {}
        status = await publishing_status(redis, TENANT_ID, now=clock())
        [entry] = status["backoff"]
        assert entry["attempts"] == 1 and settings.j1_scope_backoff / 2 <= entry["retry_in_seconds"] <= 30
        text = "\n".join(render_publishing(status))
        assert f"j1 backoff   {USER_UPLOAD}: job_errors, attempt 1" in text and "numEntityCreateErrors=1" in text
        assert await metric_value(redis, 'monitor_j1_jobs_total{result="errors"}') == 1
        assert await metric_value(redis, "monitor_j1_backoff_scopes") == 1

        assert not await publisher.has_pending(tenant)  # backing off: the worker leaves it be
        waiting = await publisher.publish_pending(tenant)
        assert waiting.jobs == 0 and waiting.backing_off == 1

        clock.now += settings.j1_scope_backoff  # the backoff passed, still refused: it doubles
        second = await publisher.publish_pending(tenant)
        assert second.job_errors and (await publishing_status(redis, TENANT_ID))["backoff"][0]["attempts"] == 2

        j1.accept_all()
        clock.now += 2 * settings.j1_scope_backoff
        third = await publisher.publish_pending(tenant)
    finally:
        await publisher.close()
    assert third.failures == [] and await dirty(redis) == {}
    await assert_j1_matches_mirror(j1, store)
    assert (await publishing_status(redis, TENANT_ID))["backoff"] == []


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

    # Left out and reported: the two users, and their account HAS edges (their end is not sent).
    assert result.failures == [] and result.job_errors == {}
    assert sorted((r.key, r.rule) for r in result.rejected) == sorted(
        [(nested["id"], "nested-object"), (stringly["id"], "timestamp"), *((edge, "end-left-out") for edge in edges)]
    )
    await assert_j1_matches_mirror(j1, store, exclude=[nested["id"], stringly["id"], *edges])  # the rest landed
    status = await publishing_status(redis, TENANT_ID)
    assert status["invalid_objects_left_out"] == 4
    reported = {(e["key"], e["rule"]) for e in status["errors"]}
    assert {(nested["id"], "nested-object"), (stringly["id"], "timestamp")} <= reported
    assert await dirty(redis) == {}

    await commit(store, stringly_ops)  # fixed at the source: the user and its edge go out together
    await publisher.publish_pending(tenant)
    assert stringly["id"] in j1.graph_for_prefix(j1_prefix()).entities
    assert (await publishing_status(redis, TENANT_ID))["invalid_objects_left_out"] == 2
    await assert_j1_matches_mirror(j1, store, exclude=[nested["id"], edges[0]])


async def test_a_4xx_for_one_object_backs_off_with_one_status_line_and_goes_out_when_accepted(
    redis: aioredis.Redis, redis_server: RedisServer, store: TenantStore, tenant: TenantConfig
) -> None:
    sim = SimJupiterOne(max_body_bytes=20_000)  # refuses what our 5 MB requests may carry: 413
    clock = Clock()
    async with serve_jupiterone(sim) as running:
        settings = make_settings(redis_server, running)
        publisher = Publisher(redis, settings, sleep=Sleeps(), clock=clock)
        try:
            await commit(store, map_user({**USER, "jobTitle": "x" * 30_000}, account_key=ACCOUNT_KEY)[:1])
            refused = await publisher.publish_pending(tenant)
            requests = len(sim.requests)
            again = await publisher.publish_pending(tenant)
            status = await publishing_status(redis, TENANT_ID, now=clock())

            sim.max_body_bytes = 6_000_000  # JupiterOne accepts it again
            clock.now += settings.j1_scope_backoff
            accepted = await publisher.publish_pending(tenant)
        finally:
            await publisher.close()

    [failure] = refused.failures
    assert (failure.scope, failure.code, failure.transient, failure.reason) == (
        str(USER_UPLOAD),
        "RequestEntityTooLargeException",
        False,
        "refused",
    )
    assert len([r for r in sim.requests if r.status == 413]) == 1  # not retried at once
    assert [job.status for job in sim.jobs.values()][0] == "ABORTED"
    assert again.jobs == 0 and again.backing_off == 1 and requests == len(sim.requests) - 4  # waited
    [line] = [line for line in render_publishing(status) if "j1 backoff" in line]
    assert f"{USER_UPLOAD}: refused, attempt 1" in line and "413" in line
    assert status["problem"] is None  # one scope's problem, not the tenant's
    assert await metric_value(redis, 'monitor_j1_failures_total{reason="refused"}') == 1
    assert accepted.failures == [] and await dirty(redis) == {}
    await assert_j1_matches_mirror(sim, store)


async def test_a_scope_backing_off_is_tried_again_once_it_changes(
    j1: SimJupiterOne, publisher: Publisher, store: TenantStore, tenant: TenantConfig, redis: aioredis.Redis
) -> None:
    await commit(store, map_user(USER, account_key=ACCOUNT_KEY)[:1])
    counters = f"{(await dirty(redis))[str(USER_SCOPE)]},"
    entry = Backoff(counters, 3, time.time() + 3600, "refused", "test")
    await redis.hset(store.keys.j1_backoff, str(USER_UPLOAD), entry.dumps())
    assert (await publisher.publish_pending(tenant)).jobs == 0

    await commit(store, map_user({**USER, "jobTitle": "Fixed"}, account_key=ACCOUNT_KEY)[:1])
    result = await publisher.publish_pending(tenant)

    assert result.jobs == 1 and await dirty(redis) == {}
    assert await redis.hlen(store.keys.j1_backoff) == 0
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
    assert entry["rule"] == "JOB_NOT_AWAITING_UPLOADS" and entry["scope"] == str(USER_UPLOAD)

    retried = await publisher.publish_pending(tenant)
    assert retried.failures == [] and await dirty(redis) == {}
    await assert_j1_matches_mirror(j1, store)


@pytest.mark.parametrize(
    ("status", "reason", "advice"),
    [(401, "unauthorized", "check MONITOR_J1_API_KEY"), (403, "forbidden", "lacks a permission")],
)
async def test_a_refused_key_gives_one_status_line_a_metric_and_loses_nothing(
    status: int,
    reason: str,
    advice: str,
    j1: SimJupiterOne,
    publisher: Publisher,
    store: TenantStore,
    tenant: TenantConfig,
    redis: aioredis.Redis,
) -> None:
    await seed(store)
    dirty_before = await dirty(redis)
    j1.fail(status, requests=10_000)  # a revoked key, or a key without the permission

    refused = await publisher.publish_pending(tenant)

    assert [(f.reason, f.transient) for f in refused.failures] == [(reason, True)]
    assert len(j1.requests) == 1  # not retried, and the rest of the pass waits untouched
    assert await dirty(redis) == dirty_before
    state = await publishing_status(redis, TENANT_ID)
    assert state["backoff"] == [] and state["problem"]["reason"] == reason
    [line] = [line for line in render_publishing(state) if "j1 PROBLEM" in line]
    assert advice in line and f"{len(upload_scopes_of(dirty_before))} scopes wait" in line
    assert await metric_value(redis, f'monitor_j1_problem{{reason="{reason}"}}') == 1
    assert await metric_value(redis, f'monitor_j1_failures_total{{reason="{reason}"}}') == 1
    scraped = (await render(redis, [TENANT_ID])).splitlines()  # what /metrics serves
    assert "# TYPE monitor_j1_problem gauge" in scraped
    assert f'monitor_j1_problem{{tenant="{TENANT_ID}",reason="{reason}"}} 1' in scraped

    j1.clear_faults()  # the key is fixed
    fixed = await publisher.publish_pending(tenant)

    assert fixed.failures == [] and await dirty(redis) == {}
    await assert_j1_matches_mirror(j1, store)
    assert (await publishing_status(redis, TENANT_ID))["problem"] is None
    assert await metric_value(redis, f'monitor_j1_problem{{reason="{reason}"}}') == 0


async def test_a_wrong_api_key_leaves_every_scope_dirty_and_nothing_backing_off(
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
            assert (await publishing_status(redis, TENANT_ID))["backoff"] == []

            fixed = await right.publish_pending(tenant)
        finally:
            await wrong.close()
            await right.close()
    assert fixed.failures == [] and await dirty(redis) == {}
    await assert_j1_matches_mirror(j1, store)
