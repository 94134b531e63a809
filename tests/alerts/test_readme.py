"""The README's "Alerts" section: its tenants file loads, and its verification snippet accepts what
monitor signs (and nothing else)."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

from monitor.settings import load_tenants_file
from monitor.sinks.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, signature

README = Path(__file__).resolve().parents[2] / "README.md"


def alerts_section() -> str:
    text = README.read_text()
    return text.split("\n## Alerts\n", 1)[1].split("\n## ", 1)[0]


def block(language: str) -> str:
    match = re.search(rf"```{language}\n(.*?)```", alerts_section(), re.DOTALL)
    assert match is not None, f"no {language} block in README's Alerts section"
    return match.group(1)


def test_the_example_rules_load(tmp_path: Path) -> None:
    path = tmp_path / "tenants.toml"
    path.write_text(block("toml"))
    [tenant] = load_tenants_file(path)
    [rule] = tenant.alerts
    assert rule.role_assignable and rule.group_name_pattern == "*admin*"
    assert rule.send_to == ("log", "jsonl:/var/lib/monitor/alerts.jsonl", "webhook:https://alerts.example.com/m365")


def test_the_verification_snippet_accepts_monitors_signature() -> None:
    namespace: dict[str, Any] = {}
    exec(block("python"), namespace)  # the receiver's code, as printed
    verify = namespace["verify"]
    body, now = b'{"id": "x"}', str(int(time.time()))
    headers = {TIMESTAMP_HEADER: now, SIGNATURE_HEADER: signature(b"s3cret", now, body)}
    assert verify(b"s3cret", headers, body)
    assert not verify(b"other", headers, body)
    assert not verify(b"s3cret", headers, body + b" ")
    stale = str(int(time.time()) - 3600)
    assert not verify(b"s3cret", {TIMESTAMP_HEADER: stale, SIGNATURE_HEADER: signature(b"s3cret", stale, body)}, body)
