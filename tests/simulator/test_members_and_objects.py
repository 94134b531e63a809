"""What updated objects and `members@delta` carry, and `POST /directoryObjects/getByIds`.

- Updated objects: "at least the properties that have been updated, but additional properties may
  be included" (https://learn.microsoft.com/en-us/graph/delta-query-overview); every selected one by
  default, the changed ones under `Prefer: return=minimal`
  (https://learn.microsoft.com/en-us/graph/api/user-delta). `DeltaOptions.updated_properties`
  chooses among these.
- `members@delta`: "only the id property of the related resource is returned"
  (https://learn.microsoft.com/en-us/graph/api/group-delta), with its `@odata.type`.
- getByIds: https://learn.microsoft.com/en-us/graph/api/directoryobject-getbyids.
"""

from __future__ import annotations

import pytest

from monitor.simulator.graph_app import ALL_PERMISSIONS, Simulator
from monitor.simulator.tenant import SimTenant
from tests.simulator.support import CLIENT_ID, TENANT_ID, GraphClient

WHOLE = {"displayName": "Ada", "jobTitle": "Architect", "mail": "ada@contoso.com"}


@pytest.mark.parametrize(
    ("mode", "prefer", "expected", "applied"),
    [
        ("preference", False, WHOLE, False),
        ("preference", True, {"jobTitle": "Architect"}, True),
        ("changed", False, {"jobTitle": "Architect"}, False),
        ("changed", True, {"jobTitle": "Architect"}, True),
        ("all", False, WHOLE, False),
        ("all", True, WHOLE, False),
    ],
)
async def test_what_an_updated_user_carries(
    graph: GraphClient, tenant: SimTenant, mode: str, prefer: bool, expected: dict[str, str], applied: bool
) -> None:
    tenant.delta.updated_properties = mode  # type: ignore[assignment]
    ada = tenant.add_user(displayName="Ada", jobTitle="Engineer", mail="ada@contoso.com")
    new_link = (await graph.round("/v1.0/users/delta?$select=displayName,jobTitle,mail"))[1]
    tenant.update_user(ada, jobTitle="Architect")
    bob = tenant.add_user(displayName="Bob", jobTitle="Engineer")
    headers = {"Prefer": "return=minimal"} if prefer else None
    status, body, response_headers = await graph.get(new_link, headers)
    assert status == 200
    assert body["value"] == [
        {"id": ada, **expected},
        {"id": bob, "displayName": "Bob", "jobTitle": "Engineer"},  # new objects always come whole
    ]
    assert ("Preference-Applied" in response_headers) == applied


async def test_members_delta_carries_only_id_and_type(graph: GraphClient, tenant: SimTenant) -> None:
    group = tenant.add_group(displayName="Mixed")
    ada = tenant.add_user(displayName="Ada", userPrincipalName="ada@contoso.com")
    others = [
        tenant.add_directory_object("device", displayName="Kiosk", operatingSystem="Windows"),
        tenant.add_directory_object("servicePrincipal", displayName="Backup app", appId="a1"),
        tenant.add_directory_object("orgContact", displayName="Vendor", mail="v@example.com"),
    ]
    for member in (ada, *others):
        tenant.add_member(group, member)
    objects, link = await graph.round("/v1.0/groups/delta?$select=displayName,members")
    tenant.remove_member(group, others[0])
    changes, _ = await graph.round(link)
    entries = [entry for obj in objects + changes for entry in obj["members@delta"]]
    assert len(entries) == 5
    assert {frozenset(entry) for entry in entries} == {
        frozenset({"@odata.type", "id"}),
        frozenset({"@odata.type", "id", "@removed"}),
    }


async def test_get_by_ids(graph: GraphClient, tenant: SimTenant) -> None:
    device = tenant.add_directory_object("device", displayName="Kiosk", operatingSystem="Windows")
    app = tenant.add_directory_object("servicePrincipal", displayName="Backup app", appId="a1")
    ada = tenant.add_user(displayName="Ada", userPrincipalName="ada@contoso.com", jobTitle="Engineer")
    gone = tenant.add_user(displayName="Gone")
    tenant.soft_delete_user(gone)
    unknown = "00000000-0000-4000-8000-000000000000"

    status, body = await graph.post("/v1.0/directoryObjects/getByIds", {"ids": [device, app, ada, gone, unknown]})
    assert status == 200 and body["@odata.context"].endswith("/v1.0/$metadata#directoryObjects")
    found = {obj["id"]: obj for obj in body["value"]}
    assert set(found) == {device, app, ada}  # unknown and soft-deleted ids are left out
    assert found[device]["@odata.type"] == "#microsoft.graph.device"
    assert (found[device]["displayName"], found[device]["operatingSystem"]) == ("Kiosk", "Windows")
    assert found[ada]["jobTitle"] == "Engineer" and "accountEnabled" not in found[ada]  # the default subset

    status, body = await graph.post("/v1.0/directoryObjects/getByIds", {"ids": [device, app, ada], "types": ["DEVICE"]})
    assert status == 200 and [obj["id"] for obj in body["value"]] == [device]


@pytest.mark.parametrize(
    "body",
    [{}, {"ids": []}, {"ids": "x"}, {"ids": [f"id-{n}" for n in range(1001)]}, {"ids": ["x"], "types": ["planet"]}],
    ids=["no-ids", "empty", "not-a-list", "over-1000", "unknown-type"],
)
async def test_get_by_ids_refuses_a_bad_body(graph: GraphClient, body: dict[str, object]) -> None:
    status, answer = await graph.post("/v1.0/directoryObjects/getByIds", body)
    assert (status, answer["error"]["code"]) == (400, "BadRequest")


async def test_get_by_ids_needs_directory_read_all(graph: GraphClient, sim: Simulator, tenant: SimTenant) -> None:
    sim.grant(TENANT_ID, CLIENT_ID, ALL_PERMISSIONS - {"Directory.Read.All"})
    await graph.login()
    device = tenant.add_directory_object("device", displayName="Kiosk")
    status, body = await graph.post("/v1.0/directoryObjects/getByIds", {"ids": [device]})
    assert (status, body["error"]["code"]) == (403, "Authorization_RequestDenied")
