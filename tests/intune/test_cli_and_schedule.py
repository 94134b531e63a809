"""`monitor sync --intune` as users run it, and the hook the scheduler runs per polling interval."""

from __future__ import annotations

from pathlib import Path

import orjson

from monitor.app import Runtime
from monitor.settings import TenantConfig
from monitor.simulator import RunningSimulator, SimTenant, Simulator
from monitor.simulator.intune import IntuneTenant
from monitor.sources.intune_sweep import SOURCE as INTUNE_SOURCE
from monitor.sync import run_source
from tests.conftest import TENANT_ID, RedisServer
from tests.test_cli import run, sim_env


async def test_monitor_sync_intune_runs_one_sweep(
    graph: RunningSimulator,
    sim: Simulator,
    estate: IntuneTenant,
    redis_server: RedisServer,
    redis: object,
    tmp_path: Path,
) -> None:
    env = sim_env(graph, redis_server, tmp_path)
    code, out, err = await run("sync", "--intune", env=env)
    assert code == 0, err
    intune_line = next(line for line in out.splitlines() if line.strip().startswith("intune"))
    assert "sweep" in intune_line
    records = [orjson.loads(line) for line in (tmp_path / "out.jsonl").read_bytes().splitlines()]
    assert {"azure_user", "intune_host_agent", "intune_detected_application"} <= {r["type"] for r in records}
    assert {r["source"] for r in records if r["type"].startswith("intune")} == {"intune"}

    code, out, err = await run("status", env=env)
    assert code == 0, err
    assert "intune       last sweep round" in out
    assert "permission   DeviceManagementManagedDevices.Read.All: granted" in out

    code, out, err = await run("sync", env=env)  # without --intune: the directory only
    assert code == 0 and "intune" not in out


async def test_run_source_intune_is_the_schedulers_hook(
    runtime: Runtime, tenant: SimTenant, estate: IntuneTenant
) -> None:
    tenant_config = runtime.settings.tenants[0]
    assert tenant_config.polling_interval == 3600  # the default interval the scheduler sweeps at
    disabled = TenantConfig.model_validate({"id": TENANT_ID, "polling_interval": "DISABLED"})
    assert disabled.polling_interval is None  # manual `monitor sync --intune` only
    context = runtime.context(tenant_config)
    result = await run_source(context, INTUNE_SOURCE)
    assert (result.source, result.kind) == ("intune", "sweep")
    assert result.change_count > 0 and result.requests > 0
    status = await context.store.status(INTUNE_SOURCE)
    assert status["kind"] == "sweep" and status["error"] == "" and status["last_round_at"]
