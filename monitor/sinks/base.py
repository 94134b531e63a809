"""Sinks read the change log from their own cursor, so each gets every record once, in order.

The cursor (last delivered `seq`) lives in Redis next to the log and advances only after the sink
has accepted a batch: a crash in between redelivers that batch, which sinks make harmless (the
JSONL sink skips what its file already holds).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from monitor.store import ChangeRecord, TenantStore

BATCH = 1000


class Sink(Protocol):
    """Something that change records are delivered to."""

    @property
    def name(self) -> str: ...

    async def deliver(self, records: Sequence[ChangeRecord]) -> None: ...

    async def close(self) -> None: ...


async def drain(store: TenantStore, sink: Sink, *, batch: int = BATCH) -> int:
    """Deliver everything after the sink's cursor; returns how many records went out."""
    cursor = await store.cursor(sink.name)
    delivered = 0
    while True:
        records = await store.read_changes(cursor, batch)
        if not records:
            return delivered
        await sink.deliver(records)
        cursor = int(records[-1]["seq"])
        await store.set_cursor(sink.name, cursor)
        delivered += len(records)
