"""What Graph POSTs to a webhook: change and lifecycle notification items (docs/graph.md 4.1, 5).

User and group notifications are basic: the id comes through, the data doesn't (docs/graph.md 0.1).
Pure functions; delivery.py batches and sends the items.
"""

from __future__ import annotations

from typing import Any, Literal

from monitor.simulator.delta import member_entries
from monitor.simulator.subscription_book import Subscription, subscription_datetime
from monitor.simulator.tenant import HARD_DELETED, MEMBER_ADDED, MEMBER_REMOVED, Change

LifecycleEvent = Literal["reauthorizationRequired", "subscriptionRemoved", "missed"]
LIFECYCLE_EVENTS: tuple[LifecycleEvent, ...] = ("reauthorizationRequired", "subscriptionRemoved", "missed")
# docs/graph.md 4.1: the resource URI is capitalised ("Users/{id}"), as is the resourceData type.
_NAMES = {"users": ("Users", "#Microsoft.Graph.User"), "groups": ("Groups", "#Microsoft.Graph.Group")}


def lifecycle_event(name: str) -> LifecycleEvent:
    """The event named, or ValueError."""
    for event in LIFECYCLE_EVENTS:
        if event == name:
            return event
    raise ValueError(f"unknown lifecycle event {name!r}; expected one of {', '.join(LIFECYCLE_EVENTS)}")


def change_type_of(change: Change) -> str:
    """docs/graph.md 0.2: creation, update, soft delete, restore and membership changes all arrive as
    `updated`; only a permanent delete is `deleted`."""
    return "deleted" if change.kind == HARD_DELETED else "updated"


def wants(subscription: Subscription, change: Change) -> bool:
    """Whether this journal entry produces a notification for this subscription."""
    return subscription.target.matches(change) and change_type_of(change) in subscription.change_types


def change_notification(subscription: Subscription, change: Change, *, members_delta: bool) -> dict[str, Any]:
    """One changeNotification item (docs/graph.md 4.1).

    `members_delta` adds the `members@delta` node seen in group notifications
    (docs/graph.md 2.2, microsoft-graph-docs-contrib#4559), in delta's own form: the member's
    `@odata.type` and `id`, plus `@removed` for a removal.
    """
    segment, odata_type = _NAMES[change.resource]
    path = f"{segment}/{change.object_id}"
    resource_data: dict[str, Any] = {"@odata.type": odata_type, "@odata.id": path, "id": change.object_id}
    if members_delta and change.kind in (MEMBER_ADDED, MEMBER_REMOVED):
        member_id, member_type = change.detail
        resource_data["members@delta"] = member_entries([(member_id, member_type, change.kind == MEMBER_REMOVED)], 0, 1)
    return {
        **_envelope(subscription),
        "changeType": change_type_of(change),
        "resource": path,
        "resourceData": resource_data,
    }


def lifecycle_notification(subscription: Subscription, event: LifecycleEvent) -> dict[str, Any]:
    """docs/graph.md 5: the subscription's fields and `lifecycleEvent`, no resource data."""
    return {**_envelope(subscription), "lifecycleEvent": event}


def _envelope(subscription: Subscription) -> dict[str, Any]:
    return {
        "subscriptionId": subscription.id,
        "subscriptionExpirationDateTime": subscription_datetime(subscription.expires_at),
        "tenantId": subscription.tenant_id,
        "clientState": subscription.client_state,
    }
