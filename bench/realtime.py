"""Real-time benchmark: the webhook under load, and change-to-record latency end to end.

1. `monitor web` (its own process, real Redis) receiving 2,000 notification POSTs per second,
   open loop, beside a bare aiohttp handler that only answers 202, on the same machine in the same
   run: acceptance rate and p50/p99 latency, and the ratio between the two.
2. `monitor serve` (webhook, worker and scheduler in one process, TLS, default coalescing window)
   subscribed to the simulated tenant (its own process): from a member added to a privileged
   group in the tenant to its change record and to its alert, p50 and p99.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import redis.asyncio as aioredis

from bench.common import TENANT, command_line, environment, machine, process, wait_http
from monitor.keys import TenantKeys
from monitor.simulator.ca import CertificateAuthority
from monitor.simulator.redis_process import free_port, start_redis_server
from monitor.store import TenantStore
from monitor.tls import client_context

SECTION = "realtime"
RATE = 2000
SECONDS = 10.0
SLICES = 10  # turns each server takes (`_compare`)
WARM_UP = 1.0  # seconds of the same load each server takes first, not measured (`_compare`)
CLIENT_STATE = "bench-client-state-" + "x" * 40


@dataclass
class Load:
    sent: int
    accepted: int
    seconds: float
    latencies: list[float]
    cpu_seconds: float  # the server's CPU time (user + system) during the load

    @property
    def cpu_per_request_ms(self) -> float:
        return self.cpu_seconds / self.sent * 1000

    @property
    def rate(self) -> float:
        return self.accepted / self.seconds

    def percentile(self, p: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000 if ordered else float("nan")


def run(scale: float) -> str:
    del scale  # the load is fixed by the aim (2,000 notifications per second)
    monitor_load, bare_load = asyncio.run(_receiver())
    record_latencies, alert_latencies, notified_latencies = _end_to_end()
    return _report(monitor_load, bare_load, record_latencies, alert_latencies, notified_latencies)


# -- 1. the receiver under load -----------------------------------------------------------------


async def _receiver(wrap: list[str] | None = None) -> tuple[Load, Load]:
    """`monitor web` then the bare handler under the same load; `wrap` prefixes the `monitor web`
    command (a profiler: `bench/webhook_profile.py`)."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="monitor-bench-") as folder:
        redis = start_redis_server(Path(folder))
        subscription = str(uuid.uuid4())
        await _register_subscription(redis.url, subscription)
        monitor_port, bare_port = free_port(), free_port()
        env = {
            **_clean_env(),
            "MONITOR_REDIS_URL": redis.url,
            "MONITOR_TENANT_ID": TENANT,
            "MONITOR_LOG_LEVEL": "WARNING",
        }
        env |= {"MONITOR_HOST": "127.0.0.1", "MONITOR_PORT": str(monitor_port)}
        try:
            with (
                process([*(wrap or []), sys.executable, "-m", "monitor", "web"], env) as ours,
                process([sys.executable, "-m", "bench.bare", str(bare_port)], env) as bare,
            ):
                await wait_http(f"http://127.0.0.1:{monitor_port}/healthz")
                await wait_http(f"http://127.0.0.1:{bare_port}/healthz")
                body = _notification(subscription)
                monitor_load, bare_load = await _compare(
                    [
                        (f"http://127.0.0.1:{monitor_port}/graph/notifications", ours.pid),
                        (f"http://127.0.0.1:{bare_port}/graph/notifications", bare.pid),
                    ],
                    body,
                )
                queued = await _queued(redis.url)
                counted = await _counted(redis.url)
        finally:
            redis.stop()
    # Concurrent requests asking for the same job share one stored hint; every one is counted.
    if queued < 1 or counted < monitor_load.accepted:
        raise RuntimeError(f"only {counted} of {monitor_load.accepted} accepted notifications were stored")
    return monitor_load, bare_load


async def _register_subscription(url: str, subscription: str) -> None:
    """What the subscription manager writes when it creates a subscription (the webhook reads it)."""
    client = aioredis.Redis.from_url(url)
    record = {
        "id": subscription,
        "resource": "/users",
        "clientState": CLIENT_STATE,
        "expiration": "2099-01-01T00:00:00Z",
    }
    await client.hset(TenantKeys(TENANT).subscriptions, subscription, orjson.dumps(record))
    await client.aclose()


async def _queued(url: str) -> int:
    from monitor.keys import HINTS

    client = aioredis.Redis.from_url(url)
    length: int = await client.xlen(HINTS)
    await client.aclose()
    return length


async def _counted(url: str) -> int:
    client = aioredis.Redis.from_url(url)
    count = await _accepted(client)
    await client.aclose()
    return count


def _notification(subscription: str) -> bytes:
    item = {
        "subscriptionId": subscription,
        "subscriptionExpirationDateTime": "2099-01-01T00:00:00Z",
        "tenantId": TENANT,
        "clientState": CLIENT_STATE,
        "changeType": "updated",
        "resource": "Users/7c5c0b5a-0000-4000-8000-000000000001",
        "resourceData": {"@odata.type": "#Microsoft.Graph.User", "id": "7c5c0b5a-0000-4000-8000-000000000001"},
    }
    return orjson.dumps({"value": [item]})


async def _compare(targets: list[tuple[str, int]], body: bytes) -> list[Load]:
    """Send RATE POSTs per second for SECONDS to each (url, server process) of `targets`, on
    schedule whatever the answers (open loop), in SLICES turns of SECONDS / SLICES each: the servers
    take turns, so a burst of work elsewhere on the machine falls on both alike rather than on
    whichever happened to run then. Each server's CPU time (with its children: a profiler's
    wrapper) is measured over its turns.

    Fair to both, and measuring the servers rather than the load generator:
    - each server first takes WARM_UP seconds of the same load, not measured: the client's
      connections are open and the servers past their first requests when measuring starts;
    - the generator's own cyclic garbage collector is off during the turns (and what is alive
      before each turn frozen out of its walks): a full collection of this process stalled the
      generator for 20 to 80 ms, and the requests due meanwhile then went out at once, a burst
      that the servers did not ask for and that landed on whichever took its turn then."""
    loads = [Load(0, 0, 0.0, [], 0.0) for _ in targets]
    async with contextlib.AsyncExitStack() as stack:
        sessions = [
            await stack.enter_async_context(
                aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(limit=256), headers={"Content-Type": "application/json"}
                )
            )
            for _ in targets
        ]
        for (url, _), http in zip(targets, sessions, strict=True):
            await _open_loop(http, url, body, WARM_UP, Load(0, 0, 0.0, [], 0.0))
        try:
            for _ in range(SLICES):
                for (url, server), http, load in zip(targets, sessions, loads, strict=True):
                    gc.collect()  # between turns: nothing is being measured
                    gc.freeze()
                    gc.disable()
                    cpu_before = _cpu_seconds(server)
                    await _open_loop(http, url, body, SECONDS / SLICES, load)
                    load.cpu_seconds += _cpu_seconds(server) - cpu_before
                    gc.enable()
        finally:
            gc.enable()
            gc.unfreeze()
    return loads


async def _open_loop(http: aiohttp.ClientSession, url: str, body: bytes, seconds: float, load: Load) -> None:
    """RATE POSTs per second for `seconds`, counted into `load`."""

    async def one() -> None:
        started = time.perf_counter()
        async with http.post(url, data=body) as response:
            await response.read()
            if response.status == 202:
                load.accepted += 1
                load.latencies.append(time.perf_counter() - started)

    loop = asyncio.get_running_loop()
    start = loop.time()
    total = int(RATE * seconds)
    tasks = []
    for index in range(total):
        delay = start + index / RATE - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one()))
    await asyncio.gather(*tasks)
    load.sent += total
    load.seconds += loop.time() - start


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of `pid` and its children (Linux's /proc; NaN elsewhere)."""
    total = 0.0
    try:
        pids = [pid, *(int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split())]
        for one in pids:
            fields = Path(f"/proc/{one}/stat").read_text().rpartition(")")[2].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError):
        return float("nan")
    return total


# -- 2. end to end ------------------------------------------------------------------------------


CHANGES = 40
ALERTS = """
[[alert]]
name = "privileged groups"
role_assignable = true
send_to = ["jsonl:{path}"]
"""


def _end_to_end() -> tuple[list[float], list[float], list[float]]:
    import tempfile

    with tempfile.TemporaryDirectory(prefix="monitor-bench-e2e-") as folder:
        work = Path(folder)
        ca = CertificateAuthority.create("monitor bench CA")
        ca.write_bundle(work / "ca.pem")
        cert, key = ca.issue_server_certificate(["127.0.0.1"])
        (work / "cert.pem").write_bytes(cert)
        (work / "key.pem").write_bytes(key)
        (work / "alerts.toml").write_text(ALERTS.format(path=work / "alerts.jsonl"))
        sizes = ["--users", "200", "--groups", "20", "--memberships", "1000", "--extra-ca", str(work / "ca.pem")]
        with environment(sizes) as env:
            port = free_port()
            serve_env = env.monitor_env(
                MONITOR_HOST="127.0.0.1",
                MONITOR_PORT=str(port),
                MONITOR_PUBLIC_URL=f"https://127.0.0.1:{port}",
                MONITOR_TLS_CERT=str(work / "cert.pem"),
                MONITOR_TLS_KEY=str(work / "key.pem"),
                MONITOR_ALERTS_FILE=str(work / "alerts.toml"),
            )
            with process([sys.executable, "-m", "monitor", "serve"], serve_env):
                return asyncio.run(_measure(env.sim_url, env.ca_bundle, env.redis.url, port, work))


async def _measure(
    sim_url: str, sim_ca: str, redis_url: str, port: int, work: Path
) -> tuple[list[float], list[float], list[float]]:
    ours = aiohttp.TCPConnector(ssl=client_context(work / "ca.pem"))
    theirs = aiohttp.TCPConnector(ssl=client_context(Path(sim_ca)))
    redis = aioredis.Redis.from_url(redis_url)
    store = TenantStore(redis, TENANT)
    try:
        async with aiohttp.ClientSession(connector=ours) as webhook, aiohttp.ClientSession(connector=theirs) as sim:
            await _wait_subscribed(webhook, f"https://127.0.0.1:{port}/readyz")
            control = f"{sim_url}/_sim/tenants/{TENANT}"
            group = await _create(sim, f"{control}/groups", displayName="Bench Admins", isAssignableToRole=True)
            users = [
                await _create(
                    sim, f"{control}/users", displayName=f"Bench {i}", userPrincipalName=f"b{i}@contoso.example"
                )
                for i in range(CHANGES)
            ]
            await _wait(lambda: _mirrored(store, users[-1]))
            await asyncio.sleep(1.0)  # let the alert baseline settle after the first groups round
            records, alerts, from_notification = [], [], []
            for user in users:
                accepted = await _accepted(redis)
                started = time.perf_counter()
                async with sim.post(f"{control}/groups/{group}/members", json={"id": user}) as response:
                    response.raise_for_status()
                notified = await _wait(lambda a=accepted: _notified(redis, a))
                recorded = await _wait(lambda u=user: _recorded(store, group, u))
                records.append(recorded - started)
                from_notification.append(recorded - notified)
                alerts.append(await _wait(lambda u=user: _alerted(work / "alerts.jsonl", u)) - started)
                await asyncio.sleep(0.3)
    finally:
        await redis.aclose()
    return records, alerts, from_notification


ACCEPTED = b'monitor_notifications_total{outcome="accepted"}'


async def _accepted(redis: aioredis.Redis) -> int:
    """Notifications the webhook has stored (its counter is written with the hint, before the 202)."""
    from monitor.keys import GLOBAL_METRICS

    return int(await redis.hget(GLOBAL_METRICS, ACCEPTED) or 0)


async def _notified(redis: aioredis.Redis, before: int) -> bool:
    return await _accepted(redis) > before


async def _wait_subscribed(http: aiohttp.ClientSession, url: str) -> None:
    for _ in range(600):
        try:
            async with http.get(url) as response:
                body = await response.json()
                states = [s for tenant in body.get("subscriptions", {}).values() for s in tenant.values()]
                if states and all(state == "ok" for state in states):
                    return
        except (aiohttp.ClientError, ValueError):
            pass
        await asyncio.sleep(0.1)
    raise RuntimeError("monitor serve never subscribed")


async def _create(http: aiohttp.ClientSession, url: str, **properties: Any) -> str:
    async with http.post(url, json=properties) as response:
        response.raise_for_status()
        created: dict[str, str] = await response.json()
        return created["id"]


async def _wait(check: Any) -> float:
    """Poll `check` every 2 ms; the moment it first holds."""
    for _ in range(10_000):
        if await check():
            return time.perf_counter()
        await asyncio.sleep(0.002)
    raise RuntimeError("timed out waiting for the change to come through")


async def _mirrored(store: TenantStore, user: str) -> bool:
    from monitor.model.types import entity_placement

    return await store.get(entity_placement("azure_user", user), user) is not None


async def _recorded(store: TenantStore, group: str, user: str) -> bool:
    from monitor.model.types import relationship_placement

    return await store.get(relationship_placement("azure_user_group", group), f"{group}|has|{user}") is not None


async def _alerted(path: Path, user: str) -> bool:
    return await asyncio.to_thread(lambda: path.exists() and user.encode() in path.read_bytes())


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("MONITOR_")}


def _row(monitor: Load, bare: Load, p: float) -> str:
    ours, theirs = monitor.percentile(p), bare.percentile(p)
    return f"{ours:.1f} ms | {theirs:.1f} ms | {ours / theirs:.1f}×"


# The figures before leading-edge coalescing (14.4) and the hint batching (14.3), from
# `python -m bench realtime` on the same machine: webhook p50/p99 (monitor, bare), end to end p50/p99.
PREVIOUS = {
    "p50": "13.7 ms | 0.5 ms | 29.1×",
    "p99": "620.5 ms | 1.5 ms | 408.5×",
    "record": "310 ms | 314 ms",
    "alert": "314 ms | 319 ms",
    "notified": "n/a (about 260 ms: the 250 ms coalescing window) | n/a",
}


def _cpu_row(monitor: Load, bare: Load) -> str:
    ours, theirs = monitor.cpu_per_request_ms, bare.cpu_per_request_ms
    return f"{ours:.2f} ms | {theirs:.2f} ms | {ours / theirs:.1f}×"


def _report(monitor: Load, bare: Load, records: list[float], alerts: list[float], notified: list[float]) -> str:
    def ms(values: list[float], p: float) -> str:
        ordered = sorted(values)
        return f"{ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000:.0f} ms" if ordered else "n/a"

    return f"""## Real time: the webhook under load, and from a change to its record and alert

Command: `{command_line()}` — {machine()}.

**Webhook receiver**: {RATE:,} notification POSTs per second for {SECONDS:.0f} s, open loop, one notification
per POST (the worst case; Graph batches), against `monitor web` (validation, clientState check,
enqueue on a real Redis) and against a bare aiohttp handler that only answers 202, same machine,
same run, load generator in a third process. The two take turns ({SLICES} turns of {SECONDS / SLICES:.0f} s each), so
the other work on the machine falls on both alike. Each first takes {WARM_UP:g} s of the same load, not
measured, and the load generator's own garbage collector is off during the turns (its full
collections stalled it for tens of milliseconds, and the requests due meanwhile then went out as one
burst). CPU: the server process's user + system time per request.

| | `monitor web` | bare aiohttp 202 | ratio | before: `monitor web` | before: bare | before: ratio |
|---|---|---|---|---|---|---|
| Accepted per second | {monitor.rate:,.0f} | {bare.rate:,.0f} | {monitor.rate / bare.rate:.2f} | 1,989 | 1,980 | 1.00 |
| CPU per request | {_cpu_row(monitor, bare)} | | | |
| p50 latency | {_row(monitor, bare, 0.5)} | {PREVIOUS["p50"]} |
| p99 latency | {_row(monitor, bare, 0.99)} | {PREVIOUS["p99"]} |
| Graph's limit for an answer | 3,000 ms | | | | | |

**End to end**: `monitor serve` (leading-edge coalescing: a hint that finds its job idle starts a
round at once; before, every round waited a fixed 250 ms window), subscribed to the simulated tenant,
{len(records)} members added one by one to a role-assignable group watched by an alert rule.
Measured from the change in the tenant (the simulator batches notifications for 50 ms; Graph
publishes no latency figure for directory notifications, docs/graph.md 4.4):

| | p50 | p99 | before: p50 | before: p99 |
|---|---|---|---|---|
| Change record in the change log | {ms(records, 0.5)} | {ms(records, 0.99)} | {PREVIOUS["record"]} |
| Alert delivered | {ms(alerts, 0.5)} | {ms(alerts, 0.99)} | {PREVIOUS["alert"]} |
| Change record, from the notification stored | {ms(notified, 0.5)} | {ms(notified, 0.99)} | {PREVIOUS["notified"]} |

The last row starts when the webhook has stored the notification's hint (polled every 2 ms through
its `monitor_notifications_total{{outcome="accepted"}}` counter, written with the hint).
"""
