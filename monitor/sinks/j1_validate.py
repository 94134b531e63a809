"""Checks an object must pass before it is uploaded to JupiterOne (pure).

JupiterOne refuses a whole upload request for one bad object (a 4xx for the batch), and a scope
that cannot be uploaded cannot be confirmed. So the publisher checks every object first, leaves
the invalid ones out and reports each with its `_key` and the rule it breaks; the rest of the scope
lands. Leaving an object out of a DIFF upload deletes it at JupiterOne (docs/jupiterone.md 9.4), which
is the honest outcome for an object JupiterOne cannot hold; the report and `monitor status` say so.

The rules (docs/jupiterone.md):

- 11.1: `_key` a string of at least 10 characters, `_type` of at least 3, `_class` a string or a
  non-empty list of strings of at least 2 characters (a relationship: one upper-case verb);
  a relationship names both ends (`_fromEntityKey`, `_toEntityKey`).
- 11.2: property names of the data-model pattern; no custom `_` properties (only the metadata
  below); values primitive, null, or a homogeneous array of primitives; no nested objects except
  `_rawData`.
- 11.3 / 13: an entity carries every property its classes require (`CLASS_REQUIRED`); the ones
  the data model types as plain strings (`name`, `displayName`, ...) are not null.
- 11.4: timestamps (names ending in `On`) are epoch milliseconds: numbers.

This is a fast runtime guard, not a full JSON-schema validation (the tests validate against the
vendored data-model schemas).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from monitor.model.common import CLASS_REQUIRED
from monitor.model.types import JsonMapping

# 11.2: an optional `_` or `tag.` prefix, then letters, digits, `.`, space or `-`.
NAME_PATTERN = re.compile(r"^(_|tag\.)?[A-Za-z0-9. -]+$")
ENTITY_METADATA = frozenset({"_key", "_type", "_class", "_rawData"})
# The relationship metadata an upload may carry (11.2; 10.6 for the cross-scope and mapping fields).
RELATIONSHIP_METADATA = frozenset(
    {
        "_key",
        "_type",
        "_class",
        "_fromEntityKey",
        "_toEntityKey",
        "_fromEntityScope",
        "_toEntityScope",
        "_fromEntitySource",
        "_toEntitySource",
        "_mapping",
    }
)
# 13: the base Entity requirements, for a class this table does not know.
_BASE_REQUIRED = frozenset({"_key", "_type", "_class", "name", "displayName"})
# 13: required properties typed without null.
_NOT_NULL = frozenset({"_key", "_type", "_class", "name", "displayName", "vendor", "function"})
_VERB = re.compile(r"^[A-Z][A-Z_]*$")
_MIN_KEY = 10
_MIN_TYPE = 3
_MIN_CLASS = 2


@dataclass(frozen=True, slots=True)
class Invalid:
    """One object JupiterOne would refuse: which object, which rule, and the details."""

    key: str
    type: str
    rule: str
    detail: str

    def as_dict(self) -> dict[str, str]:
        return {"key": self.key, "type": self.type, "rule": self.rule, "detail": self.detail}


def _classes(value: object) -> list[str] | None:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(c, str) for c in value):
        return value
    return None


def _kind(value: object) -> str | None:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return None


def _metadata_problems(obj: JsonMapping) -> list[tuple[str, str]]:
    problems = []
    key, type_ = obj.get("_key"), obj.get("_type")
    if not isinstance(key, str) or len(key) < _MIN_KEY:
        problems.append(("key-length", f"_key must be a string of at least {_MIN_KEY} characters (11.1): {key!r}"))
    if not isinstance(type_, str) or len(type_) < _MIN_TYPE:
        problems.append(("type-length", f"_type must be a string of at least {_MIN_TYPE} characters (11.1)"))
    classes = _classes(obj.get("_class"))
    if classes is None or any(len(c) < _MIN_CLASS for c in classes):
        problems.append(
            ("class", f"_class must be a string or non-empty list of strings (11.1): {obj.get('_class')!r}")
        )
    return problems


# Hot path (every property of every object of every upload): the common primitive types by identity.
_PRIMITIVES = frozenset({str, int, float, bool, type(None)})
# Property names already seen to match NAME_PATTERN (a tenant uses a few dozen); bounded for safety.
_GOOD_NAMES: set[str] = set()
_GOOD_NAMES_MAX = 10_000


def _value_problem(name: str, value: object) -> tuple[str, str] | None:
    if type(value) in _PRIMITIVES and not name.endswith("On"):
        return None
    if value is None or _kind(value) is not None:
        if name.endswith("On") and value is not None and _kind(value) != "number":
            return ("timestamp", f"{name} is a timestamp and must be epoch milliseconds (11.4): {value!r}")
        return None
    if isinstance(value, list):
        kinds = {_kind(item) for item in value}
        if None in kinds:
            return ("array-items", f"{name}: array items must be primitives, not null or nested (11.2)")
        if len(kinds) > 1:
            return ("mixed-array", f"{name}: array mixes {sorted(k for k in kinds if k)} (11.2)")
        if name.endswith("On") and kinds - {"number"}:
            return ("timestamp", f"{name} is a timestamp and must be epoch milliseconds (11.4)")
        return None
    return ("nested-object", f"{name}: nested objects are not allowed except _rawData (11.2)")


def _property_problems(obj: JsonMapping, metadata: frozenset[str]) -> list[tuple[str, str]]:
    problems = []
    for name, value in obj.items():
        if name.startswith("_"):
            if name not in metadata:
                problems.append(("underscore-property", f"{name}: custom properties may not start with '_' (11.2)"))
                continue
            if name in ("_rawData", "_mapping"):
                continue
        elif name not in _GOOD_NAMES:
            if not NAME_PATTERN.match(name):
                problems.append(("property-name", f"{name!r} does not match {NAME_PATTERN.pattern} (11.2)"))
                continue
            if len(_GOOD_NAMES) < _GOOD_NAMES_MAX:
                _GOOD_NAMES.add(name)
        problem = _value_problem(name, value)
        if problem is not None:
            problems.append(problem)
    return problems


@lru_cache(maxsize=256)
def _required(classes: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(sorted(frozenset().union(_BASE_REQUIRED, *(CLASS_REQUIRED.get(c, _BASE_REQUIRED) for c in classes))))


def _required_problems(obj: JsonMapping) -> list[tuple[str, str]]:
    classes = _classes(obj.get("_class")) or []
    problems = []
    for name in _required(tuple(classes)):
        if name not in obj:
            problems.append(("required-property", f"{'/'.join(classes)} requires {name!r} (13)"))
        elif obj[name] is None and name in _NOT_NULL:
            problems.append(("required-property", f"{'/'.join(classes)} requires {name!r} to be set, not null (13)"))
    return problems


def _invalid(obj: JsonMapping, problems: list[tuple[str, str]]) -> list[Invalid]:
    key, type_ = str(obj.get("_key", "")), str(obj.get("_type", ""))
    return [Invalid(key, type_, rule, detail) for rule, detail in problems]


def check_entity(entity: JsonMapping) -> list[Invalid]:
    """Every rule `entity` breaks (empty when it may be uploaded)."""
    problems = _metadata_problems(entity)
    problems += _property_problems(entity, ENTITY_METADATA)
    problems += _required_problems(entity)
    return _invalid(entity, problems)


def check_relationship(relationship: JsonMapping) -> list[Invalid]:
    """Every rule `relationship` breaks (empty when it may be uploaded)."""
    problems = _metadata_problems(relationship)
    verb = relationship.get("_class")
    if not isinstance(verb, str) or not _VERB.match(verb):
        problems.append(("class", f"a relationship's _class is one upper-case verb (11.1): {verb!r}"))
    for end in ("_fromEntityKey", "_toEntityKey"):
        if not isinstance(relationship.get(end), str) or not relationship.get(end):
            problems.append(("relationship-end", f"{end} must be a non-empty string (11.2)"))
    problems += _property_problems(relationship, RELATIONSHIP_METADATA)
    return _invalid(relationship, problems)


def too_large(obj: JsonMapping, size: int, limit: int) -> Invalid:
    """An object whose JSON alone would not fit in one upload request (docs/jupiterone.md 10.1-10.2)."""
    detail = f"serialized size {size:,} bytes exceeds the {limit:,}-byte request limit (10.1)"
    return Invalid(str(obj.get("_key", "")), str(obj.get("_type", "")), "too-large", detail)
