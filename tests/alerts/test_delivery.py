"""Alerts end to end: the simulated tenant changes, `monitor sync` runs (`sync_tenant`, which delivers),
and the alerts reach a signed webhook receiver, the log and a JSONL file, through the real Redis."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from monitor.alerts import alert_id
from monitor.app import Runtime
from monitor.records import ChangeRecord
from monitor.simulator import SimTenant, Simulator
from monitor.simulator.graph_app import ALL_PERMISSIONS
from monitor.sinks.alerts import ALERTS_SINK, AlertSink, run_alerts
from monitor.sinks.base import drain
from monitor.status import render_tenant, tenant_status
from monitor.sync import deliver, run_source, sync_tenant
from tests.alerts.conftest import MakeRuntime, Receiver, Sleeps
from tests.conftest import CLIENT_ID, TENANT_ID


async def sync(runtime: Runtime) -> list[ChangeRecord]:
    """One `monitor sync` of the directory; the change records it emitted."""
    store = runtime.store(TENANT_ID)
    before = await store.last_seq()
    _, failures = await sync_tenant(runtime, runtime.settings.tenants[0])
    assert not failures, failures
    return await store.read_changes(before, 1_000_000)


def memberships(records: list[ChangeRecord], group_id: str) -> list[ChangeRecord]:
    return [r for r in records if r["type"] == "azure_group_has_member" and r["key"].startswith(f"{group_id}|")]


def admins_group(tenant: SimTenant, name: str = "Privileged Role Admins") -> str:
    return tenant.add_group(displayName=name, isAssignableToRole=True, securityEnabled=True, mailEnabled=False)


def webhook_rule(receiver: Receiver, **fields: Any) -> dict[str, Any]:
    return {"name": "privileged", "role_assignable": True, "send_to": [f"webhook:{receiver.url}"], **fields}


async def test_member_added_to_a_role_assignable_group(
    make_runtime: MakeRuntime, tenant: SimTenant, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    admins = admins_group(tenant)
    sales = tenant.add_group(displayName="Sales", securityEnabled=True, mailEnabled=False)
    ada = tenant.add_user(displayName="Ada Lovelace", userPrincipalName="ada@contoso.com", accountEnabled=True)
    runtime = await make_runtime([webhook_rule(receiver, send_to=["log", f"webhook:{receiver.url}"])])
    await sync(runtime)  # the baseline
    tenant.add_member(admins, ada)
    tenant.add_member(sales, ada)
    with caplog.at_level(logging.WARNING, logger="monitor.alerts"):
        records = await sync(runtime)

    [change] = memberships(records, admins)
    expected = {
        "id": alert_id(TENANT_ID, change["seq"], change["observedAt"], "privileged"),
        "change": "member_added",
        "rule": "privileged",
        "tenant": TENANT_ID,
        "group": {"id": admins, "name": "Privileged Role Admins", "roleAssignable": True},
        "member": {"id": ada, "kind": "user", "name": "Ada Lovelace", "userPrincipalName": "ada@contoso.com"},
        # Who added her comes in an update once the directory audit log has it (test_actors.py).
        "actor": None,
        "actorStatus": "pending",
        "seq": change["seq"],
        "observedAt": change["observedAt"],
    }
    assert [d.signed for d in receiver.deliveries] == [True]
    assert receiver.accepted == [expected]
    assert receiver.deliveries[0].headers["Content-Type"] == "application/json"
    logged = [r for r in caplog.records if r.name == "monitor.alerts"]
    assert [(r.levelno, json.loads(r.getMessage())) for r in logged] == [(logging.WARNING, expected)]


async def test_the_first_sync_is_the_baseline(make_runtime: MakeRuntime, tenant: SimTenant, receiver: Receiver) -> None:
    """Every existing membership arrives as 'added' in the first round; none of them is news."""
    admins = admins_group(tenant)
    for n in range(3):
        tenant.add_member(admins, tenant.add_user(displayName=f"Admin {n}", userPrincipalName=f"a{n}@contoso.com"))
    runtime = await make_runtime([webhook_rule(receiver)])
    records = await sync(runtime)
    assert len(memberships(records, admins)) == 3
    assert receiver.deliveries == []
    store = runtime.store(TENANT_ID)
    assert await store.cursor(ALERTS_SINK) == await store.last_seq()


async def test_alerts_wait_for_the_first_groups_round(
    make_runtime: MakeRuntime, tenant: SimTenant, receiver: Receiver
) -> None:
    """Before the groups source has completed a round, the log holds no baseline yet: nothing runs."""
    admins = admins_group(tenant)
    tenant.add_member(admins, tenant.add_user(displayName="Early", userPrincipalName="early@contoso.com"))
    runtime = await make_runtime([webhook_rule(receiver)])
    _, failures = await sync_tenant(runtime, runtime.settings.tenants[0], ["account", "users"])
    assert not failures
    store = runtime.store(TENANT_ID)
    assert await store.last_seq() > 0
    assert not await store.redis.exists(store.keys.sink_cursor(ALERTS_SINK))
    await sync(runtime)
    assert receiver.deliveries == []
    assert await store.cursor(ALERTS_SINK) == await store.last_seq()


async def test_removals_over_the_threshold_raise_one_mass_removal(
    make_runtime: MakeRuntime, tenant: SimTenant, receiver: Receiver
) -> None:
    admins = admins_group(tenant)
    users = [tenant.add_user(displayName=f"Admin {n}", userPrincipalName=f"a{n}@contoso.com") for n in range(6)]
    for user_id in users:
        tenant.add_member(admins, user_id)
    runtime = await make_runtime([webhook_rule(receiver, mass_removal_threshold=3)])
    await sync(runtime)
    for user_id in users[:5]:
        tenant.remove_member(admins, user_id)
    records = memberships(await sync(runtime), admins)

    assert len(records) == 5
    [alert] = receiver.accepted
    assert alert["change"] == "mass_removal"
    assert (alert["count"], alert["firstSeq"], alert["seq"]) == (5, records[0]["seq"], records[-1]["seq"])
    assert alert["group"] == {"id": admins, "name": "Privileged Role Admins", "roleAssignable": True}
    removed = {user_id: f"Admin {n}" for n, user_id in enumerate(users[:5])}
    assert {m["id"]: m["name"] for m in alert["sample"]} == removed
    assert {m["kind"] for m in alert["sample"]} == {"user"}


@pytest.mark.parametrize("directory_read", [True, False], ids=["Directory.Read.All", "without-Directory.Read.All"])
async def test_a_device_member_is_named_by_getbyids(
    make_runtime: MakeRuntime, tenant: SimTenant, receiver: Receiver, sim: Simulator, directory_read: bool
) -> None:
    if not directory_read:
        sim.grant(TENANT_ID, CLIENT_ID, ALL_PERMISSIONS - {"Directory.Read.All", "Directory.ReadWrite.All"})
    admins = admins_group(tenant)
    runtime = await make_runtime([webhook_rule(receiver)])
    await sync(runtime)
    device = tenant.add_directory_object("device", displayName="LAPTOP-0042")
    tenant.add_member(admins, device)
    await sync(runtime)
    [alert] = receiver.accepted
    # members@delta carries only `@odata.type` and `id`: the name comes from getByIds, which needs
    # Directory.Read.All; without it the placeholder and the alert know the device by its id, and
    # the groups status says why.
    placeholder = (await runtime.store(TENANT_ID).mirror_dump())[("entity", device)]
    assert (alert["member"]["kind"], alert["member"]["id"]) == ("device", device)
    name = "LAPTOP-0042" if directory_read else device
    assert alert["member"]["name"] == placeholder["displayName"] == name
    status = (await runtime.store(TENANT_ID).status("groups")).get("member_names")
    assert (status == "") if directory_read else ("Directory.Read.All" in str(status))
    shown = render_tenant(await tenant_status(runtime, runtime.settings.tenants[0]))
    assert ("getByIds needs Directory.Read.All" in shown) is not directory_read


async def test_webhook_500_then_200_is_delivered_once(
    make_runtime: MakeRuntime, tenant: SimTenant, receiver: Receiver, sleeps: Sleeps
) -> None:
    admins = admins_group(tenant)
    runtime = await make_runtime([webhook_rule(receiver)])
    await sync(runtime)
    receiver.answers = [(500, {}), (503, {"Retry-After": "7"})]
    tenant.add_member(admins, tenant.add_user(displayName="Mallory", userPrincipalName="mallory@contoso.com"))
    await sync(runtime)

    assert [d.status for d in receiver.deliveries] == [500, 503, 200]
    assert all(d.signed for d in receiver.deliveries)
    assert len({d.json["id"] for d in receiver.deliveries}) == 1
    assert [a["member"]["name"] for a in receiver.accepted] == ["Mallory"]
    assert len(sleeps.delays) == 2
    assert 7 <= sleeps.delays[1] <= 7.7  # Retry-After honoured (plus at most 10% jitter)
    store = runtime.store(TENANT_ID)
    assert await store.cursor(ALERTS_SINK) == await store.last_seq()


async def test_webhook_400_is_reported_not_retried(
    make_runtime: MakeRuntime, tenant: SimTenant, receiver: Receiver, sleeps: Sleeps, caplog: pytest.LogCaptureFixture
) -> None:
    admins = admins_group(tenant)
    runtime = await make_runtime([webhook_rule(receiver)])
    await sync(runtime)
    receiver.answers = [(400, {})]
    tenant.add_member(admins, tenant.add_user(displayName="Mallory", userPrincipalName="mallory@contoso.com"))
    with caplog.at_level(logging.ERROR):
        await sync(runtime)
    await deliver(runtime, TENANT_ID)  # a later delivery does not ask again either

    assert [d.status for d in receiver.deliveries] == [400]
    assert sleeps.delays == []
    [error] = [r for r in caplog.records if r.levelno == logging.ERROR]
    alert = receiver.deliveries[0].json
    assert alert["id"] in error.getMessage() and "400" in error.getMessage()
    assert receiver.url not in error.getMessage()  # the URL may carry a credential; only its host is logged
    assert json.loads(error.getMessage().split("; the alert: ", 1)[1]) == alert


async def test_unreachable_webhook_keeps_the_batch_and_other_destinations_get_it(
    make_runtime: MakeRuntime, tenant: SimTenant, receiver: Receiver, tmp_path: Path
) -> None:
    admins = admins_group(tenant)
    path = tmp_path / "alerts.jsonl"
    runtime = await make_runtime([webhook_rule(receiver, send_to=[f"jsonl:{path}", f"webhook:{receiver.url}"])])
    await sync(runtime)
    store = runtime.store(TENANT_ID)
    start = await store.cursor(ALERTS_SINK)
    receiver.answers = [(503, {})] * 3  # the first try and both retries
    tenant.add_member(admins, tenant.add_user(displayName="Mallory", userPrincipalName="mallory@contoso.com"))
    _, failures = await sync_tenant(runtime, runtime.settings.tenants[0])

    assert [str(f) for f in failures] == [
        f"delivery: alerts: webhook {receiver.url.rsplit('/', 1)[0]} answered 503 after 2 retries"
    ]
    assert [d.status for d in receiver.deliveries] == [503, 503, 503]
    assert await store.cursor(ALERTS_SINK) == start
    [written] = [json.loads(line) for line in path.read_text().splitlines()]
    assert written["member"]["name"] == "Mallory"

    run = await run_alerts(store, runtime.settings.tenants[0], runtime.alert_dispatcher())
    assert run.error is None
    assert receiver.accepted == [written]
    assert [json.loads(line) for line in path.read_text().splitlines()] == [written]  # not written twice
    assert await store.cursor(ALERTS_SINK) == await store.last_seq()


class Crash(Exception):
    pass


class CrashAfterDelivery:
    """Delivers, then dies before `drain` saves the cursor."""

    def __init__(self, inner: AlertSink) -> None:
        self.inner = inner
        self.name = inner.name

    async def deliver(self, records: Any) -> None:
        await self.inner.deliver(records)
        raise Crash

    async def close(self) -> None:
        await self.inner.close()


async def test_a_crash_before_the_cursor_is_saved_redelivers(
    make_runtime: MakeRuntime, tenant: SimTenant, receiver: Receiver, tmp_path: Path
) -> None:
    """At least once: the same alert, with the same id, goes out again; the JSONL file keeps one."""
    admins = admins_group(tenant)
    path = tmp_path / "alerts.jsonl"
    runtime = await make_runtime([webhook_rule(receiver, send_to=[f"webhook:{receiver.url}", f"jsonl:{path}"])])
    config = runtime.settings.tenants[0]
    await sync(runtime)
    tenant.add_member(admins, tenant.add_user(displayName="Mallory", userPrincipalName="mallory@contoso.com"))
    for source in ("users", "groups"):  # the rounds alone: nothing delivered yet
        await run_source(runtime.context(config), source)
    store = runtime.store(TENANT_ID)
    start = await store.cursor(ALERTS_SINK)

    with pytest.raises(Crash):
        await drain(store, CrashAfterDelivery(AlertSink(store, config, runtime.alert_dispatcher())))
    assert await store.cursor(ALERTS_SINK) == start
    [first] = receiver.accepted

    await deliver(runtime, TENANT_ID)
    await deliver(runtime, TENANT_ID)  # caught up: nothing more
    assert receiver.accepted == [first, first]
    assert first["member"]["name"] == "Mallory"
    assert [json.loads(line) for line in path.read_text().splitlines()] == [first]
    assert await store.cursor(ALERTS_SINK) == await store.last_seq()


async def test_jsonl_destination(make_runtime: MakeRuntime, tenant: SimTenant, tmp_path: Path) -> None:
    admins = admins_group(tenant)
    path = tmp_path / "out" / "alerts.jsonl"
    runtime = await make_runtime(
        [
            {"name": "admins", "groups": [admins], "events": ["added"], "send_to": [f"jsonl:{path}"]},
            {"name": "departures", "role_assignable": True, "events": ["removed"], "send_to": [f"jsonl:{path}"]},
        ]
    )
    ada = tenant.add_user(displayName="Ada Lovelace", userPrincipalName="ada@contoso.com")
    await sync(runtime)
    tenant.add_member(admins, ada)
    await sync(runtime)
    tenant.remove_member(admins, ada)
    await sync(runtime)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(a["rule"], a["change"], a["member"]["userPrincipalName"]) for a in lines] == [
        ("admins", "member_added", "ada@contoso.com"),
        ("departures", "member_removed", "ada@contoso.com"),
    ]
    assert lines[0]["seq"] < lines[1]["seq"]


async def test_tenants_without_rules_have_no_alert_cursor(runtime: Runtime, tenant: SimTenant) -> None:
    admins_group(tenant)
    _, failures = await sync_tenant(runtime, runtime.settings.tenants[0])
    assert not failures
    store = runtime.store(TENANT_ID)
    assert not await store.redis.exists(store.keys.sink_cursor(ALERTS_SINK))
    assert runtime.alerts is None


async def test_a_deleted_and_restored_member_is_alerted_with_the_reason(
    make_runtime: MakeRuntime, tenant: SimTenant, receiver: Receiver
) -> None:
    admins = admins_group(tenant)
    mallory = tenant.add_user(displayName="Mallory", userPrincipalName="mallory@contoso.com")
    tenant.add_member(admins, mallory)
    runtime = await make_runtime([webhook_rule(receiver)])
    await sync(runtime)
    tenant.soft_delete_user(mallory)  # Graph keeps the membership; it leaves the mirror with her
    await sync(runtime)
    tenant.restore_user(mallory)
    await sync(runtime)
    assert [(a["change"], a["member"]["id"], a["member"]["name"], a["reason"]) for a in receiver.accepted] == [
        ("member_removed", mallory, "Mallory", "member_deleted"),
        ("member_added", mallory, "Mallory", "member_restored"),
    ]
