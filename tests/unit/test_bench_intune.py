"""The Intune bench's per-device figure: which churned devices the change records show, and whether they
show the change itself (bench.intune.device_coverage)."""

from __future__ import annotations

from typing import Any

from bench.intune import device_coverage, record_aspects
from monitor.model.intune import AGENT_TYPE, FINDING_TYPE, agent_key
from monitor.records import ChangeRecord


def record(kind: str, type_: str, key: str, changed: list[str], *, new: bool = False, **after: Any) -> ChangeRecord:
    obj = {"_key": key, "_type": type_, **after}
    return {
        "seq": 1,
        "tenant": "t",
        "source": "intune",
        "op": "upsert",
        "kind": kind,  # type: ignore[typeddict-item]
        "type": type_,
        "key": key,
        "changed": changed,
        "before": None if new else obj,
        "after": obj,
        "observedAt": "2026-01-01T00:00:00.000Z",
    }


def test_each_record_is_traced_to_its_device_and_what_it_shows() -> None:
    renamed = record("entity", "user_endpoint", "dev-1", ["displayName", "lastSeenOn"])
    agent = record("entity", AGENT_TYPE, agent_key("dev-2"), ["lastSeenOn", "complianceState"])
    installed = record(
        "relationship", "user_endpoint_installed_detected_application", "dev-3|installed|x|a", [], new=True
    )
    finding = record("entity", FINDING_TYPE, "policy_dev-4", ["status"])
    assert "dev-1" in record_aspects(renamed)[0] and record_aspects(renamed)[1] == {"name", "sync"}
    assert "dev-2" in record_aspects(agent)[0] and record_aspects(agent)[1] == {"compliance", "sync"}
    assert "dev-3" in record_aspects(installed)[0] and record_aspects(installed)[1] == {"apps"}
    assert "dev-4" in record_aspects(finding)[0] and record_aspects(finding)[1] == {"compliance"}


def test_coverage_counts_devices_named_and_devices_whose_own_change_shows() -> None:
    churned = {
        "renamed": ["dev-1"],
        "app installed": ["dev-3", "dev-5"],
        "compliance flip": ["dev-6"],
        "retired": ["dev-9"],
    }
    records = [
        record("entity", "user_endpoint", "dev-1", ["name"]),
        record("entity", "user_endpoint", "dev-3", ["lastSeenOn"]),  # synced, its new app not read
        record("entity", AGENT_TYPE, agent_key("dev-6"), ["complianceState"]),
    ]
    coverage = device_coverage(churned, records)
    assert (coverage["renamed"].changed, coverage["renamed"].shown, coverage["renamed"].own) == (1, 1, 1)
    assert (coverage["app installed"].changed, coverage["app installed"].shown, coverage["app installed"].own) == (
        2,
        1,
        0,
    )
    assert (coverage["compliance flip"].shown, coverage["compliance flip"].own) == (1, 1)
    assert "retired" not in coverage and coverage["check-in"].changed == 0
