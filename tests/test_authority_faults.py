"""A login authority that is down or throttling: retried like Graph, then one clear error. MSAL runs
for real against the simulator's HTTPS login endpoint, which the fault injector makes answer 503."""

from __future__ import annotations

from pathlib import Path

import pytest

from monitor.app import Runtime
from monitor.graph.auth import TokenProvider
from monitor.graph.client import GraphClient, GraphError
from monitor.settings import Settings
from monitor.simulator import RunningSimulator, Simulator
from monitor.sync import sync_tenant
from tests.conftest import TENANT_ID, RedisServer, simulator_settings
from tests.test_cli import run, sim_env

TOKEN = r"/oauth2/v2\.0/token"
DISCOVERY = r"/v2\.0/\.well-known/openid-configuration"


class Sleeps:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


async def test_an_authority_answering_503_is_retried_and_honours_retry_after(
    sim: Simulator, settings: Settings
) -> None:
    sim.faults.inject("GET", DISCOVERY, status=503, times=1)
    sim.faults.inject("POST", TOKEN, status=503, times=2, headers={"Retry-After": "7"}, body="Service Unavailable")
    sleeps = Sleeps()
    tokens = TokenProvider(settings, sleep=sleeps)
    async with GraphClient(settings, tokens) as graph:
        organization = await graph.get(TENANT_ID, "/v1.0/organization")

    assert organization.status == 200
    assert tokens.stats.retries == 3 and tokens.stats.by_reason["503"] == 3
    assert len(sleeps.delays) == 3 and sum(delay >= 7 for delay in sleeps.delays) == 2, "Retry-After honoured"
    assert sim.count(TOKEN, method="POST", status=503) == 2 and sim.count(TOKEN, method="POST", status=200) == 1


async def test_a_401_from_graph_fetches_a_token_again_once(sim: Simulator, settings: Settings) -> None:
    """A token can be revoked or expire early: Graph's 401 makes the client ask MSAL for a token again
    and send the request once more, at once and not counted as a retry; a second 401 is the answer."""
    sim.faults.inject("GET", r"/v1\.0/organization", status=401, times=1)
    sleeps = Sleeps()
    tokens = TokenProvider(settings)
    async with GraphClient(settings, tokens, sleep=sleeps) as graph:
        organization = await graph.get(TENANT_ID, "/v1.0/organization")
        assert organization.status == 200
        assert (tokens.acquired, graph.stats.requests, graph.stats.retries, sleeps.delays) == (2, 2, 0, [])

        sim.faults.inject("GET", r"/v1\.0/organization", status=401, times=2)
        with pytest.raises(GraphError) as refused:
            await graph.get(TENANT_ID, "/v1.0/organization")
    assert refused.value.status == 401
    assert (tokens.acquired, graph.stats.requests, graph.stats.retries, sleeps.delays) == (3, 4, 0, [])


@pytest.mark.usefixtures("redis")  # a flushed Redis: no delta link of an earlier test
async def test_an_authority_that_stays_down_is_one_clear_error_per_source(
    sim: Simulator, graph: RunningSimulator, redis_server: RedisServer, tmp_path: Path
) -> None:
    sim.faults.inject("POST", TOKEN, status=503, times=1000, headers={"Retry-After": "0"})
    settings = simulator_settings(graph, redis_server, graph_max_retries=2, sink=f"jsonl:{tmp_path / 'c.jsonl'}")
    runtime = await Runtime.open(settings)
    try:
        results, failures = await sync_tenant(runtime, settings.tenants[0])
    finally:
        await runtime.close()

    assert results == [] and {f.source for f in failures} == {"account", "users", "groups"}
    for failure in failures:
        assert f"the authority {graph.url} answered 503 (gave up after 2 retries)" in failure.reason
        assert "\n" not in failure.reason


@pytest.mark.usefixtures("redis")  # a flushed Redis: no delta link of an earlier test
async def test_monitor_sync_against_an_authority_that_stays_down_exits_1_without_a_traceback(
    sim: Simulator, graph: RunningSimulator, redis_server: RedisServer, tmp_path: Path
) -> None:
    sim.faults.inject("POST", TOKEN, status=503, times=1000, headers={"Retry-After": "0"})
    env = sim_env(graph, redis_server, tmp_path, MONITOR_GRAPH_MAX_RETRIES="1")
    code, out, err = await run("sync", env=env)
    assert code == 1
    assert "Traceback" not in out + err and "MsalServiceError" not in out + err
    assert f"FAILED users: tenant {TENANT_ID}: the authority {graph.url} answered 503" in out
