"""Resource-unit throttling of identity calls (docs/graph.md 10.1-10.2), off unless asked for.

Identity and access limits are a token bucket of resource units (RU) per app + tenant per 10 s.
A call costs its base (GET users 2, groups/{id}/members 3, anything else 1, delta presumably 1),
`$select` takes 1 off, `$top` under 20 takes 1 off, `$expand` adds 1, never below 1.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

_BASE_COSTS = ((re.compile(r"^/v1\.0/users/?$"), 2), (re.compile(r"^/v1\.0/groups/[^/]+/members/?$"), 3))


def resource_units(path: str, query: Mapping[str, str]) -> int:
    """What a GET costs, by the docs/graph.md 10.2 table."""
    cost = next((units for pattern, units in _BASE_COSTS if pattern.match(path)), 1)
    if "$select" in query:
        cost -= 1
    if "$expand" in query:
        cost += 1
    top = query.get("$top", "")
    if top.isdigit() and int(top) < 20:
        cost -= 1
    return max(1, cost)


@dataclass
class TokenBucket:
    """`limit` RU per 10 s, refilled continuously by the simulator clock."""

    limit: float
    tokens: float
    updated: float

    def take(self, cost: float, now: float) -> float:
        """0 if granted, else seconds to wait before the call could pass (the Retry-After)."""
        self.tokens = min(self.limit, self.tokens + (now - self.updated) * self.limit / 10)
        self.updated = now
        if self.tokens >= cost:
            self.tokens -= cost
            return 0.0
        return max(1.0, math.ceil((cost - self.tokens) * 10 / self.limit))

    def usage(self) -> float:
        """Share of the limit in use; Graph reports it past 0.8 (x-ms-throttle-limit-percentage)."""
        return 1 - self.tokens / self.limit if self.limit else 1.0
