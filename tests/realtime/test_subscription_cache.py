"""The webhook's in-process cache of our subscriptions (`monitor.webhook.Intake`): renewed and
recreated subscriptions are accepted at once, a deleted one is refused after `CACHE_SECONDS`."""

from __future__ import annotations

import uuid
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis

from monitor.keys import TenantKeys
from monitor.webhook import CACHE_SECONDS, ChangeNotification, Intake
from tests.conftest import TENANT_ID


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def save(redis: aioredis.Redis, subscription: str, client_state: str, **extra: Any) -> None:
    """What `monitor.graph.subscriptions` writes for a subscription it made or renewed."""
    record = {"id": subscription, "resource": "/users", "clientState": client_state, **extra}
    await redis.hset(TenantKeys(TENANT_ID).subscriptions, subscription, orjson.dumps(record))


def item(subscription: str, client_state: str) -> ChangeNotification:
    return ChangeNotification.model_validate(
        {"subscriptionId": subscription, "tenantId": TENANT_ID, "clientState": client_state, "changeType": "updated"}
    )


async def outcome(intake: Intake, subscription: str, client_state: str) -> str:
    hints, outcomes = await intake.accept([item(subscription, client_state)])
    [(name, _)] = outcomes.items()
    assert (name == "accepted") == bool(hints)
    return name


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def intake(redis: aioredis.Redis, clock: Clock) -> Intake:
    return Intake(redis, lambda: frozenset({TENANT_ID}), clock=clock)


async def test_a_renewed_subscription_is_accepted_throughout(
    intake: Intake, redis: aioredis.Redis, clock: Clock
) -> None:
    subscription = str(uuid.uuid4())
    await save(redis, subscription, "state-1", expiration="2026-12-20T00:00:00Z")
    assert await outcome(intake, subscription, "state-1") == "accepted"
    await save(redis, subscription, "state-1", expiration="2027-01-20T00:00:00Z", renewedAt="2026-12-19T00:00:00Z")
    for step in (1.0, CACHE_SECONDS, CACHE_SECONDS):
        clock.now += step
        assert await outcome(intake, subscription, "state-1") == "accepted"


async def test_a_recreated_subscription_is_accepted_at_once(
    intake: Intake, redis: aioredis.Redis, clock: Clock
) -> None:
    old, new = str(uuid.uuid4()), str(uuid.uuid4())
    await save(redis, old, "old-state")
    assert await outcome(intake, old, "old-state") == "accepted"
    # Replaced (Graph dropped it, docs/graph.md 5.2): the new one has its own id and clientState.
    await redis.hdel(TenantKeys(TENANT_ID).subscriptions, old)
    assert await outcome(intake, new, "new-state") == "unknown_subscription"  # Graph's first POST came early
    await save(redis, new, "new-state")
    assert await outcome(intake, new, "new-state") == "accepted"  # a miss is never cached
    assert await outcome(intake, new, "old-state") == "bad_client_state"


async def test_a_deleted_subscription_is_refused_once_the_cache_expires(
    intake: Intake, redis: aioredis.Redis, clock: Clock
) -> None:
    subscription = str(uuid.uuid4())
    await save(redis, subscription, "state-1")
    assert await outcome(intake, subscription, "state-1") == "accepted"
    await redis.hdel(TenantKeys(TENANT_ID).subscriptions, subscription)
    clock.now += CACHE_SECONDS / 2
    assert await outcome(intake, subscription, "state-1") == "accepted"  # within the bound
    assert await outcome(intake, subscription, "a-guess") == "bad_client_state"  # still checked
    clock.now += CACHE_SECONDS / 2
    assert await outcome(intake, subscription, "state-1") == "unknown_subscription"
