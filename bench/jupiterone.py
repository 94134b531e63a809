"""JupiterOne benchmark: scoped publication against a full re-upload, and the reconciliation that
reads JupiterOne back against a blind re-upload of every scope.

On a tenant of 100,000 users, 10,000 groups and 1,000,000 memberships (at `--scale 1`), mirrored by
a first `monitor sync`:

1. the initial publication (every upload scope, one DIFF job each): jobs, bytes, wall time;
2. 100 membership changes spread over 100 groups, then publishing what they made dirty;
3. one membership change, then publishing it;
4. the reconciliation when nothing drifted (`monitor reconcile`: J1QL read-back and comparison),
   against what the reconciliation did before it read JupiterOne back: every scope re-uploaded;
5. what the public integration's approach costs instead: the whole tenant uploaded as one job;

and the ratios. The simulated JupiterOne runs in its own process (its work of applying uploads and
answering queries is not ours); the publisher runs in this process, so its time is measured alone.
"""

from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import dataclass
from typing import Any

import orjson
import redis.asyncio as aioredis

from bench.common import TENANT, Environment, command_line, environment, machine, number, process, run_child, wait_http
from bench.directory import _change_memberships
from monitor.settings import Settings, TenantConfig, load_settings
from monitor.simulator.jupiterone import DEFAULT_ACCOUNT, DEFAULT_API_KEY
from monitor.simulator.redis_process import free_port
from monitor.sinks.j1_client import JupiterOneClient
from monitor.sinks.jupiterone import Publisher
from monitor.store import TenantStore

SECTION = "jupiterone"


@dataclass
class Cost:
    jobs: int
    requests: int
    bytes_sent: int
    raw_bytes: int
    objects: int
    seconds: float
    bytes_received: int = 0

    @property
    def wire(self) -> int:
        """Bytes both ways on the wire (request bodies sent, answers received)."""
        return self.bytes_sent + self.bytes_received


@dataclass
class Reconciled:
    reconcile: Cost
    blind: Cost
    scopes: int
    drift: int


def run(scale: float) -> str:
    users, groups, memberships = int(100_000 * scale), int(10_000 * scale), int(1_000_000 * scale)
    sizes = ["--users", str(users), "--groups", str(groups), "--memberships", str(memberships)]
    with environment(sizes) as env:
        run_child(["sync"], env.monitor_env())
        port = free_port()
        with process([sys.executable, "-m", "bench.j1_server", str(port)], env.monitor_env()):
            asyncio.run(wait_http(f"http://127.0.0.1:{port}/persister/synchronization/jobs/none", accept=(401,)))
            costs = asyncio.run(_measure(env, f"http://127.0.0.1:{port}"))
    return _report(scale, users, groups, memberships, *costs)


async def _measure(env: Environment, j1_url: str) -> tuple[Cost, Cost, Cost, Reconciled, Cost]:
    settings = _settings(env, j1_url)
    tenant = TenantConfig(id=TENANT)
    redis = aioredis.Redis.from_url(env.redis.url)
    publisher = Publisher(redis, settings)
    try:
        initial = await _timed(publisher.publish_pending(tenant))  # the first sync left every scope dirty
        await _change_memberships(env, 100)
        run_child(["sync"], env.monitor_env())  # the delta rounds mark the changed scopes dirty
        hundred = await _timed(publisher.publish_pending(tenant))
        await _change_memberships(env, 1)
        run_child(["sync"], env.monitor_env())
        single = await _timed(publisher.publish_pending(tenant))
        reconciled = await _reconcile_against_blind(publisher, tenant, TenantStore(redis, TENANT))
        full = await _full_reupload(settings, TenantStore(redis, TENANT))
    finally:
        await publisher.close()
        await redis.aclose()
    return initial, hundred, single, reconciled, full


async def _reconcile_against_blind(publisher: Publisher, tenant: TenantConfig, store: TenantStore) -> Reconciled:
    """The reconciliation of an undrifted tenant, and every scope re-uploaded (the former reconciliation)."""
    before = publisher.client.stats.snapshot()
    started = time.monotonic()
    report = await publisher.reconcile(tenant)
    seconds = time.monotonic() - started
    if report.error:
        raise RuntimeError(f"reconcile failed: {report.error}")
    after = publisher.client.stats.snapshot()
    reconcile = Cost(
        0,
        int(after["requests"] - before["requests"]),
        int(after["bytes_sent"] - before["bytes_sent"]),
        int(after["raw_bytes"] - before["raw_bytes"]),
        0,
        seconds,
        int(after["bytes_received"] - before["bytes_received"]),
    )
    for scope in await store.known_scopes():
        await store.redis.hincrby(store.keys.dirty, str(scope), 1)
    blind = await _timed(publisher.publish_pending(tenant))
    drift = sum(n for counts in report.drift.values() for n in counts.values())
    return Reconciled(reconcile, blind, report.scopes_compared, drift)


def _settings(env: Environment, j1_url: str) -> Settings:
    values = {k.removeprefix("MONITOR_").lower(): v for k, v in env.monitor_env().items() if k.startswith("MONITOR_")}
    values |= {"sink": "jupiterone", "j1_api_url": j1_url, "j1_account": DEFAULT_ACCOUNT, "j1_api_key": DEFAULT_API_KEY}
    values |= {"j1_poll_interval": "0.05"}
    return load_settings({}, **values)


async def _timed(work: Any) -> Cost:
    started = time.monotonic()
    result = await work
    seconds = time.monotonic() - started
    return Cost(
        result.jobs,
        result.requests,
        result.bytes_sent,
        result.raw_bytes,
        result.objects,
        seconds,
        result.bytes_received,
    )


async def _full_reupload(settings: Settings, store: TenantStore) -> Cost:
    """The tenant as one DIFF job (the public integration uploads everything each polling
    interval), streamed scope by scope from the mirror so memory stays bounded, gzipped like ours."""
    client = JupiterOneClient(settings)
    started = time.monotonic()
    try:
        job = await client.create_job(scope="bench/full-reupload", sync_mode="DIFF")
        totals = [0, 0, 0, 0]  # requests, raw bytes, wire bytes, objects
        for kind in ("entity", "relationship"):
            buffer: list[bytes] = []
            for scope in await store.known_scopes(kind):
                buffer += [orjson.dumps(obj) for obj in (await store.scope_objects(scope)).values()]
                if sum(map(len, buffer)) > settings.j1_max_request_bytes:
                    await _upload(client, job["id"], kind, buffer, totals)
                    buffer = []
            await _upload(client, job["id"], kind, buffer, totals)
        await client.finalize(job["id"])
        await client.wait_finished(job["id"])
    finally:
        await client.close()
    requests, raw, wire, objects = totals
    return Cost(1, requests + 3, wire, raw, objects, time.monotonic() - started)


async def _upload(client: JupiterOneClient, job: str, kind: str, encoded: list[bytes], totals: list[int]) -> None:
    if not encoded:
        return
    result = await client.upload(job, "entities" if kind == "entity" else "relationships", encoded)
    for index, value in enumerate((result.requests, result.raw_bytes, result.wire_bytes, len(encoded))):
        totals[index] += value


def _ratio(full: Cost, part: Cost) -> str:
    return (
        f"{full.bytes_sent / max(1, part.bytes_sent):,.0f}× | {full.objects / max(1, part.objects):,.0f}× | "
        f"{full.seconds / max(part.seconds, 0.001):,.0f}×"
    )


def _report(
    scale: float,
    users: int,
    groups: int,
    memberships: int,
    initial: Cost,
    hundred: Cost,
    single: Cost,
    reconciled: Reconciled,
    full: Cost,
) -> str:
    def row(label: str, cost: Cost) -> str:
        return (
            f"| {label} | {number(cost.jobs)} | {number(cost.requests)} | {number(cost.objects)} | "
            f"{cost.bytes_sent / 1024:,.1f} KiB | {cost.seconds:.2f} s |"
        )

    def read(label: str, cost: Cost) -> str:
        return (
            f"| {label} | {number(cost.requests)} | {cost.bytes_sent / 1024:,.1f} KiB | "
            f"{cost.bytes_received / 1024:,.1f} KiB | {cost.seconds:.2f} s |"
        )

    rec, blind = reconciled.reconcile, reconciled.blind
    ratios = (
        f"| Re-upload ÷ read-back | {blind.requests / max(1, rec.requests):,.2f}× | "
        f"{blind.wire / max(1, rec.wire):,.2f}× (both ways) | | {blind.seconds / max(rec.seconds, 0.001):,.2f}× |"
    )
    return f"""## JupiterOne: scoped publication against a full re-upload; the reconciliation

Command: `{command_line()}` — {machine()}.
Tenant: {number(users)} users, {number(groups)} groups, {number(memberships)} memberships (scale {scale:g}).
The simulated JupiterOne runs in its own process; times are the publisher's, including waiting for
JupiterOne to finish each job or answer each query. Bytes are on the wire (gzipped bodies and answers).
Every upload scope is one DIFF job holding a bucket of entities and the relationships anchored on them.

| Publication | jobs | requests | objects uploaded | bytes sent | wall time |
|---|---|---|---|---|---|
{row("Initial publication (every scope)", initial)}
{row("After 100 membership changes in 100 groups", hundred)}
{row("After one membership change", single)}
{row("Full re-upload of the tenant (the public integration's way)", full)}

| Ratios | bytes | objects | time |
|---|---|---|---|
| Full re-upload ÷ 100 changes | {_ratio(full, hundred)} |
| Full re-upload ÷ one change | {_ratio(full, single)} |

**Reconciliation when nothing drifted** ({number(reconciled.scopes)} scopes compared, {number(reconciled.drift)}
objects differing): `monitor reconcile` reads JupiterOne back through J1QL (an inventory of scopes,
then each scope's entities and relationships, paged) and compares with the mirror, against every
scope re-uploaded blindly (what the reconciliation did before; {number(blind.jobs)} jobs).

| Reconciliation | requests | bytes sent | bytes received | wall time |
|---|---|---|---|---|
{read("Read back and compare (`monitor reconcile`)", rec)}
{read("Every scope re-uploaded", blind)}
{ratios}
"""
