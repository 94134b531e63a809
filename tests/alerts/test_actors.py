"""Who made a membership change, end to end: the simulated tenant logs each change in its directory
audit log a couple of minutes late, as Graph does; the alert goes out at once with `actorStatus:
pending`, and the `actors` job sends an update with the same id once the entry is there (or says the
actor is unknown after `MONITOR_ACTOR_WAIT`, or unavailable without the permission or licence)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from monitor.actors import parse_entry
from monitor.app import Runtime
from monitor.hints import enqueue
from monitor.scheduler import Scheduler
from monitor.simulator import SimTenant, Simulator
from monitor.simulator.audit import app_initiator, user_initiator
from monitor.simulator.graph_app import ALL_PERMISSIONS
from monitor.simulator.server import RunningSimulator
from monitor.sinks.actors import ActorRun, AlertUpdate, run_actors
from monitor.sinks.alerts import AlertDispatcher, append_alerts
from monitor.sinks.signing import WebhookClient
from monitor.status import render_tenant, tenant_status
from monitor.sync import sync_tenant
from monitor.worker import Worker
from tests.alerts.conftest import SECRET, Receiver, Sleeps, toml_rules
from tests.conftest import CLIENT_ID, TENANT_ID, RedisServer, simulator_settings

MakeRuntime = Callable[..., Awaitable[Runtime]]
ROBOT = app_initiator("0e1d2c3b-4a59-4687-9786-a5b4c3d2e1f0", "HR Sync", "5f4e3d2c-1b0a-4998-8877-665544332211")


@pytest.fixture
async def make_runtime(
    graph: RunningSimulator, redis_server: RedisServer, redis: Any, tmp_path: Path, sleeps: Sleeps, sim: Simulator
) -> AsyncIterator[MakeRuntime]:
    """A runtime whose clock is the simulator's, so that moving it past the audit delay or the actor
    wait moves both."""
    opened: list[Runtime] = []

    async def make(receiver: Receiver, **overrides: Any) -> Runtime:
        path = tmp_path / "alerts.toml"
        rule = {"name": "privileged", "role_assignable": True, "send_to": [f"webhook:{receiver.url}"]}
        path.write_text(toml_rules([rule]))
        settings = simulator_settings(graph, redis_server, alerts_file=str(path), webhook_secret=SECRET, **overrides)
        clock = sim.clock.now
        runtime = await Runtime.open(settings, clock=clock)
        webhooks = WebhookClient.from_settings(settings, sleep=sleeps)
        runtime.alerts = AlertDispatcher(webhooks, actor_wait=settings.actor_wait, clock=clock)
        opened.append(runtime)
        return runtime

    yield make
    for runtime in opened:
        await runtime.close()


async def sync(runtime: Runtime) -> None:
    _, failures = await sync_tenant(runtime, runtime.settings.tenants[0])
    assert not failures, failures


async def actors(runtime: Runtime) -> ActorRun:
    """The `actors` job, as a worker runs it."""
    return await run_actors(runtime.context(runtime.settings.tenants[0]), runtime.alert_dispatcher(), runtime.settings)


def setup(tenant: SimTenant) -> tuple[str, str, str]:
    admins = tenant.add_group(displayName="Global Admins", isAssignableToRole=True, securityEnabled=True)
    ada = tenant.add_user(displayName="Ada Lovelace", userPrincipalName="ada@contoso.com", accountEnabled=True)
    grace = tenant.add_user(displayName="Grace Hopper", userPrincipalName="grace@contoso.com", accountEnabled=True)
    return admins, ada, grace


@pytest.mark.parametrize("targets", ["member_first", "group_first"])
@pytest.mark.parametrize("permissions", ["both", "audit_log", "either"])
async def test_an_alert_is_followed_by_its_actor(
    make_runtime: MakeRuntime, sim: Simulator, tenant: SimTenant, receiver: Receiver, targets: str, permissions: str
) -> None:
    """Under every reading of the audit entries' target order and of the permissions the list needs
    (monitor.simulator.audit), the alert names the administrator who made the change."""
    tenant.audit.options.targets = targets  # type: ignore[assignment]
    tenant.audit.options.permissions = permissions  # type: ignore[assignment]
    admins, ada, grace = setup(tenant)
    runtime = await make_runtime(receiver)
    await sync(runtime)
    tenant.add_member(admins, ada, initiator=user_initiator(tenant.users[grace]))
    await sync(runtime)
    [alert] = receiver.accepted
    assert (alert["change"], alert["actor"], alert["actorStatus"]) == ("member_added", None, "pending")

    assert await actors(runtime) == ActorRun(waiting=1)  # the entry is not listable yet
    assert len(receiver.accepted) == 1
    sim.clock.advance(tenant.audit.options.delay)
    assert (await actors(runtime)).found == 1
    [_, update] = receiver.accepted
    entry = parse_entry(tenant.audit.entries[-1][1])
    assert entry is not None
    actor = {
        "type": "user",
        "id": grace,
        "name": "Grace Hopper",
        "userPrincipalName": "grace@contoso.com",
        "auditEntry": {"id": entry.id, "activityDateTime": update["actor"]["auditEntry"]["activityDateTime"]},
    }
    assert update == {**alert, "actor": actor, "actorStatus": "found", "update": "actor"}
    assert list(update)[-2:] == ["seq", "observedAt"]
    assert await actors(runtime) == ActorRun()  # nothing waits any more


async def test_an_application_that_removed_a_member(
    make_runtime: MakeRuntime, sim: Simulator, tenant: SimTenant, receiver: Receiver
) -> None:
    admins, ada, _ = setup(tenant)
    tenant.add_member(admins, ada)
    runtime = await make_runtime(receiver)
    await sync(runtime)
    tenant.remove_member(admins, ada, initiator=ROBOT)
    await sync(runtime)
    sim.clock.advance(tenant.audit.options.delay)
    await actors(runtime)
    [alert, update] = receiver.accepted
    assert (alert["change"], update["id"], update["actorStatus"]) == ("member_removed", alert["id"], "found")
    assert {k: v for k, v in update["actor"].items() if k != "auditEntry"} == {
        "type": "application",
        "id": ROBOT["app"]["servicePrincipalId"],
        "appId": ROBOT["app"]["appId"],
        "name": "HR Sync",
    }


async def test_the_wait_runs_out(
    make_runtime: MakeRuntime, sim: Simulator, tenant: SimTenant, receiver: Receiver
) -> None:
    """The entry arrives later than the wait (an hour against 10 minutes): the update says unknown,
    and an entry that turns up afterwards changes nothing."""
    tenant.audit.options.delay = 3600
    admins, ada, _ = setup(tenant)
    runtime = await make_runtime(receiver, actor_wait=600)
    await sync(runtime)
    tenant.add_member(admins, ada)
    await sync(runtime)
    sim.clock.advance(590)
    assert await actors(runtime) == ActorRun(waiting=1)
    sim.clock.advance(20)
    assert (await actors(runtime)).unknown == 1
    [alert, update] = receiver.accepted
    assert update == {**alert, "actor": None, "actorStatus": "unknown", "update": "actor"}
    sim.clock.advance(3600)
    await actors(runtime)
    assert len(receiver.accepted) == 2


async def test_without_the_permission_alerts_say_unavailable(
    make_runtime: MakeRuntime, sim: Simulator, tenant: SimTenant, receiver: Receiver
) -> None:
    """Neither AuditLog.Read.All nor Directory.Read.All: refused under every reading. The waiting alert
    is updated as unavailable, the next one goes out so at once, and `monitor status` says why."""
    sim.grant(
        TENANT_ID, CLIENT_ID, ALL_PERMISSIONS - {"AuditLog.Read.All", "Directory.Read.All", "Directory.ReadWrite.All"}
    )
    admins, ada, grace = setup(tenant)
    runtime = await make_runtime(receiver)
    await sync(runtime)
    tenant.add_member(admins, ada)
    await sync(runtime)
    assert (await actors(runtime)).unavailable == 1
    tenant.add_member(admins, grace)
    await sync(runtime)
    [first, update, second] = receiver.accepted
    assert (first["actorStatus"], update["actorStatus"], update["actor"]) == ("pending", "unavailable", None)
    assert (second["actor"], second["actorStatus"], "update" in second) == (None, "unavailable", False)
    assert await actors(runtime) == ActorRun()  # nothing waits; the log is not asked again within the hour
    shown = render_tenant(await tenant_status(runtime, runtime.settings.tenants[0]))
    assert "actors       UNAVAILABLE: missing permission AuditLog.Read.All" in shown


@pytest.mark.parametrize("requires_premium", [True, False], ids=["licence-required", "licence-not-required"])
async def test_without_the_licence(
    make_runtime: MakeRuntime, sim: Simulator, tenant: SimTenant, receiver: Receiver, requires_premium: bool
) -> None:
    """A tenant without Entra ID P1/P2: refused under the reading that the audit list needs the licence
    (the status names it), read as usual under the reading that it does not."""
    tenant.premium = False
    tenant.audit.options.requires_premium = requires_premium
    admins, ada, _ = setup(tenant)
    runtime = await make_runtime(receiver)
    await sync(runtime)
    tenant.add_member(admins, ada)
    await sync(runtime)
    sim.clock.advance(tenant.audit.options.delay)
    await actors(runtime)
    [_, update] = receiver.accepted
    assert update["actorStatus"] == ("unavailable" if requires_premium else "found")
    shown = render_tenant(await tenant_status(runtime, runtime.settings.tenants[0]))
    assert ("no Entra ID P1/P2 licence" in shown) is requires_premium


async def test_a_worker_runs_the_job_the_scheduler_asks_for(
    make_runtime: MakeRuntime, sim: Simulator, tenant: SimTenant, receiver: Receiver, tmp_path: Path
) -> None:
    """The scheduler's `actors` job names the tenants with alert rules; a worker answers its hint,
    and the JSONL destination holds the alert and its update, each once."""
    admins, ada, grace = setup(tenant)
    path = tmp_path / "alerts.jsonl"
    runtime = await make_runtime(receiver)
    rule = runtime.settings.tenants[0].alerts[0]
    assert rule.send_to == (f"webhook:{receiver.url}",)
    [jobs] = [hints for name, _, hints in Scheduler(runtime).jobs() if name == "actors"]
    assert [(h.tenant, h.job) for h in jobs()] == [(TENANT_ID, "actors")]
    await sync(runtime)
    tenant.add_member(admins, ada, initiator=user_initiator(tenant.users[grace]))
    await sync(runtime)
    sim.clock.advance(tenant.audit.options.delay)
    await enqueue(runtime.redis, jobs())
    stats = await Worker(runtime, burst=True, publish=False).run()
    assert stats.jobs["actors:done"] == 1
    [alert, update] = receiver.accepted
    assert (update["id"], update["actorStatus"], update["actor"]["name"]) == (alert["id"], "found", "Grace Hopper")
    for _ in range(2):  # a redelivery appends nothing new
        append_alerts(path, [AlertUpdate(alert, ()), AlertUpdate(update, ())])
    assert [json.loads(line) for line in path.read_text().splitlines()] == [alert, update]


async def test_monitor_sync_on_its_own_sends_the_update(
    make_runtime: MakeRuntime, sim: Simulator, tenant: SimTenant, receiver: Receiver
) -> None:
    """Without a worker and scheduler, the next `monitor sync` looks for the actors of waiting alerts."""
    admins, ada, grace = setup(tenant)
    runtime = await make_runtime(receiver)
    await sync(runtime)
    tenant.add_member(admins, ada, initiator=user_initiator(tenant.users[grace]))
    await sync(runtime)
    sim.clock.advance(tenant.audit.options.delay)
    await sync(runtime)
    [alert, update] = receiver.accepted
    assert (update["id"], update["actorStatus"], update["actor"]["id"]) == (alert["id"], "found", grace)
