"""Sinks read the change log from their own cursor, so each gets every record once, in order.

The cursor (last delivered `seq`) lives in Redis next to the log and advances only after the sink
has accepted a batch: a crash in between redelivers that batch, which sinks make harmless (the
JSONL sink skips what its file already holds).

A sink that fails (a full disk, a receiver down) keeps its cursor: nothing is skipped, the records
wait in the change log. `deliver_to` records the failure where operators look (the sink's state in
`monitor status`, the `monitor_sink_failures_total` counter, one log line); the caller retries.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol

from monitor.sinks.signing import DeliveryError
from monitor.store import ChangeRecord, TenantStore

log = logging.getLogger(__name__)

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


async def deliver_to(store: TenantStore, sink: Sink, at: str) -> tuple[int, str | None]:
    """`drain`, with a failure reported rather than raised: (records delivered, None), or (0, the
    reason) when the sink failed. `at` is the time the failure is recorded at."""
    try:
        return await drain(store, sink), None
    except (DeliveryError, OSError) as exc:
        error = str(exc)
    failures = await store.record_sink_failure(sink.name, error, at)
    log.error(
        "tenant %s: sink %s is stuck after seq %d (failed attempt %d): %s; "
        "the records wait in the change log and are delivered again",
        store.tenant,
        sink.name,
        await store.cursor(sink.name),
        failures,
        error,
        extra={"tenant": store.tenant},
    )
    return 0, error
