"""Change notifications (docs/graph.md 4) and lifecycle notifications (docs/graph.md 5) reaching a webhook."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest

from monitor.simulator.graph_app import Simulator
from monitor.simulator.subscription_book import Subscription, parse_target
from monitor.simulator.tenant import SimTenant
from tests.simulator.subscription_support import call, iso, subscribe
from tests.simulator.support import CLIENT_ID, OTHER_TENANT_ID, SECRET, START, TENANT_ID, GraphClient
from tests.simulator.webhook import Webhook

EXPIRES = iso(START + timedelta(days=2))


def _expected(sub: dict[str, Any], change_type: str, kind: str, object_id: str) -> dict[str, Any]:
    segment, odata_type = {"user": ("Users", "#Microsoft.Graph.User"), "group": ("Groups", "#Microsoft.Graph.Group")}[
        kind
    ]
    return {
        "subscriptionId": sub["id"],
        "subscriptionExpirationDateTime": EXPIRES,
        "tenantId": TENANT_ID,
        "clientState": "client-state-secret",
        "changeType": change_type,
        "resource": f"{segment}/{object_id}",
        "resourceData": {"@odata.type": odata_type, "@odata.id": f"{segment}/{object_id}", "id": object_id},
    }


async def test_user_changes_notify_with_the_documented_shape(
    graph: GraphClient, sim: Simulator, tenant: SimTenant, webhook: Webhook
) -> None:
    sub = await subscribe(graph, webhook, "/users")
    ada = tenant.add_user(displayName="Ada")
    tenant.update_user(ada, jobTitle="CTO")
    tenant.update_user(ada, jobTitle="CTO")  # no real change: no journal entry, no notification
    tenant.soft_delete_user(ada)
    tenant.restore_user(ada)
    tenant.set_sign_in(ada)  # signInActivity is not a user change
    tenant.hard_delete_user(ada)
    await sim.subscriptions.drain()
    [post] = webhook.posts()
    assert (post.method, post.content_type, post.charset) == ("POST", "application/json", "utf-8")
    # docs/graph.md 0.2: create, update, soft delete, restore are "updated"; the hard delete is "deleted".
    assert post.json() == {"value": [_expected(sub, change, "user", ada) for change in ["updated"] * 4 + ["deleted"]]}
    [record] = sim.subscriptions.deliveries.matching(kind="notification")
    assert (record.url, record.status, record.outcome, record.items, record.attempt) == (
        f"{webhook.url}/notify",
        202,
        "delivered",
        5,
        1,
    )


async def test_group_and_membership_changes(
    graph: GraphClient, sim: Simulator, tenant: SimTenant, webhook: Webhook
) -> None:
    ada = tenant.add_user(displayName="Ada")
    team = tenant.add_group(displayName="Team")
    other = tenant.add_group(displayName="Other")
    groups = await subscribe(graph, webhook, "/groups")
    members = await subscribe(graph, webhook, f"/groups/{team}/members")
    one_user = await subscribe(graph, webhook, f"/users/{ada.upper()}", changeType="deleted")
    tenant.update_group(team, description="changed")
    tenant.add_member(team, ada)
    tenant.add_member(other, ada)
    tenant.remove_member(team, ada)
    tenant.hard_delete_user(ada)  # also leaves `other`: a membership change there
    tenant.hard_delete_group(other)
    await sim.subscriptions.drain()
    got = [(item["subscriptionId"], item["changeType"], item["resource"]) for item in webhook.items()]
    assert got == [
        (groups["id"], "updated", f"Groups/{team}"),
        (groups["id"], "updated", f"Groups/{team}"),
        (members["id"], "updated", f"Groups/{team}"),
        (groups["id"], "updated", f"Groups/{other}"),
        (groups["id"], "updated", f"Groups/{team}"),
        (members["id"], "updated", f"Groups/{team}"),
        (groups["id"], "updated", f"Groups/{other}"),
        (one_user["id"], "deleted", f"Users/{ada}"),
        (groups["id"], "deleted", f"Groups/{other}"),
    ]
    assert all("members@delta" not in item["resourceData"] for item in webhook.items())


async def test_members_delta_knob(graph: GraphClient, sim: Simulator, tenant: SimTenant, webhook: Webhook) -> None:
    sim.subscriptions.configure(members_delta=True)
    ada = tenant.add_user(displayName="Ada")
    team = tenant.add_group(displayName="Team")
    await subscribe(graph, webhook, "/groups")
    tenant.add_member(team, ada)
    tenant.remove_member(team, ada)
    tenant.update_group(team, description="no members here")
    await sim.subscriptions.drain()
    assert [item["resourceData"].get("members@delta") for item in webhook.items()] == [
        [{"@odata.type": "#microsoft.graph.user", "id": ada}],
        [{"@odata.type": "#microsoft.graph.user", "id": ada, "@removed": {"reason": "deleted"}}],
        None,
    ]


async def test_one_post_mixes_subscriptions_and_tenants(
    graph: GraphClient, sim: Simulator, tenant: SimTenant, webhook: Webhook
) -> None:
    sim.grant(OTHER_TENANT_ID, CLIENT_ID)
    users = await subscribe(graph, webhook, "/users")
    groups = await subscribe(graph, webhook, "/groups")
    other = GraphClient(graph.session, graph.url)
    assert "access_token" in await other.login(OTHER_TENANT_ID, CLIENT_ID, SECRET)
    theirs = await subscribe(other, webhook, "/users")
    tenant.add_user(displayName="Ada")
    tenant.add_group(displayName="Team")
    sim.tenants[OTHER_TENANT_ID].add_user(displayName="Bob")
    await sim.subscriptions.drain()
    [post] = webhook.posts()
    assert [(item["subscriptionId"], item["tenantId"]) for item in post.json()["value"]] == [
        (users["id"], TENANT_ID),
        (groups["id"], TENANT_ID),
        (theirs["id"], OTHER_TENANT_ID),
    ]


async def test_batches_are_cut_at_the_maximum_size(
    graph: GraphClient, sim: Simulator, tenant: SimTenant, webhook: Webhook
) -> None:
    sim.subscriptions.configure(max_batch_size=2)
    await subscribe(graph, webhook, "/users")
    ids = [tenant.add_user(displayName=f"User {i}") for i in range(5)]
    await sim.subscriptions.drain()
    assert [len(post.json()["value"]) for post in webhook.posts()] == [2, 2, 1]
    assert [item["resourceData"]["id"] for item in webhook.items()] == ids


async def test_duplicates_come_again_in_a_later_post(
    graph: GraphClient, sim: Simulator, tenant: SimTenant, webhook: Webhook
) -> None:
    sim.subscriptions.configure(duplicate_rate=1.0)
    await subscribe(graph, webhook, "/users")
    tenant.add_user(displayName="Ada")
    tenant.add_user(displayName="Bob")
    await sim.subscriptions.drain()
    first, second = webhook.posts()
    assert first.json() == second.json()
    assert len(first.json()["value"]) == 2


@pytest.mark.parametrize("shuffle", [False, True])
async def test_shuffle_reorders_items_within_a_post(
    graph: GraphClient, sim: Simulator, tenant: SimTenant, webhook: Webhook, shuffle: bool
) -> None:
    sim.subscriptions.configure(shuffle=shuffle, seed=3)
    await subscribe(graph, webhook, "/users")
    ids = [tenant.add_user(displayName=f"User {i}") for i in range(12)]
    await sim.subscriptions.drain()
    [post] = webhook.posts()
    sent = [item["resourceData"]["id"] for item in post.json()["value"]]
    assert sorted(sent) == sorted(ids)
    assert (sent != ids) is shuffle


async def test_optional_notification_ids(
    graph: GraphClient, sim: Simulator, tenant: SimTenant, webhook: Webhook
) -> None:
    await subscribe(graph, webhook, "/users")
    tenant.add_user(displayName="Ada")
    sim.subscriptions.configure(notification_ids=True)
    tenant.add_user(displayName="Bob")
    tenant.add_user(displayName="Eve")
    await sim.subscriptions.drain()
    ids = [item.get("id") for item in webhook.items()]
    assert ids[0] is None and ids[1] and ids[2] and ids[1] != ids[2]


async def test_a_500_is_retried(graph: GraphClient, sim: Simulator, tenant: SimTenant, webhook: Webhook) -> None:
    await subscribe(graph, webhook, "/users")
    webhook.script.extend([500, 503])
    tenant.add_user(displayName="Ada")
    await sim.subscriptions.drain()
    first, second, third = webhook.posts()
    assert first.body == second.body == third.body
    records = sim.subscriptions.deliveries.matching(kind="notification")
    assert [(r.attempt, r.status, r.outcome) for r in records] == [
        (1, 500, "failed"),
        (2, 503, "failed"),
        (3, 202, "delivered"),
    ]


async def test_a_slow_answer_counts_as_a_failure_and_is_retried(
    graph: GraphClient, sim: Simulator, tenant: SimTenant, webhook: Webhook
) -> None:
    await subscribe(graph, webhook, "/users")
    sim.subscriptions.configure(delivery_timeout=0.2)  # Graph's 3 seconds, shortened
    webhook.script.append(None)  # the first POST never gets an answer in time
    tenant.add_user(displayName="Ada")
    await sim.subscriptions.drain()
    first, second = sim.subscriptions.deliveries.matching(kind="notification")
    assert (first.attempt, first.status, first.outcome, first.slow) == (1, None, "timeout", True)
    assert (second.attempt, second.status, second.outcome) == (2, 202, "delivered")
    # The retry is slow too only if it took longer than the shortened limit; either way it counts.
    assert sim.subscriptions.slow_responses == {f"{webhook.url}/notify": 1 + second.slow}
    assert len(webhook.posts()) == 2  # the webhook did get the first one: a duplicate for it


async def test_delivery_gives_up_after_the_limit(
    graph: GraphClient, sim: Simulator, tenant: SimTenant, webhook: Webhook
) -> None:
    await subscribe(graph, webhook, "/users")
    sim.subscriptions.configure(give_up_after=0.0)
    webhook.script.extend([500, 500])
    tenant.add_user(displayName="Ada")
    await sim.subscriptions.drain()
    records = sim.subscriptions.deliveries.matching(kind="notification")
    assert [(r.attempt, r.outcome) for r in records] == [(1, "failed"), (1, "abandoned")]
    assert len(webhook.posts()) == 1


async def test_dropped_notifications_are_never_sent(
    graph: GraphClient, sim: Simulator, tenant: SimTenant, webhook: Webhook
) -> None:
    await subscribe(graph, webhook, "/users")
    sim.subscriptions.configure(drop_rate=1.0)
    tenant.add_user(displayName="Lost")
    await sim.subscriptions.drain()
    assert webhook.posts() == []
    assert [r.outcome for r in sim.subscriptions.deliveries.matching(kind="notification")] == ["dropped"]
    sim.subscriptions.configure(drop_rate=0.0)
    found = tenant.add_user(displayName="Found")
    await sim.subscriptions.drain()
    assert [item["resourceData"]["id"] for item in webhook.items()] == [found]


async def test_expired_subscriptions_stop_notifying(
    graph: GraphClient, sim: Simulator, tenant: SimTenant, webhook: Webhook
) -> None:
    await subscribe(graph, webhook, "/users", expirationDateTime=iso(START + timedelta(hours=1)))
    before = tenant.add_user(displayName="Before")
    await sim.subscriptions.drain()
    sim.clock.advance(3600)
    tenant.add_user(displayName="After")
    await sim.subscriptions.drain()
    assert [item["resourceData"]["id"] for item in webhook.items()] == [before]
    assert sim.subscriptions.all() == []


async def test_lifecycle_notifications(graph: GraphClient, sim: Simulator, tenant: SimTenant, webhook: Webhook) -> None:
    sub = await subscribe(graph, webhook, "/users", lifecycleNotificationUrl=f"{webhook.url}/lifecycle")
    sim.send_lifecycle(sub["id"], "reauthorizationRequired")
    sim.send_lifecycle(sub["id"], "missed")
    await sim.subscriptions.drain()
    [post] = webhook.posts("/lifecycle")
    assert post.content_type == "application/json"
    common = {
        "subscriptionId": sub["id"],
        "subscriptionExpirationDateTime": EXPIRES,
        "tenantId": TENANT_ID,
        "clientState": "client-state-secret",
    }
    assert post.json() == {
        "value": [
            {**common, "lifecycleEvent": "reauthorizationRequired"},
            {**common, "lifecycleEvent": "missed"},
        ]
    }
    [kept] = sim.subscriptions.all()
    assert kept.reauthorization_required
    assert (await call(graph, "POST", f"/v1.0/subscriptions/{sub['id']}/reauthorize"))[0] == 204
    assert not sim.subscriptions.get(sub["id"]).reauthorization_required

    sim.send_lifecycle(sub["id"], "subscriptionRemoved")
    await sim.subscriptions.drain()
    assert webhook.posts("/lifecycle")[-1].json()["value"] == [{**common, "lifecycleEvent": "subscriptionRemoved"}]
    body = {"expirationDateTime": iso(START + timedelta(days=3))}
    assert (await call(graph, "PATCH", f"/v1.0/subscriptions/{sub['id']}", body))[0] == 404
    assert webhook.posts() == []  # nothing went to the notification URL


async def test_paused_subscription_holds_notifications_until_renewed(
    graph: GraphClient, sim: Simulator, tenant: SimTenant, webhook: Webhook
) -> None:
    sub = await subscribe(graph, webhook, "/users", lifecycleNotificationUrl=f"{webhook.url}/lifecycle")
    sim.send_lifecycle(sub["id"], "reauthorizationRequired", pause=True)
    held = tenant.add_user(displayName="Held")
    await sim.subscriptions.drain()
    assert webhook.posts() == [] and len(webhook.posts("/lifecycle")) == 1
    body = {"expirationDateTime": iso(START + timedelta(days=3))}
    assert (await call(graph, "PATCH", f"/v1.0/subscriptions/{sub['id']}", body))[0] == 200
    await sim.subscriptions.drain()
    assert [item["resourceData"]["id"] for item in webhook.items()] == [held]


async def test_lifecycle_needs_a_known_event_and_a_lifecycle_url(
    graph: GraphClient, sim: Simulator, webhook: Webhook
) -> None:
    sub = await subscribe(graph, webhook, "/users")
    with pytest.raises(ValueError, match="lifecycleNotificationUrl"):
        sim.send_lifecycle(sub["id"], "reauthorizationRequired")
    with pytest.raises(ValueError, match="unknown lifecycle event"):
        sim.send_lifecycle(sub["id"], "deleted")
    with pytest.raises(KeyError):
        sim.send_lifecycle("no-such-subscription", "missed")


def test_tenant_changes_outside_the_event_loop_queue_quietly(sim: Simulator, tenant: SimTenant) -> None:
    """The journal hook never changes what a tenant mutation does, even with nowhere to send yet."""
    subscription = Subscription(
        "sub-1",
        TENANT_ID,
        CLIENT_ID,
        "/users",
        parse_target("/users"),
        "updated",
        "https://127.0.0.1:9/notify",
        None,
        None,
        START + timedelta(days=1),
    )
    sim.subscriptions.book.add(subscription)
    tenant.observers.append(sim.subscriptions.observe)
    ada = tenant.add_user(displayName="Ada")
    assert tenant.journal[-1].object_id == ada
    assert not sim.subscriptions.dispatcher.idle  # queued for when delivery starts
    with pytest.raises(RuntimeError, match="delivery is not running"):
        asyncio.run(sim.subscriptions.drain())
