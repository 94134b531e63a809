"""The Entra token service, as much of it as MSAL Python needs for client credentials.

MSAL (created with `authority=f"{base}/{tenant}"` and `instance_discovery=False`) first reads
`{authority}/v2.0/.well-known/openid-configuration`, then posts to the `token_endpoint` it found
there. Errors are Entra's OAuth shape: `error`, `error_description` starting with the AADSTS
code, `error_codes` (docs/graph.md 11.2: MSAL hands these back instead of raising).
"""

from __future__ import annotations

import hmac
import time
import uuid
from typing import TYPE_CHECKING

from aiohttp import web

from monitor.simulator.assertion import AssertionRejected, verify_assertion
from monitor.simulator.clock import graph_datetime
from monitor.simulator.request_keys import CLIENT, TENANT
from monitor.simulator.tenant import SimTenant

if TYPE_CHECKING:
    from monitor.simulator.state import SimulatorState

JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


class LoginRoutes:
    """`/{tenant}/v2.0/.well-known/openid-configuration`, `/{tenant}/oauth2/v2.0/token`, keys."""

    def __init__(self, sim: SimulatorState) -> None:
        self.sim = sim

    def register(self, router: web.UrlDispatcher) -> None:
        router.add_get("/{tenant}/v2.0/.well-known/openid-configuration", self.openid_configuration)
        router.add_get("/{tenant}/discovery/v2.0/keys", self.keys)
        router.add_post("/{tenant}/oauth2/v2.0/token", self.token)

    def _oauth_error(self, status: int, error: str, code: int, description: str) -> web.Response:
        trace, correlation = uuid.uuid4(), uuid.uuid4()
        stamp = graph_datetime(self.sim.clock.now())
        body = {
            "error": error,
            "error_description": f"AADSTS{code}: {description} Trace ID: {trace} Correlation ID: {correlation} "
            f"Timestamp: {stamp}",
            "error_codes": [code],
            "timestamp": stamp,
            "trace_id": str(trace),
            "correlation_id": str(correlation),
            "error_uri": f"{self.sim.base_url}/error?code={code}",
        }
        return web.json_response(body, status=status)

    def _unknown_tenant(self, ref: str) -> web.Response:
        return self._oauth_error(
            400,
            "invalid_tenant",
            90002,
            f"Tenant '{ref}' not found. Check to make sure you have the correct tenant ID and are signing into "
            "the correct cloud. Check with your subscription administrator, this may happen if there are no "
            "active subscriptions for the tenant.",
        )

    def token_endpoint(self, tenant_ref: str) -> str:
        return f"{self.sim.base_url}/{tenant_ref}/oauth2/v2.0/token"

    async def openid_configuration(self, request: web.Request) -> web.Response:
        ref = request.match_info["tenant"]
        tenant = self.sim.find_tenant(ref)
        if tenant is None:
            return self._unknown_tenant(ref)
        request[TENANT] = tenant.tenant_id
        base, tid = self.sim.base_url, tenant.tenant_id
        return web.json_response(
            {
                "token_endpoint": self.token_endpoint(tid),
                "token_endpoint_auth_methods_supported": [
                    "client_secret_post",
                    "private_key_jwt",
                    "client_secret_basic",
                ],
                "jwks_uri": f"{base}/{tid}/discovery/v2.0/keys",
                "response_modes_supported": ["query", "fragment", "form_post"],
                "subject_types_supported": ["pairwise"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
                "scopes_supported": ["openid", "profile", "email", "offline_access"],
                "issuer": f"{base}/{tid}/v2.0",
                "request_uri_parameter_supported": False,
                "userinfo_endpoint": f"{base}/oidc/userinfo",
                "authorization_endpoint": f"{base}/{tid}/oauth2/v2.0/authorize",
                "device_authorization_endpoint": f"{base}/{tid}/oauth2/v2.0/devicecode",
                "http_logout_supported": True,
                "frontchannel_logout_supported": True,
                "end_session_endpoint": f"{base}/{tid}/oauth2/v2.0/logout",
                "claims_supported": ["sub", "iss", "aud", "exp", "iat", "nbf", "tid", "oid"],
                "tenant_region_scope": "NA",
                "cloud_instance_name": "simulator",
                "cloud_graph_host_name": "graph.windows.net",
                "msgraph_host": base.split("://", 1)[-1],
                "rbac_url": base,
            }
        )

    async def keys(self, request: web.Request) -> web.Response:
        return web.json_response({"keys": []})

    async def token(self, request: web.Request) -> web.Response:
        """Client-credentials grant with a secret or a certificate assertion (docs/graph.md 11.1)."""
        ref = request.match_info["tenant"]
        tenant = self.sim.find_tenant(ref)
        if tenant is None:
            return self._unknown_tenant(ref)
        request[TENANT] = tenant.tenant_id
        form = {key: str(value) for key, value in (await request.post()).items()}
        request[CLIENT] = form.get("client_id", "")
        refusal = self._refusal(tenant, ref, form)
        if refusal is not None:
            return refusal
        token, issued = self.sim.issue_token(tenant, form["client_id"])
        return web.json_response(
            {
                "token_type": "Bearer",
                "expires_in": tenant.token_lifetime,
                "ext_expires_in": tenant.token_lifetime,
                "access_token": token,
            }
        )

    def _refusal(self, tenant: SimTenant, ref: str, form: dict[str, str]) -> web.Response | None:
        """The first reason to refuse, in the order Entra checks, or None."""
        if form.get("grant_type") != "client_credentials":
            return self._oauth_error(
                400, "unsupported_grant_type", 70003, "The app requested an unsupported grant type."
            )
        client_id = form.get("client_id")
        if not client_id:
            return self._oauth_error(
                400, "invalid_request", 900144, "The request body must contain the following parameter: 'client_id'."
            )
        if client_id not in self.sim.apps or (tenant.tenant_id, client_id) not in self.sim.grants:
            return self._oauth_error(
                400,
                "unauthorized_client",
                700016,
                f"Application with identifier '{client_id}' was not found in the directory '{ref}'. This can "
                "happen if the application has not been installed by the administrator of the tenant or consented "
                "to by any user in the tenant. You may have sent your authentication request to the wrong tenant.",
            )
        return self._scope_refusal(tenant, form.get("scope", "")) or self._credential_refusal(tenant, ref, form)

    def _scope_refusal(self, tenant: SimTenant, scope: str) -> web.Response | None:
        resource = f"{self.sim.base_url}/.default"
        if scope.strip() == resource:
            return None
        if not scope.strip().endswith("/.default") or " " in scope.strip():
            return self._oauth_error(
                400,
                "invalid_scope",
                1002012,
                f"The provided value for scope {scope} is not valid. Client credential flows must have a scope "
                "value with /.default suffixed to the resource identifier (application ID URI).",
            )
        # Entra answers a /.default scope for an unknown resource with invalid_resource.
        return self._oauth_error(
            400,
            "invalid_resource",
            500011,
            f"The resource principal named {scope.strip().removesuffix('/.default')} was not found in the tenant "
            f"named {tenant.display_name}. This can happen if the application has not been installed by the "
            "administrator of the tenant or consented to by any user in the tenant. You might have sent your "
            "authentication request to the wrong tenant.",
        )

    def _credential_refusal(self, tenant: SimTenant, ref: str, form: dict[str, str]) -> web.Response | None:
        app = self.sim.apps[form["client_id"]]
        if "client_secret" in form:
            secret = form["client_secret"].encode()
            if any(hmac.compare_digest(secret, known.encode()) for known in app.secrets):
                return None
            return self._oauth_error(
                401,
                "invalid_client",
                7000215,
                "Invalid client secret provided. Ensure the secret being sent in the request is the client secret "
                f"value, not the client secret ID, for a secret added to app '{app.client_id}'.",
            )
        if form.get("client_assertion_type") == JWT_BEARER and form.get("client_assertion"):
            return self._assertion_refusal(tenant, ref, form)
        return self._oauth_error(
            401,
            "invalid_client",
            7000218,
            "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
        )

    def _assertion_refusal(self, tenant: SimTenant, ref: str, form: dict[str, str]) -> web.Response | None:
        app = self.sim.apps[form["client_id"]]
        audiences = {self.token_endpoint(tenant.tenant_id), self.token_endpoint(ref)}
        try:
            # The wall clock, not the simulator's: the client signed with its own clock.
            verify_assertion(form["client_assertion"], app.certificates, app.client_id, audiences, time.time())
        except AssertionRejected as rejected:
            return self._oauth_error(401, "invalid_client", rejected.code, str(rejected))
        return None
