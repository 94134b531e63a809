"""Directory benchmark: first round, an incremental round, and the public integration's polling.

1. A first `monitor sync` over a tenant of 100,000 users, 10,000 groups and 1,000,000 memberships
   (at `--scale 1`): wall time, objects per second, peak memory of the monitor process, Redis memory.
2. 100 membership changes spread over 100 groups (50 added, 50 removed), then `monitor sync`:
   Graph requests and time of the delta rounds.
3. The public integration's call pattern over the same tenant (list users, list groups, list the
   members of every group, as it does every polling interval): requests and time, as ratios.
4. What merging partial updates costs in Redis (the Graph residues kept beside users and groups),
   and soft-deleting then restoring 10 users: their memberships leave and come back, found by a
   scan of every membership scope inside Redis (monitor.sources.parking).
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import redis.asyncio as aioredis

from bench.common import (
    TENANT,
    Environment,
    RedisMemory,
    command_line,
    environment,
    machine,
    number,
    redis_memory,
    run_child,
    status,
)
from monitor.graph.auth import TokenProvider
from monitor.graph.client import GraphClient
from monitor.model.types import entity_placement
from monitor.model.users import USER_SELECT
from monitor.settings import load_settings
from monitor.store import TenantStore
from monitor.tls import client_context

SECTION = "directory"


@dataclass
class PublicPattern:
    requests: int
    seconds: float
    users: int
    groups: int
    memberships: int


def run(scale: float) -> str:
    users, groups, memberships = int(100_000 * scale), int(10_000 * scale), int(1_000_000 * scale)
    sizes = ["--users", str(users), "--groups", str(groups), "--memberships", str(memberships)]
    with environment(sizes) as env:
        monitor_env = env.monitor_env()
        first = run_child(["sync"], monitor_env)
        first_status = status(monitor_env)
        redis_mb = asyncio.run(redis_memory(env))
        residues = asyncio.run(_residue_memory(env))
        changed = asyncio.run(_change_memberships(env, 100))
        incremental = run_child(["sync"], monitor_env)
        incremental_status = status(monitor_env)
        lifecycle = _soft_delete_and_restore(env, monitor_env, 10)
        public = asyncio.run(_public_pattern(env))
    report = _report(scale, first, first_status, redis_mb, changed, incremental, incremental_status, public)
    return report + _lifecycle_report(residues, lifecycle)


@dataclass
class Residues:
    """The Graph residues in Redis after the first round (`TenantKeys.graph_residue`)."""

    bytes: int
    fields: int
    users: int
    groups: int
    mirrored: int


@dataclass
class Lifecycle:
    users: int
    memberships: int
    deleted_ms: float
    deleted_records: int
    restored_ms: float
    restored_records: int


async def _residue_memory(env: Environment) -> Residues:
    """MEMORY USAGE of every residue hash, and how many objects they stand beside."""
    client = aioredis.Redis.from_url(env.redis.url)
    store = TenantStore(client, TENANT)
    try:
        total = fields = 0
        async for key in client.scan_iter(match=store.keys.graph_residue("*"), count=1000):
            total += int(await client.memory_usage(key, samples=0) or 0)
            fields += int(await client.hlen(key))
        counts = {}
        for family in ("azure_user", "azure_user_group"):
            counts[family] = sum(
                [await client.hlen(store.mirror_key(s)) for s in await store.known_scopes("entity", family)]
            )
        mirrored = sum([await client.hlen(store.mirror_key(s)) for s in await store.known_scopes()])
        return Residues(total, fields, counts["azure_user"], counts["azure_user_group"], mirrored)
    finally:
        await client.aclose()


def _soft_delete_and_restore(env: Environment, monitor_env: dict[str, str], count: int) -> Lifecycle:
    users, memberships = asyncio.run(_members_to_delete(env, count))
    asyncio.run(_users_call(env, "DELETE", users))
    run_child(["sync"], monitor_env)
    deleted_status = status(monitor_env)
    asyncio.run(_users_call(env, "POST", users, "/restore"))
    run_child(["sync"], monitor_env)
    restored_status = status(monitor_env)
    return Lifecycle(
        len(users),
        memberships,
        float(_source(deleted_status, "users")["duration"]) * 1000,
        int(_source(deleted_status, "users")["changes"]),
        float(_source(restored_status, "users")["duration"]) * 1000,
        int(_source(restored_status, "users")["changes"]),
    )


async def _members_to_delete(env: Environment, count: int) -> tuple[list[str], int]:
    """`count` users that are members of some groups, and how many memberships they have."""
    client = aioredis.Redis.from_url(env.redis.url)
    store = TenantStore(client, TENANT)
    try:
        keys = await _sample_memberships(store, count * 4, random.Random(11))
        users = list(dict.fromkeys(key.partition("|has|")[2] for key in keys))
        users = [u for u in users if await store.get(entity_placement("azure_user", u), u) is not None][:count]
        scopes = await store.known_scopes("relationship", "azure_user_group")
        found = await store.memberships_of(users, scopes, skip_prefix="microsoft_365_account-")
        return users, len(found)
    finally:
        await client.aclose()


async def _users_call(env: Environment, method: str, users: list[str], suffix: str = "") -> None:
    base = f"{env.sim_url}/_sim/tenants/{TENANT}/users"
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=client_context(Path(env.ca_bundle)))) as http:
        for user in users:
            async with http.request(method, f"{base}/{user}{suffix}") as response:
                response.raise_for_status()


def _lifecycle_report(residues: Residues, lifecycle: Lifecycle) -> str:
    objects = residues.users + residues.groups
    per_object = residues.bytes / max(1, objects)
    per_mirrored = residues.bytes / max(1, residues.mirrored)
    deleted, restored = f"{lifecycle.deleted_ms:.0f} ms", f"{lifecycle.restored_ms:.0f} ms"
    records = f"{lifecycle.deleted_records} | {lifecycle.restored_records}"
    return f"""
| Partial updates: the Graph residues kept beside users and groups | |
|---|---|
| Redis memory of the residues (MEMORY USAGE of their hashes) | {residues.bytes / 2**20:.2f} MB |
| Users and groups with a residue / without | {number(residues.fields)} / {number(objects - residues.fields)} |
| Per user or group / per mirrored object ({number(residues.mirrored)}) | {per_object:.1f} / {per_mirrored:.1f} bytes |

| {lifecycle.users} users soft-deleted, then restored | deleted | restored |
|---|---|---|
| Users round (on deletion, with the scan of every membership scope) | {deleted} | {restored} |
| Change records (users, account edges, {lifecycle.memberships} memberships) | {records} |
"""


async def _change_memberships(env: Environment, count: int) -> int:
    """Add a member to count/2 groups and remove one from count/2 others, through the simulator's
    control API (as an administrator would in the portal)."""
    client = aioredis.Redis.from_url(env.redis.url)
    store = TenantStore(client, TENANT)
    rng = random.Random(5)
    try:
        memberships = await _sample_memberships(store, count * 4, rng)
        users = [
            key
            for scope in (await store.known_scopes("entity", "azure_user"))[:8]
            for key in await store.scope_keys(scope)
        ]
    finally:
        await client.aclose()
    by_group: dict[str, list[str]] = {}
    for key in memberships:
        group, _, member = key.partition("|has|")
        by_group.setdefault(group, []).append(member)
    groups = list(by_group)[:count]
    base = f"{env.sim_url}/_sim/tenants/{TENANT}/groups"
    done = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=client_context(Path(env.ca_bundle)))) as http:
        for index, group in enumerate(groups):
            if index % 2:
                async with http.delete(f"{base}/{group}/members/{by_group[group][0]}") as response:
                    done += response.status < 300
            else:
                candidate = next(u for u in rng.sample(users, 50) if u not in by_group[group])
                async with http.post(f"{base}/{group}/members", json={"id": candidate}) as response:
                    done += response.status < 300
    return done


async def _sample_memberships(store: TenantStore, wanted: int, rng: random.Random) -> list[str]:
    scopes = await store.known_scopes("relationship", "azure_user_group")
    keys: list[str] = []
    for scope in rng.sample(scopes, min(len(scopes), wanted)):
        memberships = [k for k in await store.scope_keys(scope) if not k.startswith("microsoft_365_account-")]
        if memberships:
            keys.append(rng.choice(memberships))
    return keys


async def _public_pattern(env: Environment) -> PublicPattern:
    """What the public integration does every polling interval (docs/jupiterone.md section 3): list
    users, list groups, then list the members of every group, one request after another."""
    settings = load_settings(env.monitor_env())
    client = GraphClient(settings, TokenProvider(settings))
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        users = groups = memberships = 0
        select = ",".join(USER_SELECT)
        async for page in client.pages(TENANT, "/v1.0/users", params={"$top": "999", "$select": select}):
            users += len(page)
        group_ids: list[str] = []
        async for page in client.pages(TENANT, "/v1.0/groups", params={"$top": "999"}):
            group_ids += [group["id"] for group in page]
        groups = len(group_ids)
        for group_id in group_ids:
            async for page in client.pages(TENANT, f"/v1.0/groups/{group_id}/members", params={"$top": "999"}):
                memberships += len(page)
        return PublicPattern(client.stats.requests, loop.time() - started, users, groups, memberships)
    finally:
        await client.close()


def _source(status_: dict[str, Any], name: str) -> dict[str, Any]:
    entry: dict[str, Any] = status_["sources"][name]
    return entry


def _report(
    scale: float,
    first: Any,
    first_status: dict[str, Any],
    redis_mb: RedisMemory,
    changed: int,
    incremental: Any,
    incremental_status: dict[str, Any],
    public: PublicPattern,
) -> str:
    rounds = [_source(first_status, name) for name in ("users", "groups")]
    objects = sum(int(r["objects"]) for r in rounds)
    records = first_status["change_log"]["records"]
    inc = [_source(incremental_status, name) for name in ("users", "groups")]
    inc_requests = sum(int(r["requests"]) for r in inc)
    inc_changes = sum(int(r["changes"]) for r in inc)
    inc_seconds = max(0.001, *(float(r["duration"]) for r in inc))  # the two rounds run side by side
    mirrored, per_object = number(redis_mb.objects), f"{redis_mb.per_object():.0f} bytes"
    return f"""## Directory: first round, incremental round, and the public integration's polling

Command: `{command_line()}` — {machine()}.
Tenant: {number(public.users)} users, {number(public.groups)} groups, {number(public.memberships)} memberships
(scale {scale:g} of 100,000 / 10,000 / 1,000,000).

| First round (`monitor sync`, empty Redis) | |
|---|---|
| Wall time of the process (start-up, token, account, users and groups rounds side by side) | {first.wall:.1f} s |
| Users round / groups round | {float(rounds[0]["duration"]):.1f} s / {float(rounds[1]["duration"]):.1f} s |
| Graph objects read (users + group appearances with their member slices) | {number(objects)} |
| Change records emitted (entities and relationships) | {number(records)} |
| Change records per second of wall time | {number(records / first.wall)} |
| Peak memory of the monitor process (RSS) | {first.peak_rss_mb:.0f} MB |
| CPU time of the monitor process | {first.cpu:.1f} s |
| Redis memory after the round: all / the change log in it | {redis_mb.total_mb:.0f} / {redis_mb.changelog_mb:.0f} MB |
| Redis memory per mirrored object ({mirrored}), the change log left out | {per_object} |

| Incremental round after {changed} membership changes in {changed} groups | |
|---|---|
| Graph requests (users delta + groups delta) | {inc_requests} |
| Delta rounds (users and groups, side by side) | {inc_seconds * 1000:.0f} ms |
| Change records emitted | {inc_changes} |
| Wall time of the whole `monitor sync` process (Python start-up and token included) | {incremental.wall:.2f} s |

| The public integration's polling over the same tenant | | ratio to our incremental round |
|---|---|---|
| Graph requests | {number(public.requests)} | {public.requests / max(1, inc_requests):,.0f}× |
| Time (one request after another, as it does) | {public.seconds:.1f} s | {public.seconds / inc_seconds:,.0f}× |
"""
