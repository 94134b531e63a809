"""Health probes for the processes that serve no HTTP of their own: `monitor worker` and `monitor
scheduler` answer `GET /healthz` and `GET /readyz` on `MONITOR_PROBE_PORT` when it is set.

Kubernetes restarts a container whose liveness probe fails and routes nothing to one that is not
ready; the web process has both routes anyway (`monitor.web`). Here `/healthz` fails (503) once the
process's main loop has ended (stopping, or its supervisor gave up), so a wedged process is
restarted, and `/readyz` fails while Redis does not answer or the loop cannot work (it is waiting for
Redis to come back, `monitor.supervise`); the body says why. A Redis outage fails readiness, not
liveness: restarting the process would not bring Redis back, and the loop resumes by itself. The
probes answer from the start, also while a process started without a reachable Redis waits for it
(`Runtime.until_redis_answers`): `/healthz` 200, `/readyz` 503 saying so. Off by default: processes
sharing a host (a Procfile run locally) would otherwise fight over one port.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web

from monitor.redis_conn import REDIS_UNAVAILABLE, Redis
from monitor.supervise import Health

PROBE_PATHS = ("/healthz", "/readyz")


def probe_app(redis: Redis, health: Health) -> web.Application:
    async def healthz(request: web.Request) -> web.Response:
        if health.stopped:
            return web.json_response({"status": "stopped"}, status=503)
        return web.json_response({"status": "ok"})

    async def readyz(request: web.Request) -> web.Response:
        loop = {health.task: health.describe()}
        if not health.ready:  # the loop says why (waiting for Redis, or for it to come back)
            return web.json_response({"status": "unavailable", **loop}, status=503)
        try:
            await asyncio.wait_for(redis.ping(), timeout=2.0)
        except REDIS_UNAVAILABLE as exc:
            return web.json_response({"status": "unavailable", "redis": str(exc), **loop}, status=503)
        return web.json_response({"status": "ok", "redis": "ok", **loop})

    app = web.Application()
    app.router.add_get(PROBE_PATHS[0], healthz)
    app.router.add_get(PROBE_PATHS[1], readyz)
    return app


@asynccontextmanager
async def serve_probes(host: str, port: int | None, redis: Redis, health: Health) -> AsyncIterator[None]:
    """Serve the probes while the block runs (nothing when `port` is None)."""
    if port is None:
        yield
        return
    runner = web.AppRunner(probe_app(redis, health), access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        yield
    finally:
        await runner.cleanup()
