"""A tenant's state in Redis: the mirror, the change log, and the bookkeeping around them.

The mirror holds every mapped JupiterOne object of the tenant, one Redis hash per scope
(`monitor.scopes`). `commit()` applies one page of operations: it reads the current records,
diffs them against the new ones (pure, `monitor.diff`), and writes the mirror, the change records,
the sequence counter and the scopes to publish in **one script** (`COMMIT_PAGE`), which first
checks that no scope it writes changed since the read, so a page is either wholly applied with
its change records or not at all. Re-applying a page that was already applied finds nothing
changed and emits nothing: a round that is replayed after a crash emits nothing twice.

A store `fenced` by a lease (`monitor.leases`) makes every write that a stale runner could get wrong
(page commits, delta links, seen sets, sink cursors) conditional on the lease, checked inside Redis
in the same step; a refused write raises `LeaseLost`.
"""

from __future__ import annotations

import asyncio
import logging
import zlib
from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
import zstandard

from monitor import metrics
from monitor.diff import Change, diff
from monitor.keys import ADVANCE_CURSOR, COMMIT_PAGE, FENCED_WRITE, FIND_MEMBERSHIPS, READ_PAGE, TenantKeys
from monitor.leases import Fence, LeaseLost
from monitor.mirror_codec import (
    decode_entry,
    decode_value,
    encode_value,
    is_current,
    pack_key,
    packed_key,
    unpack_key,
)
from monitor.model.common import iso_ms as iso_ms  # noqa: PLC0414
from monitor.model.types import Delete, JsonObject, Kind, Op, Patch, Placement, Upsert
from monitor.records import ChangeRecord, decode_record
from monitor.redis_conn import Redis
from monitor.retry import RetryPolicy
from monitor.scopes import ScopeId, bucket_count, bucket_of, scope_of

# `iso_ms` lives in the pure core (monitor.model.common) and is re-exported above for its callers.

log = logging.getLogger(__name__)

SlotId = tuple[str, str]  # (mirror hash key, object _key)
# A page that collides with another writer is read and recomputed, after a short jittered wait.
COMMIT_RETRIES = RetryPolicy(max_retries=64, base_delay=0.002, max_delay=0.1)
# Items per command inside the scripts: Lua's unpack() has a stack limit of about 8,000.
UNPACK_CHUNK = 1000
# Membership scopes per FIND_MEMBERSHIPS call: each call holds Redis for a few milliseconds at the
# benchmark's ~245 memberships per scope.
MEMBERSHIP_SCAN_CHUNK = 128
# The expected version of a scope that a commit does not check (`COMMIT_PAGE`; a `fresh` page).
ANY_VERSION = "*"
# What a fenced script returns when the lease is not the writer's.
FENCE_REFUSED = -2
# A page's change records are compressed with zstd's level 1 (they repeat the same property names, so
# they shrink about fifteenfold): a first round compresses gigabytes of them, and zstd does it four
# times as fast as zlib's fastest level, to a smaller size. Entries written with zlib before (field
# `z`) or uncompressed (`r`) still read (`_entry_records`).
_LOG_COMPRESSOR = zstandard.ZstdCompressor(level=1)
_LOG_DECOMPRESSOR = zstandard.ZstdDecompressor()


def canonical(obj: JsonObject) -> bytes:
    """The stored form of a record: compact JSON with sorted keys, so equal records are equal bytes."""
    return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)


@dataclass(frozen=True, slots=True)
class MemberOf:
    """Add or remove `group` in the set of groups that contain placeholder member `member`."""

    member: str
    group: str
    present: bool


@dataclass(frozen=True, slots=True)
class Residue:
    """Set (or, with None or {}, remove) the Graph residue of the entity at `placement`/`key`
    (`TenantKeys.graph_residue`)."""

    placement: Placement
    key: str
    value: JsonObject | None


@dataclass(frozen=True, slots=True)
class Parked:
    """Set (or, with None, remove) field `field` of the parked hash of `owner` (`TenantKeys.parked`)."""

    owner: str
    field: str
    value: bytes | None


@dataclass(frozen=True, slots=True)
class Flag:
    """Add `member` to, or remove it from, a set of ids (`TenantKeys.soft_deleted`), or set / remove
    its entry in a hash (`TenantKeys.member_names`, with `value`)."""

    member: str
    value: bytes | None


@dataclass(frozen=True, slots=True)
class RawField:
    """HSET `field` of hash `key` to `value` (bytes both; e.g. a sweep's unit records)."""

    key: str
    field: bytes
    value: bytes


@dataclass(frozen=True, slots=True)
class RawMembers:
    """SADD to set `key` the members cut from `members`, `size` bytes each; the set expires after
    `ttl` seconds when given (e.g. the 8-byte refs of a sweep's seen set)."""

    key: str
    members: bytes
    size: int
    ttl: int | None = None


@dataclass(slots=True)
class PageWrite:
    """Everything one page changes, committed together.

    Several writes of one field in one page are allowed; the last one counts.
    """

    ops: list[Op] = field(default_factory=list)
    member_of: list[MemberOf] = field(default_factory=list)
    # Keys read by a full round, so its end can tell which mirrored objects Graph no longer has.
    seen: list[str] = field(default_factory=list)
    residues: list[Residue] = field(default_factory=list)
    parked: list[Parked] = field(default_factory=list)
    soft_deleted: list[Flag] = field(default_factory=list)  # value b"" adds, None removes
    member_names: list[Flag] = field(default_factory=list)
    raw_fields: list[RawField] = field(default_factory=list)
    raw_members: list[RawMembers] = field(default_factory=list)
    raw_sets: list[tuple[str, str]] = field(default_factory=list)  # (set key, member) to SADD
    # The objects of `ops` are expected to be absent from the mirror (a sweep's units that are new): the
    # commit then does not read them and writes only if each still is absent, or reads them and
    # commits as usual when one is not (`TenantStore.commit`).
    fresh: bool = False

    @property
    def bookkeeping(self) -> bool:
        """Whether the page writes anything besides mirror objects (then it is committed even when
        no object changed)."""
        return bool(
            self.member_of
            or self.seen
            or self.residues
            or self.parked
            or self.soft_deleted
            or self.member_names
            or self.raw_fields
            or self.raw_members
            or self.raw_sets
        )


@dataclass(slots=True)
class _Slot:
    """One object touched by the page: where it lives, what the mirror had, what it will have."""

    kind: Kind
    mirror_key: str
    scope: ScopeId
    key: str
    field: bytes  # the key as the hash field (`mirror_codec.packed_key`)
    uuids: tuple[bytes, ...]  # the key's UUIDs, which its stored value is tokenized with
    before_raw: bytes | None
    current: JsonObject | None = None
    current_raw: bytes | None = None
    parsed: bool = False
    reason: str | None = None  # of the last operation on the object

    def load(self) -> JsonObject | None:
        if not self.parsed:
            self.current = None if self.current_raw is None else orjson.loads(self.current_raw)
            self.parsed = True
        return self.current

    def set(self, obj: JsonObject | None) -> None:
        self.current, self.parsed = obj, True
        self.current_raw = None if obj is None else canonical(obj)


@dataclass(frozen=True, slots=True)
class DeltaState:
    link: str
    fingerprint: str
    saved_at: float


class TenantStore:
    """Reads and writes one tenant's keys. Stateless apart from the connection."""

    def __init__(self, redis: Redis, tenant: str, fence: Fence | None = None) -> None:
        self.redis = redis
        self.tenant = tenant
        self.fence = fence
        self.keys = TenantKeys(tenant)
        self._mirror_keys: dict[ScopeId, str] = {}
        self._metric_names: dict[tuple[str, str, str], str] = {}
        self._scope_names: dict[ScopeId, str] = {}
        self._record_prefixes: dict[tuple[str, str, str, str], bytes] = {}
        self._read_page: Any = redis.register_script(READ_PAGE)
        self._commit_page: Any = redis.register_script(COMMIT_PAGE)
        self._find_memberships: Any = redis.register_script(FIND_MEMBERSHIPS)
        self._upgraded = False
        self._fenced_write: Any = redis.register_script(FENCED_WRITE)
        self._advance_cursor: Any = redis.register_script(ADVANCE_CURSOR)

    def fenced(self, fence: Fence) -> TenantStore:
        """The same tenant's store, its writes applied only while `fence`'s lease holds."""
        return TenantStore(self.redis, self.tenant, fence)

    async def _write_key(self, command: str, key: str, *args: Any) -> None:
        """SET, HSET or DEL `key`; through the fence when the store has one."""
        if self.fence is None:
            redis: Any = self.redis  # redis-py leaves execute_command untyped
            await redis.execute_command(command, key, *args)
            return
        answer = await self._fenced_write(keys=[self.fence.key, key], args=[self.fence.token, command, *args])
        if answer == FENCE_REFUSED:
            raise LeaseLost(self.fence.key)

    def mirror_key(self, scope: ScopeId) -> str:
        key = self._mirror_keys.get(scope)
        if key is None:
            key = self._mirror_keys[scope] = self.keys.mirror(scope)
        return key

    # -- commit -----------------------------------------------------------------------------
    async def commit(self, write: PageWrite, *, source: str, observed_at: datetime) -> list[ChangeRecord]:
        """Apply one page atomically; returns the change records it emitted (maybe none).

        Two round trips: one script reads every object the page touches, the diff runs here, and
        one script writes everything if none of the objects it writes changed in between (another
        source may share an object: a user's sign-in activity). On such a conflict nothing is
        written and the page is recomputed.

        A `fresh` page is first tried in one round trip: its objects are taken to be absent, and the
        script writes only if every object the page touches is absent when it runs (then the records
        computed from "absent" are exactly right); if one is not, nothing is written and the page is
        read and recomputed as above. Two sweep passes writing new objects into the same scopes do
        not collide: each checks its own objects, not the scopes' versions.
        """
        changes, base, stamp = await self._commit(write, source, observed_at)
        return self._records(changes, base, source, stamp)

    async def commit_counts(self, write: PageWrite, *, source: str, observed_at: datetime) -> Counter[str]:
        """Like `commit`, but only counts the records ("<kind> <op>"): a first round of a large
        tenant emits a million of them and nobody needs them as Python objects."""
        changes, _, _ = await self._commit(write, source, observed_at)
        return Counter(f"{change.kind} {change.op}" for _, change in changes)

    async def _commit(
        self, write: PageWrite, source: str, observed_at: datetime
    ) -> tuple[list[tuple[_Slot, Change]], int, str]:
        stamp = iso_ms(observed_at)
        if not write.ops and not write.bookkeeping:
            return [], 0, stamp
        if write.ops:
            await self.upgrade()
        ids: list[SlotId] = []
        placements: dict[SlotId, tuple[Kind, ScopeId]] = {}
        for op in write.ops:
            scope = scope_of(op.placement)
            slot_id = (self.mirror_key(scope), op.key)
            ids.append(slot_id)
            placements[slot_id] = (scope.kind, scope)
        for attempt in range(1, COMMIT_RETRIES.max_retries + 1):
            fresh = write.fresh and attempt == 1
            slots, versions = self._absent_slots(placements) if fresh else await self._read_slots(placements)
            changes = _apply(zip(write.ops, ids, strict=True), slots)
            # A fresh page that changes nothing taken as absent is still written: its checks may find
            # an object there (a delete, a patch) and send it down the reading path.
            if not changes and not write.bookkeeping and not fresh:
                return [], 0, stamp
            base = await self._write(changes, None if fresh else versions, write, source, stamp, slots)
            if base >= 0:
                return changes, base, stamp
            if base == FENCE_REFUSED:
                assert self.fence is not None
                raise LeaseLost(self.fence.key)
            if fresh:  # an object taken to be absent is there: read the page, at once
                continue
            log.debug("tenant %s %s: page changed under us; recomputing", self.tenant, source)
            # Writers that collided would collide again if they all retried at once.
            await asyncio.sleep(COMMIT_RETRIES.delay(attempt, None))
        raise RuntimeError(
            f"tenant {self.tenant}: could not commit a page of {source} after {COMMIT_RETRIES.max_retries} tries"
        )

    async def _read_slots(
        self, placements: dict[SlotId, tuple[Kind, ScopeId]]
    ) -> tuple[dict[SlotId, _Slot], dict[str, str]]:
        """The current value of every object the page touches, and the versions of their scopes."""
        if not placements:
            return {}, {}
        by_hash: dict[str, list[str]] = {}
        scope_names: dict[str, None] = {}
        for (mirror_key, key), (_, scope) in placements.items():
            by_hash.setdefault(mirror_key, []).append(key)
            scope_names[self.scope_name(scope)] = None
        keys = [self.keys.scope_versions]
        args: list[str | int] = [len(scope_names), *scope_names]
        packed: list[tuple[bytes, tuple[bytes, ...]]] = []
        for mirror_key, fields in by_hash.items():
            for start in range(0, len(fields), UNPACK_CHUNK):
                chunk = [packed_key(key) for key in fields[start : start + UNPACK_CHUNK]]
                args += [len(keys) + 1, len(chunk), *(len(field) for field, _ in chunk)]
                packed += chunk
                keys.append(mirror_key)
        values = await self._read_page(keys=keys, args=[orjson.dumps(args), b"".join(f for f, _ in packed)])
        versions = {name: _text(v) if v else "" for name, v in zip(scope_names, values, strict=False)}
        raws = iter(values[len(scope_names) :])
        fields_of = iter(packed)
        slots: dict[SlotId, _Slot] = {}
        for mirror_key, hash_keys in by_hash.items():
            for key in hash_keys:
                raw = next(raws)
                field, uuids = next(fields_of)
                kind, scope = placements[(mirror_key, key)]
                before = decode_value(key, raw, uuids) if isinstance(raw, bytes) else None
                slots[(mirror_key, key)] = _Slot(kind, mirror_key, scope, key, field, uuids, before, None, before)
        return slots, versions

    @staticmethod
    def _absent_slots(placements: dict[SlotId, tuple[Kind, ScopeId]]) -> tuple[dict[SlotId, _Slot], dict[str, str]]:
        """The slots of a `fresh` page, every object taken to be absent (not read)."""
        slots: dict[SlotId, _Slot] = {}
        for (mirror_key, key), (kind, scope) in placements.items():
            field, uuids = packed_key(key)
            slots[(mirror_key, key)] = _Slot(kind, mirror_key, scope, key, field, uuids, None)
        return slots, {}

    def scope_name(self, scope: ScopeId) -> str:
        name = self._scope_names.get(scope)
        if name is None:
            name = self._scope_names[scope] = str(scope)
        return name

    def _records(self, changes: list[tuple[_Slot, Change]], base: int, source: str, stamp: str) -> list[ChangeRecord]:
        records: list[ChangeRecord] = []
        for n, (slot, change) in enumerate(changes, start=1):
            record: ChangeRecord = {
                "seq": base + n,
                "tenant": self.tenant,
                "source": source,
                "op": change.op,
                "kind": change.kind,
                "type": change.type,
                "key": change.key,
                "changed": list(change.changed),
                "before": change.before,
                "after": change.after,
                "observedAt": stamp,
            }
            if slot.reason is not None:
                record["reason"] = slot.reason
            records.append(record)
        return records

    def _record_line(self, slot: _Slot, change: Change, source: str, stamp: bytes) -> bytes:
        """A change record's JSON without `seq`, splicing in the stored bytes of `before` and
        `after` instead of serializing them again (they are most of the record)."""
        prefix = self._record_prefixes.get((source, change.op, change.kind, change.type))
        if prefix is None:
            head = {"tenant": self.tenant, "source": source, "op": change.op, "kind": change.kind, "type": change.type}
            prefix = self._record_prefixes[(source, change.op, change.kind, change.type)] = orjson.dumps(head)[:-1]
        return b"".join(
            (
                prefix,
                b',"key":',
                orjson.dumps(change.key),
                b',"changed":',
                orjson.dumps(change.changed),
                b',"before":',
                slot.before_raw or b"null",
                b',"after":',
                slot.current_raw or b"null",
                b',"observedAt":"',
                stamp,
                b'"' if slot.reason is None else b'","reason":' + orjson.dumps(slot.reason),
                b"}",
            )
        )

    def _metric(self, source: str, kind: str, op: str) -> str:
        name = self._metric_names.get((source, kind, op))
        if name is None:
            name = f'monitor_changes_total{{source="{source}",kind="{kind}",op="{op}"}}'
            self._metric_names[(source, kind, op)] = name
        return name

    async def _write(
        self,
        changes: list[tuple[_Slot, Change]],
        versions: dict[str, str] | None,
        write: PageWrite,
        source: str,
        stamp: str,
        slots: dict[SlotId, _Slot],
    ) -> int:
        """Write the page; `versions` None for a `fresh` page (every slot checked absent instead of
        the scopes' versions checked)."""
        script = _CommitScript(self.keys.seq, self.keys.changes, self.keys.scope_versions, self.fence)
        if versions is None:
            for slot in slots.values():
                script.absent(slot.mirror_key, slot.field)
        written: dict[str, None] = {}
        filled: dict[str, None] = {}
        counters: Counter[str] = Counter()
        stamp_bytes = stamp.encode()
        for slot, change in changes:
            script.record(self._record_line(slot, change, source, stamp_bytes))
            name = self.scope_name(slot.scope)
            if slot.current_raw is None:
                script.delete_field(slot.mirror_key, slot.field)
            else:
                script.put_field(slot.mirror_key, slot.field, _stored(slot))
                filled[name] = None
            written[name] = None
            counters[self._metric(source, change.kind, change.op)] += 1
        for name in written:
            script.check(name, ANY_VERSION if versions is None else versions.get(name, ""))
            script.stamp(self.keys.dirty, name)
        for name in filled:
            script.add(self.keys.scopes, name)
        for metric, count in counters.items():
            script.incr(self.keys.metrics, metric, count)
        for member_of in write.member_of:
            key = self.keys.member_of(member_of.member)
            (script.add if member_of.present else script.remove)(key, member_of.group)
        self._write_directory_state(script, write)
        self._write_bookkeeping(script, write, source)
        keys, args = script.build()
        base: int = await self._commit_page(keys=keys, args=args)
        return base

    def _write_bookkeeping(self, script: _CommitScript, write: PageWrite, source: str) -> None:
        """The page's raw fields and members (a sweep's unit records and seen refs) and its seen keys."""
        for raw in write.raw_fields:
            script.put_field(raw.key, raw.field, raw.value)
        for members in write.raw_members:
            script.add_binary(members.key, members.members, members.size)
            if members.ttl is not None:
                script.expire(members.key, members.ttl)
        for key, member in write.raw_sets:
            script.add(key, member)
        if write.seen:
            seen = self.keys.round_seen(source)
            for key in write.seen:
                script.add(seen, key)
            script.expire(seen, TenantKeys.ROUND_SEEN_TTL)

    def _write_directory_state(self, script: _CommitScript, write: PageWrite) -> None:
        """Graph residues, parked memberships, the soft-deleted set and member names (the last
        write of each field wins: the script groups sets before deletes, so order is settled here)."""
        fields: dict[tuple[str, str], bytes | None] = {}
        for residue in write.residues:
            key = self.keys.graph_residue(residue.placement.family)
            fields[(key, residue.key)] = canonical(residue.value) if residue.value else None
        parked_keys: dict[str, None] = {}
        for parked in write.parked:
            parked_keys[self.keys.parked(parked.owner)] = None
            fields[(self.keys.parked(parked.owner), parked.field)] = parked.value
        for name in write.member_names:
            fields[(self.keys.member_names, name.member)] = name.value
        for (key, field_name), value in fields.items():
            if value is None:
                script.delete(key, field_name)
            else:
                script.put(key, field_name, value)
        for key in parked_keys:
            script.expire(key, TenantKeys.PARKED_TTL)
        members = {flag.member: flag.value is not None for flag in write.soft_deleted}
        for member, present in members.items():
            (script.add if present else script.remove)(self.keys.soft_deleted, member)

    def _pipeline(self) -> Any:
        # redis-py types pipeline commands as awaitables; they only queue. `Any` keeps the
        # strict checker from demanding awaits that would be wrong here.
        return self.redis.pipeline(transaction=False)

    # -- the mirror's storage format ----------------------------------------------------------
    async def upgrade(self) -> None:
        """Make sure every mirror entry is stored as `monitor.mirror_codec` writes it, before any is
        read or written by key (a key's field changed when UUIDs were packed, so an entry written by
        an earlier version would not be found under it). Once per tenant and process: after a
        rewrite of the earlier entries, `TenantKeys.mirror_format` says it is done. Readers of whole
        scopes (the publisher) read both forms, but wait for it too: an entity of an earlier scope
        layout is in another scope until it is moved.
        """
        if self._upgraded:
            return
        if _text(await self.redis.get(self.keys.mirror_format) or b"") != TenantKeys.MIRROR_FORMAT:
            for scope in await self.known_scopes():
                await self._upgrade_scope(scope)
            await self.redis.set(self.keys.mirror_format, TenantKeys.MIRROR_FORMAT)
        self._upgraded = True

    async def _upgrade_scope(self, scope: ScopeId) -> None:
        """Rewrite the earlier entries of one scope, unless another writer commits to it meanwhile (then
        read it again). The objects stay what they were: no change records, no dirty mark.

        An entity found outside its own scope is moved there: groups and devices were once cut into
        fewer entity scopes than their relationships (32 and 256, now 4,096 and 512; `monitor.scopes`),
        and a key is looked up in its own scope only. An entry its own scope already holds was written
        there by this version, and wins."""
        name, mirror_key = self.scope_name(scope), self.mirror_key(scope)
        for attempt in range(1, COMMIT_RETRIES.max_retries + 1):
            version = await self.redis.hget(self.keys.scope_versions, name)
            entries: dict[Any, Any] = await self.redis.hgetall(mirror_key)
            script = _CommitScript(self.keys.seq, self.keys.changes, self.keys.scope_versions)
            script.check(name, _text(version) if version else "")
            moves: dict[ScopeId, list[tuple[Any, bytes, bytes]]] = {}
            earlier = 0
            for stored, value in entries.items():
                key = unpack_key(stored)
                home = _home(scope, key)
                current = is_current(stored, value, key)
                if current and home == scope:
                    continue
                earlier += 1
                packed = pack_key(key)
                encoded = value if current else self._reencoded(scope, key, value)
                if home != scope:
                    script.delete_field(mirror_key, stored)
                    moves.setdefault(home, []).append((stored, packed, encoded))
                    continue
                if packed != stored:
                    script.delete_field(mirror_key, stored)
                if packed == stored or packed not in entries:  # an entry already rewritten wins
                    script.put_field(mirror_key, packed, encoded)
            if not earlier:
                return
            await self._plan_moves(script, moves)
            keys, args = script.build()
            if await self._commit_page(keys=keys, args=args) >= 0:
                return
            await asyncio.sleep(COMMIT_RETRIES.delay(attempt, None))
        raise RuntimeError(f"tenant {self.tenant}: could not rewrite mirror scope {name}")

    @staticmethod
    def _reencoded(scope: ScopeId, key: str, value: bytes) -> bytes:
        raw = decode_value(key, value)
        entity_type = _loads(raw).get("_type") if scope.kind == "entity" else None
        return encode_value(key, raw, entity_type)

    async def _plan_moves(self, script: _CommitScript, moves: dict[ScopeId, list[tuple[Any, bytes, bytes]]]) -> None:
        """Add to `script` the entries moving into other scopes, each checked at its version and
        listed among the known scopes; an entry the scope already holds is left as it is."""
        for home, moving in moves.items():
            home_name, home_key = self.scope_name(home), self.mirror_key(home)
            version = await self.redis.hget(self.keys.scope_versions, home_name)
            script.check(home_name, _text(version) if version else "")
            present = await self.redis.hmget(home_key, [packed for _, packed, _ in moving])
            for (_, packed, encoded), there in zip(moving, present, strict=True):
                if there is None:
                    script.put_field(home_key, packed, encoded)
            script.add(self.keys.scopes, home_name)

    # -- reading the mirror -------------------------------------------------------------------
    async def get(self, placement: Placement, key: str) -> JsonObject | None:
        await self.upgrade()
        raw = await self.redis.hget(self.keys.mirror(scope_of(placement)), pack_key(key))
        return None if raw is None else _loads(decode_value(key, raw))

    async def scope_objects(self, scope: ScopeId) -> dict[str, JsonObject]:
        await self.upgrade()  # an object of an earlier layout may still sit in another scope
        raw = await self.redis.hgetall(self.keys.mirror(scope))
        objects = {}
        for stored, value in raw.items():
            key, json = decode_entry(stored, value)
            objects[key] = _loads(json)
        return objects

    async def scope_keys(self, scope: ScopeId, prefix: str = "") -> list[str]:
        """Keys in a scope, optionally only those starting with `prefix` (e.g. a group's memberships).

        A scope holds a few hundred objects, so HKEYS (one round trip) beats an HSCAN loop.
        """
        keys = (unpack_key(k) for k in await self.redis.hkeys(self.keys.mirror(scope)))
        return [k for k in keys if k.startswith(prefix)] if prefix else list(keys)

    async def mirror_values(self, wanted: Mapping[ScopeId, Sequence[str]]) -> dict[ScopeId, list[bytes | None]]:
        """The canonical JSON of some objects of some scopes (None where absent), in one round trip."""
        await self.upgrade()
        pipeline: Any = self.redis.pipeline(transaction=False)
        for scope, keys in wanted.items():
            pipeline.hmget(self.mirror_key(scope), [pack_key(key) for key in keys])
        answers: list[list[bytes | None]] = await pipeline.execute() if wanted else []
        return {
            scope: [None if raw is None else decode_value(key, raw) for key, raw in zip(keys, raws, strict=True)]
            for (scope, keys), raws in zip(wanted.items(), answers, strict=True)
        }

    async def known_scopes(self, kind: Kind | None = None, family: str | None = None) -> list[ScopeId]:
        scopes = sorted(ScopeId.parse(_text(raw)) for raw in await self.redis.smembers(self.keys.scopes))
        return [s for s in scopes if (kind is None or s.kind == kind) and (family is None or s.family == family)]

    async def mirror_dump(self) -> dict[tuple[Kind, str], JsonObject]:
        """Every mirrored object (for checks and tests; the publisher reads scope by scope)."""
        dump: dict[tuple[Kind, str], JsonObject] = {}
        for scope in await self.known_scopes():
            for key, obj in (await self.scope_objects(scope)).items():
                dump[(scope.kind, key)] = obj
        return dump

    async def member_of(self, members: Iterable[str]) -> dict[str, set[str]]:
        members = list(dict.fromkeys(members))
        if not members:
            return {}
        reader = self._pipeline()
        for member in members:
            reader.smembers(self.keys.member_of(member))
        results = await reader.execute()
        return {m: {_text(g) for g in groups} for m, groups in zip(members, results, strict=True)}

    # -- directory state: Graph residues, soft-deleted objects, member names ------------------------
    async def graph_known(self, placements: Sequence[Placement]) -> dict[str, tuple[JsonObject, JsonObject]]:
        """For each entity placement whose object the mirror holds: (the entity, its Graph residue)."""
        if not placements:
            return {}
        reader = self._pipeline()
        await self.upgrade()
        for placement in placements:
            reader.hget(self.mirror_key(scope_of(placement)), pack_key(placement.anchor_key))
            reader.hget(self.keys.graph_residue(placement.family), placement.anchor_key)
        values = await reader.execute()
        known = {}
        for n, placement in enumerate(placements):
            entity, residue = values[2 * n], values[2 * n + 1]
            if entity is not None:
                key = placement.anchor_key
                known[key] = (_loads(decode_value(key, entity)), _loads(residue) if residue else {})
        return known

    async def soft_deleted(self) -> set[str]:
        """Ids of the soft-deleted users and groups. A member whose parked hash expired (it was
        purged long ago without our hearing of it) is dropped from the set here."""
        members = sorted(_text(m) for m in await self.redis.smembers(self.keys.soft_deleted))
        if not members:
            return set()
        reader = self._pipeline()
        for member in members:
            reader.exists(self.keys.parked(member))
        alive = await reader.execute()
        expired = [m for m, exists in zip(members, alive, strict=True) if not exists]
        if expired:
            await self.redis.srem(self.keys.soft_deleted, *expired)
        return {m for m, exists in zip(members, alive, strict=True) if exists}

    async def parked(self, owners: Iterable[str]) -> dict[str, dict[str, bytes]]:
        """The parked hash of each owner (empty when it has none)."""
        owners = list(dict.fromkeys(owners))
        if not owners:
            return {}
        reader = self._pipeline()
        for owner in owners:
            reader.hgetall(self.keys.parked(owner))
        results = await reader.execute()
        return {o: {_text(k): bytes(v) for k, v in fields.items()} for o, fields in zip(owners, results, strict=True)}

    async def memberships_of(
        self, members: Iterable[str], scopes: Sequence[ScopeId], *, skip_prefix: str
    ) -> dict[str, JsonObject]:
        """Every mirrored membership (key -> relationship) in `scopes` whose member is one of `members`,
        found by a scan inside Redis (`FIND_MEMBERSHIPS`), `MEMBERSHIP_SCAN_CHUNK` scopes a call.
        Keys starting with `skip_prefix` (the account's own relationships) are not memberships."""
        ids = sorted(set(members))
        if not ids:
            return {}
        await self.upgrade()
        # Both forms of each id: fields written before packing hold it as text.
        forms = list(dict.fromkeys(form for member in ids for form in (pack_key(member), member.encode())))
        args = [orjson.dumps([len(form) for form in forms]), b"".join(forms), skip_prefix, pack_key(skip_prefix)]
        found: dict[str, JsonObject] = {}
        for start in range(0, len(scopes), MEMBERSHIP_SCAN_CHUNK):
            keys = [self.mirror_key(scope) for scope in scopes[start : start + MEMBERSHIP_SCAN_CHUNK]]
            flat = await self._find_memberships(keys=keys, args=args)
            for n in range(0, len(flat), 2):
                key, json = decode_entry(flat[n], flat[n + 1])
                found[key] = _loads(json)
        return found

    async def member_names(self, members: Sequence[str]) -> dict[str, JsonObject]:
        """The cached `getByIds` details of the members that have them."""
        if not members:
            return {}
        values = await self.redis.hmget(self.keys.member_names, list(members))
        return {m: _loads(v) for m, v in zip(members, values, strict=True) if v is not None}

    # -- full rounds: deletion by absence ------------------------------------------------------
    async def owed_scans(self, source: str) -> set[bytes]:
        """The scopes owed a scan for absent objects of `source` (`TenantKeys.sweep_scan_owed`)."""
        return {_bytes(member) for member in await self.redis.smembers(self.keys.sweep_scan_owed(source))}

    async def owed_refs(self, source: str) -> set[bytes]:
        """The refs of the objects owed a check for absence of `source` (`TenantKeys.sweep_owed_refs`)."""
        return {_bytes(member) for member in await self.redis.smembers(self.keys.sweep_owed_refs(source))}

    async def scanned(self, source: str, owed: Collection[bytes], refs: Collection[bytes] = ()) -> None:
        """Remove `owed` and `refs`, the scopes and objects owed a check that one has just read
        (`TenantKeys.sweep_scan_owed`, `TenantKeys.sweep_owed_refs`), through the fence: a runner that
        lost its lease must not clear what the next one owes. `UNPACK_CHUNK` members a call: the fence
        is a script, and retiring many devices owes tens of thousands of objects."""
        for key, members in (
            (self.keys.sweep_scan_owed(source), list(owed)),
            (self.keys.sweep_owed_refs(source), list(refs)),
        ):
            for start in range(0, len(members), UNPACK_CHUNK):
                await self._write_key("SREM", key, *members[start : start + UNPACK_CHUNK])

    async def reset_seen(self, source: str) -> None:
        # UNLINK: a seen set of a million refs is freed by Redis off its main thread, not in the call.
        await self._write_key("UNLINK", self.keys.round_seen(source))

    async def unseen(self, source: str, keys: Sequence[str]) -> list[str]:
        if not keys:
            return []
        flags = await self.redis.smismember(self.keys.round_seen(source), list(keys))
        return [key for key, flag in zip(keys, flags, strict=True) if not flag]

    # -- delta links ---------------------------------------------------------------------------
    async def delta_state(self, resource: str) -> DeltaState | None:
        raw = {_text(k): _text(v) for k, v in (await self.redis.hgetall(self.keys.delta_link(resource))).items()}
        if "link" not in raw:
            return None
        return DeltaState(raw["link"], raw.get("fingerprint", ""), float(raw.get("saved_at", 0)))

    async def save_delta_link(self, resource: str, link: str, fingerprint: str, saved_at: float) -> None:
        key = self.keys.delta_link(resource)
        await self._write_key("HSET", key, "link", link, "fingerprint", fingerprint, "saved_at", saved_at)

    async def drop_delta_link(self, resource: str) -> None:
        await self._write_key("DEL", self.keys.delta_link(resource))

    # -- status ----------------------------------------------------------------------------------
    async def record_status(self, source: str, fields: dict[str, Any]) -> None:
        values: dict[str | bytes, str | bytes | int | float] = {
            k: (v if isinstance(v, str | int | float) else orjson.dumps(v)) for k, v in fields.items()
        }
        await self.redis.hset(self.keys.source_status(source), mapping=values)  # type: ignore[arg-type]

    async def status(self, source: str) -> dict[str, str]:
        raw = await self.redis.hgetall(self.keys.source_status(source))
        return {_text(k): _text(v) for k, v in raw.items()}

    async def record_permission(self, name: str, granted: bool, needed_for: str, detail: str, checked_at: str) -> None:
        value = {"granted": granted, "needed_for": needed_for, "detail": detail, "checked_at": checked_at}
        await self.redis.hset(self.keys.permissions, name, orjson.dumps(value))

    async def permissions(self) -> dict[str, dict[str, Any]]:
        raw = await self.redis.hgetall(self.keys.permissions)
        return {_text(k): orjson.loads(v) for k, v in raw.items()}

    # -- change log --------------------------------------------------------------------------
    async def last_seq(self) -> int:
        return int(await self.redis.get(self.keys.seq) or 0)

    async def changelog_entries(self) -> int:
        """Stream entries (one per committed page) in the change log."""
        length: int = await self.redis.xlen(self.keys.changes)
        return length

    async def read_changes(self, after_seq: int, count: int = 1000) -> list[ChangeRecord]:
        """Records with seq > `after_seq`, in order: at least `count` of them when there are that many.

        Entries are keyed by the last seq of their page, so the first entry read may also hold
        records at or before `after_seq`; those are skipped.
        """
        records: list[ChangeRecord] = []
        start = f"{after_seq + 1}-0"
        while len(records) < count:
            entries: Any = await self.redis.xrange(self.keys.changes, min=start, max="+", count=64)
            if not entries:
                break
            for entry_id, fields in entries:
                records += [r for r in _entry_records(fields) if r["seq"] > after_seq]
                start = f"({_text(entry_id)}"
        return records

    async def cursor(self, sink: str) -> int:
        return int(await self.redis.get(self.keys.sink_cursor(sink)) or 0)

    async def set_cursor(self, sink: str, seq: int) -> None:
        """Move the sink's cursor (which also clears its failure state: it took a batch)."""
        keys: list[str] = [self.keys.sink_cursor(sink), self.keys.sink_state(sink)]
        args: list[str | int] = [seq]
        if self.fence is not None:
            keys, args = [*keys, self.fence.key], [seq, self.fence.token]
        if await self._advance_cursor(keys=keys, args=args) == FENCE_REFUSED:
            assert self.fence is not None
            raise LeaseLost(self.fence.key)

    async def cursors(self, sinks: Sequence[str]) -> tuple[int, dict[str, int | None]]:
        """The last seq of the change log, and each sink's cursor (None where it has none yet)."""
        values = await self.redis.mget([self.keys.seq, *(self.keys.sink_cursor(sink) for sink in sinks)])
        cursors = {sink: None if value is None else int(value) for sink, value in zip(sinks, values[1:], strict=True)}
        return int(values[0] or 0), cursors

    # -- sink health -----------------------------------------------------------------------------
    async def record_sink_failure(self, sink: str, error: str, at: str) -> int:
        """Note that a delivery to `sink` failed (status and the failure counter); returns how many
        deliveries in a row have failed. `set_cursor` clears it."""
        key = self.keys.sink_state(sink)
        pipeline: Any = self.redis.pipeline(transaction=True)
        pipeline.hset(key, mapping={"error": error, "error_at": at})
        pipeline.hsetnx(key, "failing_since", at)
        pipeline.hincrby(key, "failures", 1)
        series = metrics.metric("monitor_sink_failures_total", sink=sink)
        metrics.queue_increments(pipeline, self.keys.metrics, {series: 1})
        answers = await pipeline.execute()
        return int(answers[2])

    async def sink_state(self, sink: str) -> dict[str, str]:
        """{error, error_at, failing_since, failures} while the sink fails; empty when it is healthy."""
        raw = await self.redis.hgetall(self.keys.sink_state(sink))
        return {_text(k): _text(v) for k, v in raw.items()}


class _CommitScript:
    """Builds the KEYS and ARGV of `COMMIT_PAGE` (see its comment in `monitor.keys`).

    Commands are grouped per key (one HSET per hash with all its fields) because each command the
    script runs costs a few microseconds in Redis, and a page has thousands of objects.
    """

    def __init__(self, seq_key: str, changes_key: str, versions_key: str, fence: Fence | None = None) -> None:
        self._keys: dict[str, int] = {seq_key: 1, changes_key: 2, versions_key: 3}
        self._fence = fence
        if fence is not None:
            self._keys[fence.key] = 4  # the script checks the lease first (COMMIT_PAGE)
        self._checks: list[str] = []
        self._absent: dict[str, list[int]] = {}  # key -> (offset, length)* of fields that must be absent
        self._puts: dict[str, list[str | int]] = {}
        self._fields: dict[str, list[int]] = {}  # key -> (offset, field length, value length)*
        self._deleted_fields: dict[str, list[int]] = {}  # key -> (offset, length)*
        self._grouped: dict[tuple[str, str], list[str]] = {}  # (code, key) -> fields or members
        self._single: list[str | int] = []
        self._tail: list[str | int] = []
        self._blob: list[bytes] = []
        self._offset = 0
        self._records: list[bytes] = []

    def _index(self, key: str) -> int:
        return self._keys.setdefault(key, len(self._keys) + 1)

    def check(self, scope: str, version: str) -> None:
        self._checks += [scope, version]

    def put(self, key: str, field: str, value: bytes) -> None:
        self._puts.setdefault(key, []).extend((field, self._offset, len(value)))
        self._blob.append(value)
        self._offset += len(value)

    def delete(self, key: str, field: str) -> None:
        self._grouped.setdefault(("D", key), []).append(field)

    def _bytes(self, data: bytes) -> int:
        """Append `data` to the blob; its offset."""
        offset = self._offset
        self._blob.append(data)
        self._offset += len(data)
        return offset

    def put_field(self, key: str, field: bytes, value: bytes) -> None:
        """HSET a binary field (a mirror entry, `mirror_codec`)."""
        self._fields.setdefault(key, []).extend((self._bytes(field + value), len(field), len(value)))

    def absent(self, key: str, field: bytes) -> None:
        """Write nothing unless hash `key` has no field `field` when the script runs."""
        self._absent.setdefault(key, []).extend((self._bytes(field), len(field)))

    def delete_field(self, key: str, field: bytes) -> None:
        self._deleted_fields.setdefault(key, []).extend((self._bytes(field), len(field)))

    def add_binary(self, key: str, members: bytes, size: int) -> None:
        """SADD the `size`-byte members cut from `members`."""
        for start in range(0, len(members), size * UNPACK_CHUNK):
            chunk = members[start : start + size * UNPACK_CHUNK]
            self._single += ["M", self._index(key), len(chunk) // size, size, self._bytes(chunk)]

    def add(self, key: str, member: str) -> None:
        self._grouped.setdefault(("S", key), []).append(member)

    def remove(self, key: str, member: str) -> None:
        self._grouped.setdefault(("R", key), []).append(member)

    def stamp(self, key: str, field: str) -> None:
        self._grouped.setdefault(("V", key), []).append(field)

    def incr(self, key: str, field: str, by: int) -> None:
        self._single += ["I", self._index(key), field, by]

    def expire(self, key: str, seconds: int) -> None:
        self._tail += ["E", self._index(key), seconds]

    def record(self, body: bytes) -> None:
        self._records.append(body)

    def build(self) -> tuple[list[str], list[bytes]]:
        commands: list[str | int] = []
        for key, triples in self._puts.items():
            for start in range(0, len(triples), 3 * UNPACK_CHUNK):
                chunk = triples[start : start + 3 * UNPACK_CHUNK]
                commands += ["H", self._index(key), len(chunk) // 3, *chunk]
        for key, pairs in self._deleted_fields.items():
            for start in range(0, len(pairs), 2 * UNPACK_CHUNK):
                part = pairs[start : start + 2 * UNPACK_CHUNK]
                commands += ["X", self._index(key), len(part) // 2, *part]
        for key, numbers in self._fields.items():
            for start in range(0, len(numbers), 3 * UNPACK_CHUNK):
                triples_of_numbers = numbers[start : start + 3 * UNPACK_CHUNK]
                commands += ["F", self._index(key), len(triples_of_numbers) // 3, *triples_of_numbers]
        for (code, key), items in self._grouped.items():
            for start in range(0, len(items), UNPACK_CHUNK):
                members = items[start : start + UNPACK_CHUNK]
                commands += [code, self._index(key), len(members), *members]
        header: list[str | int] = [len(self._records), len(self._checks) // 2, *self._checks, len(self._absent)]
        for key, pairs in self._absent.items():
            header += [self._index(key), len(pairs) // 2, *pairs]
        structure = orjson.dumps(header + commands + self._single + self._tail)
        records = _compressed_log(b"\n".join(self._records))
        args = [structure, b"".join(self._blob), records]
        if self._fence is not None:
            args.append(self._fence.token.encode())
        return list(self._keys), args


def _compressed_log(lines: bytes) -> bytes:
    """A page's records as one zstd frame (with its size, which `decompress` needs). Streamed: a
    one-shot `compress` first takes a buffer as large as the input, and a directory page's records
    are megabytes, which left the process holding about twice its memory."""
    stream = _LOG_COMPRESSOR.compressobj(size=len(lines))
    return stream.compress(lines) + stream.flush()


def _entry_records(fields: dict[bytes, bytes]) -> list[ChangeRecord]:
    first = int(fields[b"first"])
    # `s`: zstd; `z`: zlib and `r`: uncompressed, as logs written before hold them.
    if b"s" in fields:
        lines = _LOG_DECOMPRESSOR.decompress(fields[b"s"])
    else:
        lines = zlib.decompress(fields[b"z"]) if b"z" in fields else fields[b"r"]
    return [decode_record(first + i, line) for i, line in enumerate(lines.split(b"\n"))]


def _stored(slot: _Slot) -> bytes:
    """The value written for a slot: entities carry their `_type` in the clear (`mirror_codec`)."""
    assert slot.current_raw is not None
    entity_type = slot.current.get("_type") if slot.kind == "entity" and slot.current is not None else None
    return encode_value(slot.key, slot.current_raw, entity_type if isinstance(entity_type, str) else None, slot.uuids)


def _home(scope: ScopeId, key: str) -> ScopeId:
    """The scope an object of `scope`'s kind and family keyed `key` belongs in: an entity's is decided
    by its own key (a relationship's by its anchor, which its key does not always tell: kept)."""
    if scope.kind != "entity":
        return scope
    return ScopeId("entity", scope.family, bucket_of(key, bucket_count("entity", scope.family)))


def _loads(raw: bytes | str) -> JsonObject:
    obj: JsonObject = orjson.loads(raw)
    return obj


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _bytes(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode()


def _apply(
    ops: Iterable[tuple[Op, tuple[str, str]]], slots: dict[tuple[str, str], _Slot]
) -> list[tuple[_Slot, Change]]:
    """Play the page's operations on the slots in order; the net change per object, first-touch order."""
    touched: dict[tuple[str, str], _Slot] = {}
    for op, slot_id in ops:
        slot = slots[slot_id]
        touched.setdefault(slot_id, slot)
        _apply_one(op, slot)
    changes = []
    for slot in touched.values():
        if slot.current_raw == slot.before_raw:
            continue
        before = None if slot.before_raw is None else _loads(slot.before_raw)
        change = diff(slot.kind, before, slot.load())
        if change is None:
            # Equal under the diff rules (e.g. a reordered array): keep the mirror as it was.
            slot.set(before)
            continue
        changes.append((slot, change))
    return changes


def _apply_one(op: Op, slot: _Slot) -> None:
    if isinstance(op, Delete):
        slot.set(None)
        slot.reason = op.reason
    elif isinstance(op, Upsert):
        slot.reason = op.reason
        obj = op.obj
        if op.preserve:
            current = slot.load() or {}
            kept = {p: current[p] for p in op.preserve if p in current and p not in obj}
            obj = {**obj, **kept} if kept else obj
        raw = canonical(obj)
        slot.current, slot.current_raw, slot.parsed = obj, raw, True
    else:
        _apply_patch(op, slot)


def _apply_patch(op: Patch, slot: _Slot) -> None:
    current = slot.load()
    if current is None:
        return
    updated = {k: v for k, v in current.items() if k not in op.remove}
    for name, value in op.props.items():
        if value is None:
            updated.pop(name, None)
        else:
            updated[name] = value
    slot.set(updated)
