"""Every process survives a Redis outage: Redis stopped and started again (same port, its data kept)
under `monitor serve`, `monitor worker` and `monitor scheduler`, each a real process.

Each process must stay up, say it is not ready while Redis is away, and be back at work soon after
Redis answers again (the time is printed: `pytest -s`); the change log and the JSONL sink replayed
afterwards must show no gap and no duplicate, and rebuild the mirror.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from monitor.hints import Hint, enqueue
from monitor.keys import GLOBAL_METRICS, HINTS
from monitor.redis_conn import Redis, connect
from monitor.simulator import RunningSimulator, SimTenant, seed
from monitor.simulator.redis_process import free_port
from monitor.store import TenantStore
from tests.conftest import TENANT_ID
from tests.directory_helpers import replay
from tests.faults.conftest import (
    Launch,
    MonitorProcess,
    RestartableRedis,
    monitor_env,
    wait_for,
)
from tests.sink_files import read_jsonl, read_written_lines

# Generous: the aim is 10 s (the supervisor retries at most every 5 s); a busy machine must not flake.
BACK_TO_WORK = 30.0
DIRECTORY_JOBS = ("account", "users", "groups")


async def ask_for_rounds(redis_url: str) -> None:
    """What a notification (or the timer) would do: hints for a delta round of every source."""
    client = await connect(redis_url)
    try:
        await enqueue(client, [Hint(TENANT_ID, job, "test") for job in DIRECTORY_JOBS])
    finally:
        await client.aclose()


async def caught_up(redis_url: str, jsonl: Path) -> bool:
    """The queue is empty and the sink holds the whole change log."""
    client = await connect(redis_url)
    try:
        depth = await client.xlen(HINTS)
        last = await TenantStore(client, TENANT_ID).last_seq()
    finally:
        await client.aclose()
    records = read_written_lines(jsonl)
    return depth == 0 and last > 0 and bool(records) and int(records[-1]["seq"]) == last


async def restarts(redis_url: str, task: str) -> int:
    client = await connect(redis_url)
    try:
        value = await client.hget(GLOBAL_METRICS, f'monitor_task_restarts_total{{reason="redis",task="{task}"}}')
    finally:
        await client.aclose()
    return int(value or 0)


async def assert_nothing_lost(redis_url: str, jsonl: Path) -> None:
    """The sink is the change log, seq 1..n without gap or duplicate, and replaying it gives the mirror."""
    client: Redis = await connect(redis_url)
    try:
        store = TenantStore(client, TENANT_ID)
        log = await store.read_changes(0, 1_000_000)
        mirror = await store.mirror_dump()
    finally:
        await client.aclose()
    records = read_jsonl(jsonl)
    assert [int(r["seq"]) for r in records] == list(range(1, len(records) + 1))
    assert records == log
    assert replay(log) == mirror  # the file is the log (above)


async def stop_redis_under(process: MonitorProcess, redis: RestartableRedis, task: str) -> None:
    """Stop Redis until `task` (the worker or the scheduler) has noticed: the process must say it is
    not ready, and stay up."""
    redis.stop()

    async def noticed() -> bool:
        assert process.alive, f"`monitor` ended when Redis went away:\n{process.output()}"
        readiness = await process.readiness()
        return readiness.get("status") == "unavailable" and readiness.get(task, {}).get("state") == "not working"

    # The scheduler notices when it next renews its leadership (every 10 s); before the fix, the
    # process ended then with a traceback, as the worker did at once.
    await wait_for(noticed, within=30, what=f"/readyz says the {task} cannot work while Redis is down")
    await asyncio.sleep(1.0)
    assert process.alive, process.output()
    assert await process.status("/healthz") == 200


async def ready_is(process: MonitorProcess, status: int) -> bool:
    return await process.status("/readyz") == status


def change_the_directory(tenant: SimTenant) -> str:
    users, groups = list(tenant.users), list(tenant.groups)
    tenant.update_user(users[0], jobTitle="Changed while Redis was down")
    tenant.hard_delete_user(users[1])
    tenant.add_member(groups[0], users[2]) if users[2] not in tenant.members[groups[0]] else None
    return tenant.add_user(displayName="Joined during the outage", userPrincipalName="outage@contoso.example")


def test_a_file_read_while_the_sink_writes_it_gives_its_whole_lines(tmp_path: Path) -> None:
    """The tests below poll the sink's file while the worker writes it; a read that overlaps a write
    sees the first part of its last line, which is not read yet rather than failing the test."""
    path = tmp_path / "out.jsonl"
    path.write_bytes(b'{"seq": 1}\n{"seq": 2}\n{"seq": 3, "key": "us')
    assert read_written_lines(path) == [{"seq": 1}, {"seq": 2}]
    with pytest.raises(AssertionError, match="torn line"):
        read_jsonl(path)


@pytest.mark.parametrize("command", ["serve", "worker"])
async def test_a_worker_survives_redis_going_away_and_resumes(
    command: str,
    graph: RunningSimulator,
    tenant: SimTenant,
    outage_redis: RestartableRedis,
    launch: Launch,
    tmp_path: Path,
) -> None:
    seed(tenant, users=30, groups=4, memberships=40)
    port = free_port()
    jsonl = tmp_path / "out.jsonl"
    where = {"MONITOR_PORT": str(port)} if command == "serve" else {"MONITOR_PROBE_PORT": str(port)}
    env = monitor_env(graph, outage_redis, tmp_path, **where)
    process = await launch(command, env, port)
    await wait_for(lambda: ready_is(process, 200), within=30, what=f"`monitor {command}` ready")
    await ask_for_rounds(outage_redis.url)
    await wait_for(lambda: caught_up(outage_redis.url, jsonl), within=60, what="the first rounds delivered")

    await stop_redis_under(process, outage_redis, "worker")
    joined = change_the_directory(tenant)
    outage_redis.start()
    back = time.monotonic()
    await ask_for_rounds(outage_redis.url)

    async def delivered() -> bool:
        return any(r["key"] == joined for r in read_written_lines(jsonl)) and await caught_up(outage_redis.url, jsonl)

    await wait_for(delivered, within=BACK_TO_WORK, what="the changes made during the outage delivered")
    took = time.monotonic() - back
    print(f"\nmonitor {command}: back to work {took:.1f}s after Redis answered again")
    await wait_for(lambda: ready_is(process, 200), within=15, what="/readyz answers 200 again")
    assert await restarts(outage_redis.url, "worker") >= 1
    await assert_nothing_lost(outage_redis.url, jsonl)
    assert await process.stop() == 0, process.output()
    assert "Traceback" not in process.output()


async def newest_hint_at(redis_url: str) -> int:
    client = await connect(redis_url)
    try:
        newest: Any = await client.xrevrange(HINTS, count=1)
    finally:
        await client.aclose()
    return int(newest[0][1][b"at"]) if newest else 0


async def test_the_scheduler_survives_redis_going_away_and_resumes(
    graph: RunningSimulator, outage_redis: RestartableRedis, launch: Launch, tmp_path: Path
) -> None:
    port = free_port()
    env = monitor_env(graph, outage_redis, tmp_path, MONITOR_PROBE_PORT=str(port), MONITOR_DELTA_INTERVAL="1")
    process = await launch("scheduler", env, port)
    await wait_for(lambda: ready_is(process, 200), within=30, what="`monitor scheduler` ready")
    started = time.time() * 1000
    await wait_for(lambda: is_after(outage_redis.url, started), within=15, what="the scheduler enqueues hints")

    await stop_redis_under(process, outage_redis, "scheduler")
    outage_redis.start()
    back, back_ms = time.monotonic(), time.time() * 1000
    await wait_for(lambda: is_after(outage_redis.url, back_ms), within=BACK_TO_WORK, what="hints enqueued again")
    took = time.monotonic() - back
    print(f"\nmonitor scheduler: back to work {took:.1f}s after Redis answered again")
    await wait_for(lambda: ready_is(process, 200), within=15, what="/readyz answers 200 again")
    assert await restarts(outage_redis.url, "scheduler") >= 1
    assert await process.stop() == 0, process.output()
    assert "Traceback" not in process.output()


async def is_after(redis_url: str, moment_ms: float) -> bool:
    return await newest_hint_at(redis_url) >= moment_ms
