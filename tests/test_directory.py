"""The directory pipeline end to end: simulated tenant over HTTPS, real MSAL, real Redis.

Each test drives `sync_tenant` (what `monitor sync` runs) and checks the mirror against what the
simulator's state maps to, and the change log against exactly the changes made.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest

from monitor.app import Runtime
from monitor.graph.auth import TokenProvider
from monitor.graph.client import GraphClient
from monitor.model.account import account_key
from monitor.records import ChangeRecord
from monitor.rounds import run_delta_round
from monitor.simulator import SimTenant, Simulator, seed
from monitor.sources.users import UsersSource
from monitor.sync import sync_tenant
from tests.conftest import TENANT_ID
from tests.directory_helpers import MirrorState, dangling, expected_mirror, replay, summary

ACCOUNT_KEY = account_key(TENANT_ID)


@pytest.fixture(params=["changed", "all"], autouse=True)
def update_mode(request: pytest.FixtureRequest, tenant: SimTenant) -> str:
    """Every scenario twice: updated objects carry only their changed properties, or all of them
    (Graph sends "at least the properties that have been updated")."""
    mode: str = request.param
    tenant.delta.updated_properties = mode  # type: ignore[assignment]
    return mode


async def sync(runtime: Runtime) -> tuple[list[ChangeRecord], dict[str, int]]:
    """One `monitor sync` of the directory; the records it emitted and the Graph requests per path.
    The whole change log, replayed, must rebuild the mirror and hold no dangling relationship."""
    store = runtime.store(TENANT_ID)
    before_seq = await store.last_seq()
    requests_before = dict(runtime.graph.stats.by_path)
    results, failures = await sync_tenant(runtime, runtime.settings.tenants[0])
    assert not failures, failures
    assert results
    replayed = replay(await store.read_changes(0, 10_000_000))
    assert replayed == await store.mirror_dump()
    assert dangling(replayed) == []
    records = await store.read_changes(before_seq, 1_000_000)
    by_path = {p: n - requests_before.get(p, 0) for p, n in runtime.graph.stats.by_path.items()}
    return records, {p: n for p, n in by_path.items() if n}


async def mirror(runtime: Runtime) -> MirrorState:
    return await runtime.store(TENANT_ID).mirror_dump()


async def test_first_round_mirrors_the_tenant(runtime: Runtime, tenant: SimTenant, tmp_path: Path) -> None:
    seed(tenant, users=60, groups=8, memberships=200, nested_groups=3, other_members=6)
    records, _ = await sync(runtime)
    expected = expected_mirror(tenant, ACCOUNT_KEY)
    assert await mirror(runtime) == expected
    assert len(records) == len(expected)
    assert {r["op"] for r in records} == {"upsert"}
    assert [r["seq"] for r in records] == list(range(1, len(records) + 1))
    kinds = {r["type"] for r in records}
    assert {"azure_user", "azure_user_group", "azure_group_member", "azure_group_has_member"} <= kinds
    written = [orjson.loads(line) for line in (tmp_path / "changes.jsonl").read_bytes().splitlines()]
    assert written == records


async def test_a_second_round_without_changes_emits_nothing(runtime: Runtime, tenant: SimTenant) -> None:
    seed(tenant, users=30, groups=4, memberships=60)
    await sync(runtime)
    records, requests = await sync(runtime)
    assert records == []
    assert requests == {"/v1.0/organization": 1, "/v1.0/users/delta": 1, "/v1.0/groups/delta": 1}


async def test_incremental_round_emits_exactly_the_changes(runtime: Runtime, tenant: SimTenant) -> None:
    seed(tenant, users=30, groups=4, memberships=60)
    await sync(runtime)
    users = list(tenant.users)
    group = next(iter(tenant.groups))
    outsider = next(u for u in users if u not in tenant.members[group])
    member = next(iter(tenant.members[group]))
    tenant.update_user(users[0], jobTitle="Chief Auditor")
    tenant.update_user(users[1], accountEnabled=False)
    tenant.add_member(group, outsider)
    tenant.remove_member(group, member)
    new_user = tenant.add_user(
        displayName="Grace Hopper", userPrincipalName="grace@contoso.example", accountEnabled=True
    )

    records, requests = await sync(runtime)

    assert summary(records) == {
        ("upsert", "azure_user", users[0], ("jobTitle",)),
        ("upsert", "azure_user", users[1], ("accountEnabled", "active")),
        (
            "upsert",
            "azure_group_has_member",
            f"{group}|has|{outsider}",
            summary_of_new_membership(records, group, outsider),
        ),
        (
            "delete",
            "azure_group_has_member",
            f"{group}|has|{member}",
            summary_of_deleted(records, f"{group}|has|{member}"),
        ),
        ("upsert", "azure_user", new_user, summary_of_new(records, new_user)),
        (
            "upsert",
            "microsoft_365_account_has_azure_user",
            f"{ACCOUNT_KEY}|has|{new_user}",
            summary_of_new(records, f"{ACCOUNT_KEY}|has|{new_user}"),
        ),
    }
    assert requests["/v1.0/users/delta"] == 1 and requests["/v1.0/groups/delta"] == 1
    assert await mirror(runtime) == expected_mirror(tenant, ACCOUNT_KEY)


def summary_of_new(records: list[ChangeRecord], key: str) -> tuple[str, ...]:
    [record] = [r for r in records if r["key"] == key]
    assert record["before"] is None
    return tuple(record["changed"])


def summary_of_new_membership(records: list[ChangeRecord], group: str, member: str) -> tuple[str, ...]:
    changed = summary_of_new(records, f"{group}|has|{member}")
    assert {"groupId", "memberId", "memberType"} <= set(changed)
    return changed


def summary_of_deleted(records: list[ChangeRecord], key: str) -> tuple[str, ...]:
    [record] = [r for r in records if r["key"] == key]
    assert record["after"] is None and record["before"] is not None and record["before"]["_key"] == key
    return tuple(record["changed"])


async def test_deletions_soft_and_hard_and_group_cascade(runtime: Runtime, tenant: SimTenant) -> None:
    seed(tenant, users=30, groups=5, memberships=80, other_members=4)
    await sync(runtime)
    users = list(tenant.users)
    soft, hard = users[0], users[1]
    groups_with_hard = [g for g, members in tenant.members.items() if hard in members]
    groups_with_soft = [g for g, members in tenant.members.items() if soft in members]
    doomed_group = max(tenant.groups, key=lambda g: len(tenant.members[g]))
    doomed_members = set(tenant.members[doomed_group])
    tenant.soft_delete_user(soft)
    tenant.hard_delete_user(hard)
    tenant.soft_delete_group(doomed_group)

    records, _ = await sync(runtime)

    deleted = {r["key"] for r in records if r["op"] == "delete"}
    assert {soft, hard, doomed_group, f"{ACCOUNT_KEY}|has|{soft}", f"{ACCOUNT_KEY}|has|{doomed_group}"} <= deleted
    assert {f"{g}|has|{hard}" for g in groups_with_hard if g != doomed_group} <= deleted
    assert {f"{doomed_group}|has|{m}" for m in doomed_members} <= deleted
    # Graph keeps a soft-deleted user's memberships, but they leave the mirror with the user.
    assert {f"{g}|has|{soft}" for g in groups_with_soft} <= deleted
    assert not [r for r in records if r["op"] == "upsert"]
    assert await mirror(runtime) == expected_mirror(tenant, ACCOUNT_KEY)


async def test_placeholder_members_live_while_a_group_holds_them(
    runtime: Runtime, tenant: SimTenant, sim: Simulator
) -> None:
    groups = [tenant.add_group(displayName=f"Group {i}", securityEnabled=True, mailEnabled=False) for i in range(3)]
    device = tenant.add_directory_object("device", displayName="Kiosk-01")
    for group in groups[:2]:
        tenant.add_member(group, device)
    first, _ = await sync(runtime)
    assert [r["type"] for r in first].count("azure_group_member") == 1
    assert await runtime.store(TENANT_ID).member_names([device]) == {device: {"displayName": "Kiosk-01"}}
    tenant.add_member(groups[2], device)
    third, _ = await sync(runtime)
    assert [r["key"] for r in third] == [f"{groups[2]}|has|{device}"], "the placeholder keeps its name"
    assert sim.count("/directoryObjects/getByIds") == 1, "the name is looked up once, then cached"
    tenant.remove_member(groups[2], device)
    await sync(runtime)
    tenant.remove_member(groups[0], device)
    records, _ = await sync(runtime)
    assert summary(records) == {
        (
            "delete",
            "azure_group_has_member",
            f"{groups[0]}|has|{device}",
            summary_of_deleted(records, f"{groups[0]}|has|{device}"),
        )
    }
    tenant.remove_member(groups[1], device)
    records, _ = await sync(runtime)
    assert {(r["op"], r["type"]) for r in records} == {
        ("delete", "azure_group_has_member"),
        ("delete", "azure_group_member"),
    }
    assert await mirror(runtime) == expected_mirror(tenant, ACCOUNT_KEY)
    # The name looked up for the placeholder (getByIds) leaves with it.
    assert await runtime.store(TENANT_ID).member_names([device]) == {}


async def test_restored_group_comes_back_whole(runtime: Runtime, tenant: SimTenant) -> None:
    seed(tenant, users=20, groups=3, memberships=30)
    await sync(runtime)
    group = next(iter(tenant.groups))
    tenant.soft_delete_group(group)
    await sync(runtime)
    tenant.restore_group(group)
    records, _ = await sync(runtime)
    assert {r["op"] for r in records} == {"upsert"}
    assert await mirror(runtime) == expected_mirror(tenant, ACCOUNT_KEY)


async def test_split_members_duplicates_and_empty_pages_change_nothing(runtime: Runtime, tenant: SimTenant) -> None:
    """docs/graph.md 7.4-7.5: a group over several pages, objects twice, empty pages: same result."""
    tenant.delta.page_size = 7
    tenant.delta.page_member_budget = 25
    tenant.delta.member_slice = 4
    tenant.delta.scatter_slices = True
    tenant.delta.duplicate_rate = 0.3
    tenant.delta.empty_page_rate = 0.2
    seed(tenant, users=50, groups=6, memberships=150, other_members=5)
    records, requests = await sync(runtime)
    assert requests["/v1.0/groups/delta"] > 5
    assert len({(r["kind"], r["key"]) for r in records}) == len(records), "an object was emitted twice"
    assert await mirror(runtime) == expected_mirror(tenant, ACCOUNT_KEY)
    again, _ = await sync(runtime)
    assert again == []


async def test_replaying_the_change_log_rebuilds_the_mirror(runtime: Runtime, tenant: SimTenant) -> None:
    seed(tenant, users=30, groups=4, memberships=70, other_members=3)
    await sync(runtime)
    users, groups = list(tenant.users), list(tenant.groups)
    tenant.update_user(users[2], displayName="Renamed Person")
    tenant.hard_delete_user(users[3])
    tenant.soft_delete_group(groups[0])
    tenant.add_member(groups[1], users[4]) if users[4] not in tenant.members[groups[1]] else None
    await sync(runtime)
    store = runtime.store(TENANT_ID)
    assert replay(await store.read_changes(0, 1_000_000)) == await store.mirror_dump()


async def test_a_round_that_fails_part_way_loses_nothing_and_repeats_nothing(
    runtime: Runtime, tenant: SimTenant, sim: Simulator
) -> None:
    tenant.delta.page_size = 10
    seed(tenant, users=60, groups=3, memberships=40)
    await sync(runtime)
    for user in list(tenant.users)[:35]:
        tenant.update_user(user, officeLocation="Building 7")
    # The third page of the next users round fails for good (400 is not retried).
    sim.faults.inject(
        "GET", r"/v1.0/users/delta", status=400, after=2, body={"error": {"code": "BadRequest", "message": "boom"}}
    )
    store = runtime.store(TENANT_ID)
    seq = await store.last_seq()
    _, failures = await sync_tenant(runtime, runtime.settings.tenants[0])
    assert [f.source for f in failures] == ["users"]
    partial = await store.read_changes(seq, 10_000)
    assert 0 < len(partial) < 35, "the pages before the failure were committed"
    records, _ = await sync(runtime)
    everything = partial + records
    assert sorted(r["key"] for r in everything) == sorted(list(tenant.users)[:35])
    assert await mirror(runtime) == expected_mirror(tenant, ACCOUNT_KEY)
    status = await store.status("users")
    assert status["error"] == ""


async def test_a_cancelled_round_resumes_without_duplicates(runtime: Runtime, tenant: SimTenant) -> None:
    tenant.delta.page_size = 5
    seed(tenant, users=40, groups=2, memberships=10)
    context = runtime.context(runtime.settings.tenants[0])
    task: asyncio.Task[object] | None = None
    pages_seen = 0

    def stop_after_three_pages(_: object) -> None:
        nonlocal pages_seen
        pages_seen += 1
        if pages_seen == 3 and task is not None:
            task.cancel()

    task = asyncio.create_task(run_delta_round(context, UsersSource(context), progress=stop_after_three_pages))
    with pytest.raises(asyncio.CancelledError):
        await task
    store = runtime.store(TENANT_ID)
    assert await store.delta_state("users") is None, "no deltaLink is saved for an unfinished round"
    await sync(runtime)
    records = await store.read_changes(0, 10_000)
    assert len({(r["kind"], r["key"]) for r in records}) == len(records)
    assert await mirror(runtime) == expected_mirror(tenant, ACCOUNT_KEY)


@pytest.mark.parametrize("mode", ["410", "syncStateNotFound", "resyncRequired"])
async def test_expired_delta_state_resyncs_without_spurious_changes(
    runtime: Runtime, tenant: SimTenant, sim: Simulator, mode: str
) -> None:
    seed(tenant, users=30, groups=4, memberships=60)
    await sync(runtime)
    users = list(tenant.users)
    groups_of_gone = [g for g, members in tenant.members.items() if users[1] in members]
    tenant.update_user(users[0], jobTitle="Resynced")
    tenant.hard_delete_user(users[1])  # gone before the resync: only its absence tells
    sim.expire_delta_tokens(TENANT_ID, "users", mode)  # type: ignore[arg-type]
    sim.expire_delta_tokens(TENANT_ID, "groups", mode)  # type: ignore[arg-type]
    seq = await runtime.store(TENANT_ID).last_seq()

    results, failures = await sync_tenant(runtime, runtime.settings.tenants[0])

    assert not failures
    assert {r.source: (r.resyncs, r.full) for r in results if r.source != "account"} == {
        "users": (1, True),
        "groups": (1, True),
    }
    records = await runtime.store(TENANT_ID).read_changes(seq, 100_000)
    assert {(r["op"], r["key"], tuple(r["changed"]) if r["op"] == "upsert" else ()) for r in records} == {
        ("upsert", users[0], ("jobTitle",)),
        ("delete", users[1], ()),
        ("delete", f"{ACCOUNT_KEY}|has|{users[1]}", ()),
        *(("delete", f"{g}|has|{users[1]}", ()) for g in groups_of_gone),
    }
    assert await mirror(runtime) == expected_mirror(tenant, ACCOUNT_KEY)


async def test_an_incomplete_resync_deletes_nothing(runtime: Runtime, tenant: SimTenant, sim: Simulator) -> None:
    tenant.delta.page_size = 10
    seed(tenant, users=50, groups=2, memberships=10)
    await sync(runtime)
    store = runtime.store(TENANT_ID)
    seq = await store.last_seq()
    sim.expire_delta_tokens(TENANT_ID, "users", "410")
    # The resync's third page fails: most users were not read again, and none may be deleted.
    sim.faults.inject(
        "GET", r"/v1.0/users/delta", status=400, after=3, body={"error": {"code": "BadRequest", "message": "x"}}
    )
    _, failures = await sync_tenant(runtime, runtime.settings.tenants[0])
    assert [f.source for f in failures] == ["users"]
    assert [r for r in await store.read_changes(seq, 10_000) if r["op"] == "delete"] == []
    assert await mirror(runtime) == expected_mirror(tenant, ACCOUNT_KEY)


@pytest.mark.parametrize(
    ("retry_after", "expected"),
    [("2", 2.0), ("0.5", 0.5), ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0), (None, None)],
    ids=["seconds", "fractional", "http-date-in-the-past", "absent"],
)
async def test_throttling_honours_retry_after(
    runtime: Runtime, tenant: SimTenant, sim: Simulator, retry_after: str | None, expected: float | None
) -> None:
    seed(tenant, users=5, groups=1, memberships=3)
    waits: list[float] = []

    async def record_sleep(seconds: float) -> None:
        waits.append(seconds)

    client = GraphClient(runtime.settings, TokenProvider(runtime.settings), sleep=record_sleep)
    throttled = Runtime(runtime.settings, runtime.redis, client, sinks=[])
    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    sim.faults.inject("GET", r"/v1.0/users/delta", status=429, times=2, headers=headers)
    try:
        results, failures = await sync_tenant(throttled, runtime.settings.tenants[0], ["users"])
    finally:
        await client.close()
    assert not failures and results[0].objects == 5
    assert client.stats.throttled == 2 and client.stats.retries == 2
    assert len(waits) == 2
    for wait in waits:
        if expected is None:
            assert 0 < wait <= client.policy.max_delay  # exponential backoff without a header
        else:
            assert expected <= wait <= expected + 1.0  # the header's value plus a little jitter


async def test_token_is_reused_across_rounds(runtime: Runtime, tenant: SimTenant, sim: Simulator) -> None:
    seed(tenant, users=5, groups=1, memberships=3)
    await sync(runtime)
    await sync(runtime)
    assert sum(sim.tokens_issued.values()) == 1


async def test_incremental_rounds_ask_for_the_minimal_form(
    runtime: Runtime, tenant: SimTenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`Prefer: return=minimal` on every request of an incremental round (the merge does not need it,
    it saves bandwidth); a full round's objects come whole, so it is not sent there."""
    tenant.delta.page_size = 5
    seed(tenant, users=12, groups=2, memberships=10)
    sent: list[str | None] = []
    real_get = runtime.graph.get

    async def recording_get(tenant_id: str, url: str, **kwargs: Any) -> Any:
        if "/delta" in url:
            sent.append((kwargs.get("headers") or {}).get("Prefer"))
        return await real_get(tenant_id, url, **kwargs)

    monkeypatch.setattr(runtime.graph, "get", recording_get)
    await sync(runtime)
    assert sent and set(sent) == {None}
    sent.clear()
    for user in list(tenant.users)[:8]:
        tenant.update_user(user, jobTitle="Auditor")
    await sync(runtime)
    assert len(sent) >= 3 and set(sent) == {"return=minimal"}
