"""The `Simulator`: tenants, registered apps and consent, the CA, faults, the request log, the
clock, and the one aiohttp application that serves login, Graph and the control API.

One HTTPS origin plays both `MONITOR_AUTHORITY_URL` and `MONITOR_GRAPH_URL`: `/{tenant}/...`
is the Entra token service (login.py), `/v1.0/...` is Graph (delta in directory.py, list and get
calls in lists.py, both behind graph_auth.py), `/_sim/...` is the control API (control.py).
`base_url` must be set (serve_simulator does it) before links, `Location` headers and the
`.default` scope can be formed.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from aiohttp import web
from cryptography import x509

from monitor.simulator._json import json_response
from monitor.simulator.access_tokens import jwt_shaped_token
from monitor.simulator.audit_routes import AuditRoutes
from monitor.simulator.ca import CertificateAuthority
from monitor.simulator.clock import SimClock, inner_error_date
from monitor.simulator.conformance import Conformance
from monitor.simulator.consent import AdminConsent
from monitor.simulator.control import ControlRoutes
from monitor.simulator.delta import DeltaRound
from monitor.simulator.directory import DeltaRoutes
from monitor.simulator.directory_objects import DirectoryObjectRoutes
from monitor.simulator.errors import GraphError, error_body
from monitor.simulator.faults import Fault, FaultInjector, RequestLog, RequestRecord
from monitor.simulator.intune import IntuneTenant
from monitor.simulator.intune_routes import INTUNE_READ_PERMISSIONS, IntuneRoutes
from monitor.simulator.lists import ListRoutes
from monitor.simulator.login import LoginRoutes
from monitor.simulator.request_keys import BODY, CLIENT, DROPPED, EXTRA_HEADERS, REQUEST_ID, TENANT
from monitor.simulator.subscriptions import SubscriptionService
from monitor.simulator.tenant import ExpiryMode, Resource, SimTenant
from monitor.simulator.throttle import TokenBucket
from monitor.simulator.tokens import BoundedStore, ListSnapshot

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Every application permission the simulator knows; `grant(..., ALL_PERMISSIONS)` consents to all.
ALL_PERMISSIONS = frozenset(
    {
        "User.Read.All",
        "User.ReadWrite.All",
        "Group.Read.All",
        "Group.ReadWrite.All",
        "GroupMember.Read.All",
        "Directory.Read.All",
        "Directory.ReadWrite.All",
        "Organization.Read.All",
        "AuditLog.Read.All",
    }
    | INTUNE_READ_PERMISSIONS
    | {"APIConnectors.Read.All"}
)


@dataclass
class AppRegistration:
    """An app registration: client id, secrets, certificates (for assertions)."""

    client_id: str
    secrets: set[str] = field(default_factory=set)
    certificates: list[x509.Certificate] = field(default_factory=list)


@dataclass(frozen=True)
class AccessToken:
    """What the server remembers about an opaque access token it issued."""

    tenant_id: str
    client_id: str
    permissions: frozenset[str]
    expires_at: float  # by the simulator clock


class Simulator:
    """A simulated Microsoft 365: Entra login plus the Graph directory endpoints."""

    def __init__(
        self, *, clock: SimClock | None = None, ca: CertificateAuthority | None = None, round_store_size: int = 64
    ) -> None:
        self.clock = clock or SimClock()
        self._ca = ca
        self.base_url = "https://127.0.0.1"
        self.tenants: dict[str, SimTenant] = {}
        self.apps: dict[str, AppRegistration] = {}
        self.grants: dict[tuple[str, str], frozenset[str]] = {}
        self.faults = FaultInjector()
        self.requests = RequestLog()
        self.tokens: dict[str, AccessToken] = {}
        self.tokens_issued: Counter[tuple[str, str]] = Counter()  # (tenant, client) -> tokens issued
        self.throttle_limits: dict[str, float] = {}
        self.buckets: dict[tuple[str, str], TokenBucket] = {}
        self.delta_rounds: BoundedStore[DeltaRound] = BoundedStore(round_store_size)
        self.list_snapshots: BoundedStore[ListSnapshot] = BoundedStore(round_store_size)
        self.intune: dict[str, IntuneTenant] = {}  # tenants with Intune (intune_seed.seed_intune)
        self.subscriptions = SubscriptionService(self)  # change notifications (docs/graph.md 2-5)
        self.consent = AdminConsent(self)  # the admin-consent endpoint (docs/graph.md 11.3)
        self.conformance = Conformance()  # requests and answers checked against Graph's metadata

    @property
    def ca(self) -> CertificateAuthority:
        if self._ca is None:
            self._ca = CertificateAuthority.create()
        return self._ca

    # -- tenants, apps, consent --------------------------------------------------------------

    def add_tenant(self, tenant_id: str | None = None, display_name: str = "Contoso", **options: Any) -> SimTenant:
        """Create a tenant on the simulator's clock; `options` go to SimTenant."""
        tenant = SimTenant(tenant_id or str(uuid.uuid4()), display_name, clock=self.clock, **options)
        self.tenants[tenant.tenant_id] = tenant
        return tenant

    def find_tenant(self, ref: str) -> SimTenant | None:
        """A tenant by GUID or by one of its verified domain names (both work as `{tenant}`)."""
        tenant = self.tenants.get(ref) or self.tenants.get(ref.lower())
        if tenant is None:
            tenant = next((t for t in self.tenants.values() if t.find_domain(ref)), None)
        return tenant

    def tenant(self, tenant_id: str) -> SimTenant:
        tenant = self.find_tenant(tenant_id)
        if tenant is None:
            raise KeyError(tenant_id)
        return tenant

    def register_app(
        self,
        client_id: str | None = None,
        *,
        secret: str | None = None,
        certificate_pem: bytes | str | Iterable[bytes | str] | None = None,
    ) -> AppRegistration:
        """Register (or add credentials to) an app. Certificates are PEM; several may be given."""
        client_id = client_id or str(uuid.uuid4())
        app = self.apps.setdefault(client_id, AppRegistration(client_id))
        if secret is not None:
            app.secrets.add(secret)
        pems = [certificate_pem] if isinstance(certificate_pem, bytes | str) else list(certificate_pem or [])
        for pem in pems:
            app.certificates.append(x509.load_pem_x509_certificate(pem.encode() if isinstance(pem, str) else pem))
        return app

    def grant(self, tenant_id: str, client_id: str, permissions: Iterable[str] = ALL_PERMISSIONS) -> None:
        """Admin consent in `tenant_id` for `client_id` with these application permissions."""
        self.grants[(self.tenant(tenant_id).tenant_id, client_id)] = frozenset(permissions)

    def revoke(self, tenant_id: str, client_id: str) -> None:
        self.grants.pop((self.tenant(tenant_id).tenant_id, client_id), None)

    def issue_token(self, tenant: SimTenant, client_id: str) -> tuple[str, AccessToken]:
        """An access token carrying the permissions consented at issue time (JWT-shaped, `roles`)."""
        permissions = self.grants[(tenant.tenant_id, client_id)]
        now = self.clock.timestamp()
        issued = AccessToken(tenant.tenant_id, client_id, permissions, now + tenant.token_lifetime)
        token = jwt_shaped_token(
            tenant_id=tenant.tenant_id,
            client_id=client_id,
            audience=self.base_url,
            roles=permissions,
            issued_at=now,
            expires_at=issued.expires_at,
        )
        self.tokens[token] = issued
        self.tokens_issued[(tenant.tenant_id, client_id)] += 1
        return token, issued

    # -- knobs for tests and benchmarks ------------------------------------------------------

    def expire_delta_tokens(self, tenant_id: str, resource: Resource, mode: ExpiryMode = "410") -> None:
        """Refuse every delta token issued so far for `resource` with `mode` (docs/graph.md 8)."""
        if mode not in ("410", "syncStateNotFound", "resyncRequired"):
            raise ValueError(f"unknown expiry mode {mode!r}")
        self.tenant(tenant_id).delta_tokens.expire(resource, mode)

    def throttle(self, tenant_id: str, ru_per_10s: float | None) -> None:
        """Limit each app in the tenant to `ru_per_10s` resource units per 10 s; None lifts it."""
        tenant_id = self.tenant(tenant_id).tenant_id
        if ru_per_10s is None:
            self.throttle_limits.pop(tenant_id, None)
        else:
            self.throttle_limits[tenant_id] = float(ru_per_10s)
        for key in [key for key in self.buckets if key[0] == tenant_id]:
            del self.buckets[key]

    def bucket(self, tenant_id: str, client_id: str) -> TokenBucket | None:
        limit = self.throttle_limits.get(tenant_id)
        if limit is None:
            return None
        key = (tenant_id, client_id)
        if key not in self.buckets:
            self.buckets[key] = TokenBucket(limit, limit, self.clock.timestamp())
        return self.buckets[key]

    def send_lifecycle(self, subscription_id: str, event: str, *, pause: bool = False) -> None:
        """A lifecycle notification for a subscription (docs/graph.md 5); see SubscriptionService."""
        self.subscriptions.send_lifecycle(subscription_id, event, pause=pause)

    def count(self, path_regex: str = ".*", *, method: str | None = None, status: int | None = None) -> int:
        """Logged requests whose path matches (re.search)."""
        return self.requests.count(path_regex, method=method, status=status)

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
