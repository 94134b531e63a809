"""The control API (out-of-process use) and `python -m monitor.simulator`."""

from __future__ import annotations

import asyncio
import json
import ssl
import sys
from typing import Any

import aiohttp

from monitor.simulator.graph_app import Simulator
from monitor.simulator.tenant import SimTenant
from tests.simulator.support import TENANT_ID, GraphClient


async def _control(graph: GraphClient, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    async with graph.session.request(method, f"{graph.url}/_sim{path}", json=body) as response:
        payload = await response.json() if response.status != 204 else None
        return response.status, payload


async def test_control_api_drives_the_tenant(graph: GraphClient, sim: Simulator, tenant: SimTenant) -> None:
    _, delta_link = await graph.round("/v1.0/users/delta")
    status, created = await _control(graph, "POST", f"/tenants/{TENANT_ID}/users", {"displayName": "Ada"})
    assert status == 200
    ada = created["id"]
    assert (await _control(graph, "PATCH", f"/tenants/{TENANT_ID}/users/{ada}", {"jobTitle": "CTO"}))[1] == {
        "changed": ["jobTitle"]
    }
    _, group = await _control(graph, "POST", f"/tenants/{TENANT_ID}/groups", {"displayName": "G"})
    assert (await _control(graph, "POST", f"/tenants/{TENANT_ID}/groups/{group['id']}/members", {"id": ada}))[0] == 204
    assert tenant.members[group["id"]] == {ada: "#microsoft.graph.user"}
    objects, _ = await graph.round(delta_link)
    assert [obj["id"] for obj in objects] == [ada]
    assert (await _control(graph, "DELETE", f"/tenants/{TENANT_ID}/users/{ada}?hard=true"))[0] == 204
    assert ada not in tenant.users and tenant.members[group["id"]] == {}
    assert (await _control(graph, "DELETE", f"/tenants/{TENANT_ID}/users/{ada}"))[0] == 404
    assert (await _control(graph, "PATCH", f"/tenants/{TENANT_ID}/users/x", {"nope": 1}))[0] == 400


async def test_control_api_knobs(graph: GraphClient, sim: Simulator, tenant: SimTenant) -> None:
    status, result = await _control(
        graph, "POST", f"/tenants/{TENANT_ID}/seed", {"users": 30, "groups": 3, "memberships": 40}
    )
    assert (status, result["users"]) == (200, 30)
    fault = {"method": "GET", "path_regex": "/v1.0/organization", "status": 503, "headers": {"Retry-After": "1"}}
    assert (await _control(graph, "POST", "/faults", fault))[0] == 200
    assert (await graph.get("/v1.0/organization"))[0] == 503
    _, count = await _control(graph, "GET", "/requests/count?path_regex=organization&status=503")
    assert count == {"count": 1}
    await _control(graph, "POST", f"/tenants/{TENANT_ID}/expire-delta-tokens", {"resource": "users", "mode": "410"})
    assert tenant.delta_tokens.refusal("users", tenant.delta_tokens.serial) == "410"
    before = sim.clock.timestamp()
    _, moved = await _control(graph, "POST", "/clock/advance", {"days": 1})
    assert moved["timestamp"] == before + 86400
    await _control(graph, "PATCH", f"/tenants/{TENANT_ID}", {"premium": False, "delta": {"page_size": 7}})
    assert (tenant.premium, tenant.delta.page_size) == (False, 7)
    _, tokens = await _control(graph, "GET", "/tokens")
    assert sum(tokens["issued"][TENANT_ID].values()) >= 1
    assert sim.count("/_sim") == 0  # control calls are not logged


async def test_python_dash_m_runs_a_seeded_simulator() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "monitor.simulator",
        "--users",
        "50",
        "--groups",
        "5",
        "--memberships",
        "100",
        "--client-secret",
        "shh",
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        ready = json.loads(await asyncio.wait_for(process.stdout.readline(), 60))
        context = ssl.create_default_context(cafile=ready["ca_bundle"])
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session:
            graph = GraphClient(session, ready["url"])
            assert "access_token" in await graph.login(ready["tenant_id"], ready["client_id"], "shh")
            objects, _ = await graph.round("/v1.0/users/delta")
            assert len(objects) == 50
    finally:
        process.terminate()
        assert await process.wait() == 0
