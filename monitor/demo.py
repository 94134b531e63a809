"""`monitor demo`: the whole product against a built-in simulated tenant, with nothing to set up.

A simulated Microsoft 365 tenant (served over HTTPS by `monitor.simulator`, signed in to with MSAL
like the real one) changes every few seconds. monitor subscribes to its change notifications; the
simulated Graph calls monitor's webhook, a worker answers each burst with a delta round, and the
change records, alerts and the JupiterOne graph (a simulated JupiterOne, fed scope by scope)
follow within a fraction of a second. The tenant has a small Intune estate too: after its first
sweep, a device is renamed and one incremental Intune pass (monitor.sources.intune_live) shows it,
as it would within `MONITOR_INTUNE_INCREMENTAL_INTERVAL` of the change in a deployment. State lives
in the embedded engine (`memory://`), so it is gone when the demo stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import orjson
from aiohttp import web

from monitor.app import Runtime
from monitor.console import sync_summary
from monitor.hints import Hint, enqueue
from monitor.model.types import JsonObject
from monitor.records import ChangeRecord
from monitor.settings import Settings, load_settings
from monitor.simulator import IntuneTenant, SimTenant, Simulator, seed, seed_intune, serve_simulator
from monitor.simulator.activity import TenantActivity
from monitor.simulator.jupiterone import SimJupiterOne, serve_jupiterone
from monitor.simulator.redis_process import free_port
from monitor.source_registry import sync_selection
from monitor.store import TenantStore
from monitor.sync import run_source, sync_tenant
from monitor.web import create_app
from monitor.worker import Worker

DEMO_TENANT = "8f2e6b1a-3c4d-4e5f-9a0b-1c2d3e4f5a6b"
DEMO_CLIENT = "da0da0da-0000-4000-8000-000000000001"
RULES = """
[[alert]]
name = "privileged groups"
role_assignable = true
effective = true
send_to = ["log"]
"""
# Graph lists a directory audit entry about 2 minutes after the change (docs/graph.md 13.4); the demo
# shortens that so who made each change shows within the run.
DEMO_AUDIT_DELAY = 3.0
# The first round is `monitor sync --signins --intune` (monitor.source_registry): the demo tenant is
# seeded with a directory, sign-in activity and a small Intune estate.
DEMO_SYNC_OPTIONS = frozenset({"signins", "intune"})
DEMO_INTUNE_DEVICES = 12
# Graph documents no delay before an Intune audit event lists (the simulator's default is 2 minutes,
# docs/graph.md 9.1); the demo lists them at once so the rename's event shows in the same pass.
DEMO_INTUNE_AUDIT_DELAY = 0.0


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
        obj: JsonObject = record["after"] or record["before"] or {}
        if record["kind"] == "relationship":
            return f"{self._name(obj.get('_fromEntityKey', ''))} -> {self._name(obj.get('_toEntityKey', ''))}"
        name = self._name(record["key"])
        if record["op"] == "upsert" and record["before"] is not None:
            changes = ", ".join(
                f"{p}: {_short(record['before'].get(p))} -> {_short(obj.get(p))}" for p in record["changed"]
            )
            return f"{name}  ({changes})"
        return name

    def _name(self, key: str) -> str:
        return self.names.get(key, key[:8] + "…" if len(key) > 12 else key)


def _short(value: object) -> str:
    text = "—" if value is None else str(value)
    return text if len(text) <= 40 else text[:37] + "..."


class AlertPrinter(logging.Handler):
    """Prints the alerts the `log` destination raises, in the demo's own words."""

    def __init__(self, stream: TextIO, style: Style) -> None:
        super().__init__(logging.WARNING)
        self.stream, self.style = stream, style

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        try:
            alert = orjson.loads(message[message.index("{") :])
        except (ValueError, orjson.JSONDecodeError):
            return
        self.stream.write(self.style(alert_line(alert), "1;41;97") + "\n")
        self.stream.flush()


def alert_line(alert: JsonObject) -> str:
    """An alert, or its update with who made the change, in one line."""
    member = alert.get("member") or {}
    who = member.get("name") or f"{alert.get('count', '')} members"
    group = (alert.get("group") or {}).get("name")
    chain = " > ".join(str(g.get("name") or g.get("id")) for g in alert.get("through") or [])
    what = f"[{alert.get('rule')}] {alert.get('change')}: {who} -> group '{group}'"
    if alert.get("update") != "actor":
        return f"  ALERT {what}" + (f" through {chain}" if chain else "")
    return f"  ALERT UPDATE {what}: {_made_by(alert)}"


def _made_by(alert: JsonObject) -> str:
    actor = alert.get("actor") or {}
    entry = str((actor.get("auditEntry") or {}).get("id", ""))
    return {
        "found": f"made by {actor.get('name')} ({actor.get('type')}, audit entry {entry[:24]}…)",
        "unknown": "who made it is unknown (no audit entry in time)",
        "unavailable": "who made it cannot be known (the audit log is unavailable)",
    }.get(str(alert.get("actorStatus")), str(alert.get("actorStatus")))


@dataclass
class DemoWorld:
    sim: Simulator
    tenant: SimTenant
    intune: IntuneTenant
    jupiterone: SimJupiterOne
    runtime: Runtime
    settings: Settings


async def run_demo(*, duration: float, interval: float, users: int, jsonl: str | None, out: TextIO = sys.stdout) -> int:
    style = Style(out)
    out.write(_banner(style, users))
    alerts, printer = logging.getLogger("monitor.alerts"), AlertPrinter(out, style)
    alerts.addHandler(printer)
    alerts.propagate = False  # the printer says it better than the raw log line
    try:
        async with _world(users, jsonl) as world:
            await _first_round(world, out, style)
            await _intune_between_sweeps(world, out, style)
            await _subscribe(world, out, style)
            await _follow(world, duration, interval, out, style)
    finally:
        alerts.removeHandler(printer)
        alerts.propagate = True
    return 0


@contextlib.asynccontextmanager
async def _world(users: int, jsonl: str | None) -> AsyncIterator[DemoWorld]:
    """The simulated tenant and JupiterOne, monitor's runtime, its webhook and a worker."""
    secret = secrets.token_urlsafe(24)
    sim = Simulator()
    tenant = sim.add_tenant(DEMO_TENANT, "Contoso")
    sim.register_app(DEMO_CLIENT, secret=secret)
    sim.grant(DEMO_TENANT, DEMO_CLIENT)
    # Graph gives no latency figure for directory notifications (docs/graph.md 4.4); the simulator
    # batches for 50 ms and retries quickly.
    sim.subscriptions.configure(batch_window=0.05, retry_initial_delay=0.2, retry_max_delay=2.0)
    seed(tenant, users=users, groups=max(4, users // 6), memberships=users * 3, other_members=2, rng_seed=42)
    _nest_in_a_privileged_group(tenant)
    tenant.audit.options.delay = DEMO_AUDIT_DELAY
    for user in list(tenant.users)[:: max(1, users // 8)]:
        tenant.set_sign_in(user)
    intune = seed_intune(sim, DEMO_TENANT, devices=DEMO_INTUNE_DEVICES, detected_titles=6, apps_per_profile=2)
    intune.audit_delay = DEMO_INTUNE_AUDIT_DELAY
    jupiterone = SimJupiterOne()
    port = free_port()
    with tempfile_dir() as folder:
        rules = folder / "alerts.toml"
        rules.write_text(RULES)
        async with serve_simulator(sim) as graph, serve_jupiterone(jupiterone) as j1:
            settings = _settings(graph.url, str(graph.ca_bundle_path), secret, port, rules, j1.url, jupiterone, jsonl)
            runtime = await Runtime.open(settings)
            site_runner = web.AppRunner(create_app(settings, runtime=runtime), access_log=None)
            await site_runner.setup()
            await web.TCPSite(
                site_runner, "127.0.0.1", port, ssl_context=sim.ca.issue_server_context(["127.0.0.1"])
            ).start()
            stop = asyncio.Event()
            worker = asyncio.create_task(Worker(runtime, claim_idle=5.0).run(stop))
            try:
                yield DemoWorld(sim, tenant, intune, jupiterone, runtime, settings)
            finally:
                stop.set()
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait_for(worker, timeout=10)
                await site_runner.cleanup()
                await runtime.close()


def _nest_in_a_privileged_group(tenant: SimTenant) -> None:
    """A small team nested in a privileged group: who joins the team gains what the privileged group
    grants, which the demo's effective-membership rule catches."""
    privileged = sorted(g for g, props in tenant.groups.items() if props.get("isAssignableToRole"))
    if not privileged:
        return
    team = tenant.add_group(displayName="Helpdesk Tier 2", securityEnabled=True, mailEnabled=False)
    for user in sorted(tenant.users)[-2:]:
        tenant.add_member(team, user)
    tenant.add_member(privileged[0], team)


@contextlib.contextmanager
def tempfile_dir() -> Any:
    import tempfile

    with tempfile.TemporaryDirectory(prefix="monitor-demo-") as folder:
        yield Path(folder)


def _settings(
    graph_url: str,
    ca_bundle: str,
    secret: str,
    port: int,
    rules: Path,
    j1_url: str,
    jupiterone: SimJupiterOne,
    jsonl: str | None,
) -> Settings:
    return load_settings(
        {},
        redis_url="memory://demo",
        graph_url=graph_url,
        authority_url=graph_url,
        ca_bundle=ca_bundle,
        client_id=DEMO_CLIENT,
        client_secret=secret,
        tenant_id=DEMO_TENANT,
        public_url=f"https://127.0.0.1:{port}",
        alerts_file=str(rules),
        sink="jupiterone" + (f",jsonl:{jsonl}" if jsonl else ""),
        j1_api_url=j1_url,
        j1_account=jupiterone.account,
        j1_api_key=jupiterone.api_key,
        j1_debounce=0.2,
        j1_poll_interval=0.05,
    )


def _banner(style: Style, users: int) -> str:
    lines = [
        style("monitor demo", "1"),
        f"A simulated Microsoft 365 tenant (Contoso, {users} users), served over HTTPS by the built-in simulator,",
        "and a simulated JupiterOne. monitor signs in with MSAL, subscribes to Graph change notifications,",
        "answers each one with a delta query, maps every object to the JupiterOne model, diffs it against its",
        "mirror, emits only what really changed, raises alerts on privileged groups, and keeps JupiterOne in step.",
        "Alerts also catch who gains a privileged group through a nested group, and are updated with who made",
        f"the change once the directory audit log has it (Graph: minutes; here {DEMO_AUDIT_DELAY:g} seconds).",
        style("State lives in memory (MONITOR_REDIS_URL=memory://, the embedded engine): nothing is kept", "1;33"),
        style("when the demo stops. Use a Redis server for anything real.", "1;33"),
    ]
    return "\n".join(lines) + "\n\n"


async def _first_round(world: DemoWorld, out: TextIO, style: Style) -> None:
    tenant = world.settings.tenants[0]
    out.write(style("First round: a full delta round reads the whole directory, and a first Intune sweep.\n", "1"))
    results, failures = await sync_tenant(world.runtime, tenant, sync_selection(DEMO_SYNC_OPTIONS))
    stats = world.runtime.graph.stats.snapshot()
    out.write(sync_summary(tenant.id, results, [str(f) for f in failures], stats) + "\n")
    out.write(_jupiterone_line(world, style) + "\n\n")
    out.flush()


async def _intune_between_sweeps(world: DemoWorld, out: TextIO, style: Style) -> None:
    """An admin renames a managed device; one incremental Intune pass shows it, long before the next
    sweep (monitor.sources.intune_live)."""
    store = world.runtime.store(DEMO_TENANT)
    printer = RecordPrinter(out)
    printer.learn(await store.read_changes(0, 1_000_000))
    device = min(world.intune.devices.values(), key=lambda d: d.id)
    new_name = f"{device.name[:40]}-SALES"
    out.write(style("Intune has no change notifications: between the hourly sweeps, an incremental pass", "1") + "\n")
    out.write(style("re-reads the devices that synced and what new Intune audit events name.", "1") + "\n")
    out.write(style(f"In the tenant: an admin renames the managed device {device.name} to {new_name}", "36") + "\n")
    world.intune.rename_device(device.id, new_name)
    seq = await store.last_seq()
    result = await run_source(world.runtime.context(world.settings.tenants[0]), "intune_live")
    records = await store.read_changes(seq, 10_000)
    printer.show(records)
    reread = (await store.status("intune_live")).get("reread", "")
    summary = (
        f"  {len(records)} change record(s) from one incremental Intune pass ({reread}; {result.requests} requests)"
    )
    out.write(style(summary, "2") + "\n\n")
    out.flush()


async def _subscribe(world: DemoWorld, out: TextIO, style: Style) -> None:
    await enqueue(world.runtime.redis, [Hint(DEMO_TENANT, "subscriptions", "demo")])
    for _ in range(200):
        subscriptions = [s for s in world.sim.subscriptions.all() if s.tenant_id == DEMO_TENANT]
        if len(subscriptions) == 2:
            break
        await asyncio.sleep(0.05)
    resources = ", ".join(sorted(s.resource for s in world.sim.subscriptions.all()))
    out.write(style(f"Subscribed to Graph change notifications for {resources} (validation handshake passed).", "1"))
    out.write(
        "\n" + style("Now the tenant changes every few seconds. Graph notifies monitor's webhook, a worker runs", "1")
    )
    out.write("\n" + style("one delta round per burst, and only the real changes come out:", "1") + "\n\n")
    out.flush()


async def _follow(world: DemoWorld, duration: float, interval: float, out: TextIO, style: Style) -> None:
    store = world.runtime.store(DEMO_TENANT)
    printer = RecordPrinter(out)
    printer.learn(await store.read_changes(0, 1_000_000))
    activity = TenantActivity(world.tenant)
    deadline = time.monotonic() + duration if duration > 0 else float("inf")
    steps = 0
    while time.monotonic() < deadline:
        step = activity.step()
        seq, started = await store.last_seq(), time.monotonic()
        # The scheduler's job in a deployment: look for the actors of alerts that wait for them.
        await enqueue(world.runtime.redis, [Hint(DEMO_TENANT, "actors", "demo")])
        out.write(style(f"In the tenant: {step.description}", "36") + "\n")
        records = await _records_after(store, seq)
        elapsed = (time.monotonic() - started) * 1000
        printer.show(records)
        summary = f"  {len(records)} change record(s), {elapsed:.0f} ms after the change"
        out.write(style(summary + " (notification, webhook, delta round)", "2") + "\n")
        steps += 1
        if steps % 3 == 0:
            await asyncio.sleep(0.5)  # let the publisher's debounce pass
            out.write(_jupiterone_line(world, style) + "\n")
        out.write("\n")
        out.flush()
        await asyncio.sleep(min(interval, max(0.0, deadline - time.monotonic())))


async def _records_after(store: TenantStore, seq: int) -> list[ChangeRecord]:
    """The records of the round answering the change (waiting up to 10 seconds for it)."""
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline:
        records = await store.read_changes(seq, 10_000)
        if records:
            await asyncio.sleep(0.1)  # the rest of the same round
            return await store.read_changes(seq, 10_000)
        await asyncio.sleep(0.02)
    return []


def _jupiterone_line(world: DemoWorld, style: Style) -> str:
    entities, relationships = len(world.jupiterone.entities()), len(world.jupiterone.relationships())
    return style(f"  JupiterOne graph: {entities:,} entities, {relationships:,} relationships", "35")
