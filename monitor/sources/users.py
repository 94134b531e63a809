"""Users from `GET /users/delta` (docs/graph.md 7; permission `User.Read.All`).

An updated user is merged onto its last known Graph state before it is mapped
(`monitor.model.graph_state`); a removed one takes its memberships with it, and a restored one
brings them back (`monitor.sources.parking`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from monitor.graph.delta import DeltaResource
from monitor.model.graph_state import USER_STATE, selected
from monitor.model.types import JsonMapping, JsonObject, Kind, Op, Placement, Upsert
from monitor.model.users import SIGN_IN_PROPERTIES, USER_SELECT, map_user, user_removed
from monitor.sources.base import PageOps, SourceContext
from monitor.sources.graph_states import residue_removal, residue_write, states_of, whole_objects
from monitor.sources.parking import Fate, PageFates, Parking, removed_fates
from monitor.store import PageWrite, Residue

USER_FAMILY = "azure_user"
USERS = DeltaResource("users", "/v1.0/users/delta", USER_SELECT)


@dataclass(slots=True)
class DirectoryHint:
    """What a users or groups page learnt for `expand`: the fates of its objects, the soft-deleted
    set it was read against, and the Graph residues to write."""

    soft_deleted: set[str]
    fates: PageFates = field(default_factory=PageFates)
    residues: dict[str, Residue] = field(default_factory=dict)


def removal_fate(obj: JsonMapping) -> Fate:
    """`deleted` for a permanent deletion; anything else (`changed`, or a reason Graph adds later)
    is taken as restorable, the reading that loses nothing (monitor.sources.parking)."""
    removed = obj.get("@removed")
    return "deleted" if isinstance(removed, dict) and removed.get("reason") == "deleted" else "changed"


class UsersSource:
    name = "users"
    resource = USERS
    owned: tuple[tuple[Kind, str], ...] = (("entity", USER_FAMILY), ("relationship", USER_FAMILY))

    def __init__(self, context: SourceContext) -> None:
        self._account_key = context.account_key
        self._store = context.store
        self._parking = Parking(context.store, context.account_key, groups=False)

    async def page_ops(self, objects: list[JsonObject], *, full: bool = False) -> PageOps:
        hint = DirectoryHint(await self._store.soft_deleted())
        users = await whole_objects(
            self._store, USER_FAMILY, USER_STATE, objects, full=full, soft_deleted=hint.soft_deleted
        )
        ops: list[Op] = []
        seen: list[str] = []
        for user in users:
            user_id = user["id"]
            if "@removed" in user:
                ops.extend(user_removed(user_id, account_key=self._account_key))
                hint.fates.left(user_id, removal_fate(user))
                hint.residues[user_id] = residue_removal(USER_FAMILY, user_id)
                continue
            hint.fates.appeared(user_id)
            for mapped in map_user(user, account_key=self._account_key):
                seen.append(mapped.key)
                # Sign-in activity is patched onto the entity by the sign-in sweep; a directory
                # update must not wipe it.
                preserve = SIGN_IN_PROPERTIES if mapped.placement.kind == "entity" else ()
                ops.append(Upsert(mapped.placement, mapped.obj, preserve=preserve))
                if mapped.placement.kind == "entity":
                    state = selected(user, USER_STATE)
                    hint.residues[user_id] = residue_write(USER_FAMILY, USER_STATE, state, mapped.obj)
        return PageOps(ops, seen, hint)

    def placement_of(self, kind: Kind, family: str, key: str) -> Placement:
        # Relationships ("account HAS user") are anchored on the user: the last part of the key.
        anchor = key if kind == "entity" else key.rsplit("|", 1)[1]
        return Placement(kind, family, anchor)

    async def expand(self, ops: list[Op], hint: Any = None) -> PageWrite:
        """The page's memberships settled around deleted and restored users; with no hint (users
        a full round no longer lists), those users are taken as soft-deleted."""
        if not isinstance(hint, DirectoryHint):
            hint = DirectoryHint(await self._store.soft_deleted(), removed_fates(ops, USER_FAMILY))
            hint.residues = {key: residue_removal(USER_FAMILY, key) for key in hint.fates.removed}
        leaving = [i for i, fate in hint.fates.removed.items() if fate != "deleted" and i not in hint.soft_deleted]
        states = await states_of(self._store, USER_FAMILY, USER_STATE, leaving)
        write = await self._parking.settle(ops, hint.fates, soft_deleted=hint.soft_deleted, states=states)
        write.residues = list(hint.residues.values())
        return write
