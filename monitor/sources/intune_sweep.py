"""The machinery of a sweep pass: commit pages as they come, remember what the pass saw, delete what
it no longer sees, and page through per-object lists in JSON batches.

Rules (DESIGN.md, "Rules that keep it correct"; issue 4):

- Each page is committed (mirror + change log, atomically) before the next one is read: memory
  holds a page (or one batch of 20 pages), never the tenant.
- A pass over one resource records every object it produced in a seen set of its own (Redis,
  `TenantKeys.round_seen("intune.<pass>")`). Only after the pass read *everything* are the objects
  of the `_type`s it owns that it did not see deleted; a pass that fails part-way, or whose
  endpoint answers 403, deletes nothing. Several passes write into the same device-anchored scopes
  (ASSIGNED, INSTALLED, ...), so a pass deletes only objects its `owns` predicate accepts.
- Seen-set members are 64-bit digests of "<kind>:<key>", not the keys: a large estate's passes see
  millions of relationships, and a digest costs Redis a quarter of a key. A collision could only
  make an absent object look seen (kept one more sweep), never delete a present one.
- The change records carry source "intune"; the seen sets are written beside them, keyed by pass.
"""

from __future__ import annotations

import hashlib
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from monitor.graph.client import BATCH_LIMIT, BatchRequest, BatchResponse, GraphClient
from monitor.model.registry import end_placements, entity_anchor
from monitor.model.types import Delete, JsonObject, Kind, Op, Placement, Upsert
from monitor.rounds import Progress, RecordListener, RoundResult
from monitor.scopes import ScopeId
from monitor.sources.base import SourceContext
from monitor.store import PageWrite

log = logging.getLogger(__name__)

SOURCE = "intune"
DELETE_BATCH = 500
T = TypeVar("T")
Owns = Callable[[JsonObject], bool]
Follow = Callable[[BatchRequest, BatchResponse], BatchRequest | None]


def seen_ref(kind: Kind, key: str) -> str:
    return hashlib.blake2b(f"{kind}:{key}".encode(), digest_size=8).hexdigest()


def seen_source(pass_name: str) -> str:
    return f"{SOURCE}.{pass_name}"


@dataclass(frozen=True, slots=True)
class Owned:
    """Objects of (`kind`, `family`) that a pass may delete by absence: those `owns` accepts."""

    kind: Kind
    family: str
    owns: Owns


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
    ) -> None:
        self.context = context
        self.pass_name = pass_name
        self.result = result
        self.track = track
        self.on_records = on_records
        self.progress = progress
        self.objects = 0

    async def commit(self, ops: Sequence[Op], *, objects: int = 0) -> None:
        """Commit one page of operations; `objects` Graph objects were read to make them."""
        store, now = self.context.store, self.context.clock()
        write = PageWrite(ops=list(ops))
        if self.on_records is None:
            self.result.changes.update(await store.commit_counts(write, source=SOURCE, observed_at=now))
        else:
            records = await store.commit(write, source=SOURCE, observed_at=now)
            self.result.add(records)
            if records:
                self.on_records(records)
        if self.track:
            seen = [seen_ref(op.placement.kind, op.key) for op in ops if isinstance(op, Upsert)]
            if seen:
                await store.commit(PageWrite(seen=seen), source=seen_source(self.pass_name), observed_at=now)
        self.result.pages += 1
        self.result.objects += objects
        self.objects += objects
        if self.progress is not None:
            self.progress(self.result)


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


async def delete_absent(writer: PassWriter, owned: Sequence[Owned]) -> int:
    """After a complete pass: delete the owned objects the pass did not see. Returns how many."""
    store = writer.context.store
    source = seen_source(writer.pass_name)
    deleted = 0
    for item in owned:
        for scope in await store.known_scopes(item.kind, item.family):
            objects = [obj for obj in (await store.scope_objects(scope)).values() if item.owns(obj)]
            missing = set(await store.unseen(source, [seen_ref(item.kind, obj["_key"]) for obj in objects]))
            deletes: list[Op] = [
                Delete(placement_in(scope, obj), obj["_key"])
                for obj in objects
                if seen_ref(item.kind, obj["_key"]) in missing
            ]
            for start in range(0, len(deletes), DELETE_BATCH):
                chunk = deletes[start : start + DELETE_BATCH]
                before = writer.result.changes.copy()
                await writer.commit(chunk)
                deleted += sum((writer.result.changes - before).values())
    writer.result.deleted_by_absence += deleted
    return deleted


def next_link(client: GraphClient, version: str) -> Follow:
    """Follow `@odata.nextLink` (list pages) inside batches."""

    def follow(_: BatchRequest, answer: BatchResponse) -> BatchRequest | None:
        link = answer.body.get("@odata.nextLink")
        return None if not link else BatchRequest("GET", client.relative_url(str(link), version))

    return follow


@dataclass(slots=True)
class Batched(Generic[T]):
    """Per-object lists (a policy's device statuses, an app's devices) read 20 at a time in `$batch`.

    Each tag's first request goes in the queue; `follow` turns an answer into the tag's next request
    (its next page), which joins the back of the queue. Answers are yielded page by page; a status
    in `tolerate` (a 404: the object went away since it was listed) ends that tag quietly, any other
    error raises it (a 403 names the missing permission; the pass then deletes nothing).
    """

    client: GraphClient
    tenant: str
    follow: Follow
    version: str = "v1.0"
    tolerate: frozenset[int] = frozenset({404})

    async def pages(self, first: Iterable[tuple[T, BatchRequest]]) -> AsyncIterator[tuple[T, BatchResponse]]:
        pending: deque[tuple[T, BatchRequest]] = deque(first)
        while pending:
            chunk = [pending.popleft() for _ in range(min(BATCH_LIMIT, len(pending)))]
            answers = await self.client.batch(self.tenant, [request for _, request in chunk], version=self.version)
            for (tag, request), answer in zip(chunk, answers, strict=True):
                error = answer.error()
                if error is not None:
                    if answer.status in self.tolerate:
                        log.info("tenant %s: %s gone since listed: %s", self.tenant, request.url, error)
                        continue
                    raise error
                yield tag, answer
                following = self.follow(request, answer)
                if following is not None:
                    pending.append((tag, following))
