"""The webhook receiver through HTTP: handshake, rejections, and what reaches the queue."""

from __future__ import annotations

import asyncio
import io
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from pydantic import SecretStr

from monitor.app import Runtime
from monitor.keys import GLOBAL_METRICS, HINTS, TenantKeys
from monitor.settings import Settings, load_settings
from monitor.simulator.redis_process import start_redis_server
from monitor.web import RUNTIME, create_app
from tests.conftest import TENANT_ID


@pytest.fixture
async def client(settings: Settings, redis: aioredis.Redis) -> AsyncIterator[TestClient[Any, Any]]:
    runtime = await Runtime.open(settings, graph=False)
    async with TestClient(TestServer(create_app(settings, runtime=runtime))) as test_client:
        yield test_client
    await runtime.close()


def notification(**overrides: Any) -> dict[str, Any]:
    item = {
        "subscriptionId": str(uuid.uuid4()),
        "subscriptionExpirationDateTime": "2026-12-20T00:00:00Z",
        "tenantId": TENANT_ID,
        "clientState": "not-a-real-client-state",
        "changeType": "updated",
        "resource": "Users/7c5c0b5a-0000-4000-8000-000000000001",
        "resourceData": {"@odata.type": "#Microsoft.Graph.User", "id": "7c5c0b5a-0000-4000-8000-000000000001"},
    }
    item.update(overrides)
    return {"value": [item]}


async def queued(redis: aioredis.Redis) -> int:
    length: int = await redis.xlen(HINTS)
    return length


async def counters(redis: aioredis.Redis) -> dict[str, int]:
    raw: dict[bytes, bytes] = await redis.hgetall(GLOBAL_METRICS)  # type: ignore[assignment]
    return {k.decode(): int(v) for k, v in raw.items()}


@pytest.mark.parametrize("path", ["/graph/notifications", "/graph/lifecycle"])
async def test_validation_handshake_echoes_the_decoded_token(client: TestClient[Any, Any], path: str) -> None:
    response = await client.post(f"{path}?validationToken=Validation%3A%20Testing%20client%20application%2B%3D%26")
    assert response.status == 200
    assert response.content_type == "text/plain"
    assert await response.text() == "Validation: Testing client application+=&"


@pytest.mark.parametrize(
    ("body", "headers", "status", "reason"),
    [
        pytest.param(b"{not json", {"Content-Type": "application/json"}, 400, "malformed", id="malformed json"),
        pytest.param(
            b"\x00\x00",
            {"Content-Type": "application/json", "Content-Encoding": "gzip"},
            400,
            "malformed",
            id="bad gzip",
        ),
        pytest.param(b'{"value": []}', {"Content-Type": "application/json"}, 400, "malformed", id="empty collection"),
        pytest.param(
            b'{"value": [{"tenantId": "x"}]}', {"Content-Type": "application/json"}, 400, "malformed", id="schema"
        ),
        pytest.param(
            json.dumps(notification()).encode(),
            {"Content-Type": "text/plain"},
            415,
            "wrong_content_type",
            id="content type",
        ),
        pytest.param(b"x" * (3 * 1024 * 1024), {"Content-Type": "application/json"}, 413, "too_large", id="oversized"),
    ],
)
async def test_bad_requests_are_refused_and_counted(
    client: TestClient[Any, Any], redis: aioredis.Redis, body: bytes, headers: dict[str, str], status: int, reason: str
) -> None:
    response = await client.post("/graph/notifications", data=io.BytesIO(body), headers=headers)
    assert response.status == status
    assert await queued(redis) == 0
    assert (await counters(redis))[f'monitor_notifications_total{{outcome="{reason}"}}'] == 1


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        pytest.param({}, "unknown_subscription", id="unknown subscription"),
        pytest.param({"tenantId": str(uuid.uuid4())}, "unknown_tenant", id="unknown tenant"),
    ],
)
async def test_notifications_we_did_not_ask_for_are_dropped(
    client: TestClient[Any, Any], redis: aioredis.Redis, overrides: dict[str, str], reason: str
) -> None:
    response = await client.post("/graph/notifications", json=notification(**overrides))
    assert response.status == 202
    assert await queued(redis) == 0
    assert (await counters(redis))[f'monitor_notifications_total{{outcome="{reason}"}}'] == 1


@pytest.mark.parametrize(
    "bad_id",
    [
        "",
        "not-a-guid",
        "7d1a4c3e-5b6f-4a2d-9e8c-1f2a3b4c5d6",
        "7d1a4c3e-5b6f-4a2d-9e8c-1f2a3b4c5d6e0",
        "{7d1a4c3e}",
        "' OR 1=1 --",
    ],
)
@pytest.mark.parametrize("field", ["subscriptionId", "tenantId"])
async def test_invalid_ids_are_malformed(
    client: TestClient[Any, Any], redis: aioredis.Redis, field: str, bad_id: str
) -> None:
    response = await client.post("/graph/notifications", json=notification(**{field: bad_id}))
    assert response.status == 400
    assert await queued(redis) == 0


async def test_redis_down_answers_503_so_graph_retries(graph: Any, tmp_path: Path) -> None:
    server = start_redis_server(tmp_path)
    settings = load_settings({}, redis_url=server.url, tenant_id=TENANT_ID)
    runtime = await Runtime.open(settings, graph=False)
    try:
        async with TestClient(TestServer(create_app(settings, runtime=runtime))) as test_client:
            server.stop()
            response = await test_client.post("/graph/notifications", json=notification())
            assert response.status == 503
            health = await test_client.get("/readyz")
            assert health.status == 503
            assert (await test_client.get("/healthz")).status == 200
    finally:
        await runtime.close()


async def test_concurrent_notifications_are_each_stored_before_their_202(
    client: TestClient[Any, Any], redis: aioredis.Redis
) -> None:
    subscription = str(uuid.uuid4())
    await save_subscription(redis, subscription, "the-client-state")
    body = notification(subscriptionId=subscription, clientState="the-client-state")
    responses = await asyncio.gather(*(client.post("/graph/notifications", json=body) for _ in range(100)))
    assert [r.status for r in responses] == [202] * 100
    assert (await counters(redis))['monitor_notifications_total{outcome="accepted"}'] == 100
    assert await queued(redis) >= 1  # one hint per job for each batch of requests stored together


async def test_redis_lost_while_serving_answers_503_then_202_once_it_is_back(graph: Any, tmp_path: Path) -> None:
    server = start_redis_server(tmp_path)
    settings = load_settings({}, redis_url=server.url, tenant_id=TENANT_ID)
    runtime = await Runtime.open(settings, graph=False)
    subscription = str(uuid.uuid4())
    await save_subscription(runtime.redis, subscription, "the-client-state")
    body = notification(subscriptionId=subscription, clientState="the-client-state")
    try:
        async with TestClient(TestServer(create_app(settings, runtime=runtime))) as test_client:
            assert (await test_client.post("/graph/notifications", json=body)).status == 202
            server.stop()  # the hint writer's connection is lost with it
            assert (await test_client.post("/graph/notifications", json=body)).status == 503
            server = server.restarted()
            assert (await test_client.post("/graph/notifications", json=body)).status == 202
            assert await queued(runtime.redis) == 1  # stored in the restarted server
    finally:
        await runtime.close()
        server.stop()


async def save_subscription(redis: aioredis.Redis, subscription: str, client_state: str) -> None:
    """What `monitor.graph.subscriptions` writes for a subscription it made."""
    record = {"id": subscription, "resource": "/users", "clientState": client_state, "expiration": None}
    await redis.hset(TenantKeys(TENANT_ID).subscriptions, subscription, orjson.dumps(record))


METRICS_TOKEN = "metrics-token-for-the-tests-0123456789"
OPERATOR_TOKEN = "operator-token-for-the-tests-0123456789"


def guard(client: TestClient[Any, Any], **tokens: str) -> None:
    runtime = client.app[RUNTIME]
    runtime.settings = runtime.settings.model_copy(update={k: SecretStr(v) for k, v in tokens.items()})


async def test_metrics_are_prometheus_text(client: TestClient[Any, Any]) -> None:
    guard(client, metrics_token=METRICS_TOKEN)
    await client.post("/graph/notifications", json=notification())
    response = await client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert response.status == 200
    text = await response.text()
    assert "# TYPE monitor_notifications_total counter" in text
    assert 'monitor_notifications_total{outcome="unknown_subscription"} 1' in text
    assert "monitor_hints_queue_depth 0" in text


async def test_metrics_are_off_without_a_token_like_status(client: TestClient[Any, Any]) -> None:
    """The series name every tenant and when its subscriptions expire: /metrics is guarded as /status is."""
    assert (await client.get("/metrics")).status == 404
    assert (await client.get("/status")).status == 404


@pytest.mark.parametrize(
    ("presented", "status"),
    [
        (None, 401),
        ("Bearer not-the-token-0123456789", 401),
        (f"Bearer {METRICS_TOKEN}", 200),
        (f"Bearer {OPERATOR_TOKEN}", 200),
    ],
)
async def test_metrics_need_the_metrics_or_the_operator_token(
    client: TestClient[Any, Any], presented: str | None, status: int, caplog: pytest.LogCaptureFixture
) -> None:
    guard(client, metrics_token=METRICS_TOKEN, operator_token=OPERATOR_TOKEN)
    response = await client.get("/metrics", headers={"Authorization": presented} if presented else {})
    assert response.status == status
    text = await response.text()
    assert ("monitor_hints_queue_depth" in text) == (status == 200) and METRICS_TOKEN not in text
    assert any("wrong metrics token" in r.getMessage() for r in caplog.records) == (status == 401)


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=20), inner, max_size=4),
    max_leaves=20,
)
_bodies = st.one_of(
    st.binary(max_size=2000),
    _json_values.map(lambda v: json.dumps(v).encode()),
    st.builds(lambda items: json.dumps({"value": items}).encode(), st.lists(_json_values, max_size=5)),
    st.builds(
        lambda extra: json.dumps({"value": [{**notification()["value"][0], **extra}]}).encode(),
        st.dictionaries(
            st.sampled_from(["clientState", "tenantId", "subscriptionId", "lifecycleEvent", "resource"]), _json_values
        ),
    ),
)
_headers = st.dictionaries(
    st.sampled_from(["Content-Type", "X-Anything", "Accept", "Content-Encoding"]),
    st.sampled_from(["application/json", "application/json; charset=utf-8", "text/plain", "", "gzip", "*/*"]),
    max_size=3,
)


@hsettings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=_bodies, headers=_headers, lifecycle=st.booleans())
async def test_arbitrary_requests_never_crash_nor_enqueue(
    client: TestClient[Any, Any], redis: aioredis.Redis, body: bytes, headers: dict[str, str], lifecycle: bool
) -> None:
    """Whatever arrives: an answer below 500 (Redis is up), and nothing unvalidated on the queue.

    No subscription exists, so no notification can be valid: the queue must stay empty.
    """
    path = "/graph/lifecycle" if lifecycle else "/graph/notifications"
    response = await client.post(path, data=body, headers=headers)
    assert response.status < 500
    assert response.status in (202, 400, 413, 415)
    assert await queued(redis) == 0
