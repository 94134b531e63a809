"""List and get calls: GET /users, /groups, /groups/{id}/members, /users/{id}, /organization.

These model the public integration's polling pattern (docs/jupiterone.md: `GET /users?$top=999`,
`GET /groups?$top=999`, then `GET /groups/{id}/members?$top=999` per group) for benchmarks. A
list pages through a snapshot taken on its first request; unlike delta, every selected property
comes back, `null` when unset.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from monitor.simulator._json import json_response
from monitor.simulator.errors import GraphError, bad_request, forbidden, not_found
from monitor.simulator.graph_auth import (
    AUDIT_LOG_READ,
    GROUPS_READ,
    ORGANIZATION_READ,
    USERS_READ,
    authorize,
    expired_page_token,
)
from monitor.simulator.properties import (
    GROUP_PROPERTIES,
    GROUP_TYPE,
    SIGN_IN_ACTIVITY,
    USER_DEFAULT,
    USER_TYPE,
    list_view,
    parse_select,
)
from monitor.simulator.tenant import SimTenant
from monitor.simulator.tokens import ListSnapshot, decode_token, encode_token

if TYPE_CHECKING:
    from monitor.simulator.state import AccessToken, SimulatorState

MAX_TOP, MAX_TOP_SIGN_IN, DEFAULT_TOP = 999, 120, 100


class ListRoutes:
    """Handlers for the list and get calls; one instance per application."""

    def __init__(self, sim: SimulatorState) -> None:
        self.sim = sim

    def register(self, router: web.UrlDispatcher) -> None:
        router.add_get("/v1.0/users", self.list_users)
        router.add_get("/v1.0/users/{id}", self.get_user)
        router.add_get("/v1.0/groups", self.list_groups)
        router.add_get("/v1.0/groups/{id}", self.get_group)
        router.add_get("/v1.0/groups/{id}/members", self.list_members)
        router.add_get("/v1.0/organization", self.list_organization)
        router.add_get("/v1.0/organization/{id}", self.get_organization)

    # -- list calls --------------------------------------------------------------------------

    async def list_users(self, request: web.Request) -> web.Response:
        """GET /users: User.Read.All; signInActivity also needs AuditLog.Read.All and a premium tenant."""
        tenant, token = authorize(self.sim, request, USERS_READ)
        if "$skiptoken" in request.query:
            return self._list_page(tenant, request.query["$skiptoken"])
        select = parse_select(request.query.get("$select"), "user")
        top = _top(request.query, MAX_TOP_SIGN_IN if select and SIGN_IN_ACTIVITY in select else MAX_TOP)
        if select and SIGN_IN_ACTIVITY in select:
            _check_sign_in_access(token, tenant)
        return self._start_list(tenant, "/v1.0/users", list(tenant.users.values()), select, top)

    async def list_groups(self, request: web.Request) -> web.Response:
        """GET /groups: GroupMember.Read.All (or Group.Read.All, Directory.Read.All)."""
        tenant, _ = authorize(self.sim, request, GROUPS_READ)
        if "$skiptoken" in request.query:
            return self._list_page(tenant, request.query["$skiptoken"])
        select = _without_members(parse_select(request.query.get("$select"), "group"))
        top = _top(request.query, MAX_TOP)
        return self._start_list(tenant, "/v1.0/groups", list(tenant.groups.values()), select, top)

    async def list_members(self, request: web.Request) -> web.Response:
        """GET /groups/{id}/members: full directoryObjects; soft-deleted members are not listed."""
        tenant, _ = authorize(self.sim, request, GROUPS_READ)
        group_id = request.match_info["id"]
        if group_id not in tenant.groups:
            raise not_found(group_id)
        if "$skiptoken" in request.query:
            return self._list_page(tenant, request.query["$skiptoken"])
        select = parse_select(request.query.get("$select"), "user")
        top = _top(request.query, MAX_TOP)
        live = [member for member in tenant.members[group_id] if tenant.directory_object(member) is not None]
        return self._start_list(tenant, f"/v1.0/groups/{group_id}/members", live, select, top)

    def _start_list(
        self, tenant: SimTenant, path: str, items: list[Any], select: tuple[str, ...] | None, top: int
    ) -> web.Response:
        query = {"$top": str(top)}
        if select is not None:
            query["$select"] = ",".join(select)
        snapshot = ListSnapshot(tenant.tenant_id, path, items, query)
        return self._render_list(tenant, self.sim.list_snapshots.put(snapshot), snapshot, 0)

    def _list_page(self, tenant: SimTenant, token: str) -> web.Response:
        state = decode_token(token) or {}
        snapshot = self.sim.list_snapshots.get(str(state.get("s", "")))
        if snapshot is None or snapshot.tenant_id != tenant.tenant_id:
            raise expired_page_token()
        return self._render_list(tenant, str(state["s"]), snapshot, int(state["p"]))

    def _render_list(self, tenant: SimTenant, snapshot_id: str, snapshot: ListSnapshot, position: int) -> web.Response:
        top = int(snapshot.query["$top"])
        select = tuple(snapshot.query["$select"].split(",")) if "$select" in snapshot.query else None
        chunk = snapshot.items[position : position + top]
        values = [view for view in (self._list_item(tenant, snapshot.path, item, select) for item in chunk) if view]
        kind = "directoryObjects" if snapshot.path.endswith("/members") else snapshot.path.rsplit("/", 1)[-1]
        body: dict[str, Any] = {"@odata.context": f"{self.sim.base_url}/v1.0/$metadata#{kind}", "value": values}
        if position + top < len(snapshot.items):
            options = "&".join(f"{key}={value}" for key, value in snapshot.query.items())
            skip = encode_token({"s": snapshot_id, "p": position + top})
            body["@odata.nextLink"] = f"{self.sim.base_url}{snapshot.path}?{options}&$skiptoken={skip}"
        return json_response(body)

    def _list_item(
        self, tenant: SimTenant, path: str, item: Any, select: tuple[str, ...] | None
    ) -> dict[str, Any] | None:
        if path == "/v1.0/users":
            return _user_view(tenant, item, select)
        if path == "/v1.0/groups":
            return list_view(item, select or GROUP_PROPERTIES)
        obj = tenant.directory_object(item)
        if obj is None:
            return None  # deleted since the first page
        return _member_view(tenant, obj, select)

    # -- single objects and the organization --------------------------------------------------

    async def get_user(self, request: web.Request) -> web.Response:
        tenant, token = authorize(self.sim, request, USERS_READ)
        user = _find_user(tenant, request.match_info["id"])
        select = parse_select(request.query.get("$select"), "user")
        if select and SIGN_IN_ACTIVITY in select:
            _check_sign_in_access(token, tenant)
        return json_response(_user_view(tenant, user, select))

    async def get_group(self, request: web.Request) -> web.Response:
        tenant, _ = authorize(self.sim, request, GROUPS_READ)
        group = tenant.groups.get(request.match_info["id"])
        if group is None:
            raise not_found(request.match_info["id"])
        select = _without_members(parse_select(request.query.get("$select"), "group"))
        return json_response(list_view(group, select or GROUP_PROPERTIES))

    async def list_organization(self, request: web.Request) -> web.Response:
        """GET /organization: Organization.Read.All (or Directory.Read.All); only $select works."""
        tenant, _ = authorize(self.sim, request, ORGANIZATION_READ)
        context = f"{self.sim.base_url}/v1.0/$metadata#organization"
        return json_response({"@odata.context": context, "value": [_organization_view(tenant, request)]})

    async def get_organization(self, request: web.Request) -> web.Response:
        tenant, _ = authorize(self.sim, request, ORGANIZATION_READ)
        if request.match_info["id"] != tenant.tenant_id:
            raise not_found(request.match_info["id"])
        return json_response(_organization_view(tenant, request))


def _top(query: Any, maximum: int) -> int:
    raw = query.get("$top")
    if raw is None:
        return min(DEFAULT_TOP, maximum)
    if not raw.isdigit() or not 1 <= int(raw) <= maximum:
        raise bad_request(f"Invalid page size specified: '{raw}'. Must be between 1 and {maximum} inclusive.")
    return int(raw)


def _check_sign_in_access(token: AccessToken, tenant: SimTenant) -> None:
    """The two refusals the public integration recognises (docs/jupiterone.md 1.2), in Graph's order."""
    if AUDIT_LOG_READ not in token.permissions:
        raise forbidden("Calling principal does not have required MSGraph permissions AuditLog.Read.All")
    if not tenant.premium:
        raise GraphError(
            403,
            "Authentication_RequestFromNonPremiumTenantOrB2CTenant",
            "Neither tenant is B2C or tenant doesn't have premium license",
        )


def _without_members(select: tuple[str, ...] | None) -> tuple[str, ...] | None:
    return None if select is None else tuple(name for name in select if name != "members")


def _find_user(tenant: SimTenant, ref: str) -> dict[str, Any]:
    """By id, or by userPrincipalName as Graph allows."""
    user = tenant.users.get(ref)
    if user is None:
        user = next(
            (u for u in tenant.users.values() if str(u.get("userPrincipalName", "")).lower() == ref.lower()), None
        )
    if user is None:
        raise not_found(ref)
    return user


def _user_view(tenant: SimTenant, user: dict[str, Any], select: tuple[str, ...] | None) -> dict[str, Any]:
    props = [name for name in (select or USER_DEFAULT) if name != SIGN_IN_ACTIVITY]
    view = list_view(user, props)
    if select and SIGN_IN_ACTIVITY in select:
        view[SIGN_IN_ACTIVITY] = tenant.sign_ins.get(user["id"])
    return view


def _member_view(tenant: SimTenant, obj: dict[str, Any], select: tuple[str, ...] | None) -> dict[str, Any]:
    kind = obj["@odata.type"]
    if select is not None:
        props: Any = [name for name in select if name != SIGN_IN_ACTIVITY]
    elif kind == USER_TYPE:
        props = USER_DEFAULT
    elif kind == GROUP_TYPE:
        props = GROUP_PROPERTIES
    else:
        props = [name for name in obj if name != "@odata.type"]
    return {"@odata.type": kind, **list_view(obj, props)}


def _organization_view(tenant: SimTenant, request: web.Request) -> dict[str, Any]:
    raw = request.query.get("$select")
    if not raw:
        return tenant.organization
    wanted = [name.strip() for name in raw.split(",")]
    return {"id": tenant.tenant_id, **{name: tenant.organization.get(name) for name in wanted}}
