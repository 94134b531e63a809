"""Control API for subscriptions and notification delivery (same conventions as control.py).

    GET    /_sim/subscriptions[?tenant_id=]              every live subscription, clientState included
    DELETE /_sim/subscriptions/{id}                      remove it as Graph may (a later renew: 404)
    POST   /_sim/subscriptions/{id}/lifecycle            {"event", "pause"?}  lifecycle notification
    GET    /_sim/delivery                                the knobs (SubscriptionOptions)
    PATCH  /_sim/delivery                                {knob: value, ...} -> the knobs in force
    POST   /_sim/delivery/trust                          {"pem"}  also trust this CA for webhooks
    POST   /_sim/delivery/drain                          {"timeout"?} -> {"idle": bool}
    GET    /_sim/delivery/slow                           {url: slow answers} (docs/graph.md 4.3)
    GET    /_sim/deliveries[?kind=&outcome=&url=&payload=true]   the delivery log
    DELETE /_sim/deliveries                              clear it

Dropping notifications silently is the `drop_rate` knob (1.0 drops every change notification).
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import TYPE_CHECKING, Any

from aiohttp import web

# The guard and body reader of the main control API, so both parts answer alike.
from monitor.simulator.control import ControlHandler, _body, _guarded

if TYPE_CHECKING:
    from monitor.simulator.subscriptions import SubscriptionService


class SubscriptionControlRoutes:
    def __init__(self, service: SubscriptionService) -> None:
        self.service = service

    def register(self, router: web.UrlDispatcher) -> None:
        routes: list[tuple[str, str, ControlHandler]] = [
            ("GET", "/_sim/subscriptions", self.list_subscriptions),
            ("DELETE", "/_sim/subscriptions/{id}", self.remove),
            ("POST", "/_sim/subscriptions/{id}/lifecycle", self.lifecycle),
            ("GET", "/_sim/delivery", self.options),
            ("PATCH", "/_sim/delivery", self.configure),
            ("POST", "/_sim/delivery/trust", self.trust),
            ("POST", "/_sim/delivery/drain", self.drain),
            ("GET", "/_sim/delivery/slow", self.slow),
            ("GET", "/_sim/deliveries", self.deliveries),
            ("DELETE", "/_sim/deliveries", self.clear_deliveries),
        ]
        for method, path, handler in routes:
            router.add_route(method, path, _guarded(handler))

    async def list_subscriptions(self, request: web.Request) -> Any:
        tenant_id = request.query.get("tenant_id")
        return [sub.control_view() for sub in self.service.all() if tenant_id is None or sub.tenant_id == tenant_id]

    async def remove(self, request: web.Request) -> Any:
        self.service.remove(request.match_info["id"])

    async def lifecycle(self, request: web.Request) -> Any:
        body = await _body(request)
        self.service.send_lifecycle(request.match_info["id"], str(body["event"]), pause=bool(body.get("pause")))

    async def options(self, request: web.Request) -> Any:
        return dataclasses.asdict(self.service.options)

    async def configure(self, request: web.Request) -> Any:
        return dataclasses.asdict(self.service.configure(**(await _body(request))))

    async def trust(self, request: web.Request) -> Any:
        body = await _body(request)
        self.service.trust(str(body["pem"]))

    async def drain(self, request: web.Request) -> Any:
        body = await _body(request)
        try:
            await asyncio.wait_for(self.service.drain(), float(body.get("timeout", 30)))
        except TimeoutError:
            return {"idle": False}
        return {"idle": True}

    async def slow(self, request: web.Request) -> Any:
        return self.service.slow_responses

    async def deliveries(self, request: web.Request) -> Any:
        query = request.query
        payload = query.get("payload", "false").lower() in ("1", "true", "yes")
        records = self.service.deliveries.matching(
            kind=query.get("kind"), url=query.get("url"), outcome=query.get("outcome")
        )
        return [record.as_json(payload=payload) for record in records]

    async def clear_deliveries(self, request: web.Request) -> Any:
        self.service.deliveries.clear()
