"""`monitor demo` runs on the embedded engine and shows changes flowing end to end."""

from __future__ import annotations

import io
import re

import pytest

from monitor import demo
from monitor.demo import run_demo


async def test_the_demo_shows_notifications_turning_into_change_records(monkeypatch: pytest.MonkeyPatch) -> None:
    # Audit entries listable half a second after the change: the updates come within the short run.
    monkeypatch.setattr(demo, "DEMO_AUDIT_DELAY", 0.5)
    out = io.StringIO()
    assert await run_demo(duration=4, interval=0.5, users=15, jsonl=None, out=out) == 0
    text = out.getvalue()
    assert "State lives in memory" in text
    assert "First round" in text and "users     full" in text and "intune    sweep" in text
    # Between Intune sweeps, one incremental pass shows the renamed device.
    renamed = re.search(r"renames the managed device (\S+) to (\S+)", text)
    assert renamed, "the demo renames a managed device"
    old, new = renamed.groups()
    assert re.search(rf"~ entity +\w+ +{re.escape(new)} +\(deviceName: {re.escape(old)} -> {re.escape(new)}", text)
    assert re.search(r"[1-9]\d* change record\(s\) from one incremental Intune pass \(1 device", text)
    assert "Subscribed to Graph change notifications for /groups, /users" in text
    flowed = [int(n) for n in re.findall(r"(\d+) change record\(s\), \d+ ms after the change", text)]
    assert flowed and all(n >= 1 for n in flowed), "every change in the tenant came out as records"
    assert re.search(r"JupiterOne graph: [1-9][\d,]* entities", text)
    # The opening changes: someone joins a team nested in a privileged group, then the group itself.
    assert re.search(r"ALERT \[privileged groups\] effective_member_added: .+ through Helpdesk Tier 2", text)
    assert re.search(r"ALERT UPDATE \[privileged groups\] \S+: .+: made by .+ \((user|application), audit entry", text)
