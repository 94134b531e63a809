"""Fixtures for the JupiterOne publisher: the real Redis, a simulated JupiterOne served over HTTP,
settings pointing at it, and a publisher whose waits are recorded instead of slept."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis.asyncio as aioredis

from monitor.settings import Settings, TenantConfig
from monitor.simulator.jupiterone import RunningJupiterOne, SimJupiterOne, serve_jupiterone
from monitor.sinks.jupiterone import Publisher
from monitor.store import TenantStore
from tests.conftest import RedisServer
from tests.jupiterone.directory import TENANT_ID


@dataclass
class Sleeps:
    """An injected `sleep` that records each wait and only yields to the loop, so retry and debounce
    delays are asserted on, never waited for. `hook` runs on each call (to act "during" a wait)."""

    delays: list[float] = field(default_factory=list)
    hook: Callable[[int], Awaitable[None]] | None = None

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        if self.hook is not None:
            await self.hook(len(self.delays))
        await asyncio.sleep(0)


@pytest.fixture
def j1() -> SimJupiterOne:
    return SimJupiterOne()


@pytest.fixture
async def j1_server(j1: SimJupiterOne) -> AsyncIterator[RunningJupiterOne]:
    async with serve_jupiterone(j1) as running:
        yield running


def make_settings(redis_server: RedisServer, running: RunningJupiterOne, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "redis_url": redis_server.url,
        "tenant_id": TENANT_ID,
        "sink": "jupiterone",
        "j1_api_url": running.url,
        "j1_account": running.simulator.account,
        "j1_api_key": running.simulator.api_key,
        "j1_debounce": 0,
        "j1_poll_interval": 0.05,
        "j1_max_retries": 3,
        "j1_lease_ttl": 10,
        "ca_bundle": running.ca_bundle_path,
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def settings(redis_server: RedisServer, j1_server: RunningJupiterOne) -> Settings:
    return make_settings(redis_server, j1_server)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
async def publisher(redis: aioredis.Redis, settings: Settings, sleeps: Sleeps) -> AsyncIterator[Publisher]:
    made = Publisher(redis, settings, sleep=sleeps)
    yield made
    await made.close()


@pytest.fixture
def tenant() -> TenantConfig:
    return TenantConfig(id=TENANT_ID, account_name="Contoso Production")


@pytest.fixture
def store(redis: aioredis.Redis) -> TenantStore:
    return TenantStore(redis, TENANT_ID)
