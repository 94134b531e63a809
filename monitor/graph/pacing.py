"""Client-side pacing against Intune's per-app-per-tenant request limits (docs/graph.md 10.3).

Intune throttles per app per tenant in 20-second windows: 2,000 requests for the devices bucket
(managedDevices, detectedApps), 1,000 each for device configuration (deviceConfigurations,
deviceCompliancePolicies, their status lists, `GET /deviceManagement`), applications
(`/deviceAppManagement`) and the other Intune areas (reports, ...). A sweep that runs into those
limits gets 429s and then waits out `Retry-After`; pacing first is cheaper than being throttled.
(https://learn.microsoft.com/en-us/graph/throttling-limits#intune-service-limits)

Each (tenant, bucket) keeps the send times of its last `L` requests (a sliding window, the
strictest reading of "L requests per 20 seconds": no 20-second interval, wherever it starts, holds
more than `L`). A request may go as soon as the request `L` places before it is older than the
window; until then it reserves its place and sleeps, so concurrent callers queue in arrival order.
The window is 20 s plus `ARRIVAL_MARGIN`: Graph counts requests when they arrive, and requests sent
back to back may arrive closer together than they left. A sweep that needs fewer than `L` requests
of a bucket therefore never waits, and a larger one runs at `L` per window.

The pacer paces; it never retries. A 429 that comes anyway (another app of the customer sharing
the per-tenant limit, docs/graph.md 10.3) is handled by the client's retry policy (`monitor.retry`).
Clock and sleep are injectable, so tests check the arithmetic without waiting.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

WINDOW_SECONDS = 20.0
# Seconds added to the window for requests that arrive closer together than they were sent.
ARRIVAL_MARGIN = 1.0
# Requests per 20 s per app per tenant, by bucket (docs/graph.md 10.3, "any" column).
INTUNE_LIMITS: Mapping[str, int] = {"devices": 2000, "configuration": 1000, "apps": 1000, "other": 1000}

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

    `GET /deviceManagement` itself counts as device configuration (docs/graph.md 9 and 10.3).
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
class _Window:
    """The send times (past, or reserved in the future) of a bucket's last `limit` requests, oldest first."""

    limit: int
    span: float
    times: deque[float] = field(default_factory=deque)

    def reserve(self, count: int, now: float) -> float:
        """Take `count` places; the seconds to wait before the last of them may be sent."""
        at = now
        for _ in range(count):
            at = max(now, self.times[-1] if self.times else now)
            if len(self.times) >= self.limit:
                at = max(at, self.times.popleft() + self.span)
            self.times.append(at)
        return at - now


@dataclass(slots=True)
class PacerStats:
    requests: int = 0
    waits: int = 0
    waited: float = 0.0


@dataclass
class IntunePacer:
    """Token buckets per (tenant, Intune bucket); `limits` empty turns pacing off."""

    limits: Mapping[str, int] = field(default_factory=lambda: dict(INTUNE_LIMITS))
    window: float = WINDOW_SECONDS + ARRIVAL_MARGIN
    clock: Clock = time.monotonic
    sleep: Sleep = asyncio.sleep
    stats: PacerStats = field(default_factory=PacerStats)
    _buckets: dict[tuple[str, str], _Window] = field(default_factory=dict, repr=False)

    def _bucket(self, tenant: str, bucket: str) -> _Window | None:
        found = self._buckets.get((tenant, bucket))
        if found is None:
            limit = self.limits.get(bucket)
            if not limit:
                return None
            found = self._buckets[(tenant, bucket)] = _Window(limit, self.window)
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
