"""The Intune endpoints of the simulated Graph, JSON batching, and their control API.

Served under both `/v1.0` and `/beta` (docs/graph.md 9; docs/jupiterone.md 3 for the beta calls the public
integration makes), each with its application permission:

    GET  /deviceManagement                                   ServiceConfig or Configuration .Read.All
    GET  /deviceManagement/managedDevices[/{id}]             ManagedDevices.Read.All ($expand=detectedApps on one;
                                                             $filter=lastSyncDateTime gt|lt <date-time> on the list)
    GET  /deviceManagement/deviceCompliancePolicies[/{id}[/deviceStatuses]] Configuration.Read.All
    GET  /deviceManagement/deviceConfigurations[/{id}[/deviceStatuses]]     Configuration.Read.All
    GET  /deviceManagement/auditEvents                       Apps.Read.All ($filter=activityDateTime gt|ge <date-time>)
    GET  /deviceAppManagement/mobileApps                     Apps.Read.All
    POST /deviceManagement/reports/retrieveDeviceAppInstallationStatusReport Apps.Read.All (a stream)
    GET  /deviceManagement/detectedApps[/{id}/managedDevices]               ManagedDevices.Read.All
    POST /$batch                                             any token; each inner request is checked

What a client must survive: pages of `IntuneTenant.page_size` (1,000 by default, docs/graph.md 9) with an
opaque `@odata.nextLink` over a snapshot taken on the first page; `$select` (a property the version's
metadata lacks is a 400, as Graph answers: conformance.py); 403 per endpoint when its permission is missing; 400
"Request not applicable to target tenant." for a tenant without Intune; 429 with `Retry-After` past
Intune's per-app-per-tenant limits (docs/graph.md 10.3, `IntuneTenant.limits`, per 20 s by the simulator
clock); and in `$batch` (docs/graph.md 10.4) at most 20 requests with unique ids, answers in another
order than asked, and faults injected per inner request (`sim.faults` rules are matched against
each inner request's method and `/<version><url>`, so a test can throttle one inner request).

The install report is a bound action whose metadata return type is `Edm.Stream`: it answers
`application/octet-stream` (its bytes are the reports API's JSON: TotalRowCount, Schema, Values), and
inside `$batch` that body is base64-encoded, as the OData JSON batch format does for a body that is not
JSON (https://docs.oasis-open.org/odata/odata-json-format/v4.01/odata-json-format-v4.01.html, "Batch
Requests and Responses"; https://learn.microsoft.com/en-us/graph/json-batching).

Control API (loopback only): `GET|PATCH /_sim/tenants/{tid}/intune` (stats; `limits`, `page_size`,
`licensed`), `POST /_sim/tenants/{tid}/intune/seed` (seed_intune's arguments),
`POST /_sim/tenants/{tid}/intune/churn` (`fraction`, `seed`, `devices`).
"""

from __future__ import annotations

import base64
import math
import re
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote, urlsplit

import orjson
from aiohttp import web

from monitor.simulator._json import json_response
from monitor.simulator.clock import inner_error_date
from monitor.simulator.control import _body, _guarded
from monitor.simulator.errors import GraphError, bad_request, error_body, forbidden, not_found
from monitor.simulator.faults import Fault, RequestRecord
from monitor.simulator.graph_auth import authorize, expired_page_token
from monitor.simulator.intune import IntuneTenant
from monitor.simulator.intune_seed import churn, seed_intune
from monitor.simulator.intune_views import (
    REPORT_COLUMNS,
    app_version,
    detected_view,
    device_view,
    report_row,
    select_view,
    status_view,
)
from monitor.simulator.permissions import (
    ALL_PERMISSIONS,
    APPS_READ,
    CONFIGURATION_READ,
    INTUNE_PERMISSIONS,
    MANAGED_DEVICES_READ,
    SERVICE_CONFIG_READ,
)
from monitor.simulator.request_keys import ANSWER
from monitor.simulator.tenant import SimTenant
from monitor.simulator.tokens import ListSnapshot, decode_token, encode_token

if TYPE_CHECKING:
    from monitor.simulator.state import AccessToken, SimulatorState

NOT_APPLICABLE = "Request not applicable to target tenant."
MAX_TOP = 1000
BATCH_LIMIT = 20
WINDOW_SECONDS = 20.0
_APP_FILTER = re.compile(r"ApplicationId\s+eq\s+'([^']+)'", re.IGNORECASE)
# `lastSyncDateTime` "Supports $filter operator 'lt' and 'gt'" (managedDevice, v1.0 metadata); the other
# properties documented as filterable are not served here, so a filter on them is a 400 like any unknown one.
_SYNC_FILTER = re.compile(r"^\s*lastSyncDateTime\s+(gt|lt)\s+(\S+)\s*$", re.IGNORECASE)
# The List auditEvents page documents no query options; `activityDateTime` filtering is what a client
# reading the log incrementally sends, and the product copes with a 400 for it (docs/graph.md 9.x).
_ACTIVITY_FILTER = re.compile(r"^\s*activityDateTime\s+(gt|ge)\s+(\S+)\s*$", re.IGNORECASE)


def _filter_time(pattern: re.Pattern[str], raw: str) -> tuple[str, float]:
    """(operator, epoch seconds) of a one-clause date-time filter; 400 for anything else."""
    match = pattern.match(raw)
    try:
        if match is None:
            raise ValueError(raw)
        moment = datetime.fromisoformat(match.group(2).replace("Z", "+00:00"))
    except ValueError:
        raise bad_request(f"Invalid filter clause: {raw}") from None
    if moment.tzinfo is None:
        raise bad_request(f"Invalid filter clause: {raw}")
    return match.group(1).lower(), moment.timestamp()


@dataclass
class Call:
    """One request to an Intune endpoint, HTTP or inside a batch."""

    tenant: SimTenant
    intune: IntuneTenant
    version: str
    path: str
    query: dict[str, str]
    body: Any
    params: dict[str, str]


@dataclass(frozen=True)
class Stream:
    """The answer of an action that returns `Edm.Stream`."""

    data: bytes


Answer = dict[str, Any] | Stream
Handler = Callable[["IntuneRoutes", Call], Answer]


@dataclass(frozen=True)
class Route:
    method: str
    pattern: re.Pattern[str]
    allowed: frozenset[str]
    handler: Handler


def _bucket(path: str) -> str:
    """Intune's throttling bucket of a path below the version (docs/graph.md 10.3)."""
    lowered = path.lower().rstrip("/")
    if lowered.startswith(("/devicemanagement/manageddevices", "/devicemanagement/detectedapps")):
        return "devices"
    if lowered == "/devicemanagement" or lowered.startswith(
        ("/devicemanagement/devicecompliancepolicies", "/devicemanagement/deviceconfigurations")
    ):
        return "configuration"
    return "apps" if lowered.startswith("/deviceappmanagement") else "other"


def _parse_select(raw: str | None, known: frozenset[str] | None, kind: str) -> tuple[str, ...] | None:
    if not raw:
        return None
    names = tuple(dict.fromkeys(name.strip() for name in raw.split(",") if name.strip()))
    unknown = [name for name in names if known is not None and name not in known]
    if unknown:
        raise bad_request(f"Could not find a property named '{unknown[0]}' on type 'microsoft.graph.{kind}'.")
    return names


def _report_columns(columns: list[str], select: Any) -> list[str]:
    """The selected columns (all when none are), each localizable one followed by its `_loc` column."""
    if not select:
        return columns
    unknown = [c for c in select if c not in columns or str(c).endswith("_loc")]
    if unknown:
        raise bad_request(f"Invalid select column: {unknown[0]}.")
    wanted: list[str] = []
    for column in select:
        wanted.append(column)
        if f"{column}_loc" in columns:
            wanted.append(f"{column}_loc")
    return list(dict.fromkeys(wanted))


def _query(url: str) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))


def _top(query: dict[str, str], default: int) -> int:
    raw = query.get("$top")
    if raw is None:
        return default
    if not raw.isdigit() or int(raw) < 1:
        raise bad_request(f"Invalid page size specified: '{raw}'.")
    return min(int(raw), MAX_TOP)


class IntuneRoutes:
    """Handlers for the Intune endpoints; one instance per application."""

    def __init__(self, sim: SimulatorState) -> None:
        self.sim = sim
        self._reports: dict[tuple[str, str], tuple[int, list[tuple[str, int]]]] = {}
        self.routes: list[Route] = []
        for method, pattern, allowed, handler in _ROUTES:
            self.routes.append(Route(method, re.compile(pattern), allowed, handler))

    def register(self, router: web.UrlDispatcher) -> None:
        for version in ("v1.0", "beta"):
            router.add_route("*", f"/{version}/deviceManagement", self.http)
            router.add_route("*", f"/{version}/deviceManagement/{{tail:.+}}", self.http)
            router.add_route("*", f"/{version}/deviceAppManagement/{{tail:.+}}", self.http)
            router.add_post(f"/{version}/$batch", self.batch)
        base = "/_sim/tenants/{tid}/intune"
        router.add_get(base, _guarded(self._control_stats))
        router.add_patch(base, _guarded(self._control_update))
        router.add_post(f"{base}/seed", _guarded(self._control_seed))
        router.add_post(f"{base}/churn", _guarded(self._control_churn))

    # -- dispatch ----------------------------------------------------------------------------

    def _route(self, method: str, path: str) -> tuple[Route, dict[str, str]]:
        for route in self.routes:
            if route.method == method.upper():
                match = route.pattern.match(path)
                if match:
                    return route, match.groupdict()
        segment = path.rstrip("/").rsplit("/", 1)[-1]
        raise bad_request(f"Resource not found for the segment '{segment}'.")

    def _dispatch(self, token: AccessToken, method: str, version: str, target: str, body: Any) -> Answer:
        """Route, check permission, throttle, check the licence, answer; raises GraphError."""
        parts = urlsplit(target)
        path = unquote(parts.path)
        route, params = self._route(method, path)
        if not token.permissions & route.allowed:
            raise forbidden()
        tenant = self.sim.tenants[token.tenant_id]
        intune = self.sim.intune.get(tenant.tenant_id)
        if intune is not None:
            self._throttle(intune, token, _bucket(path))
        if intune is None or not intune.licensed:
            raise bad_request(NOT_APPLICABLE)
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        return route.handler(self, Call(tenant, intune, version, path, query, body, params))

    def _throttle(self, intune: IntuneTenant, token: AccessToken, bucket: str) -> None:
        limit = intune.limits.get(bucket)
        if not limit:
            return
        now = self.sim.clock.timestamp()
        window = intune.windows.setdefault((token.client_id, bucket), deque())
        while window and window[0] <= now - WINDOW_SECONDS:
            window.popleft()
        if len(window) >= limit:
            wait = max(1, math.ceil(window[0] + WINDOW_SECONDS - now))
            scope = f"Tenant_Application/Intune_{bucket}/{token.client_id}/{token.tenant_id}"
            headers = {"Retry-After": str(wait), "x-ms-throttle-scope": scope}
            raise GraphError(429, "TooManyRequests", "Too many requests.", headers=headers)
        window.append(now)

    async def http(self, request: web.Request) -> web.Response:
        version = request.path.split("/", 2)[1]
        route, _ = self._route(request.method, request.path[len(version) + 1 :])
        _, token = authorize(self.sim, request, route.allowed)
        body = await request.json() if request.body_exists else None
        target = request.path_qs[len(version) + 1 :]
        answer = self._dispatch(token, request.method, version, target, body)
        if isinstance(answer, Stream):
            return web.Response(body=answer.data, content_type="application/octet-stream")
        request[ANSWER] = answer
        return json_response(answer)

    async def batch(self, request: web.Request) -> web.Response:
        """POST /$batch (docs/graph.md 10.4)."""
        version = request.path.split("/", 2)[1]
        _, token = authorize(self.sim, request, ALL_PERMISSIONS | INTUNE_PERMISSIONS)
        payload = await request.json() if request.body_exists else None
        requests = payload.get("requests") if isinstance(payload, dict) else None
        if not isinstance(requests, list) or not requests:
            raise bad_request("Invalid batch payload format.")
        if len(requests) > BATCH_LIMIT:
            raise bad_request(f"The number of requests exceeds the limit of {BATCH_LIMIT}.")
        ids = [str(r.get("id", "")).lower() for r in requests if isinstance(r, dict)]
        if len(ids) != len(requests) or len(set(ids)) != len(ids) or "" in ids:
            raise bad_request("Batch request ids must be present and unique.")
        answers = [self._inner(token, version, inner) for inner in requests]
        return json_response({"responses": answers[::-1]})  # "in any order"

    def _inner(self, token: AccessToken, version: str, inner: dict[str, Any]) -> dict[str, Any]:
        method, url = str(inner.get("method", "GET")).upper(), str(inner.get("url", ""))
        fault = self.sim.faults.take(method, unquote(f"/{version}{url}"))
        if fault is not None and fault.kind == "response" and fault.status < 400:
            # An injected success is sent as given: a test's answer that is not what the call returns.
            status, headers, body = fault.status, {"Content-Type": "application/json", **fault.headers}, fault.body
        else:
            status, headers, body = self._inner_answer(token, method, version, url, inner.get("body"), fault)
        self._log_inner(token, method, version, url, status, inner.get("body"))
        return {"id": inner.get("id"), "status": status, "headers": headers, "body": body}

    def _inner_answer(
        self, token: AccessToken, method: str, version: str, url: str, request_body: Any, fault: Fault | None
    ) -> tuple[int, dict[str, str], Any]:
        headers: dict[str, str] = {"Content-Type": "application/json"}
        try:
            if not url.startswith("/"):
                raise bad_request("The batch request url must be relative.")
            if fault is not None and fault.kind == "response":
                code = "TooManyRequests" if fault.status == 429 else "generalException"
                raise GraphError(fault.status, code, "Injected fault.", headers=fault.headers)
            path = f"/{version}{unquote(urlsplit(url).path)}"
            target = self.sim.conformance.check(method, path, _query(url), request_body)
            answer = self._dispatch(token, method, version, url, request_body)
            if isinstance(answer, Stream):
                return 200, {"Content-Type": "application/octet-stream"}, base64.b64encode(answer.data).decode()
            return 200, headers, self.sim.conformance.conform(path, target, answer)[0]
        except GraphError as error:
            injected = fault.body if fault is not None and isinstance(fault.body, dict) else None
            date = inner_error_date(self.sim.clock.now())
            body = injected or error_body(error.code, error.message, str(uuid.uuid4()), date)
            return error.status, {**headers, **error.headers}, body

    def _log_inner(self, token: AccessToken, method: str, version: str, url: str, status: int, body: Any) -> None:
        """Inner requests go to the request log like any other: Graph counts them one by one."""
        parts = urlsplit(url)
        self.sim.requests.append(
            RequestRecord(
                method,
                f"/{version}{parts.path}",
                dict(parse_qsl(parts.query)),
                status,
                token.tenant_id,
                self.sim.clock.timestamp(),
                token.client_id,
                body,
            )
        )

    # -- paging ------------------------------------------------------------------------------

    def _page(
        self,
        call: Call,
        items: Callable[[], list[str]],
        render: Callable[[str, tuple[str, ...] | None], dict[str, Any] | None],
        context: str,
        known: frozenset[str] | None = None,
    ) -> dict[str, Any]:
        """One page of a list over a snapshot of ids taken on the first page."""
        if "$skiptoken" in call.query:
            state = decode_token(call.query["$skiptoken"]) or {}
            snapshot = self.sim.list_snapshots.get(str(state.get("s", "")))
            if snapshot is None or snapshot.tenant_id != call.tenant.tenant_id:
                raise expired_page_token()
            snapshot_id, position = str(state["s"]), int(state["p"])
        else:
            query = {"$top": str(_top(call.query, call.intune.page_size))}
            select = _parse_select(call.query.get("$select"), known, context)
            if select is not None:
                query["$select"] = ",".join(select)
            snapshot = ListSnapshot(call.tenant.tenant_id, call.path, items(), query)
            snapshot_id, position = self.sim.list_snapshots.put(snapshot), 0
        top = int(snapshot.query["$top"])
        select = tuple(snapshot.query["$select"].split(",")) if "$select" in snapshot.query else None
        values = [v for v in (render(i, select) for i in snapshot.items[position : position + top]) if v is not None]
        body: dict[str, Any] = {
            "@odata.context": f"{self.sim.base_url}/{call.version}/$metadata#{context}",
            "value": values,
        }
        if position + top < len(snapshot.items):
            options = "&".join(f"{key}={value}" for key, value in snapshot.query.items())
            token = encode_token({"s": snapshot_id, "p": position + top})
            body["@odata.nextLink"] = f"{self.sim.base_url}/{call.version}{call.path}?{options}&$skiptoken={token}"
        return body

    # -- handlers ----------------------------------------------------------------------------

    def device_management(self, call: Call) -> dict[str, Any]:
        intune = call.intune
        view = {
            "@odata.context": f"{self.sim.base_url}/{call.version}/$metadata#deviceManagement",
            "id": intune.account_id,
            "intuneAccountId": intune.account_id,
            "subscriptionState": intune.subscription_state,
            "settings": {"deviceComplianceCheckinThresholdDays": 30, "isScheduledActionEnabled": True},
        }
        return select_view(view, _parse_select(call.query.get("$select"), None, "deviceManagement"))

    def managed_devices(self, call: Call) -> dict[str, Any]:
        intune = call.intune

        def render(device_id: str, select: tuple[str, ...] | None) -> dict[str, Any] | None:
            device = intune.devices.get(device_id)
            return None if device is None else device_view(intune, device, select)

        raw_filter = call.query.get("$filter")
        if raw_filter is None:
            return self._page(call, lambda: list(intune.devices), render, "managedDevice")
        operator, moment = _filter_time(_SYNC_FILTER, raw_filter)

        def synced() -> list[str]:
            devices = intune.devices
            if operator == "gt":
                return [d for d in devices if math.floor(devices[d].last_sync) > moment]
            return [d for d in devices if math.floor(devices[d].last_sync) < moment]

        return self._page(call, synced, render, "managedDevice")

    def audit_events(self, call: Call) -> dict[str, Any]:
        intune = call.intune
        raw_filter = call.query.get("$filter")
        honoured = raw_filter is not None and intune.audit_filter_honoured
        bound = _filter_time(_ACTIVITY_FILTER, raw_filter) if honoured and raw_filter is not None else None
        events = {e["id"]: e for e in intune.listed_audit_events()}

        def items() -> list[str]:
            if bound is None:
                return list(events)
            operator, moment = bound
            at = {
                i: datetime.fromisoformat(e["activityDateTime"].replace("Z", "+00:00")).timestamp()
                for i, e in events.items()
            }
            return [i for i in events if (at[i] > moment if operator == "gt" else at[i] >= moment)]

        def render(event_id: str, select: tuple[str, ...] | None) -> dict[str, Any] | None:
            event = events.get(event_id) or next((e for e in intune.audit_events if e["id"] == event_id), None)
            return None if event is None else select_view(event, select)

        return self._page(call, items, render, "auditEvent")

    def managed_device(self, call: Call) -> dict[str, Any]:
        intune, device_id = call.intune, call.params["id"]
        device = intune.devices.get(device_id)
        if device is None:
            raise not_found(device_id)
        view = device_view(intune, device, _parse_select(call.query.get("$select"), None, "managedDevice"))
        if call.query.get("$expand", "").lower() == "detectedapps":
            view["detectedApps"] = [detected_view(intune, app_id) for app_id in intune.device_apps(device_id)]
        return view

    def _policies(self, call: Call, policies: dict[str, dict[str, Any]], context: str) -> dict[str, Any]:
        def render(policy_id: str, select: tuple[str, ...] | None) -> dict[str, Any] | None:
            policy = policies.get(policy_id)
            return None if policy is None else select_view(policy, select)

        return self._page(call, lambda: list(policies), render, context)

    def _policy(self, call: Call, policies: dict[str, dict[str, Any]]) -> dict[str, Any]:
        policy = policies.get(call.params["id"])
        if policy is None:
            raise not_found(call.params["id"])
        return select_view(policy, _parse_select(call.query.get("$select"), None, "policy"))

    def compliance_policy(self, call: Call) -> dict[str, Any]:
        return self._policy(call, call.intune.compliance_policies)

    def configuration(self, call: Call) -> dict[str, Any]:
        return self._policy(call, call.intune.configurations)

    def compliance_policies(self, call: Call) -> dict[str, Any]:
        return self._policies(call, call.intune.compliance_policies, "deviceCompliancePolicy")

    def configurations(self, call: Call) -> dict[str, Any]:
        return self._policies(call, call.intune.configurations, "deviceConfiguration")

    def _statuses(self, call: Call, policies: dict[str, dict[str, Any]], context: str) -> dict[str, Any]:
        intune, policy_id = call.intune, call.params["id"]
        if policy_id not in policies:
            raise not_found(policy_id)
        platform = intune.policy_platform[policy_id]

        def render(device_id: str, select: tuple[str, ...] | None) -> dict[str, Any] | None:
            device = intune.devices.get(device_id)
            if device is None:
                return None
            return status_view(intune, policy_id, device, intune.status(policy_id, device), select)

        return self._page(call, lambda: list(intune.by_platform[platform]), render, context)

    def compliance_statuses(self, call: Call) -> dict[str, Any]:
        return self._statuses(call, call.intune.compliance_policies, "deviceComplianceDeviceStatus")

    def configuration_statuses(self, call: Call) -> dict[str, Any]:
        return self._statuses(call, call.intune.configurations, "deviceConfigurationDeviceStatus")

    def mobile_apps(self, call: Call) -> dict[str, Any]:
        intune = call.intune
        raw_filter = call.query.get("$filter")
        if raw_filter is not None and "isassigned eq true" not in raw_filter.lower():
            raise bad_request(f"Invalid filter clause: {raw_filter}")

        def items() -> list[str]:
            apps = intune.mobile_apps
            # The public integration's filter: assigned, line-of-business or without availability.
            return [
                a for a in apps if raw_filter is None or apps[a].get("isAssigned") or "Lob" in apps[a]["@odata.type"]
            ]

        def render(app_id: str, select: tuple[str, ...] | None) -> dict[str, Any] | None:
            app = intune.mobile_apps.get(app_id)
            return None if app is None else select_view(app, select)

        return self._page(call, items, render, "mobileApps")

    def install_report(self, call: Call) -> Stream:
        """`retrieveDeviceAppInstallationStatusReport`: the DeviceInstallStatusByApp report of one app
        (`filter` "(ApplicationId eq '<id>')"), `select`ed columns (each localizable one with its `_loc`
        column), rows `skip`..`skip + top`."""
        intune, body = call.intune, call.body if isinstance(call.body, dict) else {}
        match = _APP_FILTER.search(str(body.get("filter") or ""))
        if match is None or match.group(1) not in intune.mobile_apps:
            raise bad_request("The filter must name one application: (ApplicationId eq '<id>').")
        app_id = match.group(1)
        top, skip = int(body.get("top") or MAX_TOP), int(body.get("skip") or 0)
        columns = [name for name, _ in REPORT_COLUMNS]
        wanted = _report_columns(columns, body.get("select"))
        positions = [columns.index(c) for c in wanted]
        rows = self._report_rows(intune, app_id)
        version = app_version(intune.mobile_apps[app_id])
        values = []
        for device_id, state in rows[skip : skip + top]:
            device = intune.devices.get(device_id)
            if device is not None:
                full = report_row(intune, app_id, device, state, version)
                values.append([full[p] for p in positions])
        types = dict(REPORT_COLUMNS)
        report = {
            "TotalRowCount": len(rows),
            "Schema": [{"Column": c, "PropertyType": types[c]} for c in wanted],
            "Values": values,
        }
        return Stream(orjson.dumps(report))

    def _report_rows(self, intune: IntuneTenant, app_id: str) -> list[tuple[str, int]]:
        """(device id, install state) of the devices an app is targeted at, cached per tenant version."""
        key = (intune.directory.tenant_id, app_id)
        cached = self._reports.get(key)
        if cached is None or cached[0] != intune.version:
            rows = []
            for device in intune.devices.values():
                state = intune.install_state(app_id, device)
                if state is not None:
                    rows.append((device.id, state))
            cached = self._reports[key] = (intune.version, rows)
        return cached[1]

    def detected_apps(self, call: Call) -> dict[str, Any]:
        intune = call.intune

        def render(app_id: str, select: tuple[str, ...] | None) -> dict[str, Any] | None:
            return select_view(detected_view(intune, app_id), select) if app_id in intune.detected else None

        return self._page(call, lambda: [a for a in intune.detected if intune.device_count(a)], render, "detectedApps")

    def detected_app_devices(self, call: Call) -> dict[str, Any]:
        intune, app_id = call.intune, call.params["id"]
        if app_id not in intune.detected:
            raise not_found(app_id)

        def render(device_id: str, select: tuple[str, ...] | None) -> dict[str, Any] | None:
            device = intune.devices.get(device_id)
            return None if device is None else device_view(intune, device, select)

        return self._page(call, lambda: list(intune.devices_with_app(app_id)), render, "managedDevices")

    # -- control API -------------------------------------------------------------------------

    def _intune(self, request: web.Request) -> IntuneTenant:
        return self.sim.intune[self.sim.tenant(request.match_info["tid"]).tenant_id]

    async def _control_stats(self, request: web.Request) -> dict[str, Any]:
        return self._intune(request).stats()

    async def _control_update(self, request: web.Request) -> dict[str, Any]:
        intune, body = self._intune(request), await _body(request)
        if "limits" in body:
            intune.limits = {str(k): int(v) for k, v in dict(body["limits"]).items()}
        if "page_size" in body:
            intune.page_size = int(body["page_size"])
        if "licensed" in body:
            intune.licensed = bool(body["licensed"])
        return intune.stats()

    async def _control_seed(self, request: web.Request) -> dict[str, Any]:
        options = await _body(request)
        return seed_intune(self.sim, request.match_info["tid"], **options).stats()

    async def _control_churn(self, request: web.Request) -> dict[str, Any]:
        body = await _body(request)
        changed: dict[str, list[str]] = {}
        done = churn(self._intune(request), float(body.get("fraction", 0.01)), int(body.get("seed", 1)), changed)
        # `"devices": true`: the ids of the devices changed, by kind, as well as the counts.
        return {"done": dict(done), "devices": changed} if body.get("devices") else dict(done)


_ROUTES: tuple[tuple[str, str, frozenset[str], Handler], ...] = (
    ("GET", r"^/deviceManagement/?$", SERVICE_CONFIG_READ | CONFIGURATION_READ, IntuneRoutes.device_management),
    ("GET", r"^/deviceManagement/managedDevices/?$", MANAGED_DEVICES_READ, IntuneRoutes.managed_devices),
    ("GET", r"^/deviceManagement/managedDevices/(?P<id>[^/]+)/?$", MANAGED_DEVICES_READ, IntuneRoutes.managed_device),
    ("GET", r"^/deviceManagement/auditEvents/?$", APPS_READ, IntuneRoutes.audit_events),
    ("GET", r"^/deviceManagement/deviceCompliancePolicies/?$", CONFIGURATION_READ, IntuneRoutes.compliance_policies),
    (
        "GET",
        r"^/deviceManagement/deviceCompliancePolicies/(?P<id>[^/]+)/?$",
        CONFIGURATION_READ,
        IntuneRoutes.compliance_policy,
    ),
    (
        "GET",
        r"^/deviceManagement/deviceCompliancePolicies/(?P<id>[^/]+)/deviceStatuses/?$",
        CONFIGURATION_READ,
        IntuneRoutes.compliance_statuses,
    ),
    ("GET", r"^/deviceManagement/deviceConfigurations/?$", CONFIGURATION_READ, IntuneRoutes.configurations),
    (
        "GET",
        r"^/deviceManagement/deviceConfigurations/(?P<id>[^/]+)/?$",
        CONFIGURATION_READ,
        IntuneRoutes.configuration,
    ),
    (
        "GET",
        r"^/deviceManagement/deviceConfigurations/(?P<id>[^/]+)/deviceStatuses/?$",
        CONFIGURATION_READ,
        IntuneRoutes.configuration_statuses,
    ),
    ("GET", r"^/deviceAppManagement/mobileApps/?$", APPS_READ, IntuneRoutes.mobile_apps),
    (
        "POST",
        r"^/deviceManagement/reports/(microsoft\.graph\.)?retrieveDeviceAppInstallationStatusReport/?$",
        APPS_READ,
        IntuneRoutes.install_report,
    ),
    ("GET", r"^/deviceManagement/detectedApps/?$", MANAGED_DEVICES_READ, IntuneRoutes.detected_apps),
    (
        "GET",
        r"^/deviceManagement/detectedApps/(?P<id>[^/]+)/managedDevices/?$",
        MANAGED_DEVICES_READ,
        IntuneRoutes.detected_app_devices,
    ),
)
