"""Shared fixtures: a private redis-server for the session, a fresh client per test.

The suite never talks to a Redis someone else started: it runs its own `redis-server` on a free
port with its own data directory, and stops it at the end (docs/practices.md 12).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from monitor.app import Runtime
from monitor.redis_conn import connect
from monitor.settings import Settings, load_settings
from monitor.simulator import RunningSimulator, SimTenant, Simulator, serve_simulator
from monitor.simulator.redis_process import (
    RedisClusterProcesses,
    RedisProcess,
    RedisServerMissing,
    start_redis_cluster,
    start_redis_server,
)

RedisServer = RedisProcess | RedisClusterProcesses


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One `redis-server`, or with MONITOR_TEST_REDIS_CLUSTER=1 a Redis Cluster of three (CI runs
    the suite both ways)."""
    data_dir = tmp_path_factory.mktemp("redis")
    server: RedisServer
    try:
        if os.environ.get("MONITOR_TEST_REDIS_CLUSTER") == "1":
            server = start_redis_cluster(data_dir)
        else:
            server = start_redis_server(data_dir)
    except RedisServerMissing as exc:
        pytest.fail(str(exc))
    yield server
    server.stop()


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    """A client on the suite's server (or cluster), flushed before the test."""
    client = await connect(redis_server.url)
    await client.flushall()
    yield client
    await client.aclose()


# -- the simulated tenant and a runtime wired to it ------------------------------------------------

TENANT_ID = "7d1a4c3e-5b6f-4a2d-9e8c-1f2a3b4c5d6e"
CLIENT_ID = "0f9e8d7c-6b5a-4321-8fed-cba987654321"
CLIENT_SECRET = "sim-secret-~value~-do-not-log"


@pytest.fixture
def sim() -> Iterator[Simulator]:
    """A simulated Microsoft 365 with one tenant that has consented to our app. At the end, nothing the
    simulator answered may have carried a property Graph's metadata does not have."""
    simulator = Simulator()
    simulator.add_tenant(TENANT_ID, "Contoso")
    simulator.register_app(CLIENT_ID, secret=CLIENT_SECRET)
    simulator.grant(TENANT_ID, CLIENT_ID)
    yield simulator
    assert not simulator.conformance.problems, simulator.conformance.problems[:5]


@pytest.fixture
def tenant(sim: Simulator) -> SimTenant:
    return sim.tenant(TENANT_ID)


@pytest.fixture
async def graph(sim: Simulator) -> AsyncIterator[RunningSimulator]:
    async with serve_simulator(sim) as running:
        yield running


def simulator_settings(graph: RunningSimulator, redis_server: RedisServer, **overrides: Any) -> Settings:
    """Settings pointing at the simulated Graph and the suite's Redis, as our app, for our tenant."""
    values: dict[str, Any] = {
        "redis_url": redis_server.url,
        "graph_url": graph.url,
        "authority_url": graph.url,
        "ca_bundle": str(graph.ca_bundle_path),
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "tenant_id": TENANT_ID,
    }
    values.update(overrides)
    return load_settings({}, **{k: v for k, v in values.items() if v is not None})


@pytest.fixture
def settings(graph: RunningSimulator, redis_server: RedisServer, tmp_path: Path) -> Settings:
    return simulator_settings(graph, redis_server, sink=f"jsonl:{tmp_path / 'changes.jsonl'}")


@pytest.fixture
async def runtime(settings: Settings, redis: aioredis.Redis) -> AsyncIterator[Runtime]:
    """Everything a command would build, against the simulator and the suite's Redis (flushed)."""
    opened = await Runtime.open(settings)
    yield opened
    await opened.close()
