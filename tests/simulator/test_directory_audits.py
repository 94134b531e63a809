"""`GET /auditLogs/directoryAudits`: membership changes logged with their initiator, listable only after
the audit delay, filtered, ordered and paged as the list's page documents, refused without the
permission or the licence."""

from __future__ import annotations

from typing import Any

import pytest

from monitor.simulator.audit import ADD_MEMBER, REMOVE_MEMBER, app_initiator, user_initiator
from monitor.simulator.clock import SimClock
from monitor.simulator.graph_app import ALL_PERMISSIONS, Simulator
from monitor.simulator.tenant import SimTenant
from tests.simulator.support import CLIENT_ID, TENANT_ID, GraphClient

PATH = "/v1.0/auditLogs/directoryAudits"


def changes(tenant: SimTenant) -> tuple[str, str, dict[str, Any]]:
    group = tenant.add_group(displayName="Admins", securityEnabled=True, mailEnabled=False)
    ada = tenant.add_user(displayName="Ada", userPrincipalName="ada@contoso.com")
    grace = tenant.add_user(displayName="Grace", userPrincipalName="grace@contoso.com")
    tenant.add_member(group, ada, initiator=user_initiator(tenant.users[grace]))
    return group, ada, tenant.users[grace]


async def test_an_entry_is_listed_after_the_delay(graph: GraphClient, tenant: SimTenant, clock: SimClock) -> None:
    group, ada, grace = changes(tenant)
    assert (await graph.get_ok(PATH))["value"] == []  # written, not yet listable
    clock.advance(tenant.audit.options.delay)
    [entry] = (await graph.get_ok(PATH))["value"]
    assert entry["activityDisplayName"] == ADD_MEMBER
    assert (entry["category"], entry["loggedByService"], entry["result"]) == (
        "GroupManagement",
        "Core Directory",
        "success",
    )
    assert entry["initiatedBy"] == {
        "user": {
            "id": grace["id"],
            "displayName": "Grace",
            "userPrincipalName": "grace@contoso.com",
            "ipAddress": "203.0.113.24",
        },
        "app": None,
    }
    member, target_group = entry["targetResources"]  # the member first, as seen in practice
    assert (member["id"], member["type"], target_group["id"], target_group["type"]) == (ada, "User", group, "Group")
    assert {"displayName": "Group.ObjectID", "oldValue": None, "newValue": f'"{group}"'} in member["modifiedProperties"]


async def test_filter_order_and_paging(graph: GraphClient, tenant: SimTenant, clock: SimClock) -> None:
    group, ada, _ = changes(tenant)
    clock.advance(60)
    robot = app_initiator("11111111-2222-3333-4444-555555555555", "HR Sync", "66666666-7777-8888-9999-000000000000")
    tenant.remove_member(group, ada, initiator=robot)
    clock.advance(tenant.audit.options.delay)
    body = await graph.get_ok(f"{PATH}?$filter=activityDisplayName eq '{REMOVE_MEMBER}'")
    [removal] = body["value"]
    assert removal["initiatedBy"]["app"]["displayName"] == "HR Sync" and removal["initiatedBy"]["user"] is None
    later = removal["activityDateTime"]
    assert len((await graph.get_ok(f"{PATH}?$filter=activityDateTime ge {later}"))["value"]) == 1
    first = await graph.get_ok(f"{PATH}?$orderby=activityDateTime asc&$top=1")
    assert first["value"][0]["activityDisplayName"] == ADD_MEMBER
    second = await graph.get_ok(first["@odata.nextLink"])
    assert [e["activityDisplayName"] for e in second["value"]] == [REMOVE_MEMBER]
    assert "@odata.nextLink" not in second
    refused = [f"{PATH}?$filter=category eq 'GroupManagement'", f"{PATH}?$filter=id eq 'a' or id eq 'b'"]
    for path in refused:  # not among the filters the list documents
        assert (await graph.get(path))[0] == 400


@pytest.mark.parametrize("reading", ["both", "audit_log", "either"])
async def test_the_permission_each_reading_asks_for(
    graph: GraphClient, sim: Simulator, tenant: SimTenant, reading: str
) -> None:
    tenant.audit.options.permissions = reading  # type: ignore[assignment]
    directory = {"Directory.Read.All", "Directory.ReadWrite.All"}
    grants = {
        "AuditLog.Read.All only": ALL_PERMISSIONS - directory,
        "Directory.Read.All only": ALL_PERMISSIONS - {"AuditLog.Read.All"},
        "neither": ALL_PERMISSIONS - directory - {"AuditLog.Read.All"},
    }
    opened = {}
    for name, permissions in grants.items():
        sim.grant(TENANT_ID, CLIENT_ID, permissions)
        await graph.login()
        status, body, _ = await graph.get(PATH)
        opened[name] = status == 200
        if status != 200:
            assert (status, body["error"]["code"]) == (403, "Authorization_RequestDenied")
    expected = {
        "both": {"AuditLog.Read.All only": False, "Directory.Read.All only": False, "neither": False},
        "audit_log": {"AuditLog.Read.All only": True, "Directory.Read.All only": False, "neither": False},
        "either": {"AuditLog.Read.All only": True, "Directory.Read.All only": True, "neither": False},
    }
    assert opened == expected[reading]


async def test_a_tenant_without_premium_is_refused_when_the_reading_says_so(
    graph: GraphClient, tenant: SimTenant
) -> None:
    tenant.premium = False
    status, body, _ = await graph.get(PATH)
    assert (status, body["error"]["code"]) == (403, "Authentication_RequestFromNonPremiumTenantOrB2CTenant")
    tenant.audit.options.requires_premium = False
    assert (await graph.get(PATH))[0] == 200
