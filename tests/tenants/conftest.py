"""A deployment started with no tenant at all, serving its web app over HTTPS (certificate from the
simulator's CA) at its `MONITOR_PUBLIC_URL`, so Graph can validate subscriptions against it and a
browser can go through the admin-consent onboarding."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson
import pytest
import redis.asyncio as aioredis
from aiohttp import web

from monitor.app import Runtime
from monitor.settings import Settings, load_settings
from monitor.simulator import RunningSimulator, SimTenant, Simulator, seed
from monitor.simulator.redis_process import free_port
from monitor.web import create_app
from monitor.worker import Worker, WorkerStats
from tests.conftest import CLIENT_ID, CLIENT_SECRET, TENANT_ID, RedisServer

OPERATOR_TOKEN = "operator-token-for-the-tests-0123456789"
SECOND_TENANT = "5c3b2a19-8e7d-4f60-a5b4-c3d2e1f0a9b8"


@pytest.fixture
def fabrikam(sim: Simulator) -> SimTenant:
    """A second tenant that has not consented to our app yet; its directory differs from Contoso's."""
    tenant = sim.add_tenant(SECOND_TENANT, "Fabrikam")
    seed(tenant, users=12, groups=3, memberships=20, rng_seed=2)
    return tenant


@dataclass
class Deployment:
    sim: Simulator
    runtime: Runtime
    settings: Settings
    redis: aioredis.Redis
    public_url: str
    ssl: ssl.SSLContext
    changes_path: Path

    def browser(self) -> aiohttp.ClientSession:
        """A browser: follows nothing by itself, keeps cookies (also for an IP-address host)."""
        return aiohttp.ClientSession(
            cookie_jar=aiohttp.CookieJar(unsafe=True), connector=aiohttp.TCPConnector(ssl=self.ssl)
        )

    async def work(self) -> WorkerStats:
        await self.sim.subscriptions.drain()
        return await Worker(self.runtime, burst=True, claim_idle=0.1).run()

    def records(self) -> list[dict[str, Any]]:
        if not self.changes_path.exists():
            return []
        return [orjson.loads(line) for line in self.changes_path.read_bytes().splitlines()]

    async def onboard(self, browser: aiohttp.ClientSession, **options: str) -> aiohttp.ClientResponse:
        """Operator request -> simulated admin consent -> callback; the callback's response."""
        start = await browser.get(
            f"{self.public_url}/onboard", params={"token": OPERATOR_TOKEN, **options}, allow_redirects=False
        )
        assert start.status == 302, await start.text()
        consent = await browser.get(start.headers["Location"], allow_redirects=False)
        assert consent.status == 302, await consent.text()
        back = consent.headers["Location"]
        assert back.startswith(f"{self.public_url}/onboard/callback?")
        return await browser.get(back, allow_redirects=False)


def deployment_settings(
    graph: RunningSimulator, redis_server: RedisServer, tmp_path: Path, public_url: str, **extra: Any
) -> Settings:
    values: dict[str, Any] = {
        "redis_url": redis_server.url,
        "graph_url": graph.url,
        "authority_url": graph.url,
        "ca_bundle": str(graph.ca_bundle_path),
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "public_url": public_url,
        "operator_token": OPERATOR_TOKEN,
        "sink": f"jsonl:{tmp_path / 'changes.jsonl'}",
        **extra,
    }
    return load_settings({}, **values)


@pytest.fixture
async def deployment(
    sim: Simulator,
    graph: RunningSimulator,
    redis_server: RedisServer,
    redis: aioredis.Redis,
    tmp_path: Path,
) -> AsyncIterator[Deployment]:
    """No MONITOR_TENANT_ID: every tenant of this deployment is registered at run time. (The `sim`
    fixture's Contoso has consented already; Fabrikam, when used, has not.)"""
    sim.subscriptions.configure(retry_initial_delay=0.01, retry_max_delay=0.1, batch_window=0.02)
    port = free_port()
    public_url = f"https://127.0.0.1:{port}"
    settings = deployment_settings(graph, redis_server, tmp_path, public_url)
    runtime = await Runtime.open(settings)
    runner = web.AppRunner(create_app(settings, runtime=runtime), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, ssl_context=sim.ca.issue_server_context(["127.0.0.1", "localhost"]))
    await site.start()
    client_ssl = ssl.create_default_context(cafile=str(graph.ca_bundle_path))
    try:
        yield Deployment(sim, runtime, settings, redis, public_url, client_ssl, tmp_path / "changes.jsonl")
    finally:
        await runner.cleanup()
        await runtime.close()


def query_of(url: str) -> dict[str, str]:
    from urllib.parse import parse_qsl

    return dict(parse_qsl(urlsplit(url).query))


__all__ = ["SECOND_TENANT", "TENANT_ID", "Deployment", "query_of"]
