"""Sign-in activity of users, swept from `GET /users?$select=id,signInActivity`.

`signInActivity` cannot be selected on `/users/delta` (Graph answers 400 "$expand/$select is not
supported for the following properties: signInActivity"), so it is read by a periodic list and
patched onto the user entities; its timestamps become epoch milliseconds. It needs
`AuditLog.Read.All` and an Entra ID P1/P2 licence (docs/jupiterone.md 1.2): without either, the tenant
syncs without sign-in data and the status names what is missing.
"""

from __future__ import annotations

import logging

from monitor.graph.client import GraphError
from monitor.model.types import Op, Patch, entity_placement
from monitor.model.users import SIGN_IN_PROPERTIES, sign_in_properties
from monitor.permissions import NEEDED_FOR
from monitor.sources.base import Progress, RecordListener, RoundResult, SourceContext
from monitor.sources.users import USER_FAMILY
from monitor.store import PageWrite, iso_ms

log = logging.getLogger(__name__)

SOURCE = "signins"
PERMISSION = "AuditLog.Read.All"
# Graph caps $top at 120 when signInActivity is selected.
PAGE_SIZE = "120"


async def sweep_sign_ins(
    context: SourceContext, *, on_records: RecordListener | None = None, progress: Progress | None = None
) -> RoundResult:
    """Patch every user's sign-in activity; records a missing permission or licence instead of failing.
    (`progress` is accepted for the common runner signature, monitor.source_registry; a sweep reports none.)"""
    result = RoundResult(context.tenant.id, SOURCE, sweep=True)
    params = {"$select": "id,signInActivity", "$top": PAGE_SIZE}
    now = iso_ms(context.clock())
    try:
        async for users in context.client.pages(context.tenant.id, "/v1.0/users", params=params):
            ops: list[Op] = [
                Patch(
                    entity_placement(USER_FAMILY, user["id"]),
                    user["id"],
                    sign_in_properties(user.get("signInActivity")),
                    remove=SIGN_IN_PROPERTIES,
                )
                for user in users
            ]
            records = await context.store.commit(PageWrite(ops=ops), source=SOURCE, observed_at=context.clock())
            result.pages += 1
            result.objects += len(users)
            result.add(records)
            if records and on_records is not None:
                on_records(records)
    except GraphError as exc:
        if exc.status != 403:
            raise
        detail = unavailable_reason(str(exc))
        await context.store.record_permission(PERMISSION, False, NEEDED_FOR[PERMISSION], detail, now)
        await context.store.record_status(SOURCE, {"skipped": detail, "checked_at": now})
        log.warning("tenant %s: users sync without sign-in activity: %s", context.tenant.id, detail)
        return result
    await context.store.record_permission(PERMISSION, True, NEEDED_FOR[PERMISSION], "", now)
    await context.store.record_status(SOURCE, {"skipped": "", "checked_at": now})
    return result


def unavailable_reason(message: str) -> str:
    if "AuditLog.Read.All" in message:
        return "missing permission AuditLog.Read.All"
    if "premium" in message.lower():
        return "the tenant has no Entra ID P1/P2 licence"
    return message
