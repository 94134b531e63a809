"""`POST /directoryObjects/getByIds`: directory objects (devices, service principals, contacts) by id.

https://learn.microsoft.com/en-us/graph/api/directoryobject-getbyids: the body takes `ids` ("you
can specify up to 1000") and `types`, resource types that restrict the search ("not
case-sensitive"); the answer is the collection of objects found, each with its `@odata.type`.
Its least (and only listed) application permission is `Directory.Read.All`, which monitor does not
otherwise need: the caller treats a 403 as "names unavailable", not as a failure.

`members@delta` gives each member's `id` and `@odata.type` only ("only the id property of the
related resource is returned", https://learn.microsoft.com/en-us/graph/api/group-delta), so this
is where a device's or service principal's name comes from.
"""

from __future__ import annotations

from collections.abc import Iterable

from monitor.graph.client import GraphClient
from monitor.model.types import JsonObject

GET_BY_IDS = "/v1.0/directoryObjects/getByIds"
MAX_IDS = 1000
ODATA_PREFIX = "#microsoft.graph."


def resource_type(odata_type: str) -> str | None:
    """`device` for `#microsoft.graph.device`: the form `types` takes; None for anything else."""
    return odata_type[len(ODATA_PREFIX) :] if odata_type.lower().startswith(ODATA_PREFIX) else None


async def get_by_ids(
    client: GraphClient, tenant: str, ids: Iterable[str], types: Iterable[str]
) -> dict[str, JsonObject]:
    """The objects Graph finds among `ids` (of one of `types`), by id; ids it does not find are
    missing. Raises `GraphError` (a 403 when `Directory.Read.All` is not granted)."""
    wanted = sorted(set(ids))
    body_types = sorted(set(types))
    found: dict[str, JsonObject] = {}
    for start in range(0, len(wanted), MAX_IDS):
        body: JsonObject = {"ids": wanted[start : start + MAX_IDS]}
        if body_types:
            body["types"] = body_types
        response = await client.request(tenant, "POST", GET_BY_IDS, json=body)
        for obj in response.body.get("value") or ():
            if isinstance(obj, dict) and isinstance(obj.get("id"), str):
                found[obj["id"]] = obj
    return found
