"""Every kind of deletion reaches JupiterOne exactly, and drift planted behind monitor's back is found
by `monitor reconcile --check` and repaired by `monitor reconcile`.

Against the simulated JupiterOne with the documented semantics: DIFF deletes what its upload lacks,
CROSS_SCOPE (which monitor no longer uses) deletes nothing, job results are counters only.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis

from monitor.model.groups import map_member_change
from monitor.model.intune_apps import map_installed
from monitor.model.intune_devices import map_device
from monitor.model.types import Delete, Op, Upsert
from monitor.model.users import map_user
from monitor.scopes import upload_scope_of
from monitor.settings import TenantConfig
from monitor.simulator.jupiterone import SimJupiterOne
from monitor.sinks.jupiterone import Publisher, j1_scope_name, publishing_status, render_publishing
from monitor.store import TenantStore
from tests.jupiterone.directory import (
    ACCOUNT_KEY,
    DETECTED,
    DEVICES,
    GENERATED_GROUPS,
    GENERATED_USERS,
    KNOWN_USERS,
    PREFIX,
    TENANT_ID,
    assert_j1_matches_mirror,
    commit,
    group_deletion,
    intune_ops,
    j1_prefix,
    metric_values,
    removed,
    seed,
    user_deletion,
    user_member,
)


async def estate(store: TenantStore) -> None:
    await seed(store)
    await commit(store, intune_ops())


def relationships_of(device: dict[str, Any], verb: str) -> list[Upsert]:
    return [
        op
        for op in map_device(device, known_users=KNOWN_USERS)
        if op.placement.kind == "relationship" and f"|{verb}|" in op.key
    ]


async def membership_removed(store: TenantStore) -> str:
    group = GENERATED_GROUPS[0]
    member = group["members@delta"][0]
    await commit(store, map_member_change(group["id"], removed(member)))
    return f"{group['id']}|has|{member['id']}"


async def device_unassigned(store: TenantStore) -> str:
    device = DEVICES[0]
    gone = [op for verb in ("has", "uses") for op in relationships_of(device, verb)]
    unassigned = map_device({**device, "userId": None, "usersLoggedOn": []}, known_users=KNOWN_USERS)
    await commit(store, [*unassigned, *(Delete(op.placement, op.key) for op in gone)])
    return gone[0].key


async def app_uninstalled(store: TenantStore) -> str:
    device, app = DEVICES[1], DETECTED[1]
    installed = map_installed(app, device["id"], "smartphone")
    await commit(store, [Delete(installed.placement, installed.key)])
    return installed.key


async def user_deleted(store: TenantStore) -> str:
    user = GENERATED_USERS[1]
    ops: list[Op] = list(user_deletion(user["id"]))
    for group in GENERATED_GROUPS:
        if user_member(user) in group["members@delta"]:
            ops += map_member_change(group["id"], removed(user_member(user)))
    ops += [Delete(op.placement, op.key) for op in relationships_of(DEVICES[1], "has")]
    await commit(store, ops)
    return str(user["id"])


async def group_deleted_with_members(store: TenantStore) -> str:
    group = GENERATED_GROUPS[3]
    await commit(store, await group_deletion(store, group["id"]))
    return str(group["id"])


DELETIONS: dict[str, Callable[[TenantStore], Awaitable[str]]] = {
    "membership removed": membership_removed,
    "device unassigned": device_unassigned,
    "app uninstalled": app_uninstalled,
    "user deleted": user_deleted,
    "group deleted with members": group_deleted_with_members,
}


@pytest.mark.parametrize("change", sorted(DELETIONS))
async def test_a_deletion_leaves_jupiterone_equal_to_the_mirror(
    change: str, j1: SimJupiterOne, publisher: Publisher, store: TenantStore, tenant: TenantConfig
) -> None:
    await estate(store)
    await publisher.publish_pending(tenant)
    await assert_j1_matches_mirror(j1, store)

    gone = await DELETIONS[change](store)
    result = await publisher.publish_pending(tenant)

    assert result.failures == [] and result.job_errors == {}
    graph = j1.graph_for_prefix(j1_prefix())
    assert gone not in graph.entities and gone not in graph.relationships
    await assert_j1_matches_mirror(j1, store)
    assert {job.sync_mode for job in j1.jobs.values()} == {"DIFF"}  # CROSS_SCOPE would delete nothing
    report = await publisher.reconcile(tenant, check=True)  # and reading it back agrees
    assert report.error is None and report.drift == {} and report.scopes_pending == 0


async def test_planted_drift_is_found_by_check_and_repaired_by_reconcile(
    j1: SimJupiterOne, publisher: Publisher, store: TenantStore, tenant: TenantConfig, redis: aioredis.Redis
) -> None:
    await estate(store)
    await publisher.publish_pending(tenant)
    prefix = j1_prefix()
    graph = j1.graph_for_prefix(prefix)
    # A stale relationship: a membership JupiterOne keeps although the group no longer has it.
    group, stranger = GENERATED_GROUPS[5], GENERATED_USERS[39]
    group_scope = graph.entities[group["id"]]["_scope"]
    stale = map_member_change(group["id"], user_member(stranger))[0]
    assert isinstance(stale, Upsert)
    assert stale.key not in graph.relationships
    labels = {"_toEntitySource": "api", "_toEntityScope": graph.entities[stranger["id"]]["_scope"]}
    j1.plant_relationship(group_scope, {**stale.obj, **labels})
    # A missing entity (JupiterOne drops its relationships with it), and a changed property.
    missing, changed = GENERATED_USERS[2], GENERATED_USERS[3]
    lost_edges = [
        k for k, r in graph.relationships.items() if missing["id"] in (r["_fromEntityKey"], r["_toEntityKey"])
    ]
    j1.remove_entity(graph.entities[missing["id"]]["_scope"], missing["id"])
    j1.set_property(graph.entities[changed["id"]]["_scope"], changed["id"], "jobTitle", "Chief Drift Officer")
    planted = j1.graph_for_prefix(prefix)
    jobs = len(j1.jobs)

    check = await publisher.reconcile(tenant, check=True)

    memberships_lost = len([k for k in lost_edges if "|has|" in k and not k.startswith("microsoft_365_account")])
    assert check.error is None and check.repair is None
    assert check.drift["azure_user"] == {"changed": 1, "missing": 1}
    assert check.drift["azure_group_has_member"] == {"stale": 1, "missing": memberships_lost}
    assert check.drift["microsoft_365_account_has_azure_user"] == {"missing": 1}
    assert sum(n for counts in check.drift.values() for n in counts.values()) == 3 + len(lost_edges)
    assert len(j1.jobs) == jobs and j1.graph_for_prefix(prefix) == planted  # --check changed nothing
    status = await publishing_status(redis, TENANT_ID)
    [line] = [line for line in render_publishing(status) if "j1 reconcile" in line]
    assert (
        "(check," in line
        and "DRIFT in" in line
        and "not repaired" in line
        and "azure_user 1 changed, 1 missing" in line
    )
    metrics = await metric_values(store)
    assert metrics['monitor_j1_drift_objects{drift="stale",type="azure_group_has_member"}'] == 1
    assert metrics["monitor_j1_drift_scopes"] == len(check.differing)

    repair = await publisher.reconcile(tenant)

    assert repair.drift == check.drift and repair.repair is not None and repair.repair.failures == []
    assert repair.repair.jobs == len(check.differing)  # only the scopes that differ
    await assert_j1_matches_mirror(j1, store)
    clean = await publisher.reconcile(tenant, check=True)
    assert clean.drift == {} and clean.differing == []
    metrics = await metric_values(store)
    assert not [name for name in metrics if name.startswith("monitor_j1_drift_objects")]
    assert metrics["monitor_j1_drift_scopes"] == 0
    assert metrics['monitor_j1_reconciles_total{mode="check",result="drift"}'] == 1


async def test_a_scope_outside_the_layout_is_emptied(
    j1: SimJupiterOne, publisher: Publisher, store: TenantStore, tenant: TenantConfig
) -> None:
    await seed(store)
    await publisher.publish_pending(tenant)
    user = GENERATED_USERS[4]
    leftover = j1_scope_name(PREFIX, TENANT_ID, "e:azure_user:5")  # e.g. written by an older layout
    j1.plant_entity(leftover, {**j1.graph_for_prefix(j1_prefix()).entities[user["id"]], "_key": "leftover-user-1"})

    check = await publisher.reconcile(tenant, check=True)
    assert check.differing == [leftover] and check.drift == {"azure_user": {"stale": 1}}

    repair = await publisher.reconcile(tenant)

    assert repair.removed == [leftover] and j1.entities(leftover) == {}
    assert [job.sync_mode for job in j1.jobs_for_scope(leftover)] == ["DIFF"]
    await assert_j1_matches_mirror(j1, store)


async def test_reading_back_follows_every_page_and_leaves_dirty_scopes_to_the_publisher(
    j1: SimJupiterOne, publisher: Publisher, store: TenantStore, tenant: TenantConfig
) -> None:
    await estate(store)
    await publisher.publish_pending(tenant)
    j1.query_page_size = 2  # every list and table answer in pages of two
    [user] = map_user(GENERATED_USERS[6], account_key=ACCOUNT_KEY)[:1]
    await commit(store, [Upsert(user.placement, {**user.obj, "jobTitle": "Pending"})])

    report = await publisher.reconcile(tenant, check=True)

    assert report.error is None and report.drift == {}  # exact, although paged
    assert report.scopes_pending == 1  # the user's scope is dirty: its publication is on its way
    held = [scope for scope in j1.scopes() if scope.startswith(j1_prefix())]
    assert report.scopes_compared == len(held) - 1
    assert j1_scope_name(PREFIX, TENANT_ID, upload_scope_of(user.placement)) in held
    assert report.queries > 2 * report.scopes_compared + 2  # pages were followed
    assert len([r for r in j1.requests if r.path.startswith("/query-results/")]) >= 4  # the inventory, deferred


async def test_a_failed_read_back_is_reported_and_changes_nothing(
    j1: SimJupiterOne, publisher: Publisher, store: TenantStore, tenant: TenantConfig, redis: aioredis.Redis
) -> None:
    await seed(store)
    await publisher.publish_pending(tenant)
    jobs = len(j1.jobs)
    j1.down(requests=10_000)

    report = await publisher.reconcile(tenant)

    assert report.error is not None and "503" in report.error and len(j1.jobs) == jobs
    status = await publishing_status(redis, TENANT_ID)
    assert "FAILED" in [line for line in render_publishing(status) if "j1 reconcile" in line][0]
    metrics = await metric_values(store)
    assert metrics['monitor_j1_reconciles_total{mode="repair",result="failed"}'] == 1
