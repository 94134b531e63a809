"""Records a killed run committed but did not deliver are delivered by the next run, first."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from monitor.simulator import seed
from monitor.sinks.alerts import ALERTS_SINK
from tests.durability.conftest import Hook, Scene, fired, wait_until
from tests.sink_files import read_jsonl
from tests.test_cli import run

SECRET = "whsec-catch-up-test"


@pytest.mark.parametrize("command", ["worker", "sync"])
async def test_what_a_killed_run_committed_is_delivered_first_by_the_next(
    command: str, scene: Scene, hook: Hook
) -> None:
    """The run is killed while delivering (the alert webhook holds its request): every record and alert
    is committed, none is delivered, its hints are acknowledged. The next run, with no hint at all (a
    worker) or before its own rounds (`monitor sync`), delivers them to every sink."""
    tenant, store = scene.tenant, scene.store
    seed(tenant, users=20, groups=3, memberships=25)
    admins = tenant.add_group(
        displayName="Tier 0 Admins", isAssignableToRole=True, securityEnabled=True, mailEnabled=False
    )
    path, alerts_path, rules = (scene.tmp_path / name for name in ("changes.jsonl", "alerts.jsonl", "rules.toml"))
    destinations = f'["jsonl:{alerts_path}", "webhook:{hook.url}/alerts"]'
    rules.write_text(f'[[alert]]\nname = "tier0"\nrole_assignable = true\nsend_to = {destinations}\n')
    sinks = f"jsonl:{path},webhook:{hook.url}/records"
    env = scene.env(MONITOR_SINK=sinks, MONITOR_ALERTS_FILE=str(rules), MONITOR_WEBHOOK_SECRET=SECRET)
    ada = tenant.add_user(displayName="Ada Lovelace", userPrincipalName="ada@contoso.com", accountEnabled=True)
    code, out, err = await run("sync", env=env)  # the baseline: everything delivered
    assert code == 0, out + err
    delivered_before = await store.last_seq()

    tenant.add_member(admins, ada)  # one round's change: delivered (and held) after the groups round
    hook.hold_next = True
    killed = await scene.launch(command, env=env)
    if command == "worker":
        await scene.hint("groups")
    await asyncio.wait_for(hook.held.wait(), 60)
    await killed.kill()
    hook.release.set()
    committed = await store.last_seq()
    assert committed > delivered_before and await store.cursor(f"jsonl:{path}") == delivered_before
    assert await store.cursor(ALERTS_SINK) == delivered_before

    if command == "worker":
        successor = await scene.launch("worker", env=env)  # and no hint
        await wait_until(lambda: _everything_delivered(scene, path, hook), "the successor to catch up")
        assert await successor.terminate() == 0
    else:
        slow = scene.sim.faults.inject("GET", r"/v1.0/users/delta", kind="delay", seconds=2)
        successor = await scene.launch("sync", env=env)
        await wait_until(lambda: fired(slow), "the successor's users round")
        assert await _everything_delivered(scene, path, hook), "delivered before its own rounds"
        assert await successor.exited() == 0, successor.stdout + successor.stderr

    assert await store.last_seq() == committed  # the successor found nothing new
    await scene.assert_complete(read_jsonl(path))
    ordered = sorted({int(r["seq"]): r for r in hook.records}.items())
    await scene.assert_complete([record for _, record in ordered])  # at least once, none missing
    [alert] = [a for a in read_jsonl(alerts_path) if a["member"]["id"] == ada]
    assert alert["change"] == "member_added" and alert["group"]["id"] == admins
    assert [a["id"] for a in hook.alerts if a["member"]["id"] == ada] == [alert["id"]]


async def _everything_delivered(scene: Scene, path: Path, hook: Hook) -> bool:
    last = await scene.store.last_seq()
    return await scene.delivered(f"jsonl:{path}", ALERTS_SINK) and hook.record_seqs() == set(range(1, last + 1))
