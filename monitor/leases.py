"""Leases in Redis: at most one holder of a named lease at a time, across any number of processes.

A lease is a key set with NX and a short time-to-live, holding its holder's random token. The holder
renews it several times per TTL while it works (`held`) and deletes it by compare-and-delete when
done. A holder that dies lets it expire within one TTL, so a successor starts within seconds rather
than waiting out a long TTL. Used for one runner per (tenant, source), one deliverer per tenant, one
publisher per JupiterOne scope, and the scheduler's leader.

A holder can also lose its lease while alive: an event-loop stall or a long GC pause, or Redis out of
reach, for longer than the TTL. A stalled process cannot know that it stalled, so stopping its writes
is not left to it: the writes that matter are *fenced*. They carry the holder's token (`Fence`) and
the Redis script that writes checks, in the same atomic step, that the lease still holds that token
(`TenantStore.fenced`: page commits, delta links, seen sets, sink cursors; the publisher's
dirty-scope clearing). A write from a holder that lost its lease is refused (`LeaseLost`), so two runs
of the same lease never both write, however long one of them was frozen. The keep-alive also notices
a failed renewal and logs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

from redis.exceptions import RedisError

from monitor.keys import RELEASE_LEASE, RENEW_LEASE
from monitor.redis_conn import REDIS_UNAVAILABLE, Redis

log = logging.getLogger(__name__)

# A dead holder blocks its successor for at most this long.
DEFAULT_TTL = 5.0
# A live holder renews this many times per TTL, so only a stall of most of a TTL loses the lease
# (and then its fenced writes are refused: nothing is written twice, the work is redone).
RENEWALS_PER_TTL = 5


class LeaseBusy(Exception):
    """Someone else holds the lease."""


class LeaseLost(Exception):
    """A fenced write was refused: the lease expired (its holder stalled or lost Redis for longer than
    the TTL) or another holder has it now. Nothing of the write was applied."""

    def __init__(self, key: str) -> None:
        super().__init__(f"lease {key} was lost (expired or taken over); the write was refused and is redone later")
        self.key = key


@dataclass(frozen=True, slots=True)
class Fence:
    """What a fenced write checks: the lease key and the token its holder wrote there."""

    key: str
    token: str


class Lease:
    def __init__(self, redis: Redis, key: str, *, ttl: float = DEFAULT_TTL) -> None:
        self.redis = redis
        self.key = key
        self.ttl = ttl
        self.token = uuid.uuid4().hex
        self.lost = False

    @property
    def fence(self) -> Fence:
        return Fence(self.key, self.token)

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

    async def _keep_alive(self, done: asyncio.Event) -> None:
        """Renew until `done` is set. A renewal that fails for want of Redis is tried again while the
        lease may still hold; one that Redis refuses, or no renewal within a TTL, loses it.

        The holder also cancels this task to cut a renewal in flight short; `done` is what ends the
        loop, because a Redis client may answer that cancellation with an error or a late reply
        instead of letting it through (then the loop would renew, and the holder wait, forever)."""
        loop = asyncio.get_running_loop()
        valid_until = loop.time() + self.ttl
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), self.ttl / RENEWALS_PER_TTL)
            if done.is_set():
                return
            sent = loop.time()
            try:
                renewed = await self.renew()
            except (RedisError, OSError) as exc:
                if done.is_set() or loop.time() < valid_until:
                    continue
                reason = f"not renewed within its {self.ttl:g} s: {exc}"
            else:
                if renewed or done.is_set():
                    valid_until = sent + self.ttl
                    continue
                reason = "expired or taken over"
            self.lost = True
            log.warning("lease %s was lost (%s); its holder's writes are refused from now on", self.key, reason)
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
        done = asyncio.Event()
        keeper = asyncio.create_task(self._keep_alive(done))
        try:
            yield self
        finally:
            done.set()
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
