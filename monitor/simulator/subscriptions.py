"""`sim.subscriptions`: Graph change-notification subscriptions for users and groups.

Ties together the book of subscriptions (subscription_book.py), the notification items
(notifications.py) and outbound HTTPS (delivery.py):

- `create`, `renew`, `reauthorize`, `delete` back the Graph routes (subscription_routes.py);
- every tenant journal entry reaches `observe`, which notifies each matching live subscription;
- `send_lifecycle`, `remove`, `configure` (knobs), `deliveries` and `drain` are for tests, and the
  control API (subscription_control.py) exposes them to other processes;
- `install(app)` runs delivery while the app is served (aiohttp `cleanup_ctx`); graph_app.py
  registers the routes, which import this module (this module imports neither).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

from aiohttp import web

from monitor.simulator.delivery import DeliveryLog, Dispatcher
from monitor.simulator.errors import forbidden
from monitor.simulator.notifications import change_notification, lifecycle_event, lifecycle_notification, wants
from monitor.simulator.subscription_book import (
    Subscription,
    SubscriptionBook,
    SubscriptionOptions,
    Target,
    not_found,
    parse_create,
    parse_renewal,
)
from monitor.simulator.tenant import Change, SimTenant

if TYPE_CHECKING:
    from monitor.simulator.state import AccessToken, SimulatorState

# docs/graph.md 2.5: a /reauthorize and a renewing PATCH within 10 minutes of each other can leave the
# subscription inconsistent; the simulator counts such pairs so tests can assert there are none.
REAUTHORIZE_RENEW_GAP = 600.0


class SubscriptionService:
    """Subscriptions and their notifications for one `Simulator`."""

    def __init__(self, sim: SimulatorState) -> None:
        self.sim = sim
        self.book = SubscriptionBook()
        self.dispatcher = Dispatcher(sim.clock, lambda: sim.ca.certificate_pem)
        self._served = 0  # apps being served; delivery runs while at least one is

    # -- knobs and inspection ---------------------------------------------------------------------

    @property
    def options(self) -> SubscriptionOptions:
        return self.dispatcher.options

    def configure(self, **changes: Any) -> SubscriptionOptions:
        """Set limits and delivery knobs (see `SubscriptionOptions`); returns the options in force."""
        return self.dispatcher.configure(**changes)

    def trust(self, pem: bytes | str | None) -> None:
        """Trust another CA (PEM) for webhooks, besides the simulator's own CA."""
        self.dispatcher.trust(pem)

    @property
    def deliveries(self) -> DeliveryLog:
        """Every handshake, POST attempt, drop and give-up, oldest first."""
        return self.dispatcher.log

    @property
    def slow_responses(self) -> dict[str, int]:
        """Per webhook URL, answers slower than the 3-second limit (docs/graph.md 4.3), timeouts included."""
        return dict(self.dispatcher.slow_responses)

    def all(self) -> list[Subscription]:
        """Every live subscription of every tenant and app."""
        return self.book.live(self.sim.clock.now())

    def get(self, subscription_id: str) -> Subscription:
        """A live subscription; KeyError if it does not exist (any more)."""
        subscription = self.book.get(subscription_id, self.sim.clock.now())
        if subscription is None:
            raise KeyError(subscription_id)
        return subscription

    async def drain(self) -> None:
        """Wait until every queued notification was delivered, dropped or given up on."""
        await self.dispatcher.drain()

    # -- the app ------------------------------------------------------------------------------------

    def install(self, app: web.Application) -> None:
        """Run delivery while `app` is served (its routes: SubscriptionRoutes, SubscriptionControlRoutes)."""
        app.cleanup_ctx.append(self._delivery)

    async def _delivery(self, app: web.Application) -> AsyncIterator[None]:
        self._served += 1
        if self._served == 1:
            await self.dispatcher.start()
        try:
            yield
        finally:
            self._served -= 1
            if self._served == 0:
                await self.dispatcher.stop()

    # -- Graph operations ----------------------------------------------------------------------------

    async def create(self, tenant: SimTenant, token: AccessToken, body: Mapping[str, Any]) -> Subscription:
        """POST /subscriptions (docs/graph.md 2.1): check, admit, handshake, then keep it."""
        now = self.sim.clock.now()
        request = parse_create(body, now, self.options)
        _require(token, request.target)
        self.book.admit(request, tenant.tenant_id, token.client_id, now, self.options)
        await self.dispatcher.validate(request.notification_url)
        if request.lifecycle_url is not None:
            # docs/graph.md 3.2: validated too, with a second request even when it is the same URL.
            await self.dispatcher.validate(request.lifecycle_url)
        # Another create may have been admitted while this one waited for its handshakes.
        self.book.admit(request, tenant.tenant_id, token.client_id, self.sim.clock.now(), self.options)
        subscription = Subscription(
            str(uuid.uuid4()),
            tenant.tenant_id,
            token.client_id,
            request.resource,
            request.target,
            request.change_type,
            request.notification_url,
            request.lifecycle_url,
            request.client_state,
            request.expires_at,
            request.latest_tls,
        )
        self.book.add(subscription)
        if self.observe not in tenant.observers:
            tenant.observers.append(self.observe)
        return subscription

    def owned(self, token: AccessToken, subscription_id: str) -> Subscription:
        """The caller's own live subscription, else 404 (docs/graph.md 2.5, 2.8)."""
        subscription = self.book.get(subscription_id, self.sim.clock.now())
        if subscription is None or (subscription.tenant_id, subscription.app_id) != (token.tenant_id, token.client_id):
            raise not_found(subscription_id)
        return subscription

    def listed(self, token: AccessToken) -> list[Subscription]:
        return self.book.owned(token.tenant_id, token.client_id, self.sim.clock.now())

    async def renew(self, token: AccessToken, subscription_id: str, body: Mapping[str, Any]) -> Subscription:
        """PATCH /subscriptions/{id} (docs/graph.md 2.5): extends, and also reauthorizes."""
        subscription = self.owned(token, subscription_id)
        _require(token, subscription.target)
        renewal = parse_renewal(body, self.sim.clock.now(), self.options)
        if renewal.notification_url is not None and renewal.notification_url != subscription.notification_url:
            await self.dispatcher.validate(renewal.notification_url)
            subscription = self.owned(token, subscription_id)  # it may have expired meanwhile
            subscription.notification_url = renewal.notification_url
        if renewal.expires_at is not None:
            subscription.expires_at = renewal.expires_at
            self._reauthorized(subscription, renewing=True)
        return subscription

    def reauthorize(self, token: AccessToken, subscription_id: str) -> None:
        """POST /subscriptions/{id}/reauthorize (docs/graph.md 2.6): does not extend the expiry."""
        subscription = self.owned(token, subscription_id)
        _require(token, subscription.target)
        self._reauthorized(subscription, renewing=False)

    def delete(self, token: AccessToken, subscription_id: str) -> None:
        """DELETE /subscriptions/{id} (docs/graph.md 2.7)."""
        self.book.remove(self.owned(token, subscription_id).id)

    def _reauthorized(self, subscription: Subscription, *, renewing: bool) -> None:
        now = self.sim.clock.timestamp()
        other = subscription.reauthorized_at if renewing else subscription.renewed_at
        if other is not None and now - other < REAUTHORIZE_RENEW_GAP:
            subscription.overlapping_reauthorizations += 1
        if renewing:
            subscription.renewed_at = now
        else:
            subscription.reauthorized_at = now
        subscription.reauthorization_required = subscription.paused = False
        # docs/graph.md 4.2: once reauthorized, what Graph held back during the pause is delivered.
        held, subscription.held = subscription.held, []
        for item in held:
            self.dispatcher.enqueue(subscription.notification_url, "notification", item, subscription.id)

    # -- notifications --------------------------------------------------------------------------------

    def observe(self, tenant: SimTenant, change: Change) -> None:
        """A tenant journal entry: notify every live subscription it matches (docs/graph.md 4.1)."""
        if change.resource not in ("users", "groups"):
            return
        for subscription in self.book.for_tenant(tenant.tenant_id, self.sim.clock.now()):
            if not wants(subscription, change):
                continue
            item = change_notification(subscription, change, members_delta=self.options.members_delta)
            if subscription.paused:
                subscription.held.append(item)
            else:
                self.dispatcher.enqueue(subscription.notification_url, "notification", item, subscription.id)

    def send_lifecycle(self, subscription_id: str, event: str, *, pause: bool = False) -> None:
        """POST a lifecycle notification to the subscription's lifecycleNotificationUrl (docs/graph.md 5).

        `reauthorizationRequired` marks the subscription until it is renewed or reauthorized; with
        `pause`, its notifications are also held back until then (docs/graph.md 4.2, 5.1).
        `subscriptionRemoved` also removes it, so a later renew is a 404 (5.2). `missed` only
        notifies (5.3). Graph sends the last two only for Outlook and Teams resources (0.6), but a
        monitor must cope should they come. KeyError for an unknown subscription, ValueError for
        an unknown event or a subscription without a lifecycle URL.
        """
        checked = lifecycle_event(event)
        subscription = self.get(subscription_id)
        if subscription.lifecycle_url is None:
            raise ValueError(f"subscription {subscription_id} has no lifecycleNotificationUrl")
        item = lifecycle_notification(subscription, checked)
        if event == "subscriptionRemoved":
            self.book.remove(subscription.id)
        elif event == "reauthorizationRequired":
            subscription.reauthorization_required = True
            subscription.paused = subscription.paused or pause
        self.dispatcher.enqueue(subscription.lifecycle_url, "lifecycle", item, subscription.id)

    def remove(self, subscription_id: str) -> Subscription:
        """Remove a subscription silently, as Graph may (docs/graph.md 5.2); a later renew gets 404."""
        subscription = self.book.remove(subscription_id)
        if subscription is None:
            raise KeyError(subscription_id)
        return subscription


def _require(token: AccessToken, target: Target) -> None:
    """docs/graph.md 2.1 / 2.6: User.Read.All for /users, Group.Read.All for /groups; nothing else will do."""
    if target.permission not in token.permissions:
        raise forbidden(
            f"Insufficient privileges to complete the operation: subscribing to {target.collection} "
            f"needs the {target.permission} application permission."
        )
