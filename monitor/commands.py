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
from monitor.probes import serve_probes
from monitor.settings import Settings, TenantConfig
from monitor.status import all_statuses, deployment_status, render_deployment, render_tenant
from monitor.sync import sync_tenant

log = logging.getLogger(__name__)


def select_tenants(runtime: Runtime, wanted: Sequence[str] | None) -> list[TenantConfig]:
    """The tenants asked for, among those configured and registered (all of them by default)."""
    watched = runtime.tenants()
    if not watched:
        raise ConfigError(
            "no tenant configured: set MONITOR_TENANT_ID or MONITOR_TENANTS_FILE, or register one "
            "(monitor tenants add, or the /onboard admin consent)"
        )
    if not wanted:
        return watched
    by_id = {t.id: t for t in watched}
    unknown = [w for w in wanted if w.lower() not in by_id]
    if unknown:
        raise ConfigError(f"not a configured or registered tenant: {', '.join(unknown)}")
    return [by_id[w.lower()] for w in wanted]


async def sync_command(settings: Settings, *, tenants: Sequence[str] | None, sources: Sequence[str], full: bool) -> int:
    """One round of each source for each tenant, a summary per tenant; exit 1 if any source failed."""
    runtime = await Runtime.open(settings)
    failed = False
    try:
        for tenant in select_tenants(runtime, tenants):
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
        select_tenants(runtime, None)  # none at all is a configuration error
        statuses = await all_statuses(runtime)
        deployment = await deployment_status(runtime)
    finally:
        await runtime.close()
    if as_json:  # what GET /status answers
        document = {"tenants": statuses, **deployment}
        sys.stdout.write(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        print("\n\n".join([render_deployment(deployment), *(render_tenant(status) for status in statuses)]))
    return 0


async def reconcile_command(
    settings: Settings, *, tenants: Sequence[str] | None, check: bool = False, as_json: bool = False
) -> int:
    """Read each tenant's data back from JupiterOne, compare it with the mirror and, unless `check`,
    re-publish what differs. Exit 1 if reading failed, if `check` found drift, or if a repair failed."""
    runtime = await Runtime.open(settings, graph=False)
    failed = False
    reports = []
    try:
        publisher = runtime.require_publisher()
        for tenant in select_tenants(runtime, tenants):
            report = await publisher.reconcile(tenant, check=check)
            reports.append(report.as_dict())
            if not as_json:
                print(report.summary(), flush=True)
            repair_failed = report.repair is not None and bool(report.repair.failures)
            failed = failed or report.error is not None or (check and report.drifted) or repair_failed
    finally:
        await runtime.close()
    if as_json:
        sys.stdout.write(orjson.dumps(reports, option=orjson.OPT_INDENT_2).decode() + "\n")
    return 1 if failed else 0


async def web_command(settings: Settings, *, worker: bool = False, scheduler: bool = False) -> int:
    """`monitor web` (and `monitor serve` with the worker and scheduler): serve until SIGTERM."""
    from monitor.http_server import serve
    from monitor.web import create_app

    await serve(create_app(settings, worker=worker, scheduler=scheduler), settings, _stop_on_signals())
    return 0


async def worker_command(settings: Settings, *, burst: bool) -> int:
    """`monitor worker`: run jobs from the hint queue until SIGTERM (or, with --burst, until done).

    Started while Redis does not answer, it waits for Redis (not ready meanwhile) and then works; a
    burst run is a one-off and fails at once instead."""
    from monitor.worker import Worker

    runtime = await Runtime.open(settings, check_redis=burst)
    stop = _stop_on_signals()
    try:
        worker = Worker(runtime, burst=burst)
        async with serve_probes(settings.host, settings.probe_port, runtime.redis, worker.health):
            if burst or await runtime.until_redis_answers(worker.health, stop):
                await worker.run(stop)
    finally:
        await runtime.close()
    print(f"worker: {worker.stats.summary()}", flush=True)
    return 0


async def scheduler_command(settings: Settings) -> int:
    """`monitor scheduler`: enqueue the periodic jobs (while leader) until SIGTERM; started while Redis
    does not answer, it waits for Redis first (not ready meanwhile)."""
    from monitor.scheduler import Scheduler

    runtime = await Runtime.open(settings, graph=False, check_redis=False)
    stop = _stop_on_signals()
    try:
        scheduler = Scheduler(runtime)
        async with serve_probes(settings.host, settings.probe_port, runtime.redis, scheduler.health):
            if await runtime.until_redis_answers(scheduler.health, stop):
                await scheduler.run(stop)
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


# -- tenants and certificates ---------------------------------------------------------------------


async def tenants_list_command(settings: Settings, *, as_json: bool) -> int:
    """Every tenant watched: where it comes from, its name, how many permissions it lacks."""
    from monitor.tenants import describe, render_list_line

    runtime = await Runtime.open(settings, graph=False)
    try:
        entries = [await describe(runtime, tenant) for tenant in runtime.tenants()]
    finally:
        await runtime.close()
    if as_json:
        sys.stdout.write(orjson.dumps(entries, option=orjson.OPT_INDENT_2).decode() + "\n")
    elif not entries:
        print("no tenants: set MONITOR_TENANT_ID or MONITOR_TENANTS_FILE, or add one (monitor tenants add ID)")
    else:
        print("\n".join(render_list_line(entry) for entry in entries))
    return 0


async def tenants_show_command(settings: Settings, tenant_id: str, *, check: bool, as_json: bool) -> int:
    """One tenant's configuration and permissions; with `check`, the permissions are probed anew."""
    from monitor.permission_check import record_report
    from monitor.store import iso_ms
    from monitor.tenants import describe, render_description, validate

    runtime = await Runtime.open(settings, graph=check)
    try:
        tenant = runtime.tenant(tenant_id)
        if tenant is None:
            raise ConfigError(f"not a configured or registered tenant: {tenant_id}")
        if check:
            report = await validate(runtime, tenant.id)
            await record_report(runtime.redis, tenant.id, report, iso_ms(runtime.clock()))
        entry = await describe(runtime, tenant)
    finally:
        await runtime.close()
    if as_json:
        sys.stdout.write(orjson.dumps(entry, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        print(render_description(entry))
    return 0


async def tenants_add_command(settings: Settings, tenant: TenantConfig) -> int:
    """Register a tenant that has consented already: validate, save, start its first sync."""
    from monitor.tenants import describe, onboard, render_description

    runtime = await Runtime.open(settings)
    try:
        done = await onboard(runtime, tenant)
        entry = await describe(runtime, done.tenant)
    finally:
        await runtime.close()
    print(render_description(entry))
    print(f"first sync enqueued ({', '.join(done.jobs)}): a running `monitor worker` picks it up")
    return 0


async def tenants_remove_command(settings: Settings, tenant_id: str) -> int:
    """Stop watching a registered tenant: its Graph subscriptions and every Redis key of it go."""
    from monitor.tenants import remove

    has_credentials = bool(settings.client_id) and (
        settings.client_secret is not None or settings.client_certificate is not None
    )
    runtime = await Runtime.open(settings, graph=has_credentials)
    try:
        removal = await remove(runtime, tenant_id)
    finally:
        await runtime.close()
    print(removal.summary())
    return 1 if removal.subscriptions_error else 0


def cert_create_command(directory: str, *, name: str, common_name: str, days: int, force: bool) -> int:
    """Write a self-signed certificate and key for the app registration; print the thumbprints."""
    from pathlib import Path

    from monitor.certs import create_certificate

    created = create_certificate(Path(directory), name=name, common_name=common_name, days=days, overwrite=force)
    print(created.instructions())
    return 0
