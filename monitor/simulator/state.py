"""The simulator's state below its routes: tenants, registered apps and consent, issued tokens,
throttling, faults, the request log and the clock.

Every route module (login.py, directory.py, lists.py, control.py, intune_routes.py, ...) works on a
`SimulatorState`, and graph_app.py's `Simulator` adds the aiohttp application that registers those
routes: the app factory imports the routes, never the reverse (docs/architecture.md, "Layers").
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509

from monitor.simulator.access_tokens import jwt_shaped_token
from monitor.simulator.ca import CertificateAuthority
from monitor.simulator.clock import SimClock
from monitor.simulator.conformance import Conformance
from monitor.simulator.delta import DeltaRound
from monitor.simulator.faults import FaultInjector, RequestLog
from monitor.simulator.intune import IntuneTenant
from monitor.simulator.permissions import ALL_PERMISSIONS
from monitor.simulator.tenant import ExpiryMode, Resource, SimTenant
from monitor.simulator.throttle import TokenBucket
from monitor.simulator.tokens import BoundedStore, ListSnapshot


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


class SimulatorState:
    """What a simulated Microsoft 365 holds, and the knobs on it; `graph_app.Simulator` adds the app."""

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

    def count(self, path_regex: str = ".*", *, method: str | None = None, status: int | None = None) -> int:
        """Logged requests whose path matches (re.search)."""
        return self.requests.count(path_regex, method=method, status=status)
