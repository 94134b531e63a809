"""A live deployment for end-to-end tests: our webhook served over HTTPS (certificate from the
simulator's CA), subscriptions made through the simulated Graph, notifications delivered by it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis
from aiohttp import web

from monitor.app import Runtime
from monitor.hints import Hint, enqueue
from monitor.keys import HINTS
from monitor.settings import Settings
from monitor.simulator import RunningSimulator, SimTenant, Simulator
from monitor.simulator.redis_process import free_port
from monitor.simulator.subscription_book import Subscription
from monitor.web import create_app
from monitor.worker import Worker, WorkerStats
from tests.conftest import TENANT_ID, RedisServer, simulator_settings

ALERT_RULES = """
[[alert]]
name = "privileged groups"
role_assignable = true
send_to = ["jsonl:{path}"]
mass_removal_threshold = 3
"""


@dataclass
class Live:
    sim: Simulator
    tenant: SimTenant
    runtime: Runtime
    settings: Settings
    redis: aioredis.Redis
    public_url: str
    alerts_path: Path

    async def work(self, **options: Any) -> WorkerStats:
        """Let Graph deliver what it has, then let a worker do everything that was asked."""
        await self.sim.subscriptions.drain()
        return await Worker(self.runtime, burst=True, claim_idle=0.1, **options).run()

    async def subscribe(self) -> WorkerStats:
        await enqueue(self.redis, [Hint(TENANT_ID, "subscriptions", "test")])
        return await self.work()

    def ours(self) -> list[Subscription]:
        return [s for s in self.sim.subscriptions.all() if s.notification_url.startswith(self.public_url)]

    async def queued(self) -> int:
        length: int = await self.redis.xlen(HINTS)
        return length

    def alerts(self) -> list[dict[str, Any]]:
        if not self.alerts_path.exists():
            return []
        return [orjson.loads(line) for line in self.alerts_path.read_bytes().splitlines()]


@pytest.fixture
async def live(
    sim: Simulator,
    tenant: SimTenant,
    graph: RunningSimulator,
    redis_server: RedisServer,
    redis: aioredis.Redis,
    tmp_path: Path,
) -> AsyncIterator[Live]:
    # Graph's real retry schedule is minutes; the tests want milliseconds.
    sim.subscriptions.configure(retry_initial_delay=0.01, retry_max_delay=0.1, batch_window=0.02)
    port = free_port()
    public_url = f"https://127.0.0.1:{port}"
    alerts_path = tmp_path / "alerts.jsonl"
    rules = tmp_path / "alerts.toml"
    rules.write_text(ALERT_RULES.format(path=alerts_path))
    settings = simulator_settings(
        graph,
        redis_server,
        public_url=public_url,
        alerts_file=str(rules),
        sink=f"jsonl:{tmp_path / 'changes.jsonl'}",
    )
    runtime = await Runtime.open(settings)
    runner = web.AppRunner(create_app(settings, runtime=runtime), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, ssl_context=sim.ca.issue_server_context(["127.0.0.1", "localhost"]))
    await site.start()
    try:
        yield Live(sim, tenant, runtime, settings, redis, public_url, alerts_path)
    finally:
        await runner.cleanup()
        await runtime.close()
