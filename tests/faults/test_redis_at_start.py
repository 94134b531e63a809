"""A process started while Redis does not answer waits for it: `monitor web`, `worker`, `scheduler`
and `serve`, each a real process started before a real redis-server (or cluster) is.

Meanwhile each stays up, answers `/healthz` 200 and `/readyz` 503 (the worker and the scheduler on
`MONITOR_PROBE_PORT`), the webhook answers 503 so that Graph delivers again, and each logs one line
about it, not one per try. Once Redis answers, the processes start working: the scheduler asks for the
first rounds, the worker runs them and the sink receives the whole change log. One-off commands still
fail at once with one line (tests/test_cli.py).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from monitor.simulator import RunningSimulator, SimTenant, seed
from monitor.simulator.redis_process import free_port
from tests.conftest import TENANT_ID
from tests.faults.conftest import Launch, MonitorProcess, RestartableRedis, monitor_env, wait_for
from tests.faults.test_redis_outage import BACK_TO_WORK, assert_nothing_lost, caught_up, ready_is

WAITING = "does not answer"
# A notification for a subscription monitor never made: dropped and counted (202) once Redis answers.
NOTIFICATION = {
    "value": [
        {
            "subscriptionId": "0b7c1d2e-3f40-4a5b-8c6d-7e8f90a1b2c3",
            "tenantId": TENANT_ID,
            "clientState": "whatever",
            "changeType": "updated",
            "resource": "Users/1",
        }
    ]
}


async def notify(web: MonitorProcess) -> int:
    async with web.http.post(f"http://127.0.0.1:{web.port}/graph/notifications", json=NOTIFICATION) as response:
        await response.read()
        return response.status


async def waits_for_redis(process: MonitorProcess) -> bool:
    """Up, alive, not ready because of Redis, and the one line about it logged."""
    assert process.alive, f"`monitor` ended while Redis was unreachable:\n{process.output()}"
    readiness = await process.readiness()
    return (
        await process.status("/healthz") == 200
        and "waiting for Redis" in str(readiness)
        and readiness.get("status") == "unavailable"
        and WAITING in process.output()
    )


async def started_apart(
    launch: Launch, graph: RunningSimulator, redis: RestartableRedis, tmp_path: Path
) -> list[MonitorProcess]:
    web_port, worker_port, scheduler_port = free_port(), free_port(), free_port()
    env = monitor_env(graph, redis, tmp_path)
    return [
        await launch("web", {**env, "MONITOR_PORT": str(web_port)}, web_port),
        await launch("worker", {**env, "MONITOR_PROBE_PORT": str(worker_port)}, worker_port),
        await launch("scheduler", {**env, "MONITOR_PROBE_PORT": str(scheduler_port)}, scheduler_port),
    ]


async def test_processes_started_before_redis_wait_for_it_then_work(
    graph: RunningSimulator, tenant: SimTenant, outage_redis: RestartableRedis, launch: Launch, tmp_path: Path
) -> None:
    seed(tenant, users=20, groups=3, memberships=25)
    jsonl = tmp_path / "out.jsonl"
    outage_redis.stop()  # the servers' addresses are known; nothing answers there yet
    web, worker, scheduler = processes = await started_apart(launch, graph, outage_redis, tmp_path)

    for process in processes:
        await wait_for(lambda p=process: waits_for_redis(p), within=60, what="up and waiting for Redis")  # type: ignore[misc]
    assert await notify(web) == 503  # Graph keeps the notification and delivers it again
    # Several tries with backoff go by; each process still says it once.
    await asyncio.sleep(3.0)
    for process in processes:
        assert process.alive, process.output()
        assert process.output().count(WAITING) == 1, process.output()

    outage_redis.start()
    back = time.monotonic()
    for process in processes:
        await wait_for(lambda p=process: ready_is(p, 200), within=BACK_TO_WORK, what="ready once Redis answers")  # type: ignore[misc]
    await wait_for(lambda: caught_up(outage_redis.url, jsonl), within=60, what="the first rounds delivered")
    print(f"\nweb, worker, scheduler: working {time.monotonic() - back:.1f}s after Redis answered")
    assert await notify(web) == 202
    await assert_nothing_lost(outage_redis.url, jsonl)
    for process in processes:
        assert await process.stop() == 0, process.output()
        assert "Traceback" not in process.output() and process.output().count(WAITING) == 1


async def test_serve_started_before_redis_waits_for_it_then_works(
    graph: RunningSimulator, tenant: SimTenant, outage_redis: RestartableRedis, launch: Launch, tmp_path: Path
) -> None:
    seed(tenant, users=10, groups=2, memberships=10)
    jsonl = tmp_path / "out.jsonl"
    outage_redis.stop()
    port = free_port()
    env = monitor_env(graph, outage_redis, tmp_path, MONITOR_PORT=str(port))
    serve = await launch("serve", env, port)

    await wait_for(lambda: waits_for_redis(serve), within=60, what="`monitor serve` up and waiting for Redis")
    assert await notify(serve) == 503

    outage_redis.start()
    await wait_for(lambda: ready_is(serve, 200), within=BACK_TO_WORK, what="`monitor serve` ready once Redis answers")
    await wait_for(lambda: caught_up(outage_redis.url, jsonl), within=60, what="the first rounds delivered")
    readiness = await serve.readiness()
    assert readiness["worker"]["state"] == readiness["scheduler"]["state"] == "working"
    assert await notify(serve) == 202
    await assert_nothing_lost(outage_redis.url, jsonl)
    assert await serve.stop() == 0, serve.output()
    assert "Traceback" not in serve.output() and serve.output().count(WAITING) == 1


@pytest.mark.parametrize("command", ["web", "worker", "scheduler"])
async def test_a_process_waiting_for_redis_stops_cleanly(
    command: str, graph: RunningSimulator, outage_redis: RestartableRedis, launch: Launch, tmp_path: Path
) -> None:
    """An orchestrator stops a pod that never became ready: SIGTERM ends the wait, exit 0."""
    outage_redis.stop()
    port = free_port()
    where = {"MONITOR_PORT": str(port)} if command == "web" else {"MONITOR_PROBE_PORT": str(port)}
    process = await launch(command, monitor_env(graph, outage_redis, tmp_path, **where), port)
    await wait_for(lambda: waits_for_redis(process), within=60, what=f"`monitor {command}` waiting for Redis")
    assert await process.stop() == 0, process.output()
    assert "Traceback" not in process.output()
