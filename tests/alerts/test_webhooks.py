"""The signed POST (monitor.sinks.signing) and the change-record webhook sink, against a receiver that
verifies signatures independently."""

from __future__ import annotations

import asyncio
import itertools

import pytest
from pydantic import SecretStr

from monitor.app import build_sinks
from monitor.errors import ConfigError
from monitor.retry import RetryPolicy
from monitor.settings import load_settings
from monitor.simulator import SimTenant, seed
from monitor.sinks.base import drain
from monitor.sinks.signing import WebhookClient, WebhookRejected, WebhookUnavailable, signature
from monitor.sinks.webhook import WebhookSink
from monitor.sync import sync_tenant
from tests.alerts.conftest import SECRET, MakeRuntime, Receiver, Sleeps, verify
from tests.conftest import TENANT_ID


def client(sleeps: Sleeps, *, retries: int = 3, clock: itertools.count[int] | None = None) -> WebhookClient:
    ticks = clock or itertools.count(1_700_000_000)
    return WebhookClient(
        SecretStr(SECRET), policy=RetryPolicy(max_retries=retries), sleep=sleeps, clock=lambda: float(next(ticks))
    )


def test_signature_is_hmac_sha256_of_timestamp_dot_body() -> None:
    value = signature(b"k", "1700000000", b'{"a":1}')
    assert verify("k", {"X-Monitor-Timestamp": "1700000000", "X-Monitor-Signature": value}, b'{"a":1}')
    assert not verify("k", {"X-Monitor-Timestamp": "1700000001", "X-Monitor-Signature": value}, b'{"a":1}')
    assert not verify("k", {"X-Monitor-Timestamp": "1700000000", "X-Monitor-Signature": value}, b'{"a":2}')


async def test_each_attempt_is_signed_afresh(receiver: Receiver, sleeps: Sleeps) -> None:
    receiver.answers = [(429, {"Retry-After": "3"})]
    sender = client(sleeps)
    await sender.post(receiver.url, b'{"hello": "world"}')
    await sender.close()
    assert [d.status for d in receiver.deliveries] == [429, 200]
    assert all(d.signed for d in receiver.deliveries)
    assert [d.headers["X-Monitor-Timestamp"] for d in receiver.deliveries] == ["1700000000", "1700000001"]
    assert 3 <= sleeps.delays[0] <= 3.3
    assert (sender.stats.throttled, sender.stats.retries, sender.stats.delivered) == (1, 1, 1)


async def test_a_wrong_secret_is_refused_by_the_receiver(receiver: Receiver, sleeps: Sleeps) -> None:
    sender = WebhookClient(SecretStr("not-the-secret"), sleep=sleeps)
    with pytest.raises(WebhookRejected) as refused:
        await sender.post(receiver.url, b"{}")
    await sender.close()
    assert refused.value.status == 401
    assert [d.signed for d in receiver.deliveries] == [False]


async def test_no_answer_is_retried_then_unavailable(sleeps: Sleeps, unused_tcp_port: int) -> None:
    sender = client(sleeps, retries=2)
    url = f"http://127.0.0.1:{unused_tcp_port}/hook/secret-token"
    with pytest.raises(WebhookUnavailable) as failed:
        await sender.post(url, b"{}")
    await sender.close()
    assert len(sleeps.delays) == 2
    assert sender.stats.requests == 3
    assert "secret-token" not in str(failed.value)


async def test_redirects_are_not_followed(receiver: Receiver, sleeps: Sleeps) -> None:
    receiver.answers = [(307, {"Location": receiver.url})]  # 307 would POST the same body again
    sender = client(sleeps)
    with pytest.raises(WebhookRejected):
        await sender.post(receiver.url, b"{}")
    await sender.close()
    assert [d.status for d in receiver.deliveries] == [307]


async def test_a_client_used_on_two_event_loops_has_a_session_on_each(receiver: Receiver, sleeps: Sleeps) -> None:
    """An aiohttp session belongs to the loop it was made on: used from another loop (a thread's
    `asyncio.run`), the client makes a session there, closed on that loop, and its first one still works."""
    sender = client(sleeps)

    async def on_another_loop() -> None:
        await sender.post(receiver.url, b'{"loop": 2}')
        await sender.close()

    await sender.post(receiver.url, b'{"loop": 1}')
    await asyncio.to_thread(asyncio.run, on_another_loop())
    await sender.post(receiver.url, b'{"loop": 1}')
    await sender.close()
    assert [d.json for d in receiver.deliveries] == [{"loop": 1}, {"loop": 2}, {"loop": 1}]
    assert (sender.stats.requests, sender.stats.retries) == (3, 0)


async def test_without_a_secret_nothing_is_sent(receiver: Receiver) -> None:
    sender = WebhookClient(None)
    with pytest.raises(ConfigError, match="MONITOR_WEBHOOK_SECRET"):
        await sender.post(receiver.url, b"{}")
    assert receiver.deliveries == []


async def test_the_sink_posts_batches_in_seq_order_signed(
    make_runtime: MakeRuntime, tenant: SimTenant, receiver: Receiver
) -> None:
    seed(tenant, users=300, groups=6, memberships=500, nested_groups=2, other_members=4)
    runtime = await make_runtime([], sink=f"webhook:{receiver.url}")
    [sink] = runtime.sinks
    assert isinstance(sink, WebhookSink)
    assert sink.name.startswith("webhook:http://127.0.0.1:") and "/hook" not in sink.name
    _, failures = await sync_tenant(runtime, runtime.settings.tenants[0])
    assert not failures

    store = runtime.store(TENANT_ID)
    records = await store.read_changes(0, 1_000_000)
    assert len(records) > 1000
    assert all(d.signed for d in receiver.deliveries)
    bodies = receiver.accepted
    assert len(bodies) >= 3 and all(set(body) == {"records"} for body in bodies)
    assert all(len(body["records"]) <= 500 for body in bodies)
    assert [r for body in bodies for r in body["records"]] == records
    assert await store.cursor(sink.name) == records[-1]["seq"]


async def test_a_refused_batch_stops_the_sink_until_accepted(
    make_runtime: MakeRuntime, tenant: SimTenant, receiver: Receiver, sleeps: Sleeps
) -> None:
    seed(tenant, users=10, groups=2, memberships=15)
    runtime = await make_runtime([])
    _, failures = await sync_tenant(runtime, runtime.settings.tenants[0])
    assert not failures
    store = runtime.store(TENANT_ID)
    sink = WebhookSink(receiver.url, client(sleeps), max_records=10)
    receiver.answers = [(200, {}), (400, {})]

    with pytest.raises(WebhookRejected):
        await drain(store, sink)
    assert await store.cursor(sink.name) == 0  # the batch's first request went through; the batch did not
    assert [d.status for d in receiver.deliveries] == [200, 400]
    assert sleeps.delays == []

    assert await drain(store, sink) == await store.last_seq()
    records = [r for body in receiver.accepted for r in body["records"]]
    assert records[:10] == records[10:20]  # the accepted part came again: receivers dedupe by seq
    assert records[10:] == await store.read_changes(0, 1_000_000)
    await sink.close()


def test_build_sinks_builds_the_webhook_sink() -> None:
    settings = load_settings(
        {},
        redis_url="redis://localhost:1",
        tenant_id=TENANT_ID,
        sink="webhook:https://hooks.example.com/services/T000/B000/XXXX",
        webhook_secret=SECRET,
    )
    [sink] = build_sinks(settings)
    assert isinstance(sink, WebhookSink)
    assert sink.url == "https://hooks.example.com/services/T000/B000/XXXX"
    assert sink.name.startswith("webhook:https://hooks.example.com#") and "XXXX" not in sink.name


def test_webhook_settings_are_validated() -> None:
    with pytest.raises(ConfigError, match="MONITOR_WEBHOOK_MAX_RETRIES"):
        load_settings({"MONITOR_WEBHOOK_MAX_RETRIES": "-1"}, redis_url="redis://localhost:1")
    with pytest.raises(ConfigError, match="MONITOR_WEBHOOK_SECRET is required"):
        load_settings({}, redis_url="redis://localhost:1", sink="webhook:https://hooks.example.com/x")
