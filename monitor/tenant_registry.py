"""Tenants registered at run time, kept in Redis and shared by every process of the deployment.

A deployment watches the tenants of its settings (`MONITOR_TENANT_ID` or `MONITOR_TENANTS_FILE`)
plus those registered while it runs (admin-consent onboarding, `monitor tenants add`). The latter
live in one Redis hash (`keys.TENANTS_REGISTRY`) with a version counter beside it, bumped in the same
transaction as every change. A process keeps a copy and re-reads the hash only when the counter
moved, so checking for news costs one GET: the webhook does it on every request (a removed tenant's
notifications are refused at once, in every replica), workers before every batch of jobs, the
scheduler before every tick. No process needs to be told, restarted or signalled.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import orjson
from pydantic import ValidationError

from monitor.keys import TENANTS_REGISTRY, TENANTS_VERSION
from monitor.redis_conn import Redis
from monitor.settings import TenantConfig

log = logging.getLogger(__name__)


@dataclass(slots=True)
class RegistrySnapshot:
    """The registered tenants as of `version` (None: never read)."""

    version: int | None = None
    tenants: dict[str, TenantConfig] = field(default_factory=dict)


class TenantRegistry:
    """Reads and writes the registry hash; holds no state of its own."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    async def version(self) -> int:
        return int(await self.redis.get(TENANTS_VERSION) or 0)

    async def load(self) -> RegistrySnapshot:
        """Every registered tenant. An entry that no longer validates is skipped and logged (a
        newer release may have written it), so one bad entry never stops the others."""
        pipeline: Any = self.redis.pipeline(transaction=True)
        pipeline.get(TENANTS_VERSION)
        pipeline.hgetall(TENANTS_REGISTRY)
        version, raw = await pipeline.execute()
        tenants: dict[str, TenantConfig] = {}
        for key, value in raw.items():
            tenant_id = key.decode() if isinstance(key, bytes) else str(key)
            try:
                tenants[tenant_id] = TenantConfig.model_validate(orjson.loads(value))
            except (ValidationError, orjson.JSONDecodeError) as exc:
                log.error("registered tenant %s cannot be read: %s", tenant_id, exc, extra={"tenant": tenant_id})
        return RegistrySnapshot(int(version or 0), tenants)

    async def get(self, tenant_id: str) -> TenantConfig | None:
        raw = await self.redis.hget(TENANTS_REGISTRY, tenant_id.lower())
        return None if raw is None else TenantConfig.model_validate(orjson.loads(raw))

    async def save(self, tenant: TenantConfig) -> None:
        pipeline: Any = self.redis.pipeline(transaction=True)
        pipeline.hset(TENANTS_REGISTRY, tenant.id, orjson.dumps(tenant.model_dump(mode="json", by_alias=True)))
        pipeline.incr(TENANTS_VERSION)
        await pipeline.execute()

    async def delete(self, tenant_id: str) -> bool:
        """Deregister; True if the tenant was registered."""
        pipeline: Any = self.redis.pipeline(transaction=True)
        pipeline.hdel(TENANTS_REGISTRY, tenant_id.lower())
        pipeline.incr(TENANTS_VERSION)
        removed, _ = await pipeline.execute()
        return bool(removed)
