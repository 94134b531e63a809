"""The HTTP side: `create_app(settings)` builds the aiohttp application of `monitor web`.

Routes: the Graph webhook (`POST /graph/notifications`, `POST /graph/lifecycle`), `GET /healthz`
(the process answers), `GET /readyz` (Redis answers; subscription health is reported in the body);
behind the metrics token, `GET /metrics` (Prometheus text); behind the operator token, `GET /onboard`
and its callback (admin-consent onboarding, `monitor.onboarding`) and `GET /status`
(`monitor.operator`; HTML for a browser, which signs in at `POST /status/login`:
`monitor.status_page`). Every
response carries an `X-Request-Id`, which is also in every log record written while serving it.
With `worker=True, scheduler=True` (`monitor serve`) the same application also runs the worker and
the scheduler as tasks of its event loop.

`create_app` lives here rather than in `monitor.app` (which holds the `Runtime` it wires) because
the worker and scheduler it may start import `monitor.app` themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Middleware

from monitor.app import Runtime
from monitor.graph.subscriptions import parse_graph_time
from monitor.hints import queue_depth
from monitor.metrics import metric, render
from monitor.onboarding import routes as onboarding_routes
from monitor.operator import (
    Handler,
    fresh_tenants,
    metrics_refusal,
    request_ids,
    status_handler,
    status_login_handler,
)
from monitor.records import SubscriptionRecord, decode_registry
from monitor.redis_conn import REDIS_UNAVAILABLE
from monitor.scheduler import Scheduler
from monitor.settings import Settings
from monitor.source_registry import BY_RESOURCE, DELTA, NOTIFIED
from monitor.status import operational_gauges
from monitor.supervise import Health
from monitor.webhook import INTAKE, MAX_BODY, READ_TIMEOUT, Intake, lifecycle, notifications
from monitor.worker import Worker

log = logging.getLogger(__name__)

RUNTIME: web.AppKey[Runtime] = web.AppKey("runtime", Runtime)
# The health of the worker and scheduler this process runs (`monitor serve`), for /readyz.
LOOPS: web.AppKey[list[Health]] = web.AppKey("loops", list)
# Whether Redis has answered since the process started (`until_started`).
STARTED: web.AppKey[Health] = web.AppKey("started", Health)
STOP_GRACE = 30.0


def create_app(
    settings: Settings, *, worker: bool = False, scheduler: bool = False, runtime: Runtime | None = None
) -> web.Application:
    """The application; resources are opened on start-up and closed on shutdown (cleanup_ctx).

    Started while Redis does not answer, it serves at once all the same: `/healthz` answers 200,
    `/readyz` and every other route 503 (`until_started`), until Redis answers; then the worker and
    the scheduler of `monitor serve` start."""
    app = web.Application(
        client_max_size=settings.webhook_max_body,
        middlewares=[request_ids(), until_started(STARTED), fresh_tenants(RUNTIME)],
    )
    app[MAX_BODY] = settings.webhook_max_body
    app[READ_TIMEOUT] = settings.http_read_timeout
    app[LOOPS] = []
    app[STARTED] = Health("web")

    async def lifecycle_ctx(app: web.Application) -> AsyncIterator[None]:
        # Graph access for the worker, and for onboarding (it validates a consented tenant) when the
        # app registration is configured; a bare webhook needs none.
        opened = runtime or await Runtime.open(settings, graph=worker or _has_credentials(settings), check_redis=False)
        app[RUNTIME] = opened
        app[INTAKE] = Intake(opened.redis, opened.watched_ids)
        stop = asyncio.Event()
        tasks: list[asyncio.Task[Any]] = []

        async def start() -> None:
            """Once Redis answers: ready, and the worker and scheduler (`monitor serve`) at work."""
            if not await opened.until_redis_answers(app[STARTED], stop) or stop.is_set():
                return  # stopped first: nothing to start, nothing that `_finish` would not wait for
            app[STARTED].working()
            if worker:
                running_worker = Worker(opened)
                app[LOOPS].append(running_worker.health)
                tasks.append(asyncio.create_task(running_worker.run(stop), name="worker"))
            if scheduler:
                running_scheduler = Scheduler(opened)
                app[LOOPS].append(running_scheduler.health)
                tasks.append(asyncio.create_task(running_scheduler.run(stop), name="scheduler"))

        # Redis usually answers at once (a runtime handed in is connected already): the app is then
        # ready before it listens. Otherwise it listens not ready, and waits for Redis meanwhile.
        problem = None if runtime is not None else await opened.reach_redis()
        if problem is None:
            await start()
        else:
            app[STARTED].failing(f"waiting for Redis: {problem}")
            tasks.append(asyncio.create_task(start(), name="start"))
        yield
        stop.set()
        await _finish(tasks)
        await app[INTAKE].close()
        if runtime is None:
            await opened.close()

    app.cleanup_ctx.append(lifecycle_ctx)
    app.router.add_post("/graph/notifications", notifications)
    app.router.add_post("/graph/lifecycle", lifecycle)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_endpoint)
    app.router.add_routes(onboarding_routes(RUNTIME))
    app.router.add_get("/status", status_handler(RUNTIME))
    app.router.add_post("/status/login", status_login_handler(RUNTIME))
    return app


def until_started(started_key: web.AppKey[Health]) -> Middleware:
    """Middleware: until Redis has answered once, `/healthz` is served (the process is alive), and
    everything else answers 503 without touching Redis: `/readyz` saying why, the webhook so that
    Graph delivers the notification again later (docs/graph.md 4.2), the operator routes asking to
    retry. Once started, Redis trouble is each handler's to answer (the webhook's 503, `/readyz`)."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = request.app[started_key]
        if started.ready or request.path == "/healthz":
            return await handler(request)
        body = {"status": "unavailable", "redis": started.reason}
        return web.json_response(body, status=503, headers={"Retry-After": "5", "Cache-Control": "no-store"})

    return middleware


def _has_credentials(settings: Settings) -> bool:
    return bool(settings.client_id) and (settings.client_secret is not None or settings.client_certificate is not None)


async def _finish(tasks: list[asyncio.Task[Any]]) -> None:
    """Let the worker finish its jobs in hand (graceful stop), then cancel what is left."""
    if not tasks:
        return
    done, pending = await asyncio.wait(tasks, timeout=STOP_GRACE)
    for task in pending:
        task.cancel()
    for task in [*done, *pending]:
        with contextlib.suppress(asyncio.CancelledError):
            error = await task if task in pending else task.exception()
            if isinstance(error, BaseException):
                log.error("%s ended with an error: %s", task.get_name(), error)


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(settings.tls_cert, settings.tls_key)
    return context


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """503 when Redis does not answer (nothing can be enqueued), or when the worker or scheduler this
    process runs (`monitor serve`) cannot work. Subscriptions are reported, not gated on: an unready
    webhook would be taken out of the load balancer, and Graph could then not validate the very
    subscription that needs repairing."""
    runtime = request.app[RUNTIME]
    loops = {health.task: health.describe() for health in request.app[LOOPS]}
    try:
        await asyncio.wait_for(runtime.redis.ping(), timeout=2.0)
    except REDIS_UNAVAILABLE as exc:
        return web.json_response({"status": "unavailable", "redis": str(exc), **loops}, status=503)
    if not all(health.ready for health in request.app[LOOPS]):
        return web.json_response({"status": "unavailable", "redis": "ok", **loops}, status=503)
    subscriptions = {tenant: await _subscription_health(runtime, tenant) for tenant in runtime.tenant_ids()}
    healthy = all(state == "ok" for states in subscriptions.values() for state in states.values())
    body = {"status": "ok" if healthy else "degraded", "redis": "ok", **loops, "subscriptions": subscriptions}
    return web.json_response(body)


async def _subscription_health(runtime: Runtime, tenant: str) -> dict[str, str]:
    if runtime.settings.public_url is None:
        return {"notifications": "off (no MONITOR_PUBLIC_URL; timer rounds only)"}
    now = runtime.clock()
    states: dict[str, str] = dict.fromkeys(NOTIFIED, "missing")
    for record in await _registry(runtime, tenant):
        resource = record["resource"].strip("/")
        name = BY_RESOURCE.get(f"/{resource}", resource)
        expires = parse_graph_time(record["expiration"] or "1970-01-01T00:00:00Z")
        states[name] = "ok" if expires > now else "expired"
    return states


async def _registry(runtime: Runtime, tenant: str) -> list[SubscriptionRecord]:
    return list(decode_registry(await runtime.redis.hgetall(runtime.store(tenant).keys.subscriptions)).values())


async def metrics_endpoint(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    refused = metrics_refusal(runtime.settings, request)
    if refused is not None:  # the series name the tenants: not for anyone who asks
        return refused
    tenants = runtime.tenant_ids()
    gauges: dict[str, float] = {"monitor_hints_queue_depth": float(await queue_depth(runtime.redis))}
    now = runtime.clock()
    for tenant in tenants:
        for record in await _registry(runtime, tenant):
            if record["expiration"]:
                expires = parse_graph_time(record["expiration"])
                series = metric("monitor_subscription_expiry_seconds", tenant=tenant, resource=record["resource"])
                gauges[series] = (expires - now).total_seconds()
        store = runtime.store(tenant)
        for resource in DELTA:
            state = await store.delta_state(resource)
            if state is not None:
                series = metric("monitor_delta_token_age_seconds", tenant=tenant, resource=resource)
                gauges[series] = time.time() - state.saved_at
    gauges.update(await operational_gauges(runtime))
    text = await render(runtime.redis, tenants, gauges)
    return web.Response(
        text=text, content_type="text/plain", charset="utf-8", headers={"X-Content-Type-Options": "nosniff"}
    )
