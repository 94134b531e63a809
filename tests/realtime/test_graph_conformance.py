"""Every Graph request the product makes, checked against Microsoft's published metadata.

One test drives the product through everything it asks of Graph: tenant onboarding (token, the
organization, one probe per permission), the account, the directory (initial and incremental delta
rounds, with members), the sign-in sweep, the Intune sweep, and subscriptions (create, list, renew,
reauthorize, delete). The simulator logs each request, `$batch` inner requests one by one; each is then
checked, independently of the simulator's own refusals, against the metadata of the version it calls
(`monitor/simulator/graph_metadata.json`): its path, and every property its `$select`, `$expand`,
`$filter` and body name. A request added later (a new source, a new lookup) is checked the same way.
"""

from __future__ import annotations

import re
from collections import Counter
from datetime import timedelta

from monitor.graph.subscriptions import SubscriptionManager
from monitor.simulator import seed
from monitor.simulator.faults import RequestRecord
from monitor.simulator.graph_metadata import check_request, split_path
from monitor.simulator.intune_seed import seed_intune
from monitor.sources.audits import read_audits
from monitor.sync import SourceFailed, sync_tenant
from monitor.tenants import onboard
from tests.conftest import TENANT_ID

from .conftest import Live

_ID = re.compile(r"^[0-9a-fA-F-]{36}$|^[0-9a-fA-F]{8}-.*_.*$")


def template(path: str) -> str:
    """`/v1.0/groups/<guid>/members` -> `/v1.0/groups/{id}/members`."""
    return "/".join("{id}" if _ID.match(part) else part for part in path.split("/"))


def distinct_requests(records: list[RequestRecord]) -> dict[tuple[str, str, str], int]:
    """(method, path template, sorted $select) -> how many times; Graph requests only."""
    found: Counter[tuple[str, str, str]] = Counter()
    for record in records:
        if split_path(record.path) is None or record.path.endswith("/$batch"):
            continue
        select = ",".join(sorted(record.query.get("$select", "").split(","))) if "$select" in record.query else ""
        found[(record.method, template(record.path), select)] += 1
    return dict(found)


def problems_of(records: list[RequestRecord]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for record in records:
        if split_path(record.path) is None:
            continue
        problems = check_request(record.method, record.path, record.query, record.body)
        if problems:
            found[f"{record.method} {template(record.path)} {record.query}"] = [p.message for p in problems]
    return found


async def drive_the_product(live: Live) -> list[SourceFailed]:
    """Everything the product asks of Graph, once each, against a tenant with data of every kind; the
    sources that failed (the requests are checked first: they say why)."""
    tenant = live.tenant
    seed(tenant, users=30, groups=4, memberships=60, other_members=3)
    for user in list(tenant.users)[:5]:
        tenant.set_sign_in(user)
    seed_intune(live.sim, TENANT_ID, devices=20, detected_titles=5, page_size=10)
    await onboard(live.runtime, live.settings.tenants[0])  # token, /organization, the probes
    _, failures = await sync_tenant(live.runtime, live.settings.tenants[0], ("account", "users", "groups", "signins"))
    _, more = await sync_tenant(live.runtime, live.settings.tenants[0], ("intune",))
    failures += more
    estate = live.sim.intune[TENANT_ID]
    estate.rename_device(next(iter(estate.devices)), "Renamed laptop")
    _, more = await sync_tenant(live.runtime, live.settings.tenants[0], ("intune_live",))  # devices, audit events
    failures += more
    context = live.runtime.context(live.settings.tenants[0])
    await read_audits(context, floor=0.0, overlap=60.0, keep=3600.0)  # who made a membership change
    await live.subscribe()  # list, create
    group = next(iter(tenant.groups))
    tenant.add_member(group, tenant.add_user(displayName="Late Joiner", userPrincipalName="late@contoso.example"))
    await live.work()  # notified: incremental delta rounds from the saved deltaLinks
    [users] = [s for s in live.ours() if s.resource == "/users"]
    live.sim.send_lifecycle(users.id, "reauthorizationRequired")
    await live.work()  # reauthorize: answered by a renew (PATCH)
    live.runtime.settings = live.settings.model_copy(update={"subscription_renew_before": 30 * 86400.0})
    live.sim.clock.advance(timedelta(minutes=11).total_seconds())
    await live.subscribe()  # renew every subscription
    manager = SubscriptionManager(
        live.runtime.graph, live.runtime.store(TENANT_ID), live.public_url, renew_before=30 * 86400.0
    )
    await manager.delete_all()  # delete (what `monitor tenants remove` does)
    return failures


async def test_every_graph_request_conforms_to_the_published_metadata(live: Live) -> None:
    failures = await drive_the_product(live)
    records = list(live.sim.requests)
    assert problems_of(records) == {}
    made = distinct_requests(records)
    kinds = {(method, path) for method, path, _ in made}
    for expected in [
        ("GET", "/v1.0/organization"),
        ("GET", "/v1.0/users/delta"),
        ("GET", "/v1.0/groups/delta"),
        ("GET", "/v1.0/users"),
        ("GET", "/beta/deviceManagement/managedDevices"),
        ("GET", "/beta/deviceAppManagement/mobileApps"),
        ("POST", "/v1.0/deviceManagement/reports/retrieveDeviceAppInstallationStatusReport"),
        ("GET", "/v1.0/deviceManagement/auditEvents"),
        ("GET", "/v1.0/auditLogs/directoryAudits"),
        ("POST", "/v1.0/directoryObjects/getByIds"),
        ("GET", "/v1.0/subscriptions"),
        ("POST", "/v1.0/subscriptions"),
        ("PATCH", "/v1.0/subscriptions/{id}"),
        ("DELETE", "/v1.0/subscriptions/{id}"),
    ]:
        assert expected in kinds, (expected, sorted(kinds))
    assert failures == []
    assert live.ours() == [], "every subscription was deleted"
    refused = [r for r in records if split_path(r.path) is not None and r.status == 400]
    assert refused == []


def test_the_check_refuses_a_made_up_property_in_a_select() -> None:
    """What the test above would say if the product selected a property Graph does not have."""
    good = RequestRecord("GET", "/v1.0/users/delta", {"$select": "id,displayName"}, 200, TENANT_ID, 0.0)
    made_up = RequestRecord("GET", "/v1.0/users/delta", {"$select": "id,displayName,shoeSize"}, 200, TENANT_ID, 0.0)
    assert problems_of([good]) == {}
    assert problems_of([made_up]) == {
        "GET /v1.0/users/delta {'$select': 'id,displayName,shoeSize'}": [
            "Could not find a property named 'shoeSize' on type 'microsoft.graph.user'."
        ]
    }
