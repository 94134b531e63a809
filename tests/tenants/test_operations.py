"""Operating a deployment: request ids in responses and logs, probes of worker and scheduler, and the
scheduler following tenants registered and removed while it runs."""

from __future__ import annotations

import logging

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from monitor.logs import JsonFormatter, RequestContext
from monitor.probes import probe_app
from monitor.scheduler import Scheduler
from monitor.settings import TenantConfig
from monitor.simulator import SimTenant
from monitor.supervise import Health
from monitor.tenants import onboard, remove
from tests.conftest import CLIENT_ID
from tests.tenants.conftest import SECOND_TENANT, Deployment


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[dict[str, object]] = []
        self.addFilter(RequestContext())
        self.setFormatter(JsonFormatter())

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(orjson.loads(self.format(record)))


async def test_request_ids_are_honoured_made_echoed_and_logged(deployment: Deployment) -> None:
    handler = Records()
    logging.getLogger("monitor").addHandler(handler)
    try:
        async with deployment.browser() as browser:
            given = await browser.get(f"{deployment.public_url}/healthz", headers={"X-Request-Id": "req-42.a"})
            made = await browser.get(f"{deployment.public_url}/healthz")
            unsafe = await browser.get(f"{deployment.public_url}/healthz", headers={"X-Request-Id": "a b\tc" * 50})
            refused = await browser.get(f"{deployment.public_url}/status", headers={"X-Request-Id": "op-7"})
    finally:
        logging.getLogger("monitor").removeHandler(handler)
    assert given.headers["X-Request-Id"] == "req-42.a"
    assert len(made.headers["X-Request-Id"]) == 32
    assert unsafe.headers["X-Request-Id"] != "a b\tc" * 50 and len(unsafe.headers["X-Request-Id"]) == 32
    assert refused.status == 401 and refused.headers["X-Request-Id"] == "op-7"
    warning = next(line for line in handler.lines if "operator token" in str(line["message"]))
    assert warning["request_id"] == "op-7" and warning["level"] == "WARNING"


@pytest.mark.parametrize(
    ("state", "alive", "ready"), [("working", 200, 200), ("waiting for Redis", 200, 503), ("stopped", 503, 503)]
)
async def test_worker_and_scheduler_probes(deployment: Deployment, state: str, alive: int, ready: int) -> None:
    health = Health("worker")
    if state != "waiting for Redis":
        health.working()
    health.stopped = state == "stopped"
    async with TestClient(TestServer(probe_app(deployment.redis, health))) as client:
        live = await client.get("/healthz")
        readiness = await client.get("/readyz")
        assert (live.status, readiness.status) == (alive, ready)
        body = await readiness.json()
        assert body["worker"]["state"] == {"working": "working", "stopped": "stopped"}.get(state, "not working")
        # Redis is asked only when the loop works; otherwise the loop's state says why it is not ready.
        assert body.get("redis") == ("ok" if ready == 200 else None)


async def test_the_scheduler_follows_tenants_registered_and_removed(
    deployment: Deployment, fabrikam: SimTenant
) -> None:
    scheduler = Scheduler(deployment.runtime)
    apscheduler = AsyncIOScheduler(timezone="UTC")
    scheduler._apscheduler = apscheduler
    apscheduler.start(paused=True)
    try:
        scheduler.sync_sweeps()
        assert [job.id for job in apscheduler.get_jobs()] == []
        deployment.sim.grant(SECOND_TENANT, CLIENT_ID)
        await onboard(deployment.runtime, TenantConfig.model_validate({"id": SECOND_TENANT, "polling_interval": "30m"}))
        scheduler.sync_sweeps()
        jobs = {job.id: job.trigger.interval.total_seconds() for job in apscheduler.get_jobs()}
        # The sweep at the tenant's interval, the incremental Intune pass at MONITOR_INTUNE_INCREMENTAL_INTERVAL.
        incremental = deployment.runtime.settings.intune_incremental_interval
        assert jobs == {f"sweep:{SECOND_TENANT}": 1800, f"sweep:live:{SECOND_TENANT}": incremental}
        assert {h.job for h in scheduler._hints(("users",), "timer")} == {"users"}
        await remove(deployment.runtime, SECOND_TENANT)
        scheduler.sync_sweeps()
        assert apscheduler.get_jobs() == []
        assert scheduler._hints(("users",), "timer") == []
    finally:
        apscheduler.shutdown(wait=False)
