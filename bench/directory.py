"""Directory benchmark: first round, an incremental round, and the public integration's polling.

1. A first `monitor sync` over a tenant of 100,000 users, 10,000 groups and 1,000,000 memberships
   (at `--scale 1`): wall time, objects per second, peak memory of the monitor process, Redis memory.
2. 100 membership changes spread over 100 groups (50 added, 50 removed), then `monitor sync`:
   Graph requests and time of the delta rounds.
3. The public integration's call pattern over the same tenant (list users, list groups, list the
   members of every group, as it does every polling interval): requests and time, as ratios.
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
        changed = asyncio.run(_change_memberships(env, 100))
        incremental = run_child(["sync"], monitor_env)
        incremental_status = status(monitor_env)
        public = asyncio.run(_public_pattern(env))
    return _report(scale, first, first_status, redis_mb, changed, incremental, incremental_status, public)


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
    """What the public integration does every polling interval (JUPITERONE.md section 3): list
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
