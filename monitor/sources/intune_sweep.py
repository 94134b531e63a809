"""The machinery of a sweep: commit pages as they come, remember what each pass saw, delete what a
complete pass no longer sees, and page through per-object lists in JSON batches.

Rules (docs/architecture.md, "Rules that keep it correct"; issue 4):

- Each page is committed atomically (mirror + change log), and a pass's pages commit one at a time,
  in the order they were read; while one commits, the next (up to `PAGES_IN_FLIGHT` in all) are
  checked and mapped: memory holds a few pages (or batches of 20 pages), never the tenant.
- Each pass records every object it produced in a seen set of its own (Redis,
  `TenantKeys.round_seen("intune.<pass>")`). Deletion by absence runs once, after the passes: an
  object is deleted only if the pass that owns it (`Ownership`, by key) read *everything* and did
  not see it. A pass that failed part-way, or whose endpoint answered 403, owns objects that stay.
  Several passes write into the same device-anchored scopes (MANAGES, ASSIGNED, INSTALLED, ...), so
  ownership is per object, never per scope.
- The deletion phase reads each Intune scope once, keys only (a few hundred per scope), a pipeline
  of scopes per round trip; it reads an object's JSON only when it deletes it (for its anchor).
- Seen-set members are 8-byte refs, not the keys: the prefix of the object's scope (its family, kind
  and bucket: `scope_prefix`), then a digest of
  "<kind>:<mirror field>" (`seen_ref`): a large estate's passes see millions of relationships, and a
  ref costs Redis a fraction of a key. The scan for absence computes them from the scopes and fields
  it reads, so it unpacks only the keys of objects no pass saw. A collision could only make an absent
  object look seen, never delete a present one.
- The check looks only for the objects owed one (`TenantKeys.sweep_owed_refs`): those a unit record
  that went, or was rewritten naming fewer objects, named (its refs), stored in the same script or
  commit as that change, so a sweep killed before its check still owes it (`delete_owed`). Only
  where a pass's records are not known complete is every scope owed a scan whole
  (`TenantKeys.sweep_scan_owed`, `delete_absent`).
- The change records carry source "intune"; the seen sets are written in the same commit, keyed by
  pass.
- Objects read from Graph go through `commit_units`: what Graph says the same as last time is not
  mapped again (`monitor.sources.intune_units`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from bisect import bisect_right
from collections import deque
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Collection,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from dataclasses import dataclass
from itertools import accumulate, islice
from typing import Any, Generic, TypeVar

import orjson

from monitor.graph.client import BATCH_LIMIT, BatchRequest, BatchResponse, GraphClient, GraphError
from monitor.keys import TenantKeys
from monitor.mirror_codec import unpack_keys
from monitor.model.registry import end_placements, entity_anchor
from monitor.model.types import Delete, JsonObject, Kind, Op, Placement, Upsert
from monitor.scopes import ScopeId
from monitor.sources.base import Progress, RecordListener, RoundResult, SourceContext
from monitor.sources.intune_units import (
    ALL_SCOPES,
    CHECK_CHUNK,
    CHECK_UNITS,
    DIGEST_SIZE,
    HIT_PAGES,
    PRUNE_CHUNK,
    PRUNE_NAMED,
    PRUNE_UNITS,
    REF_SIZE,
    STALE_DIGEST,
    START_PAGES,
    PagePart,
    Unit,
    key_ref,
    owes_scan,
    page_record,
    page_record_units,
    record,
    ref_scope,
    scope_refs,
    seen_ref,
    stale_record,
    unit_bucket,
)
from monitor.store import PageWrite, RawField, RawMembers

log = logging.getLogger(__name__)

SOURCE = "intune"
DELETE_BATCH = 500
SCOPES_PER_READ = 16
# Chunks of scopes scanned ahead of the one whose absent objects are being deleted (`_scanned_ahead`).
SCANS_AHEAD = 2
# Pages of units a pass may have started before it reads the next: while Redis commits the oldest,
# this process checks and maps the others (`PassWriter.commit_units`).
PAGES_IN_FLIGHT = 3
T = TypeVar("T")
Follow = Callable[[BatchRequest, dict[str, Any]], BatchRequest | None]
Decode = Callable[[BatchResponse], dict[str, Any]]
# (kind, family, key) -> the name of the pass that owns the object, or None (never deleted).
Ownership = Callable[[Kind, str, str], str | None]


def seen_source(pass_name: str) -> str:
    return f"{SOURCE}.{pass_name}"


class PassWriter:
    """Commits one pass's pages and keeps its seen set; `track=False` on a first sweep (nothing to delete)."""

    def __init__(
        self,
        context: SourceContext,
        pass_name: str,
        result: RoundResult,
        *,
        track: bool,
        on_records: RecordListener | None = None,
        progress: Progress | None = None,
        recorded: bool = False,
        device_types: dict[str, str | None] | None = None,
    ) -> None:
        self.context = context
        # Whether every object the pass owns had a unit record when it started (`unit_records_complete`):
        # then a unit without one is new and left nothing behind.
        self.recorded = recorded
        self.pass_name = pass_name
        self.result = result
        self.track = track
        self.on_records = on_records
        self.progress = progress
        self.objects = 0
        # Device id -> `_type` (None: not in the mirror), shared by the passes after the device pass.
        self.device_types: dict[str, str | None] = {} if device_types is None else device_types
        # The pages of units being checked, mapped and committed (in order) while the pass reads on.
        self._in_flight: deque[asyncio.Future[int]] = deque()
        # Pages with page records: how many were not known (`commit_page`), and whether every unit the
        # pass saw is one the last pass had, and no other (`finish_pages`: then none is to be pruned).
        self._pages_unknown = 0
        self.same_units = False
        # Whether every unit record of the pass was named by a page record when it started its pages
        # (`TenantKeys.sweep_pages_complete`), and so whether its prune reads only the records of the
        # units named by the page records it did not find (`prune_pages`).
        self._pages_complete = False
        self.prunes_named = False
        self.paged = False  # the pass keeps page records (`start_pages`)
        self._unit_keys: dict[int, str] = {}

    @property
    def _seen_key(self) -> str:
        return self.context.store.keys.round_seen(seen_source(self.pass_name))

    def _seen(self, refs: bytes) -> list[RawMembers]:
        return [RawMembers(self._seen_key, refs, REF_SIZE, TenantKeys.ROUND_SEEN_TTL)] if self.track and refs else []

    async def commit(self, ops: Sequence[Op], *, objects: int = 0) -> int:
        """Commit one page of operations; `objects` Graph objects were read to make them. Returns the
        number of change records the page emitted. Pages commit in the order they are given: a page of
        units still in flight is committed first."""
        await self.settle()
        refs = b"".join(seen_ref(op.placement, op.key) for op in ops if isinstance(op, Upsert))
        return await self._commit(PageWrite(ops=list(ops), raw_members=self._seen(refs)), objects)

    async def commit_units(self, units: Sequence[Unit], *, objects: int = 0) -> None:
        """Start committing one page of units (`_commit_units`) and return once the page before it is
        committed. While Redis commits one page, this page's units are checked and mapped and the pass
        reads the next page from Graph; pages still commit one at a time, in order. `settle` waits for
        the last one; an error of a page's commit is raised by the next call."""
        await self._start(lambda before: self._commit_units(units, objects=objects, before=before))

    async def _start(self, page: Callable[[asyncio.Future[int] | None], Awaitable[int]]) -> None:
        """Start `page` (given the page in flight before it, which it must commit after) and wait until
        fewer than `PAGES_IN_FLIGHT` pages are: one commits while the next are checked and mapped."""
        before = self._in_flight[-1] if self._in_flight else None
        self._in_flight.append(asyncio.ensure_future(page(before)))
        while len(self._in_flight) >= PAGES_IN_FLIGHT:
            await self._in_flight.popleft()

    async def settle(self) -> None:
        """Wait until the pages of units in flight, if any, are committed (raising the first error)."""
        while self._in_flight:
            await self._in_flight.popleft()

    async def commit_page(self, parts: Sequence[PagePart], *, objects: int = 0) -> None:
        """Like `commit_units` for the units of one list page, in parts that each have a page record
        (`PagePart`; the pass called `start_pages`): a part with a record is only marked seen, its
        units not even built; the other parts' units are checked and committed with their new records."""
        await self._start(lambda before: self._commit_page(parts, objects, before))

    async def _commit_page(self, parts: Sequence[PagePart], objects: int, before: asyncio.Future[int] | None) -> int:
        unknown = await self._unknown_parts(parts) if self.track else list(parts)
        self.result.skipped += objects - sum(part.objects for part in unknown)
        if not unknown:
            await _committed(before)
            self._count(objects)
            return 0
        self._pages_unknown += len(unknown)
        built = [part.units() for part in unknown]
        pages = [(part.digest, len(units)) for part, units in zip(unknown, built, strict=True)]
        flat = [u for units in built for u in units]
        return await self._commit_units(flat, objects=objects, pages=pages, before=before)

    def _pages_key(self, generation: str) -> str:
        return self.context.store.keys.sweep_pages(seen_source(self.pass_name), generation)

    async def start_pages(self) -> None:
        """Before a pass's first `commit_page`: the page records the last pass wrote become the ones to
        read (`START_PAGES`), and whether they named every unit record is noted."""
        store = self.context.store
        source = seen_source(self.pass_name)
        script: Any = store.redis.register_script(START_PAGES)
        keys = [*map(self._pages_key, ("current", "previous", "gone")), store.keys.sweep_pages_complete(source)]
        self._pages_complete = bool(await script(keys=[*keys, *store.keys.earlier_sweep_pages(source)]))
        self.paged = True

    async def finish_pages(self) -> None:
        """After a pass's last `commit_page`. When every page had a record and every record of the last
        pass was found, and those named every unit record, the pass saw the units the last one left and
        no other (each unit record was written with the record of its page, and a complete pass prunes
        the others): `same_units`. Otherwise, when they named every unit record, the units that went are
        named by the records not found: they are kept (as `gone`) for the prune to read
        (`prunes_named`, `prune_pages`); the others are dropped."""
        await self.settle()
        redis = self.context.store.redis
        previous = self._pages_key("previous")
        left = await redis.hlen(previous)
        self.same_units = self.track and self._pages_complete and self._pages_unknown == 0 and left == 0
        self.prunes_named = self.track and self._pages_complete and not self.same_units
        if self.prunes_named and left:
            await redis.rename(previous, self._pages_key("gone"))
        else:
            await redis.unlink(previous)
        if not self.track or self.same_units:  # a first sweep writes a record for every unit it maps
            await self.pages_name_every_unit()

    async def pages_name_every_unit(self) -> None:
        """Mark the pass's page records as naming every unit record (`TenantKeys.sweep_pages_complete`):
        after its prune, or when nothing was to be pruned."""
        await self.context.store.redis.set(self.context.store.keys.sweep_pages_complete(seen_source(self.pass_name)), 1)

    async def _unknown_parts(self, parts: Sequence[PagePart]) -> list[PagePart]:
        """The parts without a page record (`HIT_PAGES`, which marks the others seen)."""
        script: Any = self.context.store.redis.register_script(HIT_PAGES)
        keys = [self._seen_key, self._pages_key("current"), self._pages_key("previous")]
        digests = b"".join(part.digest for part in parts)
        positions = await script(keys=keys, args=[digests, TenantKeys.ROUND_SEEN_TTL])
        return [parts[int(n) - 1] for n in positions]

    async def _commit_units(
        self,
        units: Sequence[Unit],
        *,
        objects: int = 0,
        pages: Sequence[tuple[bytes, int]] = (),
        before: asyncio.Future[int] | None = None,
    ) -> int:
        """Commit one page of units: those whose digest matches their record are only marked seen;
        the others are mapped, and their objects committed with their new records once the page
        `before` it is committed. `pages`: the page records to write with them, each a digest and how
        many of `units`, in order, are its own (the record names the refs of all of them).

        Checking and mapping may run while the page before commits: they read only the unit records of
        this page's own units, which that page does not write. (A unit Graph lists twice, on two pages,
        is then mapped twice; its second commit finds its objects as the first left them.)"""
        write = await self._units_write(units, pages)
        await _committed(before)
        return await self._commit(write, objects)

    async def _units_write(self, units: Sequence[Unit], pages: Sequence[tuple[bytes, int]]) -> PageWrite:
        """What committing `units` writes (`_commit_units`): checked against their records, mapped."""
        want_refs = bool(pages)
        changed, earlier, kept = await self._changed(units, want_refs) if self.track else (list(units), {}, [])
        ops: list[Op] = []
        refs: dict[str, bytes] = {}  # uid -> the refs of a unit mapped now
        write = PageWrite(ops=ops)
        source = seen_source(self.pass_name)
        owed: list[bytes] = []  # the refs of objects units no longer map to
        for changed_unit in changed:
            mapped = changed_unit.mapping()
            unit_refs, unit_record = record(changed_unit.digest, mapped)
            if self.track:
                everything, lost = self._owed(earlier.get(changed_unit.uid), unit_refs)
                write.raw_sets += everything
                owed.append(lost)
            ops += mapped
            refs[changed_unit.uid] = unit_refs
            if unit_refs:  # a unit mapped to nothing keeps no record: it is mapped every time
                bucket = changed_unit.bucket
                write.raw_fields.append(RawField(self._units_key(bucket), changed_unit.uid.encode(), unit_record))
                write.raw_sets.append((self.context.store.keys.sweep_unit_buckets(source), str(bucket)))
        write.raw_members = self._seen(b"".join(refs.values()))
        if any(owed):
            write.raw_members.append(RawMembers(self._owed_refs_key, b"".join(owed), REF_SIZE))
        # New units (none had a record, and records are complete, or the mirror held no Intune object
        # when the sweep began) map to new objects, as a rule: committed without reading them first.
        write.fresh = (self.recorded or not self.track) and not any(earlier.get(u.uid) for u in changed)
        if pages:
            write.raw_fields += self._page_records(units, pages, refs, iter(kept))
        self.result.skipped += len(units) - len(changed)
        return write

    def _owed(self, earlier: bytes | None, refs: bytes) -> tuple[list[tuple[str, str]], bytes]:
        """What a unit mapped again, now to `refs`, owes the check for absent objects, its record having
        been `earlier`: a scan of every scope when it may have left objects behind and the pass's records
        are not known to be complete and of this layout (`recorded`), else the refs of the objects it no
        longer names (`TenantKeys.sweep_owed_refs`). Committed with the unit's new record, so a sweep
        killed before its check leaves them owed."""
        if earlier is None:  # a new unit, unless records were not all written
            return ([] if self.recorded else [(self._owed_key, ALL_SCOPES)]), b""
        lost = _refs(earlier[DIGEST_SIZE:]) - _refs(refs)
        if not lost:
            return [], b""
        if not self.recorded:
            return [(self._owed_key, ALL_SCOPES)], b""
        return [], b"".join(sorted(lost))

    @property
    def _owed_key(self) -> str:
        return self.context.store.keys.sweep_scan_owed(SOURCE)

    @property
    def _owed_refs_key(self) -> str:
        return self.context.store.keys.sweep_owed_refs(SOURCE)

    def _page_records(
        self, units: Sequence[Unit], pages: Sequence[tuple[bytes, int]], mapped: dict[str, bytes], kept: Iterator[bytes]
    ) -> list[RawField]:
        """The records of `pages` (see `_commit_units`): each names the refs of its units, those
        mapped now (`mapped`, by uid) and, in order, those whose records matched (`kept`)."""
        fields: list[RawField] = []
        position = 0
        for digest, count in pages:
            own = units[position : position + count]
            position += count
            unit_refs = [mapped[u.uid] if u.uid in mapped else next(kept) for u in own]
            named = [u.uid for u, refs in zip(own, unit_refs, strict=True) if refs]
            fields.append(RawField(self._pages_key("current"), digest, page_record(named, b"".join(unit_refs))))
        return fields

    async def commit_rereads(self, units: Sequence[Unit], *, objects: int = 0) -> int:
        """Commit units re-read between sweeps (`monitor.sources.intune_live`): each is mapped and diffed
        like any other, nothing is marked seen and nothing deleted.

        Each unit's record is replaced by one that no digest matches (`STALE_DIGEST`) and that names the
        objects of its earlier record as well as those it maps to now, in the same commit: the next
        sweep maps the unit again (a record that matched would hide a change made back before that
        sweep) and, if the unit no longer maps to an object either record named, finds that it may
        have dropped one and owes a check of that object (`PassWriter._owed`), so the sweep still deletes
        what went."""
        store = self.context.store
        source = seen_source(self.pass_name)
        # A page record would skip the unit whatever its record says: the pass's records go.
        generations = map(self._pages_key, ("current", "previous", "gone"))
        await store.redis.delete(*generations, store.keys.sweep_pages_complete(source))
        pipeline: Any = store.redis.pipeline(transaction=False)
        for each in units:
            pipeline.hget(self._units_key(each.bucket), each.uid)
        earlier: list[bytes | None] = await pipeline.execute() if units else []
        write = PageWrite(ops=[])
        for each, known in zip(units, earlier, strict=True):
            mapped = each.mapping()
            refs, _ = record(STALE_DIGEST, mapped)
            merged = stale_record(known, refs)
            write.ops += mapped
            if merged is not None:
                write.raw_fields.append(RawField(self._units_key(each.bucket), each.uid.encode(), merged))
                write.raw_sets.append((store.keys.sweep_unit_buckets(source), str(each.bucket)))
        return await self._commit(write, objects)

    async def _changed(
        self, units: Sequence[Unit], want_refs: bool = False
    ) -> tuple[list[Unit], dict[str, bytes | None], list[bytes]]:
        """The units whose records do not match (`CHECK_UNITS`, which marks the others seen), the
        records they had (None: none), and with `want_refs` the refs of each of the others, in order."""
        store = self.context.store
        script: Any = store.redis.register_script(CHECK_UNITS)
        changed: list[Unit] = []
        earlier: dict[str, bytes | None] = {}
        kept: list[bytes] = []
        for start in range(0, len(units), CHECK_CHUNK):
            chunk = units[start : start + CHECK_CHUNK]
            keys: dict[str, int] = {self._seen_key: 1}
            args: list[str | int] = []
            for each in chunk:
                args += [keys.setdefault(self._units_key(each.bucket), len(keys) + 1), each.uid]
            digests = b"".join(each.digest for each in chunk)
            argv = [orjson.dumps(args), digests, TenantKeys.ROUND_SEEN_TTL, int(want_refs)]
            answer = await script(keys=list(keys), args=argv)
            if want_refs:
                kept += answer.pop()
            for n in range(0, len(answer), 2):
                each = chunk[int(answer[n]) - 1]
                changed.append(each)
                earlier[each.uid] = answer[n + 1] or None
        return changed, earlier, kept

    def _units_key(self, bucket: int) -> str:
        """The name of the pass's unit hash `bucket` (made once: every unit checked names its hash)."""
        name = self._unit_keys.get(bucket)
        if name is None:
            name = self._unit_keys[bucket] = self.context.store.keys.sweep_units(seen_source(self.pass_name), bucket)
        return name

    async def _commit(self, write: PageWrite, objects: int) -> int:
        store, now = self.context.store, self.context.clock()
        if self.on_records is None:
            counts = await store.commit_counts(write, source=SOURCE, observed_at=now)
            self.result.changes.update(counts)
            emitted = sum(counts.values())
        else:
            records = await store.commit(write, source=SOURCE, observed_at=now)
            self.result.add(records)
            emitted = len(records)
            if records:
                self.on_records(records)
        self._count(objects)
        return emitted

    def _count(self, objects: int) -> None:
        """One page done: `objects` Graph objects read for it."""
        self.result.pages += 1
        self.result.objects += objects
        self.objects += objects
        if self.progress is not None:
            self.progress(self.result)


async def _committed(page: asyncio.Future[int] | None) -> None:
    """Wait for `page`, the page in flight before another (raising its error)."""
    if page is not None:
        await page


def _refs(joined: bytes) -> set[bytes]:
    return {joined[at : at + REF_SIZE] for at in range(0, len(joined), REF_SIZE)}


async def has_objects(context: SourceContext, families: Iterable[tuple[Kind, str]]) -> bool:
    for kind, family in families:
        if await context.store.known_scopes(kind, family):
            return True
    return False


def placement_in(scope: ScopeId, obj: JsonObject) -> Placement:
    """The placement of a mirrored object found in `scope` (its anchor, for a Delete)."""
    if scope.kind == "entity":
        return Placement("entity", scope.family, entity_anchor(scope.family, obj["_key"]))
    anchor = next(end.anchor_key for end in end_placements(obj) if end.family == scope.family)
    return Placement("relationship", scope.family, anchor)


async def delete_absent(
    writer: PassWriter,
    families: Sequence[tuple[Kind, str]],
    complete: frozenset[str],
    owner_of: Ownership,
    owners: Mapping[tuple[Kind, str], Sequence[str]],
    owed: Collection[int] | None = None,
) -> int:
    """After the passes: delete what a complete pass owns and did not see. Returns how many.

    `owed`: the only scopes to read, by prefix (None: all): the scopes owed a scan
    (`TenantKeys.sweep_scan_owed`, `owes_scan`).

    Per `SCOPES_PER_READ` scopes: their fields (one round trip); the fields whose seen ref
    (`field_ref`, computed from the field as read) is in no complete pass's seen set (one round trip,
    answered with only those, usually none); for those alone their keys, owners and refs as seen
    (`_unseen`); and for the few objects that go, their records and the commits. `owners`: the passes
    that write each family (the seen sets asked for its objects; a family not named: every complete pass's).
    """
    store = writer.context.store
    sizes = await _seen_sizes(writer, complete)
    deleted = 0
    for kind, family in families:
        sets = _owner_sets(writer, sizes, complete & frozenset(owners.get((kind, family), complete)))
        scopes = await store.known_scopes(kind, family)
        if owed is not None:
            scopes = [scope for scope in scopes if owes_scan(scope, owed)]
        scan = functools.partial(_candidates, writer, sets)
        deleted += await _delete_candidates(writer, kind, family, scopes, scan, complete, owner_of)
    writer.result.deleted_by_absence += deleted
    return deleted


async def delete_owed(
    writer: PassWriter,
    refs: Collection[bytes],
    complete: frozenset[str],
    owner_of: Ownership,
    owners: Mapping[tuple[Kind, str], Sequence[str]],
) -> int:
    """After the passes: delete what a complete pass owns and did not see among the objects owed a check
    (`TenantKeys.sweep_owed_refs`: those of the units that went or now map to less). Returns how many.

    Per family, the refs that no complete pass writing it saw (`UNSEEN_BY_ANY`, one round trip for a few
    thousand) name the scopes to read, usually one per retired device and family; in each, only the
    fields whose ref is one of them are taken (`scope_refs` of every field), their keys unpacked and
    checked against their owner's seen set (`_unseen`), and what went is deleted. The seen sets are not
    asked about the scope's other objects, as the scan of whole scopes asks about every field
    (`delete_absent`). Refs of the earlier layout (`intune_units.earlier_prefixes`) are left to that
    scan."""
    sizes = await _seen_sizes(writer, complete)
    by_family: dict[tuple[Kind, str], list[bytes]] = {}
    for ref in refs:
        scope = ref_scope(ref)
        if scope is not None:
            by_family.setdefault((scope.kind, scope.family), []).append(ref)
    deleted = 0
    for (kind, family), owed in by_family.items():
        sets = _owner_sets(writer, sizes, complete & frozenset(owners.get((kind, family), complete)))
        if not sets:  # objects no complete pass owns are never deleted
            continue
        unseen = await _unseen_refs(writer, sets, owed)
        scopes = sorted({scope for scope in map(ref_scope, unseen) if scope is not None}, key=lambda s: s.bucket)
        scan = functools.partial(_owed_candidates, writer, unseen)
        deleted += await _delete_candidates(writer, kind, family, scopes, scan, complete, owner_of)
    writer.result.deleted_by_absence += deleted
    return deleted


def _owner_sets(writer: PassWriter, sizes: dict[str, int], passes: Collection[str]) -> list[str]:
    """The seen sets of `passes`, the largest first: most refs are in it."""
    return [writer.context.store.keys.round_seen(seen_source(name)) for name in sorted(passes, key=lambda n: -sizes[n])]


async def _delete_candidates(
    writer: PassWriter,
    kind: Kind,
    family: str,
    scopes: Sequence[ScopeId],
    scan: Scan,
    complete: frozenset[str],
    owner_of: Ownership,
) -> int:
    """Read `scopes` of one family `SCOPES_PER_READ` at a time for their candidate fields (`scan`, run
    ahead: `_scanned_ahead`), and delete those a complete pass owns and did not see (`_unseen`, by key)."""
    chunks = [scopes[start : start + SCOPES_PER_READ] for start in range(0, len(scopes), SCOPES_PER_READ)]
    deleted = 0
    async with contextlib.aclosing(_scanned_ahead(scan, chunks)) as scanned:
        async for candidates in scanned:
            keys = {scope: unpack_keys(found) for scope, found in candidates.items()}
            deleted += await _delete(writer, await _unseen(writer, kind, family, keys, complete, owner_of))
    return deleted


async def _owed_candidates(
    writer: PassWriter, unseen: set[bytes], chunk: Sequence[ScopeId]
) -> dict[ScopeId, list[bytes]]:
    """The fields of each scope of `chunk` whose seen ref is one of `unseen`."""
    fields = await _scope_fields(writer, chunk)
    return {scope: _fields_among(scope, listed, unseen) for scope, listed in zip(chunk, fields, strict=True)}


async def _unseen_refs(writer: PassWriter, sets: list[str], refs: list[bytes]) -> set[bytes]:
    """Those of `refs` in none of `sets` (`UNSEEN_BY_ANY`)."""
    script: Any = writer.context.store.redis.register_script(UNSEEN_BY_ANY)
    positions: list[int] = await script(keys=sets, args=[b"".join(refs)])
    return {refs[int(position) - 1] for position in positions}


def _fields_among(scope: ScopeId, fields: list[bytes], refs: set[bytes]) -> list[bytes]:
    """The fields of `scope` whose seen ref is one of `refs`."""
    joined = scope_refs(scope, fields)
    return [field for n, field in enumerate(fields) if joined[n * REF_SIZE : (n + 1) * REF_SIZE] in refs]


Scan = Callable[[Sequence[ScopeId]], Awaitable[dict[ScopeId, list[bytes]]]]


async def _scanned_ahead(
    scan: Scan, chunks: Sequence[Sequence[ScopeId]]
) -> AsyncGenerator[dict[ScopeId, list[bytes]], None]:
    """The candidate fields of each chunk of scopes (`scan`: `_candidates`, `_owed_candidates`), in order,
    with the next `SCANS_AHEAD` chunks read and checked while the caller deletes from this one: Redis
    reads and checks one chunk while the refs of another are computed here. A chunk's deletions touch
    only its own scopes, so a chunk scanned ahead finds what it would have found after them."""
    upcoming = iter(chunks)
    scans = deque(asyncio.ensure_future(scan(c)) for c in islice(upcoming, SCANS_AHEAD))
    try:
        while scans:
            found = await scans.popleft()
            following = next(upcoming, None)
            if following is not None:
                scans.append(asyncio.ensure_future(scan(following)))
            yield found
    finally:
        for running in scans:
            running.cancel()
        await asyncio.gather(*scans, return_exceptions=True)


async def _candidates(writer: PassWriter, sets: list[str], chunk: Sequence[ScopeId]) -> dict[ScopeId, list[bytes]]:
    fields = await _scope_fields(writer, chunk)
    return await _unseen_fields(writer, sets, dict(zip(chunk, fields, strict=True)))


async def _seen_sizes(writer: PassWriter, passes: frozenset[str]) -> dict[str, int]:
    """The size of the seen set of each of `passes`: the largest is asked first, as most refs are in it."""
    store = writer.context.store
    names = sorted(passes)
    pipeline: Any = store.redis.pipeline(transaction=False)
    for name in names:
        pipeline.scard(store.keys.round_seen(seen_source(name)))
    sizes = await pipeline.execute() if names else []
    return {name: int(size) for name, size in zip(names, sizes, strict=True)}


async def _scope_fields(writer: PassWriter, scopes: Sequence[ScopeId]) -> list[list[bytes]]:
    store = writer.context.store
    pipeline: Any = store.redis.pipeline(transaction=False)
    for scope in scopes:
        pipeline.hkeys(store.mirror_key(scope))
    answers: list[list[bytes]] = await pipeline.execute()
    return answers


async def _unseen_fields(
    writer: PassWriter, sets: list[str], scope_fields: dict[ScopeId, list[bytes]]
) -> dict[ScopeId, list[bytes]]:
    """The fields per scope whose ref is in none of `sets` (`UNSEEN_BY_ANY`). An object is seen only by
    the pass that owns it, so one found in any set was seen; the others are checked by their key.
    The refs are computed a scope at a time (`scope_refs`): a scan computes a million of them."""
    if not sets:
        return {scope: fields for scope, fields in scope_fields.items() if fields}
    if not any(scope_fields.values()):
        return {}
    script: Any = writer.context.store.redis.register_script(UNSEEN_BY_ANY)
    refs = b"".join([scope_refs(scope, fields) for scope, fields in scope_fields.items()])
    positions: list[int] = await script(keys=sets, args=[refs])
    return _fields_at(scope_fields, positions)


def _fields_at(scope_fields: dict[ScopeId, list[bytes]], positions: Sequence[int]) -> dict[ScopeId, list[bytes]]:
    """The fields at `positions` (1-based, ascending) of the fields of `scope_fields` one after another,
    per scope."""
    scopes = list(scope_fields)
    ends = list(accumulate(len(fields) for fields in scope_fields.values()))
    found: dict[ScopeId, list[bytes]] = {}
    for position in positions:
        at = int(position) - 1
        n = bisect_right(ends, at)
        scope = scopes[n]
        found.setdefault(scope, []).append(scope_fields[scope][at - (ends[n - 1] if n else 0)])
    return found


# Which refs are in none of the seen sets (read-only). KEYS = seen sets (one tenant: one hash tag), the
# largest first; ARGV[1] = refs, 8 bytes each. Each set is asked, a thousand refs a call (SMISMEMBER),
# for the refs the sets before it did not have. Returns the (1-based) positions of the refs found in
# none: usually nothing.
UNSEEN_BY_ANY = """
local refs = ARGV[1]
local left = {}
for n = 1, #refs / 8 do left[n] = n end
for i = 1, #KEYS do
  if #left == 0 then break end
  local still = {}
  for s = 1, #left, 1000 do
    local batch = {}
    for j = s, math.min(s + 999, #left) do
      batch[#batch + 1] = string.sub(refs, 8 * left[j] - 7, 8 * left[j])
    end
    local flags = redis.call('SMISMEMBER', KEYS[i], unpack(batch))
    for j = 1, #flags do
      if flags[j] == 0 then still[#still + 1] = left[s + j - 1] end
    end
  end
  left = still
end
return left
"""


async def _unseen(
    writer: PassWriter,
    kind: Kind,
    family: str,
    scope_keys: dict[ScopeId, list[str]],
    complete: frozenset[str],
    owner_of: Ownership,
) -> dict[ScopeId, list[str]]:
    """The keys per scope that a complete pass owns and did not see (one pipeline of SMISMEMBER)."""
    by_owner: dict[str, list[tuple[ScopeId, str]]] = {}
    for scope, keys in scope_keys.items():
        for key in keys:
            owner = owner_of(kind, family, key)
            if owner in complete:
                by_owner.setdefault(owner, []).append((scope, key))
    if not by_owner:
        return {}
    store = writer.context.store
    script: Any = store.redis.register_script(UNSEEN)
    sets = [store.keys.round_seen(seen_source(owner)) for owner in by_owner]
    counts = orjson.dumps([len(owned) for owned in by_owner.values()])
    refs = b"".join(key_ref(scope, key) for owned in by_owner.values() for scope, key in owned)
    answer = await script(keys=sets, args=[counts, refs])
    owned_lists = list(by_owner.values())
    missing: dict[ScopeId, list[str]] = {}
    for position in range(0, len(answer), 2):
        scope, key = owned_lists[int(answer[position]) - 1][int(answer[position + 1]) - 1]
        missing.setdefault(scope, []).append(key)
    return missing


# Which refs are not in their seen sets (read-only). KEYS = seen sets (one tenant: one hash tag);
# ARGV[1] = a JSON array with, per KEYS[i], the number of refs to look up in it; ARGV[2] = the refs,
# 8 bytes each, in that order. Returns the (i, j) positions of the refs absent from their set,
# flattened: usually nothing, so a scope of thousands of objects costs one short answer instead of
# thousands of flags.
UNSEEN = """
local counts = cjson.decode(ARGV[1])
local refs = ARGV[2]
local at = 1
local out = {}
for i = 1, #KEYS do
  for j = 1, counts[i] do
    if redis.call('SISMEMBER', KEYS[i], string.sub(refs, at, at + 7)) == 0 then
      out[#out + 1] = i
      out[#out + 1] = j
    end
    at = at + 8
  end
end
return out
"""


async def prune_units(context: SourceContext, pass_name: str, recorded: bool) -> int:
    """After a complete pass (before its seen set is cleared): drop the records of its units that are
    gone (`PRUNE_UNITS`), owing a check of their objects (a scan of every scope unless the pass's records
    were `recorded`, complete and of this layout, when it started). Returns how many."""
    store = context.store
    source = seen_source(pass_name)
    buckets = sorted(int(b) for b in await store.redis.smembers(store.keys.sweep_unit_buckets(source)))
    script: Any = store.redis.register_script(PRUNE_UNITS)
    dropped = 0
    sets = _prune_sets(store.keys, source)
    for start in range(0, len(buckets), PRUNE_CHUNK):
        keys = [store.keys.sweep_units(source, b) for b in buckets[start : start + PRUNE_CHUNK]]
        dropped += int(await script(keys=[*sets, *keys], args=["" if recorded else ALL_SCOPES]))
    return dropped


def _prune_sets(keys: TenantKeys, source: str) -> list[str]:
    """The first keys of a prune script (`intune_units._PRUNE`): the pass's seen set, then what is owed a
    check: every scope, and objects."""
    return [keys.round_seen(source), keys.sweep_scan_owed(SOURCE), keys.sweep_owed_refs(SOURCE)]


async def prune_pages(context: SourceContext, pass_name: str, recorded: bool) -> int:
    """`prune_units` for a pass whose page records named every unit record when it started
    (`PassWriter.prunes_named`): only the records of the units named by the page records it did not find
    (`gone`) are read (`PRUNE_NAMED`), for a unit that went was on a page part that changed or went.
    Returns how many records went."""
    store = context.store
    source = seen_source(pass_name)
    gone = store.keys.sweep_pages(source, "gone")
    by_bucket: dict[int, list[str]] = {}
    records: list[Any] = await store.redis.hvals(gone)
    for uid in {uid for named in records for uid in page_record_units(named)}:
        by_bucket.setdefault(unit_bucket(uid), []).append(uid)
    script: Any = store.redis.register_script(PRUNE_NAMED)
    sets = _prune_sets(store.keys, source)
    buckets = sorted(by_bucket)
    dropped = 0
    for start in range(0, len(buckets), PRUNE_CHUNK):
        chunk = buckets[start : start + PRUNE_CHUNK]
        keys = [store.keys.sweep_units(source, b) for b in chunk]
        counts = orjson.dumps([len(by_bucket[b]) for b in chunk])
        uids = "".join(uid for b in chunk for uid in by_bucket[b])
        dropped += int(await script(keys=[*sets, *keys], args=[counts, uids, "" if recorded else ALL_SCOPES]))
    await store.redis.unlink(gone)
    return dropped


async def _delete(writer: PassWriter, gone: dict[ScopeId, list[str]]) -> int:
    """Delete the objects `gone` names, per scope, that are still there: read in one round trip and
    committed `DELETE_BATCH` at a time (a sweep after a device retires deletes a few of its objects
    in each of hundreds of scopes: a commit per scope made the deletions a round trip each)."""
    if not gone:
        return 0
    ops: list[Op] = []
    for scope, raws in (await writer.context.store.mirror_values(gone)).items():
        for key, raw in zip(gone[scope], raws, strict=True):
            if raw is not None:
                ops.append(Delete(placement_in(scope, orjson.loads(raw)), key))
    deleted = 0
    for start in range(0, len(ops), DELETE_BATCH):
        deleted += await writer.commit(ops[start : start + DELETE_BATCH])
    return deleted


def next_link(client: GraphClient, version: str) -> Follow:
    """Follow `@odata.nextLink` (list pages) inside batches."""

    def follow(_: BatchRequest, page: dict[str, Any]) -> BatchRequest | None:
        link = page.get("@odata.nextLink")
        return None if not link else BatchRequest("GET", client.relative_url(str(link), version))

    return follow


def list_page(answer: BatchResponse) -> dict[str, Any]:
    """An inner answer that is a page of a list: a JSON object with a `value` list, or invalidResponse."""
    body = answer.body
    if not isinstance(body.get("value"), list):
        raise answer.invalid("a JSON object without a value list where a list page belongs")
    return body


@dataclass(slots=True)
class Batched(Generic[T]):
    """Per-object lists (a policy's device statuses, an app's devices) read 20 at a time in `$batch`.

    Each tag's first request waits its turn; `decode` checks an answer is what the call returns (a list
    page by default) and `follow` turns it into the tag's next request (its next page), sent in the next
    batch. Pages are yielded one by one; a status in `tolerate` (a 404: the object went away since it
    was listed) ends that tag quietly, any other error raises it (a 403 names the missing permission),
    and so does an answer `decode` refuses (invalidResponse): the pass then deletes nothing.
    """

    client: GraphClient
    tenant: str
    follow: Follow
    version: str = "v1.0"
    tolerate: frozenset[int] = frozenset({404})
    decode: Decode = list_page

    async def pages(self, first: Iterable[tuple[T, BatchRequest]]) -> AsyncIterator[tuple[T, dict[str, Any]]]:
        # At most 20 lists are open at a time, each followed to its end before another starts: page
        # tokens stay fresh, and the queue holds 20 requests whatever the number of objects. The next
        # batch is sent as soon as this one is decoded, while the caller works on its pages.
        waiting: deque[tuple[T, BatchRequest]] = deque(first)
        active = self._fill([], waiting)
        pending = self._send(active)
        try:
            while pending is not None:
                answers = await pending
                pages, following, error = self._read(active, answers)
                active = self._fill(following, waiting) if error is None else []
                pending = self._send(active)
                for tag, page in pages:
                    yield tag, page
                if error is not None:
                    raise error
        except BaseException:
            if pending is not None:
                pending.cancel()
            raise

    @staticmethod
    def _fill(
        active: list[tuple[T, BatchRequest]], waiting: deque[tuple[T, BatchRequest]]
    ) -> list[tuple[T, BatchRequest]]:
        while len(active) < BATCH_LIMIT and waiting:
            active.append(waiting.popleft())
        return active

    def _send(self, active: list[tuple[T, BatchRequest]]) -> asyncio.Future[list[BatchResponse]] | None:
        if not active:
            return None
        return asyncio.ensure_future(self.client.batch(self.tenant, [r for _, r in active], version=self.version))

    def _read(
        self, active: list[tuple[T, BatchRequest]], answers: list[BatchResponse]
    ) -> tuple[list[tuple[T, dict[str, Any]]], list[tuple[T, BatchRequest]], Exception | None]:
        """The pages of a batch's answers in order, the follow-up requests, and the first error (the
        pages before it are still delivered)."""
        pages: list[tuple[T, dict[str, Any]]] = []
        following: list[tuple[T, BatchRequest]] = []
        for (tag, request), answer in zip(active, answers, strict=True):
            error = answer.error()
            if error is not None:
                if answer.status in self.tolerate:
                    log.info("tenant %s: %s gone since listed: %s", self.tenant, request.url, error)
                    continue
                return pages, following, error
            try:
                page = self.decode(answer)
            except GraphError as exc:
                return pages, following, exc
            pages.append((tag, page))
            next_request = self.follow(request, page)
            if next_request is not None:
                following.append((tag, next_request))
        return pages, following, None
