"""The JSONL sink (`MONITOR_SINK=jsonl:PATH`): one change record per line, appended.

Records are written as the change-record contract says (DESIGN.md) and flushed to disk before the
cursor advances. On opening, the sink reads the end of the file to learn the last `seq` it holds
per tenant, so a batch redelivered after a crash is not written twice.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import IO

import orjson

from monitor.store import ChangeRecord

TAIL_BYTES = 1 << 20


class JsonlSink:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._handle: IO[bytes] | None = None
        self._last_seq: dict[str, int] | None = None
        # Writes run in worker threads, and tenants deliver concurrently to the one file.
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return f"jsonl:{self.path}"

    async def deliver(self, records: Sequence[ChangeRecord]) -> None:
        await asyncio.to_thread(self._write, records)

    async def close(self) -> None:
        with self._lock:
            if self._handle is not None:
                self._handle.close()
                self._handle = None

    def _write(self, records: Sequence[ChangeRecord]) -> None:
        with self._lock:
            self._write_locked(records)

    def _write_locked(self, records: Sequence[ChangeRecord]) -> None:
        if self._handle is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._last_seq = last_sequences(self.path)
            self._handle = self.path.open("ab")
        last = self._last_seq if self._last_seq is not None else {}
        lines = []
        for record in records:
            tenant, seq = str(record["tenant"]), int(record["seq"])
            if seq <= last.get(tenant, 0):
                continue
            last[tenant] = seq
            lines.append(orjson.dumps(record) + b"\n")
        if lines:
            self._handle.write(b"".join(lines))
            self._handle.flush()
            os.fsync(self._handle.fileno())


def last_sequences(path: Path) -> dict[str, int]:
    """The highest seq per tenant among the records at the end of `path` (empty if none)."""
    if not path.exists():
        return {}
    with path.open("rb") as handle:
        handle.seek(0, os.SEEK_END)
        size = handle.tell()
        handle.seek(max(0, size - TAIL_BYTES))
        tail = handle.read()
    lines = tail.split(b"\n")
    if size > TAIL_BYTES:
        lines = lines[1:]  # the first line is probably cut
    last: dict[str, int] = {}
    for line in lines:
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(record, dict) and "tenant" in record and "seq" in record:
            tenant = str(record["tenant"])
            last[tenant] = max(last.get(tenant, 0), int(record["seq"]))
    return last
