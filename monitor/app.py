"""Wiring: the one place that builds clients and stores from `Settings`.

`Runtime` holds the process-wide resources (the Redis connection, the token provider, the Graph
client, the sinks) and hands out per-tenant views. Commands and services receive a runtime; they
never build clients themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from monitor.errors import ConfigError
from monitor.graph.auth import TokenProvider
from monitor.graph.client import GraphClient
from monitor.metrics import throttle_counter
from monitor.redis_conn import REDIS_UNAVAILABLE, Redis, client_for, connect, redact
from monitor.retry import RetryPolicy
from monitor.settings import Settings, TenantConfig
from monitor.sinks.alerts import AlertDispatcher
from monitor.sinks.base import Sink
from monitor.sinks.jsonl import JsonlSink
from monitor.sinks.jupiterone import Publisher, build_publisher
from monitor.sinks.signing import WebhookClient
from monitor.sinks.webhook import WebhookSink
from monitor.sources.base import Clock, SourceContext, utc_now
from monitor.store import TenantStore
from monitor.supervise import RESTART_BASE_DELAY, RESTART_MAX_DELAY, Health, one_line
from monitor.tenant_registry import RegistrySnapshot, TenantRegistry

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    settings: Settings
    redis: Redis
    graph_client: GraphClient | None = None
    clock: Clock = utc_now
    sinks: list[Sink] = field(default_factory=list)
    # The JupiterOne publisher, when MONITOR_SINK names `jupiterone`. Not a change-log consumer like
    # the sinks: it publishes dirty scopes from the mirror (monitor.sinks.jupiterone).
    publisher: Publisher | None = None
    # Sends alerts of the tenants' alert rules (monitor.sinks.alerts); built on first use.
    alerts: AlertDispatcher | None = None
    # The tenants registered at run time (monitor.tenant_registry), as last read from Redis; kept
    # fresh by `refresh_tenants()`, which the web app, the worker and the scheduler call.
    registered: RegistrySnapshot = field(default_factory=RegistrySnapshot)
    _tenants_checked_at: float = field(default=float("-inf"), repr=False)
    _watched: tuple[RegistrySnapshot | None, frozenset[str]] = field(default=(None, frozenset()), repr=False)

    @classmethod
    async def open(
        cls, settings: Settings, *, graph: bool = True, clock: Clock = utc_now, check_redis: bool = True
    ) -> Runtime:
        """Connect to Redis (and prepare Graph access when `graph`); raises MonitorError subclasses.

        One-off commands fail at once when Redis does not answer. A long-running process (web,
        worker, scheduler) passes `check_redis=False`: the client is made without a round trip, and
        the process waits for Redis itself (`until_redis_answers`) while it reports not-ready."""
        client = None
        if graph:
            client = GraphClient(settings, TokenProvider(settings))
        redis = await connect(settings.redis_url) if check_redis else client_for(settings.redis_url)
        if client is not None:
            client.on_throttled = throttle_counter(redis)
        try:
            publisher = build_publisher(settings, redis)
        except ConfigError:
            await redis.aclose()
            raise
        runtime = cls(settings, redis, client, clock, build_sinks(settings), publisher)
        if check_redis:
            await runtime.refresh_tenants()
        return runtime

    async def reach_redis(self) -> str | None:
        """One try: Redis answers a PING and the tenant registry is read. None when it worked, else
        why not (one line)."""
        try:
            await self.redis.ping()
            await self.refresh_tenants()
        except REDIS_UNAVAILABLE as exc:
            return one_line(exc)
        return None

    async def until_redis_answers(self, health: Health, stop: asyncio.Event) -> bool:
        """For a long-running process opened with `check_redis=False`: try `reach_redis` until it
        works (True) or `stop` is set (False), backing off between tries as a supervised loop does
        (`monitor.supervise`: at most `RESTART_MAX_DELAY` apart). Meanwhile `health` says why the
        process is not ready. One WARNING when Redis does not answer, one INFO once it does: not a
        line per try."""
        policy = RetryPolicy(base_delay=RESTART_BASE_DELAY, max_delay=RESTART_MAX_DELAY)
        started, failures = time.monotonic(), 0
        while not stop.is_set():
            problem = await self.reach_redis()
            if problem is None:
                if failures:
                    log.info("%s: Redis answers after %.1fs; starting", health.task, time.monotonic() - started)
                return True
            failures += 1
            health.failing(f"waiting for Redis: {problem}")
            if failures == 1:
                log.warning(
                    "%s: Redis at %s does not answer (%s); not ready, trying again with backoff until it does",
                    health.task,
                    redact(self.settings.redis_url),
                    problem,
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), policy.delay(failures, None))
        return False

    @property
    def graph(self) -> GraphClient:
        if self.graph_client is None:
            raise ConfigError("this command needs Graph access (MONITOR_CLIENT_ID and a secret or certificate)")
        return self.graph_client

    def store(self, tenant_id: str) -> TenantStore:
        return TenantStore(self.redis, tenant_id)

    def tenant(self, tenant_id: str) -> TenantConfig | None:
        """The configuration of a tenant we watch (configured or registered), or None."""
        wanted = tenant_id.lower()
        configured = next((t for t in self.settings.tenants if t.id == wanted), None)
        return configured or self.registered.tenants.get(wanted)

    def tenant_ids(self) -> list[str]:
        return [t.id for t in self.tenants()]

    def watched_ids(self) -> frozenset[str]:
        """`tenant_ids()` as a set, rebuilt only when the registry was re-read (`refresh_tenants`
        replaces the snapshot): the webhook asks for every request."""
        snapshot, ids = self._watched
        if snapshot is not self.registered:
            ids = frozenset(self.tenant_ids())
            self._watched = (self.registered, ids)
        return ids

    def tenants(self) -> list[TenantConfig]:
        """Every tenant we watch: the configured ones, then those registered at run time (a tenant in
        both is the configured one: the settings are what the operator deployed)."""
        configured = list(self.settings.tenants)
        known = {t.id for t in configured}
        return configured + [t for t_id, t in sorted(self.registered.tenants.items()) if t_id not in known]

    @property
    def registry(self) -> TenantRegistry:
        return TenantRegistry(self.redis)

    async def refresh_tenants(self, *, max_age: float = 0.0) -> None:
        """Re-read the registered tenants if the registry changed since the last read (one GET).

        With `max_age`, skip the check when the last one is more recent than that: the webhook's
        hot path must not pay a Redis round trip per request for a list that changes rarely.
        """
        now = time.monotonic()
        if max_age and now - self._tenants_checked_at < max_age:
            return
        self._tenants_checked_at = now
        registry = self.registry
        if self.registered.version is not None and await registry.version() == self.registered.version:
            return
        self.registered = await registry.load()

    def alert_dispatcher(self) -> AlertDispatcher:
        if self.alerts is None:
            webhooks = WebhookClient.from_settings(self.settings)
            self.alerts = AlertDispatcher(webhooks, actor_wait=self.settings.actor_wait, clock=self.clock)
        return self.alerts

    def context(self, tenant: TenantConfig) -> SourceContext:
        return SourceContext(tenant, self.store(tenant.id), self.graph, self.clock)

    def require_publisher(self) -> Publisher:
        if self.publisher is None:
            raise ConfigError("this command needs the JupiterOne publisher: add jupiterone to MONITOR_SINK")
        return self.publisher

    async def close(self) -> None:
        for sink in self.sinks:
            await sink.close()
        if self.alerts is not None:
            await self.alerts.close()
        if self.publisher is not None:
            await self.publisher.close()
        if self.graph_client is not None:
            await self.graph_client.close()
        await self.redis.aclose()


def build_sinks(settings: Settings) -> list[Sink]:
    sinks: list[Sink] = []
    for spec in settings.sinks:
        if spec.kind == "jsonl":
            assert spec.target is not None
            sinks.append(JsonlSink(Path(spec.target)))
        elif spec.kind == "jupiterone":
            continue  # not a log consumer: Runtime.publisher (build_publisher)
        else:  # webhook:URL
            assert spec.target is not None
            sinks.append(WebhookSink(spec.target, WebhookClient.from_settings(settings)))
    return sinks
