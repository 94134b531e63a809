"""The control API under `/_sim/`: drive the simulator from another process (demo, benchmarks).

JSON in, JSON out; no authentication, so it answers loopback callers only. Unknown ids are 404,
bad input is 400, both as `{"error": "..."}`. Routes mirror the Python API one for one:

    GET    /_sim/health
    GET    /_sim/tenants                                  POST /_sim/tenants
    GET    /_sim/tenants/{tid}                            PATCH /_sim/tenants/{tid}  (premium, delta options)
    POST   /_sim/tenants/{tid}/seed
    POST   /_sim/tenants/{tid}/{users|groups}             -> {"id"}
    PATCH  /_sim/tenants/{tid}/{users|groups}/{id}        -> {"changed": [...]}
    DELETE /_sim/tenants/{tid}/{users|groups}/{id}[?hard=true]
    POST   /_sim/tenants/{tid}/{users|groups}/{id}/restore
    POST   /_sim/tenants/{tid}/users/{id}/signIns
    POST   /_sim/tenants/{tid}/groups/{id}/members        {"id": member, "initiatedBy"?: {...}}
    DELETE /_sim/tenants/{tid}/groups/{id}/members/{member}  ({"initiatedBy"?: {...}})
    POST   /_sim/tenants/{tid}/objects                    {"kind": "device", ...props}
    POST   /_sim/tenants/{tid}/expire-delta-tokens        {"resource", "mode"}
    POST   /_sim/tenants/{tid}/throttle                   {"ru_per_10s": n | null}
    POST   /_sim/tenants/{tid}/grants                     {"client_id", "permissions"?}
    POST   /_sim/apps                                     {"client_id", "secret"?, "certificate_pem"?}
    POST   /_sim/faults                                   DELETE /_sim/faults
    GET    /_sim/requests/count?path_regex=&method=&status=    DELETE /_sim/requests
    GET    /_sim/clock                                    POST /_sim/clock/advance {"seconds", "days"}
    GET    /_sim/tokens
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from monitor.simulator.seed import seed
from monitor.simulator.tenant import DeltaOptions, SimTenant

if TYPE_CHECKING:
    from monitor.simulator.state import SimulatorState

ControlHandler = Callable[[web.Request], Awaitable[Any]]
_LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})


def _guarded(handler: ControlHandler) -> Callable[[web.Request], Awaitable[web.Response]]:
    """Loopback only; the handler's result as JSON (None -> 204); KeyError 404, ValueError 400."""

    @functools.wraps(handler)
    async def wrapper(request: web.Request) -> web.Response:
        if request.remote not in _LOOPBACK:
            return web.json_response({"error": "the control API answers loopback callers only"}, status=403)
        try:
            result = await handler(request)
        except KeyError as error:
            return web.json_response({"error": f"not found: {error.args[0] if error.args else ''}"}, status=404)
        except (ValueError, TypeError) as error:
            return web.json_response({"error": str(error)}, status=400)
        return web.Response(status=204) if result is None else web.json_response(result)

    return wrapper


async def _body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    body = await request.json()
    if not isinstance(body, dict):
        raise ValueError("the request body must be a JSON object")
    return body


class ControlRoutes:
    def __init__(self, sim: SimulatorState) -> None:
        self.sim = sim

    def register(self, router: web.UrlDispatcher) -> None:
        kind = "{kind:users|groups}"
        routes: list[tuple[str, str, ControlHandler]] = [
            ("GET", "/_sim/health", self.health),
            ("GET", "/_sim/tenants", self.list_tenants),
            ("POST", "/_sim/tenants", self.create_tenant),
            ("GET", "/_sim/tenants/{tid}", self.get_tenant),
            ("PATCH", "/_sim/tenants/{tid}", self.update_tenant),
            ("POST", "/_sim/tenants/{tid}/seed", self.seed),
            ("POST", f"/_sim/tenants/{{tid}}/{kind}", self.create_object),
            ("PATCH", f"/_sim/tenants/{{tid}}/{kind}/{{id}}", self.update_object),
            ("DELETE", f"/_sim/tenants/{{tid}}/{kind}/{{id}}", self.delete_object),
            ("POST", f"/_sim/tenants/{{tid}}/{kind}/{{id}}/restore", self.restore_object),
            ("POST", "/_sim/tenants/{tid}/users/{id}/signIns", self.sign_in),
            ("POST", "/_sim/tenants/{tid}/groups/{id}/members", self.add_member),
            ("DELETE", "/_sim/tenants/{tid}/groups/{id}/members/{member}", self.remove_member),
            ("POST", "/_sim/tenants/{tid}/objects", self.create_directory_object),
            ("POST", "/_sim/tenants/{tid}/expire-delta-tokens", self.expire_delta_tokens),
            ("POST", "/_sim/tenants/{tid}/throttle", self.throttle),
            ("POST", "/_sim/tenants/{tid}/grants", self.grant),
            ("POST", "/_sim/apps", self.register_app),
            ("POST", "/_sim/faults", self.inject_fault),
            ("DELETE", "/_sim/faults", self.clear_faults),
            ("GET", "/_sim/requests/count", self.count_requests),
            ("DELETE", "/_sim/requests", self.clear_requests),
            ("GET", "/_sim/clock", self.clock),
            ("POST", "/_sim/clock/advance", self.advance_clock),
            ("GET", "/_sim/tokens", self.tokens),
        ]
        for method, path, handler in routes:
            router.add_route(method, path, _guarded(handler))

    def _tenant(self, request: web.Request) -> SimTenant:
        return self.sim.tenant(request.match_info["tid"])

    def _describe(self, tenant: SimTenant) -> dict[str, Any]:
        return {
            "tenant_id": tenant.tenant_id,
            "display_name": tenant.display_name,
            "domain": tenant.domain,
            "premium": tenant.premium,
            "delta": dataclasses.asdict(tenant.delta),
            "audit": dataclasses.asdict(tenant.audit.options),
            "stats": tenant.stats(),
        }

    async def health(self, request: web.Request) -> Any:
        return {"ok": True, "url": self.sim.base_url}

    async def list_tenants(self, request: web.Request) -> Any:
        return [self._describe(tenant) for tenant in self.sim.tenants.values()]

    async def create_tenant(self, request: web.Request) -> Any:
        body = await _body(request)
        delta = DeltaOptions(**body.pop("delta", {}))
        tenant = self.sim.add_tenant(
            body.pop("tenant_id", None), body.pop("display_name", "Contoso"), delta=delta, **body
        )
        return self._describe(tenant)

    async def get_tenant(self, request: web.Request) -> Any:
        return self._describe(self._tenant(request))

    async def update_tenant(self, request: web.Request) -> Any:
        tenant, body = self._tenant(request), await _body(request)
        if "premium" in body:
            tenant.premium = bool(body["premium"])
        if "token_lifetime" in body:
            tenant.token_lifetime = int(body["token_lifetime"])
        if "delta" in body:
            tenant.delta = dataclasses.replace(tenant.delta, **body["delta"])
        if "audit" in body:
            tenant.audit.options = dataclasses.replace(tenant.audit.options, **body["audit"])
        return self._describe(tenant)

    async def seed(self, request: web.Request) -> Any:
        result = seed(self._tenant(request), **(await _body(request)))
        return dataclasses.asdict(result)

    async def create_object(self, request: web.Request) -> Any:
        tenant, body = self._tenant(request), await _body(request)
        add = tenant.add_user if request.match_info["kind"] == "users" else tenant.add_group
        return {"id": add(**body)}

    async def update_object(self, request: web.Request) -> Any:
        tenant, body = self._tenant(request), await _body(request)
        update = tenant.update_user if request.match_info["kind"] == "users" else tenant.update_group
        return {"changed": sorted(update(request.match_info["id"], **body))}

    async def delete_object(self, request: web.Request) -> Any:
        tenant, object_id = self._tenant(request), request.match_info["id"]
        hard = request.query.get("hard", "false").lower() in ("1", "true", "yes")
        users = request.match_info["kind"] == "users"
        if hard:
            (tenant.hard_delete_user if users else tenant.hard_delete_group)(object_id)
        else:
            (tenant.soft_delete_user if users else tenant.soft_delete_group)(object_id)

    async def restore_object(self, request: web.Request) -> Any:
        tenant = self._tenant(request)
        restore = tenant.restore_user if request.match_info["kind"] == "users" else tenant.restore_group
        restore(request.match_info["id"])

    async def sign_in(self, request: web.Request) -> Any:
        return self._tenant(request).set_sign_in(request.match_info["id"], **(await _body(request)))

    async def add_member(self, request: web.Request) -> Any:
        body = await _body(request)
        self._tenant(request).add_member(request.match_info["id"], str(body["id"]), initiator=body.get("initiatedBy"))

    async def remove_member(self, request: web.Request) -> Any:
        body = await _body(request)
        tenant, group = self._tenant(request), request.match_info["id"]
        tenant.remove_member(group, request.match_info["member"], initiator=body.get("initiatedBy"))

    async def create_directory_object(self, request: web.Request) -> Any:
        body = await _body(request)
        return {"id": self._tenant(request).add_directory_object(str(body.pop("kind")), **body)}

    async def expire_delta_tokens(self, request: web.Request) -> Any:
        body = await _body(request)
        self.sim.expire_delta_tokens(request.match_info["tid"], body["resource"], body.get("mode", "410"))

    async def throttle(self, request: web.Request) -> Any:
        body = await _body(request)
        self.sim.throttle(request.match_info["tid"], body.get("ru_per_10s"))

    async def grant(self, request: web.Request) -> Any:
        body = await _body(request)
        if "permissions" in body:
            self.sim.grant(request.match_info["tid"], str(body["client_id"]), body["permissions"])
        else:
            self.sim.grant(request.match_info["tid"], str(body["client_id"]))

    async def register_app(self, request: web.Request) -> Any:
        body = await _body(request)
        app = self.sim.register_app(
            body.get("client_id"), secret=body.get("secret"), certificate_pem=body.get("certificate_pem")
        )
        return {"client_id": app.client_id}

    async def inject_fault(self, request: web.Request) -> Any:
        body = await _body(request)
        fault = self.sim.faults.inject(**body)
        return {"path_regex": fault.path_regex, "times": fault.times}

    async def clear_faults(self, request: web.Request) -> Any:
        self.sim.faults.clear()

    async def count_requests(self, request: web.Request) -> Any:
        query = request.query
        status = int(query["status"]) if "status" in query else None
        count = self.sim.count(query.get("path_regex", ".*"), method=query.get("method"), status=status)
        return {"count": count}

    async def clear_requests(self, request: web.Request) -> Any:
        self.sim.requests.clear()

    async def clock(self, request: web.Request) -> Any:
        return {"now": self.sim.clock.now().isoformat(), "timestamp": self.sim.clock.timestamp()}

    async def advance_clock(self, request: web.Request) -> Any:
        body = await _body(request)
        now = self.sim.clock.advance(float(body.get("seconds", 0)), days=float(body.get("days", 0)))
        return {"now": now.isoformat(), "timestamp": now.timestamp()}

    async def tokens(self, request: web.Request) -> Any:
        issued: dict[str, dict[str, int]] = {}
        for (tenant_id, client_id), count in self.sim.tokens_issued.items():
            issued.setdefault(tenant_id, {})[client_id] = count
        return {"issued": issued}
