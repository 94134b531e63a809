"""Health probes for the processes that serve no HTTP of their own: `monitor worker` and `monitor
scheduler` answer `GET /healthz` and `GET /readyz` on `MONITOR_PROBE_PORT` when it is set.

Kubernetes restarts a container whose liveness probe fails and routes nothing to one that is not
ready; the web process has both routes anyway (`monitor.web`). Here `/healthz` fails (503) once the
process's main loop has ended (crashed or stopping), so a wedged worker is restarted, and `/readyz`
fails while Redis does not answer. Off by default: processes sharing a host (a Procfile run locally)
would otherwise fight over one port.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from aiohttp import web
from redis.exceptions import RedisError

from monitor.redis_conn import Redis

PROBE_PATHS = ("/healthz", "/readyz")


def probe_app(redis: Redis, alive: Callable[[], bool]) -> web.Application:
    async def healthz(request: web.Request) -> web.Response:
        if not alive():
            return web.json_response({"status": "stopped"}, status=503)
        return web.json_response({"status": "ok"})

    async def readyz(request: web.Request) -> web.Response:
        try:
            await asyncio.wait_for(redis.ping(), timeout=2.0)
        except (RedisError, OSError, TimeoutError) as exc:
            return web.json_response({"status": "unavailable", "redis": str(exc)}, status=503)
        return web.json_response({"status": "ok" if alive() else "stopped", "redis": "ok"})

    app = web.Application()
    app.router.add_get(PROBE_PATHS[0], healthz)
    app.router.add_get(PROBE_PATHS[1], readyz)
    return app


@asynccontextmanager
async def serve_probes(host: str, port: int | None, redis: Redis, alive: Callable[[], bool]) -> AsyncIterator[None]:
    """Serve the probes while the block runs (nothing when `port` is None)."""
    if port is None:
        yield
        return
    runner = web.AppRunner(probe_app(redis, alive), access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        yield
    finally:
        await runner.cleanup()
