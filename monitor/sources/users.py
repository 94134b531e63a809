"""Users from `GET /users/delta` (GRAPH.md 7; permission `User.Read.All`)."""

from __future__ import annotations

from typing import Any

from monitor.graph.delta import DeltaResource
from monitor.model.types import Kind, Op, Placement, Upsert
from monitor.model.users import SIGN_IN_PROPERTIES, USER_SELECT, map_user, user_removed
from monitor.sources.base import PageOps, SourceContext
from monitor.store import PageWrite

USER_FAMILY = "azure_user"
USERS = DeltaResource("users", "/v1.0/users/delta", USER_SELECT)


class UsersSource:
    name = "users"
    resource = USERS
    owned: tuple[tuple[Kind, str], ...] = (("entity", USER_FAMILY), ("relationship", USER_FAMILY))

    def __init__(self, context: SourceContext) -> None:
        self._account_key = context.account_key

    def page_ops(self, objects: list[dict[str, Any]]) -> PageOps:
        ops: list[Op] = []
        seen: list[str] = []
        for user in objects:
            if "@removed" in user:
                # Soft-deleted ("changed") or hard-deleted ("deleted"): either way the user is no
                # longer listed by the directory (GRAPH.md 7.4), so it leaves the inventory; a
                # restored user comes back as if new.
                ops.extend(user_removed(user["id"], account_key=self._account_key))
                continue
            for mapped in map_user(user, account_key=self._account_key):
                seen.append(mapped.key)
                # Sign-in activity is patched onto the entity by the sign-in sweep; a directory
                # update must not wipe it.
                preserve = SIGN_IN_PROPERTIES if mapped.placement.kind == "entity" else ()
                ops.append(Upsert(mapped.placement, mapped.obj, preserve=preserve))
        return PageOps(ops, seen)

    def placement_of(self, kind: Kind, family: str, key: str) -> Placement:
        # Relationships ("account HAS user") are anchored on the user: the last part of the key.
        anchor = key if kind == "entity" else key.rsplit("|", 1)[1]
        return Placement(kind, family, anchor)

    async def expand(self, ops: list[Op], hint: Any = None) -> PageWrite:
        return PageWrite(ops=ops)
