"""Hints: small messages saying "something may have changed; look".

Graph notifications are only hints (docs/architecture.md, "How a change travels"): the webhook
turns each valid one into a hint for the delta round of its tenant and resource; the scheduler
adds timer hints (the safety-net round, sweeps, subscription upkeep, reconciliation); lifecycle
notifications become lifecycle hints. All go through one Redis stream read by the workers'
consumer group, and any number of hints for the same job collapse into one run of it
(`Hint.job_key`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis.exceptions import ResponseError

from monitor.keys import HINTS, HINTS_GROUP
from monitor.redis_conn import Redis
from monitor.source_registry import NAMES

# What a hint can ask for: a source (monitor.source_registry, run by `monitor.sync.run_source`) or
# one of the other jobs.
SOURCE_JOBS = frozenset(NAMES)
OTHER_JOBS = frozenset({"subscriptions", "reconcile", "lifecycle", "actors"})
JOBS = SOURCE_JOBS | OTHER_JOBS
LIFECYCLE_EVENTS = frozenset({"reauthorizationRequired", "subscriptionRemoved", "missed"})


@dataclass(frozen=True, slots=True)
class Hint:
    tenant: str
    job: str
    reason: str
    subscription: str = ""
    event: str = ""
    at: int = 0  # epoch ms when the hint was made

    @property
    def job_key(self) -> tuple[str, ...]:
        """Hints with the same key are answered by one run of the job."""
        if self.job == "lifecycle":
            return (self.tenant, self.job, self.subscription, self.event)
        return (self.tenant, self.job)

    def fields(self) -> dict[str, str]:
        return {
            "tenant": self.tenant,
            "job": self.job,
            "reason": self.reason,
            "subscription": self.subscription,
            "event": self.event,
            "at": str(self.at or int(time.time() * 1000)),
        }

    @classmethod
    def from_fields(cls, fields: dict[Any, Any]) -> Hint | None:
        """A hint from a stream entry, or None if the entry is not one (never trust the stream)."""
        values = {_text(k): _text(v) for k, v in fields.items()}
        job = values.get("job", "")
        if job not in JOBS or not values.get("tenant"):
            return None
        if job == "lifecycle" and values.get("event") not in LIFECYCLE_EVENTS:
            return None
        try:
            at = int(values.get("at", "0"))
        except ValueError:
            at = 0
        return cls(
            values["tenant"], job, values.get("reason", ""), values.get("subscription", ""), values.get("event", ""), at
        )


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


Entry = tuple[str, dict[Any, Any]]  # a stream entry: its id and its raw fields


class HintQueue:
    """The hint stream and its consumer group: every Redis command on them is here.

    Producers (the webhook, the scheduler, onboarding) `add` hints; workers `read` new ones, `claim`
    those a dead or failed worker left pending, and mark a hint `done` (acknowledged and deleted) only
    once the job that answers it committed (docs/architecture.md, "Rules that keep it correct").
    """

    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    async def add(self, hints: Sequence[Hint]) -> None:
        """Append hints to the stream (one round trip). Raises if Redis does not take them."""
        if not hints:
            return
        pipeline: Any = self.redis.pipeline(transaction=False)
        self.add_to(pipeline, hints)
        await pipeline.execute()

    @staticmethod
    def add_to(pipeline: Any, hints: Sequence[Hint]) -> None:
        """Queue the XADDs of `hints` on an open pipeline (to travel with other writes)."""
        for command in HintQueue.commands(hints):
            pipeline.execute_command(*command)

    @staticmethod
    def commands(hints: Sequence[Hint]) -> list[tuple[str, ...]]:
        """The XADDs of `hints` as commands (for `add_to`, or `monitor.redis_conn.Pipelined`)."""
        commands = []
        for hint in hints:
            command = ["XADD", HINTS, "*"]
            for name, value in hint.fields().items():
                command += (name, value)
            commands.append(tuple(command))
        return commands

    async def ensure_group(self) -> None:
        """Create the consumer group (and the stream) if they don't exist yet."""
        try:
            await self.redis.xgroup_create(HINTS, HINTS_GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def read(self, consumer: str, *, block: int | None, start: str = ">", count: int = 1000) -> list[Entry]:
        """New hints (`start` ">"), or with "0" those read earlier by `consumer` and still pending.
        `block`: milliseconds to wait for a new one (None: answer at once)."""
        streams: Any = {HINTS: start}
        response: Any = await self.redis.xreadgroup(HINTS_GROUP, consumer, streams, count=count, block=block)
        entries = []
        for _, stream_entries in response or []:
            entries += [(_text(entry_id), fields) for entry_id, fields in stream_entries if fields is not None]
        return entries

    async def claim(self, consumer: str, *, min_idle: float, count: int = 1000) -> list[Entry]:
        """Hints pending with any consumer for longer than `min_idle` seconds, now `consumer`'s."""
        result: Any = await self.redis.xautoclaim(
            HINTS, HINTS_GROUP, consumer, min_idle_time=int(min_idle * 1000), start_id="0-0", count=count
        )
        claimed = result[1] if result else []
        return [(_text(entry_id), fields) for entry_id, fields in claimed if fields]

    async def consumers(self) -> dict[str, int]:
        """The consumers of the group that hold pending hints, with how many each."""
        try:
            summary: Any = await self.redis.xpending(HINTS, HINTS_GROUP)
        except ResponseError:  # no consumer group yet
            return {}
        return {_text(c["name"]): int(c["pending"]) for c in (summary or {}).get("consumers") or []}

    async def pending_of(self, consumer: str, *, min_idle: float, count: int = 1000) -> list[str]:
        """Ids of the hints `consumer` holds that have been idle for at least `min_idle` seconds."""
        details: Any = await self.redis.xpending_range(
            HINTS, HINTS_GROUP, min="-", max="+", count=count, consumername=consumer, idle=int(min_idle * 1000)
        )
        return [_text(detail["message_id"]) for detail in details or []]

    async def claim_ids(self, consumer: str, entry_ids: Sequence[str], *, min_idle: float) -> list[Entry]:
        """Make the given pending hints `consumer`'s (those still idle for `min_idle` seconds: another
        worker claiming them meanwhile wins), counting a delivery each."""
        if not entry_ids:
            return []
        claimed: Any = await self.redis.xclaim(HINTS, HINTS_GROUP, consumer, int(min_idle * 1000), list(entry_ids))
        return [(_text(entry_id), fields) for entry_id, fields in claimed or [] if fields]

    async def done(self, entry_ids: Sequence[str]) -> None:
        """Acknowledge and delete hints whose job committed (or that are dropped for good)."""
        if entry_ids:
            pipeline: Any = self.redis.pipeline(transaction=True)
            pipeline.xack(HINTS, HINTS_GROUP, *entry_ids)
            pipeline.xdel(HINTS, *entry_ids)
            await pipeline.execute()

    async def attempts(self, entry_id: str) -> int:
        """How many times the hint was handed to a worker (1 for the first)."""
        details: Any = await self.redis.xpending_range(HINTS, HINTS_GROUP, min=entry_id, max=entry_id, count=1)
        return int(details[0]["times_delivered"]) if details else 1

    async def pending(self) -> int:
        """Hints a worker has taken and not yet acknowledged."""
        try:
            summary: Any = await self.redis.xpending(HINTS, HINTS_GROUP)
        except ResponseError:  # no consumer group yet: no worker has ever started
            return 0
        return int(summary.get("pending", 0)) if summary else 0

    async def depth(self) -> int:
        """Hints not yet done (the stream only holds those: done ones are deleted)."""
        depth: int = await self.redis.xlen(HINTS)
        return depth

    async def status(self, now_ms: int) -> dict[str, Any]:
        """The hint queue for status and metrics: `length` (hints not yet done), `pending` (of those,
        the ones a worker has taken and not yet acknowledged) and `oldest_age_seconds` (how long the
        oldest has waited; 0 when the queue is empty). Workers delete a hint once its job committed,
        so a hint that stays old means no worker is getting through the queue."""
        pipeline: Any = self.redis.pipeline(transaction=False)
        pipeline.xlen(HINTS)
        pipeline.xrange(HINTS, count=1)
        length, oldest = await pipeline.execute()
        pending = await self.pending() if length else 0
        age = 0.0
        if oldest:
            # A stream entry id starts with the milliseconds at which Redis appended it.
            added_ms = int(_text(oldest[0][0]).partition("-")[0])
            age = max(0.0, (now_ms - added_ms) / 1000)
        return {"length": int(length), "pending": pending, "oldest_age_seconds": round(age, 3)}

    async def drop_tenant(self, tenant_id: str) -> int:
        """Delete the tenant's hints, delivered or not (the stream holds only work not yet done, so
        it is short). Returns how many."""
        ids: list[str] = []
        start = "-"
        while True:
            entries: Any = await self.redis.xrange(HINTS, min=start, max="+", count=1000)
            for entry_id, fields in entries:
                hint = Hint.from_fields(fields)
                if hint is not None and hint.tenant == tenant_id:
                    ids.append(_text(entry_id))
            if len(entries) < 1000:
                break
            start = f"({_text(entries[-1][0])}"
        if not ids:
            return 0
        try:
            await self.done(ids)
        except ResponseError:  # no consumer group yet (no worker ever ran): nothing to acknowledge
            await self.redis.xdel(HINTS, *ids)
        return len(ids)


async def enqueue(redis: Redis, hints: Sequence[Hint]) -> None:
    """Append hints to the stream (one round trip). Raises if Redis does not take them."""
    await HintQueue(redis).add(hints)


async def queue_depth(redis: Redis) -> int:
    """Hints not yet done."""
    return await HintQueue(redis).depth()


async def queue_status(redis: Redis, now_ms: int) -> dict[str, Any]:
    """`HintQueue.status`."""
    return await HintQueue(redis).status(now_ms)
