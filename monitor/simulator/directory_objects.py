"""`POST /v1.0/directoryObjects/getByIds`: directory objects from a list of ids.

As https://learn.microsoft.com/en-us/graph/api/directoryobject-getbyids documents it:

- application permission `Directory.Read.All`, the least and only one listed (no higher one is
  "available"): anything else is Graph's 403;
- the body holds `ids` (up to 1,000) and optionally `types`, resource types derived from
  directoryObject (`user`, `group`, `device`, ...; "not case-sensitive") that restrict the search;
- the answer is a collection of the objects found, each with its `@odata.type`; "only a subset of
  user properties are returned by default in v1.0" (the default set, as `GET /users`). Ids that
  match no live object are left out; soft-deleted objects are in deletedItems, not here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from monitor.simulator._json import json_response
from monitor.simulator.errors import bad_request
from monitor.simulator.graph_auth import authorize
from monitor.simulator.properties import GROUP_PROPERTIES, GROUP_TYPE, OBJECT_KINDS, USER_DEFAULT, USER_TYPE, list_view

if TYPE_CHECKING:
    from monitor.simulator.state import SimulatorState

GET_BY_IDS_READ = frozenset({"Directory.Read.All"})
MAX_IDS = 1000
_TYPES = {name.lower(): odata_type for name, odata_type in OBJECT_KINDS.items()}


class DirectoryObjectRoutes:
    def __init__(self, sim: SimulatorState) -> None:
        self.sim = sim

    def register(self, router: web.UrlDispatcher) -> None:
        for spelling in ("getByIds", "microsoft.graph.getByIds"):
            router.add_post(f"/v1.0/directoryObjects/{spelling}", self.get_by_ids)

    async def get_by_ids(self, request: web.Request) -> web.Response:
        tenant, _ = authorize(self.sim, request, GET_BY_IDS_READ)
        ids, types = _parse_body(await _json_body(request))
        found = [_view(obj) for obj in (tenant.directory_object(object_id) for object_id in ids) if obj is not None]
        value = [obj for obj in found if types is None or obj["@odata.type"] in types]
        context = f"{self.sim.base_url}/v1.0/$metadata#directoryObjects"
        return json_response({"@odata.context": context, "value": value})


async def _json_body(request: web.Request) -> Any:
    try:
        return await request.json()
    except ValueError:
        raise bad_request("Invalid request body: not JSON.") from None


def _parse_body(body: Any) -> tuple[list[str], frozenset[str] | None]:
    ids = body.get("ids") if isinstance(body, dict) else None
    if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
        raise bad_request("Invalid request body: 'ids' must be a non-empty collection of strings.")
    if len(ids) > MAX_IDS:
        raise bad_request(f"Too many ids: at most {MAX_IDS} may be given.")
    raw_types = body.get("types")
    if raw_types is None:
        return ids, None
    if not isinstance(raw_types, list) or not all(isinstance(t, str) for t in raw_types):
        raise bad_request("Invalid request body: 'types' must be a collection of strings.")
    unknown = [t for t in raw_types if t.lower().removeprefix("microsoft.graph.") not in _TYPES]
    if unknown:
        raise bad_request(f"Invalid types: {', '.join(unknown)}.")
    return ids, frozenset(_TYPES[t.lower().removeprefix("microsoft.graph.")] for t in raw_types)


def _view(obj: dict[str, Any]) -> dict[str, Any]:
    kind = obj["@odata.type"]
    if kind == USER_TYPE:
        props: Any = [p for p in USER_DEFAULT if p != "id"]
    elif kind == GROUP_TYPE:
        props = [p for p in GROUP_PROPERTIES if p != "id"]
    else:
        props = [p for p in obj if p not in ("@odata.type", "id")]
    return {"@odata.type": kind, **list_view(obj, props)}
