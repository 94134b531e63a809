"""`monitor` command line: parse, build settings once, call one function. Nothing else."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from typing import Any

from monitor import __version__
from monitor.errors import ConfigError, MonitorError
from monitor.logs import configure
from monitor.settings import Settings, load_settings
from monitor.source_registry import SOURCES, SYNC_DEFAULT, sync_selection


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="monitor",
        description="Watch Microsoft 365 and tell JupiterOne exactly what changed. "
        "Configuration comes from MONITOR_* environment variables (see README).",
    )
    parser.add_argument("--version", action="version", version=f"monitor {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sync = commands.add_parser(
        "sync", help=f"deliver what is pending, run one directory round now ({', '.join(SYNC_DEFAULT)}) and exit"
    )
    sync.add_argument("--tenant", action="append", metavar="ID", help="only this tenant (repeatable)")
    for source in SOURCES:  # the optional sources (monitor.source_registry)
        if source.sync_option is not None:
            option = f"--{source.name.replace('_', '-')}"  # `intune_live` -> `--intune-live`
            sync.add_argument(option, dest=source.name, action="store_true", help=source.sync_option)
    sync.add_argument("--full", action="store_true", help="ignore saved delta links: full rounds (reconciliation)")
    sync.set_defaults(handler=_sync)

    status = commands.add_parser("status", help="per tenant: last rounds, delta token age, change log, permissions")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(handler=_status)

    reconcile = commands.add_parser(
        "reconcile",
        help="read JupiterOne back, compare with the mirror, re-publish what differs (the periodic reconciliation)",
    )
    reconcile.add_argument("--tenant", action="append", metavar="ID", help="only this tenant (repeatable)")
    reconcile.add_argument(
        "--check", action="store_true", help="only report the drift (exit 1 if any); change nothing at JupiterOne"
    )
    reconcile.add_argument("--json", action="store_true", help="machine-readable output")
    reconcile.set_defaults(handler=_reconcile)

    serve = commands.add_parser("serve", help="web, worker and scheduler in one process")
    serve.set_defaults(handler=_serve)
    web = commands.add_parser("web", help="the webhook Graph calls, health and metrics (MONITOR_HOST:MONITOR_PORT)")
    web.set_defaults(handler=_web)
    worker = commands.add_parser("worker", help="run delta rounds, sweeps and upkeep as hints ask")
    worker.add_argument("--burst", action="store_true", help="drain the queue, then exit")
    worker.set_defaults(handler=_worker)
    scheduler = commands.add_parser("scheduler", help="enqueue the periodic jobs (one leader among replicas)")
    scheduler.set_defaults(handler=_scheduler)

    _tenant_commands(commands)
    cert = commands.add_parser("cert", help="app registration certificates")
    cert_commands = cert.add_subparsers(dest="cert_command", required=True, metavar="ACTION")
    create = cert_commands.add_parser("create", help="make a self-signed certificate and key; print its thumbprints")
    create.add_argument("--out", default=".", metavar="DIR", help="where to write NAME.pem and NAME.crt")
    create.add_argument("--name", default="monitor", help="file name stem (default: monitor)")
    create.add_argument("--common-name", default="monitor", help="the certificate's subject CN")
    create.add_argument("--days", type=int, default=730, help="validity in days (default: 730)")
    create.add_argument("--force", action="store_true", help="replace existing files")
    create.set_defaults(handler=_cert_create)

    demo = commands.add_parser("demo", help="everything against a built-in simulated tenant (no setup needed)")
    demo.add_argument(
        "--duration", type=float, default=0, help="stop after this many seconds (default: run until Ctrl-C)"
    )
    demo.add_argument("--interval", type=float, default=3.0, help="seconds between changes in the simulated tenant")
    demo.add_argument("--users", type=int, default=40, help="size of the simulated tenant")
    demo.add_argument("--jsonl", metavar="PATH", help="also write the change records to this JSONL file")
    demo.set_defaults(handler=_demo)
    return parser


def _tenant_commands(commands: Any) -> None:
    tenants = commands.add_parser("tenants", help="list, add, show or remove watched tenants")
    actions = tenants.add_subparsers(dest="tenants_command", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="every tenant watched (configured and registered)")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    listing.set_defaults(handler=_tenants_list)
    show = actions.add_parser("show", help="a tenant's configuration and permissions")
    show.add_argument("tenant", metavar="ID")
    show.add_argument("--check", action="store_true", help="probe the permissions now (needs Graph credentials)")
    show.add_argument("--json", action="store_true", help="machine-readable output")
    show.set_defaults(handler=_tenants_show)
    add = actions.add_parser("add", help="register a tenant that has granted admin consent; start its sync")
    add.add_argument("tenant", metavar="ID")
    add.add_argument("--account-name", help="the account name (default: the organization's name)")
    add.add_argument("--description")
    add.add_argument("--polling-interval", help="Intune and sign-in sweep interval: DISABLED or e.g. 1h")
    add.add_argument("--tag-account-name", action="store_true", help="tag every entity with tag.AccountName")
    add.add_argument("--integration-instance-id", help="JupiterOne integration instance id for the account key")
    add.add_argument("--alerts", metavar="FILE", help="alert rules: a TOML file of [[alert]] tables")
    add.set_defaults(handler=_tenants_add)
    remove = actions.add_parser("remove", help="stop watching a registered tenant; delete its subscriptions and data")
    remove.add_argument("tenant", metavar="ID")
    remove.set_defaults(handler=_tenants_remove)


def _settings() -> Settings:
    settings = load_settings()
    configure(settings.log_level, settings.log_format)
    return settings


def _sync(args: argparse.Namespace) -> int:
    from monitor.commands import sync_command

    sources = sync_selection({source.name for source in SOURCES if getattr(args, source.name, False)})
    return asyncio.run(sync_command(_settings(), tenants=args.tenant, sources=sources, full=args.full))


def _status(args: argparse.Namespace) -> int:
    from monitor.commands import status_command

    return asyncio.run(status_command(_settings(), as_json=args.json))


def _reconcile(args: argparse.Namespace) -> int:
    from monitor.commands import reconcile_command

    return asyncio.run(reconcile_command(_settings(), tenants=args.tenant, check=args.check, as_json=args.json))


def _serve(args: argparse.Namespace) -> int:
    from monitor.commands import web_command

    return asyncio.run(web_command(_settings(), worker=True, scheduler=True))


def _web(args: argparse.Namespace) -> int:
    from monitor.commands import web_command

    return asyncio.run(web_command(_settings()))


def _worker(args: argparse.Namespace) -> int:
    from monitor.commands import worker_command

    return asyncio.run(worker_command(_settings(), burst=args.burst))


def _scheduler(args: argparse.Namespace) -> int:
    from monitor.commands import scheduler_command

    return asyncio.run(scheduler_command(_settings()))


def _tenants_list(args: argparse.Namespace) -> int:
    from monitor.commands import tenants_list_command

    return asyncio.run(tenants_list_command(_settings(), as_json=args.json))


def _tenants_show(args: argparse.Namespace) -> int:
    from monitor.commands import tenants_show_command

    return asyncio.run(tenants_show_command(_settings(), args.tenant, check=args.check, as_json=args.json))


def _tenants_add(args: argparse.Namespace) -> int:
    from monitor.commands import tenants_add_command
    from monitor.tenants import tenant_from_options

    settings = _settings()
    tenant = tenant_from_options(
        args.tenant,
        account_name=args.account_name,
        description=args.description,
        polling_interval=args.polling_interval,
        tag_account_name=args.tag_account_name,
        integration_instance_id=args.integration_instance_id,
        alerts_file=args.alerts,
    )
    return asyncio.run(tenants_add_command(settings, tenant))


def _tenants_remove(args: argparse.Namespace) -> int:
    from monitor.commands import tenants_remove_command

    return asyncio.run(tenants_remove_command(_settings(), args.tenant))


def _cert_create(args: argparse.Namespace) -> int:
    from monitor.commands import cert_create_command

    return cert_create_command(args.out, name=args.name, common_name=args.common_name, days=args.days, force=args.force)


def _demo(args: argparse.Namespace) -> int:
    from monitor.demo import run_demo

    configure("WARNING", "text")
    return asyncio.run(run_demo(duration=args.duration, interval=args.interval, users=args.users, jsonl=args.jsonl))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.handler(args)
        return code
    except ConfigError as exc:
        print(f"monitor: configuration error: {exc}", file=sys.stderr)
        return 2
    except MonitorError as exc:
        print(f"monitor: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
