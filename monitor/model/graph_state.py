"""The last known Graph state of a user or group, and merging a delta update onto it (pure).

Why it is needed: in a delta round, "updated instances are represented by their id with *at least*
the properties that have been updated, but additional properties may be included"
(https://learn.microsoft.com/en-us/graph/delta-query-overview, "Resource representation in the
delta query response"). The user and group delta pages
(https://learn.microsoft.com/en-us/graph/api/user-delta,
https://learn.microsoft.com/en-us/graph/api/group-delta) describe the two ends: by default every
selected property ("if the property has never been set before it will not be included in the
response at all"); under `Prefer: return=minimal`, only the changed ones, "this includes
properties being set to null value". So an updated object is merged onto the previous state:
absent means unchanged, an explicit null means cleared. New objects come whole ("standard
representation"), and so does everything in a full round (the initial request "will return the
resources that currently exist"), which replaces the state instead.

How it is kept: the mirrored JupiterOne entity already holds most selected properties under the
same name and value (users: all of them, as long as `displayName` is set). The entity is lossy
only where the mapping falls back or converts (a missing `displayName` becomes the UPN, a group's
`mail` is kept only when `mailEnabled`, timestamps become epoch milliseconds), so what is stored
beside the entity is only the *residue*: the properties whose Graph value differs from the
entity's property of the same name. Entity plus residue give back the Graph state exactly.
"""

from __future__ import annotations

from monitor.diff import same_value
from monitor.model.groups import GROUP_SELECT
from monitor.model.types import JsonMapping, JsonObject
from monitor.model.users import USER_SELECT

# The selected properties a state holds (`id` is the key; `members` is a relationship).
USER_STATE: tuple[str, ...] = tuple(p for p in USER_SELECT if p != "id")
GROUP_STATE: tuple[str, ...] = tuple(p for p in GROUP_SELECT if p not in ("id", "members"))


def selected(obj: JsonMapping, props: tuple[str, ...]) -> JsonObject:
    """The state of an object that came whole: its selected properties that are set."""
    return {p: obj[p] for p in props if obj.get(p) is not None}


def merge(state: JsonMapping, update: JsonMapping, props: tuple[str, ...]) -> JsonObject:
    """`state` with the selected properties `update` carries: a value replaces, null clears, and a
    property `update` does not carry is unchanged."""
    merged = dict(state)
    for prop in props:
        if prop in update:
            value = update[prop]
            if value is None:
                merged.pop(prop, None)
            else:
                merged[prop] = value
    return merged


def carries_properties(obj: JsonMapping, props: tuple[str, ...]) -> bool:
    """Whether a delta object carries any state property (a group repeated on a later page with
    another slice of `members@delta` carries none)."""
    return any(p in obj for p in props)


def residue(state: JsonMapping, entity: JsonMapping, props: tuple[str, ...]) -> JsonObject:
    """What `state` holds that `entity` (the object mapped from it) does not tell: each property
    whose Graph value differs from the entity's property of the same name (null included)."""
    return {p: state.get(p) for p in props if not same_value(state.get(p), entity.get(p))}


def reconstruct(entity: JsonMapping, stored: JsonMapping, props: tuple[str, ...]) -> JsonObject:
    """The Graph state an entity and its residue stand for (the inverse of `residue`)."""
    state = {p: stored[p] if p in stored else entity.get(p) for p in props}
    return {p: v for p, v in state.items() if v is not None}
