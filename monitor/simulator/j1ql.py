"""The J1QL subset `monitor` uses, answered from the simulated graph through GraphQL `queryV1`.

The query API (https://docs.jupiterone.io/api/entity-relationship-queries): `POST /graphql` with the
`queryV1(query, variables, cursor, deferredResponse, flags)` resolver, answering `{type, data,
cursor}`. "Only a NULL cursor being returned indicates that the result pagination is complete"
(https://docs.jupiterone.io/reference/api-query-pagination-changes), so lists are paged here
(`SimJupiterOne.query_page_size` rows, 250 by default: "Without this flag, the result size will be
limited to 250 rows"), and a page may be shorter than that without being the last. With
`deferredResponse: FORCE` the answer is `{type: "deferred", url}`; the URL answers `{status, url,
correlationId}`, whose `url` holds the `{type, data, cursor}` (served under `/query-results/`, with
no JupiterOne credentials, as a pre-signed URL would be).

The four queries (J1QL: https://docs.jupiterone.io/j1ql/basic-keywords; `^=` is "starts with";
`UNIQUE` with `RETURN` de-duplicates rows; `RETURN alias.*` returns every property of the selector,
metadata included; `RETURN alias.property` gives a table column named `alias.property`; relationship
verbs, `RELATES TO` included, match either direction; keywords are case-insensitive):

- `FIND * WITH _scope = 'S'`: the entities of scope S, a `list` of `{id, entity, properties}` (the
  shape of the Node.js client's `QueryResult`: metadata and `displayName` under `entity`, the other
  properties under `properties`; `_type` comes back as a list, as in JupiterOne's examples).
- `FIND * WITH _scope = 'S' AS a THAT RELATES TO AS r * AS b WHERE r._scope = 'S' RETURN r.*,
  a._key, a._scope, b._key, b._scope`: the relationships of scope S with the entities at their ends,
  a `table` with one row per (entity of S, relationship) pair: every property of the relationship as
  an `r.<name>` column, and the two entities' keys and scopes (a relationship between two entities
  of S comes twice, once from each end).
- `FIND UNIQUE * WITH _scope ^= 'P' AS e RETURN e._scope`: the scopes starting with P that hold
  entities, a `table` of `{"e._scope": ...}` rows.
- `FIND UNIQUE * WITH _scope ^= 'P' AS a THAT RELATES TO AS r * WHERE r._scope ^= 'P' RETURN
  r._scope`: the same for relationships touching such entities.

Anything else is answered with a GraphQL error, as JupiterOne answers a query it cannot parse.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import orjson

JsonObject = dict[str, Any]
ObjectId = tuple[str, str]  # (scope, _key)
QueryKind = Literal["entities", "relationships", "entity_scopes", "relationship_scopes"]

# Metadata shown under `entity` in answers (the rest goes under `properties`), and the relationship
# metadata a wildcard returns.
_ENTITY_METADATA = ("_id", "_key", "_type", "_class", "_scope", "_source")
_RETURNED = frozenset({*_ENTITY_METADATA, "_fromEntityKey", "_toEntityKey"})
_STRING = r"""'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*\""""
_S = r"\s+"
_QUERIES: dict[QueryKind, re.Pattern[str]] = {
    "entities": re.compile(rf"^\s*FIND{_S}\*{_S}WITH{_S}_scope\s*=\s*(?P<v>{_STRING})\s*$", re.I),
    "relationships": re.compile(
        rf"^\s*FIND{_S}\*{_S}WITH{_S}_scope\s*=\s*(?P<v>{_STRING}){_S}AS{_S}(?P<a>\w+){_S}THAT{_S}RELATES{_S}TO"
        rf"{_S}AS{_S}(?P<r>\w+){_S}\*{_S}AS{_S}(?P<b>\w+){_S}WHERE{_S}(?P=r)\._scope\s*=\s*(?P<w>{_STRING})"
        rf"{_S}RETURN{_S}(?P=r)\.\*\s*,\s*(?P=a)\._key\s*,\s*(?P=a)\._scope\s*,\s*(?P=b)\._key\s*,"
        rf"\s*(?P=b)\._scope\s*$",
        re.I,
    ),
    "entity_scopes": re.compile(
        rf"^\s*FIND{_S}UNIQUE{_S}\*{_S}WITH{_S}_scope\s*\^=\s*(?P<v>{_STRING}){_S}AS{_S}(?P<a>\w+)"
        rf"{_S}RETURN{_S}(?P=a)\._scope\s*$",
        re.I,
    ),
    "relationship_scopes": re.compile(
        rf"^\s*FIND{_S}UNIQUE{_S}\*{_S}WITH{_S}_scope\s*\^=\s*(?P<v>{_STRING}){_S}AS{_S}(?P<a>\w+){_S}THAT{_S}"
        rf"RELATES{_S}TO{_S}AS{_S}(?P<r>\w+){_S}\*{_S}WHERE{_S}(?P=r)\._scope\s*\^=\s*(?P<w>{_STRING}){_S}"
        rf"RETURN{_S}(?P=r)\._scope\s*$",
        re.I,
    ),
}


class J1qlError(ValueError):
    """A query this subset does not answer (JupiterOne would not parse it, or we do not simulate it)."""


@dataclass(frozen=True, slots=True)
class Query:
    kind: QueryKind
    value: str  # the scope, or the scope prefix
    where: str  # the relationship scope (prefix) of WHERE, or "" without one
    aliases: tuple[str, ...]  # the entity, relationship and other entity selectors named


def parse(text: str) -> Query:
    for kind, pattern in _QUERIES.items():
        match = pattern.match(text)
        if match is not None:
            groups = match.groupdict()
            aliases = tuple(groups.get(name) or "" for name in ("a", "r", "b"))
            where = _literal(groups["w"]) if groups.get("w") else ""
            return Query(kind, _literal(groups["v"]), where, aliases)
    raise J1qlError(f"the simulated JupiterOne does not answer this J1QL: {text!r}")


def _literal(quoted: str) -> str:
    return re.sub(r"\\(.)", r"\1", quoted[1:-1])


class QueriedStore(Protocol):
    """What the resolver reads of the simulated JupiterOne (a `SimJupiterOne`, which imports this module)."""

    queries: list[str]  # every J1QL query answered, in order
    query_page_size: int

    def scope_entities(self, scope: str) -> list[JsonObject]: ...

    def entity_scopes(self) -> list[str]: ...

    def relationship_scopes(self, entity_prefix: str, prefix: str) -> list[str]: ...

    def relationships_of(
        self, entity: ObjectId, scope: str | None = None
    ) -> list[tuple[ObjectId, JsonObject, ObjectId, ObjectId]]: ...


def answer_graphql(sim: QueriedStore, body: Any) -> tuple[JsonObject, JsonObject | None]:
    """The GraphQL answer to a `queryV1` request, and the result to serve deferred (or None)."""
    if not isinstance(body, Mapping) or "queryV1" not in str(body.get("query", "")):
        return _error("the simulated JupiterOne answers the queryV1 resolver only"), None
    variables = body.get("variables") or {}
    text, cursor = variables.get("query"), variables.get("cursor")
    if not isinstance(text, str):
        return _error("queryV1 needs a query"), None
    try:
        result = run(sim, text, cursor if isinstance(cursor, str) else None)
    except J1qlError as exc:
        return _error(str(exc)), None
    if variables.get("deferredResponse") == "FORCE":
        return {}, result
    return {"data": {"queryV1": result}}, None


def _error(message: str) -> JsonObject:
    return {"errors": [{"message": message, "extensions": {"code": "BAD_USER_INPUT"}}], "data": {"queryV1": None}}


def run(sim: QueriedStore, text: str, cursor: str | None) -> JsonObject:
    """`{type, data, cursor}` of one page of `text`."""
    query = parse(text)
    sim.queries.append(text)
    if query.kind == "relationships":
        kind, rows = "table", _relationship_rows(sim, query)
    elif query.kind == "entities":
        kind, rows = "list", [_vertex(entity) for entity in sim.scope_entities(query.value)]
    else:
        column = f"{query.aliases[1] or query.aliases[0]}._scope"
        kind, rows = "table", [{column: scope} for scope in _scopes(sim, query)]
    start = _offset(text, cursor)
    end = start + sim.query_page_size
    return {"type": kind, "data": rows[start:end], "cursor": _cursor(text, end) if end < len(rows) else None}


def _scopes(sim: QueriedStore, query: Query) -> list[str]:
    if query.kind == "entity_scopes":
        return [scope for scope in sim.entity_scopes() if scope.startswith(query.value)]
    return sim.relationship_scopes(query.value, query.where)


def _relationship_rows(sim: QueriedStore, query: Query) -> list[JsonObject]:
    entity_alias, rel_alias, other_alias = query.aliases
    rows = []
    for entity in sim.scope_entities(query.value):
        here = (query.value, entity["_key"])
        for _, rel, from_end, to_end in sim.relationships_of(here, query.where):
            other = to_end if from_end == here else from_end
            row = {f"{rel_alias}.{name}": value for name, value in rel.items() if name in _RETURNED or name[0] != "_"}
            row.update(
                {
                    f"{entity_alias}._key": here[1],
                    f"{entity_alias}._scope": here[0],
                    f"{other_alias}._key": other[1],
                    f"{other_alias}._scope": other[0],
                }
            )
            rows.append(row)
    return rows


def _vertex(entity: JsonObject) -> JsonObject:
    return {"id": entity["_id"], "entity": _metadata(entity, _ENTITY_METADATA), "properties": _properties(entity)}


def _metadata(obj: JsonObject, names: tuple[str, ...]) -> JsonObject:
    shown = {name: obj[name] for name in names if name in obj}
    if "_type" in shown:
        shown["_type"] = [shown["_type"]]
    if "displayName" in obj:
        shown["displayName"] = obj["displayName"]
    return shown


def _properties(obj: JsonObject) -> JsonObject:
    return {k: v for k, v in obj.items() if not k.startswith("_") and k != "displayName"}


def _cursor(text: str, offset: int) -> str:
    raw = orjson.dumps({"q": hashlib.sha256(text.encode()).hexdigest()[:16], "o": offset})
    return base64.urlsafe_b64encode(raw).decode()


def _offset(text: str, cursor: str | None) -> int:
    if cursor is None:
        return 0
    try:
        state = orjson.loads(base64.urlsafe_b64decode(cursor.encode()))
    except (ValueError, orjson.JSONDecodeError):
        raise J1qlError("invalid cursor") from None
    if not isinstance(state, dict) or state.get("q") != hashlib.sha256(text.encode()).hexdigest()[:16]:
        raise J1qlError("the cursor belongs to another query")
    return int(state.get("o", 0))
