"""The subscriptions API (docs/graph.md 2) and the validation handshake (docs/graph.md 3) over HTTPS."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from dirty_equals import IsStr

from monitor.simulator import CertificateAuthority
from monitor.simulator.delivery import (
    VALIDATION_FAILED,
    VALIDATION_MISMATCH,
    VALIDATION_NOT_TEXT,
    VALIDATION_TIMED_OUT,
)
from monitor.simulator.graph_app import Simulator
from tests.simulator.subscription_support import call, iso, subscribe, subscription_body
from tests.simulator.support import CLIENT_ID, OTHER_TENANT_ID, SECRET, START, TENANT_ID, GraphClient
from tests.simulator.webhook import ValidationReply, Webhook, serve_webhook

TOKEN_PREFIX = "Validation: Testing client application reachability for subscription Request-Id: "


async def test_create_runs_the_handshake_and_returns_the_subscription(
    graph: GraphClient, sim: Simulator, webhook: Webhook
) -> None:
    created = await subscribe(graph, webhook, "/users")
    assert created == {
        "@odata.context": f"{graph.url}/v1.0/$metadata#subscriptions/$entity",
        "id": IsStr(regex=r"^[0-9a-f-]{36}$"),
        "resource": "/users",
        "applicationId": CLIENT_ID,
        "changeType": "updated,deleted",
        "clientState": "client-state-secret",
        "notificationUrl": f"{webhook.url}/notify",
        "notificationQueryOptions": None,
        "lifecycleNotificationUrl": None,
        "expirationDateTime": iso(START + timedelta(days=2)),
        "creatorId": IsStr(regex=r"^[0-9a-f-]{36}$"),
        "includeResourceData": None,
        "latestSupportedTlsVersion": "v1_2",
        "encryptionCertificate": None,
        "encryptionCertificateId": None,
        "notificationUrlAppId": None,
    }
    [validation] = webhook.validations()
    assert (validation.method, validation.path, validation.body) == ("POST", "/notify", b"")
    assert (validation.content_type, validation.charset) == ("text/plain", "utf-8")
    token = validation.query["validationToken"]
    assert token.startswith(TOKEN_PREFIX)
    # The token needs URL-encoding, so echoing the raw query string back cannot pass.
    assert "validationToken=Validation%3A%20Testing%20client" in validation.raw_query
    [kept] = sim.subscriptions.all()
    assert (kept.id, kept.client_state, kept.tenant_id) == (created["id"], "client-state-secret", TENANT_ID)
    assert sim.subscriptions.deliveries.matching(kind="validation")[0].outcome == "delivered"


@pytest.mark.parametrize("separate", [False, True])
async def test_lifecycle_url_is_validated_too(graph: GraphClient, webhook: Webhook, separate: bool) -> None:
    lifecycle = f"{webhook.url}/lifecycle" if separate else f"{webhook.url}/notify"
    created = await subscribe(graph, webhook, lifecycleNotificationUrl=lifecycle)
    assert created["lifecycleNotificationUrl"] == lifecycle
    # docs/graph.md 3.2: two requests even when both URLs are the same.
    assert [v.path for v in webhook.validations()] == ["/notify", "/lifecycle" if separate else "/notify"]
    tokens = {v.query["validationToken"] for v in webhook.validations()}
    assert len(tokens) == 2


async def test_query_parameters_of_the_notification_url_are_kept(graph: GraphClient, webhook: Webhook) -> None:
    await subscribe(graph, webhook, notificationUrl=f"{webhook.url}/notify?route=a%20b")
    [validation] = webhook.validations()
    assert validation.query["route"] == "a b"
    assert validation.query["validationToken"].startswith(TOKEN_PREFIX)


@pytest.mark.parametrize(
    ("reply", "code", "message"),
    [
        ("wrong", "ValidationError", VALIDATION_MISMATCH),
        ("encoded", "ValidationError", VALIDATION_MISMATCH),
        ("error", "ValidationError", VALIDATION_FAILED),
        ("json", "ValidationError", VALIDATION_NOT_TEXT),
        ("hang", "InvalidRequest", VALIDATION_TIMED_OUT),
    ],
)
@pytest.mark.parametrize("path", ["/notify", "/lifecycle"])
async def test_failed_handshake_is_a_400_and_no_subscription(
    graph: GraphClient, sim: Simulator, webhook: Webhook, reply: ValidationReply, code: str, message: str, path: str
) -> None:
    if reply == "hang":  # never answers; a handshake before it (the /notify one) has ample time
        sim.subscriptions.configure(validation_timeout=0.2 if path == "/notify" else 1.0)
    webhook.validation[path] = reply
    body = subscription_body(webhook, lifecycleNotificationUrl=f"{webhook.url}/lifecycle")
    status, error = await call(graph, "POST", "/v1.0/subscriptions", body)
    assert (status, error["error"]["code"], error["error"]["message"]) == (400, code, message)
    assert sim.subscriptions.all() == []
    assert webhook.validations()[-1].path == path
    sim.tenants[TENANT_ID].add_user(displayName="Nobody is told")
    await sim.subscriptions.drain()
    assert webhook.posts() == []


async def test_unreachable_or_untrusted_endpoint_fails_validation(graph: GraphClient, sim: Simulator) -> None:
    stranger = CertificateAuthority.create("another CA")
    async with serve_webhook(stranger.issue_server_context()) as hook:
        status, error = await call(graph, "POST", "/v1.0/subscriptions", subscription_body(hook))
        assert (status, error["error"]["message"]) == (400, VALIDATION_FAILED)
        assert hook.validations() == []  # the TLS handshake failed first
        sim.subscriptions.trust(stranger.certificate_pem)
        assert (await call(graph, "POST", "/v1.0/subscriptions", subscription_body(hook)))[0] == 201


@pytest.mark.parametrize(
    "overrides",
    [
        {"changeType": "created"},
        {"changeType": "updated,created"},
        {"changeType": ""},
        {"resource": "/users/abc/memberOf"},
        {"resource": "/users/abc/members"},
        {"resource": "/me/messages"},
        {"resource": "/users?$filter=id eq 'x'"},
        {"notificationUrl": "http://127.0.0.1/notify"},
        {"notificationUrl": "not a url"},
        {"lifecycleNotificationUrl": "http://127.0.0.1/lifecycle"},
        {"clientState": "x" * 129},
        {"includeResourceData": True},
        {"expirationDateTime": None},
        {"expirationDateTime": "tomorrow"},
        {"latestSupportedTlsVersion": "v2_0"},
    ],
)
async def test_invalid_bodies_are_refused_before_any_handshake(
    graph: GraphClient, sim: Simulator, webhook: Webhook, overrides: dict[str, Any]
) -> None:
    status, error = await call(graph, "POST", "/v1.0/subscriptions", subscription_body(webhook, **overrides))
    assert (status, error["error"]["code"]) == (400, "InvalidRequest"), error
    assert webhook.validations() == []
    assert sim.subscriptions.all() == []


@pytest.mark.parametrize("field", ["vapidPublicKey", "webPushEncryptionSecret"])
async def test_properties_v1_subscriptions_lack_are_refused(
    graph: GraphClient, sim: Simulator, webhook: Webhook, field: str
) -> None:
    """The web push properties are beta's; v1.0's subscription type has no such property."""
    status, error = await call(graph, "POST", "/v1.0/subscriptions", subscription_body(webhook, **{field: "x"}))
    assert (status, error["error"]["code"]) == (400, "BadRequest"), error
    assert f"The property '{field}' does not exist on type 'microsoft.graph.subscription'" in error["error"]["message"]
    assert webhook.validations() == [] and sim.subscriptions.all() == []


async def test_accepted_resource_paths_and_client_state_limit(graph: GraphClient, webhook: Webhook) -> None:
    paths = ["users", "/users/AbC", "/groups", "/groups/g1", "/groups/g1/members", "/groups/g1/owners"]
    for path in paths:
        await subscribe(graph, webhook, path, clientState="x" * 128)


async def test_lifetime_is_raised_to_45_minutes_and_capped_at_41760(graph: GraphClient, webhook: Webhook) -> None:
    short = await subscribe(graph, webhook, "/users/a", expirationDateTime=iso(START + timedelta(minutes=10)))
    assert short["expirationDateTime"] == iso(START + timedelta(minutes=45))
    past = await subscribe(graph, webhook, "/users/b", expirationDateTime=iso(START - timedelta(days=1)))
    assert past["expirationDateTime"] == iso(START + timedelta(minutes=45))
    longest = START + timedelta(minutes=41_760)
    assert (await subscribe(graph, webhook, "/users/c", expirationDateTime=iso(longest)))["expirationDateTime"] == (
        iso(longest)
    )
    body = subscription_body(webhook, "/users/d", expirationDateTime=iso(longest + timedelta(seconds=1)))
    status, error = await call(graph, "POST", "/v1.0/subscriptions", body)
    assert status == 400
    assert error["error"]["message"] == "Subscription expiration can only be 41760 minutes in the future."
    fraction = await subscribe(graph, webhook, "/users/e", expirationDateTime="2025-01-08T09:00:00.25+00:00")
    assert fraction["expirationDateTime"] == "2025-01-08T09:00:00.2500000Z"


async def test_each_resource_needs_its_own_read_permission(
    graph: GraphClient, sim: Simulator, webhook: Webhook
) -> None:
    sim.grant(OTHER_TENANT_ID, CLIENT_ID, ["Group.Read.All", "User.ReadWrite.All", "Directory.Read.All"])
    assert "access_token" in await graph.login(OTHER_TENANT_ID, CLIENT_ID, SECRET)
    status, error = await call(graph, "POST", "/v1.0/subscriptions", subscription_body(webhook, "/users"))
    assert (status, error["error"]["code"]) == (403, "Authorization_RequestDenied")
    assert "User.Read.All" in error["error"]["message"]
    assert webhook.validations() == []
    await subscribe(graph, webhook, "/groups")
    sim.grant(OTHER_TENANT_ID, CLIENT_ID, ["Directory.Read.All"])
    assert "access_token" in await graph.login(OTHER_TENANT_ID, CLIENT_ID, SECRET)
    assert (await call(graph, "GET", "/v1.0/subscriptions"))[0] == 403


async def test_quota_per_app_and_tenant(graph: GraphClient, sim: Simulator, webhook: Webhook) -> None:
    sim.subscriptions.configure(quota_per_app_tenant=2)
    first = await subscribe(graph, webhook, "/users/a")
    await subscribe(graph, webhook, "/groups/b")
    status, error = await call(graph, "POST", "/v1.0/subscriptions", subscription_body(webhook, "/users/c"))
    assert (status, error["error"]["code"]) == (403, "ExtensionError")
    assert error["error"]["message"] == (
        "Subscription quota exceeded: at most 2 user and group subscriptions per app and tenant."
    )
    assert len(webhook.validations()) == 2  # refused before the handshake
    assert (await call(graph, "DELETE", f"/v1.0/subscriptions/{first['id']}"))[0] == 204
    await subscribe(graph, webhook, "/users/c")


async def test_quota_per_tenant_counts_every_app(graph: GraphClient, sim: Simulator, webhook: Webhook) -> None:
    sim.subscriptions.configure(quota_per_tenant=1)
    sim.register_app("other-app", secret="other-secret")
    sim.grant(TENANT_ID, "other-app")
    await subscribe(graph, webhook, "/users")
    assert "access_token" in await graph.login(TENANT_ID, "other-app", "other-secret")
    status, error = await call(graph, "POST", "/v1.0/subscriptions", subscription_body(webhook, "/groups"))
    assert status == 403 and "per tenant" in error["error"]["message"]


async def test_same_change_type_and_resource_is_a_conflict(
    graph: GraphClient, sim: Simulator, webhook: Webhook
) -> None:
    existing = await subscribe(graph, webhook, "/users", changeType="updated,deleted")
    for change_type, resource in [("updated,deleted", "/users"), ("deleted,updated", "users/")]:
        body = subscription_body(webhook, resource, changeType=change_type)
        status, error = await call(graph, "POST", "/v1.0/subscriptions", body)
        assert status == 409
        assert (
            error["error"]["message"]
            == f"Subscription Id {existing['id']} already exists for the requested combination."
        )
    await subscribe(graph, webhook, "/users", changeType="updated")
    sim.register_app("other-app", secret="other-secret")
    sim.grant(TENANT_ID, "other-app")
    assert "access_token" in await graph.login(TENANT_ID, "other-app", "other-secret")
    await subscribe(graph, webhook, "/users", changeType="updated,deleted")  # another app's own


async def test_renew_extends_and_gives_404_once_expired(graph: GraphClient, sim: Simulator, webhook: Webhook) -> None:
    created = await subscribe(graph, webhook, expirationDateTime=iso(START + timedelta(hours=1)))
    path = f"/v1.0/subscriptions/{created['id']}"
    status, renewed = await call(graph, "PATCH", path, {"expirationDateTime": iso(START + timedelta(days=3))})
    assert (status, renewed["expirationDateTime"], renewed["clientState"]) == (
        200,
        iso(START + timedelta(days=3)),
        None,
    )
    too_long = {"expirationDateTime": iso(START + timedelta(days=30))}
    assert (await call(graph, "PATCH", path, too_long))[0] == 400
    status, error = await call(graph, "PATCH", path, {"lifecycleNotificationUrl": f"{webhook.url}/lifecycle"})
    assert status == 400 and "lifecycleNotificationUrl" in error["error"]["message"]
    assert (await call(graph, "PATCH", path, {}))[0] == 400
    sim.clock.advance(days=3)  # exactly at expiry: gone
    assert "access_token" in await graph.login()  # the old token has expired too
    status, error = await call(graph, "PATCH", path, {"expirationDateTime": iso(START + timedelta(days=5))})
    assert (status, error["error"]["code"]) == (404, "ResourceNotFound")
    assert (await call(graph, "GET", path))[0] == 404
    assert (await call(graph, "POST", f"{path}/reauthorize"))[0] == 404
    assert sim.subscriptions.all() == []


async def test_renew_gives_404_after_graph_removed_it(graph: GraphClient, sim: Simulator, webhook: Webhook) -> None:
    created = await subscribe(graph, webhook)
    sim.subscriptions.remove(created["id"])
    body = {"expirationDateTime": iso(START + timedelta(days=3))}
    assert (await call(graph, "PATCH", f"/v1.0/subscriptions/{created['id']}", body))[0] == 404
    with pytest.raises(KeyError):
        sim.subscriptions.remove(created["id"])


async def test_renew_with_a_new_notification_url_validates_it(graph: GraphClient, webhook: Webhook) -> None:
    created = await subscribe(graph, webhook)
    path = f"/v1.0/subscriptions/{created['id']}"
    webhook.validation["/moved"] = "wrong"
    status, error = await call(graph, "PATCH", path, {"notificationUrl": f"{webhook.url}/moved"})
    assert (status, error["error"]["message"]) == (400, VALIDATION_MISMATCH)
    webhook.validation["/moved"] = "echo"
    status, renewed = await call(graph, "PATCH", path, {"notificationUrl": f"{webhook.url}/moved"})
    assert (status, renewed["notificationUrl"]) == (200, f"{webhook.url}/moved")


async def test_reauthorize_and_the_ten_minute_rule(graph: GraphClient, sim: Simulator, webhook: Webhook) -> None:
    created = await subscribe(graph, webhook)
    path = f"/v1.0/subscriptions/{created['id']}"
    assert await call(graph, "POST", f"{path}/reauthorize") == (204, None)
    [kept] = sim.subscriptions.all()
    assert kept.expires_at == START + timedelta(days=2)  # reauthorizing does not renew (docs/graph.md 2.6)
    assert kept.overlapping_reauthorizations == 0
    sim.clock.advance(9 * 60)
    assert (await call(graph, "PATCH", path, {"expirationDateTime": iso(START + timedelta(days=4))}))[0] == 200
    assert kept.overlapping_reauthorizations == 1  # a PATCH 9 minutes after /reauthorize (docs/graph.md 2.5)
    sim.clock.advance(10 * 60)
    assert (await call(graph, "POST", f"{path}/reauthorize"))[0] == 204
    assert kept.overlapping_reauthorizations == 1


async def test_get_list_and_delete(graph: GraphClient, sim: Simulator, webhook: Webhook) -> None:
    sim.subscriptions.configure(list_page_size=2)
    ids = [(await subscribe(graph, webhook, resource))["id"] for resource in ("/users", "/groups", "/users/a")]
    sim.register_app("other-app", secret="other-secret")
    sim.grant(TENANT_ID, "other-app")
    other = GraphClient(graph.session, graph.url)
    assert "access_token" in await other.login(TENANT_ID, "other-app", "other-secret")
    theirs = await subscribe(other, webhook, "/groups/b")

    status, first = await call(graph, "GET", "/v1.0/subscriptions")
    assert status == 200 and len(first["value"]) == 2
    status, second = await call(graph, "GET", first["@odata.nextLink"])
    assert status == 200 and "@odata.nextLink" not in second
    listed = first["value"] + second["value"]
    assert [sub["id"] for sub in listed] == ids  # never another app's
    assert {sub["clientState"] for sub in listed} == {None}
    status, one = await call(graph, "GET", f"/v1.0/subscriptions/{ids[1]}")
    assert (status, one["resource"], one["clientState"]) == (200, "/groups", None)
    assert (await call(graph, "GET", f"/v1.0/subscriptions/{theirs['id']}"))[0] == 404

    assert await call(graph, "DELETE", f"/v1.0/subscriptions/{ids[0]}") == (204, None)
    assert (await call(graph, "GET", f"/v1.0/subscriptions/{ids[0]}"))[0] == 404
    assert (await call(graph, "DELETE", f"/v1.0/subscriptions/{ids[0]}"))[0] == 404
    assert (await call(graph, "DELETE", f"/v1.0/subscriptions/{theirs['id']}"))[0] == 404
    assert {sub.id for sub in sim.subscriptions.all()} == {ids[1], ids[2], theirs["id"]}


async def test_malformed_json_is_a_400(graph: GraphClient, webhook: Webhook) -> None:
    headers = {"Authorization": f"Bearer {graph.token}", "Content-Type": "application/json"}
    async with graph.session.post(f"{graph.url}/v1.0/subscriptions", data=b"{nope", headers=headers) as response:
        assert response.status == 400
    assert (await call(graph, "POST", "/v1.0/subscriptions", ["a list"]))[0] == 400


async def test_calls_without_a_token_are_401(graph: GraphClient) -> None:
    graph.token = ""
    assert (await call(graph, "GET", "/v1.0/subscriptions"))[0] == 401
