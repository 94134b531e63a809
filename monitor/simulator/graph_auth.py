"""Authentication, throttling and permissions for every Graph request (docs/graph.md 1, 10.2).

`authorize()` answers what Graph would: 401 `InvalidAuthenticationToken` for a missing, unknown or
expired bearer token, 429 when the app + tenant resource-unit budget is spent, 403
`Authorization_RequestDenied` when none of the endpoint's accepted permissions was consented.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from monitor.simulator.errors import GraphError, bad_request, forbidden
from monitor.simulator.request_keys import CLIENT, EXTRA_HEADERS, TENANT
from monitor.simulator.tenant import SimTenant
from monitor.simulator.throttle import resource_units

if TYPE_CHECKING:
    from monitor.simulator.state import AccessToken, SimulatorState

# docs/graph.md section 1 / 7.1: least privileged first; the ReadWrite forms include the Read ones.
USERS_READ = frozenset({"User.Read.All", "User.ReadWrite.All", "Directory.Read.All", "Directory.ReadWrite.All"})
GROUPS_READ = frozenset(
    {
        "GroupMember.Read.All",
        "GroupMember.ReadWrite.All",
        "Group.Read.All",
        "Group.ReadWrite.All",
        "Directory.Read.All",
        "Directory.ReadWrite.All",
    }
)
ORGANIZATION_READ = frozenset(
    {"Organization.Read.All", "Organization.ReadWrite.All", "Directory.Read.All", "Directory.ReadWrite.All"}
)
AUDIT_LOG_READ = "AuditLog.Read.All"
_WWW_AUTHENTICATE = (
    'Bearer realm="", authorization_uri="https://login.microsoftonline.com/common/oauth2/authorize", '
    'client_id="00000003-0000-0000-c000-000000000000"'
)


def _unauthorized(message: str) -> GraphError:
    return GraphError(401, "InvalidAuthenticationToken", message, headers={"WWW-Authenticate": _WWW_AUTHENTICATE})


def extra_headers(request: web.Request) -> dict[str, str]:
    headers = request.get(EXTRA_HEADERS)
    if headers is None:
        headers = request[EXTRA_HEADERS] = {}
    return headers


def authorize(sim: SimulatorState, request: web.Request, allowed: frozenset[str]) -> tuple[SimTenant, AccessToken]:
    """The caller's tenant and token, or the GraphError Graph would answer with."""
    header = request.headers.get("Authorization", "")
    raw = header[7:].strip() if header[:7].lower() == "bearer " else ""
    if not raw:
        raise _unauthorized("Access token is empty.")
    token = sim.tokens.get(raw)
    if token is None or token.tenant_id not in sim.tenants:
        raise _unauthorized("CompactToken parsing failed with error code: 80049217")
    request[TENANT], request[CLIENT] = token.tenant_id, token.client_id
    if token.expires_at <= sim.clock.timestamp():
        raise _unauthorized("Lifetime validation failed, the token is expired.")
    _throttle(sim, request, token)
    if not token.permissions & allowed:
        raise forbidden()
    return sim.tenants[token.tenant_id], token


def _throttle(sim: SimulatorState, request: web.Request, token: AccessToken) -> None:
    cost = resource_units(request.path, request.query)
    headers = extra_headers(request)
    headers["x-ms-resource-unit"] = str(cost)
    bucket = sim.bucket(token.tenant_id, token.client_id)
    if bucket is None:
        return
    wait = bucket.take(cost, sim.clock.timestamp())
    if bucket.usage() >= 0.8:
        headers["x-ms-throttle-limit-percentage"] = f"{min(1.8, bucket.usage()):.1f}"
    if wait:
        raise GraphError(
            429,
            "TooManyRequests",
            "Too many requests.",
            headers={
                "Retry-After": str(int(wait)),
                "x-ms-throttle-scope": f"Tenant_Application/ResourceUnit/{token.client_id}/{token.tenant_id}",
                "x-ms-throttle-information": "ResourceUnitLimitExceeded",
            },
        )


def expired_page_token() -> GraphError:
    return bad_request(
        "The specified page token value has expired and can no longer be included in your request.",
        "Directory_ExpiredPageToken",
    )
