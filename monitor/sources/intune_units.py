"""Skipping what did not change: an Intune object whose Graph representation is the one the last sweep
mapped costs a digest, not a mapping, a read of the mirror and a diff.

Graph offers Intune neither delta queries nor change notifications (docs/graph.md 9), so every sweep
reads the whole estate again, and almost all of it is what the last sweep read. A **unit** is what
one mapping call reads: a managed device (with which of its users the mirror knows), a device status
of a policy (with the policy and the device's `_type`), an install-report row of an app (with the app
and the device's `_type`), a detected application's device (with the application and the device's
`_type`). Its **digest** covers all of that, the raw Graph object as canonical JSON and
`MAPPING_VERSION`: equal digests mean the mapping would produce exactly what it produced last time.

Each unit's **record** (`TenantKeys.sweep_units`) is its digest followed by the 8-byte seen-refs of the
objects it mapped to. It is written in the same page commit as those objects, so a record never
describes objects the mirror does not hold. A unit whose digest matches its record is skipped: a
script (`CHECK_UNITS`) adds its refs to the pass's seen set, so deletion by absence still keeps its
objects. Everything else is mapped and committed as before. What this makes safe:

- A change shows in the digest of every unit whose mapping reads it: a compliance status changed on
  an unchanged device changes that status's unit; a device whose `_type` changed changes the units of
  its statuses, install rows and detected applications (the `_type` is read from the mirror for them,
  as the mapping reads it); a user who appears or leaves changes the units of the devices naming them.
- `MAPPING_VERSION` is a digest of the mapping's source code (`monitor/model/`, the passes and this
  module), so a new version of the mapping maps everything once.
- A unit that produced nothing has no record: it is mapped every time (cheaply: it maps to nothing).
- A record can only go stale the safe way (a unit is mapped again for nothing). After a complete pass,
  the records whose objects were not seen (their unit is gone) are pruned (`PRUNE_UNITS`).
- A first sweep (no Intune object in the mirror) checks nothing and writes every record.

**Page records.** Checking a unit costs its digest here and, in Redis, a read of its record in one
of 16,384 hashes, whose name travels with every check: on an unchanged sweep that is most of the bytes
sent to Redis. A pass whose list pages are made only of what one sweep cannot see change (the
detected applications: a page is one application's device ids, read with the application and the
`_type`s of those devices, which a sweep reads once) also keeps **page records**, one per part of a
page (`PagePart`: the page's devices fall in parts by their ids alone, so a device that comes or goes
changes one part, not the page): the digest of everything the part's units read (`page_digest`), and
the refs of every object they mapped to. A part whose digest has a record is skipped whole
(`HIT_PAGES`: its refs marked seen, its record carried over), its units neither built nor checked.
This is the units' own rule one level up: equal digests mean every unit of the part read what it read
when the record was written, when each was checked or mapped and committed with the record. Records
live in two generations per pass (`TenantKeys.sweep_pages`): a pass starts by making `current` the
`previous` (`start_pages`), carries over what it finds, writes the records of the parts it maps, and
drops what is left of `previous` at its end, so a record whose units were mapped again since (a part
that changed and then changed back) is never read.
A re-read between sweeps (`PassWriter.commit_rereads`) drops every generation of its pass. A pass
that found a record for every part and left none of `previous` unread saw exactly the units the last
one left: it has no unit records to prune (`PassWriter.finish_pages`).

A page record also names its units (those with a unit record: `page_record`). While every unit record
of the pass is named by one of its page records (`TenantKeys.sweep_pages_complete`: so after a first
sweep, and after each complete pass's prune), a unit that went since was on a part that changed or
went, whose record the next pass does not find: its prune reads only the unit records named by those
(`PRUNE_NAMED`), a few thousand after 1% of the devices changed, instead of every record of the pass
(`PRUNE_UNITS`: a million for 100,000 devices). A pass that starts without that mark (its page records
were dropped, or a pass before it failed part-way and left some of them unread) prunes every record
once, and its records are complete again after it.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

import orjson

from monitor.keys import TenantKeys
from monitor.mirror_codec import packed_key
from monitor.model.intune import APPLICATION_FAMILY, DEVICE_FAMILY, FINDING_FAMILY, POLICY_FAMILY
from monitor.model.types import Kind, Op, Placement, Upsert
from monitor.scopes import ScopeId, bucket_count, scope_of

DIGEST_SIZE = 8
REF_SIZE = 8
# Units checked per script call: a call holds Redis for about a millisecond.
CHECK_CHUNK = 2000
PRUNE_CHUNK = 256


def _mapping_version() -> bytes:
    """A digest of the source of everything a unit's mapping runs (random when it cannot be read, which
    turns skipping off rather than risk skipping a change)."""
    digest = hashlib.blake2b(digest_size=DIGEST_SIZE)
    try:
        model = resources.files("monitor.model")
        sources = resources.files("monitor.sources")
        files = sorted((p for p in model.iterdir() if p.name.endswith(".py")), key=lambda p: p.name)
        files += [sources.joinpath("intune_passes.py"), sources.joinpath("intune_units.py")]
        for path in files:
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
    except OSError:
        return os.urandom(DIGEST_SIZE)
    return digest.digest()


MAPPING_VERSION = _mapping_version()


def seen_ref(placement: Placement, key: str) -> bytes:
    """The 8-byte ref of an object in a pass's seen set (`TenantKeys.round_seen`): the prefix of its
    mirror scope (`scope_prefix`), then a digest of its kind and of its field in the mirror
    (`mirror_codec.pack_key`), so that a scan of the mirror computes it from the scope and fields it
    reads without unpacking them (`field_ref`), and a record's refs say which scopes its objects are in
    (`ref_scope`)."""
    return key_ref(scope_of(placement), key)


def key_ref(scope: ScopeId, key: str) -> bytes:
    """The seen ref of the object `key` in the mirror scope `scope` (`seen_ref`)."""
    return field_ref(scope, packed_key(key)[0])


def field_ref(scope: ScopeId, field: bytes) -> bytes:
    """The seen ref of the object stored under `field` in the mirror scope `scope` (as the mirror
    writes fields today; a field of an earlier layout gives a ref no object has, which a scan then
    checks by its key). Two bytes of scope prefix and six of digest: a collision within a scope could
    only make an absent object look seen, never delete a present one."""
    digest = hashlib.blake2b(_KIND_PREFIX[scope.kind] + field, digest_size=REF_SIZE - 2).digest()
    return _PREFIX_BYTES[scope.kind][scope.family][scope.bucket] + digest


def scope_refs(scope: ScopeId, fields: Sequence[bytes]) -> bytes:
    """`field_ref` of each of `fields` in `scope`, one after another, in one loop (the scan for absent
    objects computes a ref for every field of the scopes it reads)."""
    prefix, kind = _PREFIX_BYTES[scope.kind][scope.family][scope.bucket], _KIND_PREFIX[scope.kind]
    blake2b = hashlib.blake2b
    return b"".join([prefix + blake2b(kind + field, digest_size=REF_SIZE - 2).digest() for field in fields])


_KIND_PREFIX = {kind: f"{kind}:".encode() for kind in ("entity", "relationship")}

# The scopes an Intune pass writes to, numbered from 1: a ref's two-byte prefix is this number in its
# top 4 bits and the scope's bucket in the other 12 (an Intune family has at most 512 buckets). A
# record's refs then name the scopes of its objects, not only their bucket numbers, so the scan for
# absent objects reads only the scopes that held an object of a unit that went. The number 0 is the
# earlier layout's (the prefix was the bucket alone): such a prefix, in a record or owed a scan, stands
# for the scopes of every family with that bucket (`owes_scan`).
SCOPE_CODES: dict[tuple[Kind, str], int] = {
    (kind, family): 1 + 2 * n + (kind == "relationship")
    for n, family in enumerate((DEVICE_FAMILY, POLICY_FAMILY, FINDING_FAMILY, APPLICATION_FAMILY))
    for kind in ("entity", "relationship")
}
_BUCKET_BITS = 12


def scope_prefix(scope: ScopeId) -> int:
    """The two-byte prefix of the seen refs of the objects in `scope`, as a number (`SCOPE_CODES`)."""
    return SCOPE_CODES[(scope.kind, scope.family)] << _BUCKET_BITS | scope.bucket


def _prefix_bytes() -> dict[Kind, dict[str, list[bytes]]]:
    """Every Intune scope's prefix as two bytes, by kind, family and bucket (looked up per object)."""
    table: dict[Kind, dict[str, list[bytes]]] = {"entity": {}, "relationship": {}}
    for kind, family in SCOPE_CODES:
        count = bucket_count(kind, family)
        if count > 1 << _BUCKET_BITS:
            raise ValueError(f"{family} has more buckets than a seen ref's prefix holds")
        table[kind][family] = [scope_prefix(ScopeId(kind, family, b)).to_bytes(2, "big") for b in range(count)]
    return table


_PREFIX_BYTES = _prefix_bytes()


_CODE_SCOPES = {code: kind_family for kind_family, code in SCOPE_CODES.items()}


def ref_scope(ref: bytes) -> ScopeId | None:
    """The scope of the object whose seen ref is `ref` (`scope_prefix`), or None for a ref of the earlier
    layout, whose prefix is a bucket number alone (`owes_scan`)."""
    prefix = int.from_bytes(ref[:2], "big")
    kind_family = _CODE_SCOPES.get(prefix >> _BUCKET_BITS)
    if kind_family is None:
        return None
    return ScopeId(kind_family[0], kind_family[1], prefix & ((1 << _BUCKET_BITS) - 1))


def earlier_prefixes(refs: Iterable[bytes]) -> set[int]:
    """The prefixes of those of `refs` written by the earlier layout (a bucket number alone, which owes
    that bucket of every family a scan: `owes_scan`)."""
    return {int.from_bytes(ref[:2], "big") for ref in refs if ref_scope(ref) is None}


def owes_scan(scope: ScopeId, owed: Collection[int]) -> bool:
    """Whether `scope` is among `owed`, prefixes owed a scan (`scope_prefix`), one of the earlier
    layout (its bucket alone, below 4,096) included."""
    return scope_prefix(scope) in owed or scope.bucket in owed


# The member of `TenantKeys.sweep_scan_owed` that owes a scan of every scope.
ALL_SCOPES = "*"


@dataclass(slots=True)
class Unit:
    """One mapping call of a pass: its id, its digest, and how to map it (called only when needed)."""

    uid: str
    digest: bytes
    mapping: Callable[[], Sequence[Op]]

    @property
    def bucket(self) -> int:
        return unit_bucket(self.uid)


def unit_bucket(uid: str) -> int:
    """Which of its pass's unit hashes (`TenantKeys.sweep_units`) holds the record of unit `uid`."""
    return int(uid[:8], 16) % TenantKeys.SWEEP_UNIT_BUCKETS


def unit(source: str, unit_id: str, raw: Any, context: Any, mapping: Callable[[], Sequence[Op]]) -> Unit:
    """The unit `unit_id` of pass `source` (`seen_source`): `raw` is the Graph object as read,
    `context` everything else its mapping reads (JSON-serializable)."""
    return unit_of(source, unit_id, orjson.dumps([context, raw], option=orjson.OPT_SORT_KEYS), mapping)


def unit_of(source: str, unit_id: str, content: bytes, mapping: Callable[[], Sequence[Op]]) -> Unit:
    """`unit` with what the mapping reads already serialized (`content`: every byte of it counts)."""
    uid = hashlib.blake2b(f"{source}\0{unit_id}".encode(), digest_size=8).hexdigest()
    return Unit(uid, hashlib.blake2b(content, digest_size=DIGEST_SIZE, key=MAPPING_VERSION).digest(), mapping)


PAGE_DIGEST_SIZE = 16


def page_digest(source: str, content: bytes) -> bytes:
    """The digest of a list page of pass `source` (`seen_source`): `content` is everything its units
    read, serialized (every byte of it counts)."""
    digest = hashlib.blake2b(source.encode() + b"\0", digest_size=PAGE_DIGEST_SIZE, key=MAPPING_VERSION)
    digest.update(content)
    return digest.digest()


@dataclass(slots=True)
class PagePart:
    """A part of a list page with a page record of its own: its digest (`page_digest`), how its units
    are built (called only when it has no record) and how many Graph objects it holds."""

    digest: bytes
    units: Callable[[], Sequence[Unit]]
    objects: int


# A page record starts with the number of the units it names, in this many bytes (`page_record`).
_COUNT_BYTES = 4


def page_record(uids: Sequence[str], refs: bytes) -> bytes:
    """The record of a part of a page (`TenantKeys.sweep_pages`): the units of it that have a unit record
    (their ids, 8 bytes each), then the refs of every object its units mapped to."""
    return len(uids).to_bytes(_COUNT_BYTES, "big") + bytes.fromhex("".join(uids)) + refs


def page_record_units(record: bytes) -> list[str]:
    """The unit ids a page record names (`page_record`)."""
    count = int.from_bytes(record[:_COUNT_BYTES], "big")
    named = record[_COUNT_BYTES : _COUNT_BYTES + 8 * count]
    return [named[at : at + 8].hex() for at in range(0, len(named), 8)]


# The digest of a record written between sweeps (`PassWriter.commit_rereads`): a unit's digest is a
# keyed hash, so no unit matches it in practice, and a record carrying it is mapped again by the next sweep.
STALE_DIGEST = bytes(DIGEST_SIZE)


def stale_record(earlier: bytes | None, refs: bytes) -> bytes | None:
    """The record of a unit re-read between sweeps: `STALE_DIGEST`, then the refs of its earlier record
    followed by those of `refs` it did not name (None when both are empty: no record, as for a unit
    that maps to nothing)."""
    known = b"" if earlier is None else earlier[DIGEST_SIZE:]
    have = {known[at : at + REF_SIZE] for at in range(0, len(known), REF_SIZE)}
    extra = b"".join(
        refs[at : at + REF_SIZE] for at in range(0, len(refs), REF_SIZE) if refs[at : at + REF_SIZE] not in have
    )
    merged = known + extra
    return STALE_DIGEST + merged if merged else None


def record(digest: bytes, ops: Sequence[Op]) -> tuple[bytes, bytes]:
    """(the seen refs of `ops`' upserts, the unit's record: digest then refs)."""
    refs = b"".join(seen_ref(op.placement, op.key) for op in ops if isinstance(op, Upsert))
    return refs, digest + refs


# The start of the scripts that mark refs seen in the seen set KEYS[1]: `see(rec, from)` adds the
# 8-byte refs of `rec` from byte `from` on, a thousand per SADD; `seen(ttl)` adds the last of them
# and sets the set's time to live.
_SEE_REFS = """
local pending = {}
local function see(rec, from)
  for at = from, #rec, 8 do
    pending[#pending + 1] = string.sub(rec, at, at + 7)
    if #pending == 1000 then redis.call('SADD', KEYS[1], unpack(pending)); pending = {} end
  end
end
local function seen(ttl)
  if #pending > 0 then redis.call('SADD', KEYS[1], unpack(pending)) end
  redis.call('EXPIRE', KEYS[1], ttl)
end
"""

# Which units need mapping. KEYS[1] = the pass's seen set; KEYS[2..] = unit bucket hashes.
# ARGV[1] = a JSON array: per unit its KEYS index and its id; ARGV[2] = the units' digests, 8 bytes
# each, in order; ARGV[3] = the seen set's time to live; ARGV[4] = "1" to also get the refs of the
# skipped units (for a page record).
# A unit whose record starts with its digest is skipped: the refs that follow the digest are added to
# the seen set. Returns, for each other unit, its (1-based) position and its record (false: none);
# with ARGV[4] = "1", then the skipped units' refs, one string per unit, in order (for page records).
CHECK_UNITS = (
    _SEE_REFS
    + """
local a = cjson.decode(ARGV[1])
local digests = ARGV[2]
local out, kept = {}, {}
for n = 1, #a / 2 do
  local rec = redis.call('HGET', KEYS[a[2 * n - 1]], a[2 * n])
  if rec and string.sub(rec, 1, 8) == string.sub(digests, 8 * n - 7, 8 * n) then
    kept[#kept + 1] = string.sub(rec, 9)
    see(rec, 9)
  else
    out[#out + 1] = n
    out[#out + 1] = rec
  end
end
seen(ARGV[3])
if ARGV[4] == '1' then out[#out + 1] = kept end
return out
"""
)

# Which parts of a page are known by their digests. KEYS[1] = the pass's seen set, KEYS[2] = its
# current page records, KEYS[3] = its previous ones; ARGV[1] = the parts' digests, 16 bytes each, in
# order; ARGV[2] = the seen set's time to live.
# A record found in `current` (read twice in this pass) or `previous` (moved to `current`) has its refs
# added to the seen set. Returns the (1-based) positions of the parts that have no record.
HIT_PAGES = (
    _SEE_REFS
    + """
local digests, unknown = ARGV[1], {}
for n = 1, #digests / 16 do
  local digest = string.sub(digests, 16 * n - 15, 16 * n)
  local rec = redis.call('HGET', KEYS[2], digest)
  if not rec then
    rec = redis.call('HGET', KEYS[3], digest)
    if rec then
      redis.call('HSET', KEYS[2], digest, rec)
      redis.call('HDEL', KEYS[3], digest)
    end
  end
  if rec then
    see(rec, 5 + 8 * (((string.byte(rec, 1) * 256 + string.byte(rec, 2)) * 256 + string.byte(rec, 3)) * 256
      + string.byte(rec, 4)))
  else
    unknown[#unknown + 1] = n
  end
end
seen(ARGV[2])
return unknown
"""
)

# A pass starts its page records: KEYS[1] = current, KEYS[2] = previous, KEYS[3] = gone, KEYS[4] = the
# pass's `sweep_pages_complete`, KEYS[5..6] = the page records of the earlier layout. What the last pass
# wrote (or, had it none, what it found) becomes `previous`; what a pass before left for a prune that
# never ran, the earlier layout's records and the mark that the records are complete go (the mark comes
# back when the pass's records are complete again). Returns 1 if they were complete.
START_PAGES = """
local complete = redis.call('EXISTS', KEYS[4])
redis.call('UNLINK', KEYS[3], KEYS[4], KEYS[5], KEYS[6])
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('RENAME', KEYS[1], KEYS[2]) end
return complete
"""

# The start of the scripts that drop the records of units that are gone, after a complete pass: a record
# whose first ref is not in the pass's seen set KEYS[1] belongs to a unit the pass did not see (a seen
# unit adds all its refs). `prune(key, names, recs)` drops those of `recs` (the records of the fields
# `names` of hash `key`; false where there is none, at most a thousand), and remembers their refs;
# `owe(all)` adds them to the objects owed a check KEYS[3] (`TenantKeys.sweep_owed_refs`), in the same
# call, or with `all` = "*" (records not known to be complete, or of an earlier layout) owes a scan of
# every scope (KEYS[2], `TenantKeys.sweep_scan_owed`) if any record went, and returns how many went.
_PRUNE = """
local dropped, owed = 0, {}
local function prune(key, names, recs)
  local firsts, at = {}, {}
  for j = 1, #names do
    if recs[j] then
      firsts[#firsts + 1] = string.sub(recs[j], 9, 16)
      at[#at + 1] = j
    end
  end
  if #firsts == 0 then return end
  local flags = redis.call('SMISMEMBER', KEYS[1], unpack(firsts))
  local gone = {}
  for i = 1, #flags do
    if flags[i] == 0 then
      local rec = recs[at[i]]
      gone[#gone + 1] = names[at[i]]
      for p = 9, #rec, 8 do owed[string.sub(rec, p, p + 7)] = true end
    end
  end
  if #gone > 0 then redis.call('HDEL', key, unpack(gone)) end
  dropped = dropped + #gone
end
local function owe(all)
  if all == '*' then
    if dropped > 0 then redis.call('SADD', KEYS[2], '*') end
    return dropped
  end
  local refs = {}
  for ref in pairs(owed) do refs[#refs + 1] = ref end
  for i = 1, #refs, 1000 do redis.call('SADD', KEYS[3], unpack(refs, i, math.min(i + 999, #refs))) end
  return dropped
end
"""

# Drop the records of the units that are gone among all of a pass's (`_PRUNE`). KEYS[4..] = unit bucket
# hashes, each read whole; ARGV[1] = "*" or "". Returns the number of records dropped.
PRUNE_UNITS = (
    _PRUNE
    + """
for k = 4, #KEYS do
  local flat = redis.call('HGETALL', KEYS[k])
  for s = 1, #flat, 2000 do
    local names, recs = {}, {}
    for i = s, math.min(s + 1999, #flat), 2 do
      names[#names + 1] = flat[i]
      recs[#recs + 1] = flat[i + 1]
    end
    prune(KEYS[k], names, recs)
  end
end
return owe(ARGV[1])
"""
)

# Drop the records of the units that are gone among those named (`_PRUNE`; `intune_sweep.prune_pages`).
# KEYS[4..] = unit bucket hashes; ARGV[1] = a JSON array of the number of unit ids named in each;
# ARGV[2] = the unit ids, 16 characters each, in that order; ARGV[3] = "*" or "". Returns the number of
# records dropped.
PRUNE_NAMED = (
    _PRUNE
    + """
local counts = cjson.decode(ARGV[1])
local ids, at = ARGV[2], 1
for k = 4, #KEYS do
  local names = {}
  for j = 1, counts[k - 3] do
    names[j] = string.sub(ids, at, at + 15)
    at = at + 16
  end
  for s = 1, #names, 1000 do
    local slice = {unpack(names, s, math.min(s + 999, #names))}
    prune(KEYS[k], slice, redis.call('HMGET', KEYS[k], unpack(slice)))
  end
end
return owe(ARGV[3])
"""
)
