"""`python -m monitor.simulator`: a seeded simulator in its own process (benchmarks, demos).

Prints one JSON line when ready, `{"url", "ca_bundle", "tenant_id", "client_id"}` (also written
to --ready-file), then serves until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from pathlib import Path

from monitor.simulator.clock import SimClock
from monitor.simulator.graph_app import ALL_PERMISSIONS, Simulator
from monitor.simulator.intune_seed import add_arguments as add_intune_arguments
from monitor.simulator.intune_seed import seed_from_arguments as seed_intune_from_arguments
from monitor.simulator.seed import seed
from monitor.simulator.server import serve_simulator

DEFAULT_TENANT = "8b3b2c2e-6a4e-4f4c-9d8e-2a1f7f6c5b10"
DEFAULT_CLIENT = "5a7e9f31-2c4b-4e8d-a1f0-3b6c9d2e4f70"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m monitor.simulator", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--groups", type=int, default=100)
    parser.add_argument("--memberships", type=int, default=5000)
    parser.add_argument("--tenant-id", default=DEFAULT_TENANT)
    parser.add_argument("--tenant-name", default="Contoso")
    parser.add_argument("--client-id", default=DEFAULT_CLIENT)
    parser.add_argument("--client-secret", default="simulator-secret")
    parser.add_argument("--seed", type=int, default=1, help="random seed for the seeded directory")
    parser.add_argument("--ready-file", type=Path, help="also write the ready line to this file")
    parser.add_argument(
        "--extra-ca", type=Path, help="also trust this CA bundle (PEM) when delivering notifications to webhooks"
    )
    add_intune_arguments(parser)
    return parser.parse_args(argv)


async def run(args: argparse.Namespace) -> None:
    sim = Simulator(clock=SimClock())
    tenant = sim.add_tenant(args.tenant_id, args.tenant_name)
    seed(tenant, users=args.users, groups=args.groups, memberships=args.memberships, rng_seed=args.seed)
    sim.register_app(args.client_id, secret=args.client_secret)
    sim.grant(tenant.tenant_id, args.client_id, ALL_PERMISSIONS)
    seed_intune_from_arguments(sim, tenant.tenant_id, args)
    if args.extra_ca is not None:
        sim.subscriptions.trust(args.extra_ca.read_bytes())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with serve_simulator(sim, args.host, args.port) as running:
        ready = {
            "url": running.url,
            "ca_bundle": str(running.ca_bundle_path),
            "tenant_id": tenant.tenant_id,
            "client_id": args.client_id,
        }
        line = json.dumps(ready)
        if args.ready_file is not None:
            args.ready_file.write_text(line + "\n")
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    asyncio.run(run(parse_args(argv)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
