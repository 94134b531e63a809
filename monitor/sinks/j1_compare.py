"""What JupiterOne holds of a scope against what monitor would upload to it (pure).

Both sides are brought to one form: per object its kind, `_key`, `_type`, `_class`, every property
whose name does not start with `_` (JupiterOne's own metadata, `_id`, `_version`, `_scope`, ..., is
not ours to compare), and for a relationship the two entities it joins, as (scope, key). Values
compare as the mirror's diff does (`monitor.diff.same_value`): `null` and absent are the same, and
arrays compare as multisets. `_type` may come back as a one-element list and `_class` as a string or
a list; both are read either way.

An object is `missing` (we would upload it; JupiterOne lacks it), `stale` (JupiterOne holds it; we
would not upload it) or `changed` (both, different).

The shapes read are those of the `queryV1` answers (https://docs.jupiterone.io/api/entity-relationship-queries;
the Node.js client's `QueryResult`): a `list` of `{id, entity, properties}` for entities, and for
relationships a `table` whose columns are named `alias.property`, as `RETURN alias.property` gives
them (the relationship's own columns may also come as one object under its alias: both are read).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from monitor.diff import same_value
from monitor.model.types import JsonMapping, JsonObject, Kind
from monitor.sinks.j1_payload import Payload

Drift = Literal["missing", "stale", "changed"]
End = tuple[str, str]  # (JupiterOne scope, _key)


@dataclass(frozen=True, slots=True)
class Held:
    """One object in the compared form."""

    kind: Kind
    key: str
    type: str
    properties: JsonObject
    ends: tuple[End, End] | None = None

    def same(self, other: Held) -> bool:
        if self.type != other.type or self.ends != other.ends:
            return False
        names = self.properties.keys() | other.properties.keys()
        return all(same_value(self.properties.get(n), other.properties.get(n)) for n in names)


@dataclass(frozen=True, slots=True)
class Difference:
    kind: Kind
    key: str
    type: str
    drift: Drift


ObjectRef = tuple[Kind, str]


def _form(kind: Kind, obj: JsonMapping, ends: tuple[End, End] | None = None) -> Held:
    type_ = obj.get("_type")
    if isinstance(type_, list) and len(type_) == 1:
        type_ = type_[0]
    classes = obj.get("_class")
    properties: JsonObject = {
        name: value for name, value in obj.items() if not name.startswith("_") and value is not None
    }
    properties["_class"] = [classes] if isinstance(classes, str) else classes  # compared as a multiset
    return Held(kind, str(obj.get("_key")), str(type_), properties, ends)


def expected(payload: Payload) -> dict[ObjectRef, Held]:
    """The compared form of what `payload` uploads (labels resolved: an unlabelled end is in its scope)."""
    found: dict[ObjectRef, Held] = {}
    for entity in payload.entities:
        found[("entity", entity["_key"])] = _form("entity", entity)
    for rel in payload.relationships:
        ends = (
            (str(rel.get("_fromEntityScope", payload.j1_scope)), str(rel["_fromEntityKey"])),
            (str(rel.get("_toEntityScope", payload.j1_scope)), str(rel["_toEntityKey"])),
        )
        found[("relationship", rel["_key"])] = _form("relationship", rel, ends)
    return found


def _merged(row: JsonMapping, metadata: str) -> JsonObject:
    """An answer row's object: its metadata part and its properties part in one dict."""
    merged: JsonObject = dict(row.get("properties") or {})
    merged.update(row.get(metadata) or {})
    return merged


def held_entities(rows: Iterable[JsonMapping]) -> dict[ObjectRef, Held]:
    """The compared form of the `list` rows of `FIND * WITH _scope = ...`."""
    found: dict[ObjectRef, Held] = {}
    for row in rows:
        entity = _merged(row, "entity")
        found[("entity", str(entity.get("_key")))] = _form("entity", entity)
    return found


def held_relationships(rows: Iterable[JsonMapping], scope: str) -> dict[ObjectRef, Held]:
    """The compared form of the rows of `... AS a THAT RELATES TO AS r * AS b WHERE r._scope = <scope>
    RETURN r.*, a._key, a._scope, b._key, b._scope` (one row per end in `scope`; duplicates merge).

    `r.*` is read as `r.<name>` columns, or as one `r` column holding the relationship; the ends
    come from `a` and `b`, ordered by the relationship's `_fromEntityKey`.
    """
    found: dict[ObjectRef, Held] = {}
    for row in rows:
        rel = _selector(row, "r")
        if rel.get("_scope", scope) != scope:
            continue
        a, b = (str(row.get("a._scope")), str(row.get("a._key"))), (str(row.get("b._scope")), str(row.get("b._key")))
        from_key = rel.get("_fromEntityKey")
        ends = (a, b) if from_key == a[1] and rel.get("_toEntityKey") in (None, b[1]) else (b, a)
        rel.setdefault("_fromEntityKey", ends[0][1])
        rel.setdefault("_toEntityKey", ends[1][1])
        found[("relationship", str(rel.get("_key")))] = _form("relationship", rel, ends)
    return found


def _selector(row: JsonMapping, alias: str) -> JsonObject:
    whole = row.get(alias)
    if isinstance(whole, Mapping):
        return dict(whole)
    head = f"{alias}."
    return {name[len(head) :]: value for name, value in row.items() if name.startswith(head)}


def compare(wanted: Mapping[ObjectRef, Held], held: Mapping[ObjectRef, Held]) -> list[Difference]:
    """Every object that differs between what we would upload and what JupiterOne holds."""
    found: list[Difference] = []
    for ref, want in wanted.items():
        have = held.get(ref)
        if have is None:
            found.append(Difference(want.kind, want.key, want.type, "missing"))
        elif not want.same(have):
            found.append(Difference(want.kind, want.key, want.type, "changed"))
    for ref, have in held.items():
        if ref not in wanted:
            found.append(Difference(have.kind, have.key, have.type, "stale"))
    return found


def tally(differences: Iterable[Difference]) -> dict[str, dict[str, int]]:
    """Counts per `_type` and drift kind."""
    counts: Counter[tuple[str, str]] = Counter((d.type, d.drift) for d in differences)
    by_type: dict[str, dict[str, int]] = {}
    for (type_, drift), count in sorted(counts.items()):
        by_type.setdefault(type_, {})[drift] = count
    return by_type


__all__ = ["Difference", "Held", "compare", "expected", "held_entities", "held_relationships", "tally"]
