"""Fixtures for the Intune sweep tests: a simulated tenant with a directory and an Intune estate."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest

from monitor.graph.auth import TokenProvider
from monitor.graph.client import GraphClient
from monitor.graph.pacing import IntunePacer
from monitor.retry import RetryPolicy
from monitor.settings import Settings
from monitor.simulator import SimTenant, Simulator, seed
from monitor.simulator.intune import IntuneTenant
from monitor.simulator.intune_catalog import DEVICE_KINDS
from monitor.simulator.intune_seed import seed_intune


@pytest.fixture
def estate(sim: Simulator, tenant: SimTenant) -> IntuneTenant:
    """40 users, 60 seeded devices plus one of every device kind, and pages of 25 so that every
    list has several pages."""
    seed(tenant, users=40, groups=2, memberships=20)
    intune = seed_intune(sim, tenant.tenant_id, devices=60, detected_titles=20, page_size=25)
    users = list(tenant.users)
    for kind in range(len(DEVICE_KINDS)):
        intune.add_device(kind, users[kind], (users[kind], users[-1 - kind]))
    return intune


@dataclass
class Sleeps:
    """A sleep that does not wait: it records the delay and moves the simulator's clock instead."""

    sim: Simulator
    delays: list[float] = field(default_factory=list)

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        self.sim.clock.advance(seconds)


ClientFactory = Callable[..., GraphClient]


@pytest.fixture
def sleeps(sim: Simulator) -> Sleeps:
    return Sleeps(sim)


@pytest.fixture
async def make_client(settings: Settings, sleeps: Sleeps) -> AsyncIterator[ClientFactory]:
    """GraphClients on the simulator whose waits (retries and pacing) go through `sleeps`."""
    clients: list[GraphClient] = []

    def build(*, pacer: IntunePacer | None = None, policy: RetryPolicy | None = None) -> GraphClient:
        pacer = pacer or IntunePacer(limits={}, sleep=sleeps)
        client = GraphClient(settings, TokenProvider(settings), policy=policy, sleep=sleeps, pacer=pacer)
        clients.append(client)
        return client

    yield build
    for client in clients:
        await client.close()
