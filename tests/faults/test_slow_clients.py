"""The webhook cannot be stalled: slow and idle clients, bounded in count and time, against a real
`monitor web` on 127.0.0.1, while Graph sends a genuine notification.

Three kinds of abuse, a third of the clients each: headers trickled a byte at a time, a body
trickled after complete headers, and a connection that sends nothing. The server must close each
within its bound, keep its descriptors under the connection cap while it lasts and give them back
after, and answer the genuine notification 202 promptly all along. The figures (latency, descriptors,
memory) are printed: `pytest -s`.
"""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import orjson
import redis.asyncio as aioredis

from monitor.keys import HINTS, TenantKeys
from tests.conftest import TENANT_ID, RedisServer
from tests.faults.conftest import Launch, MonitorProcess, start_web, wait_for

READ_TIMEOUT = 2.0
IDLE_TIMEOUT = 3.0
MAX_CONNECTIONS = 120
CLIENTS_PER_KIND = 60  # 180 in all: over the cap, so the cap is exercised too
TRICKLE = 0.5  # seconds between two bytes
ABUSE_FOR = 20.0  # a slow client gives up after this long; the server must close it well before
SLACK = 3.0  # a busy machine's delay on top of each bound


@dataclass
class SlowClient:
    kind: str
    closed_after: float | None = None  # seconds until the server closed it; None: it never did


async def slow_client(port: int, kind: str) -> SlowClient:
    client = SlowClient(kind)
    started = time.monotonic()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:  # refused at the door: closed at once
        client.closed_after = 0.0
        return client
    head = b"POST /graph/notifications HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    if kind == "slow body":
        writer.write(head + b"Content-Length: 100000\r\n\r\n{")
    trickle = {"slow headers": head + b"X-Padding: " + b"a" * 1000, "slow body": b" " * 1000, "idle": b""}[kind]
    try:
        for byte in trickle:
            if kind != "idle":
                writer.write(bytes([byte]))
            await writer.drain()
            if await _closed_within(reader, TRICKLE) or time.monotonic() - started > ABUSE_FOR:
                break
        else:
            await _closed_within(reader, ABUSE_FOR - (time.monotonic() - started))
        if reader.at_eof():
            client.closed_after = time.monotonic() - started
    except (ConnectionError, OSError):
        client.closed_after = time.monotonic() - started
    finally:
        writer.close()
    return client


async def _closed_within(reader: asyncio.StreamReader, seconds: float) -> bool:
    """Whether the server closed the connection (after any answer it sent) within `seconds`."""
    try:
        async with asyncio.timeout(max(0.0, seconds)):
            while await reader.read(4096):
                pass
    except TimeoutError:
        return False
    return True


async def genuine_notification(port: int, subscription: str, client_state: str) -> float:
    """POST one notification as Graph would; the seconds until its 202."""
    body = orjson.dumps(
        {
            "value": [
                {
                    "subscriptionId": subscription,
                    "tenantId": TENANT_ID,
                    "clientState": client_state,
                    "changeType": "updated",
                    "resource": "Users/7c5c0b5a-0000-4000-8000-000000000001",
                }
            ]
        }
    )
    started = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"POST /graph/notifications HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body
    )
    status_line = await reader.readline()
    took = time.monotonic() - started
    writer.close()
    assert status_line.startswith(b"HTTP/1.1 202"), status_line
    return took


def descriptors(process: MonitorProcess) -> int:
    return len(list(Path(f"/proc/{process.process.pid}/fd").iterdir()))


def resident_mb(process: MonitorProcess) -> float:
    status = Path(f"/proc/{process.process.pid}/status").read_text()
    (line,) = [line for line in status.splitlines() if line.startswith("VmRSS:")]
    return int(line.split()[1]) / 1024


async def test_slow_and_idle_clients_cannot_stall_the_webhook(
    redis_server: RedisServer, redis: aioredis.Redis, launch: Launch
) -> None:
    subscription, client_state = str(uuid.uuid4()), uuid.uuid4().hex
    record = {"id": subscription, "resource": "/users", "clientState": client_state, "expiration": ""}
    await redis.hset(TenantKeys(TENANT_ID).subscriptions, subscription, orjson.dumps(record))
    web = await start_web(
        launch,
        redis_server,
        MONITOR_HTTP_READ_TIMEOUT=str(READ_TIMEOUT),
        MONITOR_HTTP_IDLE_TIMEOUT=str(IDLE_TIMEOUT),
        MONITOR_HTTP_MAX_CONNECTIONS=str(MAX_CONNECTIONS),
        MONITOR_LOG_LEVEL="WARNING",
    )
    port = web.port
    quiet = [await genuine_notification(port, subscription, client_state) for _ in range(5)]
    fds_before, rss_before = descriptors(web), resident_mb(web)

    kinds = ["slow headers", "slow body", "idle"]
    abuse = [asyncio.create_task(slow_client(port, kind)) for kind in kinds for _ in range(CLIENTS_PER_KIND)]
    await asyncio.sleep(1.0)  # all connected and trickling
    under_abuse, fds_during = [], 0
    for _ in range(5):
        under_abuse.append(await genuine_notification(port, subscription, client_state))
        fds_during = max(fds_during, descriptors(web))
        await asyncio.sleep(0.2)
    rss_during = resident_mb(web)
    clients = await asyncio.gather(*abuse)
    await wait_for(lambda: settled(web, fds_before), within=15, what="descriptors given back")
    fds_after, rss_after = descriptors(web), resident_mb(web)

    print(
        f"\ngenuine notification: median {statistics.median(quiet) * 1000:.0f} ms quiet, "
        f"{statistics.median(under_abuse) * 1000:.0f} ms (max {max(under_abuse) * 1000:.0f} ms) under "
        f"{len(clients)} slow clients; descriptors {fds_before} -> {fds_during} -> {fds_after}; "
        f"RSS {rss_before:.1f} -> {rss_during:.1f} -> {rss_after:.1f} MB"
    )
    assert await redis.xlen(HINTS) == 10, "every genuine notification was stored"
    assert statistics.median(under_abuse) < 1.0 and max(under_abuse) < 5.0
    bounds = {"slow headers": IDLE_TIMEOUT, "slow body": READ_TIMEOUT, "idle": IDLE_TIMEOUT}
    for client in clients:
        assert client.closed_after is not None, f"a client with a {client.kind} was never closed"
        assert client.closed_after <= bounds[client.kind] + SLACK, client
    assert fds_during <= fds_before + MAX_CONNECTIONS + 10, "the cap holds while the abuse lasts"
    assert rss_after - rss_before < 64, "what the connections held is given back (or reused)"
    assert await web.stop() == 0
    assert "Traceback" not in web.output()


async def settled(process: MonitorProcess, baseline: int) -> bool:
    return descriptors(process) <= baseline + 2
