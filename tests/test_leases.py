"""Leases and the writes they fence, against the suite's real redis-server."""

from __future__ import annotations

import asyncio
import logging

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError

from monitor.leases import Fence, Lease, LeaseLost
from monitor.store import TenantStore
from tests.durability.conftest import wait_until
from tests.test_store import TENANT, commit, user


async def test_fenced_writes_apply_only_while_the_lease_is_ours(redis: aioredis.Redis) -> None:
    """Another process has the lease now (ours ran out while we stalled): every write that a stale
    runner could get wrong is refused inside Redis, and nothing of it is applied."""
    store = TenantStore(redis, TENANT)
    lease = Lease(redis, store.keys.lease("users"))
    assert await lease.acquire()
    fenced = store.fenced(lease.fence)
    await commit(fenced, user("user-00001", jobTitle="Engineer"))
    await fenced.save_delta_link("users", "https://graph/delta?token=1", "f", 1.0)
    await fenced.set_cursor("jsonl:x", 1)
    await redis.sadd(store.keys.sweep_scan_owed("intune"), "7", "9")
    await fenced.scanned("intune", {b"9"})

    await redis.set(lease.key, "the successor's token")
    with pytest.raises(LeaseLost):
        await commit(fenced, user("user-00001", jobTitle="Stale"))
    with pytest.raises(LeaseLost):
        await fenced.save_delta_link("users", "https://graph/delta?token=0", "f", 2.0)
    with pytest.raises(LeaseLost):
        await fenced.reset_seen("users")
    with pytest.raises(LeaseLost):
        await fenced.drop_delta_link("users")
    with pytest.raises(LeaseLost):
        await fenced.set_cursor("jsonl:x", 0)
    with pytest.raises(LeaseLost):  # scopes the successor owes a scan stay owed
        await fenced.scanned("intune", {b"7"})

    assert await store.last_seq() == 1
    assert [obj["jobTitle"] for obj in (await store.mirror_dump()).values()] == ["Engineer"]
    state = await store.delta_state("users")
    assert state is not None and state.link.endswith("token=1")
    assert await store.cursor("jsonl:x") == 1
    assert await store.owed_scans("intune") == {b"7"}
    # The store of the lease's holder, and an unfenced one, write as usual.
    successor = store.fenced(Fence(lease.key, "the successor's token"))
    await commit(successor, user("user-00001", jobTitle="Principal Engineer"))
    await store.set_cursor("jsonl:x", 2)
    assert await store.last_seq() == 2 and await store.cursor("jsonl:x") == 2


async def test_a_fenced_check_clears_more_owed_objects_than_a_script_can_unpack(redis: aioredis.Redis) -> None:
    """Retiring many devices at once owes tens of thousands of objects a check: clearing them after it,
    through the fence, must not hand Redis's Lua more arguments than it unpacks at once (about 8,000)."""
    store = TenantStore(redis, TENANT)
    lease = Lease(redis, store.keys.lease("intune"))
    assert await lease.acquire()
    refs = {n.to_bytes(8, "big") for n in range(20_000)}
    await redis.sadd(store.keys.sweep_owed_refs("intune"), *refs, b"owed since")

    await store.fenced(lease.fence).scanned("intune", set(), refs)

    assert await store.owed_refs("intune") == {b"owed since"}


async def test_a_holder_notices_that_its_lease_was_taken(
    redis: aioredis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    lease = Lease(redis, "monitor:{test}:lease:users", ttl=0.5)
    with caplog.at_level(logging.WARNING, logger="monitor.leases"):
        async with lease.held():
            await redis.set(lease.key, "someone else")
            # The next renewal, a tenth of a second later, is refused.
            await wait_until(lambda: _lost(lease), "the holder to notice")
    assert await redis.get(lease.key) == b"someone else"  # not released: it is not ours
    [warning] = caplog.records
    assert "lease monitor:{test}:lease:users was lost (expired or taken over)" in warning.getMessage()


async def _lost(lease: Lease) -> bool:
    return lease.lost


class _RenewalCutShort(Lease):
    """A lease whose renewal is in flight when the block ends, and whose Redis client does not let
    the cancellation through: it turns it into a connection error, or answers anyway (as redis-py may
    when a command is cancelled mid-flight). Later renewals succeed, as against a live Redis."""

    def __init__(self, redis: aioredis.Redis, key: str, *, swallow: bool) -> None:
        super().__init__(redis, key)
        self.swallow = swallow
        self.renewing = asyncio.Event()
        self.renewals = 0

    async def renew(self) -> bool:
        self.renewals += 1
        if self.renewals > 1:
            return True
        self.renewing.set()
        try:
            await asyncio.Event().wait()  # the answer that has not come when the cancellation does
        except asyncio.CancelledError:
            if not self.swallow:
                raise RedisConnectionError("Connection closed by the client") from None
        return True


@pytest.mark.parametrize("swallow", [False, True], ids=["as-an-error", "answered-anyway"])
async def test_leaving_the_block_stops_a_renewal_in_flight(redis: aioredis.Redis, swallow: bool) -> None:
    """The block must end (and the lease be released) however the cancelled renewal comes back: the
    keep-alive would otherwise go on renewing, and the holder wait for it forever."""
    lease = _RenewalCutShort(redis, "monitor:{test}:lease:users", swallow=swallow)
    async with asyncio.timeout(10):
        async with lease.held():
            await lease.renewing.wait()
    assert await redis.get(lease.key) is None
    assert lease.renewals == 1
