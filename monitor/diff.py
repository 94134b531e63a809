"""The diff (pure): a mirror record against a new record gives at most one change.

Rules:
- An object that did not exist and now does is an upsert listing every property as changed.
- An object that existed and no longer does is a delete listing every property of `before`.
- Otherwise the changed properties are those whose values differ, where `null` and absent are the
  same (JupiterOne stores neither) and arrays of primitives compare as multisets: Graph does not
  promise an order for collections such as `groupTypes` or `verifiedDomains`, so a reordering is
  not a change.
- Two records that are equal under these rules give no change, and the mirror keeps `before`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from monitor.model.types import JsonObject, Kind

ChangeOp = Literal["upsert", "delete"]


class NotComparable(ValueError):
    """`before` and `after` describe different objects."""


@dataclass(slots=True)
class Change:
    op: ChangeOp
    kind: Kind
    type: str
    key: str
    changed: tuple[str, ...]
    before: JsonObject | None
    after: JsonObject | None


def diff(kind: Kind, before: JsonObject | None, after: JsonObject | None) -> Change | None:
    """The change from `before` to `after` (either may be None), or None if nothing changed."""
    if before is None and after is None:
        return None
    if before is not None and after is not None and before.get("_key") != after.get("_key"):
        raise NotComparable(f"cannot diff {before.get('_key')!r} against {after.get('_key')!r}")
    if after is None:
        assert before is not None
        return Change("delete", kind, before["_type"], before["_key"], _present(before), before, None)
    if before is None:
        return Change("upsert", kind, after["_type"], after["_key"], _present(after), None, after)
    changed = changed_properties(before, after)
    if not changed:
        return None
    return Change("upsert", kind, after["_type"], after["_key"], changed, before, after)


def changed_properties(before: JsonObject, after: JsonObject) -> tuple[str, ...]:
    names = before.keys() | after.keys()
    return tuple(sorted(name for name in names if not same_value(before.get(name), after.get(name))))


def same_value(left: object, right: object) -> bool:
    if left == right:
        return True
    if isinstance(left, list) and isinstance(right, list) and len(left) == len(right):
        return _sortable(left) == _sortable(right)
    return False


def _sortable(values: list[Any]) -> list[Any]:
    try:
        return sorted(values)
    except TypeError:  # mixed or nested values: order is then part of the value
        return values


_SORTED_SHAPES: dict[tuple[str, ...], tuple[str, ...]] = {}


def _present(obj: JsonObject) -> tuple[str, ...]:
    """Sorted names of the object's properties.

    Objects of one type mostly share a shape (the same property names in the same order), so the
    sorted tuple is remembered per shape.
    """
    shape = tuple(obj)
    known = _SORTED_SHAPES.get(shape)
    if known is None:
        known = tuple(sorted(shape))
        if len(_SORTED_SHAPES) < 4096:
            _SORTED_SHAPES[shape] = known
    return known
