"""Operators see which workers are alive, and see it when none is: a real `monitor worker` next to a real
`monitor web`, read through `monitor status` (text and JSON), `GET /status` and `GET /metrics`
(`monitor_workers_live`, which the alert `MonitorNoLiveWorker` watches), before and after the worker stops.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from monitor.keys import WORKER_HEARTBEAT_TTL
from monitor.simulator import RunningSimulator
from monitor.simulator.redis_process import free_port
from tests.faults.conftest import Launch, MonitorProcess, RestartableRedis, monitor_env, wait_for
from tests.faults.test_redis_outage import ready_is
from tests.test_cli import run

OPERATOR_TOKEN = "operator-token-for-the-live-workers-1"
METRICS_TOKEN = "metrics-token-for-the-live-workers-01"


async def fetch(web: MonitorProcess, path: str, token: str) -> str:
    headers = {"Authorization": f"Bearer {token}"}
    async with web.http.get(f"http://127.0.0.1:{web.port}{path}", headers=headers) as response:
        assert response.status == 200, path
        return await response.text()


async def shown_everywhere(web: MonitorProcess, env: dict[str, str]) -> tuple[list[dict[str, Any]], str, str, str]:
    """The live workers as `GET /status` lists them, the gauge line of `GET /metrics`, and what
    `monitor status` says of them: its text, and the names in its JSON."""
    workers = orjson.loads(await fetch(web, "/status", OPERATOR_TOKEN))["workers"]
    scrape = (await fetch(web, "/metrics", METRICS_TOKEN)).splitlines()
    gauge = next(line for line in scrape if line.startswith("monitor_workers_live "))
    code, text, err = await run("status", env=env)
    assert code == 0, err
    code, as_json, err = await run("status", "--json", env=env)
    assert code == 0, err
    listed = orjson.dumps([worker["name"] for worker in orjson.loads(as_json)["workers"]]).decode()
    return workers, gauge, text, listed


async def test_status_and_metrics_list_the_live_workers_and_none_once_they_stop(
    graph: RunningSimulator, outage_redis: RestartableRedis, launch: Launch, tmp_path: Path
) -> None:
    env = monitor_env(
        graph, outage_redis, tmp_path, MONITOR_OPERATOR_TOKEN=OPERATOR_TOKEN, MONITOR_METRICS_TOKEN=METRICS_TOKEN
    )
    web_port, probe_port = free_port(), free_port()
    web = await launch("web", {**env, "MONITOR_PORT": str(web_port)}, web_port)
    worker = await launch("worker", {**env, "MONITOR_PROBE_PORT": str(probe_port)}, probe_port)
    await wait_for(lambda: ready_is(web, 200), within=60, what="`monitor web` ready")
    await wait_for(lambda: ready_is(worker, 200), within=60, what="`monitor worker` ready")

    workers, gauge, text, listed = await shown_everywhere(web, env)
    [live] = workers
    assert live["name"].endswith(f"-{worker.process.pid}")  # host name and process id
    assert 0 <= live["age_seconds"] <= WORKER_HEARTBEAT_TTL
    assert gauge == "monitor_workers_live 1"
    assert f"worker       {live['name']}: live, last heartbeat " in text
    assert listed == orjson.dumps([live["name"]]).decode()

    assert await worker.stop() == 0, worker.output()  # a stopping worker takes its heartbeat with it
    workers, gauge, text, listed = await shown_everywhere(web, env)
    assert workers == [] and listed == "[]"
    assert gauge == "monitor_workers_live 0"
    assert "workers      NONE live" in text
