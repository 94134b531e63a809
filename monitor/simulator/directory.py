"""Users and groups delta (docs/graph.md 7-8): rounds, paging tokens, expiry and resync.

A round is planned on its first request and kept in a bounded store; each page request renders
one page from the stored plan (see delta.py). Delta tokens are self-contained (the version they
were issued at, the original `$select` and `$filter`, their issue time and serial), so any
number of them can be outstanding; `Simulator.expire_delta_tokens` and the 7-day lifetime decide
which are refused, and how.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from aiohttp import web

from monitor.simulator._json import json_response
from monitor.simulator.delta import DeltaRequest, DeltaRound, plan_round
from monitor.simulator.errors import GraphError, bad_request
from monitor.simulator.graph_auth import GROUPS_READ, USERS_READ, authorize, expired_page_token, extra_headers
from monitor.simulator.properties import SIGN_IN_ACTIVITY, parse_select
from monitor.simulator.tenant import Resource, SimTenant
from monitor.simulator.tokens import decode_token, encode_token

if TYPE_CHECKING:
    from monitor.simulator.state import SimulatorState

DELTA_TOKEN_LIFETIME = 7 * 86400  # docs/graph.md 8: directory delta tokens last 7 days
MAX_FILTER_IDS = 50  # docs/graph.md 7.3: $filter on id, up to 50 ids
_ID_EQ = re.compile(r"^\s*id\s+eq\s+'([^']+)'\s*$", re.IGNORECASE)
_OR = re.compile(r"\s+or\s+", re.IGNORECASE)


class DeltaRoutes:
    """`GET /v1.0/users/delta` and `GET /v1.0/groups/delta` (also spelt `/microsoft.graph.delta`)."""

    def __init__(self, sim: SimulatorState) -> None:
        self.sim = sim

    def register(self, router: web.UrlDispatcher) -> None:
        # Registered before the list routes, so that "delta" is not taken for a user id.
        for spelling in ("delta", "microsoft.graph.delta"):
            router.add_get(f"/v1.0/users/{spelling}", self.users_delta)
            router.add_get(f"/v1.0/groups/{spelling}", self.groups_delta)

    # -- delta -------------------------------------------------------------------------------

    async def users_delta(self, request: web.Request) -> web.Response:
        """GET /users/delta: User.Read.All (or User.ReadWrite.All, Directory.Read.All)."""
        return self._delta(request, "users", USERS_READ)

    async def groups_delta(self, request: web.Request) -> web.Response:
        """GET /groups/delta: GroupMember.Read.All (or Group.Read.All, Directory.Read.All)."""
        return self._delta(request, "groups", GROUPS_READ)

    def _delta(self, request: web.Request, resource: Resource, allowed: frozenset[str]) -> web.Response:
        tenant, _ = authorize(self.sim, request, allowed)
        query = request.query
        if "$skiptoken" in query:
            return self._continue_round(request, tenant, query["$skiptoken"])
        delta_request = self._delta_request(request, tenant, resource)
        if query.get("$deltatoken") == "latest":
            # docs/graph.md 7.2 "sync from now": no data, just a deltaLink.
            empty = DeltaRound(tenant.tenant_id, delta_request, tenant.version, [], tenant.delta)
            return self._page_response(request, tenant, "", empty, 0, 0)
        planned = plan_round(tenant, delta_request)
        return self._page_response(request, tenant, self.sim.delta_rounds.put(planned), planned, 0, 0)

    def _delta_request(self, request: web.Request, tenant: SimTenant, resource: Resource) -> DeltaRequest:
        query = request.query
        for option in ("$orderby", "$expand", "$search"):
            if option in query:
                # docs/graph.md 7.3: $expand, $top and $orderby aren't supported; $top is silently ignored.
                raise bad_request(f"Invalid request for delta query: the query option {option} is not supported.")
        select = _delta_select(query.get("$select"), resource)
        filter_ids = _parse_filter(query.get("$filter"))
        token = query.get("$deltatoken")
        if token is None or token in ("", "latest"):
            return DeltaRequest(resource, select, filter_ids)
        state = self._check_delta_token(tenant, resource, token)
        saved_select = tuple(state["s"]) if state.get("s") is not None else None
        saved_filter = frozenset(state["f"]) if state.get("f") is not None else None
        asked = "return=minimal" in request.headers.get("Prefer", "").replace(" ", "").lower()
        minimal = asked and tenant.delta.updated_properties != "all"
        if minimal:
            extra_headers(request)["Preference-Applied"] = "return=minimal"
        # docs/graph.md 7.2: for some resources $select can be combined with a deltaLink.
        return DeltaRequest(resource, select or saved_select, filter_ids or saved_filter, int(state["v"]), minimal)

    def _check_delta_token(self, tenant: SimTenant, resource: Resource, token: str) -> dict[str, Any]:
        """The token's state, or docs/graph.md 8's answers for an expired or invalidated token."""
        state = decode_token(token)
        fields_ok = state is not None and all(key in state for key in ("v", "i", "n"))
        if state is None or not fields_ok or state.get("t") != tenant.tenant_id or state.get("r") != resource:
            raise bad_request("The delta token is not valid for this request.", "resyncRequired")
        refusal = tenant.delta_tokens.refusal(resource, int(state["n"]))
        if refusal == "410":
            location = self._initial_url(resource, state)
            raise GraphError(
                410,
                "resyncRequired",
                "Resync required. Replace any local cached data with the data returned by the Location URL.",
                headers={"Location": location},
            )
        if refusal == "resyncRequired":
            raise bad_request("The delta token is no longer valid, and the app must reset the sync state.", refusal)
        if refusal == "syncStateNotFound" or self.sim.clock.timestamp() - float(state["i"]) > DELTA_TOKEN_LIFETIME:
            raise bad_request(
                "The sync state generation is not found. The delta token is expired and data must be synchronized "
                "again.",
                "syncStateNotFound",
            )
        return state

    def _initial_url(self, resource: Resource, state: dict[str, Any]) -> str:
        """The request URL with an empty $deltatoken: the initial query (docs/graph.md 8)."""
        url = f"{self.sim.base_url}/v1.0/{resource}/delta?$deltatoken="
        if state.get("s") is not None:
            url += "&$select=" + ",".join(state["s"])
        if state.get("f") is not None:
            url += "&$filter=" + quote(" or ".join(f"id eq '{i}'" for i in state["f"]), safe="'=")
        return url

    def _continue_round(self, request: web.Request, tenant: SimTenant, token: str) -> web.Response:
        state = decode_token(token) or {}
        planned = self.sim.delta_rounds.get(str(state.get("r", "")))
        if planned is None or planned.tenant_id != tenant.tenant_id:
            raise expired_page_token()
        if planned.request.minimal:
            extra_headers(request)["Preference-Applied"] = "return=minimal"
        return self._page_response(request, tenant, str(state["r"]), planned, int(state["p"]), int(state["n"]))

    def _page_response(
        self, request: web.Request, tenant: SimTenant, round_id: str, planned: DeltaRound, position: int, page_no: int
    ) -> web.Response:
        values, following = planned.page(position, page_no)
        resource = planned.request.resource
        body: dict[str, Any] = {"@odata.context": f"{self.sim.base_url}/v1.0/$metadata#{resource}", "value": values}
        link = f"{self.sim.base_url}/v1.0/{resource}/delta"
        if following is not None:
            skip = encode_token({"r": round_id, "p": following, "n": page_no + 1})
            body["@odata.nextLink"] = f"{link}?$skiptoken={skip}"
        else:
            body["@odata.deltaLink"] = f"{link}?$deltatoken={self._delta_token(tenant, planned)}"
        return json_response(body)

    def _delta_token(self, tenant: SimTenant, planned: DeltaRound) -> str:
        request = planned.request
        return encode_token(
            {
                "t": tenant.tenant_id,
                "r": request.resource,
                "v": planned.version,
                "s": list(request.select) if request.select is not None else None,
                "f": sorted(request.filter_ids) if request.filter_ids is not None else None,
                "i": self.sim.clock.timestamp(),
                "n": tenant.delta_tokens.issue(),
            }
        )


def _delta_select(raw: str | None, resource: Resource) -> tuple[str, ...] | None:
    select = parse_select(raw, "user" if resource == "users" else "group")
    if select is not None and SIGN_IN_ACTIVITY in select:
        # What Graph answers for signInActivity on users/delta: it is not a tracked property.
        raise bad_request(
            "Invalid request for delta query: for this entity set, $expand/$select is not supported for the "
            "following properties: signInActivity"
        )
    return select


def _parse_filter(raw: str | None) -> frozenset[str] | None:
    """docs/graph.md 7.3: only `id eq '...'` joined with `or`, at most 50 ids."""
    if raw is None or not raw.strip():
        return None
    ids = []
    for clause in _OR.split(raw.strip()):
        match = _ID_EQ.match(clause)
        if match is None:
            raise bad_request("Unsupported Query.", "Request_UnsupportedQuery")
        ids.append(match.group(1))
    if len(ids) > MAX_FILTER_IDS:
        raise bad_request(
            f"Too many ids in $filter: at most {MAX_FILTER_IDS} are supported.", "Request_UnsupportedQuery"
        )
    return frozenset(ids)
