"""The pure alert core, one table row per rule: rules, a batch of change records, the mirror, and the
alerts expected (change, rule, group name, member id, member name, member kind)."""

from __future__ import annotations

from typing import Any

import pytest

from monitor.alert_rules import AlertRule
from monitor.alerts import (
    MASS_REMOVAL_SAMPLE,
    Alert,
    alert_id,
    batch_facts,
    evaluate,
    group_refs,
    match,
    member_kind,
    member_refs,
    membership_changes,
)
from monitor.model.groups import GROUP_FAMILY
from monitor.model.users import USER_FAMILY
from monitor.records import ChangeRecord
from tests.alerts.records import (
    ADA,
    ADMINS,
    APP,
    BOB,
    CONTACT,
    DEVICE,
    MIRROR,
    NESTED,
    OBSERVED,
    SALES,
    TENANT,
    added,
    edge_changed,
    entity_delete,
    entity_upsert,
    group,
    removed,
    user,
)

Summary = tuple[str, str, str | None, str | None, str | None, str | None]
UNKNOWN_GROUP = "0a000000-0000-4000-8000-00000000ffff"
NEW_GROUP = "0a000000-0000-4000-8000-000000000009"
CAROL = "0b000000-0000-4000-8000-000000000003"


def rule(name: str = "r", **fields: Any) -> AlertRule:
    return AlertRule(name=name, **fields)


def summary(alerts: list[Alert]) -> list[Summary]:
    return [
        (
            a.change,
            a.rule,
            a.group.name,
            a.member.id if a.member else None,
            a.member.name if a.member else None,
            a.member.kind if a.member else None,
        )
        for a in alerts
    ]


ROLE = rule(role_assignable=True)
ADA_ADDED = ("member_added", "r", "Global Admins", ADA, "Ada Lovelace", "user")

CASES = [
    # -- how a rule picks its groups --------------------------------------------------------------
    pytest.param([rule(groups=(ADMINS,))], [added(1, ADMINS, ADA)], [ADA_ADDED], id="by id"),
    pytest.param([rule(groups=(ADMINS.upper(),))], [added(1, ADMINS, ADA)], [ADA_ADDED], id="by id, any casing"),
    pytest.param([rule(groups=(SALES,))], [added(1, ADMINS, ADA)], [], id="by id, another group"),
    pytest.param([rule(group_name_pattern="*ADMIN*")], [added(1, ADMINS, ADA)], [ADA_ADDED], id="by name pattern"),
    pytest.param([rule(group_name_pattern="*admin*")], [added(1, SALES, ADA)], [], id="by name pattern, no match"),
    pytest.param([rule(group_name_pattern="Global?Admins")], [added(1, ADMINS, ADA)], [ADA_ADDED], id="shell ?"),
    pytest.param([ROLE], [added(1, ADMINS, ADA)], [ADA_ADDED], id="every role-assignable group"),
    pytest.param([ROLE], [added(1, SALES, ADA)], [], id="not role-assignable"),
    pytest.param(
        [rule(groups=(UNKNOWN_GROUP,))],
        [added(1, UNKNOWN_GROUP, ADA)],
        [("member_added", "r", None, ADA, "Ada Lovelace", "user")],
        id="a group nobody knows matches by id only, unnamed",
    ),
    pytest.param([rule(group_name_pattern="*")], [added(1, UNKNOWN_GROUP, ADA)], [], id="unknown group, pattern"),
    pytest.param(
        [rule("a", groups=(ADMINS,)), rule("b", role_assignable=True)],
        [added(1, ADMINS, ADA)],
        [ADA_ADDED[:1] + ("a",) + ADA_ADDED[2:], ADA_ADDED[:1] + ("b",) + ADA_ADDED[2:]],
        id="two rules, two alerts",
    ),
    # -- events ---------------------------------------------------------------------------------
    pytest.param(
        [ROLE],
        [removed(1, ADMINS, BOB)],
        [("member_removed", "r", "Global Admins", BOB, "Bob Builder", "user")],
        id="removal",
    ),
    pytest.param([rule(role_assignable=True, events=("removed",))], [added(1, ADMINS, ADA)], [], id="only removals"),
    pytest.param([rule(role_assignable=True, events=("added",))], [removed(1, ADMINS, ADA)], [], id="only additions"),
    pytest.param([ROLE], [edge_changed(1, ADMINS, ADA)], [], id="a property change of the edge is no alert"),
    pytest.param([ROLE], [entity_upsert(1, user(ADA, "Ada L.", "ada@contoso.com"))], [], id="not a membership"),
    # -- nested groups and placeholder members -----------------------------------------------------
    pytest.param(
        [ROLE],
        [added(1, ADMINS, NESTED, "group")],
        [("member_added", "r", "Global Admins", NESTED, "Helpdesk Operators", "group")],
        id="nested group included",
    ),
    pytest.param(
        [rule(role_assignable=True, include_nested=False)], [added(1, ADMINS, NESTED, "group")], [], id="nested off"
    ),
    pytest.param(
        [rule(role_assignable=True, include_nested=False)],
        [added(1, ADMINS, ADA)],
        [ADA_ADDED],
        id="nested off still sees users",
    ),
    pytest.param(
        [ROLE],
        [
            added(1, ADMINS, DEVICE, "device"),
            added(2, ADMINS, APP, "servicePrincipal"),
            added(3, ADMINS, CONTACT, "contact"),
        ],
        [
            ("member_added", "r", "Global Admins", DEVICE, "LAPTOP-0042", "device"),
            ("member_added", "r", "Global Admins", APP, "Backup Robot", "servicePrincipal"),
            ("member_added", "r", "Global Admins", CONTACT, "Eve Vendor", "contact"),
        ],
        id="placeholder member kinds",
    ),
    # -- facts from the batch rather than the mirror ------------------------------------------------
    pytest.param(
        [rule(group_name_pattern="*admins*")],
        [entity_upsert(1, group(NEW_GROUP, "Break-glass Admins")), added(2, NEW_GROUP, ADA)],
        [("member_added", "r", "Break-glass Admins", ADA, "Ada Lovelace", "user")],
        id="group created in the batch",
    ),
    pytest.param(
        [ROLE],
        [entity_upsert(1, group(NEW_GROUP, "Tier 0", role_assignable=True)), added(2, NEW_GROUP, ADA)],
        [("member_added", "r", "Tier 0", ADA, "Ada Lovelace", "user")],
        id="role-assignable group created in the batch",
    ),
    pytest.param(
        [ROLE],
        [removed(1, ADMINS, BOB), entity_delete(2, group(ADMINS, "Global Admins", role_assignable=True))],
        [("member_removed", "r", "Global Admins", BOB, "Bob Builder", "user")],
        id="group deleted in the batch (its before)",
    ),
    pytest.param(
        [ROLE],
        [removed(1, ADMINS, CAROL), entity_delete(2, user(CAROL, "Carol Gone", "carol@contoso.com"))],
        [("member_removed", "r", "Global Admins", CAROL, "Carol Gone", "user")],
        id="member deleted in the batch (its before)",
    ),
    pytest.param(
        [ROLE],
        [entity_upsert(1, user(ADA, "Ada King", "ada@contoso.com")), added(2, ADMINS, ADA)],
        [("member_added", "r", "Global Admins", ADA, "Ada King", "user")],
        id="the batch wins over the mirror",
    ),
    pytest.param(
        [ROLE],
        [entity_upsert(1, group(SALES, "Sales", role_assignable=True)), added(2, SALES, ADA)],
        [("member_added", "r", "Sales", ADA, "Ada Lovelace", "user")],
        id="role-assignability from the batch",
    ),
    pytest.param(
        [ROLE],
        [added(1, ADMINS, CAROL)],
        [("member_added", "r", "Global Admins", CAROL, None, "user")],
        id="member nobody knows: named by id only",
    ),
]


@pytest.mark.parametrize(("rules", "records", "expected"), CASES)
def test_rules(rules: list[AlertRule], records: list[ChangeRecord], expected: list[Summary]) -> None:
    assert summary(evaluate(TENANT, rules, records, MIRROR)) == expected


@pytest.mark.parametrize(
    ("removals", "expected_changes"),
    [
        pytest.param(2, ["member_removed"] * 2, id="below the threshold"),
        pytest.param(3, ["member_removed"] * 3, id="at the threshold"),
        pytest.param(4, ["mass_removal"], id="above the threshold"),
    ],
)
def test_mass_removal_threshold(removals: int, expected_changes: list[str]) -> None:
    members = [f"0d000000-0000-4000-8000-{n:012d}" for n in range(removals)]
    records = [removed(10 + n, ADMINS, member) for n, member in enumerate(members)]
    alerts = evaluate(TENANT, [rule(role_assignable=True, mass_removal_threshold=3)], records, MIRROR)
    assert [a.change for a in alerts] == expected_changes


def test_mass_removal_names_a_sample_and_counts_all() -> None:
    members = [f"0d000000-0000-4000-8000-{n:012d}" for n in range(25)]
    mirror = {**MIRROR, **{(USER_FAMILY, m): user(m, f"User {n}", f"u{n}@contoso.com") for n, m in enumerate(members)}}
    records = [added(1, ADMINS, ADA)] + [removed(10 + n, ADMINS, m) for n, m in enumerate(members)]
    records.append(removed(40, SALES, BOB))  # another group: below the threshold on its own
    rules = [rule("admins", role_assignable=True, mass_removal_threshold=20), rule("sales", groups=(SALES,))]
    alerts = evaluate(TENANT, rules, records, mirror)
    assert [(a.change, a.rule, a.group.id) for a in alerts] == [
        ("member_added", "admins", ADMINS),
        ("mass_removal", "admins", ADMINS),
        ("member_removed", "sales", SALES),
    ]
    mass = alerts[1]
    assert (mass.count, mass.first_seq, mass.seq, mass.member) == (25, 10, 34, None)
    assert len(mass.sample) == MASS_REMOVAL_SAMPLE
    assert [(m.id, m.name, m.user_principal_name) for m in mass.sample[:2]] == [
        (members[0], "User 0", "u0@contoso.com"),
        (members[1], "User 1", "u1@contoso.com"),
    ]
    assert mass.to_json() == {
        "id": alert_id(TENANT, 34, OBSERVED, "admins"),
        "change": "mass_removal",
        "rule": "admins",
        "tenant": TENANT,
        "group": {"id": ADMINS, "name": "Global Admins", "roleAssignable": True},
        "count": 25,
        "sample": [m.to_json() for m in mass.sample],
        "firstSeq": 10,
        "seq": 34,
        "observedAt": OBSERVED,
    }


def test_mass_removal_counts_only_what_the_rule_watches() -> None:
    """Nested groups a rule ignores do not push the count over its threshold."""
    groups = [f"0e000000-0000-4000-8000-{n:012d}" for n in range(3)]
    records = [removed(1, ADMINS, BOB)] + [removed(2 + n, ADMINS, g, "group") for n, g in enumerate(groups)]
    alerts = evaluate(
        TENANT, [rule(role_assignable=True, include_nested=False, mass_removal_threshold=2)], records, MIRROR
    )
    assert summary(alerts) == [("member_removed", "r", "Global Admins", BOB, "Bob Builder", "user")]


def test_alert_json_for_one_member() -> None:
    [alert] = evaluate(
        TENANT, [rule("admins", role_assignable=True, send_to=("log",))], [added(7, ADMINS, ADA)], MIRROR
    )
    assert alert.send_to == ("log",)
    assert alert.to_json() == {
        "id": alert_id(TENANT, 7, OBSERVED, "admins"),
        "change": "member_added",
        "rule": "admins",
        "tenant": TENANT,
        "group": {"id": ADMINS, "name": "Global Admins", "roleAssignable": True},
        "member": {"id": ADA, "kind": "user", "name": "Ada Lovelace", "userPrincipalName": "ada@contoso.com"},
        "seq": 7,
        "observedAt": OBSERVED,
    }


def test_alert_ids_are_stable_and_distinct() -> None:
    first = evaluate(TENANT, [ROLE], [added(7, ADMINS, ADA)], MIRROR)
    again = evaluate(TENANT, [ROLE], [added(7, ADMINS, ADA)], MIRROR)
    assert [a.id for a in first] == [a.id for a in again]
    ids = {
        alert_id(TENANT, 7, OBSERVED, "r"),
        alert_id(TENANT, 8, OBSERVED, "r"),
        alert_id(TENANT, 7, OBSERVED, "s"),
        alert_id(SALES, 7, OBSERVED, "r"),
        # The same seq in a later log of the tenant (it started again at 1): another record.
        alert_id(TENANT, 7, "2027-02-03T04:05:06.789Z", "r"),
    }
    assert len(ids) == 5


def test_staged_lookups_are_enough() -> None:
    """The I/O edge fetches only `group_refs`, then `member_refs`: the alerts must be the same as with
    the whole mirror at hand."""
    records = [added(1, ADMINS, ADA), removed(2, SALES, BOB), added(3, ADMINS, DEVICE, "device"), added(4, NESTED, ADA)]
    rules = [rule("a", role_assignable=True), rule("b", group_name_pattern="sales")]
    changes = membership_changes(records)
    groups = {ref: MIRROR[ref] for ref in group_refs(changes)}
    members = {ref: MIRROR[ref] for ref in member_refs(match(rules, changes, groups))}
    assert (USER_FAMILY, BOB) in members and (GROUP_FAMILY, NESTED) in groups
    staged = evaluate(TENANT, rules, records, {**groups, **members})
    assert staged == evaluate(TENANT, rules, records, MIRROR)
    assert len(staged) == 3


def test_batch_facts_take_the_last_state() -> None:
    records = [
        entity_upsert(1, user(ADA, "Ada", "ada@contoso.com")),
        entity_upsert(2, user(ADA, "Ada Lovelace", "ada@contoso.com")),
        entity_delete(3, group(SALES, "Sales")),
    ]
    facts = batch_facts(records)
    assert facts[(USER_FAMILY, ADA)]["displayName"] == "Ada Lovelace"
    assert facts[(GROUP_FAMILY, SALES)]["displayName"] == "Sales"


@pytest.mark.parametrize(
    ("member_type", "kind"),
    [
        ("#microsoft.graph.user", "user"),
        ("#microsoft.graph.Group", "group"),
        ("#microsoft.graph.device", "device"),
        ("#microsoft.graph.servicePrincipal", "servicePrincipal"),
        ("#microsoft.graph.orgContact", "contact"),
        ("#microsoft.graph.application", "application"),
        (None, "unknown"),
    ],
)
def test_member_kind(member_type: str | None, kind: str) -> None:
    assert member_kind(member_type) == kind


def test_no_rules_no_alerts() -> None:
    assert evaluate(TENANT, [], [added(1, ADMINS, ADA)], MIRROR) == []


def test_a_membership_moved_with_its_member_says_why() -> None:
    """Memberships leave and come back with a deleted and restored member (monitor.sources.parking);
    the record's reason goes into the alert."""
    gone, back = removed(7, ADMINS, ADA), added(9, ADMINS, ADA)
    gone["reason"], back["reason"] = "member_deleted", "member_restored"
    alerts = evaluate(TENANT, [ROLE], [gone, back, added(10, ADMINS, BOB)], MIRROR)
    assert [(a.change, a.to_json().get("reason")) for a in alerts] == [
        ("member_removed", "member_deleted"),
        ("member_added", "member_restored"),
        ("member_added", None),
    ]


@pytest.mark.parametrize(("reasons", "expected"), [(["group_deleted"] * 3, "group_deleted"), ([None, "x", "x"], None)])
def test_a_mass_removal_has_a_reason_only_when_all_share_it(reasons: list[str | None], expected: str | None) -> None:
    records = [removed(n + 1, ADMINS, member) for n, member in enumerate((ADA, BOB, DEVICE))]
    for record, reason in zip(records, reasons, strict=True):
        if reason:
            record["reason"] = reason
    [alert] = evaluate(TENANT, [rule(role_assignable=True, mass_removal_threshold=2)], records, MIRROR)
    assert alert.change == "mass_removal" and alert.to_json().get("reason") == expected
