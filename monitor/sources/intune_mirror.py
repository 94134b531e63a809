"""What the Intune sweep asks of the mirror while it maps: does a user exist, what `_type` is a device.

A relationship needs both of its ends. Device statuses, install-report rows and detected-app device
lists name a managed device by id only, while the relationship `_type` depends on the device's
`_type` (`smartphone_has_intune_noncompliance_finding`); the device pass has just written every
device entity, so the mirror answers, one round trip per page, without the sweep holding a table of
all devices in memory.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson

from monitor.mirror_codec import pack_key
from monitor.model.intune import DEVICE_FAMILY, USER_FAMILY
from monitor.model.types import entity_placement
from monitor.scopes import scope_of
from monitor.store import TenantStore


def _grouped(store: TenantStore, family: str, keys: Iterable[str]) -> dict[str, list[str]]:
    """Entity keys by the mirror hash that holds them (entities anchored on their own key)."""
    by_hash: dict[str, list[str]] = {}
    for key in dict.fromkeys(keys):
        by_hash.setdefault(store.mirror_key(scope_of(entity_placement(family, key))), []).append(key)
    return by_hash


async def known_users(store: TenantStore, user_ids: Iterable[str]) -> set[str]:
    """The ids among `user_ids` that are `azure_user` entities in the mirror (one script call:
    `FIELDS_EXIST`, not a command per user)."""
    by_hash = _grouped(store, USER_FAMILY, user_ids)
    if not by_hash:
        return set()
    await store.upgrade()
    script: Any = store.redis.register_script(FIELDS_EXIST)
    flags = _text(await script(keys=list(by_hash), args=_fields_args(by_hash)))
    ordered = [key for keys in by_hash.values() for key in keys]
    return {key for key, flag in zip(ordered, flags, strict=True) if flag == "1"}


def _fields_args(by_hash: dict[str, list[str]]) -> list[bytes]:
    """The fields of `by_hash`'s keys as two arguments (`RECORD_TYPES`, `FIELDS_EXIST`): per hash the
    lengths of its fields, and the fields one after another."""
    fields = [[pack_key(key) for key in keys] for keys in by_hash.values()]
    sizes = orjson.dumps([[len(field) for field in hash_fields] for hash_fields in fields])
    return [sizes, b"".join(f for hash_fields in fields for f in hash_fields)]


async def device_types(
    store: TenantStore, device_ids: Iterable[str], cache: dict[str, str | None] | None = None
) -> dict[str, str | None]:
    """Managed device id -> the `_type` of its device entity (None: not in the mirror), for every id
    of `device_ids` (with `cache`, the cache itself, which holds them and the sweep's others).

    One script call: Redis reads the records and returns only their `_type`s, so a page of a thousand
    statuses costs a few kilobytes of answer instead of the thousand device records. With `cache`
    (one sweep's, filled after its device pass wrote every device), each device is read once.
    """
    if cache is None:
        return await _read_types(store, list(dict.fromkeys(device_ids)))
    missing = {device for device in device_ids if device not in cache}
    if missing:
        cache.update(await _read_types(store, list(missing)))
    return cache  # every device asked for is in it: a page's worth of copies saved


async def _read_types(store: TenantStore, device_ids: list[str]) -> dict[str, str | None]:
    by_hash = _grouped(store, DEVICE_FAMILY, device_ids)
    if not by_hash:
        return {}
    await store.upgrade()
    script: Any = store.redis.register_script(RECORD_TYPES)  # a hash of the text; EVALSHA after the first
    answers = await script(keys=list(by_hash), args=_fields_args(by_hash))
    ordered = [key for keys in by_hash.values() for key in keys]
    return {key: _text(kind) or None for key, kind in zip(ordered, answers, strict=True)}


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


# The start of a script over the fields `_fields_args` names: for each, `field` in hash KEYS[k], and
# `out` to answer with.
_EACH_FIELD = """
local lists = cjson.decode(ARGV[1])
local names, at = ARGV[2], 1
local out = {}
for k = 1, #KEYS do
  for _, size in ipairs(lists[k]) do
    local field = string.sub(names, at, at + size - 1)
    at = at + size
"""

# The `_type` of mirrored records, read inside Redis (read-only).
# KEYS = mirror hashes (all of one tenant: one hash tag, one cluster slot).
# ARGV[1] = a JSON array with, per KEYS[k], the array of the lengths of its fields; ARGV[2] = the
#   fields one after another (two strings: a page has thousands of fields, and one argument costs the
#   client a fraction of thousands; fields are bytes, `monitor.mirror_codec`).
# Returns one `_type` per field, in order; "" where the field is absent. An entity's value starts
# with 0x02, its `_type` and a 0x00 byte (`monitor.mirror_codec`). One written before that encoding
# is canonical JSON (sorted keys, no spaces), where the top-level `_type` reads as
# `"_type":"<value>"`; the same text inside a string value would have its quotes escaped.
RECORD_TYPES = (
    _EACH_FIELD
    + """
    local raw = redis.call('HGET', KEYS[k], field)
    local found = ''
    if raw and string.byte(raw, 1) == 2 then
      found = string.sub(raw, 2, string.find(raw, '\\0', 2, true) - 1)
    elseif raw then
      found = string.match(raw, '"_type":"([^"\\\\]+)"') or ''
    end
    out[#out + 1] = found
  end
end
return out
"""
)

# Which fields exist (read-only). KEYS and ARGV as for `RECORD_TYPES`. Returns one string with a
# "1" or "0" per field, in order (a page of thousands of fields: one short answer).
FIELDS_EXIST = (
    _EACH_FIELD
    + """
    out[#out + 1] = redis.call('HEXISTS', KEYS[k], field)
  end
end
return table.concat(out)
"""
)
