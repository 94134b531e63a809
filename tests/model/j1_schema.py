"""JupiterOne data-model checks for tests: the vendored class schemas and the property rules.

- `validate_entity(entity)`: the entity against every class schema in its `_class` (parents reached through
  `$ref`/`allOf`), with the draft-07 format checks (for example `email` items must look like addresses).
- `property_rule_errors(obj, ...)`: docs/jupiterone.md 11.1-11.2 (metadata, names, value shapes).
- `check_entity` / `check_relationship`: both together, for an entity or a relationship.

Each returns a list of readable messages; an empty list means valid. Schemas: tests/data/j1_data_model.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft7Validator  # type: ignore[import-untyped, unused-ignore]

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "data" / "j1_data_model"

# DM GraphObject.json `propertyNames` (docs/jupiterone.md 11.2).
NAME_PATTERN = re.compile(r"^(_|tag\.)?[A-Za-z0-9. -]+$")
ENTITY_METADATA = frozenset({"_key", "_type", "_class", "_rawData"})
RELATIONSHIP_METADATA = frozenset({"_key", "_type", "_class", "_fromEntityKey", "_toEntityKey"})
_VERB = re.compile(r"^[A-Z][A-Z_]*$")


@cache
def _schemas() -> dict[str, dict[str, Any]]:
    """Class name -> schema, from the vendored files (each file's `$id` is `#<its name>`)."""
    schemas: dict[str, dict[str, Any]] = {}
    for path in sorted(SCHEMA_DIR.glob("*.json")):
        schema = json.loads(path.read_text(encoding="utf-8"))
        if schema.get("$id") != f"#{path.stem}":
            raise ValueError(f"{path.name}: $id {schema.get('$id')!r} does not name the file")
        schemas[path.stem] = schema
    return schemas


def class_names() -> tuple[str, ...]:
    """The classes with a vendored schema."""
    return tuple(_schemas())


@cache
def _validator(class_name: str) -> Any:
    """A draft-07 validator for one class. All schemas sit in one document, where each `$id: "#Name"` is a
    plain-name anchor, so `$ref: "#Entity"` resolves the way the data model's own Ajv registry does."""
    document = {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "definitions": _schemas(),
        "allOf": [{"$ref": f"#{class_name}"}],
    }
    Draft7Validator.check_schema(document)
    return Draft7Validator(document, format_checker=Draft7Validator.FORMAT_CHECKER)


@cache
def required_by_class(class_name: str) -> frozenset[str]:
    """Every property a class requires, its parents' included (read from the schemas, not the model code)."""
    schemas = _schemas()

    def walk(schema: Mapping[str, Any]) -> Iterable[str]:
        yield from schema.get("required", ())
        ref = schema.get("$ref")
        if ref is not None:
            yield from walk(schemas[ref.removeprefix("#")])
        for part in schema.get("allOf", ()):
            yield from walk(part)

    return frozenset(walk(schemas[class_name]))


def _classes(obj: Mapping[str, Any]) -> list[str]:
    value = obj.get("_class")
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(c, str) for c in value):
        return value
    return []


def _describe(error: Any) -> str:
    where = "/".join(str(p) for p in error.absolute_path) or "<entity>"
    message: str = error.message
    if error.context:  # oneOf/anyOf: say why the closest alternative failed
        deepest = max(error.context, key=lambda e: len(e.absolute_path))
        message = f"{message} ({deepest.message})"
    return f"{where}: {message}"


def validate_entity(entity: Mapping[str, Any]) -> list[str]:
    """Errors of `entity` against the schema of each class in its `_class`, as `"<Class>: <path>: <why>"`."""
    classes = _classes(entity)
    if not classes:
        return [f"_class: missing or not a string or list of strings: {entity.get('_class')!r}"]
    errors: list[str] = []
    known = _schemas()
    for class_name in classes:
        if class_name not in known:
            errors.append(f"{class_name}: no vendored schema for this class")
            continue
        found = sorted(_validator(class_name).iter_errors(dict(entity)), key=lambda e: list(map(str, e.path)))
        errors.extend(f"{class_name}: {_describe(e)}" for e in found)
    return errors


def _value_kind(value: Any) -> str | None:
    """The JupiterOne primitive kind of a value, or None if it is not a primitive."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return None


def _value_error(name: str, value: Any, nullable: frozenset[str]) -> str | None:
    if value is None:
        return None if name in nullable else f"{name}: None (undefined) where the data model does not allow null"
    if isinstance(value, list):
        kinds = {_value_kind(item) for item in value}
        if None in kinds:
            return f"{name}: array holds a non-primitive or null item: {value!r}"
        if len(kinds) > 1:
            return f"{name}: mixed-type array: {value!r}"
        return None
    if _value_kind(value) is None:
        return f"{name}: not a primitive or array of primitives (nested objects are rejected): {value!r}"
    return None


def _metadata_errors(obj: Mapping[str, Any]) -> list[str]:
    errors: list[str] = []
    key = obj.get("_key")
    if not isinstance(key, str) or len(key) < 10:
        errors.append(f"_key: must be a string of at least 10 characters: {key!r}")
    type_ = obj.get("_type")
    if not isinstance(type_, str) or len(type_) < 3:
        errors.append(f"_type: must be a string of at least 3 characters: {type_!r}")
    classes = _classes(obj)
    if not classes or any(len(c) < 2 for c in classes):
        errors.append(f"_class: must be a non-empty string or list of strings: {obj.get('_class')!r}")
    return errors


def property_rule_errors(
    obj: Mapping[str, Any], *, nullable: frozenset[str] = frozenset(), relationship: bool = False
) -> list[str]:
    """docs/jupiterone.md 11.1-11.2: metadata present and well-formed, property names of the data-model pattern,
    no custom `_` names, values primitive or homogeneous arrays of primitives, `None` only in `nullable`."""
    errors = _metadata_errors(obj)
    metadata = RELATIONSHIP_METADATA if relationship else ENTITY_METADATA
    for name, value in obj.items():
        if not NAME_PATTERN.match(name):
            errors.append(f"{name!r}: property name does not match {NAME_PATTERN.pattern}")
        if name.startswith("_"):
            if name not in metadata:
                errors.append(f"{name}: custom properties may not start with '_'")
            if name == "_rawData":
                continue
        problem = _value_error(name, value, nullable)
        if problem is not None:
            errors.append(problem)
    return errors


def check_entity(entity: Mapping[str, Any]) -> list[str]:
    """`validate_entity` and `property_rule_errors`, where null is allowed only for required properties."""
    nullable = frozenset().union(*(required_by_class(c) for c in _classes(entity) if c in _schemas()))
    return validate_entity(entity) + property_rule_errors(entity, nullable=nullable)


def check_relationship(relationship: Mapping[str, Any]) -> list[str]:
    """A relationship: GraphObject schema, property rules, a single upper-case verb as `_class`, and string
    `_fromEntityKey`/`_toEntityKey`."""
    errors = [f"GraphObject: {_describe(e)}" for e in _validator("GraphObject").iter_errors(dict(relationship))]
    errors += property_rule_errors(relationship, relationship=True)
    verb = relationship.get("_class")
    if not isinstance(verb, str) or not _VERB.match(verb):
        errors.append(f"_class: a relationship's class is one upper-case verb: {verb!r}")
    for end in ("_fromEntityKey", "_toEntityKey"):
        if not isinstance(relationship.get(end), str) or not relationship.get(end):
            errors.append(f"{end}: missing or not a string")
    return errors
