"""A deployment that operators watch: the web app over HTTPS (certificate from the simulated Graph's
CA) with the operator token, subscriptions through the simulated Graph, a JSONL sink, alert rules,
JupiterOne publishing to the simulated JupiterOne, and a tenant whose name is hostile markup.

`Observed.scenario()` drives it through a day in the life: first rounds and subscriptions, a member
added to a watched group (an alert), a Graph 429, JupiterOne failing, hints left queued. Afterwards
the status and `/metrics` have something to say about every part the status page and the alerting
rules cover."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio as aioredis
from aiohttp import web

from monitor.app import Runtime
from monitor.hints import Hint, enqueue
from monitor.settings import Settings
from monitor.simulator import RunningSimulator, SimTenant, Simulator
from monitor.simulator.jupiterone import RunningJupiterOne, SimJupiterOne, serve_jupiterone
from monitor.simulator.redis_process import free_port
from monitor.sync import run_source, sync_tenant
from monitor.tls import client_context
from monitor.web import create_app
from monitor.worker import Worker, WorkerStats
from tests.conftest import TENANT_ID, RedisServer, simulator_settings

OPERATOR_TOKEN = "operator-token-for-the-status-page-42"
METRICS_TOKEN = "metrics-token-for-prometheus-0123456789"
# Markup and script in every name an operator can type or a directory can hold.
HOSTILE_NAME = "<script>document.title='pwned'</script><img src=x onerror=\"document.title='pwned'\">Contoso & Co"
HOSTILE_GROUP = "<b onmouseover=alert(1)>Global Admins</b>"
ALERT_RULE = "privileged <i>groups</i>"


@dataclass
class Observed:
    sim: Simulator
    tenant: SimTenant
    j1: SimJupiterOne
    runtime: Runtime
    settings: Settings
    redis: aioredis.Redis
    url: str
    tmp_path: Path

    async def work(self) -> WorkerStats:
        await self.sim.subscriptions.drain()
        return await Worker(self.runtime, burst=True, claim_idle=0.1).run()

    def client(self) -> aiohttp.ClientSession:
        """An HTTP client trusting the simulator's CA, keeping cookies (also for an IP-address host)."""
        return aiohttp.ClientSession(
            cookie_jar=aiohttp.CookieJar(unsafe=True),
            connector=aiohttp.TCPConnector(ssl=client_context(self.settings.ca_bundle)),
        )

    async def scenario(self) -> None:
        """First rounds, subscriptions, an alert, a Graph 429, JupiterOne down, two hints left queued."""
        group = self.tenant.add_group(
            displayName=HOSTILE_GROUP, isAssignableToRole=True, securityEnabled=True, mailEnabled=False
        )
        user = self.tenant.add_user(displayName="Mallory <Hacker>", userPrincipalName="mallory@contoso.example")
        (config,) = self.settings.tenants
        await sync_tenant(self.runtime, config)  # first rounds; published to JupiterOne
        await enqueue(self.redis, [Hint(TENANT_ID, "subscriptions", "test")])
        await self.work()

        # Graph throttles the next delta round once; JupiterOne refuses everything from now on.
        self.sim.faults.inject("GET", r"/users/delta", 429, headers={"Retry-After": "0"})
        self.j1.fail(503, requests=10_000)
        self.tenant.add_member(group, user)
        self.tenant.update_user(user, jobTitle="Intruder")
        await self.work()

        # A round committed but not delivered yet (as if its worker died in between): sinks are behind.
        self.tenant.update_user(user, jobTitle="Former intruder")
        await run_source(self.runtime.context(config), "users")
        # Work that no worker takes: it waits in the queue.
        await enqueue(self.redis, [Hint(TENANT_ID, "intune", "test"), Hint(TENANT_ID, "account", "test")])


def tenants_file(path: Path, alerts_path: Path) -> Path:
    # JSON strings are valid TOML basic strings for these characters.
    path.write_text(
        f"""
[[tenant]]
id = "{TENANT_ID}"
account_name = {json.dumps(HOSTILE_NAME)}

[[tenant.alert]]
name = {json.dumps(ALERT_RULE)}
role_assignable = true
send_to = ["jsonl:{alerts_path}"]
"""
    )
    return path


@pytest.fixture
async def j1_server() -> AsyncIterator[RunningJupiterOne]:
    async with serve_jupiterone(SimJupiterOne()) as running:
        yield running


@pytest.fixture
async def observed(
    sim: Simulator,
    tenant: SimTenant,
    graph: RunningSimulator,
    j1_server: RunningJupiterOne,
    redis_server: RedisServer,
    redis: aioredis.Redis,
    tmp_path: Path,
) -> AsyncIterator[Observed]:
    # Graph's real retry schedule is minutes; the tests want milliseconds.
    sim.subscriptions.configure(retry_initial_delay=0.01, retry_max_delay=0.1, batch_window=0.02)
    port = free_port()
    url = f"https://127.0.0.1:{port}"
    settings = simulator_settings(
        graph,
        redis_server,
        tenant_id=None,  # the tenants file names it, with its alert rules
        tenants_file=str(tenants_file(tmp_path / "tenants.toml", tmp_path / "alerts.jsonl")),
        public_url=url,
        operator_token=OPERATOR_TOKEN,
        metrics_token=METRICS_TOKEN,
        sink=f"jsonl:{tmp_path / 'changes.jsonl'},jupiterone",
        j1_api_url=j1_server.url,
        j1_account=j1_server.simulator.account,
        j1_api_key=j1_server.simulator.api_key,
        j1_debounce=0,
        j1_poll_interval=0.05,
        j1_max_retries=0,
    )
    runtime = await Runtime.open(settings)
    runner = web.AppRunner(create_app(settings, runtime=runtime), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, ssl_context=sim.ca.issue_server_context(["127.0.0.1", "localhost"]))
    await site.start()
    try:
        yield Observed(sim, tenant, j1_server.simulator, runtime, settings, redis, url, tmp_path)
    finally:
        await runner.cleanup()
        await runtime.close()
