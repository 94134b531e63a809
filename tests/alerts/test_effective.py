"""Effective membership through nested groups, end to end: the simulated tenant nests groups, `monitor
sync` runs (which delivers), and the webhook receiver gets "U is now an effective member of A through
B" alerts, judged from the mirror with no Graph call."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from monitor.app import Runtime
from monitor.effective import Moment, effective_path, reach
from monitor.simulator import SimTenant, Simulator
from monitor.sinks.effective import EFFECTIVE_CURSOR
from monitor.status import render_tenant, tenant_status
from monitor.sync import sync_tenant
from tests.alerts.conftest import MakeRuntime, Receiver
from tests.conftest import TENANT_ID


async def sync(runtime: Runtime) -> None:
    _, failures = await sync_tenant(runtime, runtime.settings.tenants[0])
    assert not failures, failures


def group(tenant: SimTenant, name: str, *, privileged: bool = False) -> str:
    return tenant.add_group(displayName=name, securityEnabled=True, mailEnabled=False, isAssignableToRole=privileged)


def user(tenant: SimTenant, name: str) -> str:
    return tenant.add_user(displayName=name, userPrincipalName=f"{name.lower()}@contoso.com", accountEnabled=True)


def nested_member(tenant: SimTenant, name: str) -> tuple[str, str, str]:
    """Admins <- Ops <- `name`: (Admins, Ops, the user)."""
    a, b = group(tenant, "Admins"), group(tenant, "Ops")
    tenant.add_member(a, b)
    member = user(tenant, name)
    tenant.add_member(b, member)
    return a, b, member


def rule(receiver: Receiver, groups: list[str], **fields: Any) -> dict[str, Any]:
    return {"name": "nested", "groups": groups, "effective": True, "send_to": [f"webhook:{receiver.url}"], **fields}


def effective(receiver: Receiver) -> list[dict[str, Any]]:
    return [a for a in receiver.accepted if a["change"].startswith("effective_")]


def summary(alert: dict[str, Any]) -> tuple[str, str, str, list[str]]:
    return (alert["change"], alert["group"]["name"], alert["member"]["name"], [g["name"] for g in alert["through"]])


async def test_chains_of_one_two_and_three_levels(
    make_runtime: MakeRuntime, tenant: SimTenant, receiver: Receiver
) -> None:
    """A watched; B in A, C in B, D in C. Ada joins B (one level), Grace joins C (two), Alan joins D
    (three): each is now an effective member of A, through the chain down to their group."""
    a, b, c, d = (group(tenant, name) for name in ("Admins", "Ops", "Ops EMEA", "Ops Berlin"))
    tenant.add_member(a, b)
    tenant.add_member(b, c)
    tenant.add_member(c, d)
    ada, grace, alan = user(tenant, "Ada"), user(tenant, "Grace"), user(tenant, "Alan")
    runtime = await make_runtime([rule(receiver, [a])])
    await sync(runtime)  # the baseline: no alerts for what exists
    assert receiver.accepted == []

    tenant.add_member(b, ada)
    tenant.add_member(c, grace)
    tenant.add_member(d, alan)
    await sync(runtime)
    assert sorted(summary(alert) for alert in effective(receiver)) == [
        ("effective_member_added", "Admins", "Ada", ["Ops"]),
        ("effective_member_added", "Admins", "Alan", ["Ops", "Ops EMEA", "Ops Berlin"]),
        ("effective_member_added", "Admins", "Grace", ["Ops", "Ops EMEA"]),
    ]
    [alan_alert] = [a for a in effective(receiver) if a["member"]["id"] == alan]
    assert alan_alert["member"] == {"id": alan, "kind": "user", "name": "Alan", "userPrincipalName": "alan@contoso.com"}
    assert alan_alert["group"] == {"id": a, "name": "Admins", "roleAssignable": False}
    assert [g["id"] for g in alan_alert["through"]] == [b, c, d]

    receiver.deliveries.clear()
    tenant.remove_member(c, d)  # Alan's chain breaks above his group: he loses A, keeps D
    await sync(runtime)
    assert [summary(alert) for alert in effective(receiver)] == [
        ("effective_member_removed", "Admins", "Alan", ["Ops", "Ops EMEA", "Ops Berlin"])
    ]


async def test_a_second_path_keeps_the_membership(
    make_runtime: MakeRuntime, tenant: SimTenant, receiver: Receiver
) -> None:
    a, b, c = group(tenant, "Admins"), group(tenant, "Ops"), group(tenant, "Security")
    tenant.add_member(a, b)
    tenant.add_member(a, c)
    ada = user(tenant, "Ada")
    tenant.add_member(b, ada)
    tenant.add_member(c, ada)
    runtime = await make_runtime([rule(receiver, [a])])
    await sync(runtime)

    tenant.remove_member(b, ada)  # still in A through Security
    await sync(runtime)
    assert effective(receiver) == []

    tenant.remove_member(c, ada)  # the last path
    await sync(runtime)
    assert [summary(alert) for alert in effective(receiver)] == [
        ("effective_member_removed", "Admins", "Ada", ["Security"])
    ]


async def test_a_direct_membership_is_left_to_the_plain_alert(
    make_runtime: MakeRuntime, tenant: SimTenant, receiver: Receiver
) -> None:
    """Joining A directly is a `member_added`; the nested path that remains after leaving A directly
    keeps the effective membership, so neither raises an effective alert."""
    a, _, ada = nested_member(tenant, "Ada")
    runtime = await make_runtime([rule(receiver, [a])])
    await sync(runtime)
    grace = user(tenant, "Grace")
    await sync(runtime)
    tenant.add_member(a, grace)
    tenant.add_member(a, ada)
    await sync(runtime)
    tenant.remove_member(a, ada)
    await sync(runtime)
    plain = [(x["change"], x["member"]["name"]) for x in receiver.accepted]
    assert plain == [("member_added", "Grace"), ("member_added", "Ada"), ("member_removed", "Ada")]


async def test_a_cycle_is_harmless(make_runtime: MakeRuntime, tenant: SimTenant, receiver: Receiver) -> None:
    """A in B and B in A: everyone in either is an effective member of both; walks end."""
    a, b = group(tenant, "Admins"), group(tenant, "Ops")
    tenant.add_member(a, b)
    tenant.add_member(b, a)
    runtime = await make_runtime([rule(receiver, [a, b], include_nested=False)])
    await sync(runtime)
    ada = user(tenant, "Ada")
    tenant.add_member(b, ada)
    await sync(runtime)
    assert sorted(summary(alert) for alert in effective(receiver)) == [
        ("effective_member_added", "Admins", "Ada", ["Ops"])
    ]
    receiver.deliveries.clear()
    tenant.remove_member(a, b)  # the cycle opens; Ada stays in B, and so leaves A
    await sync(runtime)
    assert [summary(alert) for alert in effective(receiver)] == [("effective_member_removed", "Admins", "Ada", ["Ops"])]


async def test_a_large_group_nested_into_a_watched_one_folds(
    make_runtime: MakeRuntime, tenant: SimTenant, receiver: Receiver
) -> None:
    a, big, inner = group(tenant, "Admins"), group(tenant, "All Staff"), group(tenant, "Contractors")
    people = [user(tenant, f"Person{n:02d}") for n in range(30)]
    for person in people[:25]:
        tenant.add_member(big, person)
    tenant.add_member(big, inner)
    for person in people[20:]:
        tenant.add_member(inner, person)  # five of them in both
    runtime = await make_runtime([rule(receiver, [a], effective_fold_threshold=10)])
    await sync(runtime)

    tenant.add_member(a, big)
    await sync(runtime)
    plain = [x for x in receiver.accepted if x["change"] == "member_added"]
    assert [x["member"]["name"] for x in plain] == ["All Staff"]
    [folded] = effective(receiver)
    assert folded["change"] == "effective_members_added"
    assert folded["count"] == 30  # each person once, whichever path
    assert len(folded["sample"]) == 10
    assert {m["id"] for m in folded["sample"]} <= set(people)
    assert all(m["through"][0]["name"] == "All Staff" for m in folded["sample"])
    assert folded["seq"] == plain[0]["seq"] == folded["firstSeq"]

    receiver.deliveries.clear()
    tenant.remove_member(a, big)
    await sync(runtime)
    [folded] = effective(receiver)
    assert (folded["change"], folded["count"]) == ("effective_members_removed", 30)


async def test_a_soft_deleted_member_loses_its_effective_membership(
    make_runtime: MakeRuntime, tenant: SimTenant, receiver: Receiver
) -> None:
    a, _, mallory = nested_member(tenant, "Mallory")
    runtime = await make_runtime([rule(receiver, [a])])
    await sync(runtime)
    tenant.soft_delete_user(mallory)
    await sync(runtime)
    tenant.restore_user(mallory)
    await sync(runtime)
    assert [(x["change"], x["member"]["name"], x.get("reason")) for x in effective(receiver)] == [
        ("effective_member_removed", "Mallory", "member_deleted"),
        ("effective_member_added", "Mallory", "member_restored"),
    ]


async def test_the_index_holds_only_nesting_and_follows_the_log(
    make_runtime: MakeRuntime, tenant: SimTenant, receiver: Receiver, sim: Simulator
) -> None:
    a, b, c = group(tenant, "Admins"), group(tenant, "Ops"), group(tenant, "Ops EMEA")
    tenant.add_member(a, b)
    for n in range(5):
        tenant.add_member(a, user(tenant, f"Direct{n}"))
    runtime = await make_runtime([rule(receiver, [a])])
    await sync(runtime)
    store = runtime.store(TENANT_ID)
    raw: dict[Any, Any] = await store.redis.hgetall(store.keys.nesting)
    index = {k.decode(): v.decode() for k, v in raw.items()}
    assert index == {a: f'{{"p":[],"c":["{b}"]}}', b: f'{{"p":["{a}"],"c":[]}}'}
    tenant.add_member(b, c)
    await sync(runtime)
    assert set((await store.redis.hgetall(store.keys.nesting)).keys()) == {a.encode(), b.encode(), c.encode()}
    assert await store.cursor(EFFECTIVE_CURSOR) == await store.last_seq()


def test_walks_find_the_shortest_chain_and_stop_on_cycles() -> None:
    children = {"A": frozenset({"B", "C"}), "B": frozenset({"D"}), "C": frozenset({"A"}), "D": frozenset({"B"})}
    came_from = reach(children, "A")
    assert set(came_from) == {"A", "B", "C", "D"}
    moment = Moment(children, pairs={("D", "u"): True, ("C", "v"): True})
    assert effective_path(came_from, "u", moment.has) == ["B", "D"]
    assert effective_path(came_from, "v", moment.has) == ["C"]
    assert effective_path(came_from, "w", moment.has) is None


async def test_a_plain_and_an_effective_alert_of_one_record_both_reach_a_file(
    make_runtime: MakeRuntime, tenant: SimTenant, tmp_path: Path
) -> None:
    """Ops (with Ada) joins Admins: one record, two alerts with its seq; the JSONL destination keeps
    both (it drops redeliveries by alert id, not by seq)."""
    a, b = group(tenant, "Admins"), group(tenant, "Ops")
    tenant.add_member(b, user(tenant, "Ada"))
    path = tmp_path / "alerts.jsonl"
    runtime = await make_runtime([{"name": "nested", "groups": [a], "effective": True, "send_to": [f"jsonl:{path}"]}])
    await sync(runtime)
    tenant.add_member(a, b)
    await sync(runtime)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(x["change"], x["member"]["name"]) for x in lines] == [
        ("member_added", "Ops"),
        ("effective_member_added", "Ada"),
    ]
    assert lines[0]["seq"] == lines[1]["seq"]


async def test_status_shows_how_far_effective_membership_is(
    make_runtime: MakeRuntime, tenant: SimTenant, receiver: Receiver
) -> None:
    a = group(tenant, "Admins")
    runtime = await make_runtime([rule(receiver, [a])])
    await sync(runtime)
    shown = render_tenant(await tenant_status(runtime, runtime.settings.tenants[0]))
    assert "(effective membership: 0 behind)" in shown
