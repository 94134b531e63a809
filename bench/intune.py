"""Intune sweep benchmark: a first sweep, an unchanged sweep, a sweep after 1% of devices changed,
and the public integration's per-device call pattern over the same simulated estate.

`python -m bench.intune [--scale S]` prints the BENCHMARKS.md section (`python -m bench intune`
writes it). At scale 1: 100,000 managed devices (every kind), 60,000 users, 8 compliance policies,
10 device configurations, 12 managed apps and about 1,500 detected apps, about 10 per device.

The simulator (Intune's limits enforced: docs/graph.md 10.3) and Redis run in their own processes; each
sweep runs in a child process of its own (`python -m bench.intune --sweep-once`, which runs only
`run_source(context, "intune")`), so wall time and peak RSS are the sweep's alone (`os.wait4`).
Graph calls are counted by the simulator: every request under /v1.0 or /beta, each request
inside a `$batch` counted on its own as Graph counts it; HTTP requests count a batch once.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bench.common import (
    TENANT,
    ChildRun,
    Environment,
    RedisMemory,
    command_line,
    environment,
    machine,
    number,
    redis_memory,
    status,
)
from monitor.app import Runtime
from monitor.graph.auth import TokenProvider
from monitor.graph.client import GraphClient, GraphError
from monitor.graph.pacing import INTUNE_LIMITS, WINDOW_SECONDS, IntunePacer, intune_bucket
from monitor.model.intune import AGENT_TYPE, FINDING_TYPE, device_of_agent
from monitor.records import ChangeRecord
from monitor.settings import load_settings
from monitor.sources.intune_live import SOURCE as INTUNE_LIVE_SOURCE
from monitor.sources.intune_sweep import SOURCE as INTUNE_SOURCE
from monitor.sync import run_source
from monitor.tls import client_context

SECTION = "intune"
# The command shown in the section: `python -m bench ...` unless run as `python -m bench.intune`.
_COMMAND: list[str] = []
GRAPH_CALLS = r"^/(v1\.0|beta)/(?!\$batch)"
PUBLIC_CONCURRENCY = 16
# What each kind of churn changes on a device, as the change records show it (`record_aspects`); a
# retired device is left out of the per-device figures: only a sweep deletes (docs/graph.md 9.1).
ASPECT_OF_CHURN = {
    "renamed": "name",
    "check-in": "sync",
    "compliance flip": "compliance",
    "app installed": "apps",
    "app removed": "apps",
}
_NAME_PROPERTIES = frozenset({"name", "displayName", "deviceName", "hostname", "fqdn"})
_SYNC_PROPERTIES = frozenset({"lastSeenOn", "lastSyncDateTime"})


@dataclass
class Sweep:
    run: ChildRun
    status: dict[str, Any]
    calls: int  # Graph calls, batch-inner counted one by one
    http: int  # HTTP requests (a batch once)
    source: str = INTUNE_SOURCE
    simulator_cpu: float = 0.0  # CPU seconds the simulated Graph spent during the sweep
    redis_cpu: float = 0.0

    @property
    def entry(self) -> dict[str, Any]:
        entry: dict[str, Any] = self.status["sources"][self.source]
        return entry

    @property
    def records(self) -> int:
        return int(self.entry["changes"])

    @property
    def waits(self) -> str:
        paced, throttled = float(self.entry.get("paced") or 0), self.entry.get("throttled") or 0
        return f"{paced:.1f} s / {throttled} ({float(self.entry.get('throttle_wait') or 0):.0f} s)"

    @property
    def unchanged(self) -> int:
        return int(self.entry.get("unchanged") or 0)

    @property
    def seconds(self) -> float:
        return float(self.entry["duration"])


@dataclass
class PublicPattern:
    calls: int
    expands: int
    seconds: float
    by_bucket: Counter[str]

    def floor_seconds(self) -> float:
        """The least time Intune's per-app limits allow for these calls (docs/graph.md 10.3)."""
        return max((n * 20 / INTUNE_LIMITS[b] for b, n in self.by_bucket.items() if b in INTUNE_LIMITS), default=0.0)


def run(scale: float) -> str:
    devices, users = int(100_000 * scale), max(100, int(60_000 * scale))
    titles = max(40, int(1_500 * scale))
    simulator = [
        *("--users", str(users), "--groups", "0", "--memberships", "0"),
        *("--intune-devices", str(devices), "--intune-detected-titles", str(titles), "--intune-apps-per-device", "10"),
    ]
    with environment(simulator) as env:
        monitor_env = env.monitor_env()
        subprocess.run([sys.executable, "-m", "monitor", "sync"], env=monitor_env, check=True, capture_output=True)
        first = _sweep(env)
        redis_mb = asyncio.run(redis_memory(env))
        unchanged = _sweep(env)
        answer = asyncio.run(_control(env, "POST", "churn", {"fraction": 0.01, "seed": 7, "devices": True}))
        churned, churned_ids = answer["done"], answer["devices"]
        # Past Intune's delay before audit events list (the simulator's; not documented by Microsoft).
        asyncio.run(_control(env, "POST", None, {"seconds": 121}, path="/_sim/clock/advance"))
        seq = asyncio.run(_last_seq(env))
        incremental = _sweep(env, INTUNE_LIVE_SOURCE)
        coverage = device_coverage(churned_ids, asyncio.run(_records_after(env, seq)))
        changed = _sweep(env)
        public = asyncio.run(_public_pattern(env))
    report = _report(scale, devices, users, first, redis_mb, unchanged, churned, changed, public)
    return report + _incremental_report(incremental, changed, unchanged, coverage)


def _sweep(env: Environment, source: str = INTUNE_SOURCE) -> Sweep:
    """One sweep in its own process. It starts with Intune's 20-second windows clear (the simulator's
    clock moved past them), as a periodic sweep minutes after the last does: the pacer of a new process
    cannot know what the process before it sent in its last seconds, and back-to-back sweeps would
    otherwise be throttled for the tail of the sweep before."""
    asyncio.run(_control(env, "POST", None, {"seconds": WINDOW_SECONDS + 1}, path="/_sim/clock/advance"))
    asyncio.run(_control(env, "DELETE", None, None, path="/_sim/requests"))
    simulator_before, redis_before = env.service_cpu()
    child = _run_sweep_child(env.monitor_env(), source)
    simulator_after, redis_after = env.service_cpu()
    calls = asyncio.run(_count(env, GRAPH_CALLS))
    current = status(env.monitor_env())
    requests = int(current["sources"][source]["requests"])
    return Sweep(
        child, current, calls, requests, source, simulator_after - simulator_before, redis_after - redis_before
    )


@dataclass
class Coverage:
    """Of the devices changed by one kind of churn, how many one incremental pass showed."""

    changed: int = 0
    shown: int = 0  # at least one change record names the device
    own: int = 0  # a record shows the change itself (ASPECT_OF_CHURN)
    aspects: Counter[str] = field(default_factory=Counter)  # what the records of these devices showed


def record_aspects(record: ChangeRecord) -> tuple[set[str], set[str]]:
    """The managed device ids a change record is about and what it shows of them: "name", "sync",
    "compliance" (a policy status, finding or complianceState), "apps" (INSTALLED) or "other"."""
    obj = record["after"] or record["before"] or {}
    key = record["key"]
    ends = (key, str(obj.get("_fromEntityKey") or ""), str(obj.get("_toEntityKey") or ""))
    # Devices and agents by their keys, INSTALLED by `<device>|installed|...`, findings by `..._<device>`.
    devices = {device_of_agent(end) for end in ends} | {key.split("|", 1)[0], key.rsplit("_", 1)[-1]}
    kind, changed = record["type"], set(record["changed"])
    aspects = set()
    if kind.endswith(FINDING_TYPE) or kind.startswith(f"{AGENT_TYPE}_assigned_") or "complianceState" in changed:
        aspects.add("compliance")
    if "_installed_" in kind:
        aspects.add("apps")
    if record["kind"] == "entity" and record["before"] is not None:
        aspects |= {"name"} if changed & _NAME_PROPERTIES else set()
        aspects |= {"sync"} if changed & _SYNC_PROPERTIES else set()
    return devices, aspects or {"other"}


def device_coverage(churned: dict[str, list[str]], records: Iterable[ChangeRecord]) -> dict[str, Coverage]:
    """Per kind of churn (retired left out), how many of its devices the records show, and show changed
    as the churn changed them."""
    shown: dict[str, set[str]] = {}
    for record in records:
        devices, aspects = record_aspects(record)
        for device_id in devices:
            shown.setdefault(device_id, set()).update(aspects)
    coverage: dict[str, Coverage] = {}
    for kind, aspect in ASPECT_OF_CHURN.items():
        ids = churned.get(kind, [])
        entry = coverage[kind] = Coverage(changed=len(ids))
        for device_id in ids:
            seen = shown.get(device_id)
            if seen:
                entry.shown += 1
                entry.own += aspect in seen
                entry.aspects.update(seen)
    return coverage


async def _last_seq(env: Environment) -> int:
    runtime = await Runtime.open(load_settings(env.monitor_env()))
    try:
        return await runtime.store(TENANT).last_seq()
    finally:
        await runtime.close()


async def _records_after(env: Environment, seq: int) -> list[ChangeRecord]:
    runtime = await Runtime.open(load_settings(env.monitor_env()))
    try:
        store, records = runtime.store(TENANT), []
        while batch := await store.read_changes(seq, 10_000):
            records += batch
            seq = batch[-1]["seq"]
        return records
    finally:
        await runtime.close()


def _coverage_rows(coverage: dict[str, Coverage]) -> list[str]:
    def share(part: int, whole: int) -> str:
        return f"{number(part)} ({part / whole:.0%})" if whole else "0"

    def showed(entry: Coverage) -> str:
        return ", ".join(f"{aspect} {number(n)}" for aspect, n in sorted(entry.aspects.items()))

    rows = [
        _row(kind, number(c.changed), share(c.shown, c.changed), share(c.own, c.changed), showed(c))
        for kind, c in coverage.items()
    ]
    total = Coverage(
        changed=sum(c.changed for c in coverage.values()),
        shown=sum(c.shown for c in coverage.values()),
        own=sum(c.own for c in coverage.values()),
    )
    rows.append(
        _row(
            "**all but retired**",
            number(total.changed),
            f"**{share(total.shown, total.changed)}**",
            f"**{share(total.own, total.changed)}**",
            "",
        )
    )
    return rows


def _incremental_report(incremental: Sweep, changed: Sweep, unchanged: Sweep, coverage: dict[str, Coverage]) -> str:
    """How much of the 1% change one incremental pass shows, and what it costs next to a sweep."""
    seen, left = incremental.records, changed.records
    share = seen / max(1, seen + left)
    calls = incremental.calls / max(1, unchanged.calls)
    rows = [
        _row("Change records emitted by the incremental pass", number(seen)),
        _row("Change records the sweep after it still emitted (deletions only ever come from it)", number(left)),
        _row("Share of the change visible after one incremental pass", f"**{share:.0%}**"),
        _row("Re-read by the incremental pass", str(incremental.entry.get("reread", ""))),
        _row("Graph calls of the incremental pass", number(incremental.calls)),
        _row("... as a share of an unchanged sweep's Graph calls", f"**{calls:.2%}**"),
        _row("Time of the incremental pass (status `duration`)", f"{incremental.seconds:.1f} s"),
    ]
    newline = "\n"
    return f"""
The incremental pass (`run_source(context, "intune_live")`, monitor.sources.intune_live) run once after
the 1% change and before the sweep after it: devices whose `lastSyncDateTime` moved and objects named by
new Intune audit events, re-read and diffed with the sweep's code.

| Incremental pass after the 1% change | |
|---|---|
{newline.join(rows)}

Per device: of the devices the 1% change touched (the retired ones left out: only a sweep deletes),
how many at least one change record of the incremental pass names, and how many a record shows changed
the way the churn changed them (renamed: its name; check-in: its last sync; compliance flip: a policy
status, finding or the device's complianceState; app installed/removed: an INSTALLED relationship).

| Kind of change | devices | named by a record after one pass | the change itself shown | what their records showed |
|---|---|---|---|---|
{newline.join(_coverage_rows(coverage))}
"""


def _run_sweep_child(env: dict[str, str], source: str = INTUNE_SOURCE) -> ChildRun:
    """`python -m bench.intune --sweep-once` as a child: its wall time, peak RSS and CPU time alone."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.monotonic()
        command = [sys.executable, "-m", "bench.intune", "--sweep-once", source]
        process = subprocess.Popen(command, env=env, stdout=out, stderr=err)
        _, code, usage = os.wait4(process.pid, 0)  # this child's own resource use
        wall = time.monotonic() - started
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if os.waitstatus_to_exitcode(code) != 0:
        raise RuntimeError(f"the sweep failed: {stderr[-2000:]}")
    return ChildRun(wall, usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime, stdout, stderr)


async def sweep_once(source: str = INTUNE_SOURCE) -> dict[str, Any]:
    """One Intune sweep (or incremental pass) of the configured tenant (the child process of the benchmark)."""
    runtime = await Runtime.open(load_settings())
    try:
        context = runtime.context(runtime.settings.tenants[0])
        result = await run_source(context, source)
        return {"changes": dict(result.changes), "requests": result.requests, "seconds": result.duration}
    finally:
        await runtime.close()


async def _http(env: Environment) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=client_context(Path(env.ca_bundle))))


async def _control(
    env: Environment, method: str, action: str | None, body: dict[str, Any] | None, *, path: str | None = None
) -> dict[str, Any]:
    url = env.sim_url + (path or f"/_sim/tenants/{TENANT}/intune" + (f"/{action}" if action else ""))
    async with await _http(env) as http, http.request(method, url, json=body) as response:
        response.raise_for_status()
        answer: dict[str, Any] = await response.json() if response.status != 204 else {}
        return answer


async def _count(env: Environment, path_regex: str) -> int:
    async with (
        await _http(env) as http,
        http.get(f"{env.sim_url}/_sim/requests/count", params={"path_regex": path_regex}) as response,
    ):
        response.raise_for_status()
        return int((await response.json())["count"])


async def _public_pattern(env: Environment) -> PublicPattern:
    """The public integration's Intune steps over the same estate (docs/jupiterone.md 3), made with the
    same client: the account's enrichment calls, the device list, every policy's and configuration's
    status list, one install report per app, and one `GET managedDevices/{id}?$expand=detectedApps`
    per device. Run with Intune's limits lifted in the simulator and no pacing, PUBLIC_CONCURRENCY
    requests at a time, so it finishes; `PublicPattern.floor_seconds` is what the limits would cost.
    """
    await _control(env, "PATCH", None, {"limits": {}})
    settings = load_settings(env.monitor_env())
    client = GraphClient(settings, TokenProvider(settings), pacer=IntunePacer(limits={}))
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        await _public_account(client)
        device_ids = [
            d["id"] async for page in client.pages(TENANT, "/beta/deviceManagement/managedDevices") for d in page
        ]
        await _public_policies(client)
        await _public_apps(client)
        gate = asyncio.Semaphore(PUBLIC_CONCURRENCY)

        async def expand(device_id: str) -> None:
            async with gate:
                path = f"/beta/deviceManagement/managedDevices/{device_id}"
                await client.get(TENANT, path, params={"$expand": "detectedApps"})

        await asyncio.gather(*(expand(device_id) for device_id in device_ids))
        seconds = loop.time() - started
        by_bucket: Counter[str] = Counter()
        for path, count in client.stats.by_path.items():
            by_bucket[intune_bucket(path) or "other Graph"] += count
        return PublicPattern(client.stats.requests, len(device_ids), seconds, by_bucket)
    finally:
        await client.close()
        await _control(env, "PATCH", None, {"limits": dict(INTUNE_LIMITS)})


async def _public_account(client: GraphClient) -> None:
    await client.get(TENANT, "/v1.0/organization")
    await client.get(TENANT, "/v1.0/deviceManagement", params={"$select": "intuneAccountId"})
    try:  # undocumented beta; the simulator does not serve it, the call counts all the same
        await client.get(TENANT, "/beta/deviceManagement/subscriptionState")
    except GraphError:
        pass
    await client.get(TENANT, f"/v1.0/organization/{TENANT}", params={"$select": "mobileDeviceManagementAuthority"})


async def _public_policies(client: GraphClient) -> None:
    for kind, version in (("deviceCompliancePolicies", "beta"), ("deviceConfigurations", "v1.0")):
        policies = [p async for page in client.pages(TENANT, f"/v1.0/deviceManagement/{kind}") for p in page]
        for policy in policies:
            async for _ in client.pages(TENANT, f"/{version}/deviceManagement/{kind}/{policy['id']}/deviceStatuses"):
                pass


async def _public_apps(client: GraphClient) -> None:
    where = "(isAssigned eq true or microsoft.graph.managedApp/appAvailability eq null)"
    apps = [
        a
        async for page in client.pages(TENANT, "/beta/deviceAppManagement/mobileApps", params={"$filter": where})
        for a in page
    ]
    # The public integration's beta getDeviceInstallStatusReport is in no version of Graph's metadata any
    # more (the simulator refuses it, as Graph does): one call per app to the report that exists instead.
    report = "/v1.0/deviceManagement/reports/retrieveDeviceAppInstallationStatusReport"
    for app in apps:
        body = {"filter": f"(ApplicationId eq '{app['id']}')"}
        await client.request(TENANT, "POST", report, json=body)


def _row(label: str, *cells: str) -> str:
    return "| " + " | ".join((label, *cells)) + " |"


def _report(
    scale: float,
    devices: int,
    users: int,
    first: Sweep,
    redis_mb: RedisMemory,
    unchanged: Sweep,
    churned: dict[str, Any],
    changed: Sweep,
    public: PublicPattern,
) -> str:
    sweeps = (first, unchanged, changed)
    churn = ", ".join(f"{count} {kind}" for kind, count in sorted(churned.items()))
    sweep_rows = [
        _row("Wall time of the sweep process", *(f"{s.run.wall:.1f} s" for s in sweeps)),
        _row("Sweep time (status `duration`)", *(f"{s.seconds:.1f} s" for s in sweeps)),
        _row("Graph calls (each `$batch` request counted)", *(number(s.calls) for s in sweeps)),
        _row("HTTP requests (a `$batch` counted once)", *(number(s.http) for s in sweeps)),
        _row("Change records emitted", *(f"**{number(s.records)}**" for s in sweeps)),
        _row("Graph objects read as the last sweep did (not mapped again)", *(number(s.unchanged) for s in sweeps)),
        _row("Waited for Intune's limits: paced / 429s (their wait)", *(s.waits for s in sweeps)),
        _row("Peak memory of the sweep process (RSS)", *(f"{s.run.peak_rss_mb:.0f} MB" for s in sweeps)),
        _row("CPU time of the sweep process", *(f"{s.run.cpu:.1f} s" for s in sweeps)),
        # The simulated Graph and Redis share this machine's CPUs with the sweep; against Graph
        # their time is Microsoft's and the Redis host's, so the sweep's wall time here is bounded
        # below by all three over the CPU count.
        _row("CPU time of the simulated Graph during the sweep", *(f"{s.simulator_cpu:.1f} s" for s in sweeps)),
        _row("CPU time of Redis during the sweep", *(f"{s.redis_cpu:.1f} s" for s in sweeps)),
    ]
    floor = public.floor_seconds()
    public_rows = [
        _row("Graph calls", number(public.calls), f"{public.calls / max(1, changed.calls):,.0f}×"),
        _row("of which `GET managedDevices/{id}?$expand=detectedApps`, one per device", number(public.expands), ""),
        _row(
            "Least time Intune's per-app limits allow for them", f"{floor:,.0f} s", f"{floor / changed.seconds:,.1f}×"
        ),
        _row(f"Time here (limits lifted, {PUBLIC_CONCURRENCY} requests at a time)", f"{public.seconds:.1f} s", ""),
    ]
    newline = "\n"
    return f"""## Intune: sweeps over {number(devices)} managed devices, and the public integration's per-device pattern

Command: `{_COMMAND[0] if _COMMAND else command_line()}` — {machine()}.
Estate: {number(devices)} managed devices (every device kind) of {number(users)} users, with their host
agents, 8 compliance policies, 10 device configurations, 12 managed apps and about 10 detected apps per
device (scale {scale:g}). The simulator enforces Intune's per-app limits (docs/graph.md 10.3); monitor paces
under them. Each sweep runs alone in its own process (`run_source(context, "intune")`), and starts
with Intune's 20-second windows clear, as a periodic sweep does.

| Sweep | first (empty mirror) | unchanged | after 1% of devices changed |
|---|---|---|---|
{newline.join(sweep_rows)}

Redis memory after the first sweep (mirror and change log, users included): {redis_mb.line()}.
The 1% change ({number(sum(churned.values()))} devices): {churn}.

| The public integration's Intune steps over the same estate | | ratio to our sweep after the change |
|---|---|---|
{newline.join(public_rows)}
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.intune", description=__doc__)
    parser.add_argument("--scale", type=float, default=1.0, help="estate size as a fraction of 100,000 devices")
    parser.add_argument("--sweep-once", nargs="?", const=INTUNE_SOURCE, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.sweep_once:
        print(json.dumps(asyncio.run(sweep_once(args.sweep_once))))
        return 0
    _COMMAND.append(f"python -m bench.intune --scale {args.scale:g}")
    print(run(args.scale))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
