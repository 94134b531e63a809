"""The `Simulator`: tenants, registered apps and consent, the CA, faults, the request log, the
clock, and the one aiohttp application that serves login, Graph and the control API.

One HTTPS origin plays both `MONITOR_AUTHORITY_URL` and `MONITOR_GRAPH_URL`: `/{tenant}/...`
is the Entra token service (login.py), `/v1.0/...` is Graph (delta in directory.py, list and get
calls in lists.py, both behind graph_auth.py), `/_sim/...` is the control API (control.py).
`base_url` must be set (serve_simulator does it) before links, `Location` headers and the
`.default` scope can be formed.

The state lives in state.py (`SimulatorState`), below the route modules, which work on it; this
module, the app factory, imports them and none of them imports it (docs/architecture.md, "Layers").
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from urllib.parse import unquote

from aiohttp import web

from monitor.simulator._json import json_response
from monitor.simulator.audit_routes import AuditRoutes
from monitor.simulator.ca import CertificateAuthority
from monitor.simulator.clock import SimClock, inner_error_date
from monitor.simulator.consent import AdminConsent
from monitor.simulator.control import ControlRoutes
from monitor.simulator.directory import DeltaRoutes
from monitor.simulator.directory_objects import DirectoryObjectRoutes
from monitor.simulator.errors import GraphError, error_body
from monitor.simulator.faults import Fault, RequestRecord
from monitor.simulator.intune_routes import IntuneRoutes
from monitor.simulator.lists import ListRoutes
from monitor.simulator.login import LoginRoutes
from monitor.simulator.permissions import ALL_PERMISSIONS
from monitor.simulator.request_keys import BODY, CLIENT, DROPPED, EXTRA_HEADERS, REQUEST_ID, TENANT
from monitor.simulator.state import AccessToken, AppRegistration, SimulatorState
from monitor.simulator.subscription_control import SubscriptionControlRoutes
from monitor.simulator.subscription_routes import SubscriptionRoutes
from monitor.simulator.subscriptions import SubscriptionService

# Re-exported: tests and benchmarks import these from here.
__all__ = ["ALL_PERMISSIONS", "AccessToken", "AppRegistration", "Simulator"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Simulator(SimulatorState):
    """A simulated Microsoft 365: Entra login plus the Graph directory endpoints."""

    def __init__(
        self, *, clock: SimClock | None = None, ca: CertificateAuthority | None = None, round_store_size: int = 64
    ) -> None:
        super().__init__(clock=clock, ca=ca, round_store_size=round_store_size)
        self.subscriptions = SubscriptionService(self)  # change notifications (docs/graph.md 2-5)
        self.consent = AdminConsent(self)  # the admin-consent endpoint (docs/graph.md 11.3)

    def send_lifecycle(self, subscription_id: str, event: str, *, pause: bool = False) -> None:
        """A lifecycle notification for a subscription (docs/graph.md 5); see SubscriptionService."""
        self.subscriptions.send_lifecycle(subscription_id, event, pause=pause)

    # -- the application -------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._envelope, self._inject_faults, self.conformance.middleware])
        ControlRoutes(self).register(app.router)
        DeltaRoutes(self).register(app.router)  # before ListRoutes: /users/delta is not /users/{id}
        ListRoutes(self).register(app.router)
        DirectoryObjectRoutes(self).register(app.router)
        LoginRoutes(self).register(app.router)
        self.consent.register(app.router)
        IntuneRoutes(self).register(app.router)
        AuditRoutes(self).register(app.router)
        SubscriptionRoutes(self.subscriptions).register(app.router)
        SubscriptionControlRoutes(self.subscriptions).register(app.router)
        self.subscriptions.install(app)
        return app

    def graph_error_response(self, request: web.Request, error: GraphError) -> web.Response:
        body = error_body(error.code, error.message, request[REQUEST_ID], inner_error_date(self.clock.now()))
        return json_response(body, status=error.status, headers=error.headers)

    @web.middleware
    async def _envelope(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Request ids, Graph error rendering, and the request log around every request."""
        request[REQUEST_ID] = str(uuid.uuid4())
        status: int | None = None
        try:
            response = await self._guarded(request, handler)
            status = None if request.get(DROPPED) else response.status
            response.headers["request-id"] = request[REQUEST_ID]
            response.headers["client-request-id"] = request.headers.get("client-request-id", request[REQUEST_ID])
            response.headers.update(request.get(EXTRA_HEADERS) or {})
            return response
        except web.HTTPException as exception:
            status = exception.status
            raise
        finally:
            if not request.path.startswith("/_sim/"):
                self.requests.append(
                    RequestRecord(
                        request.method,
                        request.path,
                        dict(request.query),
                        status,
                        request.get(TENANT),
                        self.clock.timestamp(),
                        request.get(CLIENT),
                        request.get(BODY),
                    )
                )

    async def _guarded(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except GraphError as error:
            return self.graph_error_response(request, error)
        except web.HTTPNotFound:
            if not request.path.startswith("/v1.0/"):
                raise
            segment = request.path.rstrip("/").rsplit("/", 1)[-1]
            return self.graph_error_response(
                request, GraphError(400, "BadRequest", f"Resource not found for the segment '{segment}'.")
            )

    @web.middleware
    async def _inject_faults(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith("/_sim/"):
            return await handler(request)
        fault = self.faults.take(request.method, unquote(request.path_qs))
        if fault is None:
            return await handler(request)
        if fault.kind == "delay":
            await asyncio.sleep(fault.seconds)
            return await handler(request)
        if fault.kind == "disconnect":
            # Abort the TLS connection; aiohttp then fails quietly to write the response below.
            if request.transport is not None:
                request.transport.abort()
            request[DROPPED] = True
            return web.Response(status=500)
        return self._fault_response(request, fault)

    def _fault_response(self, request: web.Request, fault: Fault) -> web.Response:
        if fault.body is None:
            code = {429: "TooManyRequests", 503: "serviceNotAvailable", 504: "gatewayTimeout"}.get(
                fault.status, "generalException"
            )
            error = GraphError(fault.status, code, "Injected fault.", headers=fault.headers)
            return self.graph_error_response(request, error)
        if isinstance(fault.body, str):
            return web.Response(status=fault.status, text=fault.body, headers=fault.headers)
        return json_response(fault.body, status=fault.status, headers=fault.headers)
