"""The account entity from `GET /organization` (docs/jupiterone.md 1.1; `Organization.Read.All`)."""

from __future__ import annotations

import logging

from monitor.graph.client import GraphError
from monitor.model.account import INTUNE_PROPERTIES, map_account
from monitor.model.types import Upsert
from monitor.permissions import NEEDED_FOR
from monitor.sources.base import Progress, RecordListener, RoundResult, SourceContext
from monitor.store import PageWrite, iso_ms

log = logging.getLogger(__name__)

SOURCE = "account"
PERMISSION = "Organization.Read.All"


async def refresh_account(
    context: SourceContext, *, on_records: RecordListener | None = None, progress: Progress | None = None
) -> RoundResult:
    """Read the organization and commit the account entity. A 401/403 is recorded, not raised.
    One request: there is no page progress to report to `progress`."""
    result = RoundResult(context.tenant.id, SOURCE, sweep=True)
    try:
        response = await context.client.get(context.tenant.id, "/v1.0/organization")
    except GraphError as exc:
        if not exc.forbidden:
            raise
        await context.store.record_permission(
            PERMISSION, False, NEEDED_FOR[PERMISSION], str(exc), iso_ms(context.clock())
        )
        log.warning("tenant %s: no account entity: missing %s (%s)", context.tenant.id, PERMISSION, exc)
        return result
    organizations = response.body.get("value") or []
    if not organizations:
        raise GraphError(f"tenant {context.tenant.id}: /organization returned no organization")
    await context.store.record_permission(PERMISSION, True, NEEDED_FOR[PERMISSION], "", iso_ms(context.clock()))
    mapped = map_account(organizations[0], key=context.account_key, display_name=context.tenant.account_name)
    # The Intune sweep patches its enrichment onto the account; a refresh must not wipe it.
    upsert = Upsert(mapped.placement, mapped.obj, preserve=INTUNE_PROPERTIES)
    records = await context.store.commit(PageWrite(ops=[upsert]), source=SOURCE, observed_at=context.clock())
    result.pages, result.objects = 1, 1
    result.add(records)
    if records and on_records is not None:
        on_records(records)
    return result
