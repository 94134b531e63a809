"""`monitor sync` with the JupiterOne publisher: its exit code says whether JupiterOne took it all."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis.asyncio as aioredis

from monitor.simulator import RunningSimulator, Simulator, seed
from monitor.simulator.jupiterone import RunningJupiterOne, SimJupiterOne
from tests.conftest import TENANT_ID, RedisServer
from tests.test_cli import run, sim_env


@pytest.mark.parametrize("jupiterone_down", [False, True])
async def test_monitor_sync_exits_1_naming_what_jupiterone_did_not_confirm(
    jupiterone_down: bool,
    graph: RunningSimulator,
    sim: Simulator,
    j1: SimJupiterOne,
    j1_server: RunningJupiterOne,
    redis_server: RedisServer,
    redis: aioredis.Redis,
    tmp_path: Path,
) -> None:
    seed(sim.tenant(TENANT_ID), users=6, groups=2, memberships=5)
    if jupiterone_down:
        j1.down(requests=10_000)
    env = sim_env(
        graph,
        redis_server,
        tmp_path,
        MONITOR_SINK="jupiterone",
        MONITOR_J1_API_URL=j1_server.url,
        MONITOR_J1_ACCOUNT=j1.account,
        MONITOR_J1_API_KEY=j1.api_key,
        MONITOR_J1_MAX_RETRIES="0",
        MONITOR_J1_DEBOUNCE="0",
    )
    code, out, err = await run("sync", env=env)

    assert "Traceback" not in out + err
    if not jupiterone_down:
        assert code == 0 and "FAILED" not in out, out + err
        return
    assert code == 1, out + err
    [failed] = [line for line in out.splitlines() if "FAILED" in line]
    assert failed.strip().startswith("FAILED jupiterone: ") and "scopes failed" in failed and "503" in failed
    assert "FAILED users" not in out and "FAILED groups" not in out, "the directory itself synced"
