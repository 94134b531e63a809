"""Records a killed run committed but did not deliver are delivered by the next run, first."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiohttp import web
from pytest_aiohttp import AiohttpServer

from monitor.simulator import RunningSimulator, SimTenant, Simulator, seed
from monitor.sinks.alerts import ALERTS_SINK
from monitor.store import TenantStore
from tests.conftest import TENANT_ID, RedisServer
from tests.faults.conftest import Launch, assert_complete, delivered, hint, read_jsonl, wait_until
from tests.test_cli import run, sim_env

SECRET = "whsec-catch-up-test"


@dataclass
class Hook:
    """A receiver for both webhooks (change records at /records, alerts at /alerts) that can hold the
    next request until `release` is set, and then fail it: the sender is killed meanwhile."""

    url: str
    records: list[dict[str, Any]] = field(default_factory=list)
    alerts: list[dict[str, Any]] = field(default_factory=list)
    hold_next: bool = False
    held: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    def record_seqs(self) -> set[int]:
        return {int(record["seq"]) for record in self.records}


@pytest.fixture
async def hook(aiohttp_server: AiohttpServer) -> AsyncIterator[Hook]:
    box: list[Hook] = []

    async def receive(request: web.Request) -> web.Response:
        target, body = box[0], await request.json()
        if target.hold_next:
            target.hold_next = False
            target.held.set()
            await target.release.wait()
            return web.Response(status=503)
        if request.path == "/records":
            target.records += body["records"]
        else:
            target.alerts.append(body)
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/records", receive)
    app.router.add_post("/alerts", receive)
    server = await aiohttp_server(app)
    box.append(Hook(str(server.make_url("")).rstrip("/")))
    yield box[0]
    box[0].release.set()


@pytest.mark.parametrize("command", ["worker", "sync"])
async def test_what_a_killed_run_committed_is_delivered_first_by_the_next(
    command: str,
    sim: Simulator,
    tenant: SimTenant,
    graph: RunningSimulator,
    redis_server: RedisServer,
    redis: aioredis.Redis,
    tmp_path: Path,
    hook: Hook,
    launch: Launch,
) -> None:
    """The run is killed while delivering (the alert webhook holds its request): every record and alert
    is committed, none is delivered, its hints are acknowledged. The next run, with no hint at all (a
    worker) or before its own rounds (`monitor sync`), delivers them to every sink."""
    seed(tenant, users=20, groups=3, memberships=25)
    admins = tenant.add_group(
        displayName="Tier 0 Admins", isAssignableToRole=True, securityEnabled=True, mailEnabled=False
    )
    path, alerts_path, rules = tmp_path / "changes.jsonl", tmp_path / "alerts.jsonl", tmp_path / "rules.toml"
    destinations = f'["jsonl:{alerts_path}", "webhook:{hook.url}/alerts"]'
    rules.write_text(f'[[alert]]\nname = "tier0"\nrole_assignable = true\nsend_to = {destinations}\n')
    sinks = f"jsonl:{path},webhook:{hook.url}/records"
    env = sim_env(
        graph, redis_server, tmp_path, MONITOR_SINK=sinks, MONITOR_ALERTS_FILE=str(rules), MONITOR_WEBHOOK_SECRET=SECRET
    )
    store = TenantStore(redis, TENANT_ID)
    code, out, err = await run("sync", env=env)  # the baseline: everything delivered
    assert code == 0, out + err
    delivered_before = await store.last_seq()

    ada = tenant.add_user(displayName="Ada Lovelace", userPrincipalName="ada@contoso.com", accountEnabled=True)
    tenant.add_member(admins, ada)
    hook.hold_next = True
    killed = await launch(command, env=env)
    if command == "worker":
        await hint(redis, "users", "groups")
    await asyncio.wait_for(hook.held.wait(), 60)
    await killed.kill()
    hook.release.set()
    committed = await store.last_seq()
    assert committed > delivered_before and await store.cursor(f"jsonl:{path}") == delivered_before
    assert await store.cursor(ALERTS_SINK) == delivered_before

    if command == "worker":
        successor = await launch("worker", env=env)  # and no hint
        await wait_until(lambda: _everything_delivered(redis, store, path, hook), "the successor to catch up")
        assert await successor.terminate() == 0
    else:
        slow = sim.faults.inject("GET", r"/v1.0/users/delta", kind="delay", seconds=2)
        successor = await launch("sync", env=env)
        await wait_until(lambda: _fired(slow.fired), "the successor's users round")
        assert await _everything_delivered(redis, store, path, hook), "delivered before its own rounds"
        assert await successor.exited() == 0, successor.stdout + successor.stderr

    assert await store.last_seq() == committed  # the successor found nothing new
    await assert_complete(read_jsonl(path), store, tenant)
    ordered = sorted({int(r["seq"]): r for r in hook.records}.items())
    await assert_complete([record for _, record in ordered], store, tenant)  # at least once, none missing
    [alert] = [a for a in read_jsonl(alerts_path) if a["member"]["id"] == ada]
    assert alert["change"] == "member_added" and alert["group"]["id"] == admins
    assert [a["id"] for a in hook.alerts if a["member"]["id"] == ada] == [alert["id"]]


async def _fired(count: int) -> bool:
    return count > 0


async def _everything_delivered(redis: aioredis.Redis, store: TenantStore, path: Path, hook: Hook) -> bool:
    last = await store.last_seq()
    cursors = [f"jsonl:{path}", ALERTS_SINK]
    return await delivered(redis, store, *cursors) and hook.record_seqs() == set(range(1, last + 1))
