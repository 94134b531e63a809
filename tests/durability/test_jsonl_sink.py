"""The JSONL sink loses no record to a full disk, a writer killed mid-write, or a path it cannot write."""

from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from monitor.app import Runtime
from monitor.metrics import metric
from monitor.simulator import seed
from monitor.status import status_gauges, tenant_status
from monitor.store import TenantStore
from tests.conftest import TENANT_ID, simulator_settings
from tests.durability.conftest import Monitor, Scene, wait_until
from tests.sink_files import read_jsonl
from tests.test_cli import run

# What is left for the sink file to grow by once the disk "fills up": less than the next batch.
ROOM = 4096


@dataclass
class Disk:
    """Where the sink writes, and how to fill that place up under a running process and free it.

    - `tmpfs`: a real filesystem of limited size (mounting one needs root, as on this project's CI
      machines); filling it means shrinking it to what it holds plus `ROOM`; the kernel then answers
      ENOSPC, after a short write, exactly as a full disk does.
    - `file-size-limit`: the same through the process's RLIMIT_FSIZE (setrlimit(2)), which anyone may
      set on their own processes, so it runs everywhere: the kernel's write path stops the file at the
      limit the same way (a short write, then an error, EFBIG instead of ENOSPC). No code of ours is
      replaced: the sink's real writes hit the limit.
    """

    kind: str
    directory: Path
    reason: str

    def fill(self, monitor: Monitor, file: Path) -> None:
        if self.kind == "tmpfs":
            used = _tmpfs_used(self.directory)
            _mount("-o", f"remount,size={used + ROOM}", "tmpfs", str(self.directory))
        else:
            resource.prlimit(monitor.pid, resource.RLIMIT_FSIZE, (file.stat().st_size + ROOM, resource.RLIM_INFINITY))

    def free(self, monitor: Monitor) -> None:
        if self.kind == "tmpfs":
            _mount("-o", "remount,size=64m", "tmpfs", str(self.directory))
        else:
            resource.prlimit(monitor.pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))


def _mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True)


def _tmpfs_used(directory: Path) -> int:
    stats = os.statvfs(directory)
    return (stats.f_blocks - stats.f_bfree) * stats.f_frsize


@pytest.fixture(params=["tmpfs", "file-size-limit"])
def disk(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Disk]:
    directory = tmp_path / "disk"
    directory.mkdir()
    if request.param == "file-size-limit":
        yield Disk("file-size-limit", directory, "File too large")
        return
    mount = shutil.which("mount")
    command = [mount or "mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(directory)]
    if mount is None or subprocess.run(command, check=False, capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (that needs root); the file-size-limit variant runs instead")
    try:
        yield Disk("tmpfs", directory, "No space left on device")
    finally:
        subprocess.run(["umount", "-l", str(directory)], check=False)


async def _worker_that_wrote_the_users(scene: Scene, path: Path, *, die_on_file_size_limit: bool = False) -> Monitor:
    """A worker, on a seeded tenant, that has written the users round to the JSONL sink at `path`."""
    seed(scene.tenant, users=40, groups=4, memberships=60)
    env = scene.env(MONITOR_SINK=f"jsonl:{path}")
    worker = await scene.launch("worker", env=env, die_on_file_size_limit=die_on_file_size_limit)
    await scene.hint("users")
    await wait_until(lambda: scene.delivered(f"jsonl:{path}"), "the users round in the file")
    return worker


async def test_a_full_disk_keeps_the_cursor_says_why_and_loses_nothing(disk: Disk, scene: Scene) -> None:
    path = disk.directory / "changes.jsonl"
    sink, store = f"jsonl:{path}", scene.store
    worker = await _worker_that_wrote_the_users(scene, path)

    disk.fill(worker, path)
    await scene.hint("account", "groups")
    await wait_until(lambda: _failing(store, sink), "the sink to report that it is stuck")

    cursor = await store.cursor(sink)
    assert 0 < cursor < await store.last_seq()
    # Nothing of the failed batch stayed in the file, and the cursor did not move past it.
    assert [r["seq"] for r in read_jsonl(path)] == list(range(1, cursor + 1))
    assert (await store.sink_state(sink))["error"] == f"cannot write {path}: {disk.reason}"
    await _assert_reported_stuck(scene, sink, disk.reason)

    disk.free(worker)  # no hint: the worker retries by itself, backing off
    await wait_until(lambda: scene.delivered(sink), "the worker to retry the batch")
    assert await store.sink_state(sink) == {}
    scene.tenant.update_user(next(iter(scene.tenant.users)), displayName=RENAMED)
    await scene.hint("users")
    await wait_until(lambda: _renamed_and_delivered(scene, sink), "the next change in the file")

    assert await worker.terminate() == 0
    stuck = [line for line in worker.err if "is stuck after seq" in line]
    assert stuck and all(f"sink {sink} " in line and disk.reason in line for line in stuck)
    assert "Traceback" not in worker.stderr
    await scene.assert_complete(read_jsonl(path))


RENAMED = "Renamed once the disk had room"


async def _renamed_and_delivered(scene: Scene, sink: str) -> bool:
    records = await scene.store.read_changes(0, 1_000_000)
    renamed = any((r["after"] or {}).get("displayName") == RENAMED for r in records)
    return renamed and await scene.delivered(sink)


async def _failing(store: TenantStore, sink: str) -> bool:
    return bool(await store.sink_state(sink))


async def _assert_reported_stuck(scene: Scene, sink: str, reason: str) -> None:
    """`monitor status` and `/metrics` show the sink stuck, and why."""
    settings = simulator_settings(scene.graph, scene.redis_server, sink=sink)
    runtime = await Runtime.open(settings, graph=False)
    try:
        [config] = runtime.tenants()
        status = await tenant_status(runtime, config)
        entry = status["sinks"][sink]
        gauges = status_gauges([status], {"hints": {"pending": 0, "oldest_age_seconds": 0}})
    finally:
        await runtime.close()
    assert entry["behind"] > 0 and reason in entry["error"] and entry["failed_deliveries"] >= 1
    assert entry["failing_since"] is not None
    assert gauges[metric("monitor_sink_failing", tenant=TENANT_ID, sink=sink)] == 1
    assert gauges[metric("monitor_sink_records_behind", tenant=TENANT_ID, sink=sink)] == entry["behind"]
    failures = await scene.redis.hget(scene.store.keys.metrics, metric("monitor_sink_failures_total", sink=sink))
    assert failures is not None and int(failures) >= 1


async def test_a_writer_killed_mid_write_leaves_no_torn_line_behind(scene: Scene) -> None:
    """The kill must land inside a write, and the kernel makes that exact: a process whose write
    reaches its file-size limit gets SIGXFSZ inside that write, and with the signal's default action
    it dies there, like under kill -9 (no handler, nothing of ours runs). The bytes up to the limit are
    in the file, the rest of the line is not."""
    path = scene.tmp_path / "sink" / "changes.jsonl"
    sink, store = f"jsonl:{path}", scene.store
    doomed = await _worker_that_wrote_the_users(scene, path, die_on_file_size_limit=True)

    # An odd number, so that the limit falls inside a line.
    resource.prlimit(doomed.pid, resource.RLIMIT_FSIZE, (path.stat().st_size + ROOM + 7, resource.RLIM_INFINITY))
    await scene.hint("account", "groups")
    assert await doomed.exited() == -signal.SIGXFSZ
    assert not path.read_bytes().endswith(b"\n"), "the process died inside a line"
    assert await store.cursor(sink) < await store.last_seq()

    successor = await scene.launch("worker", env=scene.env(MONITOR_SINK=sink))
    await scene.hint("users")
    await wait_until(lambda: scene.delivered(sink), "every record in the file")
    assert await successor.terminate() == 0
    await scene.assert_complete(read_jsonl(path))
    assert "cut a torn last line" in successor.stderr


@pytest.mark.parametrize("blocked_by", ["a directory at the path", "a file where a directory must be"])
async def test_an_unwritable_path_is_one_clear_line_and_the_next_run_delivers(blocked_by: str, scene: Scene) -> None:
    seed(scene.tenant, users=10, groups=2, memberships=8)
    if blocked_by == "a directory at the path":
        path = scene.tmp_path / "changes.jsonl"
        path.mkdir()
        blocker, problem = path, f"cannot open {path}: Is a directory"
    else:
        blocker = scene.tmp_path / "exports"
        blocker.write_text("not a directory")
        path = blocker / "monitor" / "changes.jsonl"
        problem = f"cannot create the directory of {path}: Not a directory"
    env = scene.env(MONITOR_SINK=f"jsonl:{path}")

    code, out, err = await run("sync", env=env)

    assert code == 1
    assert f"FAILED delivery: sink jsonl:{path}: {problem}" in out
    [logged] = [line for line in err.splitlines() if str(path) in line]
    assert problem in logged and "is stuck after seq 0" in logged
    assert "Traceback" not in out + err

    (blocker.rmdir if blocker.is_dir() else blocker.unlink)()
    code, out, err = await run("sync", env=env)
    assert code == 0, out + err
    await scene.assert_complete(read_jsonl(path))
