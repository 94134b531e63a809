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

# What a hint can ask for. Sources are the names `monitor.sync.run_source` knows.
SOURCE_JOBS = frozenset({"users", "groups", "account", "signins", "intune", "intune_live"})
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


async def enqueue(redis: Redis, hints: Sequence[Hint]) -> None:
    """Append hints to the stream (one round trip). Raises if Redis does not take them."""
    if not hints:
        return
    pipeline: Any = redis.pipeline(transaction=False)
    for hint in hints:
        pipeline.xadd(HINTS, hint.fields())
    await pipeline.execute()


async def ensure_group(redis: Redis) -> None:
    """Create the consumer group (and the stream) if they don't exist yet."""
    try:
        await redis.xgroup_create(HINTS, HINTS_GROUP, id="0", mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


async def queue_depth(redis: Redis) -> int:
    """Hints not yet done (the stream only holds those: done ones are deleted)."""
    depth: int = await redis.xlen(HINTS)
    return depth


async def queue_status(redis: Redis, now_ms: int) -> dict[str, Any]:
    """The hint queue for status and metrics: `length` (hints not yet done), `pending` (of those, the
    ones a worker has taken and not yet acknowledged) and `oldest_age_seconds` (how long the oldest
    has waited; 0 when the queue is empty). Workers delete a hint once its job committed, so a hint
    that stays old means no worker is getting through the queue."""
    pipeline: Any = redis.pipeline(transaction=False)
    pipeline.xlen(HINTS)
    pipeline.xrange(HINTS, count=1)
    length, oldest = await pipeline.execute()
    pending = 0
    if length:
        try:
            summary: Any = await redis.xpending(HINTS, HINTS_GROUP)
            pending = int(summary.get("pending", 0)) if summary else 0
        except ResponseError:  # no consumer group yet: no worker has ever started
            pending = 0
    age = 0.0
    if oldest:
        # A stream entry id starts with the milliseconds at which Redis appended it.
        entry_id = oldest[0][0]
        added_ms = int((entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)).partition("-")[0])
        age = max(0.0, (now_ms - added_ms) / 1000)
    return {"length": int(length), "pending": pending, "oldest_age_seconds": round(age, 3)}
