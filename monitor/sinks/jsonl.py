"""The JSONL sink (`MONITOR_SINK=jsonl:PATH`): one change record per line, appended durably.

Records are written as README.md, "Change records", says. Nothing is lost and nothing is
written twice, whatever happens to the disk or the process:

- A batch counts as delivered (its sink cursor advances, `monitor.sinks.base.drain`) only once its
  bytes are written and fsynced. A write that fails (a full disk: ENOSPC) takes back whatever part of
  the batch reached the file and raises `SinkWriteError` naming the path and the reason: the cursor
  stays, and the whole batch is written again on the next attempt.
- A process killed in the middle of a write leaves a torn last line. Whoever opens the file next cuts
  it (and logs that it did): its record was never delivered, so it is written again.
- A batch delivered again after a crash between the fsync and the cursor update is not written twice.
  The sink knows the last record the file holds per tenant (read from the end of the file on opening,
  and again whenever the file changed under it); a batch that holds that very record (same seq, same
  content) is a repeat up to it, and only what follows is written.
- A batch that goes back to a seq the file holds, with other content there (or without reaching it),
  belongs to a new log of the tenant: its seq started again at 1 since the file's records were written
  (the tenant was removed and added back, or Redis lost its data; docs/change-record.md). It is written
  whole, after the earlier log's records, and reported (`LogRestart`: one WARNING, `monitor status`),
  never skipped as a repeat. (A file of lines that are not in seq order, such as alerts and their
  updates, is kept free of repeats by an `identity` of each line instead, among the lines at its end.)
- Every append and repair holds an exclusive `flock` on the file (see flock(2)), so processes sharing
  the file (a worker and `monitor sync`) never interleave lines or cut one another's writes.

The alerts file of the alert rules (`jsonl:PATH` destinations, `monitor.sinks.alerts`) is written the
same way (`JsonlFile`).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from monitor.model.types import JsonMapping
from monitor.records import ChangeRecord
from monitor.sinks.base import LogRestart
from monitor.sinks.signing import DeliveryError

log = logging.getLogger(__name__)

# How much of the file's end is read to learn the last seq per tenant.
TAIL_BYTES = 1 << 20
# Read size while looking backwards for the end of the last complete line.
SCAN_CHUNK = 64 << 10

Entry = tuple[str, int, Any]  # (tenant, seq, the JSON-serializable line)
# What tells a line from another in a file whose lines are not in seq order (`JsonlFile(identity=)`).
Identity = Callable[[JsonMapping], str]


class SinkWriteError(DeliveryError):
    """A file sink could not take a batch; the message names the file and the reason. Nothing of the
    batch stays in the file and the cursor stays, so the batch is written again later."""


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


@dataclass(frozen=True, slots=True)
class Appended:
    """What one `JsonlFile.append` did: lines written, and the tenants whose log started again since
    the file's last line of them (tenant -> the seq of that line; `LogRestart`)."""

    written: int
    restarted: dict[str, int] = field(default_factory=dict)


class JsonlFile:
    """An append-only file of JSON lines, each belonging to a (tenant, seq), written durably.

    Not thread-safe: one caller at a time (`JsonlSink` holds a lock). Processes are kept apart by the
    file lock. Without an `identity`, a batch that repeats the file's last line of a tenant is written
    only after it, and a batch of a new log of the tenant is written whole (`_fresh_records`). With an
    `identity`, a line is left out when a line of the same identity is among those at the end of the
    file.
    """

    def __init__(self, path: Path, *, identity: Identity | None = None) -> None:
        self.path = path
        self.identity = identity
        self._fd: int | None = None
        self._last: dict[str, JsonMapping] = {}  # per tenant, its last line in the file
        self._held: set[str] = set()
        self._size = -1  # the file's size after our last append or scan; -1 before the first scan

    def append(self, entries: Sequence[Entry]) -> Appended:
        """Append, in order, the entries the file does not hold yet, and fsync. `SinkWriteError` if they
        could not all be written."""
        fd = self._open()
        with _locked(fd, self.path):
            size = self._current(fd)
            fresh, restarted = self._fresh(entries)
            if not fresh:
                return Appended(0, restarted)
            data = b"".join(orjson.dumps(line) + b"\n" for _, _, line in fresh)
            try:
                _write_all(fd, data)
                os.fsync(fd)
            except OSError as exc:
                self._take_back(fd, size)
                raise SinkWriteError(f"cannot write {self.path}: {_reason(exc)}") from exc
            self._remember(fresh)
            self._size = size + len(data)
            return Appended(len(fresh), restarted)

    def _fresh(self, entries: Sequence[Entry]) -> tuple[list[Entry], dict[str, int]]:
        """The entries the file does not hold yet (each once, in order), and the tenants whose log
        started again."""
        if self.identity is None:
            return self._fresh_records(entries)
        fresh, seen = [], set(self._held)
        for entry in entries:
            key = self.identity(entry[2])
            if key not in seen:
                seen.add(key)
                fresh.append(entry)
        return fresh, {}

    def _fresh_records(self, entries: Sequence[Entry]) -> tuple[list[Entry], dict[str, int]]:
        """Change records in seq order: per tenant, a batch that starts after the file's last record
        is all fresh; one that holds that very record is a repeat up to it (delivered again after a
        crash between the fsync and the cursor update); one that goes back without it belongs to a new
        log of the tenant, and is all fresh too."""
        repeated: dict[str, int] = {}
        restarted: dict[str, int] = {}
        for tenant in dict.fromkeys(tenant for tenant, _, _ in entries):
            last = self._last.get(tenant)
            if last is None:
                continue
            held = int(last["seq"])
            batch = [(seq, line) for owner, seq, line in entries if owner == tenant]
            if batch[0][0] > held:
                continue
            if any(seq == held and line == last for seq, line in batch):
                repeated[tenant] = held
            else:
                restarted[tenant] = held
        fresh = [entry for entry in entries if entry[1] > repeated.get(entry[0], 0)]
        return fresh, restarted

    def _remember(self, written: Sequence[Entry]) -> None:
        for tenant, _, line in written:
            if self.identity is None:
                self._last[tenant] = line
            else:
                self._held.add(self.identity(line))

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
            self._size = -1

    def _open(self) -> int:
        if self._fd is not None:
            return self._fd
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SinkWriteError(f"cannot create the directory of {self.path}: {_reason(exc)}") from exc
        existed = self.path.exists()
        try:
            self._fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise SinkWriteError(f"cannot open {self.path}: {_reason(exc)}") from exc
        if not existed:
            _fsync_directory(self.path.parent)  # the new file's name is durable too
        return self._fd

    def _current(self, fd: int) -> int:
        """The file's size, after repairing a torn tail and re-reading the last seqs if the file is not
        as this process left it (first use, another process appended, a failed take-back)."""
        size = os.fstat(fd).st_size
        if size != self._size:
            size = self._repair(fd, size)
            tail = list(_tail_lines(fd, size))
            if self.identity is None:
                self._last = _last_records(tail)
            else:
                self._held = {self.identity(line) for line in tail}
            self._size = size
        return size

    def _repair(self, fd: int, size: int) -> int:
        """Cut a torn last line (a writer killed mid-write); returns the size after."""
        if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
            return size
        end = _end_of_last_line(fd, size)
        try:
            os.ftruncate(fd, end)
            os.fsync(fd)
        except OSError as exc:
            raise SinkWriteError(f"cannot repair the torn last line of {self.path}: {_reason(exc)}") from exc
        log.warning(
            "%s: cut a torn last line (%d bytes) that an interrupted write left; its records are written again",
            self.path,
            size - end,
        )
        return end

    def _take_back(self, fd: int, size: int) -> None:
        """Remove the part of a failed append that reached the file."""
        try:
            os.ftruncate(fd, size)
        except OSError as exc:
            # The next append finds the file changed and repairs its tail before writing.
            self._size = -1
            log.error("%s: could not take back a failed write (%s); the next attempt repairs it", self.path, exc)


class JsonlSink:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = JsonlFile(path)
        # Writes run in worker threads, and tenants deliver concurrently to the one file.
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return f"jsonl:{self.path}"

    async def deliver(self, records: Sequence[ChangeRecord]) -> LogRestart | None:
        """Write a batch of one tenant's records; a `LogRestart` when the file held records of an earlier
        log of the tenant (`JsonlFile._fresh_records`)."""
        return await asyncio.to_thread(self._write, records)

    async def close(self) -> None:
        with self._lock:
            self._file.close()

    def _write(self, records: Sequence[ChangeRecord]) -> LogRestart | None:
        with self._lock:
            done = self._file.append([(str(record["tenant"]), int(record["seq"]), record) for record in records])
        held = next(iter(done.restarted.values()), None)
        return None if held is None else LogRestart(held)


@contextlib.contextmanager
def _locked(fd: int, path: Path) -> Iterator[None]:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
    except OSError as exc:
        raise SinkWriteError(f"cannot lock {path}: {_reason(exc)}") from exc
    try:
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)


def _write_all(fd: int, data: bytes) -> None:
    """os.write until all of `data` is written: a write to a nearly full disk can be short."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _fsync_directory(directory: Path) -> None:
    with contextlib.suppress(OSError):  # not every filesystem lets a directory be opened or synced
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _end_of_last_line(fd: int, size: int) -> int:
    """The offset just after the last newline before `size` (0 if there is none)."""
    end = size
    while end > 0:
        start = max(0, end - SCAN_CHUNK)
        newline = os.pread(fd, end - start, start).rfind(b"\n")
        if newline >= 0:
            return start + newline + 1
        end = start
    return 0


def _tail_lines(fd: int, size: int) -> Iterator[JsonMapping]:
    """The JSON objects of the complete lines in the last `TAIL_BYTES` of the file."""
    start = max(0, size - TAIL_BYTES)
    lines = os.pread(fd, size - start, start).split(b"\n")
    if start > 0:
        lines = lines[1:]  # the first line is probably cut
    for line in lines:
        try:
            value = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(value, dict):
            yield value


def _last_records(lines: Sequence[JsonMapping]) -> dict[str, JsonMapping]:
    """The last change record per tenant among `lines` (the last line, not the highest seq: after a
    log restart the file's newest records of a tenant have lower seqs than its earlier ones)."""
    last: dict[str, JsonMapping] = {}
    for record in lines:
        if "tenant" in record and isinstance(record.get("seq"), int):
            last[str(record["tenant"])] = record
    return last
