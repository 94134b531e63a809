"""End to end through HTTP: simulated Graph -> our webhook -> queue -> worker -> change log -> alerts."""

from __future__ import annotations

import logging
from datetime import timedelta

import aiohttp
import orjson
import pytest

from monitor.hints import Hint, enqueue
from monitor.keys import GLOBAL_METRICS, TenantKeys
from monitor.model.types import entity_placement
from monitor.records import ChangeRecord
from monitor.store import TenantStore
from monitor.sync import sync_tenant
from monitor.tls import client_context
from tests.conftest import TENANT_ID
from tests.realtime.conftest import Live


async def baseline(live: Live) -> None:
    """The first sync (alerts start after it) and the subscriptions."""
    await sync_tenant(live.runtime, live.settings.tenants[0])
    await live.subscribe()
    assert sorted(s.resource for s in live.ours()) == ["/groups", "/users"]


def admin_group(live: Live) -> str:
    return live.tenant.add_group(
        displayName="Global Administrators", isAssignableToRole=True, securityEnabled=True, mailEnabled=False
    )


async def records_since(live: Live, seq: int) -> list[ChangeRecord]:
    return await TenantStore(live.redis, TENANT_ID).read_changes(seq, 10_000)


async def test_a_member_added_to_a_watched_group_is_recorded_and_alerted(live: Live) -> None:
    group = admin_group(live)
    user = live.tenant.add_user(displayName="Mallory Hacker", userPrincipalName="mallory@contoso.example")
    await baseline(live)
    seq = await TenantStore(live.redis, TENANT_ID).last_seq()

    live.tenant.add_member(group, user)
    await live.sim.subscriptions.drain()
    assert await live.queued() == 1, "one notification, one hint"
    await live.work()

    [record] = await records_since(live, seq)
    assert (record["op"], record["type"], record["key"]) == ("upsert", "azure_group_has_member", f"{group}|has|{user}")
    [alert] = live.alerts()
    assert alert["change"] == "member_added"
    assert alert["group"] == {"id": group, "name": "Global Administrators", "roleAssignable": True}
    assert (
        alert["member"]["name"] == "Mallory Hacker"
        and alert["member"]["userPrincipalName"] == "mallory@contoso.example"
    )
    assert alert["seq"] == record["seq"] and alert["observedAt"] == record["observedAt"]


async def test_duplicate_and_reordered_notifications_cost_one_round_and_no_duplicates(live: Live) -> None:
    groups = [live.tenant.add_group(displayName=f"Team {i}", securityEnabled=True, mailEnabled=False) for i in range(4)]
    users = [
        live.tenant.add_user(displayName=f"Person {i}", userPrincipalName=f"p{i}@contoso.example") for i in range(6)
    ]
    await baseline(live)
    seq = await TenantStore(live.redis, TENANT_ID).last_seq()
    live.sim.subscriptions.configure(duplicate_rate=1.0, shuffle=True)
    live.sim.requests.clear()
    for group, user in zip(groups, users, strict=False):
        live.tenant.add_member(group, user)
    live.tenant.update_user(users[5], jobTitle="Auditor")

    await live.work()

    assert live.sim.count(r"/v1.0/users/delta") == 1
    assert live.sim.count(r"/v1.0/groups/delta") == 1
    records = await records_since(live, seq)
    assert sorted((r["type"], r["key"]) for r in records) == sorted(
        [("azure_group_has_member", f"{g}|has|{u}") for g, u in zip(groups, users, strict=False)]
        + [("azure_user", users[5])]
    )
    assert await live.queued() == 0


async def test_a_forged_client_state_never_reaches_the_queue(live: Live) -> None:
    await baseline(live)
    [users] = [s for s in live.ours() if s.resource == "/users"]
    forged = {
        "value": [
            {
                "subscriptionId": users.id,
                "tenantId": TENANT_ID,
                "clientState": "guessed-" + "x" * 56,
                "changeType": "updated",
                "resource": "Users/00000000-0000-4000-8000-000000000001",
            }
        ]
    }
    context = client_context(live.settings.ca_bundle)
    connector = aiohttp.TCPConnector(ssl=context)
    async with (
        aiohttp.ClientSession(connector=connector) as http,
        http.post(f"{live.public_url}/graph/notifications", json=forged) as response,
    ):
        assert response.status == 202
    assert await live.queued() == 0
    counters = await live.redis.hgetall(GLOBAL_METRICS)
    assert counters[b'monitor_notifications_total{outcome="bad_client_state"}'] == b"1"


async def test_subscriptions_are_created_once_and_renewed_before_expiry(live: Live) -> None:
    await baseline(live)
    first = {s.resource: s.id for s in live.ours()}
    await live.subscribe()  # nothing to do: far from expiry
    assert {s.resource: s.id for s in live.ours()} == first
    assert all(s.renewed_at is None for s in live.ours())

    # Renew everything that expires within 30 days: both do (the maximum is under 29 days).
    live.runtime.settings = live.settings.model_copy(update={"subscription_renew_before": 30 * 86400.0})
    await live.subscribe()
    assert {s.resource: s.id for s in live.ours()} == first
    assert all(s.renewed_at is not None for s in live.ours())
    assert all(s.overlapping_reauthorizations == 0 for s in live.ours())
    # The registry keeps the JSON it has always stored (monitor.records.encode_subscription).
    stored = await live.redis.hgetall(TenantKeys(TENANT_ID).subscriptions)
    assert sorted(stored) == sorted(s.id.encode() for s in live.ours())
    for raw in stored.values():
        assert list(orjson.loads(raw)) == [
            "createdAt",
            "id",
            "resource",
            "clientState",
            "expiration",
            "notificationUrl",
            "renewedAt",
        ]


async def test_a_subscription_graph_dropped_is_recreated_and_a_round_catches_up(live: Live) -> None:
    await baseline(live)
    [groups] = [s for s in live.ours() if s.resource == "/groups"]
    live.sim.subscriptions.remove(groups.id)  # gone without a word, as Graph does for directories
    group = live.tenant.add_group(displayName="Created meanwhile", securityEnabled=True, mailEnabled=False)
    await live.sim.subscriptions.drain()
    assert await live.queued() == 0, "nobody was notified"
    live.sim.requests.clear()

    await live.subscribe()

    assert sorted(s.resource for s in live.ours()) == ["/groups", "/users"]
    assert groups.id not in {s.id for s in live.ours()}
    assert live.sim.count(r"/v1.0/groups/delta") == 1, "the lost subscription's resource is read again"
    mirrored = await TenantStore(live.redis, TENANT_ID).get(entity_placement("azure_user_group", group), group)
    assert mirrored is not None


async def test_reauthorization_is_answered_by_one_renew(live: Live) -> None:
    await baseline(live)
    [users] = [s for s in live.ours() if s.resource == "/users"]
    live.sim.send_lifecycle(users.id, "reauthorizationRequired")
    await live.work()
    renewed_at = live.sim.subscriptions.get(users.id).renewed_at
    assert renewed_at is not None
    live.sim.send_lifecycle(users.id, "reauthorizationRequired")  # again, at once
    await live.work()
    subscription = live.sim.subscriptions.get(users.id)
    assert subscription.renewed_at == renewed_at, "not renewed twice within 10 minutes"
    assert subscription.overlapping_reauthorizations == 0
    assert subscription.reauthorized_at is None, "we renew; we never send a reauthorize"


@pytest.mark.parametrize("event", ["subscriptionRemoved", "missed"])
async def test_removed_and_missed_lifecycle_events_recover(live: Live, event: str) -> None:
    await baseline(live)
    [users] = [s for s in live.ours() if s.resource == "/users"]
    live.sim.requests.clear()
    live.sim.send_lifecycle(users.id, event)
    await live.work()
    assert sorted(s.resource for s in live.ours()) == ["/groups", "/users"]
    if event == "subscriptionRemoved":
        assert users.id not in {s.id for s in live.ours()}, "a new subscription replaced the removed one"
    assert live.sim.count(r"/v1.0/users/delta") >= 1, "what may have been missed is read"


async def test_a_stray_subscription_of_ours_is_deleted(live: Live) -> None:
    await baseline(live)
    user = live.tenant.add_user(displayName="Single", userPrincipalName="single@contoso.example")
    stray = {
        "changeType": "updated",
        "notificationUrl": f"{live.public_url}/graph/notifications",
        "resource": f"/users/{user}",
        "expirationDateTime": (live.runtime.clock() + timedelta(days=2)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "clientState": "stray-client-state",
    }
    await live.runtime.graph.request(TENANT_ID, "POST", "/v1.0/subscriptions", json=stray)
    assert len(live.ours()) == 3
    await live.subscribe()
    assert sorted(s.resource for s in live.ours()) == ["/groups", "/users"]


async def test_subscriptions_survive_losing_redis_state(live: Live) -> None:
    """Redis restarted empty: the subscriptions at our URL can no longer be checked, so they are replaced."""
    await baseline(live)
    before = {s.id for s in live.ours()}
    await live.redis.flushall()
    await live.subscribe()
    after = {s.id for s in live.ours()}
    assert len(after) == 2 and not before & after
    user = live.tenant.add_user(displayName="Back", userPrincipalName="back@contoso.example")
    await live.sim.subscriptions.drain()
    assert await live.queued() == 1, "notifications for the new subscriptions are accepted"
    assert user


async def test_a_quota_refusal_is_reported_clearly(live: Live, caplog: pytest.LogCaptureFixture) -> None:
    live.sim.subscriptions.configure(quota_per_app_tenant=1)
    await sync_tenant(live.runtime, live.settings.tenants[0])
    with caplog.at_level(logging.ERROR):
        await live.subscribe()
    status = await TenantStore(live.redis, TENANT_ID).status("subscriptions")
    assert "quota" in status["error"] and "403" in status["error"]
    assert any("quota" in r.getMessage() for r in caplog.records)
    assert len(live.ours()) == 1


async def test_a_webhook_graph_cannot_validate_is_reported_clearly(live: Live) -> None:
    unreachable = live.settings.model_copy(update={"public_url": "https://127.0.0.1:9"})
    live.runtime.settings = unreachable
    await enqueue(live.redis, [Hint(TENANT_ID, "subscriptions", "test")])
    await live.work()
    status = await TenantStore(live.redis, TENANT_ID).status("subscriptions")
    assert "MONITOR_PUBLIC_URL" in status["error"]
    assert live.ours() == []
