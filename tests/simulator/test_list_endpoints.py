"""List calls (the public integration's polling pattern), signInActivity rules, organization."""

from __future__ import annotations

from typing import Any

from monitor.simulator.graph_app import Simulator
from monitor.simulator.properties import DEVICE_TYPE, GROUP_TYPE, USER_TYPE
from monitor.simulator.tenant import SimTenant
from tests.simulator.support import CLIENT_ID, TENANT_ID, GraphClient

SIGN_IN_SELECT = "/v1.0/users?$select=displayName,signInActivity"


async def _all_pages(graph: GraphClient, path: str) -> tuple[list[dict[str, Any]], int]:
    objects, pages, url = [], 0, path
    while url:
        body = await graph.get_ok(url)
        objects.extend(body["value"])
        pages += 1
        url = body.get("@odata.nextLink", "")
    return objects, pages


async def test_users_list_pages_with_top_and_select(graph: GraphClient, tenant: SimTenant) -> None:
    ids = {tenant.add_user(displayName=f"U{i}") for i in range(25)}
    objects, pages = await _all_pages(graph, "/v1.0/users?$top=10&$select=displayName,jobTitle")
    assert pages == 3
    assert {obj["id"] for obj in objects} == ids
    # List calls return every selected property, null when unset (unlike delta).
    assert all(set(obj) == {"id", "displayName", "jobTitle"} and obj["jobTitle"] is None for obj in objects)


async def test_users_list_defaults_and_limits(graph: GraphClient, tenant: SimTenant) -> None:
    for i in range(120):
        tenant.add_user(displayName=f"U{i}")
    body = await graph.get_ok("/v1.0/users")
    assert len(body["value"]) == 100
    assert "@odata.nextLink" in body
    assert (await graph.get("/v1.0/users?$top=1000"))[0] == 400


async def test_sign_in_activity_needs_audit_log_permission(graph: GraphClient, sim: Simulator) -> None:
    sim.grant(TENANT_ID, CLIENT_ID, {"User.Read.All"})
    await graph.login()
    status, body, _ = await graph.get(f"{SIGN_IN_SELECT}&$top=1")
    assert status == 403
    assert body["error"]["message"] == "Calling principal does not have required MSGraph permissions AuditLog.Read.All"


async def test_sign_in_activity_needs_premium(graph: GraphClient, tenant: SimTenant) -> None:
    tenant.premium = False
    status, body, _ = await graph.get(f"{SIGN_IN_SELECT}&$top=1")
    assert status == 403
    assert body["error"]["message"] == "Neither tenant is B2C or tenant doesn't have premium license"


async def test_sign_in_activity_pages_are_at_most_120(graph: GraphClient, tenant: SimTenant) -> None:
    ada = tenant.add_user(displayName="Ada")
    tenant.add_user(displayName="Bob")
    activity = tenant.set_sign_in(ada, interactive=True, success=True)
    assert (await graph.get(f"{SIGN_IN_SELECT}&$top=999"))[0] == 400
    objects, _ = await _all_pages(graph, f"{SIGN_IN_SELECT}&$top=120")
    by_id = {obj["id"]: obj for obj in objects}
    assert by_id[ada]["signInActivity"] == activity
    assert activity["lastSignInDateTime"] == activity["lastSuccessfulSignInDateTime"]
    assert activity["lastNonInteractiveSignInDateTime"] is None


async def test_groups_and_members_lists(graph: GraphClient, tenant: SimTenant) -> None:
    ada = tenant.add_user(displayName="Ada", mail="ada@contoso.com", jobTitle="Engineer", userPrincipalName="ada@c")
    gone = tenant.add_user(displayName="Gone")
    device = tenant.add_directory_object("device", displayName="PC-1")
    parent, child = tenant.add_group(displayName="Parent"), tenant.add_group(displayName="Child")
    for member in (ada, gone, device, child):
        tenant.add_member(parent, member)
    tenant.soft_delete_user(gone)  # keeps the membership but is not listed
    groups, _ = await _all_pages(graph, "/v1.0/groups?$top=1")
    assert {group["id"] for group in groups} == {parent, child}
    members, pages = await _all_pages(graph, f"/v1.0/groups/{parent}/members?$top=2")
    assert pages == 2
    by_id = {member["id"]: member for member in members}
    assert set(by_id) == {ada, device, child}
    assert by_id[ada]["@odata.type"] == USER_TYPE
    assert (by_id[ada]["mail"], by_id[ada]["jobTitle"], by_id[ada]["userPrincipalName"]) == (
        "ada@contoso.com",
        "Engineer",
        "ada@c",
    )
    assert by_id[device] == {"@odata.type": DEVICE_TYPE, "id": device, "displayName": "PC-1"}
    assert by_id[child]["@odata.type"] == GROUP_TYPE
    assert (await graph.get("/v1.0/groups/00000000-0000-0000-0000-000000000000/members"))[0] == 404


async def test_organization(graph: GraphClient, tenant: SimTenant) -> None:
    body = await graph.get_ok("/v1.0/organization")
    (org,) = body["value"]
    assert org["id"] == TENANT_ID
    assert org["displayName"] == "Contoso"
    assert any(domain["isDefault"] for domain in org["verifiedDomains"])
    assert (await graph.get_ok(f"/v1.0/organization/{TENANT_ID}"))["id"] == TENANT_ID
    selected = await graph.get_ok("/v1.0/organization?$select=displayName")
    assert selected["value"] == [{"id": TENANT_ID, "displayName": "Contoso"}]


async def test_single_user_by_id_or_upn(graph: GraphClient, tenant: SimTenant) -> None:
    ada = tenant.add_user(displayName="Ada", userPrincipalName="ada@contoso.onmicrosoft.com")
    assert (await graph.get_ok(f"/v1.0/users/{ada}"))["displayName"] == "Ada"
    assert (await graph.get_ok("/v1.0/users/ada@contoso.onmicrosoft.com"))["id"] == ada
    status, body, _ = await graph.get("/v1.0/users/nobody")
    assert (status, body["error"]["code"]) == (404, "Request_ResourceNotFound")
