"""The property-type table of docs/jupiterone-types.md says what the mappers emit."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from monitor.model.intune import DEVICE_TYPES
from monitor.model.types import JsonObject, Upsert
from monitor.model.users import map_user, sign_in_properties, with_sign_in
from tests.data import graph_directory as g
from tests.jupiterone.directory import ACCOUNT_KEY, initial_ops, intune_ops

TABLE = Path(__file__).parents[2] / "docs" / "jupiterone-types.md"
ROW = re.compile(r"^\| (?P<types>[^|]+) \| (?P<names>[^|]+) \| [^|]+ \| (?P<monitor>[^|]+) \| [^|]+ \|$")
JSON_TYPES: dict[str, type | tuple[type, ...]] = {"string": str, "number": (int, float)}


def rows() -> list[tuple[str, list[str], str]]:
    found = []
    for line in TABLE.read_text().splitlines():
        match = ROW.match(line)
        if match and not line.startswith("| `_type`"):
            names = re.findall(r"`([^`]+)`", match["names"])
            found.append((match["types"].strip(), names, match["monitor"].strip()))
    return found


def emitted() -> list[JsonObject]:
    user = with_sign_in(map_user(g.USER_FULL, account_key=ACCOUNT_KEY)[0].obj, sign_in_properties(g.SIGN_IN_FULL))
    return [user, *(op.obj for op in [*initial_ops(), *intune_ops()] if isinstance(op, Upsert))]


def described(types: str, obj_type: str) -> bool:
    if types.startswith("every managed-device"):
        return obj_type in DEVICE_TYPES
    patterns = re.findall(r"`([^`]+)`", types)
    return any(
        obj_type == p or (p.startswith("<device type>") and obj_type.endswith(p.removeprefix("<device type>")))
        for p in patterns
    )


def is_type(value: Any, monitor: str) -> bool:
    if monitor == "array of string":
        return isinstance(value, list) and all(isinstance(item, str) for item in value)
    return isinstance(value, JSON_TYPES[monitor]) and not isinstance(value, bool)


def test_the_table_has_rows() -> None:
    assert len(rows()) >= 7


@pytest.mark.parametrize(("types", "names", "monitor"), rows(), ids=lambda v: str(v)[:40])
def test_each_row_matches_what_the_mappers_emit(types: str, names: list[str], monitor: str) -> None:
    objects = [obj for obj in emitted() if described(types, str(obj["_type"]))]
    assert objects, f"no emitted object is a {types}"
    for name in names:
        values = [obj[name] for obj in objects if obj.get(name) is not None]
        assert values, f"{types}: no emitted object carries {name}"
        assert all(is_type(value, monitor) for value in values), (name, values)
