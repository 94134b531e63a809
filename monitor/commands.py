"""The commands behind the CLI: each builds a runtime from settings, does one thing, and reports."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Sequence

import orjson

from monitor.app import Runtime
from monitor.console import ProgressLine, sync_summary
from monitor.errors import ConfigError
from monitor.settings import Settings, TenantConfig
from monitor.sinks.jupiterone import reconcile
from monitor.status import render_tenant, tenant_status
from monitor.sync import sync_tenant

log = logging.getLogger(__name__)


def select_tenants(settings: Settings, wanted: Sequence[str] | None) -> list[TenantConfig]:
    configured = settings.require_tenants()
    if not wanted:
        return list(configured)
    by_id = {t.id: t for t in configured}
    unknown = [w for w in wanted if w.lower() not in by_id]
    if unknown:
        raise ConfigError(f"not a configured tenant: {', '.join(unknown)}")
    return [by_id[w.lower()] for w in wanted]


async def sync_command(settings: Settings, *, tenants: Sequence[str] | None, sources: Sequence[str], full: bool) -> int:
    """One round of each source for each tenant, a summary per tenant; exit 1 if any source failed."""
    selected = select_tenants(settings, tenants)
    runtime = await Runtime.open(settings)
    failed = False
    try:
        for tenant in selected:
            before = runtime.graph.stats.snapshot()
            progress = ProgressLine()
            results, failures = await sync_tenant(runtime, tenant, sources, progress=progress, full=full)
            progress.done()
            after = runtime.graph.stats.snapshot()
            stats = {name: after[name] - before.get(name, 0) for name in after}
            print(sync_summary(tenant.id, results, [str(f) for f in failures], stats), flush=True)
            failed = failed or bool(failures)
    finally:
        await runtime.close()
    return 1 if failed else 0


async def status_command(settings: Settings, *, as_json: bool) -> int:
    runtime = await Runtime.open(settings, graph=False)
    try:
        statuses = [await tenant_status(runtime, tenant) for tenant in settings.require_tenants()]
    finally:
        await runtime.close()
    if as_json:
        sys.stdout.write(orjson.dumps(statuses, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        print("\n\n".join(render_tenant(status) for status in statuses))
    return 0


async def reconcile_command(settings: Settings, *, tenants: Sequence[str] | None) -> int:
    """Mark every scope of each tenant dirty and publish it to JupiterOne; exit 1 if a scope failed."""
    selected = select_tenants(settings, tenants)
    runtime = await Runtime.open(settings, graph=False)
    failed = False
    try:
        publisher = runtime.require_publisher()
        for tenant in selected:
            result = await reconcile(publisher, tenant)
            print(result.summary(tenant.id), flush=True)
            failed = failed or bool(result.failures)
    finally:
        await runtime.close()
    return 1 if failed else 0


def web_command(settings: Settings, *, worker: bool = False, scheduler: bool = False) -> int:
    """`monitor web` (and `monitor serve` with the worker and scheduler): serve until SIGTERM."""
    from aiohttp import web

    from monitor.web import create_app, ssl_context

    app = create_app(settings, worker=worker, scheduler=scheduler)
    log.info("listening on %s:%d", settings.host, settings.port)
    web.run_app(
        app,
        host=settings.host,
        port=settings.port,
        ssl_context=ssl_context(settings),
        print=None,
        access_log=None,
        shutdown_timeout=30.0,
    )
    return 0


async def worker_command(settings: Settings, *, burst: bool) -> int:
    """`monitor worker`: run jobs from the hint queue until SIGTERM (or, with --burst, until done)."""
    from monitor.worker import Worker

    runtime = await Runtime.open(settings)
    stop = _stop_on_signals()
    try:
        stats = await Worker(runtime, burst=burst).run(stop)
    finally:
        await runtime.close()
    print(f"worker: {stats.summary()}", flush=True)
    return 0


async def scheduler_command(settings: Settings) -> int:
    """`monitor scheduler`: enqueue the periodic jobs (while leader) until SIGTERM."""
    from monitor.scheduler import Scheduler

    runtime = await Runtime.open(settings, graph=False)
    stop = _stop_on_signals()
    try:
        await Scheduler(runtime).run(stop)
    finally:
        await runtime.close()
    return 0


def _stop_on_signals() -> asyncio.Event:
    """An event set by SIGTERM or SIGINT: the process finishes what it holds and exits."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    return stop
