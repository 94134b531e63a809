"""Graph over HTTPS: delta paging and tokens, expiry and resync, errors, permissions, throttling."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from monitor.simulator.graph_app import Simulator
from monitor.simulator.tenant import SimTenant
from tests.simulator.support import CLIENT_ID, TENANT_ID, GraphClient


def _seed_users(tenant: SimTenant, count: int) -> list[str]:
    return [tenant.add_user(displayName=f"User {i}", jobTitle="Engineer") for i in range(count)]


async def test_delta_round_pages_to_a_delta_link_then_shows_only_changes(graph: GraphClient, tenant: SimTenant) -> None:
    tenant.delta.page_size = 3
    ids = _seed_users(tenant, 8)
    first = await graph.get_ok("/v1.0/users/delta?$select=displayName,jobTitle&$top=1")  # $top is ignored
    assert len(first["value"]) == 3
    assert first["@odata.nextLink"].startswith(f"{graph.url}/v1.0/users/delta?$skiptoken=")
    objects, delta_link = await graph.round(first["@odata.nextLink"])
    assert {obj["id"] for obj in first["value"] + objects} == set(ids)
    assert delta_link.startswith(f"{graph.url}/v1.0/users/delta?$deltatoken=")

    tenant.update_user(ids[0], jobTitle="Architect")
    tenant.update_user(ids[1], mobilePhone="+1 555 0100")  # not selected: not tracked
    changes, next_link = await graph.round(delta_link)
    assert changes == [{"id": ids[0], "displayName": "User 0", "jobTitle": "Architect"}]
    again, _ = await graph.round(next_link)
    assert again == []


async def test_sdk_spelling_of_delta_works(graph: GraphClient, tenant: SimTenant) -> None:
    group = tenant.add_group(displayName="G")
    objects, _ = await graph.round("/v1.0/groups/microsoft.graph.delta")
    assert [obj["id"] for obj in objects] == [group]


async def test_minimal_preference_on_a_delta_link(graph: GraphClient, tenant: SimTenant) -> None:
    ada = tenant.add_user(displayName="Ada", jobTitle="Engineer")
    _, delta_link = await graph.round("/v1.0/users/delta")
    tenant.update_user(ada, jobTitle="Architect")
    status, body, headers = await graph.get(delta_link, {"Prefer": "return=minimal"})
    assert status == 200
    assert body["value"] == [{"id": ada, "jobTitle": "Architect"}]
    assert headers["Preference-Applied"] == "return=minimal"


async def test_sync_from_now(graph: GraphClient, tenant: SimTenant) -> None:
    _seed_users(tenant, 5)
    body = await graph.get_ok("/v1.0/users/delta?$deltatoken=latest")
    assert body["value"] == [] and "@odata.deltaLink" in body
    new = tenant.add_user(displayName="New")
    objects, _ = await graph.round(body["@odata.deltaLink"])
    assert [obj["id"] for obj in objects] == [new]


async def test_large_group_spans_pages_over_http(graph: GraphClient, tenant: SimTenant) -> None:
    tenant.delta.page_member_budget = 150
    users = _seed_users(tenant, 450)
    group = tenant.add_group(displayName="Everyone")
    for user in users:
        tenant.add_member(group, user)
    body = await graph.get_ok("/v1.0/groups/delta?$select=displayName,members")
    assert [obj["id"] for obj in body["value"]] == [group]  # 100 members; the next slice is over budget
    objects, _ = await graph.round(body["@odata.nextLink"])
    members = [entry["id"] for obj in body["value"] + objects for entry in obj["members@delta"]]
    assert sorted(members) == sorted(users)


async def test_410_gone_points_at_a_fresh_initial_round(graph: GraphClient, sim: Simulator, tenant: SimTenant) -> None:
    ada = tenant.add_user(displayName="Ada", jobTitle="Engineer")
    _, delta_link = await graph.round("/v1.0/users/delta?$select=displayName")
    sim.expire_delta_tokens(TENANT_ID, "users", "410")
    status, body, headers = await graph.get(delta_link)
    assert status == 410
    location = headers["Location"]
    assert location == f"{graph.url}/v1.0/users/delta?$deltatoken=&$select=displayName"
    assert body["error"]["code"]
    objects, fresh_link = await graph.round(location)
    assert objects == [{"id": ada, "displayName": "Ada"}]  # the original $select applies again
    assert (await graph.get(fresh_link))[0] == 200  # tokens issued after the expiry work


@pytest.mark.parametrize("mode", ["syncStateNotFound", "resyncRequired"])
async def test_expired_token_modes(graph: GraphClient, sim: Simulator, tenant: SimTenant, mode: Any) -> None:
    _, delta_link = await graph.round("/v1.0/groups/delta")
    sim.expire_delta_tokens(TENANT_ID, "groups", mode)
    status, body, _ = await graph.get(delta_link)
    assert (status, body["error"]["code"]) == (400, mode)


async def test_delta_tokens_expire_after_seven_days(graph: GraphClient, sim: Simulator) -> None:
    _, delta_link = await graph.round("/v1.0/users/delta")
    sim.clock.advance(days=6)
    await graph.login()  # the access token expired meanwhile
    assert (await graph.get(delta_link))[0] == 200
    sim.clock.advance(days=1, seconds=1)
    await graph.login()
    status, body, _ = await graph.get(delta_link)
    assert (status, body["error"]["code"]) == (400, "syncStateNotFound")


async def test_unsupported_delta_query_options(graph: GraphClient) -> None:
    status, body, _ = await graph.get("/v1.0/users/delta?$select=displayName,signInActivity")
    assert status == 400
    assert body["error"]["message"] == (
        "Invalid request for delta query: for this entity set, $expand/$select is not supported for the "
        "following properties: signInActivity"
    )
    assert (await graph.get("/v1.0/users/delta?$orderby=displayName"))[0] == 400
    assert (await graph.get("/v1.0/users/delta?$select=nope"))[0] == 400
    too_many = " or ".join(f"id eq '{i}'" for i in range(51))
    assert (await graph.get(f"/v1.0/users/delta?$filter={too_many}"))[0] == 400
    assert (await graph.get("/v1.0/users/delta?$filter=displayName eq 'x'"))[0] == 400


async def test_delta_filter_by_id(graph: GraphClient, tenant: SimTenant) -> None:
    ids = _seed_users(tenant, 4)
    objects, _ = await graph.round(f"/v1.0/users/delta?$filter=id eq '{ids[1]}' or id eq '{ids[3]}'")
    assert sorted(obj["id"] for obj in objects) == sorted([ids[1], ids[3]])


async def test_unknown_page_token_is_expired(graph: GraphClient) -> None:
    status, body, _ = await graph.get("/v1.0/users/delta?$skiptoken=bm9wZQ")
    assert (status, body["error"]["code"]) == (400, "Directory_ExpiredPageToken")


async def test_error_shape_and_response_headers(graph: GraphClient) -> None:
    status, body, headers = await graph.get("/v1.0/users/delta?$orderby=x", {"client-request-id": "abc-123"})
    assert status == 400
    assert set(body["error"]) == {"code", "message", "innerError"}
    assert body["error"]["innerError"]["request-id"] == headers["request-id"]
    assert headers["client-request-id"] == "abc-123"
    _, _, ok_headers = await graph.get("/v1.0/users?$select=displayName")
    assert ok_headers["x-ms-resource-unit"] == "1"  # GET users costs 2, $select takes 1 off


async def test_authentication_errors(graph: GraphClient, sim: Simulator) -> None:
    token = graph.token
    graph.token = ""
    status, body, headers = await graph.get("/v1.0/users/delta")
    assert (status, body["error"]["code"]) == (401, "InvalidAuthenticationToken")
    assert "WWW-Authenticate" in headers
    graph.token = "garbage"
    assert (await graph.get("/v1.0/users/delta"))[0] == 401
    graph.token = token
    sim.clock.advance(seconds=3600)
    status, body, _ = await graph.get("/v1.0/users/delta")
    assert status == 401
    assert body["error"]["message"] == "Lifetime validation failed, the token is expired."


async def test_missing_permission_is_403(graph: GraphClient, sim: Simulator) -> None:
    sim.grant(TENANT_ID, CLIENT_ID, {"Organization.Read.All"})
    await graph.login()
    status, body, _ = await graph.get("/v1.0/users/delta")
    assert status == 403
    assert body["error"] == {
        "code": "Authorization_RequestDenied",
        "message": "Insufficient privileges to complete the operation.",
        "innerError": body["error"]["innerError"],
    }
    assert (await graph.get("/v1.0/groups/delta"))[0] == 403
    org = await graph.get_ok("/v1.0/organization")
    assert org["value"][0]["id"] == TENANT_ID


async def test_group_member_read_is_enough_for_groups_delta(graph: GraphClient, sim: Simulator) -> None:
    sim.grant(TENANT_ID, CLIENT_ID, {"GroupMember.Read.All"})
    await graph.login()
    assert (await graph.get("/v1.0/groups/delta"))[0] == 200
    assert (await graph.get("/v1.0/users/delta"))[0] == 403


async def test_injected_429_with_retry_after(graph: GraphClient, sim: Simulator) -> None:
    sim.faults.inject("GET", r"/v1\.0/users/delta", 429, headers={"Retry-After": "2"}, after=1)
    assert (await graph.get("/v1.0/users/delta"))[0] == 200  # `after=1` lets the first one through
    status, body, headers = await graph.get("/v1.0/users/delta")
    assert (status, headers["Retry-After"], body["error"]["code"]) == (429, "2", "TooManyRequests")
    assert (await graph.get("/v1.0/users/delta"))[0] == 200  # times=1
    assert sim.count(r"/v1\.0/users/delta", status=429) == 1


async def test_injected_disconnect_and_delay(graph: GraphClient, sim: Simulator) -> None:
    # times=2: aiohttp retries an idempotent request once when its connection drops.
    sim.faults.inject("GET", r"/v1\.0/groups/delta", kind="disconnect", times=2)
    with pytest.raises(aiohttp.ClientError):
        await graph.get("/v1.0/groups/delta")
    sim.faults.inject("GET", r"/v1\.0/groups/delta", kind="delay", seconds=0.01)
    assert (await graph.get("/v1.0/groups/delta"))[0] == 200
    statuses = [record.status for record in sim.requests if record.path == "/v1.0/groups/delta"]
    assert statuses == [None, None, 200]


async def test_resource_unit_throttling(graph: GraphClient, sim: Simulator) -> None:
    sim.throttle(TENANT_ID, ru_per_10s=3)
    for _ in range(3):
        assert (await graph.get("/v1.0/users/delta"))[0] == 200
    status, body, headers = await graph.get("/v1.0/users/delta")
    assert (status, body["error"]["code"]) == (429, "TooManyRequests")
    assert headers["x-ms-throttle-information"] == "ResourceUnitLimitExceeded"
    assert int(headers["Retry-After"]) >= 1
    assert headers["x-ms-throttle-scope"].endswith(f"/{CLIENT_ID}/{TENANT_ID}")
    sim.clock.advance(seconds=float(headers["Retry-After"]))
    assert (await graph.get("/v1.0/users/delta"))[0] == 200


async def test_request_log(graph: GraphClient, sim: Simulator) -> None:
    sim.requests.clear()
    await graph.get("/v1.0/users/delta?$select=displayName")
    (record,) = list(sim.requests)
    assert (record.method, record.path, record.status, record.tenant) == ("GET", "/v1.0/users/delta", 200, TENANT_ID)
    assert record.query == {"$select": "displayName"}
