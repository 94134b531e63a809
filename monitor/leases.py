"""Leases in Redis: at most one holder of a named lease at a time, across any number of processes.

A lease is a key set with NX and a time-to-live, renewed by its holder while it works and deleted
by compare-and-delete when done. A holder that dies simply lets it expire (`ttl`), after which
another process may take over. Used for one runner per (tenant, source) and for the scheduler's
leader.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator

from monitor.keys import RELEASE_LEASE, RENEW_LEASE
from monitor.redis_conn import REDIS_UNAVAILABLE, Redis

log = logging.getLogger(__name__)

DEFAULT_TTL = 30.0


class LeaseBusy(Exception):
    """Someone else holds the lease."""


class Lease:
    def __init__(self, redis: Redis, key: str, *, ttl: float = DEFAULT_TTL) -> None:
        self.redis = redis
        self.key = key
        self.ttl = ttl
        self.token = uuid.uuid4().hex
        self.lost = False

    async def acquire(self) -> bool:
        return bool(await self.redis.set(self.key, self.token, nx=True, px=int(self.ttl * 1000)))

    async def renew(self) -> bool:
        renewed = bool(await self.redis.eval(RENEW_LEASE, 1, self.key, self.token, int(self.ttl * 1000)))
        self.lost = self.lost or not renewed
        return renewed

    async def release(self) -> None:
        await self.redis.eval(RELEASE_LEASE, 1, self.key, self.token)

    async def holder(self) -> str | None:
        value = await self.redis.get(self.key)
        return None if value is None else (value.decode() if isinstance(value, bytes) else str(value))

    async def _keep_alive(self) -> None:
        while True:
            await asyncio.sleep(self.ttl / 3)
            if not await self.renew():
                log.warning("lease %s was lost (expired or taken over)", self.key)
                return

    @contextlib.asynccontextmanager
    async def held(self, *, wait: float = 0.0, poll: float = 0.2) -> AsyncIterator[Lease]:
        """Hold the lease for the block, waiting up to `wait` seconds for it; `LeaseBusy` otherwise."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while not await self.acquire():
            if loop.time() >= deadline:
                raise LeaseBusy(self.key)
            await asyncio.sleep(poll)
        keeper = asyncio.create_task(self._keep_alive())
        try:
            yield self
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
            try:
                await self.release()
            except REDIS_UNAVAILABLE:
                _abandoned.add((self.key, self.token))
                raise


# Leases whose release failed because Redis could not be reached: `release_abandoned` releases them
# once it answers again, so a process resuming after an outage is not kept waiting (for the rest of
# their time-to-live) by leases of its own runs that the outage ended.
_abandoned: set[tuple[str, str]] = set()


async def release_abandoned(redis: Redis) -> None:
    """Release the leases this process could not release during a Redis outage (compare-and-delete:
    one that expired and was taken by another holder meanwhile is left alone)."""
    for key, token in list(_abandoned):
        await redis.eval(RELEASE_LEASE, 1, key, token)
        _abandoned.discard((key, token))
