"""The Grafana dashboard and the Prometheus alerting rules in `deploy/` watch metrics the code exports.

After a scenario that touches every part (`Observed.scenario`), one real scrape of `/metrics` gives
the names the code exports: every name a rule, a rule test or a dashboard panel uses must be among
them, so renaming a metric fails here until `deploy/` follows. The rules are checked and
unit-tested with promtool, and every panel query is checked as PromQL by promtool too (Debian's
`prometheus` package, which `./dev test` installs)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from monitor.metrics import GAUGES, HELP
from tests.observe.conftest import METRICS_TOKEN, Observed

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
RULES = DEPLOY / "prometheus" / "monitor-alerts.yaml"
RULE_TESTS = DEPLOY / "prometheus" / "monitor-alerts.test.yaml"
DASHBOARD = DEPLOY / "grafana" / "monitor-dashboard.json"
METRIC_NAME = re.compile(r"\bmonitor_[a-z0-9_]+\b")
# What must wake someone (the list), each by the rule that watches it.
MUST_ALERT = {
    "MonitorNoLiveWorker",
    "MonitorWorkerNotConsuming",
    "MonitorSubscriptionExpiring",
    "MonitorSubscriptionRenewalFailing",
    "MonitorJupiterOneLag",
    "MonitorSinkStuck",
    "MonitorGraphThrottled",
}


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail("promtool is missing: run ./dev test (it installs Debian's prometheus package)")
    return found


def run_promtool(*args: str, cwd: Path | None = None) -> str:
    done = subprocess.run([promtool(), *args], capture_output=True, text=True, cwd=cwd, timeout=120, check=False)
    assert done.returncode == 0, f"promtool {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(RULES.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def panel_queries() -> dict[str, str]:
    """Every PromQL query of the dashboard (panel targets and template variables), by where it is."""
    board = dashboard()
    queries = {
        f"panel {panel['title']!r} {target['refId']}": target["expr"]
        for panel in board["panels"]
        for target in panel.get("targets", [])
    }
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            queries[f"variable {variable['name']}"] = variable["definition"]
    return queries


def metric_uses() -> dict[str, set[str]]:
    """Metric name -> where `deploy/` uses it (rules, rule tests, dashboard)."""
    uses: dict[str, set[str]] = {}
    texts = {f"rule {rule['alert']}": rule["expr"] for rule in rules()}
    texts |= panel_queries()
    texts["rule tests"] = RULE_TESTS.read_text()
    for where, text in texts.items():
        for name in METRIC_NAME.findall(text):
            uses.setdefault(name, set()).add(where)
    return uses


def exported_names(scrape: str) -> set[str]:
    names = set()
    for line in scrape.splitlines():
        if line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


async def test_every_metric_deploy_uses_is_exported_by_a_real_scrape(observed: Observed) -> None:
    await observed.scenario()
    async with (
        observed.client() as http,
        http.get(f"{observed.url}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}) as response,
    ):
        assert response.status == 200
        exported = exported_names(await response.text())
    uses = metric_uses()
    missing = {name: sorted(where) for name, where in uses.items() if name not in exported}
    assert not missing, f"deploy/ uses metrics /metrics does not export: {missing}"
    # The registry in monitor/metrics.py declares every exported name (HELP, and TYPE for gauges).
    assert exported <= HELP.keys(), f"exported without HELP: {sorted(exported - HELP.keys())}"
    assert HELP.keys() >= GAUGES
    # Something to check against: the rules and the panels use more than a handful of metrics.
    assert len(uses) >= 15


def test_the_rules_cover_what_must_wake_someone() -> None:
    found = rules()
    assert {rule["alert"] for rule in found} >= MUST_ALERT
    for rule in found:
        assert rule["labels"]["severity"] in ("page", "ticket"), rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]
        assert rule["for"], f"{rule['alert']} would fire on a single evaluation"
    assert all(rule["labels"]["severity"] == "page" for rule in found if rule["alert"] in MUST_ALERT)


def test_promtool_checks_the_rules_and_their_unit_tests_pass() -> None:
    assert "SUCCESS" in run_promtool("check", "rules", str(RULES))
    assert "SUCCESS" in run_promtool("test", "rules", RULE_TESTS.name, cwd=RULE_TESTS.parent)
    # Every rule has a test in which it fires (and promtool compared its labels and annotations).
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    firing = {case["alertname"] for test in tests for case in test["alert_rule_test"] if case.get("exp_alerts")}
    assert firing == {rule["alert"] for rule in rules()}


def test_every_dashboard_query_is_valid_promql(tmp_path: Path) -> None:
    # promtool checks PromQL in rule files: each query becomes a recording rule ($tenant: any tenant).
    recorded = [
        {"record": f"dashboard:query_{index}", "expr": expr.replace("$tenant", ".*")}
        for index, expr in enumerate(panel_queries().values())
        if not expr.startswith("label_values(")
    ]
    path = tmp_path / "dashboard-queries.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": recorded}]}))
    assert f"SUCCESS: {len(recorded)} rules found" in run_promtool("check", "rules", str(path))


def test_the_dashboard_is_one_grafana_document() -> None:
    board = dashboard()
    panels = board["panels"]
    assert len({panel["id"] for panel in panels}) == len(panels)
    assert {variable["name"] for variable in board["templating"]["list"]} == {"datasource", "tenant"}
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        place = panel["gridPos"]
        assert place["x"] + place["w"] <= 24, panel["title"]
        taken = {(place["x"] + dx, place["y"] + dy) for dx in range(place["w"]) for dy in range(place["h"])}
        assert not taken & cells, f"{panel['title']} overlaps another panel"
        cells |= taken
        if panel["type"] != "row":
            assert panel["targets"] and panel["datasource"]["uid"] == "${datasource}", panel["title"]
