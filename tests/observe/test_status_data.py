"""The figures the status page and the alerting rules share: the hint queue, recent alerts, and the
gauges derived from a tenant's status."""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis

from monitor.alerts import Alert, GroupInfo, MemberInfo
from monitor.hints import Hint, HintQueue, enqueue, queue_status
from monitor.keys import HINTS, HINTS_GROUP
from monitor.metrics import metric
from monitor.sinks.alerts import recent_alerts, remember_alerts
from monitor.status import status_gauges
from monitor.store import TenantStore
from tests.conftest import TENANT_ID


async def test_the_queue_says_what_waits_what_is_taken_and_for_how_long(redis: aioredis.Redis) -> None:
    assert await queue_status(redis, 0) == {"length": 0, "pending": 0, "oldest_age_seconds": 0.0}
    await enqueue(redis, [Hint(TENANT_ID, "users", "test"), Hint(TENANT_ID, "groups", "test")])
    # Before any worker made the consumer group, nothing can be taken.
    oldest: Any = await redis.xrange(HINTS, count=1)
    [(first_id, _)] = oldest
    added_ms = int(first_id.decode().partition("-")[0])
    assert await queue_status(redis, added_ms + 2500) == {"length": 2, "pending": 0, "oldest_age_seconds": 2.5}
    await HintQueue(redis).ensure_group()
    await redis.xreadgroup(HINTS_GROUP, "worker-1", {HINTS: ">"}, count=1)
    assert await queue_status(redis, added_ms + 61_000) == {"length": 2, "pending": 1, "oldest_age_seconds": 61.0}


def alert(seq: int, rule: str = "admins") -> Alert:
    return Alert(
        id=f"alert-{seq}",
        change="mass_removal" if seq % 2 else "member_added",
        rule=rule,
        tenant=TENANT_ID,
        group=GroupInfo("g1", "Admins", True),
        seq=seq,
        observed_at="2026-01-01T00:00:00.000Z",
        member=None if seq % 2 else MemberInfo("u1", "user", "Ada"),
        count=30,
        sample=(MemberInfo("u2", "user", "Bob"),) * 10,
        first_seq=seq - 29,
    )


async def test_recent_alerts_are_the_newest_few_and_each_is_counted(redis: aioredis.Redis) -> None:
    store = TenantStore(redis, TENANT_ID)
    await remember_alerts(store, [alert(seq) for seq in range(1, 16)])
    await remember_alerts(store, [alert(seq, "owners") for seq in range(16, 26)])
    recent = await recent_alerts(store, 100)
    assert [entry["seq"] for entry in recent] == list(range(25, 5, -1))  # 20 kept, newest first
    assert "sample" not in recent[0] and recent[0]["count"] == 30  # a mass removal, without its sample
    assert recent[1]["member"]["name"] == "Ada"
    counters = await redis.hgetall(store.keys.metrics)
    assert counters[metric("monitor_alerts_total", rule="admins").encode()] == b"15"
    assert counters[metric("monitor_alerts_total", rule="owners").encode()] == b"10"


def test_gauges_are_the_status_figures() -> None:
    status: dict[str, Any] = {
        "tenant": "t1",
        "sources": {
            "users": {"last_round_at": "2026-01-01T00:00:00Z", "last_round_age_seconds": 42, "error": ""},
            "groups": {"last_round_at": "2026-01-01T00:00:00Z", "last_round_age_seconds": 7, "error": "403"},
            "intune": {},
        },
        "sinks": {"jsonl:/x": {"cursor": 90, "behind": 10, "error": "No space left on device"}},
        "alerts": {"rules": 1, "cursor": 95, "behind": 5},
        "subscription_upkeep": {"checked_at": "2026-01-01T00:00:00Z", "error": "quota"},
        "jupiterone": {"dirty_scopes": 3, "lag_seconds": None, "last_success_at": None},
    }
    workers = [{"name": "host-1", "last_heartbeat": "2026-01-01T00:00:00Z", "age_seconds": 3}] * 2
    gauges = status_gauges(
        [status], {"hints": {"length": 4, "pending": 1, "oldest_age_seconds": 9.5}, "workers": workers}
    )
    assert gauges == {
        "monitor_hints_pending": 1.0,
        "monitor_hints_oldest_age_seconds": 9.5,
        "monitor_workers_live": 2.0,
        metric("monitor_source_last_round_age_seconds", tenant="t1", source="users"): 42.0,
        metric("monitor_source_last_round_age_seconds", tenant="t1", source="groups"): 7.0,
        metric("monitor_source_failing", tenant="t1", source="users"): 0.0,
        metric("monitor_source_failing", tenant="t1", source="groups"): 1.0,
        metric("monitor_sink_cursor", tenant="t1", sink="jsonl:/x"): 90.0,
        metric("monitor_sink_records_behind", tenant="t1", sink="jsonl:/x"): 10.0,
        metric("monitor_sink_failing", tenant="t1", sink="jsonl:/x"): 1.0,
        metric("monitor_sink_cursor", tenant="t1", sink="alerts"): 95.0,
        metric("monitor_sink_records_behind", tenant="t1", sink="alerts"): 5.0,
        metric("monitor_sink_failing", tenant="t1", sink="alerts"): 0.0,
        metric("monitor_subscription_upkeep_failed", tenant="t1"): 1.0,
        # Never confirmed: no lag and no last success, only the dirty scopes (the never-published rule).
        metric("monitor_jupiterone_dirty_scopes", tenant="t1"): 3.0,
    }
