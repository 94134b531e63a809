"""Delta objects made whole before they are mapped, and the Graph residues that make it possible.

The rules (and the Graph documentation behind them) are in `monitor.model.graph_state`. Here:
reading the last known state of a page's updated objects (one pipelined read of their entities
and residues; a soft-deleted object's state is in its parked hash), merging, and the residue
writes that go into the page's commit.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import orjson

from monitor.model.graph_state import carries_properties, merge, reconstruct, residue, selected
from monitor.model.types import JsonMapping, JsonObject, entity_placement
from monitor.sources.parking import TOMBSTONE
from monitor.store import Residue, TenantStore


async def whole_objects(
    store: TenantStore,
    family: str,
    props: tuple[str, ...],
    objects: Sequence[JsonMapping],
    *,
    full: bool,
    soft_deleted: set[str],
) -> list[JsonMapping]:
    """The page's objects, each update merged onto its last known state (in a full round every
    object is whole already). Removed objects and objects without state properties (a group's
    repeated `members@delta` slice) pass unchanged."""
    if full:
        return list(objects)
    updates = [o["id"] for o in objects if "@removed" not in o and carries_properties(o, props)]
    known = await _known_states(store, family, props, updates, soft_deleted)
    states: dict[str, JsonObject] = {}
    whole: list[JsonMapping] = []
    for obj in objects:
        if "@removed" in obj or not carries_properties(obj, props):
            whole.append(obj)
            continue
        object_id = obj["id"]
        base = states.get(object_id, known.get(object_id))
        state = merge(base, obj, props) if base is not None else selected(obj, props)
        states[object_id] = state
        whole.append({**{k: v for k, v in obj.items() if k not in props}, **state})
    return whole


async def _known_states(
    store: TenantStore, family: str, props: tuple[str, ...], ids: Iterable[str], soft_deleted: set[str]
) -> dict[str, JsonObject]:
    ids = list(dict.fromkeys(ids))
    known = await states_of(store, family, props, [i for i in ids if i not in soft_deleted])
    for object_id, fields in (await store.parked([i for i in ids if i in soft_deleted])).items():
        raw = fields.get(TOMBSTONE)
        if raw:
            known[object_id] = orjson.loads(raw)
    return known


def residue_write(family: str, props: tuple[str, ...], state: JsonMapping, entity: JsonObject) -> Residue:
    """The residue of a freshly mapped object, for the page's commit."""
    key: str = entity["_key"]
    return Residue(entity_placement(family, key), key, residue(state, entity, props))


def residue_removal(family: str, key: str) -> Residue:
    return Residue(entity_placement(family, key), key, None)


async def states_of(
    store: TenantStore, family: str, props: tuple[str, ...], ids: Iterable[str]
) -> dict[str, JsonObject]:
    """The last known Graph state of the mirrored objects among `ids`."""
    placements = [entity_placement(family, i) for i in dict.fromkeys(ids)]
    known = await store.graph_known(placements)
    return {i: reconstruct(entity, stored, props) for i, (entity, stored) in known.items()}
