"""Fault tests on real processes: `python -m monitor ...` in a subprocess, against a Redis of the
test's own that the test stops and starts again, and the simulated Graph served by the test."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from monitor.simulator import RunningSimulator
from monitor.simulator.redis_process import (
    RedisClusterProcesses,
    RedisProcess,
    free_port,
    start_redis_cluster,
    start_redis_server,
)
from tests.conftest import TENANT_ID, RedisServer
from tests.test_cli import sim_env

# Every write on disk before it is acknowledged: a Redis stopped and started again has all of it.
PERSISTENT = ("--appendonly", "yes", "--appendfsync", "always")


class RestartableRedis:
    """A Redis (one server, or a cluster of three when the suite runs on a cluster) that the test
    stops and starts again on the same ports, with its data (AOF)."""

    def __init__(self, data_dir: Path) -> None:
        self.servers: RedisProcess | RedisClusterProcesses
        if os.environ.get("MONITOR_TEST_REDIS_CLUSTER") == "1":
            self.servers = start_redis_cluster(data_dir, extra_args=PERSISTENT)
        else:
            self.servers = start_redis_server(data_dir, *PERSISTENT)
        self.running = True

    @property
    def url(self) -> str:
        return self.servers.url

    def stop(self) -> None:
        self.servers.stop()
        self.running = False

    def start(self) -> None:
        """Start it again; returns once it answers."""
        self.servers = self.servers.restarted()
        self.running = True


@pytest.fixture
def outage_redis(tmp_path: Path) -> Iterator[RestartableRedis]:
    data_dir = tmp_path / "redis"
    data_dir.mkdir()
    redis = RestartableRedis(data_dir)
    yield redis
    if redis.running:
        redis.stop()


def monitor_env(graph: RunningSimulator, redis: RestartableRedis, tmp_path: Path, **extra: str) -> dict[str, str]:
    """The settings of `tests/test_cli.py` (the sink is `tmp_path/out.jsonl`), on the test's own Redis."""
    return sim_env(graph, redis.servers, tmp_path, MONITOR_HOST="127.0.0.1", **extra)


@dataclass
class MonitorProcess:
    """`python -m monitor <command>` running in the background; its output goes to a file."""

    process: asyncio.subprocess.Process
    log_path: Path
    port: int
    http: aiohttp.ClientSession = field(repr=False)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    @property
    def alive(self) -> bool:
        return self.process.returncode is None

    async def status(self, path: str) -> int | None:
        """The status of GET `path` on the process's HTTP port, None if nothing answers."""
        try:
            async with self.http.get(f"http://127.0.0.1:{self.port}{path}") as response:
                await response.read()
                return response.status
        except (aiohttp.ClientError, TimeoutError):
            return None

    async def readiness(self) -> dict[str, Any]:
        """The body of GET /readyz (empty if nothing answers)."""
        try:
            async with self.http.get(f"http://127.0.0.1:{self.port}/readyz") as response:
                body: dict[str, Any] = await response.json()
                return body
        except (aiohttp.ClientError, TimeoutError):
            return {}

    async def stop(self) -> int:
        if self.alive:
            self.process.terminate()
        return await asyncio.wait_for(self.process.wait(), 60)


Launch = Callable[..., Awaitable[MonitorProcess]]


@pytest.fixture
async def launch(tmp_path: Path) -> AsyncIterator[Launch]:
    """Start monitor processes (stopped at the end of the test)."""
    started: list[MonitorProcess] = []
    http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))

    async def start(command: str, env: dict[str, str], port: int) -> MonitorProcess:
        clean = {k: v for k, v in os.environ.items() if not k.startswith("MONITOR_")} | env
        log_path = tmp_path / f"{command}-{len(started)}.log"
        with log_path.open("wb") as log_file:
            argv = (sys.executable, "-m", "monitor", *command.split())
            process = await asyncio.create_subprocess_exec(*argv, env=clean, stdout=log_file, stderr=log_file)
        running = MonitorProcess(process, log_path, port, http)
        started.append(running)
        return running

    try:
        yield start
    finally:
        for running in started:
            if running.alive:
                running.process.kill()
                await running.process.wait()
        await http.close()


async def start_web(launch: Launch, redis_server: RedisServer, **extra: str) -> MonitorProcess:
    """`monitor web` on a free port of 127.0.0.1, for the suite's tenant, once it answers."""
    port = free_port()
    env = {
        "MONITOR_REDIS_URL": redis_server.url,
        "MONITOR_TENANT_ID": TENANT_ID,
        "MONITOR_HOST": "127.0.0.1",
        "MONITOR_PORT": str(port),
        **extra,
    }
    web = await launch("web", env, port)
    await wait_for(lambda: answers(web), within=30, what="`monitor web` answers")
    return web


async def answers(process: MonitorProcess) -> bool:
    return await process.status("/healthz") == 200


async def wait_for(condition: Callable[[], Awaitable[bool]], *, within: float, what: str) -> float:
    """Seconds until `condition()` holds (checked every 50 ms); fails the test after `within`."""
    started = time.monotonic()
    while not await condition():
        if time.monotonic() - started > within:
            pytest.fail(f"not within {within:g}s: {what}")
        await asyncio.sleep(0.05)
    return time.monotonic() - started
