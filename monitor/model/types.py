"""The shapes the pure core works with.

A Graph object maps to JupiterOne objects (entities and relationships, plain JSON dicts carrying
`_key`, `_type` and `_class`). Each object has a *placement*: the entity family and the anchor key
that decide which scope holds it. The mirror in Redis and the JupiterOne upload scopes are both
derived from the placement, so an object is always found where it was written, whatever its
`_type` becomes (a managed device may change `_type` when its `deviceType` changes; its family
does not).

Relationships live with their anchor: the entity whose lifecycle they follow (a membership with
its group, "account HAS user" with its user, "agent MANAGES device" with its device). Deleting an
anchor therefore only has to look inside one scope to find its relationships.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

Kind = Literal["entity", "relationship"]
# A JSON object as parsed (orjson) or about to be encoded: a Graph or JupiterOne body or object, a
# status document. The one place its values are `Any`: readers pick fields by name and check the
# ones they rely on.
JsonObject = dict[str, Any]
JsonMapping = Mapping[str, Any]  # the same, read only


class Placement(NamedTuple):
    """Where an object lives: `kind`, the anchor entity's `family`, and the anchor's `_key`."""

    kind: Kind
    family: str
    anchor_key: str


# The operations are plain slotted dataclasses, not frozen ones: about a million are built in a
# large first round, and a frozen dataclass costs four times as much to construct. Treat them as
# immutable all the same.


@dataclass(slots=True)
class Upsert:
    """The complete desired state of one JupiterOne object."""

    placement: Placement
    obj: JsonObject
    # Properties another source owns on the same object: kept from the mirror's current record
    # when `obj` does not set them (a user's sign-in activity comes from a separate sweep).
    preserve: tuple[str, ...] = ()
    # Why the object changed when it is not the object's own change (a membership restored with its
    # member): becomes the change record's `reason`.
    reason: str | None = None

    @property
    def key(self) -> str:
        key: str = self.obj["_key"]
        return key


@dataclass(slots=True)
class Delete:
    """One JupiterOne object that must no longer exist."""

    placement: Placement
    key: str
    reason: str | None = None  # as `Upsert.reason`: a membership leaving with its deleted member


@dataclass(slots=True)
class Patch:
    """Set some properties of an object that already exists; nothing happens if it does not.

    `remove` names properties to drop first, so a patch can replace a whole group of properties.
    """

    placement: Placement
    key: str
    props: JsonObject
    remove: tuple[str, ...] = ()


Op = Upsert | Delete | Patch


def entity_placement(family: str, key: str) -> Placement:
    return Placement("entity", family, key)


def relationship_placement(family: str, anchor_key: str) -> Placement:
    return Placement("relationship", family, anchor_key)
