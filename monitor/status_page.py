"""The status page: `GET /status` as HTML for a browser, beside the JSON that API clients get.

It shows what `monitor status` computes (`monitor.status`), nothing computed a second time: per
tenant the sources' last rounds and their age, subscriptions and their expiry, the sinks' cursors,
alert rules and recent alerts, JupiterOne publishing and its lag, drift when the status carries it,
permissions; the hint queue every worker reads, and the workers alive. Rendered on the server with
no script and nothing loaded from elsewhere. Every value is escaped, and the Content-Security-Policy
lets no script run and nothing load (only the page's own stylesheet, by its hash), so a hostile
tenant or group name is shown as text and cannot become markup.

Signing in from a browser, which cannot add an `Authorization` header: an unauthenticated browser
gets a form that POSTs the operator token to `/status/login` (in the body, never in a URL, so it
stays out of history and access logs). The right token earns a session cookie holding an expiry and
an HMAC-SHA256 of it keyed with the operator token: the token itself is not in the cookie, nothing is
stored server-side, and changing the token ends every session. The cookie is `HttpOnly`,
`SameSite=Strict`, limited to `/status`, and `Secure` whenever the request came over HTTPS (directly
or, behind a TLS-terminating proxy, as `X-Forwarded-Proto: https` says).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime

import orjson
from aiohttp import web

from monitor.durations import format_duration
from monitor.model.types import JsonMapping
from monitor.permission_check import render_permission
from monitor.settings import Settings

SESSION_COOKIE = "monitor_status"
SESSION_TTL = 8 * 3600
SESSION_PATH = "/status"
LOGIN_PATH = "/status/login"
# A subscription expiring sooner than this is shown as a warning: renewal starts days before
# (MONITOR_SUBSCRIPTION_RENEW_BEFORE), so one this close has missed its renewals.
EXPIRY_WARNING = 86400
ERRORS_SHOWN = 5

STYLE = (
    "body{font:14px/1.45 system-ui,sans-serif;margin:0;color:#1d2330;background:#f3f5f8}"
    "header{background:#1d2330;color:#fff;padding:.8rem 1.5rem}header h1{margin:0;font-size:1.3rem}"
    "main{padding:1rem 1.5rem;max-width:90rem}"
    "section{background:#fff;border:1px solid #d8dde6;border-radius:6px;padding:.6rem 1rem;margin:0 0 1rem}"
    "h2{font-size:1.15rem;margin:.3rem 0 .6rem}h3{font-size:.95rem;margin:.9rem 0 .3rem;color:#3a4458}"
    "table{border-collapse:collapse;width:100%;margin:.2rem 0}"
    "th,td{border-bottom:1px solid #e6e9ef;padding:.25rem .5rem;text-align:left;vertical-align:top}"
    "th{font-weight:600;color:#3a4458;background:#f7f8fa}td.n{text-align:right;font-variant-numeric:tabular-nums}"
    "dl.figures{display:flex;flex-wrap:wrap;gap:.6rem;margin:0}"
    "dl.figures div{border:1px solid #e6e9ef;border-radius:4px;padding:.3rem .7rem;min-width:8rem}"
    "dt{font-size:.8rem;color:#5b6578}dd{margin:0;font-size:1.1rem;font-weight:600}"
    "code{font-size:.85em;color:#3a4458}.muted{color:#6b7486}"
    ".ok{color:#17713a}.warn{color:#9a5b00;font-weight:600}.bad{color:#b3261e;font-weight:600}"
    "form{display:flex;gap:.5rem;align-items:center}input{font:inherit;padding:.3rem;min-width:20rem}"
)
_STYLE_HASH = base64.b64encode(hashlib.sha256(STYLE.encode()).digest()).decode()
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Vary": "Accept, Cookie",
    "Content-Security-Policy": (
        f"default-src 'none'; style-src 'sha256-{_STYLE_HASH}'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
}


# -- who is asking, and are they signed in ---------------------------------------------------------


def wants_html(request: web.Request) -> bool:
    """Whether the client prefers HTML to JSON, as a browser's `Accept` says. Without an `Accept`,
    with `*/*` or with `application/json` preferred, the answer stays JSON (API clients, scripts)."""
    preference = {"html": 0.0, "json": 0.0}
    for part in request.headers.get("Accept", "").split(","):
        media, *parameters = (piece.strip().lower() for piece in part.split(";"))
        quality = 1.0
        for parameter in parameters:
            name, _, value = parameter.partition("=")
            if name.strip() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        kind = {"text/html": "html", "application/xhtml+xml": "html", "application/json": "json"}.get(media)
        if kind is not None:
            preference[kind] = max(preference[kind], quality)
    return preference["html"] > 0 and preference["html"] >= preference["json"]


def session_value(settings: Settings, now: float) -> str:
    expires = int(now) + SESSION_TTL
    return f"{expires}.{_session_mac(settings, expires)}"


def signed_in(settings: Settings, request: web.Request, now: float) -> bool:
    """Whether the request carries a session cookie made with the current operator token and not
    yet expired (compared in constant time)."""
    if settings.operator_token is None:
        return False
    expires, _, mac = request.cookies.get(SESSION_COOKIE, "").partition(".")
    if not expires.isdigit() or int(expires) <= now:
        return False
    return hmac.compare_digest(mac.encode(), _session_mac(settings, int(expires)).encode())


def _session_mac(settings: Settings, expires: int) -> str:
    assert settings.operator_token is not None
    key = settings.operator_token.get_secret_value().encode()
    return hmac.new(key, f"monitor status session {expires}".encode(), hashlib.sha256).hexdigest()


def start_session(response: web.StreamResponse, request: web.Request, settings: Settings, now: float) -> None:
    secure = request.secure or request.headers.get("X-Forwarded-Proto", "").lower() == "https"
    response.set_cookie(
        SESSION_COOKIE,
        session_value(settings, now),
        max_age=SESSION_TTL,
        path=SESSION_PATH,
        secure=secure,
        httponly=True,
        samesite="Strict",
    )


# -- pages ------------------------------------------------------------------------------------------


def html_response(status: int, document: str, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status, text=document, content_type="text/html", headers={**PAGE_HEADERS, **(headers or {})}
    )


def sign_in_page(message: str = "") -> str:
    note = f"<p class=bad>{_e(message)}</p>" if message else ""
    body = (
        f"<section><h2>Sign in</h2>{note}<p>The status page needs the operator token "
        "(<code>MONITOR_OPERATOR_TOKEN</code>). It is sent once, in this form; the browser then keeps a "
        f"session cookie for {format_duration(SESSION_TTL)}.</p>"
        f'<form method=post action="{LOGIN_PATH}"><label for=token>Operator token</label>'
        "<input id=token name=token type=password autocomplete=current-password required autofocus>"
        "<button type=submit>Sign in</button></form></section>"
    )
    return _document("monitor status: sign in", body)


def error_page(message: str) -> str:
    return _document("monitor status", f"<section><h2>Status unavailable</h2><p class=bad>{_e(message)}</p></section>")


def status_page(tenants: Sequence[JsonMapping], deployment: JsonMapping, now: datetime) -> str:
    """The whole page for `monitor.status.all_statuses` and `deployment_status`."""
    generated = now.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    parts = [
        f"<p class=muted>Generated {_e(generated)} for {len(tenants)} tenant(s). Reload for fresh figures.</p>",
        _hints_section(deployment.get("hints") or {}),
        _workers_section(deployment.get("workers") or []),
    ]
    parts += [_tenant_section(status) for status in tenants]
    if not tenants:
        parts.append("<section><p>No tenant is watched yet.</p></section>")
    return _document("monitor status", "".join(parts))


def _document(title: str, body: str) -> str:
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        "<meta name=viewport content='width=device-width,initial-scale=1'>"
        f"<title>{_e(title)}</title><style>{STYLE}</style></head>"
        f"<body><header><h1>{_e(title)}</h1></header><main>{body}</main></body></html>"
    )


def _hints_section(hints: JsonMapping) -> str:
    age = float(hints.get("oldest_age_seconds") or 0)
    figures = _figures(
        [
            ("hints-length", "queued", _grouped(hints.get("length", 0)), ""),
            ("hints-pending", "taken by a worker", _grouped(hints.get("pending", 0)), ""),
            ("hints-oldest", "oldest waiting", format_duration(age) if age else "none", "warn" if age > 600 else ""),
        ]
    )
    return f"<section id=hints><h2>Hint queue</h2>{figures}</section>"


def _workers_section(workers: Sequence[JsonMapping]) -> str:
    figures = _figures([("workers-live", "live workers", _grouped(len(workers)), "ok" if workers else "bad")])
    if not workers:
        detail = "<p class=bad>No worker has sent a heartbeat lately: queued hints wait for one.</p>"
    else:
        rows = [[_e(w.get("name")), _e(w.get("last_heartbeat")), _ago(w.get("age_seconds"))] for w in workers]
        detail = _table(["worker", "last heartbeat", "ago"], rows, part="workers")
    return f"<section id=workers><h2>Workers</h2>{figures}{detail}</section>"


def _ago(seconds: float | None) -> str:
    return "" if seconds is None else _e(format_duration(max(0.0, float(seconds))))


def _tenant_section(status: JsonMapping) -> str:
    tenant = str(status.get("tenant", ""))
    name = status.get("account_name") or tenant
    log = status.get("change_log") or {}
    parts = [
        f"<h2>{_e(name)} <code>{_e(tenant)}</code></h2>",
        f"<p class=muted>{_e(status.get('description') or '')} Change log: {_number(log.get('records', 0))} "
        f"records, last seq {_number(log.get('last_seq', 0))}; Intune and sign-in sweeps "
        f"{_e(_interval(status.get('polling_interval')))}.</p>",
        _sources(status.get("sources") or {}),
        _subscriptions(status.get("subscriptions") or [], status.get("subscription_upkeep")),
        _sinks(status.get("sinks") or {}),
        _alerts(status.get("alerts") or {}),
        _jupiterone(status.get("jupiterone")),
    ]
    if status.get("drift"):
        parts.append(f"<h3>Drift</h3><div data-part=drift>{_generic(status['drift'])}</div>")
    parts.append(_permissions(status.get("permissions") or {}))
    return f"<section class=tenant data-tenant='{_e(tenant)}'>{''.join(parts)}</section>"


def _sources(sources: Mapping[str, JsonMapping]) -> str:
    rows = []
    for source, entry in sources.items():
        age = entry.get("last_round_age_seconds")
        token_age = entry.get("delta_token_age_seconds")
        rows.append(
            [
                _e(source),
                _e(entry.get("last_round_at") or "never"),
                _e(entry.get("kind") or ""),
                "" if age is None else _e(format_duration(float(age))),
                _number(entry.get("objects", "")),
                _number(entry.get("changes", "")),
                "" if token_age is None else _e(format_duration(float(token_age))),
                _source_state(entry),
            ]
        )
    header = ["source", "last round", "kind", "ago", "objects", "changes", "delta token age", "state"]
    return f"<h3>Sources</h3>{_table(header, rows, part='sources')}"


def _source_state(entry: JsonMapping) -> str:
    if entry.get("skipped"):
        return f"<span class=muted>skipped: {_e(entry['skipped'])}</span>"
    if entry.get("error"):
        return f"<span class=bad>failed {_e(entry.get('error_at', ''))}: {_e(entry['error'])}</span>"
    if not entry.get("last_round_at"):
        return "<span class=muted>never run</span>"
    partial = f" (skipped parts: {_e(entry['partial'])})" if entry.get("partial") else ""
    return f"<span class=ok>ok</span>{partial}"


def _subscriptions(subscriptions: Sequence[JsonMapping], upkeep: JsonMapping | None) -> str:
    rows = []
    for subscription in subscriptions:
        left = subscription.get("expires_in_seconds")
        if left is None:
            when = "<span class=muted>unknown</span>"
        elif left <= 0:
            when = "<span class=bad>EXPIRED</span>"
        else:
            when = f"<span class={'warn' if left < EXPIRY_WARNING else 'ok'}>{_e(format_duration(left))}</span>"
        rows.append(
            [_e(subscription.get("resource")), _e(subscription.get("expiration") or ""), when, _e(subscription["id"])]
        )
    table = (
        _table(["resource", "expires at", "expires in", "subscription id"], rows, part="subscriptions")
        if rows
        else "<p class=muted>No subscription (notifications off, or not made yet): timer rounds only.</p>"
    )
    return f"<h3>Subscriptions</h3>{table}{_upkeep(upkeep)}"


def _upkeep(upkeep: JsonMapping | None) -> str:
    if not upkeep:
        return ""
    done = [f"{what} {_e(upkeep[what])}" for what in ("created", "renewed", "adopted") if upkeep.get(what)]
    error = f" <span class=bad>failed: {_e(upkeep['error'])}</span>" if upkeep.get("error") else ""
    return (
        f"<p data-part=upkeep>Last subscription check {_e(upkeep.get('checked_at', ''))}"
        f"{': ' + '; '.join(done) if done else ''}{error}</p>"
    )


def _sinks(sinks: Mapping[str, JsonMapping]) -> str:
    if not sinks:
        return "<h3>Sinks</h3><p class=muted>No change-record sink configured.</p>"
    rows = []
    for name, entry in sinks.items():
        behind = int(entry.get("behind") or 0)
        others = {k: v for k, v in entry.items() if k not in ("cursor", "behind", "log_restart")}
        rows.append(
            [
                _e(name),
                _number(entry.get("cursor", 0)),
                f"<span class={'warn' if behind else 'ok'}>{_number(behind)}</span>",
                _restart_note(entry.get("log_restart")) + (_generic(others) if others else ""),
            ]
        )
    return f"<h3>Sinks</h3>{_table(['sink', 'delivered up to seq', 'records behind', 'details'], rows, part='sinks')}"


def _restart_note(note: JsonMapping | None) -> str:
    if not note:
        return ""
    return (
        f"<p class=warn data-part=log-restart>The change log started again (found {_e(note.get('at'))}): "
        f"this sink holds seq up to {_number(note.get('held_seq'))} of an earlier log, then the new log "
        f"from seq {_number(note.get('new_log_from_seq'))} (tenant removed and added back, or Redis lost its "
        "data).</p>"
    )


def _alerts(alerts: JsonMapping) -> str:
    if not alerts.get("rules"):
        return "<h3>Alerts</h3><p class=muted>No alert rule.</p>"
    names = ", ".join(str(name) for name in alerts.get("names", []))
    behind = int(alerts.get("behind") or 0)
    summary = (
        f"<p>{_number(alerts['rules'])} rule(s) ({_e(names)}), {_number(alerts.get('destinations', 0))} "
        f"destination(s), <span class={'warn' if behind else 'ok'}>{_number(behind)} records behind</span>.</p>"
    )
    rows = [_alert_row(alert) for alert in alerts.get("recent") or []]
    recent = (
        _table(["observed", "change", "rule", "group", "member"], rows, part="recent-alerts")
        if rows
        else "<p class=muted>No alert sent yet.</p>"
    )
    return f"<h3>Alerts</h3>{summary}{recent}"


def _alert_row(alert: JsonMapping) -> list[str]:
    group = alert.get("group") or {}
    member = alert.get("member") or {}
    if alert.get("change") == "mass_removal":
        who = f"{_number(alert.get('count', 0))} members"
    else:
        upn = member.get("userPrincipalName")
        who = _e(member.get("name") or member.get("id") or "") + (f" <code>{_e(upn)}</code>" if upn else "")
    return [
        _e(alert.get("observedAt", "")),
        _e(alert.get("change", "")),
        _e(alert.get("rule", "")),
        _e(group.get("name") or group.get("id") or ""),
        who,
    ]


def _jupiterone(j1: JsonMapping | None) -> str:
    if j1 is None:
        return "<h3>JupiterOne</h3><p class=muted>Publishing off (no <code>jupiterone</code> in MONITOR_SINK).</p>"
    lag = j1.get("lag_seconds")
    dirty = int(j1.get("dirty_scopes") or 0)
    figures = _figures(
        [
            ("j1-dirty", "dirty scopes", _grouped(dirty), "warn" if dirty else "ok"),
            ("j1-lag", "lag", "nothing confirmed yet" if lag is None else format_duration(float(lag)), ""),
            ("j1-success", "last confirmed upload", _epoch(j1.get("last_success_at")), ""),
            ("j1-in-flight", "jobs in flight", _grouped(len(j1.get("in_flight") or [])), ""),
            ("j1-invalid", "invalid objects left out", _grouped(j1.get("invalid_objects_left_out", 0)), ""),
        ]
    )
    parts = [f"<h3>JupiterOne</h3>{figures}"]
    if j1.get("last_error_at") is not None:
        parts.append(f"<p class=bad>Last error {_e(_epoch(j1['last_error_at']))}: {_e(j1.get('last_error'))}</p>")
    if j1.get("set_aside_scopes"):
        scopes = ", ".join(str(scope) for scope in j1["set_aside_scopes"])
        parts.append(f"<p class=warn>Refused by JupiterOne (retried when they change): {_e(scopes)}</p>")
    errors = [
        [_e(error.get("scope", "")), _e(error.get("key") or ""), _e(error.get("rule") or ""), _e(error.get("message"))]
        for error in (j1.get("errors") or [])[:ERRORS_SHOWN]
    ]
    if errors:
        parts.append(_table(["scope", "key", "rule", "message"], errors, part="j1-errors"))
    return "".join(parts)


def _permissions(permissions: Mapping[str, JsonMapping]) -> str:
    if not permissions:
        return ""
    items = []
    for name, entry in sorted(permissions.items()):
        line = render_permission(name, dict(entry))
        items.append(f"<li class={'bad' if 'MISSING' in line else 'ok'}>{_e(line)}</li>")
    return f"<h3>Permissions</h3><ul data-part=permissions>{''.join(items)}</ul>"


# -- small pieces -----------------------------------------------------------------------------------


def _figures(figures: Iterable[tuple[str, str, str, str]]) -> str:
    """Labelled figures: (id for tests and links, label, value, css class); value is escaped here."""
    cells = "".join(
        f"<div><dt>{_e(label)}</dt><dd data-figure={name} class='{css}'>{_e(value)}</dd></div>"
        for name, label, value, css in figures
    )
    return f"<dl class=figures>{cells}</dl>"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], *, part: str) -> str:
    """A table of cells that are HTML already (every value in them escaped by the caller)."""
    head = "".join(f"<th>{_e(column)}</th>" for column in header)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table data-part={part}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _generic(value: object, depth: int = 0) -> str:
    """Any JSON value as HTML: objects as key/value tables, lists of objects as tables. Used for data
    whose shape this page does not fix (drift reports, extra sink details)."""
    if depth > 3:
        return f"<code>{_e(orjson.dumps(value).decode())}</code>"
    if isinstance(value, Mapping):
        rows = "".join(
            f"<tr><th>{_e(key)}</th><td>{_generic(item, depth + 1)}</td></tr>" for key, item in value.items()
        )
        return f"<table>{rows}</table>" if rows else "<span class=muted>none</span>"
    if isinstance(value, list):
        if not value:
            return "<span class=muted>none</span>"
        if all(isinstance(item, Mapping) for item in value):
            columns = list(dict.fromkeys(key for item in value for key in item))
            rows_html = [[_generic(item.get(column, ""), depth + 1) for column in columns] for item in value]
            return _table(columns, rows_html, part="list")
        return "<ul>" + "".join(f"<li>{_generic(item, depth + 1)}</li>" for item in value) + "</ul>"
    return _e(value)


def _grouped(value: object) -> str:
    """A count with thousands separators (plain text, not escaped)."""
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value)


def _number(value: object) -> str:
    return _e(_grouped(value))


def _interval(seconds: float | None) -> str:
    return "disabled" if seconds is None else f"every {format_duration(float(seconds))}"


def _epoch(value: float | None) -> str:
    if value is None:
        return "never"
    return datetime.fromtimestamp(float(value), UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _e(value: object) -> str:
    """Escaped text for element content and quoted attributes (`&`, `<`, `>`, `"` and `'`)."""
    return html.escape("" if value is None else str(value), quote=True)
