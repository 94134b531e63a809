"""Fault tests of durability on real processes: `monitor sync` and `monitor worker` run as users run them (`python -m
monitor` in a subprocess) against the simulated tenant and the suite's Redis, and are killed, frozen,
or starved of disk space while they work. Every test ends by reading back what the sinks hold."""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, cast

import pytest
import redis.asyncio as aioredis
from aiohttp import web
from pytest_aiohttp import AiohttpServer

from monitor.hints import Hint, enqueue
from monitor.keys import HINTS
from monitor.model.account import account_key
from monitor.model.types import JsonObject
from monitor.records import ChangeRecord
from monitor.simulator import RunningSimulator, SimTenant, Simulator
from monitor.simulator.faults import Fault
from monitor.store import TenantStore
from tests.conftest import TENANT_ID, RedisServer
from tests.directory_helpers import expected_mirror, replay
from tests.test_cli import sim_env

ACCOUNT_KEY = account_key(TENANT_ID)
# Long enough for any step on a busy machine; a step that needs it has failed.
PATIENCE = 60.0
# Runs `monitor` with SIGXFSZ back at its default action (the process dies inside a write that
# reaches its file-size limit); the interpreter itself ignores that signal.
MONITOR_WITH_SIGXFSZ = (
    "import signal, sys\n"
    "signal.signal(signal.SIGXFSZ, signal.SIG_DFL)\n"
    "from monitor.cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


@dataclass
class Monitor:
    """A `monitor` command running in a subprocess, its output collected line by line."""

    process: asyncio.subprocess.Process
    out: list[str] = field(default_factory=list)
    err: list[str] = field(default_factory=list)
    readers: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def stderr(self) -> str:
        return "".join(self.err)

    @property
    def stdout(self) -> str:
        return "".join(self.out)

    async def exited(self) -> int:
        code = await asyncio.wait_for(self.process.wait(), PATIENCE)
        await asyncio.gather(*self.readers)
        return code

    async def kill(self) -> None:
        """kill -9."""
        self.process.kill()
        await self.exited()

    async def terminate(self) -> int:
        """SIGTERM: a worker finishes what it holds and exits."""
        self.process.terminate()
        return await self.exited()

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)


async def _collect(stream: asyncio.StreamReader | None, lines: list[str]) -> None:
    assert stream is not None
    async for line in stream:
        lines.append(line.decode())


async def _start(*args: str, env: dict[str, str], die_on_file_size_limit: bool) -> Monitor:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MONITOR_")}
    # No bytecode written by the child: every file it writes is the one under test.
    full_env = {**clean, **env, "PYTHONDONTWRITEBYTECODE": "1"}
    command = ("-c", MONITOR_WITH_SIGXFSZ) if die_on_file_size_limit else ("-m", "monitor")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *command,
        *args,
        env=full_env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        preexec_fn=_no_core_dumps,
    )
    monitor = Monitor(process)
    monitor.readers = [
        asyncio.create_task(_collect(process.stdout, monitor.out)),
        asyncio.create_task(_collect(process.stderr, monitor.err)),
    ]
    return monitor


def _no_core_dumps() -> None:
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


class Launch(Protocol):
    async def __call__(self, *args: str, env: dict[str, str], die_on_file_size_limit: bool = False) -> Monitor: ...


@pytest.fixture
async def launch() -> AsyncIterator[Launch]:
    """Starts `monitor <args>`; whatever is still running at the end of the test is killed."""
    started: list[Monitor] = []

    async def start(*args: str, env: dict[str, str], die_on_file_size_limit: bool = False) -> Monitor:
        monitor = await _start(*args, env=env, die_on_file_size_limit=die_on_file_size_limit)
        started.append(monitor)
        return monitor

    yield start
    for monitor in started:
        if monitor.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                monitor.process.send_signal(signal.SIGCONT)
                monitor.process.kill()
            await monitor.process.wait()
        for reader in monitor.readers:
            reader.cancel()


async def wait_until(check: Callable[[], Awaitable[bool]], what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + PATIENCE
    while not await check():
        if loop.time() > deadline:
            raise AssertionError(f"still waiting after {PATIENCE:g} s for {what}")
        await asyncio.sleep(0.05)


async def fired(fault: Fault) -> bool:
    """Whether a simulated Graph fault has fired (its request has arrived)."""
    return fault.fired > 0


@dataclass
class Scene:
    """The simulated tenant, the suite's Redis, and `monitor` processes started against both."""

    sim: Simulator
    tenant: SimTenant
    graph: RunningSimulator
    redis_server: RedisServer
    redis: aioredis.Redis
    tmp_path: Path
    launch: Launch

    @property
    def store(self) -> TenantStore:
        return TenantStore(self.redis, TENANT_ID)

    def env(self, **extra: str) -> dict[str, str]:
        """The environment of a `monitor` process (MONITOR_* settings) on the tenant and the Redis."""
        return sim_env(self.graph, self.redis_server, self.tmp_path, **extra)

    async def hint(self, *jobs: str) -> None:
        await enqueue(self.redis, [Hint(TENANT_ID, job, "notification") for job in jobs])

    async def delivered(self, *sinks: str) -> bool:
        """Every hint was handled and every sink holds every committed record (and there are some)."""
        if await self.redis.xlen(HINTS):
            return False  # a hint is acknowledged after its round committed: read before the cursors
        last = await self.store.last_seq()
        return last > 0 and all([await self.store.cursor(sink) == last for sink in sinks])

    async def assert_complete(self, records: Sequence[JsonObject]) -> None:
        """The records (as a sink delivered them: JSON) are the whole change log, each seq once and in
        order, and replaying them gives the mirror, which is the tenant's directory."""
        last = await self.store.last_seq()
        assert [r["seq"] for r in records] == list(range(1, last + 1)), "a gap or a duplicate seq"
        mirror = await self.store.mirror_dump()
        assert replay([cast(ChangeRecord, record) for record in records]) == mirror
        assert mirror == expected_mirror(self.tenant, ACCOUNT_KEY)


@pytest.fixture
def scene(
    sim: Simulator,
    tenant: SimTenant,
    graph: RunningSimulator,
    redis_server: RedisServer,
    redis: aioredis.Redis,
    tmp_path: Path,
    launch: Launch,
) -> Scene:
    return Scene(sim, tenant, graph, redis_server, redis, tmp_path, launch)


@dataclass
class Hook:
    """A receiver for both webhooks (change records at /records, alerts at /alerts) that can hold the
    next request until `release` is set, and then fail it: the sender is killed meanwhile."""

    url: str
    records: list[dict[str, Any]] = field(default_factory=list)
    alerts: list[dict[str, Any]] = field(default_factory=list)
    hold_next: bool = False
    held: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    def record_seqs(self) -> set[int]:
        return {int(record["seq"]) for record in self.records}


@pytest.fixture
async def hook(aiohttp_server: AiohttpServer) -> AsyncIterator[Hook]:
    box: list[Hook] = []

    async def receive(request: web.Request) -> web.Response:
        target, body = box[0], await request.json()
        if target.hold_next:
            target.hold_next = False
            target.held.set()
            await target.release.wait()
            return web.Response(status=503)
        if request.path == "/records":
            target.records += body["records"]
        else:
            target.alerts.append(body)
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/records", receive)
    app.router.add_post("/alerts", receive)
    server = await aiohttp_server(app)
    box.append(Hook(str(server.make_url("")).rstrip("/")))
    yield box[0]
    box[0].release.set()
