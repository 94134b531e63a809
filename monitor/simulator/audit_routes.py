"""`GET /v1.0/auditLogs/directoryAudits`: the tenant's directory audit log (monitor.simulator.audit).

Refusals, in the order Graph checks them: the token (401), then the permissions of the tenant's
reading (403 `Authorization_RequestDenied`, with the wording of Microsoft's reporting how-to), then
the licence (403 `Authentication_RequestFromNonPremiumTenantOrB2CTenant`), then the query (400).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from monitor.simulator._json import json_response
from monitor.simulator.audit import NON_PREMIUM, AuditOptions, instant, matches, parse_filter
from monitor.simulator.errors import bad_request, forbidden
from monitor.simulator.graph_auth import AUDIT_LOG_READ, authorize, expired_page_token
from monitor.simulator.tenant import SimTenant
from monitor.simulator.tokens import ListSnapshot, decode_token, encode_token

if TYPE_CHECKING:
    from monitor.simulator.state import AccessToken, SimulatorState

PATH = "/v1.0/auditLogs/directoryAudits"
DIRECTORY_READ = frozenset({"Directory.Read.All", "Directory.ReadWrite.All"})
MAX_TOP, DEFAULT_TOP = 999, 100
MISSING_PERMISSION = (
    "Application missing Microsoft Entra ID 'Read directory data' or 'Read all audit log data' permission"
)


class AuditRoutes:
    def __init__(self, sim: SimulatorState) -> None:
        self.sim = sim

    def register(self, router: web.UrlDispatcher) -> None:
        router.add_get(PATH, self.list_audits)

    async def list_audits(self, request: web.Request) -> web.Response:
        tenant, token = authorize(self.sim, request, frozenset({AUDIT_LOG_READ}) | DIRECTORY_READ)
        _check_access(tenant.audit.options, token, tenant)
        if "$skiptoken" in request.query:
            return self._page(tenant, request.query["$skiptoken"])
        query = request.query
        clauses = parse_filter(query["$filter"]) if query.get("$filter") else []
        newest_first = _newest_first(query.get("$orderby"))
        top = _top(query.get("$top"))
        entries = [e for e in tenant.audit.listable(self.sim.clock.timestamp()) if matches(e, clauses)]
        entries.sort(key=lambda entry: instant(entry["activityDateTime"]), reverse=newest_first)
        snapshot = ListSnapshot(tenant.tenant_id, PATH, entries, {"$top": str(top)})
        return self._render(self.sim.list_snapshots.put(snapshot), snapshot, 0)

    def _page(self, tenant: SimTenant, token: str) -> web.Response:
        state = decode_token(token) or {}
        snapshot = self.sim.list_snapshots.get(str(state.get("s", "")))
        if snapshot is None or snapshot.tenant_id != tenant.tenant_id or snapshot.path != PATH:
            raise expired_page_token()
        return self._render(str(state["s"]), snapshot, int(state["p"]))

    def _render(self, snapshot_id: str, snapshot: ListSnapshot, position: int) -> web.Response:
        top = int(snapshot.query["$top"])
        body: dict[str, Any] = {
            "@odata.context": f"{self.sim.base_url}/v1.0/$metadata#auditLogs/directoryAudits",
            "value": snapshot.items[position : position + top],
        }
        if position + top < len(snapshot.items):
            skip = encode_token({"s": snapshot_id, "p": position + top})
            body["@odata.nextLink"] = f"{self.sim.base_url}{PATH}?$top={top}&$skiptoken={skip}"
        return json_response(body)


def _check_access(options: AuditOptions, token: AccessToken, tenant: SimTenant) -> None:
    audit, directory = AUDIT_LOG_READ in token.permissions, bool(token.permissions & DIRECTORY_READ)
    granted = {"both": audit and directory, "audit_log": audit, "either": audit or directory}[options.permissions]
    if not granted:
        raise forbidden(MISSING_PERMISSION)
    if options.requires_premium and not tenant.premium:
        raise NON_PREMIUM


def _newest_first(orderby: str | None) -> bool:
    """`activityDateTime` (ascending unless `desc`); without `$orderby`, newest first."""
    if not orderby:
        return True
    parts = [part.lower() for part in orderby.split()]
    if parts[0] != "activitydatetime" or len(parts) > 2 or parts[-1] not in ("activitydatetime", "asc", "desc"):
        raise bad_request(f"Invalid OrderBy clause: {orderby}")
    return parts[-1] == "desc"


def _top(raw: str | None) -> int:
    if raw is None:
        return DEFAULT_TOP
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_TOP:
        raise bad_request(f"Invalid page size specified: '{raw}'. Must be between 1 and {MAX_TOP} inclusive.")
    return int(raw)
