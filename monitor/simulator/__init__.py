"""A faithful simulated Microsoft 365 tenant: Entra login and the Graph directory endpoints.

`Simulator` holds tenants (`SimTenant`), registered apps and consent, a fault injector, a request
log and a settable clock; `serve_simulator` serves it over HTTPS with a throwaway CA;
`python -m monitor.simulator` runs a seeded one in its own process. `sim.subscriptions` holds
change-notification subscriptions and delivers their notifications to webhooks. `sim.intune` holds
the Intune estates `seed_intune` creates (intune_routes.py serves them). See docs/graph.md for the Graph
behaviours it reproduces.

Structure, without import cycles (the `simulator-acyclic` contract, docs/architecture.md "Layers"):
state.py holds the state and knobs (`SimulatorState`) and permissions.py the permission sets; the
route modules work on a `SimulatorState`; graph_app.py, the app factory, imports the route modules
and its `Simulator` adds the aiohttp application.
"""

from monitor.simulator.ca import CertificateAuthority, create_self_signed_client_certificate
from monitor.simulator.clock import SimClock
from monitor.simulator.delivery import DeliveryRecord
from monitor.simulator.graph_app import ALL_PERMISSIONS, Simulator
from monitor.simulator.intune import IntuneTenant
from monitor.simulator.intune_seed import seed_intune
from monitor.simulator.seed import SeedResult, seed
from monitor.simulator.server import RunningSimulator, serve_simulator
from monitor.simulator.subscription_book import Subscription, SubscriptionOptions
from monitor.simulator.subscriptions import SubscriptionService
from monitor.simulator.tenant import DeltaOptions, SimTenant

__all__ = [
    "ALL_PERMISSIONS",
    "CertificateAuthority",
    "DeliveryRecord",
    "DeltaOptions",
    "IntuneTenant",
    "RunningSimulator",
    "SeedResult",
    "SimClock",
    "SimTenant",
    "Simulator",
    "Subscription",
    "SubscriptionOptions",
    "SubscriptionService",
    "create_self_signed_client_certificate",
    "seed",
    "seed_intune",
    "serve_simulator",
]
