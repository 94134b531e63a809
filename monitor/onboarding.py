"""Admin-consent onboarding over HTTP: `GET /onboard` and `GET /onboard/callback` (docs/graph.md 11.3).

1. The operator opens `{MONITOR_PUBLIC_URL}/onboard?token=<operator token>` (options may follow:
   `account_name`, `description`, `polling_interval`, `tag_account_name`) and hands the browser to a
   global administrator of the customer's tenant, or is that administrator.
2. `/onboard` checks the token, makes an unguessable `state`, keeps it in Redis (single use, short
   TTL, with the options) and redirects to
   `{MONITOR_AUTHORITY_URL}/organizations/v2.0/adminconsent?client_id=..&scope={graph}/.default&
   redirect_uri={MONITOR_PUBLIC_URL}/onboard/callback&state=..`. `organizations` keeps personal
   Microsoft accounts out (the v2 page advises against `common`).
3. Microsoft sends the browser back to the callback with `admin_consent=True&tenant=..&state=..`, or
   with `error` and `error_description`. The callback takes the `state` (GETDEL: a replay finds
   nothing), checks that it comes back to the browser it was given to, and explains any error.
4. A consented tenant is validated (token, `/organization`, one probe per permission) and only then
   saved; its first sync and subscriptions are enqueued, and the page lists every permission as
   granted or missing with what it is needed for.

Binding the flow to the operator's browser: the callback is a top-level redirect from Microsoft, so
it cannot carry the operator token (and must not: the token would then sit in Microsoft's logs and
the browser history twice). `/onboard` sets a random cookie whose SHA-256 is stored with the
`state`, and the callback requires it. The cookie is `Secure` and `HttpOnly`, scoped to `/onboard`,
lives as long as the state, and is `SameSite=Lax`: `Strict` would withhold it on the cross-site
redirect back from Microsoft, which is the one request that needs it. A `state` copied out of the
browser is therefore useless elsewhere, and a forged one matches nothing. The cookie is named after
the state, so two onboardings in one browser don't overwrite each other's.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import logging
import re
import secrets
from typing import Any
from urllib.parse import urlencode

import orjson
from aiohttp import web
from pydantic import ValidationError

from monitor.app import Runtime
from monitor.errors import ConfigError, MonitorError
from monitor.graph.auth import AuthError
from monitor.keys import onboard_state
from monitor.model.types import JsonObject
from monitor.operator import NO_STORE, refusal
from monitor.permission_check import PermissionReport
from monitor.permissions import NEEDED_FOR
from monitor.redis_conn import REDIS_UNAVAILABLE
from monitor.settings import TenantConfig
from monitor.tenants import Onboarded, OnboardingRefused, onboard

log = logging.getLogger(__name__)

CALLBACK_PATH = "/onboard/callback"
# The tenant of personal Microsoft accounts; consent "for" it is not an organization's.
CONSUMER_TENANT = "9188040d-6c67-4c5b-b112-36a304b66dad"
OPTIONS = ("account_name", "description", "polling_interval", "tag_account_name")
# Stands in for the tenant id while the options are checked, before Microsoft says which tenant.
_PLACEHOLDER = "00000000-0000-0000-0000-000000000000"
_STATE = re.compile(r"^[A-Za-z0-9_-]{20,100}$")
_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


def _digest(value: str) -> str:
    # A cookie that is not UTF-8 arrives as surrogates (aiohttp): hashed as the bytes it was sent as.
    return hashlib.sha256(value.encode("utf-8", "surrogateescape")).hexdigest()


def cookie_name(state: str) -> str:
    return f"monitor_onboard_{_digest(state)[:16]}"


def routes(runtime_key: web.AppKey[Runtime]) -> list[web.RouteDef]:
    """The two routes, reading the runtime under `runtime_key` of the application."""

    async def start(request: web.Request) -> web.StreamResponse:
        return await start_onboarding(request, request.app[runtime_key])

    async def callback(request: web.Request) -> web.StreamResponse:
        return await finish_onboarding(request, request.app[runtime_key])

    return [web.get("/onboard", start), web.get(CALLBACK_PATH, callback)]


# -- /onboard -----------------------------------------------------------------------------------


async def start_onboarding(request: web.Request, runtime: Runtime) -> web.StreamResponse:
    settings = runtime.settings
    refused = refusal(settings, request, query=True)
    if refused is not None:
        return refused
    if settings.public_url is None or not settings.client_id:
        return page(503, "Onboarding is not set up", "<p>Set MONITOR_PUBLIC_URL and MONITOR_CLIENT_ID.</p>")
    options = {name: request.query[name] for name in OPTIONS if request.query.get(name)}
    try:
        TenantConfig.model_validate({"id": _PLACEHOLDER, **options})
    except ValidationError as exc:
        return page(400, "Invalid tenant options", f"<p>{html.escape(_validation_message(exc))}</p>")
    state, nonce = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    record = {"binding": _digest(nonce), "created_at": runtime.clock().isoformat(), "options": options}
    ttl = int(settings.onboard_state_ttl)
    try:
        await runtime.redis.set(onboard_state(state), orjson.dumps(record), ex=ttl)
    except REDIS_UNAVAILABLE:
        return page(503, "Try again in a moment", "<p>The state store (Redis) is not answering.</p>")
    query = urlencode(
        {
            "client_id": settings.client_id,
            "scope": f"{settings.graph_url}/.default",
            "redirect_uri": f"{settings.public_url}{CALLBACK_PATH}",
            "state": state,
        }
    )
    response = web.Response(
        status=302,
        headers={**NO_STORE, "Location": f"{settings.authority_url}/organizations/v2.0/adminconsent?{query}"},
    )
    response.set_cookie(
        cookie_name(state), nonce, max_age=ttl, path="/onboard", secure=True, httponly=True, samesite="Lax"
    )
    log.info("onboarding started; waiting for the administrator's consent")
    return response


def _validation_message(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())


# -- /onboard/callback --------------------------------------------------------------------------


async def finish_onboarding(request: web.Request, runtime: Runtime) -> web.StreamResponse:
    query = request.query
    try:
        record = await _take_state(request, runtime, query.get("state", ""))
    except REDIS_UNAVAILABLE:
        return page(503, "Try again in a moment", "<p>The state store (Redis) is not answering.</p>")
    if isinstance(record, web.Response):
        return record
    if "error" in query:
        title, text = explain_error(query.get("error", ""), query.get("error_description", ""))
        log.warning("onboarding: consent refused: %s", query.get("error", "")[:100])
        raw = html.escape(f"{query.get('error', '')}: {query.get('error_description', '')}"[:600])
        return _forget(page(400, title, f"<p>{html.escape(text)}</p><p class=raw>Microsoft said: {raw}</p>"), query)
    tenant_id = query.get("tenant", "")
    problem = _check_consent(query.get("admin_consent", ""), tenant_id)
    if problem is not None:
        return _forget(page(400, "Consent not usable", f"<p>{html.escape(problem)}</p>"), query)
    tenant = TenantConfig.model_validate({"id": tenant_id, **record.get("options", {})})
    return _forget(await _onboard_page(runtime, tenant), query)


async def _take_state(request: web.Request, runtime: Runtime, state: str) -> JsonObject | web.Response:
    """The state's record, consumed; or the refusal page for a forged, expired, replayed or foreign
    state."""
    raw = await runtime.redis.getdel(onboard_state(state)) if _STATE.match(state) else None
    if raw is None:
        log.warning("onboarding callback with an unknown, expired or used state")
        return page(
            400,
            "This consent link is not valid",
            "<p>The <code>state</code> of this request is unknown, expired or already used, so it was not "
            "started here or it was completed before. Nothing was saved. Start again from "
            "<code>/onboard</code>.</p>",
        )
    record: JsonObject = orjson.loads(raw)
    cookie = request.cookies.get(cookie_name(state), "")
    if not cookie or not hmac.compare_digest(_digest(cookie), str(record.get("binding", ""))):
        log.warning("onboarding callback from a browser that did not start the onboarding")
        return page(
            400,
            "This consent was started in another browser",
            "<p>The consent must come back to the browser that opened <code>/onboard</code> (its cookie is "
            "missing). Nothing was saved. Start again from <code>/onboard</code> in this browser.</p>",
        )
    return record


def _check_consent(admin_consent: str, tenant_id: str) -> str | None:
    if admin_consent.lower() != "true":
        return "Microsoft did not report an admin consent (admin_consent is not True). Nothing was saved."
    if not _GUID.match(tenant_id):
        return "Microsoft did not name a tenant (tenant is not a directory GUID). Nothing was saved."
    if tenant_id.lower() == CONSUMER_TENANT:
        return (
            "The consent came from the personal Microsoft accounts tenant, which is not an organization. Sign in "
            "with a work or school account that is a Global Administrator of the organization's tenant. "
            "Nothing was saved."
        )
    return None


async def _onboard_page(runtime: Runtime, tenant: TenantConfig) -> web.Response:
    try:
        done = await onboard(runtime, tenant)
    except AuthError as exc:
        return page(
            502,
            "Consent given, but no token yet",
            f"<p>Microsoft recorded the consent, but refused a token for tenant {html.escape(tenant.id)}: "
            f"{html.escape(str(exc))}</p><p>Directory changes can take a minute to replicate: start again "
            "from <code>/onboard</code> shortly. Nothing was saved.</p>",
        )
    except OnboardingRefused as refused:
        return page(
            422,
            "Tenant not saved: the directory cannot be read",
            f"<p>{html.escape(str(refused))}. Grant these application permissions to the app registration, "
            "then consent again.</p>" + permission_table(refused.report),
        )
    except ConfigError as exc:
        return page(400, "Tenant not saved", f"<p>{html.escape(str(exc))}</p>")
    except MonitorError as exc:
        return page(502, "Tenant not saved", f"<p>{html.escape(str(exc))}</p>")
    return page(200, "Tenant connected", _success_body(done))


def _success_body(done: Onboarded) -> str:
    name = html.escape(done.tenant.account_name or done.tenant.id)
    missing = [v for v in done.report.verdicts if v.state == "missing"]
    gaps = (
        f"<p>{len(missing)} permission(s) missing: monitor runs without that data until an administrator "
        "grants them and consents again.</p>"
        if missing
        else "<p>Every permission is granted.</p>"
    )
    return (
        f"<p><b>{name}</b> (tenant <code>{html.escape(done.tenant.id)}</code>) is watched now: "
        f"first sync started ({html.escape(', '.join(done.jobs))}).</p>{gaps}{permission_table(done.report)}"
    )


def permission_table(report: PermissionReport) -> str:
    rows = "".join(
        f"<tr class={v.state.replace(' ', '-')}><td><code>{html.escape(v.name)}</code></td>"
        f"<td>{html.escape(v.state)}</td><td>{html.escape(NEEDED_FOR.get(v.name, v.needed_for))}</td>"
        f"<td>{html.escape(v.detail)}</td></tr>"
        for v in report.verdicts
    )
    return (
        "<table><thead><tr><th>Permission</th><th>State</th><th>Needed for</th><th>Detail</th></tr></thead>"
        f"<tbody>{rows}</tbody></table>"
    )


# AADSTS codes met at the consent screen, in words an operator can act on.
_PERSONAL = ("AADSTS500200", "AADSTS50020", "AADSTS90072")
_NOT_ADMIN = ("AADSTS90094", "AADSTS90008", "AADSTS65001")
_DECLINED = ("AADSTS65004",)


def explain_error(error: str, description: str) -> tuple[str, str]:
    """(title, explanation) for the `error` / `error_description` of a consent callback."""
    text = description.lower()
    if any(code.lower() in text for code in _PERSONAL) or "personal microsoft account" in text:
        return (
            "A personal Microsoft account cannot connect a tenant",
            "The account that signed in is a personal Microsoft account (outlook.com, hotmail.com, live.com) or "
            "belongs to no organization. Sign in with a work or school account that is a Global Administrator "
            "of the tenant to connect. Nothing was saved.",
        )
    if any(code.lower() in text for code in _NOT_ADMIN):
        return (
            "An administrator must consent",
            "The account that signed in is not allowed to grant admin consent for the organization. Ask a "
            "Global Administrator (or Privileged Role Administrator) to open this onboarding. Nothing was saved.",
        )
    if any(code.lower() in text for code in _DECLINED) or error in ("access_denied", "permission_denied"):
        return (
            "Consent was declined",
            "The administrator declined or cancelled the consent, so monitor has no access to the tenant. "
            "Nothing was saved. Start again from /onboard to retry.",
        )
    return ("Microsoft refused the consent", f"The consent did not complete ({error or 'unknown error'}).")


def _forget(response: web.Response, query: Any) -> web.Response:
    """Clear the flow's cookie: the state is used up, whatever the outcome."""
    state = query.get("state", "")
    if state:
        response.del_cookie(cookie_name(state), path="/onboard")
    return response


_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}"
    "table{border-collapse:collapse;width:100%}td,th{border-bottom:1px solid #ddd;padding:.3rem;text-align:left}"
    "tr.missing td:nth-child(2){color:#b00;font-weight:bold}tr.granted td:nth-child(2){color:#070}"
    ".raw{color:#666;font-size:.9em}"
)


def page(status: int, title: str, body: str) -> web.Response:
    """A small self-contained HTML page (no scripts, nothing loaded from elsewhere)."""
    document = (
        f"<!doctype html><html lang=en><meta charset=utf-8><title>monitor: {html.escape(title)}</title>"
        f"<style>{_STYLE}</style><h1>{html.escape(title)}</h1>{body}</html>"
    )
    headers = {
        **NO_STORE,
        "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
        "X-Frame-Options": "DENY",
    }
    return web.Response(status=status, text=document, content_type="text/html", headers=headers)
