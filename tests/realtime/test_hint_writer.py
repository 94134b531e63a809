"""The webhook's hint writer (`monitor.webhook.HintWriter`): requests that come together share a
round trip, and every request's hints and counters are stored before it returns."""

from __future__ import annotations

import asyncio
from collections import Counter

import redis.asyncio as aioredis

from monitor.hints import Hint
from monitor.keys import GLOBAL_METRICS, HINTS
from monitor.redis_conn import Pipelined
from monitor.webhook import HintWriter
from tests.conftest import TENANT_ID


async def test_the_first_request_of_a_turn_is_written_alone_and_the_others_of_the_turn_together(
    redis: aioredis.Redis,
) -> None:
    writer = HintWriter(redis)
    hint = Hint(TENANT_ID, "users", "notification")
    try:
        # Ten requests handled in one turn of the event loop, all asking for the same job.
        await asyncio.gather(*(writer.write([hint], Counter({"requests": 1})) for _ in range(10)))
    finally:
        await writer.close()
    assert int(await redis.hget(GLOBAL_METRICS, "requests") or 0) == 10
    if Pipelined.available(redis):
        assert await redis.xlen(HINTS) == 2  # the first at once; the nine after it as one batch
    else:
        assert await redis.xlen(HINTS) == 1  # one batch through the cluster client's pipeline
