"""The subscription part of the control API, and deliveries from `python -m monitor.simulator`."""

from __future__ import annotations

import asyncio
import json
import ssl
import sys
from pathlib import Path
from typing import Any

import aiohttp

from monitor.simulator import CertificateAuthority
from monitor.simulator.graph_app import Simulator
from monitor.simulator.tenant import SimTenant
from tests.simulator.subscription_support import call, subscribe, subscription_body
from tests.simulator.support import TENANT_ID, GraphClient
from tests.simulator.webhook import Webhook, serve_webhook


async def _control(
    session: aiohttp.ClientSession, url: str, method: str, path: str, body: Any = None
) -> tuple[int, Any]:
    async with session.request(method, f"{url}/_sim{path}", json=body) as response:
        payload = await response.json() if response.status != 204 else None
        return response.status, payload


async def test_control_api_for_subscriptions(
    graph: GraphClient, sim: Simulator, tenant: SimTenant, webhook: Webhook
) -> None:
    session, url = graph.session, graph.url
    sub = await subscribe(graph, webhook, "/users", lifecycleNotificationUrl=f"{webhook.url}/lifecycle")
    status, listed = await _control(session, url, "GET", f"/subscriptions?tenant_id={TENANT_ID}")
    assert status == 200
    assert [(s["id"], s["clientState"], s["tenantId"]) for s in listed] == [
        (sub["id"], "client-state-secret", TENANT_ID)
    ]
    assert (await _control(session, url, "GET", "/subscriptions?tenant_id=elsewhere"))[1] == []

    status, knobs = await _control(session, url, "PATCH", "/delivery", {"shuffle": True, "members_delta": True})
    assert (status, knobs["shuffle"], knobs["members_delta"]) == (200, True, True)
    assert (await _control(session, url, "GET", "/delivery"))[1] == knobs
    assert (await _control(session, url, "PATCH", "/delivery", {"duplicate_rate": 2}))[0] == 400
    assert (await _control(session, url, "PATCH", "/delivery", {"no_such_knob": 1}))[0] == 400

    assert (await _control(session, url, "POST", f"/subscriptions/{sub['id']}/lifecycle", {"event": "missed"}))[
        0
    ] == 204
    assert (await _control(session, url, "POST", f"/subscriptions/{sub['id']}/lifecycle", {"event": "nope"}))[0] == 400
    assert (await _control(session, url, "POST", "/subscriptions/unknown/lifecycle", {"event": "missed"}))[0] == 404
    tenant.add_user(displayName="Ada")
    assert await _control(session, url, "POST", "/delivery/drain", {"timeout": 30}) == (200, {"idle": True})
    status, records = await _control(session, url, "GET", "/deliveries?kind=lifecycle&payload=true")
    assert status == 200
    assert [(r["outcome"], r["items"], r["payload"]["value"][0]["lifecycleEvent"]) for r in records] == [
        ("delivered", 1, "missed")
    ]
    status, records = await _control(session, url, "GET", "/deliveries?outcome=delivered")
    assert sorted(r["kind"] for r in records) == ["lifecycle", "notification", "validation", "validation"]
    assert "payload" not in records[0]
    assert await _control(session, url, "GET", "/delivery/slow") == (200, {})
    assert (await _control(session, url, "DELETE", "/deliveries"))[0] == 204
    assert len(sim.subscriptions.deliveries) == 0

    assert (await _control(session, url, "DELETE", f"/subscriptions/{sub['id']}"))[0] == 204
    assert (await _control(session, url, "DELETE", f"/subscriptions/{sub['id']}"))[0] == 404
    assert (await call(graph, "GET", f"/v1.0/subscriptions/{sub['id']}"))[0] == 404


async def test_control_api_trusts_another_ca(graph: GraphClient, sim: Simulator) -> None:
    stranger = CertificateAuthority.create("webhook CA")
    async with serve_webhook(stranger.issue_server_context()) as hook:
        assert (await call(graph, "POST", "/v1.0/subscriptions", subscription_body(hook)))[0] == 400
        pem = stranger.certificate_pem.decode()
        assert (await _control(graph.session, graph.url, "POST", "/delivery/trust", {"pem": pem}))[0] == 204
        assert (await call(graph, "POST", "/v1.0/subscriptions", subscription_body(hook)))[0] == 201


async def test_python_dash_m_delivers_notifications(tmp_path: Path) -> None:
    webhook_ca = CertificateAuthority.create("webhook CA")
    bundle = webhook_ca.write_bundle(tmp_path / "webhook-ca.pem")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "monitor.simulator",
        "--users",
        "3",
        "--groups",
        "1",
        "--memberships",
        "0",
        "--client-secret",
        "shh",
        "--extra-ca",
        str(bundle),
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        ready = json.loads(await asyncio.wait_for(process.stdout.readline(), 60))
        context = ssl.create_default_context(cafile=ready["ca_bundle"])
        async with (
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session,
            serve_webhook(webhook_ca.issue_server_context()) as hook,
        ):
            graph = GraphClient(session, ready["url"])
            assert "access_token" in await graph.login(ready["tenant_id"], ready["client_id"], "shh")
            sub = await subscribe(graph, hook, "/users")
            tenant = ready["tenant_id"]
            _, created = await _control(session, graph.url, "POST", f"/tenants/{tenant}/users", {"displayName": "Ada"})
            assert (await _control(session, graph.url, "POST", "/delivery/drain"))[1] == {"idle": True}
            assert [(item["subscriptionId"], item["resourceData"]["id"]) for item in hook.items()] == [
                (sub["id"], created["id"])
            ]
    finally:
        process.terminate()
        assert await process.wait() == 0
