"""A tenant's change log that starts again at seq 1 loses nothing and is never silent.

The log starts again when the tenant's Redis state is gone: the tenant removed and added back, or
Redis losing its data. The JSONL sink must write the new log after the old records (skipping only
true repeats), say so once in the log and in `monitor status`, and the webhook sink must send it
whole. First the sink on its own, then under a running `monitor worker`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from monitor.app import Runtime
from monitor.metrics import metric
from monitor.records import ChangeRecord
from monitor.simulator import SimTenant, seed
from monitor.sinks.base import LogRestart, log_restart
from monitor.sinks.jsonl import JsonlSink
from monitor.status import render_tenant, tenant_status
from monitor.sync import sync_tenant
from tests.conftest import TENANT_ID
from tests.directory_helpers import expected_mirror, replay
from tests.durability.conftest import ACCOUNT_KEY, Hook, Monitor, Scene, wait_until
from tests.sink_files import read_jsonl, read_written_lines
from tests.test_cli import run

RESTARTED = "the change log started again"


def log_of(first: int, last: int, observed_at: str, tenant: str = TENANT_ID) -> list[ChangeRecord]:
    """Records `first`..`last` of one log of `tenant`, committed at `observed_at`."""
    return [
        {
            "seq": seq,
            "tenant": tenant,
            "source": "users",
            "op": "upsert",
            "kind": "entity",
            "type": "azure_user",
            "key": f"user-{seq}",
            "changed": ["name"],
            "before": None,
            "after": {"_key": f"user-{seq}", "name": f"User {seq}"},
            "observedAt": observed_at,
        }
        for seq in range(first, last + 1)
    ]


OLD = "2026-03-01T10:00:00.000Z"
NEW = "2026-03-02T09:30:00.000Z"


async def test_a_batch_delivered_again_after_a_crash_is_written_once(tmp_path: Path) -> None:
    sink = JsonlSink(tmp_path / "out.jsonl")
    other = log_of(1, 2, OLD, tenant="other-tenant")
    assert await sink.deliver(log_of(1, 5, OLD)) is None
    await sink.deliver(other)
    await sink.close()
    # Written and fsynced, then killed before the cursor moved past 3: the batch from 4 comes again,
    # through a fresh sink that reads the file's end.
    again = JsonlSink(tmp_path / "out.jsonl")
    assert await again.deliver(log_of(4, 8, OLD)) is None
    await again.close()
    assert read_jsonl(tmp_path / "out.jsonl") == log_of(1, 5, OLD) + other + log_of(6, 8, OLD)


@pytest.mark.parametrize("new_log", [(1, 3), (1, 9)], ids=["shorter", "longer"])
async def test_a_new_log_of_the_tenant_is_written_whole_after_the_old_one(
    new_log: tuple[int, int], tmp_path: Path
) -> None:
    path = tmp_path / "out.jsonl"
    sink = JsonlSink(path)
    await sink.deliver(log_of(1, 5, OLD))
    await sink.close()

    restarted = JsonlSink(path)
    # The new log's first batch goes back to seq 1, and does not hold the file's last record (seq 5 of
    # the old log): whether it stops before seq 5 or has another record there, it is not a repeat.
    assert await restarted.deliver(log_of(*new_log, NEW)) == LogRestart(held=5)
    assert await restarted.deliver(log_of(new_log[1] + 1, new_log[1] + 2, NEW)) is None
    await restarted.close()
    assert read_jsonl(path) == log_of(1, 5, OLD) + log_of(new_log[0], new_log[1] + 2, NEW)
    # Read from the end of the file, the new log's last record is what the file holds now.
    reopened = JsonlSink(path)
    assert await reopened.deliver(log_of(new_log[1] + 2, new_log[1] + 3, NEW)) is None
    await reopened.close()
    assert read_jsonl(path)[-1] == log_of(new_log[1] + 3, new_log[1] + 3, NEW)[0]


async def test_a_restart_is_said_once_in_the_log_in_status_and_by_a_counter(
    runtime: Runtime, redis: aioredis.Redis, tenant: SimTenant, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    seed(tenant, users=6, groups=2, memberships=5)
    (config,) = runtime.settings.tenants
    path, store = tmp_path / "changes.jsonl", runtime.store(TENANT_ID)
    await sync_tenant(runtime, config)
    old = read_jsonl(path)

    await redis.flushall()  # Redis loses its data
    with caplog.at_level(logging.WARNING, logger="monitor.sinks.base"):
        _, failures = await sync_tenant(runtime, config)
        tenant.add_user(displayName="One more", userPrincipalName="more@contoso.example")
        await sync_tenant(runtime, config)
    assert not failures

    sink = f"jsonl:{path}"
    [warning] = [record.getMessage() for record in caplog.records if RESTARTED in record.getMessage()]
    assert f"sink {sink} held records up to seq {old[-1]['seq']} of an earlier log" in warning
    assert "now receives the new log from seq 1" in warning
    note = await log_restart(store, sink)
    assert note is not None and (note["held_seq"], note["new_log_from_seq"]) == (old[-1]["seq"], 1)
    counters = await redis.hgetall(store.keys.metrics)
    assert counters[metric("monitor_sink_log_restarts_total", sink=sink).encode()] == b"1"
    status = await tenant_status(runtime, config)
    assert status["sinks"][sink]["log_restart"] == note
    assert f"sink         {sink}: WARNING: {RESTARTED} (found {note['at']})" in render_tenant(status)
    assert read_jsonl(path) == old + await store.read_changes(0, 1_000_000)


# -- under a running worker --------------------------------------------------------------------------


async def delivered_whole(scene: Scene, path: Path, hook: Hook, since: int) -> bool:
    """The queue is done, the file and the webhook hold the tenant's whole current log after `since`
    records of earlier logs, and there is a log."""
    if not await scene.delivered(f"jsonl:{path}"):
        return False
    log = await scene.store.read_changes(0, 1_000_000)
    return bool(log) and read_written_lines(path)[since:] == log and hook.records[since:] == log


async def assert_new_log_after_the_old(
    scene: Scene, env: dict[str, str], path: Path, hook: Hook, old: list[Any], worker: Monitor
) -> None:
    """The file and the webhook hold the old log, untouched, then the whole new one, whose replay is
    the mirror of the directory as it is now; and the worker and `monitor status` said so."""
    new = await scene.store.read_changes(0, 1_000_000)
    assert new[0]["seq"] == 1 and new[0]["observedAt"] > old[-1]["observedAt"]
    assert read_jsonl(path) == old + new
    assert hook.records == old + new  # the webhook sink sends the new log too: receivers tell it apart
    assert replay(new) == await scene.store.mirror_dump() == expected_mirror(scene.tenant, ACCOUNT_KEY)
    assert worker.stderr.count(RESTARTED) == 1, worker.stderr
    code, out, err = await run("status", env=env)
    assert code == 0, err
    assert f"sink         jsonl:{path}: WARNING: {RESTARTED} " in out
    assert f"holds seq up to {old[-1]['seq']:,} of an earlier log, then the new log from seq 1" in out


def change_the_directory(tenant: SimTenant) -> None:
    """What happens at Microsoft while the tenant's state is gone: the new log must not carry the old
    objects along (a deleted user gets no record: the new log's replay must still be exact)."""
    users = list(tenant.users)
    tenant.hard_delete_user(users[0])
    tenant.update_user(users[1], jobTitle="Changed while away")
    tenant.add_user(displayName="Joined while away", userPrincipalName="away@contoso.example")


async def test_a_tenant_removed_and_added_back_under_a_running_worker(scene: Scene, hook: Hook) -> None:
    seed(scene.tenant, users=15, groups=3, memberships=20)
    path = scene.tmp_path / "changes.jsonl"
    env = scene.env(MONITOR_SINK=f"jsonl:{path},webhook:{hook.url}/records")
    del env["MONITOR_TENANT_ID"]  # registered at run time: `monitor tenants add`
    env["MONITOR_WEBHOOK_SECRET"] = "whsec-log-restart-test"
    worker = await scene.launch("worker", env=env)
    code, out, err = await run("tenants", "add", TENANT_ID, env=env)
    assert code == 0, out + err
    await wait_until(lambda: delivered_whole(scene, path, hook, 0), "the first sync delivered")
    old = read_jsonl(path)

    code, out, err = await run("tenants", "remove", TENANT_ID, env=env)
    assert code == 0, out + err
    change_the_directory(scene.tenant)
    code, out, err = await run("tenants", "add", TENANT_ID, env=env)
    assert code == 0, out + err
    await wait_until(lambda: delivered_whole(scene, path, hook, len(old)), "the new log delivered")

    assert await worker.terminate() == 0
    await assert_new_log_after_the_old(scene, env, path, hook, old, worker)


async def test_redis_losing_its_data_under_a_running_worker(scene: Scene, hook: Hook) -> None:
    seed(scene.tenant, users=15, groups=3, memberships=20)
    path = scene.tmp_path / "changes.jsonl"
    env = scene.env(MONITOR_SINK=f"jsonl:{path},webhook:{hook.url}/records", MONITOR_WEBHOOK_SECRET="whsec-flush")
    worker = await scene.launch("worker", env=env)
    await scene.hint("account", "users", "groups")
    await wait_until(lambda: delivered_whole(scene, path, hook, 0), "the first rounds delivered")
    old = read_jsonl(path)

    await scene.redis.flushall()  # a new, empty Redis: no log, no cursor, no queue
    change_the_directory(scene.tenant)
    await scene.hint("account", "users", "groups")
    await wait_until(lambda: delivered_whole(scene, path, hook, len(old)), "the new log delivered")

    assert await worker.terminate() == 0
    await assert_new_log_after_the_old(scene, env, path, hook, old, worker)
