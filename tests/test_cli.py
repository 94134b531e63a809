"""The command line, run as users run it (`python -m monitor ...` in a subprocess)."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import orjson
import pytest

from monitor.simulator import RunningSimulator, SimTenant, seed
from monitor.simulator.redis_process import start_redis_server
from tests.conftest import CLIENT_ID, CLIENT_SECRET, TENANT_ID, RedisServer


async def run(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MONITOR_")}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "monitor",
        *args,
        env={**clean, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def sim_env(graph: RunningSimulator, redis_server: RedisServer, tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        "MONITOR_REDIS_URL": redis_server.url,
        "MONITOR_GRAPH_URL": graph.url,
        "MONITOR_AUTHORITY_URL": graph.url,
        "MONITOR_CA_BUNDLE": str(graph.ca_bundle_path),
        "MONITOR_CLIENT_ID": CLIENT_ID,
        "MONITOR_CLIENT_SECRET": CLIENT_SECRET,
        "MONITOR_TENANT_ID": TENANT_ID,
        "MONITOR_SINK": f"jsonl:{tmp_path / 'out.jsonl'}",
        **extra,
    }


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "MONITOR_REDIS_URL: is required"),
        (
            {"MONITOR_REDIS_URL": "redis://x", "MONITOR_TENANT": "x"},
            "unknown setting MONITOR_TENANT (did you mean MONITOR_TENANT_ID?)",
        ),
        ({"MONITOR_REDIS_URL": "mysql://x"}, "MONITOR_REDIS_URL: must start with redis://"),
        (
            {"MONITOR_REDIS_URL": "redis://x", "MONITOR_PORT": "99999"},
            "MONITOR_PORT: Input should be less than or equal to 65535",
        ),
        ({"MONITOR_REDIS_URL": "redis://x", "MONITOR_SINK": "kafka:x"}, "MONITOR_SINK: unknown sink 'kafka:x'"),
        # Tenants may be registered in Redis, so "no tenant" is known only once Redis answers
        # (tests/tenants/test_cli_tenants.py); sync's credentials are checked first.
        ({"MONITOR_REDIS_URL": "redis://x"}, "MONITOR_CLIENT_ID is required"),
        ({"MONITOR_REDIS_URL": "redis://x", "MONITOR_TENANT_ID": TENANT_ID}, "MONITOR_CLIENT_ID is required"),
        (
            {
                "MONITOR_REDIS_URL": "redis://x",
                "MONITOR_TENANT_ID": TENANT_ID,
                "MONITOR_CLIENT_ID": "a",
                "MONITOR_CLIENT_CERTIFICATE": "/nope.pem",
            },
            "MONITOR_CLIENT_CERTIFICATE: no such file: /nope.pem",
        ),
    ],
)
async def test_bad_configuration_is_one_line_and_exit_2(env: dict[str, str], message: str) -> None:
    code, out, err = await run("sync", env=env)
    assert code == 2
    assert err.strip().count("\n") == 0 and "Traceback" not in err
    assert message in err


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis://:hunter2@127.0.0.1:1/0", "monitor: cannot reach Redis at redis://:***@127.0.0.1:1/0: "),
        (
            "redis+cluster://:hunter2@127.0.0.1:1",
            "monitor: cannot use the Redis Cluster at redis+cluster://:***@127.0.0.1:1: ",
        ),
    ],
)
async def test_unreachable_redis_is_one_line(url: str, message: str) -> None:
    env = {"MONITOR_REDIS_URL": url, "MONITOR_TENANT_ID": TENANT_ID}
    code, out, err = await run("status", env=env)
    assert code == 1
    assert err.startswith(message) and err.count("\n") == 1
    assert "hunter2" not in err and "Traceback" not in err


@pytest.mark.parametrize("command", ["sync", "status", "tenants list", "reconcile", "worker --burst"])
async def test_one_off_commands_fail_at_once_without_redis(command: str) -> None:
    """Unlike `web`, `worker`, `scheduler` and `serve`, which wait for Redis (tests/faults/test_redis_at_start.py),
    a one-off command without Redis has nothing to do: one line and exit 1."""
    env = {
        "MONITOR_REDIS_URL": "redis://127.0.0.1:1/0",
        "MONITOR_TENANT_ID": TENANT_ID,
        "MONITOR_CLIENT_ID": CLIENT_ID,
        "MONITOR_CLIENT_SECRET": CLIENT_SECRET,
        "MONITOR_SINK": "jupiterone",
        "MONITOR_J1_ACCOUNT": "account",
        "MONITOR_J1_API_KEY": "key",
    }
    code, out, err = await asyncio.wait_for(run(*command.split(), env=env), 60)
    assert code == 1, out + err
    assert err.startswith("monitor: cannot reach Redis at redis://127.0.0.1:1/0: ") and err.count("\n") == 1
    assert "Traceback" not in err


async def test_a_cluster_url_for_a_server_that_is_no_cluster_is_one_line(tmp_path: Path) -> None:
    standalone = start_redis_server(tmp_path)
    try:
        url = f"redis+cluster://{standalone.host}:{standalone.port}"
        code, out, err = await run("status", env={"MONITOR_REDIS_URL": url, "MONITOR_TENANT_ID": TENANT_ID})
    finally:
        standalone.stop()
    assert code == 1
    assert err.startswith(f"monitor: cannot use the Redis Cluster at {url}: ") and err.count("\n") == 1
    assert "Cluster mode is not enabled" in err


async def test_sync_then_status(
    graph: RunningSimulator, tenant: SimTenant, redis_server: RedisServer, redis: object, tmp_path: Path
) -> None:
    seed(tenant, users=12, groups=2, memberships=10)
    env = sim_env(graph, redis_server, tmp_path)
    code, out, err = await run("sync", env=env)
    assert code == 0, err
    assert f"tenant {TENANT_ID}" in out
    users_line = next(line for line in out.splitlines() if line.strip().startswith("users"))
    assert "full" in users_line and "12 objects" in users_line
    assert "Graph:" in out
    assert len((tmp_path / "out.jsonl").read_bytes().splitlines()) > 24

    code, out, err = await run("status", "--json", env=env)
    assert code == 0, err
    shown = orjson.loads(out)
    assert shown["hints"]["length"] == 0 and shown["workers"] == []  # `monitor sync` needs no worker
    [status] = shown["tenants"]
    assert status["tenant"] == TENANT_ID
    assert status["sources"]["users"]["kind"] == "full"
    assert status["sources"]["users"]["delta_token_age_seconds"] is not None
    assert status["change_log"]["records"] == status["change_log"]["last_seq"] > 24
    assert status["sinks"][f"jsonl:{tmp_path / 'out.jsonl'}"]["behind"] == 0

    code, out, err = await run("status", env=env)
    assert code == 0 and "change log" in out and "permission   User.Read.All: granted" in out
    assert CLIENT_SECRET not in out + err


async def test_sync_reports_a_failing_source_and_exits_1(
    graph: RunningSimulator, redis_server: RedisServer, redis: object, tmp_path: Path
) -> None:
    env = sim_env(graph, redis_server, tmp_path, MONITOR_CLIENT_SECRET="not-the-secret")
    code, out, err = await run("sync", env=env)
    assert code == 1
    assert "FAILED users: tenant" in out and "client secret is wrong" in out
    assert "Traceback" not in out + err and "not-the-secret" not in out + err
