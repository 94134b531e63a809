"""Fixtures for the simulator's own tests: a simulator on a frozen clock, served over HTTPS."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest

from monitor.simulator.clock import SimClock
from monitor.simulator.graph_app import ALL_PERMISSIONS, Simulator
from monitor.simulator.server import RunningSimulator, serve_simulator
from monitor.simulator.tenant import SimTenant
from tests.simulator.support import CLIENT_ID, OTHER_TENANT_ID, SECRET, START, TENANT_ID, GraphClient
from tests.simulator.webhook import Webhook, serve_webhook


@pytest.fixture
def clock() -> SimClock:
    return SimClock(START, frozen=True)


@pytest.fixture
def sim(clock: SimClock) -> Iterator[Simulator]:
    """Two tenants; at the end, nothing answered may have carried a property Graph's metadata lacks."""
    simulator = Simulator(clock=clock)
    simulator.add_tenant(TENANT_ID, "Contoso", rng_seed=7)
    simulator.add_tenant(OTHER_TENANT_ID, "Fabrikam", rng_seed=8)
    simulator.register_app(CLIENT_ID, secret=SECRET)
    simulator.grant(TENANT_ID, CLIENT_ID, ALL_PERMISSIONS)
    yield simulator
    assert not simulator.conformance.problems, simulator.conformance.problems[:5]


@pytest.fixture
def tenant(sim: Simulator) -> SimTenant:
    return sim.tenants[TENANT_ID]


@pytest.fixture
async def running(sim: Simulator) -> AsyncIterator[RunningSimulator]:
    async with serve_simulator(sim) as served:
        yield served


@pytest.fixture
async def http(running: RunningSimulator) -> AsyncIterator[aiohttp.ClientSession]:
    context = ssl.create_default_context(cafile=str(running.ca_bundle_path))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session:
        yield session


@pytest.fixture
async def graph(http: aiohttp.ClientSession, running: RunningSimulator) -> GraphClient:
    client = GraphClient(http, running.url)
    body = await client.login()
    assert "access_token" in body, body
    return client


@pytest.fixture
async def webhook(sim: Simulator, running: RunningSimulator) -> AsyncIterator[Webhook]:
    """An HTTPS webhook with a certificate from the simulator's CA; delivery knobs made test-sized.

    Timeouts stay generous (nothing should come near them); tests that need a timeout make the
    webhook hang, which no timeout value can race.
    """
    sim.subscriptions.configure(
        batch_window=0.0, delivery_timeout=5.0, retry_timeout=5.0, retry_initial_delay=0.01, validation_timeout=5.0
    )
    async with serve_webhook(sim.ca.issue_server_context()) as hook:
        yield hook
