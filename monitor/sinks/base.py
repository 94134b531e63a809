"""Sinks read the change log from their own cursor, so each gets every record once, in order.

The cursor (last delivered `seq`) lives in Redis next to the log and advances only after the sink
has accepted a batch: a crash in between redelivers that batch, which sinks make harmless (the
JSONL sink skips what its file already holds).

A sink that fails (a full disk, a receiver down) keeps its cursor: nothing is skipped, the records
wait in the change log. `deliver_to` records the failure where operators look (the sink's state in
`monitor status`, the `monitor_sink_failures_total` counter, one log line); the caller retries.

A sink that finds its destination holding records of an earlier log of the tenant (its `seq` started
again at 1: the tenant was removed and added back, or Redis lost its data; docs/change-record.md)
still takes every record of the new log, and says so (`LogRestart`): `drain` logs one WARNING, keeps
it for `monitor status` (`TenantKeys.log_restarts`) and counts it (`monitor_sink_log_restarts_total`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson

from monitor.metrics import metric, queue_increments
from monitor.model.types import JsonObject
from monitor.records import ChangeRecord
from monitor.sinks.signing import DeliveryError
from monitor.store import TenantStore, iso_ms

log = logging.getLogger(__name__)

BATCH = 1000


@dataclass(frozen=True, slots=True)
class LogRestart:
    """A sink's destination held records of the tenant up to seq `held` that are not the log's: the
    log started again since. The batch was delivered all the same."""

    held: int


class Sink(Protocol):
    """Something that change records are delivered to."""

    @property
    def name(self) -> str: ...

    async def deliver(self, records: Sequence[ChangeRecord]) -> LogRestart | None: ...

    async def close(self) -> None: ...


async def drain(store: TenantStore, sink: Sink, *, batch: int = BATCH, at: str | None = None) -> int:
    """Deliver everything after the sink's cursor; returns how many records went out. `at` is the time
    a log restart the sink finds is recorded at (now by default)."""
    cursor = await store.cursor(sink.name)
    delivered = 0
    while True:
        records = await store.read_changes(cursor, batch)
        if not records:
            return delivered
        restart = await sink.deliver(records)
        if restart is not None:
            await record_log_restart(store, sink.name, restart, int(records[0]["seq"]), at or iso_ms(datetime.now(UTC)))
        cursor = int(records[-1]["seq"])
        await store.set_cursor(sink.name, cursor)
        delivered += len(records)


async def record_log_restart(store: TenantStore, sink: str, restart: LogRestart, first: int, at: str) -> None:
    """Say, once, that `sink` found the tenant's log started again: a WARNING line, the sink's entry in
    `monitor status` (kept), and a counter."""
    log.warning(
        "tenant %s: the change log started again: sink %s held records up to seq %d of an earlier log of the "
        "tenant (removed and added back, or Redis lost its data) and now receives the new log from seq %d "
        "after them; readers must not take the new records for repeats (docs/change-record.md, Delivery)",
        store.tenant,
        sink,
        restart.held,
        first,
        extra={"tenant": store.tenant},
    )
    pipeline: Any = store.redis.pipeline(transaction=True)
    note = {"at": at, "held_seq": restart.held, "new_log_from_seq": first}
    pipeline.hset(store.keys.log_restarts, sink, orjson.dumps(note))
    queue_increments(pipeline, store.keys.metrics, {metric("monitor_sink_log_restarts_total", sink=sink): 1})
    await pipeline.execute()


async def log_restart(store: TenantStore, sink: str) -> JsonObject | None:
    """The last log restart `sink` found for the tenant ({at, held_seq, new_log_from_seq}), or None."""
    raw = await store.redis.hget(store.keys.log_restarts, sink)
    return None if raw is None else dict(orjson.loads(raw))


async def deliver_to(store: TenantStore, sink: Sink, at: str) -> tuple[int, str | None]:
    """`drain`, with a failure reported rather than raised: (records delivered, None), or (0, the
    reason) when the sink failed. `at` is the time the failure is recorded at."""
    try:
        return await drain(store, sink, at=at), None
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
