"""Graph's `/v1.0/subscriptions` routes (docs/graph.md 2): thin handlers over `SubscriptionService`.

    POST   /v1.0/subscriptions                    201 + the subscription (clientState echoed)
    GET    /v1.0/subscriptions                    the app's own, paged by @odata.nextLink
    GET    /v1.0/subscriptions/{id}               clientState is never returned
    PATCH  /v1.0/subscriptions/{id}               200: renew (also reauthorizes); 404 once gone
    DELETE /v1.0/subscriptions/{id}               204
    POST   /v1.0/subscriptions/{id}/reauthorize   204

Every call needs a valid app token carrying User.Read.All or Group.Read.All (docs/graph.md 1); create,
renew and reauthorize need the one that matches the subscription's resource.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from aiohttp import web

from monitor.simulator._json import json_response
from monitor.simulator.errors import bad_request
from monitor.simulator.graph_auth import authorize
from monitor.simulator.subscription_book import SUBSCRIBE_PERMISSIONS, Subscription
from monitor.simulator.tokens import decode_token, encode_token

if TYPE_CHECKING:
    from monitor.simulator.subscriptions import SubscriptionService


class SubscriptionRoutes:
    def __init__(self, service: SubscriptionService) -> None:
        self.service = service
        self.sim = service.sim

    def register(self, router: web.UrlDispatcher) -> None:
        router.add_post("/v1.0/subscriptions", self.create)
        router.add_get("/v1.0/subscriptions", self.list_subscriptions)
        router.add_get("/v1.0/subscriptions/{id}", self.get)
        router.add_patch("/v1.0/subscriptions/{id}", self.renew)
        router.add_delete("/v1.0/subscriptions/{id}", self.delete)
        router.add_post("/v1.0/subscriptions/{id}/reauthorize", self.reauthorize)

    def _entity(self, subscription: Subscription, *, client_state: bool, status: int = 200) -> web.Response:
        context = f"{self.sim.base_url}/v1.0/$metadata#subscriptions/$entity"
        return json_response(
            {"@odata.context": context, **subscription.graph_view(client_state=client_state)}, status=status
        )

    async def create(self, request: web.Request) -> web.Response:
        tenant, token = authorize(self.sim, request, SUBSCRIBE_PERMISSIONS)
        subscription = await self.service.create(tenant, token, await _json_object(request))
        return self._entity(subscription, client_state=True, status=201)

    async def list_subscriptions(self, request: web.Request) -> web.Response:
        """docs/graph.md 2.8: no OData options, only the app's own, paged; never `clientState`."""
        _, token = authorize(self.sim, request, SUBSCRIBE_PERMISSIONS)
        offset = 0
        if "$skiptoken" in request.query:
            state = decode_token(request.query["$skiptoken"]) or {}
            if not isinstance(state.get("o"), int):
                raise bad_request("The $skiptoken is not valid.")
            offset = state["o"]
        subscriptions = self.service.listed(token)
        size = self.service.options.list_page_size
        body: dict[str, Any] = {
            "@odata.context": f"{self.sim.base_url}/v1.0/$metadata#subscriptions",
            "value": [sub.graph_view(client_state=False) for sub in subscriptions[offset : offset + size]],
        }
        if offset + size < len(subscriptions):
            skip = encode_token({"o": offset + size})
            body["@odata.nextLink"] = f"{self.sim.base_url}/v1.0/subscriptions?$skiptoken={skip}"
        return json_response(body)

    async def get(self, request: web.Request) -> web.Response:
        _, token = authorize(self.sim, request, SUBSCRIBE_PERMISSIONS)
        return self._entity(self.service.owned(token, request.match_info["id"]), client_state=False)

    async def renew(self, request: web.Request) -> web.Response:
        _, token = authorize(self.sim, request, SUBSCRIBE_PERMISSIONS)
        body = await _json_object(request)
        subscription = await self.service.renew(token, request.match_info["id"], body)
        return self._entity(subscription, client_state=False)

    async def delete(self, request: web.Request) -> web.Response:
        _, token = authorize(self.sim, request, SUBSCRIBE_PERMISSIONS)
        self.service.delete(token, request.match_info["id"])
        return web.Response(status=204)

    async def reauthorize(self, request: web.Request) -> web.Response:
        _, token = authorize(self.sim, request, SUBSCRIBE_PERMISSIONS)
        self.service.reauthorize(token, request.match_info["id"])
        return web.Response(status=204)


async def _json_object(request: web.Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.text()) if request.body_exists else None
    except ValueError:
        raise bad_request("Unable to read JSON request payload. Please ensure the payload is valid JSON.") from None
    if not isinstance(body, dict):
        raise bad_request("The request body must be a JSON object.")
    return body
