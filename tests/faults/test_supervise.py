"""The supervisor: a loop that fails is restarted and counted; a stopped process reports it."""

from __future__ import annotations

import asyncio
import logging

import pytest
import redis.asyncio as aioredis

from monitor.keys import GLOBAL_METRICS
from monitor.retry import RetryPolicy
from monitor.supervise import Health, Supervisor

QUICK = RetryPolicy(base_delay=0.01, max_delay=0.02)


async def test_a_loop_that_crashes_is_restarted_counted_and_logged(
    redis: aioredis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    health = Health("worker")
    runs: list[int] = []

    async def loop() -> str:
        runs.append(len(runs))
        if len(runs) < 3:
            raise RuntimeError(f"bug number {len(runs)}")
        health.working()
        return "done"

    with caplog.at_level(logging.INFO, logger="monitor.supervise"):
        result = await Supervisor(redis, health, policy=QUICK).run(loop, asyncio.Event())

    assert result == "done" and len(runs) == 3
    assert health.restarts == 2 and health.ready is False and health.stopped, "it returned: stopped"
    counted = await redis.hget(GLOBAL_METRICS, 'monitor_task_restarts_total{reason="crash",task="worker"}')
    assert counted == b"2"
    crashes = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(crashes) == 2 and all(r.exc_info for r in crashes), "a crash is a bug: logged with its traceback"
    assert any("working again" in r.getMessage() for r in caplog.records)


async def test_a_loop_stops_when_asked_even_while_failing(redis: aioredis.Redis) -> None:
    health = Health("scheduler")
    stop = asyncio.Event()

    async def loop() -> str:
        stop.set()  # asked to stop while it fails: not restarted again
        raise ConnectionError("Redis went away")

    assert await Supervisor(redis, health, policy=QUICK).run(loop, stop) is None
    assert health.restarts == 0 and health.stopped
    assert await redis.hget(GLOBAL_METRICS, 'monitor_task_restarts_total{reason="redis",task="scheduler"}') is None
