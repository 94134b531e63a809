"""The operator's side of `monitor web`: the operator token, `GET /status`, and the middleware every
request passes (request ids, fresh tenant list).

The operator token (`MONITOR_OPERATOR_TOKEN`) guards `/onboard` and `/status`; `/metrics` takes the
metrics token (`MONITOR_METRICS_TOKEN`, what Prometheus is given) or the operator token. Scripts send
it as `Authorization: Bearer <token>`; a browser starting an onboarding cannot add a header, so
`/onboard` also takes it once as `?token=` (see `monitor.onboarding` for how the rest of that flow is
bound to the browser without the token), and a browser opening `/status` signs in with a form that
trades the token for a session cookie (`monitor.status_page`). It is compared in constant time, never
logged, never echoed. Without a configured token the endpoints it guards do not exist (404): an
unprotected status page or metrics would tell anyone the tenants watched.
"""

from __future__ import annotations

import hmac
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware
from pydantic import SecretStr

from monitor.app import Runtime
from monitor.logs import REQUEST_ID
from monitor.redis_conn import REDIS_UNAVAILABLE
from monitor.settings import Settings
from monitor.status import all_statuses, deployment_status
from monitor.status_page import (
    SESSION_PATH,
    error_page,
    html_response,
    sign_in_page,
    signed_in,
    start_session,
    status_page,
    wants_html,
)

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
REQUEST_ID_HEADER = "X-Request-Id"
# An incoming id is kept when it is short and plain (it ends up in logs); otherwise one is made.
_SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
NO_STORE = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}


def presented_token(request: web.Request, *, query: bool) -> str | None:
    header = request.headers.get("Authorization", "")
    if header[:7].lower() == "bearer ":
        return header[7:].strip()
    return request.query.get("token") if query else None


def operator_allowed(settings: Settings, presented: str | None) -> bool:
    return _matches(presented, settings.operator_token)


def _matches(presented: str | None, expected: SecretStr | None) -> bool:
    if expected is None or presented is None:
        return False
    # Constant time: the comparison must not reveal how much of a guess was right. aiohttp hands
    # header bytes that are not UTF-8 over as surrogates: encoded back as they came, they are simply
    # a wrong token.
    return hmac.compare_digest(presented.encode("utf-8", "surrogateescape"), expected.get_secret_value().encode())


def metrics_refusal(settings: Settings, request: web.Request) -> web.Response | None:
    """None when `GET /metrics` carries the metrics token (or the operator token); else the answer."""
    if settings.metrics_token is None and settings.operator_token is None:
        return web.Response(status=404, text="/metrics is off: set MONITOR_METRICS_TOKEN", headers=NO_STORE)
    presented = presented_token(request, query=False)
    if _matches(presented, settings.metrics_token) or _matches(presented, settings.operator_token):
        return None
    log.warning("%s: missing or wrong metrics token", request.path)
    headers = {**NO_STORE, "WWW-Authenticate": 'Bearer realm="monitor"'}
    return web.Response(status=401, text="the metrics token is missing or wrong", headers=headers)


def operator_endpoints_off() -> web.Response:
    return web.Response(status=404, text="operator endpoints are off: set MONITOR_OPERATOR_TOKEN", headers=NO_STORE)


def refusal(settings: Settings, request: web.Request, *, query: bool = False) -> web.Response | None:
    """None when the request carries the operator token; else the answer to give."""
    if settings.operator_token is None:
        return operator_endpoints_off()
    if operator_allowed(settings, presented_token(request, query=query)):
        return None
    log.warning("operator endpoint %s: missing or wrong operator token", request.path)
    headers = {**NO_STORE, "WWW-Authenticate": 'Bearer realm="monitor"'}
    return web.Response(status=401, text="the operator token is missing or wrong", headers=headers)


def status_handler(runtime_key: web.AppKey[Runtime]) -> Handler:
    """`GET /status`: what `monitor status --json` prints, for every tenant; read-only."""

    async def status(request: web.Request) -> web.StreamResponse:
        runtime = request.app[runtime_key]
        browser = wants_html(request)
        if not signed_in(runtime.settings, request, time.time()):
            refused = refusal(runtime.settings, request)
            if refused is not None:
                if browser and refused.status == 401:
                    return html_response(401, sign_in_page(), {"WWW-Authenticate": 'Bearer realm="monitor"'})
                return refused
        try:
            tenants, deployment = await all_statuses(runtime), await deployment_status(runtime)
        except REDIS_UNAVAILABLE as exc:
            if browser:
                return html_response(503, error_page(f"Redis: {exc}"))
            return web.json_response({"error": f"Redis: {exc}"}, status=503, headers=NO_STORE)
        if browser:
            return html_response(200, status_page(tenants, deployment, runtime.clock()))
        return web.json_response({"tenants": tenants, **deployment}, headers={**NO_STORE, "Vary": "Accept"})

    return status


def status_login_handler(runtime_key: web.AppKey[Runtime]) -> Handler:
    """`POST /status/login`: the status page's sign-in form (`monitor.status_page`). The right operator
    token earns a session cookie and a redirect to the page; a wrong one, the form again."""

    async def login(request: web.Request) -> web.StreamResponse:
        settings = request.app[runtime_key].settings
        if settings.operator_token is None:
            return operator_endpoints_off()
        token = (await request.post()).get("token")
        if not isinstance(token, str) or not operator_allowed(settings, token.strip()):
            log.warning("operator endpoint %s: wrong operator token", request.path)
            return html_response(401, sign_in_page("That is not the operator token."))
        response = web.Response(status=303, headers={**NO_STORE, "Location": SESSION_PATH})
        start_session(response, request, settings, time.time())
        return response

    return login


def request_ids() -> Middleware:
    """Middleware: honour an incoming `X-Request-Id` (or make one), echo it, and put it in every log
    record written while the request is served (`monitor.logs.REQUEST_ID`)."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        incoming = request.headers.get(REQUEST_ID_HEADER, "")
        request_id = incoming if _SAFE_ID.match(incoming) else uuid.uuid4().hex
        token = REQUEST_ID.set(request_id)
        try:
            try:
                response = await handler(request)
            except web.HTTPException as exc:
                exc.headers[REQUEST_ID_HEADER] = request_id
                raise
            response.headers[REQUEST_ID_HEADER] = request_id
            return response
        finally:
            REQUEST_ID.reset(token)

    return middleware


def fresh_tenants(runtime_key: web.AppKey[Runtime]) -> Middleware:
    """Middleware: re-read the tenant registry if it changed (one GET) before serving, so every web
    replica knows a tenant registered or removed a moment ago (`monitor.tenant_registry`)."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        runtime = request.app.get(runtime_key)
        if runtime is not None and request.path not in ("/healthz",):
            try:
                # At most once a second: a tenant registered a moment ago gets its subscriptions
                # seconds later anyway, and a removed tenant's late hint is dropped by the worker.
                await runtime.refresh_tenants(max_age=1.0)
            except REDIS_UNAVAILABLE as exc:
                # The handler reports Redis trouble its own way (the webhook answers 503).
                log.warning("cannot re-read the tenant registry: %s", exc)
        return await handler(request)

    return middleware
