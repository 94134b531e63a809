"""`monitor demo`: the whole product against a built-in simulated tenant, with nothing to set up.

A simulated Microsoft 365 tenant (served over HTTPS by `monitor.simulator`, signed in to with
MSAL like the real one) changes every few seconds. monitor reads it with delta queries, maps every
object to JupiterOne's model, diffs it against its mirror and prints the change records as they
flow. State lives in the embedded engine (`memory://`), so it is gone when the demo stops.
"""

from __future__ import annotations

import asyncio
import secrets
import sys
import time
from typing import Any, TextIO

from monitor.app import Runtime
from monitor.console import sync_summary
from monitor.settings import load_settings
from monitor.simulator import Simulator, seed, serve_simulator
from monitor.simulator.activity import TenantActivity
from monitor.store import ChangeRecord
from monitor.sync import sync_tenant

DEMO_TENANT = "8f2e6b1a-3c4d-4e5f-9a0b-1c2d3e4f5a6b"
DEMO_CLIENT = "d3m0d3m0-0000-4000-8000-000000000001".replace("m", "a")


class Style:
    def __init__(self, stream: TextIO) -> None:
        self.color = stream.isatty()

    def __call__(self, text: str, code: str) -> str:
        return f"\033[{code}m{text}\033[0m" if self.color else text


class RecordPrinter:
    """Change records as one readable line each, with names looked up from what flowed before."""

    def __init__(self, stream: TextIO = sys.stdout) -> None:
        self.stream = stream
        self.style = Style(stream)
        self.names: dict[str, str] = {}

    def learn(self, records: list[ChangeRecord]) -> None:
        for record in records:
            obj = record["after"] or record["before"] or {}
            if record["kind"] == "entity" and obj.get("displayName"):
                self.names[record["key"]] = str(obj["displayName"])

    def show(self, records: list[ChangeRecord]) -> None:
        self.learn(records)
        for record in records:
            self.stream.write(self.line(record) + "\n")
        self.stream.flush()

    def line(self, record: ChangeRecord) -> str:
        if record["op"] == "delete":
            sign, color = "-", "31"
        elif record["before"] is None:
            sign, color = "+", "32"
        else:
            sign, color = "~", "33"
        head = self.style(f"  #{record['seq']:<5} {sign} {record['kind']:<12} {record['type']:<40}", color)
        return f"{head} {self._what(record)}"

    def _what(self, record: ChangeRecord) -> str:
        obj: dict[str, Any] = record["after"] or record["before"] or {}
        if record["kind"] == "relationship":
            ends = f"{self._name(obj.get('_fromEntityKey', ''))} -> {self._name(obj.get('_toEntityKey', ''))}"
            return ends
        name = self._name(record["key"])
        if record["op"] == "upsert" and record["before"] is not None:
            changes = ", ".join(
                f"{p}: {_short(record['before'].get(p))} -> {_short(obj.get(p))}" for p in record["changed"]
            )
            return f"{name}  ({changes})"
        return name

    def _name(self, key: str) -> str:
        return self.names.get(key, key[:8] + "…" if len(key) > 12 else key)


def _short(value: Any) -> str:
    text = "—" if value is None else str(value)
    return text if len(text) <= 40 else text[:37] + "..."


async def run_demo(*, duration: float, interval: float, users: int, jsonl: str | None, out: TextIO = sys.stdout) -> int:
    style = Style(out)
    secret = secrets.token_urlsafe(24)
    sim = Simulator()
    tenant = sim.add_tenant(DEMO_TENANT, "Contoso")
    sim.register_app(DEMO_CLIENT, secret=secret)
    sim.grant(DEMO_TENANT, DEMO_CLIENT)
    seed(tenant, users=users, groups=max(4, users // 6), memberships=users * 3, other_members=2, rng_seed=42)
    for user in list(tenant.users)[:: max(1, users // 8)]:
        tenant.set_sign_in(user)
    out.write(_banner(style, users))
    async with serve_simulator(sim) as running:
        settings = load_settings(
            {},
            redis_url="memory://demo",
            graph_url=running.url,
            authority_url=running.url,
            ca_bundle=str(running.ca_bundle_path),
            client_id=DEMO_CLIENT,
            client_secret=secret,
            tenant_id=DEMO_TENANT,
            sink=f"jsonl:{jsonl}" if jsonl else "",
        )
        runtime = await Runtime.open(settings)
        try:
            await _first_round(runtime, out, style)
            await _follow(runtime, TenantActivity(tenant), RecordPrinter(out), duration, interval, out, style)
        finally:
            await runtime.close()
    return 0


def _banner(style: Style, users: int) -> str:
    lines = [
        style("monitor demo", "1"),
        f"A simulated Microsoft 365 tenant (Contoso, {users} users), served over HTTPS by the built-in",
        "simulator. monitor signs in with MSAL, reads it with Graph delta queries, maps every object to the",
        "JupiterOne model, diffs it against its mirror and emits only what really changed, as change records.",
        style("State lives in memory (MONITOR_REDIS_URL=memory://, the embedded engine): nothing is kept", "1;33"),
        style("when the demo stops. Use a Redis server for anything real.", "1;33"),
    ]
    return "\n".join(lines) + "\n\n"


async def _first_round(runtime: Runtime, out: TextIO, style: Style) -> None:
    tenant = runtime.settings.tenants[0]
    out.write(style("First round: a full delta round reads the whole directory.\n", "1"))
    results, failures = await sync_tenant(runtime, tenant, ("account", "users", "groups", "signins"))
    stats = runtime.graph.stats.snapshot()
    out.write(sync_summary(tenant.id, results, [str(f) for f in failures], stats) + "\n\n")
    out.write(
        style("Now the tenant changes every few seconds. Each change is answered by one delta round that", "1")
        + "\n"
        + style("costs a request or two per resource, and only the real changes come out:", "1")
        + "\n\n"
    )
    out.flush()


async def _follow(
    runtime: Runtime,
    activity: TenantActivity,
    printer: RecordPrinter,
    duration: float,
    interval: float,
    out: TextIO,
    style: Style,
) -> None:
    tenant = runtime.settings.tenants[0]
    store = runtime.store(tenant.id)
    printer.learn(await store.read_changes(0, 1_000_000))
    deadline = time.monotonic() + duration if duration > 0 else float("inf")
    while time.monotonic() < deadline:
        step = activity.step()
        out.write(style(f"In the tenant: {step.description}", "36") + "\n")
        seq = await store.last_seq()
        requests = runtime.graph.stats.requests
        started = time.monotonic()
        await sync_tenant(runtime, tenant, ("users", "groups"))
        records = await store.read_changes(seq, 10_000)
        printer.show(records)
        elapsed = (time.monotonic() - started) * 1000
        out.write(
            style(
                f"  {len(records)} change record(s), {runtime.graph.stats.requests - requests} Graph requests, "
                f"{elapsed:.0f} ms\n\n",
                "2",
            )
        )
        out.flush()
        await asyncio.sleep(min(interval, max(0.0, deadline - time.monotonic())))
