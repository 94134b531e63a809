"""Effective membership benchmark: the update for one membership change in the 100,000-user tenant.

1. A first `monitor sync` of the directory tenant (100,000 users, 10,000 groups, 1,000,000
   memberships, 1% of the groups nested in another), then the first effective-membership run, which
   builds the nesting index with one scan of the mirror: its time and the index's Redis memory.
2. With a rule watching every group (`group_name_pattern = "*"`, `effective = true`: every
   ancestor of a changed group is judged), users join and leave groups nested in others through the
   simulator; after each groups round, one effective-membership run is timed (lease, the stretch of
   the log, the index walks, the membership checks, the facts, the cursor), and its alert counted.
3. The largest group nested into a watched group and taken out again: thousands of members gain and
   lose effective membership at once, folded into one alert each way.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import statistics
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from bench.common import TENANT, Environment, command_line, environment, machine, number, run_child
from monitor.alerts import Alert
from monitor.app import Runtime
from monitor.settings import TenantConfig, load_settings
from monitor.sinks.effective import run_effective
from monitor.store import TenantStore
from monitor.sync import run_source
from monitor.tls import client_context

SECTION = "effective"
CHANGES = 20  # users who join a nested group, then leave it
RULES = '[[alert]]\nname = "every group"\ngroup_name_pattern = "*"\neffective = true\nsend_to = ["log"]\n'


@dataclass
class Timed:
    seconds: float
    alerts: list[Alert]


@dataclass
class Results:
    tenant: dict[str, int]
    baseline: float
    index_bytes: int
    index_groups: int
    updates: list[Timed]
    folded: list[Timed]
    folded_members: int


def run(scale: float) -> str:
    users, groups, memberships = int(100_000 * scale), int(10_000 * scale), int(1_000_000 * scale)
    sizes = ["--users", str(users), "--groups", str(groups), "--memberships", str(memberships)]
    with environment(sizes) as env:
        run_child(["sync"], env.monitor_env())
        rules = env.workdir / "rules.toml"
        rules.write_text(RULES)
        results = asyncio.run(_measure(env, env.monitor_env(MONITOR_ALERTS_FILE=str(rules))))
    results.tenant = {"users": users, "groups": groups, "memberships": memberships}
    return _report(scale, results)


async def _measure(env: Environment, monitor_env: dict[str, str]) -> Results:
    settings = load_settings({k: v for k, v in monitor_env.items() if k.startswith("MONITOR_")})
    runtime = await Runtime.open(settings)
    tenant = settings.tenants[0]
    store = runtime.store(TENANT)
    try:
        baseline = await _timed(store, tenant)
        index = await store.redis.hgetall(store.keys.nesting)
        index_bytes = int(await store.redis.memory_usage(store.keys.nesting, samples=0) or 0)
        nested = _nested_pairs(index)
        async with _control(env) as control:
            updates = await _membership_updates(runtime, tenant, control, nested)
            folded, members = await _nest_largest(runtime, tenant, control, nested)
        return Results({}, baseline.seconds, index_bytes, len(index), updates, folded, members)
    finally:
        await runtime.close()


async def _timed(store: TenantStore, tenant: TenantConfig) -> Timed:
    sent: list[Alert] = []

    async def collect(alerts: Any) -> None:
        sent.extend(alerts)

    started = time.perf_counter()
    await run_effective(store, tenant, collect)
    return Timed(time.perf_counter() - started, sent)


def _nested_pairs(index: dict[Any, Any]) -> list[tuple[str, str]]:
    """(parent, child) for every nested edge of the index."""
    pairs = []
    for group, raw in index.items():
        child = group.decode() if isinstance(group, bytes) else str(group)
        pairs += [(parent, child) for parent in orjson.loads(raw)["p"]]
    return sorted(pairs)


class _Control:
    def __init__(self, http: aiohttp.ClientSession, base: str) -> None:
        self.http, self.base = http, base

    async def add(self, group: str, member: str) -> None:
        async with self.http.post(f"{self.base}/groups/{group}/members", json={"id": member}) as response:
            response.raise_for_status()

    async def remove(self, group: str, member: str) -> None:
        async with self.http.delete(f"{self.base}/groups/{group}/members/{member}") as response:
            response.raise_for_status()

    async def new_user(self, name: str) -> str:
        body = {"displayName": name, "userPrincipalName": f"{name.lower()}@bench.example", "accountEnabled": True}
        async with self.http.post(f"{self.base}/users", json=body) as response:
            response.raise_for_status()
            user: str = (await response.json())["id"]
            return user


@contextlib.asynccontextmanager
async def _control(env: Environment) -> AsyncIterator[_Control]:
    """The simulator's control API, as an administrator changing the tenant."""
    connector = aiohttp.TCPConnector(ssl=client_context(Path(env.ca_bundle)))
    async with aiohttp.ClientSession(connector=connector) as http:
        yield _Control(http, f"{env.sim_url}/_sim/tenants/{TENANT}")


async def _round_then_effective(runtime: Runtime, tenant: TenantConfig) -> Timed:
    await run_source(runtime.context(tenant), "users")
    await run_source(runtime.context(tenant), "groups")
    return await _timed(runtime.store(TENANT), tenant)


async def _membership_updates(
    runtime: Runtime, tenant: TenantConfig, control: _Control, nested: list[tuple[str, str]]
) -> list[Timed]:
    """New users join a group nested in another (one change per round), then leave it."""
    rng = random.Random(3)
    chosen = rng.sample(nested, min(CHANGES, len(nested)))
    users = [await control.new_user(f"Bench{n:03d}") for n in range(len(chosen))]
    await _round_then_effective(runtime, tenant)  # the new users themselves
    timings = []
    for (_, child), user in zip(chosen, users, strict=True):
        await control.add(child, user)
        timings.append(await _round_then_effective(runtime, tenant))
    for (_, child), user in zip(chosen, users, strict=True):
        await control.remove(child, user)
        timings.append(await _round_then_effective(runtime, tenant))
    return timings


async def _nest_largest(
    runtime: Runtime, tenant: TenantConfig, control: _Control, nested: list[tuple[str, str]]
) -> tuple[list[Timed], int]:
    """The largest group of the tenant nested into a nesting parent, then taken out."""
    store = runtime.store(TENANT)
    largest, size = await _largest_group(store)
    parent = next(p for p, child in nested if largest not in (child, p))
    await control.add(parent, largest)
    added = await _round_then_effective(runtime, tenant)
    await control.remove(parent, largest)
    removed = await _round_then_effective(runtime, tenant)
    return [added, removed], size


async def _largest_group(store: TenantStore) -> tuple[str, int]:
    counts: dict[str, int] = {}
    for scope in await store.known_scopes("relationship", "azure_user_group"):
        for key in await store.scope_keys(scope):
            group, separator, _ = key.partition("|has|")
            if separator and not key.startswith("microsoft_365_account"):
                counts[group] = counts.get(group, 0) + 1
    largest = max(counts, key=lambda g: counts[g])
    return largest, counts[largest]


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def _report(scale: float, results: Results) -> str:
    times = sorted(t.seconds for t in results.updates)
    alerted = sum(1 for t in results.updates if t.alerts)
    p95 = times[min(len(times) - 1, int(len(times) * 0.95))]
    added, removed = results.folded
    fold_counts = " / ".join(str(a.count) for t in results.folded for a in t.alerts if a.folded)
    size = results.tenant
    per_group = results.index_bytes / max(1, results.index_groups)
    memory = f"{results.index_bytes / 1024:.1f} KB ({per_group:.0f} bytes a group)"
    spread = f"{_ms(statistics.median(times))} / {_ms(p95)} / {_ms(times[-1])}"
    return f"""## Effective membership: the update for one change

Command: `{command_line()}` — {machine()}.
Tenant: {number(size["users"])} users, {number(size["groups"])} groups, {number(size["memberships"])} memberships
(scale {scale:g}), {number(results.index_groups)} groups taking part in nesting. Rule: every group watched,
`effective = true`.

| Start (once per tenant) | |
|---|---|
| First run: the nesting index built by one scan of the mirror | {results.baseline:.2f} s |
| Redis memory of the index (MEMORY USAGE) | {memory} |

| {len(results.updates)} single changes (a user joins, then leaves, a group nested in another) | |
|---|---|
| Effective-membership update per change: median / p95 / max | {spread} |
| Changes that raised an effective-membership alert | {alerted} of {len(results.updates)} |

| The largest group ({number(results.folded_members)} members) nested into a watched group, then out | |
|---|---|
| Update when nested / when taken out | {_ms(added.seconds)} / {_ms(removed.seconds)} |
| Folded alerts (members counted in each) | {fold_counts} |
"""
