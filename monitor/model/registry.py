"""Where an object's ends live (pure): the scope of each entity a relationship joins.

A relationship lives in its anchor's scope, and its other end may live in another: the JupiterOne
upload labels that end with its scope (`_toEntityScope`, `monitor.sinks.j1_payload`). JupiterOne
objects do not carry their ends' `_type`s, so this module knows, per relationship `_type`, the
family of each end, and per family, how an entity key maps to its anchor (a host agent
`intune-host-agent:<id>` lives with device `<id>`).

Mappers that add a relationship type register it here; an unknown type is an error, never a guess.
"""

from __future__ import annotations

from collections.abc import Callable

from monitor.model import intune
from monitor.model.types import JsonObject, Placement, entity_placement

EndFamilies = Callable[[JsonObject], tuple[str, str]]

# Member kinds of a membership (docs/jupiterone.md 2.2): users and groups are entities of their own
# families, anything else is a placeholder (1.4).
_MEMBER_FAMILY = {"#microsoft.graph.user": "azure_user", "#microsoft.graph.group": "azure_user_group"}


def _membership_ends(relationship: JsonObject) -> tuple[str, str]:
    member_type = str(relationship.get("memberType", "")).lower()
    return ("azure_user_group", _MEMBER_FAMILY.get(member_type, "azure_group_member"))


RELATIONSHIP_ENDS: dict[str, EndFamilies] = {
    "microsoft_365_account_has_azure_user": lambda _: ("microsoft_365_account", "azure_user"),
    "microsoft_365_account_has_azure_group": lambda _: ("microsoft_365_account", "azure_user_group"),
    "azure_group_has_member": _membership_ends,
}


def _fixed(ends: tuple[str, str]) -> EndFamilies:
    return lambda _: ends


# Intune relationships: every one of them has fixed end families (monitor.model.intune).
RELATIONSHIP_ENDS.update({rel_type: _fixed(ends) for rel_type, ends in intune.relationship_ends().items()})

# Families whose entity keys are not their own anchors: key -> anchor key.
ENTITY_ANCHORS: dict[str, Callable[[str], str]] = {**intune.ENTITY_ANCHORS}


def register_relationship(relationship_type: str, ends: EndFamilies) -> None:
    RELATIONSHIP_ENDS[relationship_type] = ends


def entity_anchor(family: str, key: str) -> str:
    anchor = ENTITY_ANCHORS.get(family)
    return key if anchor is None else anchor(key)


def end_placements(relationship: JsonObject) -> tuple[Placement, Placement]:
    """The placements of the `_fromEntityKey` and `_toEntityKey` entities of `relationship`."""
    rel_type = relationship["_type"]
    ends = RELATIONSHIP_ENDS.get(rel_type)
    if ends is None:
        raise KeyError(f"no end families registered for relationship type {rel_type!r}")
    from_family, to_family = ends(relationship)
    from_key, to_key = relationship["_fromEntityKey"], relationship["_toEntityKey"]
    return (
        entity_placement(from_family, entity_anchor(from_family, from_key)),
        entity_placement(to_family, entity_anchor(to_family, to_key)),
    )
