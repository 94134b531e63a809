"""`monitor demo` runs on the embedded engine and shows changes flowing end to end."""

from __future__ import annotations

import io
import re

from monitor.demo import run_demo


async def test_the_demo_shows_notifications_turning_into_change_records() -> None:
    out = io.StringIO()
    assert await run_demo(duration=4, interval=0.5, users=15, jsonl=None, out=out) == 0
    text = out.getvalue()
    assert "State lives in memory" in text
    assert "First round" in text and "users     full" in text
    assert "Subscribed to Graph change notifications for /groups, /users" in text
    flowed = [int(n) for n in re.findall(r"(\d+) change record\(s\), \d+ ms after the change", text)]
    assert flowed and all(n >= 1 for n in flowed), "every change in the tenant came out as records"
    assert re.search(r"JupiterOne graph: [1-9][\d,]* entities", text)
