"""Every run that publishes starts at `monitor.sync.publish_tenant`: `monitor worker --burst` reports
what JupiterOne did not confirm as `monitor sync` and `deliver` do."""

from __future__ import annotations

import logging

import pytest
import redis.asyncio as aioredis

from monitor.app import Runtime
from monitor.simulator.jupiterone import RunningJupiterOne, SimJupiterOne
from monitor.store import TenantStore
from monitor.worker import Worker
from tests.conftest import RedisServer
from tests.jupiterone.conftest import make_settings
from tests.jupiterone.directory import TENANT_ID, dirty_counters, seed


@pytest.mark.parametrize("jupiterone_down", [False, True])
async def test_a_burst_worker_publishes_through_the_one_entry_and_says_what_failed(
    jupiterone_down: bool,
    j1: SimJupiterOne,
    j1_server: RunningJupiterOne,
    redis_server: RedisServer,
    redis: aioredis.Redis,
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = TenantStore(redis, TENANT_ID)
    await seed(store)
    if jupiterone_down:
        j1.down(requests=10_000)
    runtime = await Runtime.open(make_settings(redis_server, j1_server, j1_max_retries=0), graph=False)
    try:
        with caplog.at_level(logging.INFO, logger="monitor.sync"):
            await Worker(runtime, burst=True, claim_idle=0.1).run()
    finally:
        await runtime.close()
    summaries = [r for r in caplog.records if r.name == "monitor.sync" and f"jupiterone {TENANT_ID}" in r.getMessage()]
    assert len(summaries) == 1
    (summary,) = summaries
    if jupiterone_down:
        assert summary.levelno == logging.WARNING
        assert "scopes failed" in summary.getMessage()
        assert await dirty_counters(store)  # kept for the next pass
    else:
        assert summary.levelno == logging.INFO
        assert not await dirty_counters(store)
