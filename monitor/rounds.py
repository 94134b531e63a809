"""One delta round of one source: Graph pages in, one atomic commit per page, the deltaLink last.

Correctness rules (docs/architecture.md, "Rules that keep it correct"):

- Each page is committed (mirror + change records) atomically before the next is read; memory
  holds one page, never the tenant.
- The deltaLink is saved only after the last page. A round that fails part-way leaves the old link
  in place; the next round replays from it, and replayed pages find nothing new to emit.
- A full round (no link yet, a changed `$select`, or Graph asking for a resync) is the only kind
  that may delete by absence, and only once it has read every page: objects of the source's
  families that the round did not see are then deleted. An incomplete round deletes nothing.
"""

from __future__ import annotations

import contextlib
import logging
import time

from monitor.graph.delta import DeltaPage, ResyncRequired, delta_pages
from monitor.model.types import Delete, Op
from monitor.sources.base import DeltaSource, Progress, RecordListener, RoundResult, SourceContext

# RoundResult, Progress and RecordListener live in monitor.sources.base: the sweeps report with them
# too, and no source imports this module (docs/architecture.md, "Layers").
__all__ = ["ABSENCE_BATCH", "MAX_RESYNCS", "MINIMAL", "Progress", "RecordListener", "RoundResult", "run_delta_round"]

log = logging.getLogger(__name__)

# Graph may ask for a resync at most this often within one call before we give up for now.
MAX_RESYNCS = 2
# Sent on every request of an incremental round: "specifying this header with a request that uses
# a deltaLink would return only the object properties that have changed since the last round"
# (https://learn.microsoft.com/en-us/graph/api/user-delta,
# https://learn.microsoft.com/en-us/graph/api/group-delta). Updates are merged onto the last known
# state in any case (Graph may send "at least" the changed properties either way,
# monitor.model.graph_state), so asking for the minimal form only saves bandwidth, and makes the
# merge the everyday path rather than a rare one. A full round does not send it: its objects come
# whole and replace the state.
MINIMAL = {"Prefer": "return=minimal"}
ABSENCE_BATCH = 500


async def run_delta_round(
    context: SourceContext,
    source: DeltaSource,
    *,
    progress: Progress | None = None,
    on_records: RecordListener | None = None,
) -> RoundResult:
    """Run one round of `source` for the context's tenant; returns what it read and emitted."""
    store, resource = context.store, source.resource
    result = RoundResult(context.tenant.id, source.name)
    started, requests_before = time.monotonic(), context.client.stats.requests
    state = await store.delta_state(source.name)
    full = state is None or state.fingerprint != resource.fingerprint
    url = resource.initial_url(context.client.base_url) if full or state is None else state.link
    try:
        while True:
            try:
                link = await _read_round(context, source, url, full, result, progress, on_records)
                break
            except ResyncRequired as exc:
                if result.resyncs >= MAX_RESYNCS:
                    raise
                result.resyncs += 1
                log.warning(
                    "tenant %s %s: delta state expired, starting a full round: %s", result.tenant, source.name, exc
                )
                full, url = True, exc.location or resource.initial_url(context.client.base_url)
        await store.save_delta_link(source.name, link, resource.fingerprint, time.time())
    finally:
        result.duration = time.monotonic() - started
        result.requests = context.client.stats.requests - requests_before
    result.full = full
    return result


async def _read_round(
    context: SourceContext,
    source: DeltaSource,
    url: str,
    full: bool,
    result: RoundResult,
    progress: Progress | None,
    on_records: RecordListener | None,
) -> str:
    """Read and commit every page from `url`; returns the deltaLink. Deletes by absence if `full`."""
    store = context.store
    # Deletion by absence needs the set of keys the round saw. A first round over an empty mirror
    # has nothing to delete, so it skips that bookkeeping.
    track = full and await _has_objects(context, source)
    if track:
        await store.reset_seen(source.name)
    result.full = full
    # aclosing: a cancelled round closes the page stream (and its prefetch) at once.
    headers = None if full else MINIMAL
    async with contextlib.aclosing(delta_pages(context.client, context.tenant.id, url, headers)) as pages:
        async for page in pages:
            await _commit_page(context, source, page, full, track, result, on_records)
            if progress is not None:
                progress(result)
            if page.delta_link:
                if track:
                    await _delete_absent(context, source, result, on_records)
                    await store.reset_seen(source.name)
                return page.delta_link
    raise AssertionError("delta_pages ends on the page with the deltaLink")  # pragma: no cover


async def _commit_page(
    context: SourceContext,
    source: DeltaSource,
    page: DeltaPage,
    full: bool,
    track: bool,
    result: RoundResult,
    on_records: RecordListener | None,
) -> None:
    page_ops = await source.page_ops(page.objects, full=full)
    write = await source.expand(page_ops.ops, page_ops.hint)
    if track:
        write.seen = page_ops.seen
    result.pages += 1
    result.objects += len(page.objects)
    if on_records is None:
        result.changes.update(await context.store.commit_counts(write, source=source.name, observed_at=context.clock()))
        return
    records = await context.store.commit(write, source=source.name, observed_at=context.clock())
    result.add(records)
    if records:
        on_records(records)


async def _has_objects(context: SourceContext, source: DeltaSource) -> bool:
    for kind, family in source.owned:
        if await context.store.known_scopes(kind, family):
            return True
    return False


async def _delete_absent(
    context: SourceContext, source: DeltaSource, result: RoundResult, on_records: RecordListener | None
) -> None:
    """After a complete full round: delete what the mirror has and Graph no longer returned."""
    store = context.store
    for kind, family in source.owned:
        for scope in await store.known_scopes(kind, family):
            missing = await store.unseen(source.name, await store.scope_keys(scope))
            for start in range(0, len(missing), ABSENCE_BATCH):
                deletes: list[Op] = [
                    Delete(source.placement_of(kind, family, key), key)
                    for key in missing[start : start + ABSENCE_BATCH]
                ]
                write = await source.expand(deletes)
                records = await store.commit(write, source=source.name, observed_at=context.clock())
                result.deleted_by_absence += sum(1 for r in records if r["op"] == "delete")
                result.add(records)
                if records and on_records is not None:
                    on_records(records)
