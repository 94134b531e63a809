"""Helpers for the end-to-end directory tests: what the mirror must hold for a simulated tenant."""

from __future__ import annotations

from typing import Any

from monitor.model.account import map_account
from monitor.model.groups import GROUP_SELECT, map_group, map_member_change, member_details
from monitor.model.types import JsonObject, Kind, Op, Upsert
from monitor.model.users import USER_SELECT, map_user
from monitor.records import ChangeRecord
from monitor.simulator import SimTenant

MirrorState = dict[tuple[Kind, str], JsonObject]


def _selected(obj: dict[str, Any], select: tuple[str, ...]) -> dict[str, Any]:
    return {name: obj[name] for name in ("id", *select) if name in obj}


def _put(state: MirrorState, ops: list[Op] | list[Upsert]) -> None:
    for op in ops:
        assert isinstance(op, Upsert)
        state[(op.placement.kind, op.key)] = op.obj


def expected_mirror(tenant: SimTenant, account_key: str, *, account: bool = True, named: bool = True) -> MirrorState:
    """The mirror a complete sync of `tenant` must produce, computed straight from its state.

    Memberships of soft-deleted users and groups (which Graph keeps) are not in it: they are
    parked until a restore. `named`: placeholders carry their names (getByIds was allowed).
    """
    state: MirrorState = {}
    if account:
        _put(state, [map_account(tenant.organization, key=account_key, display_name=None)])
    for user in tenant.users.values():
        _put(state, map_user(_selected(user, USER_SELECT), account_key=account_key))
    for group_id, group in tenant.groups.items():
        _put(state, map_group(_selected(group, GROUP_SELECT), account_key=account_key))
        for member_id, odata_type in tenant.members[group_id].items():
            if tenant.directory_object(member_id) is None:
                continue
            entry = {"@odata.type": odata_type, "id": member_id}
            if named and member_id in tenant.objects:
                entry |= member_details(tenant.objects[member_id])
            _put(state, map_member_change(group_id, entry))
    return state


def dangling(state: MirrorState) -> list[str]:
    """Relationships of `state` whose ends are not entities of `state`."""
    entities = {key for kind, key in state if kind == "entity"}
    return sorted(
        obj["_key"]
        for (kind, _), obj in state.items()
        if kind == "relationship" and not {obj["_fromEntityKey"], obj["_toEntityKey"]} <= entities
    )


def without_sign_in(state: MirrorState) -> MirrorState:
    from monitor.model.users import SIGN_IN_PROPERTIES

    return {ref: {k: v for k, v in obj.items() if k not in SIGN_IN_PROPERTIES} for ref, obj in state.items()}


def replay(records: list[ChangeRecord]) -> MirrorState:
    """Apply a change log from the start to an empty state."""
    state: MirrorState = {}
    for record in records:
        ref = (record["kind"], record["key"])
        if record["op"] == "delete":
            del state[ref]
        else:
            after = record["after"]
            assert after is not None  # an upsert carries the object
            state[ref] = after
    return state


def summary(records: list[ChangeRecord]) -> set[tuple[str, str, str, tuple[str, ...]]]:
    """(op, type, key, changed) of each record, for exact comparisons."""
    return {(r["op"], r["type"], r["key"], tuple(r["changed"])) for r in records}
