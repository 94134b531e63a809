"""`GET /status` for people: the HTML status page, its sign-in, and what a real browser shows.

The browser test drives Debian's Chromium headless against the real app (HTTPS on 127.0.0.1, real
Redis, the simulated Graph and JupiterOne) after `Observed.scenario`, signs in through the form as
an operator would, reads the rendered DOM and leaves a screenshot in the test's folder (its path is
printed)."""

from __future__ import annotations

import json
import time
from datetime import datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from monitor.durations import format_duration
from monitor.graph.subscriptions import parse_graph_time
from monitor.keys import WORKER_HEARTBEAT_TTL, worker_heartbeat
from monitor.status_page import SESSION_COOKIE, SESSION_TTL, session_value, status_page
from tests.conftest import TENANT_ID
from tests.observe.browser import chromium
from tests.observe.conftest import ALERT_RULE, HOSTILE_GROUP, HOSTILE_NAME, OPERATOR_TOKEN, Observed

BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8"
BEARER = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
WORKER = "worker-<b>7</b>"

# What the page shows, read from the rendered DOM (DevTools evaluates this in the page).
READ_PAGE = """JSON.stringify({
  title: document.title,
  cookie: document.cookie,
  injected: document.querySelectorAll('script, img, b, i, [onerror], [onmouseover]').length,
  heading: document.querySelector('section.tenant h2').textContent,
  figures: Object.fromEntries([...document.querySelectorAll('[data-figure]')].map(
    e => [e.dataset.figure, e.textContent])),
  rows: Object.fromEntries([...document.querySelectorAll('table[data-part]')].map(t => [t.dataset.part,
    [...t.tBodies[0].rows].map(r => [...r.cells].map(c => c.textContent))])),
  upkeep: document.querySelector('[data-part=upkeep]').textContent,
  text: document.body.innerText,
})"""


async def test_an_operator_signs_in_and_sees_the_deployment_in_a_real_browser(
    observed: Observed, tmp_path: Path
) -> None:
    await observed.scenario()
    # A worker running now, as its heartbeat says (a name with markup, which must stay text).
    await observed.redis.set(worker_heartbeat(WORKER), observed.runtime.clock().isoformat(), ex=WORKER_HEARTBEAT_TTL)
    async with observed.client() as http, http.get(f"{observed.url}/status", headers=BEARER) as response:
        expected = (await response.json())["tenants"][0]

    async with chromium(tmp_path) as page:
        await page.open(f"{observed.url}/status")
        assert await page.evaluate("document.querySelector('form input[name=token]') !== null")
        assert TENANT_ID not in await page.evaluate("document.body.innerText")
        await page.type_into("#token", OPERATOR_TOKEN)
        await page.click_and_wait("button[type=submit]")
        shown = json.loads(await page.evaluate(READ_PAGE))
        cookies = (await page.send("Network.getCookies", urls=[f"{observed.url}/status"]))["cookies"]
        screenshot = await page.screenshot(tmp_path / "status-page.png")
    print(f"status page screenshot: {screenshot}")

    # The hostile names are text on the page, and nothing of them became an element or a script.
    assert shown["title"] == "monitor status" and shown["injected"] == 0
    assert shown["heading"] == f"{HOSTILE_NAME} {TENANT_ID}"
    [alert] = shown["rows"]["recent-alerts"]
    assert alert[1:] == ["member_added", ALERT_RULE, HOSTILE_GROUP, "Mallory <Hacker> mallory@contoso.example"]
    # The session cookie is out of reach of scripts and of other sites.
    assert shown["cookie"] == ""
    [cookie] = cookies
    assert (cookie["name"], cookie["path"], cookie["httpOnly"], cookie["secure"], cookie["sameSite"]) == (
        SESSION_COOKIE,
        "/status",
        True,
        True,
        "Strict",
    )
    assert OPERATOR_TOKEN not in cookie["value"]

    # The hint queue: the two hints left and the notification of the last change, none taken.
    assert (shown["figures"]["hints-length"], shown["figures"]["hints-pending"]) == ("3", "0")
    [(worker, last_heartbeat, _)] = shown["rows"]["workers"]
    assert (shown["figures"]["workers-live"], worker) == ("1", WORKER) and last_heartbeat.startswith("20")
    assert shown["figures"]["hints-oldest"] != "none"
    check_subscriptions(shown, observed)
    assert "created users,groups" in shown["upkeep"]
    sources = {row[0]: row for row in shown["rows"]["sources"]}
    assert (sources["users"][2], sources["users"][-1]) == ("delta", "ok")
    assert (sources["groups"][2], sources["groups"][-1]) == ("delta", "ok")
    assert sources["intune"][1] == "never"
    # The JSONL sink is one record behind (the last round was committed and not delivered).
    [sink] = shown["rows"]["sinks"]
    assert sink[0] == f"jsonl:{observed.tmp_path / 'changes.jsonl'}" and sink[2] == "1"
    assert sink[1] == str(expected["sinks"][sink[0]]["cursor"])
    # JupiterOne: what it has not confirmed, and why.
    assert shown["figures"]["j1-dirty"] == str(expected["jupiterone"]["dirty_scopes"]) != "0"
    assert "503" in shown["text"] and "Last error" in shown["text"]
    assert "User.Read.All: granted" in shown["text"]
    assert screenshot.stat().st_size > 10_000


def check_subscriptions(shown: dict[str, Any], observed: Observed) -> None:
    """Each subscription Graph holds for us, with its expiry as Graph set it."""
    ours = {s.resource: s for s in observed.sim.subscriptions.all() if s.notification_url.startswith(observed.url)}
    rows = {row[0]: row for row in shown["rows"]["subscriptions"]}
    assert set(rows) == set(ours) == {"/users", "/groups"}
    generated = datetime.fromisoformat(shown["text"].split("Generated ", 1)[1].split(" ", 1)[0])
    for resource, (_, expires_at, expires_in, subscription_id) in rows.items():
        assert subscription_id == ours[resource].id
        left = (parse_graph_time(expires_at) - generated).total_seconds()
        assert parse_graph_time(expires_at) == ours[resource].expires_at
        # The page was rendered within a second or two of the time it prints (seconds, truncated).
        assert expires_in in {format_duration(left - shift) for shift in range(-1, 4)}


async def test_api_clients_keep_json_and_browsers_get_html(observed: Observed) -> None:
    await observed.scenario()
    async with observed.client() as http:
        for accept in (None, "*/*", "application/json", "application/json, text/html;q=0.5"):
            headers = {**BEARER, **({"Accept": accept} if accept else {})}
            async with http.get(f"{observed.url}/status", headers=headers) as response:
                assert response.content_type == "application/json", accept
                body = await response.json()
        for accept in (BROWSER_ACCEPT, "text/html"):
            async with http.get(f"{observed.url}/status", headers={**BEARER, "Accept": accept}) as response:
                assert response.content_type == "text/html", accept
                assert "Accept" in response.headers["Vary"]
                policy = response.headers["Content-Security-Policy"]
                page = await response.text()
    [tenant] = body["tenants"]
    assert body["hints"]["length"] == 3 and tenant["alerts"]["recent"][0]["rule"] == ALERT_RULE
    assert tenant["subscription_upkeep"]["created"] == "users,groups"
    assert "script-src" not in policy and policy.startswith("default-src 'none'") and "frame-ancestors 'none'" in policy
    assert HOSTILE_NAME not in page and "&lt;script&gt;" in page


async def test_signing_in_with_the_form(observed: Observed) -> None:
    url = f"{observed.url}/status"
    async with observed.client() as http:
        async with http.get(url, headers={"Accept": BROWSER_ACCEPT}) as response:
            assert response.status == 401 and response.content_type == "text/html"
            assert 'action="/status/login"' in await response.text()
        async with http.get(url) as response:  # an API client without the token: as before
            assert response.status == 401 and response.content_type == "text/plain"
        async with http.post(f"{url}/login", data={"token": "not-the-token-at-all"}) as response:
            assert response.status == 401 and "not the operator token" in await response.text()
            assert SESSION_COOKIE not in response.cookies
        async with http.post(f"{url}/login", data={"token": OPERATOR_TOKEN}, allow_redirects=False) as response:
            assert response.status == 303 and response.headers["Location"] == "/status"
            set_cookie = response.headers["Set-Cookie"]
        for attribute in ("HttpOnly", "Path=/status", "SameSite=Strict", "Secure", f"Max-Age={SESSION_TTL}"):
            assert attribute in set_cookie
        async with http.get(url, headers={"Accept": BROWSER_ACCEPT}) as response:
            assert response.status == 200 and "Hint queue" in await response.text()
        async with http.get(url) as response:  # the session serves the JSON too
            assert response.status == 200 and "tenants" in await response.json()


@pytest.mark.parametrize("tamper", ["forged", "expired", "token changed"])
async def test_a_session_cookie_that_is_not_ours_is_refused(observed: Observed, tamper: str) -> None:
    settings = observed.runtime.settings
    cookie = session_value(settings, time.time())
    if tamper == "forged":
        cookie = cookie.split(".")[0] + "." + "0" * 64
    elif tamper == "expired":
        cookie = session_value(settings, time.time() - SESSION_TTL - 1)
    else:
        observed.runtime.settings = settings.model_copy(
            update={"operator_token": SecretStr("a-new-operator-token-0123456789")}
        )
    async with (
        observed.client() as http,
        http.get(
            f"{observed.url}/status", headers={"Accept": BROWSER_ACCEPT, "Cookie": f"{SESSION_COOKIE}={cookie}"}
        ) as response,
    ):
        assert response.status == 401 and 'action="/status/login"' in await response.text()


async def test_without_an_operator_token_the_page_does_not_exist(observed: Observed) -> None:
    observed.runtime.settings = observed.runtime.settings.model_copy(update={"operator_token": None})
    async with observed.client() as http:
        page = await http.get(f"{observed.url}/status", headers={"Accept": BROWSER_ACCEPT})
        login = await http.post(f"{observed.url}/status/login", data={"token": OPERATOR_TOKEN})
        assert (page.status, login.status) == (404, 404)
        assert SESSION_COOKIE not in login.cookies


class Markup(HTMLParser):
    """Every element and attribute of a document."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: set[str] = set()
        self.attributes: set[str] = set()
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        self.attributes |= {name for name, _ in attrs}

    def handle_data(self, data: str) -> None:
        self.text.append(data)


PAGE_TAGS = {"html", "head", "meta", "title", "style", "body", "header", "h1", "main", "p", "section", "h2", "h3"}
PAGE_TAGS |= {"code", "span", "table", "thead", "tbody", "tr", "th", "td", "dl", "div", "dt", "dd", "ul", "li"}
PAGE_ATTRIBUTES = {"id", "lang", "charset", "name", "content", "class", "data-tenant", "data-part", "data-figure"}


def test_every_value_on_the_page_is_escaped() -> None:
    evil = "<script>alert(1)</script><img src=x onerror=alert(2)>\"'&"
    status: dict[str, Any] = {
        "tenant": evil,
        "account_name": evil,
        "description": evil,
        "polling_interval": 3600.0,
        "change_log": {"records": 1, "last_seq": 1},
        "sources": {evil: {"last_round_at": evil, "kind": evil, "objects": evil, "error": evil, "error_at": evil}},
        "permissions": {evil: {"granted": False, "needed_for": evil, "detail": evil}},
        "subscriptions": [{"id": evil, "resource": evil, "expiration": evil, "expires_in_seconds": 10}],
        "subscription_upkeep": {"checked_at": evil, "renewed": evil, "error": evil},
        "sinks": {
            evil: {
                "cursor": 1,
                "behind": 0,
                evil: evil,
                "log_restart": {"at": evil, "held_seq": 9, "new_log_from_seq": 1},
            }
        },
        "alerts": {
            "rules": 1,
            "names": [evil],
            "destinations": 1,
            "behind": 0,
            "recent": [
                {
                    "observedAt": evil,
                    "change": evil,
                    "rule": evil,
                    "group": {"name": evil},
                    "member": {"name": evil, "userPrincipalName": evil},
                }
            ],
        },
        "jupiterone": {
            "dirty_scopes": 1,
            "lag_seconds": 5,
            "last_success_at": None,
            "last_error_at": 0,
            "last_error": evil,
            "errors": [{"scope": evil, "key": evil, "rule": evil, "message": evil}],
            "set_aside_scopes": [evil],
            "in_flight": [],
            "invalid_objects_left_out": 0,
        },
        "drift": {"missing_in_jupiterone": [{"key": evil, evil: evil}], "note": evil, "nested": [[evil]]},
    }
    deployment = {
        "hints": {"length": 1, "pending": 0, "oldest_age_seconds": 2},
        "workers": [{"name": evil, "last_heartbeat": evil, "age_seconds": 3}],
    }
    document = status_page([status], deployment, datetime.now())
    parsed = Markup()
    parsed.feed(document)
    assert parsed.tags <= PAGE_TAGS, parsed.tags - PAGE_TAGS
    assert parsed.attributes <= PAGE_ATTRIBUTES, parsed.attributes - PAGE_ATTRIBUTES
    # Every field came through as text (the parser unescaped it): 30 values, each shown whole.
    assert sum(chunk.count(evil) for chunk in parsed.text) >= 30
