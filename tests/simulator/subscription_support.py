"""Helpers for the subscription tests: raw Graph calls and subscription bodies."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from tests.simulator.support import START, GraphClient
from tests.simulator.webhook import Webhook


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


async def call(graph: GraphClient, method: str, path_or_url: str, body: Any = None) -> tuple[int, Any]:
    """(status, JSON body or None) of a Graph call with the client's token."""
    url = path_or_url if path_or_url.startswith("https://") else f"{graph.url}{path_or_url}"
    headers = {"Authorization": f"Bearer {graph.token}"}
    async with graph.session.request(method, url, json=body, headers=headers) as response:
        payload = await response.json() if response.status != 204 else None
        return response.status, payload


def subscription_body(hook: Webhook, resource: str = "/users", **overrides: Any) -> dict[str, Any]:
    return {
        "changeType": "updated,deleted",
        "notificationUrl": f"{hook.url}/notify",
        "resource": resource,
        "expirationDateTime": iso(START + timedelta(days=2)),
        "clientState": "client-state-secret",
        **overrides,
    }


async def subscribe(graph: GraphClient, hook: Webhook, resource: str = "/users", **overrides: Any) -> dict[str, Any]:
    status, body = await call(graph, "POST", "/v1.0/subscriptions", subscription_body(hook, resource, **overrides))
    assert status == 201, body
    assert isinstance(body, dict)
    return body
