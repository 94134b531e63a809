"""What the Intune sweep asks of the mirror while it maps: does a user exist, what `_type` is a device.

A relationship needs both of its ends. Device statuses, install-report rows and detected-app device
lists name a managed device by id only, while the relationship `_type` depends on the device's
`_type` (`smartphone_has_intune_noncompliance_finding`); the device pass has just written every
device entity, so the mirror answers, one round trip per page, without the sweep holding a table of
all devices in memory.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from monitor.model.intune import DEVICE_FAMILY, USER_FAMILY
from monitor.model.types import entity_placement
from monitor.scopes import scope_of
from monitor.store import TenantStore

# Stored records are canonical JSON (sorted keys, no spaces), so the top-level `_type` reads as
# `"_type":"<value>"`; the same text inside a string value would have its quotes escaped.
_TYPE = re.compile(rb'"_type":"([^"\\]+)"')


def _grouped(store: TenantStore, family: str, keys: Iterable[str]) -> dict[str, list[str]]:
    """Entity keys by the mirror hash that holds them (entities anchored on their own key)."""
    by_hash: dict[str, list[str]] = {}
    for key in dict.fromkeys(keys):
        by_hash.setdefault(store.mirror_key(scope_of(entity_placement(family, key))), []).append(key)
    return by_hash


async def known_users(store: TenantStore, user_ids: Iterable[str]) -> set[str]:
    """The ids among `user_ids` that are `azure_user` entities in the mirror."""
    by_hash = _grouped(store, USER_FAMILY, user_ids)
    if not by_hash:
        return set()
    pipeline: Any = store.redis.pipeline(transaction=False)
    for mirror_key, keys in by_hash.items():
        for key in keys:
            pipeline.hexists(mirror_key, key)
    flags = await pipeline.execute()
    ordered = [key for keys in by_hash.values() for key in keys]
    return {key for key, flag in zip(ordered, flags, strict=True) if flag}


async def device_types(store: TenantStore, device_ids: Iterable[str]) -> dict[str, str]:
    """Managed device id -> the `_type` of its device entity, for the devices the mirror has."""
    by_hash = _grouped(store, DEVICE_FAMILY, device_ids)
    if not by_hash:
        return {}
    pipeline: Any = store.redis.pipeline(transaction=False)
    for mirror_key, keys in by_hash.items():
        pipeline.hmget(mirror_key, keys)
    answers = await pipeline.execute()
    types: dict[str, str] = {}
    for keys, values in zip(by_hash.values(), answers, strict=True):
        for key, raw in zip(keys, values, strict=True):
            match = _TYPE.search(raw) if raw else None
            if match:
                types[key] = match.group(1).decode()
    return types
