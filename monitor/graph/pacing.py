"""Client-side pacing against Intune's per-app-per-tenant request limits (GRAPH.md 10.3).

Intune throttles per app per tenant in 20-second windows: 2,000 requests for the devices bucket
(managedDevices, detectedApps), 1,000 each for device configuration (deviceConfigurations,
deviceCompliancePolicies, their status lists, `GET /deviceManagement`), applications
(`/deviceAppManagement`) and the other Intune areas (reports, ...). A sweep that runs into those
limits gets 429s and then waits out `Retry-After`; pacing first is cheaper than being throttled.

Each (tenant, bucket) is a token bucket. With a burst capacity `B` and a refill rate `r`, at most
`B + r * T` requests leave in any interval of `T` seconds; choosing `B = share * L` and
`r = (L - B) / 20` makes that exactly `L` per 20 s, the limit, in *any* 20-second window (a sliding
window, which is stricter than Graph's fixed one). A request that finds the bucket empty
reserves its token anyway (the count may go negative) and sleeps until the token exists, so
concurrent callers queue in arrival order.

The pacer paces; it never retries. A 429 that comes anyway (another app of the customer sharing
the per-tenant limit, GRAPH.md 10.3) is handled by the client's retry policy (`monitor.retry`).
Clock and sleep are injectable, so tests check the arithmetic without waiting.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

WINDOW_SECONDS = 20.0
# Requests per 20 s per app per tenant, by bucket (GRAPH.md 10.3, "any" column).
INTUNE_LIMITS: Mapping[str, int] = {"devices": 2000, "configuration": 1000, "apps": 1000, "other": 1000}
# Share of a window's limit that may leave at once; the rest trickles in at the refill rate.
BURST_SHARE = 0.1

# Path prefixes (after the version segment, lower case) -> bucket; first match wins.
_BUCKETS: tuple[tuple[str, str], ...] = (
    ("devicemanagement/manageddevices", "devices"),
    ("devicemanagement/detectedapps", "devices"),
    ("devicemanagement/devicecompliancepolic", "configuration"),
    ("devicemanagement/deviceconfiguration", "configuration"),
    ("deviceappmanagement", "apps"),
    ("devicemanagement/", "other"),
)


def intune_bucket(path: str) -> str | None:
    """The Intune throttling bucket of a Graph URL path (`/v1.0/...` or `/beta/...`), or None.

    `GET /deviceManagement` itself counts as device configuration (GRAPH.md 9 and 10.3).
    """
    _, _, rest = path.lstrip("/").partition("/")
    rest = rest.lower()
    if rest.rstrip("/") == "devicemanagement":
        return "configuration"
    for prefix, bucket in _BUCKETS:
        if rest.startswith(prefix):
            return bucket
    return None


@dataclass(slots=True)
class _Bucket:
    capacity: float
    rate: float  # tokens per second
    tokens: float
    updated: float

    def reserve(self, count: int, now: float) -> float:
        """Take `count` tokens; the seconds to wait before they exist (0 when they already do)."""
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        self.tokens -= count
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate


@dataclass(slots=True)
class PacerStats:
    requests: int = 0
    waits: int = 0
    waited: float = 0.0


@dataclass
class IntunePacer:
    """Token buckets per (tenant, Intune bucket); `limits` empty turns pacing off."""

    limits: Mapping[str, int] = field(default_factory=lambda: dict(INTUNE_LIMITS))
    window: float = WINDOW_SECONDS
    burst_share: float = BURST_SHARE
    clock: Clock = time.monotonic
    sleep: Sleep = asyncio.sleep
    stats: PacerStats = field(default_factory=PacerStats)
    _buckets: dict[tuple[str, str], _Bucket] = field(default_factory=dict, repr=False)

    def _bucket(self, tenant: str, bucket: str) -> _Bucket | None:
        found = self._buckets.get((tenant, bucket))
        if found is None:
            limit = self.limits.get(bucket)
            if not limit:
                return None
            capacity = max(1.0, limit * self.burst_share)
            rate = (limit - capacity) / self.window
            found = self._buckets[(tenant, bucket)] = _Bucket(capacity, rate, capacity, self.clock())
        return found

    async def acquire(self, tenant: str, bucket: str | None, count: int = 1) -> float:
        """Wait until `count` more requests of `bucket` fit under the limit; returns the seconds waited."""
        target = None if bucket is None else self._bucket(tenant, bucket)
        if target is None or count <= 0:
            return 0.0
        self.stats.requests += count
        wait = target.reserve(count, self.clock())
        if wait > 0:
            self.stats.waits += 1
            self.stats.waited += wait
            await self.sleep(wait)
        return wait

    async def acquire_path(self, tenant: str, path: str, count: int = 1) -> float:
        return await self.acquire(tenant, intune_bucket(path), count)
