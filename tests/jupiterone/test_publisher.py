"""The publisher against the real Redis and the simulated JupiterOne: JupiterOne follows the mirror."""

from __future__ import annotations

import redis.asyncio as aioredis

from monitor.app import Runtime
from monitor.model.account import map_account
from monitor.model.groups import GROUP_FAMILY, map_member_change
from monitor.model.types import entity_placement
from monitor.model.users import USER_FAMILY, map_user
from monitor.scopes import UploadScope, scope_of, upload_scopes_of
from monitor.settings import Settings, TenantConfig
from monitor.simulator.jupiterone import SimJupiterOne, serve_jupiterone
from monitor.sinks.j1_client import JOB_ERROR_COUNTERS
from monitor.sinks.jupiterone import Publisher, j1_scope_name
from monitor.store import TenantStore
from monitor.sync import deliver
from tests.conftest import RedisServer
from tests.data import graph_directory as gd
from tests.jupiterone.conftest import Sleeps, make_settings
from tests.jupiterone.directory import (
    ACCOUNT_KEY,
    GENERATED_GROUPS,
    GENERATED_USERS,
    PREFIX,
    TENANT_ID,
    assert_j1_matches_mirror,
    commit,
    dirty_counters,
    generated_user,
    group_deletion,
    mark_every_scope_dirty,
    placeholder_deletion,
    removed,
    seed,
    user_deletion,
    user_member,
)


async def dirty_scopes(redis: aioredis.Redis) -> set[str]:
    """The dirty upload scopes (`F:b`)."""
    return {str(scope) for scope in upload_scopes_of(await dirty_counters(TenantStore(redis, TENANT_ID)))}


async def test_first_publication_equals_the_mirror(
    j1: SimJupiterOne, publisher: Publisher, store: TenantStore, tenant: TenantConfig, redis: aioredis.Redis
) -> None:
    await seed(store)
    scopes = await dirty_scopes(redis)

    result = await publisher.publish_pending(tenant)

    assert result.failures == [] and result.rejected == [] and result.job_errors == {}
    assert sorted(result.published) == sorted(scopes) and result.jobs == len(scopes)  # each once
    await assert_j1_matches_mirror(j1, store)
    assert await dirty_scopes(redis) == set()
    # Every scope is one DIFF job (`source: api`) holding its entities and their relationships.
    assert {(job.sync_mode, job.source) for job in j1.jobs.values()} == {("DIFF", "api")}
    assert all(job.status == "FINISHED" for job in j1.jobs.values())
    assert all(not any(job.view()[name] for name in JOB_ERROR_COUNTERS) for job in j1.jobs.values())


async def test_updates_and_deletions_of_users_groups_and_memberships_follow(
    j1: SimJupiterOne, publisher: Publisher, store: TenantStore, tenant: TenantConfig, redis: aioredis.Redis
) -> None:
    await seed(store)
    await publisher.publish_pending(tenant)
    jobs_before = len(j1.jobs)

    promoted = generated_user(1, jobTitle="Engineering Manager")
    gone_user = GENERATED_USERS[2]
    group = GENERATED_GROUPS[0]
    newcomer = generated_user(99)
    await commit(store, map_user(promoted, account_key=ACCOUNT_KEY))
    await commit(store, map_user(newcomer, account_key=ACCOUNT_KEY))
    await commit(store, map_member_change(group["id"], user_member(newcomer)))
    # A deleted user: its entity and HAS edge, and its memberships as the groups delta reports them.
    await commit(store, user_deletion(gone_user["id"]))
    for other in GENERATED_GROUPS:
        if user_member(gone_user) in other["members@delta"]:
            await commit(store, map_member_change(other["id"], removed(user_member(gone_user))))
    # A removed membership, and a deleted group with its memberships and its placeholder member.
    await commit(store, map_member_change(gd.GROUP_M365["id"], removed(gd.MEMBER_USER)))
    await commit(store, await group_deletion(store, gd.GROUP_SECURITY["id"]))
    await commit(store, [placeholder_deletion(gd.MEMBER_DEVICE["id"])])
    changed = await dirty_scopes(redis)

    result = await publisher.publish_pending(tenant)

    assert result.failures == [] and sorted(result.published) == sorted(changed)
    assert len(j1.jobs) == jobs_before + len(changed)  # only the changed scopes were uploaded
    await assert_j1_matches_mirror(j1, store)
    graph = j1.graph_for_prefix(f"{PREFIX}/{TENANT_ID}/")
    assert graph.entities[promoted["id"]]["jobTitle"] == "Engineering Manager"
    assert gone_user["id"] not in graph.entities and gd.GROUP_SECURITY["id"] not in graph.entities
    assert gd.MEMBER_DEVICE["id"] not in graph.entities
    assert f"{gd.GROUP_M365['id']}|has|{gd.MEMBER_USER['id']}" not in graph.relationships
    assert f"{group['id']}|has|{newcomer['id']}" in graph.relationships


async def test_a_scope_emptied_by_deletions_is_published_as_an_empty_diff(
    j1: SimJupiterOne, publisher: Publisher, store: TenantStore, tenant: TenantConfig
) -> None:
    user = generated_user(7)
    account = map_account(gd.ORGANIZATION, key=ACCOUNT_KEY, display_name="Contoso")
    await commit(store, [account, *map_user(user, account_key=ACCOUNT_KEY)])
    await publisher.publish_pending(tenant)
    user_scope = j1_scope_name(PREFIX, TENANT_ID, scope_of(entity_placement(USER_FAMILY, user["id"])).upload)
    assert set(j1.entities(user_scope)) == {(user_scope, user["id"])}
    assert set(j1.relationships(user_scope)) == {(user_scope, f"{ACCOUNT_KEY}|has|{user['id']}")}

    await commit(store, user_deletion(user["id"]))
    result = await publisher.publish_pending(tenant)

    # The user and its account HAS edge went in one job: the user's scope, now empty.
    assert result.failures == [] and result.objects == 0 and result.jobs == 1
    assert j1.entities(user_scope) == {} and j1.relationships() == {}
    last = j1.jobs_for_scope(user_scope)[-1]
    assert (last.sync_mode, last.status) == ("DIFF", "FINISHED")
    assert (last.counters["numEntitiesDeleted"], last.counters["numRelationshipsDeleted"]) == (1, 1)
    # Nothing to upload: the job is created and finalized without an upload request.
    assert not [r for r in j1.requests if r.job_id == last.id and r.path.endswith(("/entities", "/relationships"))]
    await assert_j1_matches_mirror(j1, store)


async def test_account_name_tag_on_every_entity_when_the_tenant_asks(
    j1: SimJupiterOne, publisher: Publisher, store: TenantStore
) -> None:
    await seed(store)
    tagged = TenantConfig(id=TENANT_ID, account_name="Contoso EU", tag_account_name=True)

    await publisher.publish_pending(tagged)

    await assert_j1_matches_mirror(j1, store, account_name="Contoso EU")
    assert all("tag.AccountName" not in rel for rel in j1.relationships().values())


async def test_no_tag_without_tagging(j1: SimJupiterOne, publisher: Publisher, store: TenantStore) -> None:
    await seed(store)
    await publisher.publish_pending(TenantConfig(id=TENANT_ID, account_name="Contoso EU"))
    assert all("tag.AccountName" not in entity for entity in j1.entities().values())


async def test_relationships_travel_with_their_anchor_and_label_their_far_end(
    j1: SimJupiterOne, publisher: Publisher, store: TenantStore, tenant: TenantConfig
) -> None:
    await seed(store)
    await publisher.publish_pending(tenant)
    group_id = gd.GROUP_ROLE_ASSIGNABLE["id"]

    def upload_scope(family: str, key: str) -> str:
        return j1_scope_name(PREFIX, TENANT_ID, scope_of(entity_placement(family, key)).upload)

    group_scope = upload_scope(GROUP_FAMILY, group_id)
    # The group's memberships are in the group's own scope, the one its DIFF job replaces.
    edges = {key: rel for (_, key), rel in j1.relationships(group_scope).items() if key.startswith(group_id)}
    nested = edges[f"{group_id}|has|{gd.MEMBER_GROUP['id']}"]
    service_principal = edges[f"{group_id}|has|{gd.MEMBER_SERVICE_PRINCIPAL['id']}"]
    assert nested["_fromEntityScope"] == group_scope and "_fromEntitySource" not in nested
    assert (nested["_toEntitySource"], nested["_toEntityScope"]) == (
        "api",
        upload_scope(GROUP_FAMILY, gd.MEMBER_GROUP["id"]),
    )
    assert service_principal["_toEntityScope"] == upload_scope("azure_group_member", gd.MEMBER_SERVICE_PRINCIPAL["id"])
    # account HAS user lives with its user; the account, in its own scope, is the labelled end.
    user_scope = upload_scope(USER_FAMILY, gd.USER_FULL["id"])
    account_edge = j1.relationships(user_scope)[(user_scope, f"{ACCOUNT_KEY}|has|{gd.USER_FULL['id']}")]
    account_scope = j1_scope_name(PREFIX, TENANT_ID, UploadScope("microsoft_365_account", 0))
    assert (account_edge["_fromEntitySource"], account_edge["_fromEntityScope"]) == ("api", account_scope)
    assert "_toEntitySource" not in account_edge and account_edge["_toEntityScope"] == user_scope


async def test_a_repeated_upload_changes_nothing(
    j1: SimJupiterOne, publisher: Publisher, store: TenantStore, tenant: TenantConfig
) -> None:
    await seed(store)
    first = await publisher.publish_pending(tenant)
    jobs_before = set(j1.jobs)
    await mark_every_scope_dirty(store)

    again = await publisher.publish_pending(tenant)

    assert again.failures == [] and again.jobs == first.jobs
    for job_id in set(j1.jobs) - jobs_before:
        counters = j1.jobs[job_id].counters
        changed = [name for name, count in counters.items() if count and not name.endswith("Uploaded")]
        assert changed == [], (j1.jobs[job_id].scope, changed)
    await assert_j1_matches_mirror(j1, store)


async def test_reconcile_repairs_a_lost_dirty_mark(
    j1: SimJupiterOne, publisher: Publisher, store: TenantStore, tenant: TenantConfig, redis: aioredis.Redis
) -> None:
    await seed(store)
    await publisher.publish_pending(tenant)
    await commit(store, map_user(generated_user(3, jobTitle="Architect"), account_key=ACCOUNT_KEY))
    await redis.delete(store.keys.dirty)  # the mark is lost (say, a restored Redis backup)
    assert (await publisher.publish_pending(tenant)).jobs == 0
    assert j1.graph_for_prefix(f"{PREFIX}/{TENANT_ID}/").entities[generated_user(3)["id"]]["jobTitle"] == "Engineer"

    report = await publisher.reconcile(tenant)

    # Read back, found in the user's scope only, and only that scope re-published.
    assert report.drift == {"azure_user": {"changed": 1}} and report.repair is not None
    assert report.repair.failures == [] and report.repair.jobs == 1
    await assert_j1_matches_mirror(j1, store)


async def test_deliver_after_a_sync_publishes(
    j1: SimJupiterOne, settings: Settings, store: TenantStore, redis: aioredis.Redis
) -> None:
    runtime = Runtime(settings, redis, publisher=Publisher(redis, settings, sleep=Sleeps()))
    await seed(store)
    try:
        await deliver(runtime, TENANT_ID)
    finally:
        assert runtime.publisher is not None
        await runtime.publisher.close()
    await assert_j1_matches_mirror(j1, store)
    assert await dirty_scopes(redis) == set()


async def test_publishes_over_https_with_the_ca_bundle(
    redis: aioredis.Redis, redis_server: RedisServer, store: TenantStore, tenant: TenantConfig
) -> None:
    sim = SimJupiterOne()
    async with serve_jupiterone(sim, tls=True) as running:
        assert running.url.startswith("https://") and running.ca_bundle_path is not None
        publisher = Publisher(redis, make_settings(redis_server, running), sleep=Sleeps())
        await seed(store)
        try:
            result = await publisher.publish_pending(tenant)
        finally:
            await publisher.close()
    assert result.failures == []
    await assert_j1_matches_mirror(sim, store)
