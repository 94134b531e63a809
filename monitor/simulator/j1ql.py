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
`UNIQUE` with `RETURN` de-duplicates rows; `RETURN TREE` returns the traversal's vertices and edges;
keywords are case-insensitive):

- `FIND * WITH _scope = 'S'`: the entities of scope S, a `list` of `{id, entity, properties}` (the
  shape of the Node.js client's `QueryResult`: metadata and `displayName` under `entity`, the other
  properties under `properties`; `_type` comes back as a list, as in JupiterOne's examples).
- `FIND * WITH _scope = 'S' AS a THAT RELATES TO AS r * WHERE r._scope = 'S' RETURN TREE`: the
  relationships of scope S with their ends, a `tree` `{vertices, edges}` (edges `{id, fromVertexId,
  toVertexId, relationship, properties}`), in one page.
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
from typing import TYPE_CHECKING, Any, Literal

import orjson

if TYPE_CHECKING:
    from monitor.simulator.jupiterone import SimJupiterOne

JsonObject = dict[str, Any]
QueryKind = Literal["entities", "relationships", "entity_scopes", "relationship_scopes"]

# Metadata shown under `entity` / `relationship` in answers (the rest goes under `properties`).
_ENTITY_METADATA = ("_id", "_key", "_type", "_class", "_scope", "_source")
_RELATIONSHIP_METADATA = (*_ENTITY_METADATA, "_fromEntityKey", "_toEntityKey")
_STRING = r"""'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*\""""
_S = r"\s+"
_QUERIES: dict[QueryKind, re.Pattern[str]] = {
    "entities": re.compile(rf"^\s*FIND{_S}\*{_S}WITH{_S}_scope\s*=\s*(?P<v>{_STRING})\s*$", re.I),
    "relationships": re.compile(
        rf"^\s*FIND{_S}\*{_S}WITH{_S}_scope\s*=\s*(?P<v>{_STRING}){_S}AS{_S}(?P<a>\w+){_S}THAT{_S}RELATES{_S}TO"
        rf"{_S}AS{_S}(?P<r>\w+){_S}\*{_S}WHERE{_S}(?P=r)\._scope\s*=\s*(?P<w>{_STRING}){_S}RETURN{_S}TREE\s*$",
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
    alias: str  # the alias of the returned `_scope` column


def parse(text: str) -> Query:
    for kind, pattern in _QUERIES.items():
        match = pattern.match(text)
        if match is not None:
            groups = match.groupdict()
            alias = groups.get("r") or groups.get("a") or ""
            where = _literal(groups["w"]) if groups.get("w") else ""
            return Query(kind, _literal(groups["v"]), where, alias)
    raise J1qlError(f"the simulated JupiterOne does not answer this J1QL: {text!r}")


def _literal(quoted: str) -> str:
    return re.sub(r"\\(.)", r"\1", quoted[1:-1])


def answer_graphql(sim: SimJupiterOne, body: Any) -> tuple[JsonObject, JsonObject | None]:
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


def run(sim: SimJupiterOne, text: str, cursor: str | None) -> JsonObject:
    """`{type, data, cursor}` of one page of `text`."""
    query = parse(text)
    sim.queries.append(text)
    if query.kind == "relationships":
        return {"type": "tree", "data": _tree(sim, query), "cursor": None}
    if query.kind == "entities":
        kind, rows = "list", [_vertex(entity) for entity in sim.scope_entities(query.value)]
    else:
        column = f"{query.alias}._scope"
        kind, rows = "table", [{column: scope} for scope in _scopes(sim, query)]
    start = _offset(text, cursor)
    end = start + sim.query_page_size
    return {"type": kind, "data": rows[start:end], "cursor": _cursor(text, end) if end < len(rows) else None}


def _scopes(sim: SimJupiterOne, query: Query) -> list[str]:
    starting = [scope for scope in sim.entity_scopes() if scope.startswith(query.value)]
    if query.kind == "entity_scopes":
        return starting
    found: set[str] = set()
    for scope in starting:
        for entity in sim.scope_entities(scope):
            for (rel_scope, _), _, _, _ in sim.relationships_of((scope, entity["_key"])):
                if rel_scope.startswith(query.where):
                    found.add(rel_scope)
    return sorted(found)


def _tree(sim: SimJupiterOne, query: Query) -> JsonObject:
    vertices: dict[str, JsonObject] = {}
    edges: dict[str, JsonObject] = {}
    for entity in sim.scope_entities(query.value):
        for (rel_scope, _), rel, from_end, to_end in sim.relationships_of((query.value, entity["_key"])):
            if rel_scope != query.where:
                continue
            ends = [sim.entity_view(*from_end), sim.entity_view(*to_end)]
            for end in ends:
                vertices.setdefault(end["_id"], _vertex(end))
            edges[rel["_id"]] = {
                "id": rel["_id"],
                "fromVertexId": ends[0]["_id"],
                "toVertexId": ends[1]["_id"],
                "relationship": _metadata(rel, _RELATIONSHIP_METADATA),
                "properties": _properties(rel),
            }
    return {"vertices": list(vertices.values()), "edges": list(edges.values())}


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
