"""The admin-consent endpoint (docs/graph.md 11.3), and who "signs in" there.

`GET /{tenant}/v2.0/adminconsent?client_id=&scope=&redirect_uri=&state=` is where an application
sends a global administrator to consent to its application permissions. At Entra a person signs in
and clicks; here a test (or the control API) says beforehand who will sign in and what happens
(`AdminConsent.sign_in_as`), and the endpoint answers at once with the redirect Entra would send:

- `consent`: the admin consents; the app gets `permissions` in that tenant (all the simulator knows
  when not given, as when the app registration asks for all of them) and the browser goes to
  `redirect_uri?admin_consent=True&tenant=<tenant id>&state=<state>&scope=<scope>`;
- `decline`: `redirect_uri?error=access_denied&error_subcode=cancel&error_description=...&state=`
  (docs/graph.md 11.3 shows the v1 form `permission_denied`, "The admin canceled the request");
- `personal_account`: a personal Microsoft account signs in (AADSTS500200);
- `not_admin`: a user who is not an administrator signs in (AADSTS90094);
- `consumer_tenant`: consent "succeeds" for the personal-accounts tenant
  (9188040d-6c67-4c5b-b112-36a304b66dad), which is not an organization.

Problems Entra shows on its own page, without redirecting (the redirect URI cannot be trusted yet):
an unknown `client_id`, a missing or non-HTTPS `redirect_uri`. A missing or foreign `scope` is
redirected as `invalid_request` / `invalid_scope`, as the v2 endpoint does. The control API:
`POST /_sim/consent {"tenant_id", "permissions"?, "outcome"?}`.
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlencode, urlsplit

from aiohttp import web

from monitor.simulator.control import _body, _guarded

if TYPE_CHECKING:
    from monitor.simulator.state import SimulatorState

Outcome = Literal["consent", "decline", "personal_account", "not_admin", "consumer_tenant"]
OUTCOMES: frozenset[str] = frozenset({"consent", "decline", "personal_account", "not_admin", "consumer_tenant"})
# The tenant of personal Microsoft accounts (outlook.com, hotmail.com, ...).
CONSUMER_TENANT = "9188040d-6c67-4c5b-b112-36a304b66dad"


@dataclass(frozen=True)
class ConsentPlan:
    """Who signs in at the next admin-consent request, and what they do."""

    tenant_id: str
    permissions: frozenset[str] | None
    outcome: Outcome


class AdminConsent:
    """The admin-consent endpoint and its plan (one plan serves every request until changed)."""

    def __init__(self, sim: SimulatorState) -> None:
        self.sim = sim
        self.plan: ConsentPlan | None = None
        self.requests: list[dict[str, str]] = []  # the query of every admin-consent request

    def sign_in_as(
        self, tenant_id: str, *, permissions: Iterable[str] | None = None, outcome: Outcome = "consent"
    ) -> None:
        """The administrator of `tenant_id` signs in at the next requests and does `outcome`."""
        if outcome not in OUTCOMES:
            raise ValueError(f"unknown consent outcome {outcome!r}; one of {sorted(OUTCOMES)}")
        tenant = self.sim.tenant(tenant_id)
        chosen = None if permissions is None else frozenset(permissions)
        self.plan = ConsentPlan(tenant.tenant_id, chosen, outcome)

    def register(self, router: web.UrlDispatcher) -> None:
        router.add_get("/{tenant}/v2.0/adminconsent", self.admin_consent)
        router.add_post("/_sim/consent", _guarded(self._control))

    async def _control(self, request: web.Request) -> Any:
        body = await _body(request)
        self.sign_in_as(
            str(body["tenant_id"]), permissions=body.get("permissions"), outcome=body.get("outcome", "consent")
        )

    async def admin_consent(self, request: web.Request) -> web.Response:
        query = {key: str(value) for key, value in request.query.items()}
        self.requests.append(query)
        client_id, redirect_uri = query.get("client_id", ""), query.get("redirect_uri", "")
        if client_id not in self.sim.apps:
            return _page(
                400,
                f"AADSTS700016: Application with identifier '{client_id}' was not found in the directory. This can "
                "happen if the application has not been installed by the administrator of the tenant.",
            )
        if not redirect_uri or urlsplit(redirect_uri).scheme != "https":
            return _page(
                400,
                "AADSTS50011: The redirect URI specified in the request does not match the redirect "
                "URIs configured for the application (it must be an https:// URL).",
            )
        state = query.get("state")
        scope = query.get("scope", "")
        if not scope:
            return _redirect(
                redirect_uri,
                state,
                error="invalid_request",
                error_description="AADSTS900144: The request body must contain the following parameter: 'scope'.",
            )
        if scope.strip() != f"{self.sim.base_url}/.default":
            return _redirect(
                redirect_uri,
                state,
                error="invalid_scope",
                error_description=f"AADSTS70011: The provided value for the input parameter 'scope' "
                f"is not valid. The scope {scope} is not valid.",
            )
        if self.plan is None:
            return _page(400, "Nobody is signed in: tell the simulator who consents (AdminConsent.sign_in_as).")
        return self._outcome(self.plan, client_id, redirect_uri, state, scope)

    def _outcome(
        self, plan: ConsentPlan, client_id: str, redirect_uri: str, state: str | None, scope: str
    ) -> web.Response:
        if plan.outcome == "decline":
            return _redirect(
                redirect_uri,
                state,
                error="access_denied",
                error_subcode="cancel",
                error_description="AADSTS65004: User declined to consent to access the app.",
            )
        if plan.outcome == "personal_account":
            return _redirect(
                redirect_uri,
                state,
                error="invalid_request",
                error_description="AADSTS500200: User account 'someone@outlook.com' is a personal "
                "Microsoft account. Personal Microsoft accounts are not supported for this "
                "application unless explicitly invited to an organization.",
            )
        if plan.outcome == "not_admin":
            return _redirect(
                redirect_uri,
                state,
                error="access_denied",
                error_description="AADSTS90094: The grant requires admin permission.",
            )
        if plan.outcome == "consumer_tenant":
            return _redirect(redirect_uri, state, admin_consent="True", tenant=CONSUMER_TENANT, scope=scope)
        if plan.permissions is None:
            self.sim.grant(plan.tenant_id, client_id)
        else:
            self.sim.grant(plan.tenant_id, client_id, plan.permissions)
        return _redirect(redirect_uri, state, admin_consent="True", tenant=plan.tenant_id, scope=scope)


def _redirect(redirect_uri: str, state: str | None, **params: str) -> web.Response:
    if state is not None:
        params["state"] = state
    separator = "&" if urlsplit(redirect_uri).query else "?"
    return web.Response(status=302, headers={"Location": f"{redirect_uri}{separator}{urlencode(params)}"})


def _page(status: int, message: str) -> web.Response:
    body = f"<!doctype html><title>Sign in to your account</title><p>{html.escape(message)}</p>"
    return web.Response(status=status, text=body, content_type="text/html")
