"""Serve a Simulator over HTTPS in the current event loop.

The server certificate comes from the simulator's own CA, and the CA certificate is written to
a temporary file that clients use as their CA bundle, so TLS verification stays on everywhere.
"""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from monitor.simulator.graph_app import Simulator


@dataclass(frozen=True)
class RunningSimulator:
    url: str  # e.g. https://127.0.0.1:54321: the authority URL and the Graph URL at once
    ca_bundle_path: Path
    host: str
    port: int
    simulator: Simulator


@asynccontextmanager
async def serve_simulator(sim: Simulator, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[RunningSimulator]:
    """Start `sim.app()` over HTTPS on `host:port` (0: a free port); sets `sim.base_url`."""
    hosts = ["localhost", "127.0.0.1", "::1"] + ([host] if host not in ("localhost", "127.0.0.1", "::1") else [])
    context = sim.ca.issue_server_context(hosts)
    runner = web.AppRunner(sim.app(), access_log=None, handle_signals=False)
    await runner.setup()
    with tempfile.TemporaryDirectory(prefix="monitor-sim-") as folder:
        bundle = sim.ca.write_bundle(Path(folder, "ca.pem"))
        try:
            site = web.TCPSite(runner, host, port, ssl_context=context)
            await site.start()
            bound_port = _bound_port(runner)
            url_host = f"[{host}]" if ":" in host else host
            sim.base_url = f"https://{url_host}:{bound_port}"
            yield RunningSimulator(sim.base_url, bundle, host, bound_port, sim)
        finally:
            await runner.cleanup()


def _bound_port(runner: web.AppRunner) -> int:
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            return int(address[1])
    raise RuntimeError("the simulator is not listening on a TCP port")
