"""Graph change-notification subscriptions for a tenant's users and groups (docs/graph.md 2).

`reconcile` makes Graph hold exactly the subscriptions we want, one per resource (`/users`,
`/groups`, changeType `updated,deleted`), pointing at `MONITOR_PUBLIC_URL`:

- a subscription we know (its clientState is in our registry) is kept and renewed well before it
  expires (PATCH `expirationDateTime`, which also reauthorizes; docs/graph.md 2.5);
- a renewal answered 404 means Graph dropped it: it is created again and the caller runs a delta
  round for what may have been missed (docs/graph.md 5.2);
- a subscription at our URL whose clientState we don't know cannot be checked, so it is deleted
  and replaced, unless it is the one our own interrupted create made: the clientState is saved
  before every create, so that one is adopted (and a 409 on create adopts it too);
- any other subscription of ours at our URL (a stray: a duplicate, a resource no longer wanted)
  is deleted; subscriptions pointing elsewhere are left alone (another deployment's).

Permissions: `User.Read.All` for `/users`, `Group.Read.All` for `/groups` (docs/graph.md 2.1).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

from monitor.graph.client import GraphClient, GraphError
from monitor.keys import TenantKeys
from monitor.model.common import epoch_ms, iso_ms
from monitor.model.types import JsonObject
from monitor.records import (
    PENDING_PREFIX,
    PendingCreate,
    SubscriptionRecord,
    decode_pending,
    decode_registry,
    decode_subscription,
    encode_pending,
    encode_subscription,
)
from monitor.redis_conn import Redis
from monitor.source_registry import NOTIFIED

log = logging.getLogger(__name__)

# source name -> the resource subscribed to for it (monitor.source_registry).
RESOURCES = NOTIFIED
CHANGE_TYPE = "updated,deleted"
# Directory subscriptions live at most 41,760 minutes (docs/graph.md 2.3); ask for a little less so
# clock skew never makes the request exceed it.
MAX_LIFETIME = timedelta(minutes=41760) - timedelta(minutes=5)
# Never renew one subscription twice within this: a renew also reauthorizes, and Graph warns
# against a reauthorize and a renew within 10 minutes of each other (docs/graph.md 2.5).
RENEW_GUARD = timedelta(minutes=10)
# How long a saved clientState of an interrupted create stays adoptable.
PENDING_TTL = timedelta(hours=1)
NOTIFICATIONS_PATH = "/graph/notifications"
LIFECYCLE_PATH = "/graph/lifecycle"


@dataclass(slots=True)
class SubscriptionReport:
    """What `reconcile` did, per resource, for logs, status and the caller's follow-up."""

    created: list[str] = field(default_factory=list)
    renewed: list[str] = field(default_factory=list)
    adopted: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    # Resources whose subscription was lost: changes may have been missed, run a delta round.
    lost: list[str] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)


def graph_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def parse_graph_time(text: str) -> datetime:
    """A Graph timestamp (7 fractional digits, `Z` or an offset) as an aware UTC datetime."""
    milliseconds = epoch_ms(text)
    if milliseconds is None:
        raise ValueError(f"not a timestamp: {text!r}")
    return datetime.fromtimestamp(milliseconds / 1000, tz=UTC)


class TenantRedis(Protocol):
    """The tenant and its Redis: what the manager uses of the caller's `monitor.store.TenantStore`.

    The Graph layer does not import the mirror (docs/architecture.md, "Layers"); the subscription
    registry is one hash of the tenant's keys (`monitor.keys.TenantKeys.subscriptions`).
    """

    @property
    def tenant(self) -> str: ...

    @property
    def redis(self) -> Redis: ...


class SubscriptionManager:
    """Keeps one tenant's subscriptions in shape. Graph calls go through the shared client."""

    def __init__(self, client: GraphClient, store: TenantRedis, public_url: str, *, renew_before: float) -> None:
        self.client = client
        self.tenant = store.tenant
        self.redis = store.redis
        self.registry_key = TenantKeys(store.tenant).subscriptions
        self.notification_url = public_url + NOTIFICATIONS_PATH
        self.lifecycle_url = public_url + LIFECYCLE_PATH
        self.renew_before = timedelta(seconds=renew_before)

    async def reconcile(self, now: datetime) -> SubscriptionReport:
        report = SubscriptionReport()
        registry = await self.records()
        listed = [s async for s in self._listed()]
        ours = [s for s in listed if s.get("notificationUrl") == self.notification_url]
        for name, path in RESOURCES.items():
            try:
                await self._reconcile_resource(name, path, ours, registry, now, report)
            except GraphError as exc:
                report.errors[name] = str(exc)
                log.error("tenant %s: subscription for %s: %s", self.tenant, path, exc, extra={"tenant": self.tenant})
        wanted = {path for path in RESOURCES.values()}
        for stray in ours:
            if _resource(stray) not in wanted:
                await self._delete(stray["id"], report)
        await self._forget_missing(registry, {s["id"] for s in listed})
        return report

    async def renew(self, subscription_id: str, now: datetime) -> str:
        """Renew one subscription (answering `reauthorizationRequired`). Returns what happened."""
        registry = await self.records()
        record = registry.get(subscription_id)
        if record is None:
            return "unknown"
        renewed_at = record.get("renewedAt")
        if renewed_at and now - parse_graph_time(renewed_at) < RENEW_GUARD:
            return "recently-renewed"
        try:
            await self._patch(subscription_id, record["resource"], now)
        except GraphError as exc:
            if exc.status != 404:
                raise
            await self._drop(subscription_id)
            return "lost"
        return "renewed"

    async def records(self) -> dict[str, SubscriptionRecord]:
        """Our subscriptions of the tenant, by id (the registry without the pending creates)."""
        return decode_registry(await self.redis.hgetall(self.registry_key))

    async def delete_all(self) -> list[str]:
        """Delete every subscription we hold for this tenant (tenant removal)."""
        report = SubscriptionReport()
        for subscription_id in await self.records():
            await self._delete(subscription_id, report)
        return report.deleted

    # -- one resource -------------------------------------------------------------------------
    async def _reconcile_resource(
        self,
        name: str,
        path: str,
        ours: list[JsonObject],
        registry: dict[str, SubscriptionRecord],
        now: datetime,
        report: SubscriptionReport,
    ) -> None:
        matches = [s for s in ours if _resource(s) == path and _change_types(s) == {"updated", "deleted"}]
        keep = next((s for s in matches if s["id"] in registry), None)
        if keep is None and any(record["resource"] == path for record in registry.values()):
            # We had one and Graph no longer lists it: it expired or was removed, and Graph does
            # not tell directory subscribers (docs/graph.md 5.4). Changes since may have been missed.
            report.lost.append(name)
        if keep is None:
            keep = await self._adoptable(path, matches, now)
            if keep is not None:
                report.adopted.append(name)
        for other in matches:
            if keep is None or other["id"] != keep["id"]:
                await self._delete(other["id"], report)
        if keep is None:
            await self._create(name, path, now, report)
            return
        record = registry.get(keep["id"])
        expires = parse_graph_time(
            keep.get("expirationDateTime") or (graph_time(now) if record is None else record["expiration"])
        )
        if expires - now < self.renew_before:
            try:
                await self._patch(keep["id"], path, now)
                report.renewed.append(name)
            except GraphError as exc:
                if exc.status != 404:
                    raise
                await self._drop(keep["id"])
                report.lost.append(name)
                await self._create(name, path, now, report)

    async def _adoptable(self, path: str, matches: list[JsonObject], now: datetime) -> JsonObject | None:
        """The subscription our own interrupted create made, if the listing shows one."""
        pending = await self._pending(path)
        if pending is None or now - parse_graph_time(pending["at"]) > PENDING_TTL or not matches:
            return None
        chosen = max(matches, key=lambda s: s.get("expirationDateTime", ""))
        await self._save(chosen["id"], path, pending["clientState"], chosen.get("expirationDateTime", ""), now)
        await self.redis.hdel(self.registry_key, PENDING_PREFIX + path)
        return chosen

    async def _create(self, name: str, path: str, now: datetime, report: SubscriptionReport) -> None:
        client_state = secrets.token_urlsafe(48)  # 64 characters; Graph allows 128 (docs/graph.md 2.1)
        pending = encode_pending(PendingCreate(clientState=client_state, at=graph_time(now)))
        await self.redis.hset(self.registry_key, PENDING_PREFIX + path, pending)
        body = {
            "changeType": CHANGE_TYPE,
            "notificationUrl": self.notification_url,
            "lifecycleNotificationUrl": self.lifecycle_url,
            "resource": path,
            "expirationDateTime": graph_time(now + MAX_LIFETIME),
            "clientState": client_state,
        }
        try:
            response = await self.client.request(self.tenant, "POST", "/v1.0/subscriptions", json=body)
        except GraphError as exc:
            if exc.status != 409:
                raise GraphError(_explain(exc), status=exc.status, code=exc.code, headers=exc.headers) from exc
            # Graph already holds one for this resource (docs/graph.md 2.9): the next reconcile adopts
            # it if it is ours (same URL, our pending clientState), or replaces it.
            report.errors[name] = "a subscription for this resource already exists; adopting it on the next check"
            return
        created = response.body
        await self._save(created["id"], path, client_state, created.get("expirationDateTime", ""), now)
        await self.redis.hdel(self.registry_key, PENDING_PREFIX + path)
        report.created.append(name)
        log.info("tenant %s: subscribed to %s (%s)", self.tenant, path, created["id"], extra={"tenant": self.tenant})

    async def _patch(self, subscription_id: str, resource: str, now: datetime) -> None:
        """Renew; the saved record keeps its clientState (and its resource if `resource` is "")."""
        body = {"expirationDateTime": graph_time(now + MAX_LIFETIME)}
        response = await self.client.request(self.tenant, "PATCH", f"/v1.0/subscriptions/{subscription_id}", json=body)
        expiration = str(response.body.get("expirationDateTime", body["expirationDateTime"]))
        await self._save(subscription_id, resource, "", expiration, now, renewed=True)

    async def _delete(self, subscription_id: str, report: SubscriptionReport) -> None:
        try:
            await self.client.request(self.tenant, "DELETE", f"/v1.0/subscriptions/{subscription_id}")
        except GraphError as exc:
            if exc.status != 404:
                raise
        await self._drop(subscription_id)
        report.deleted.append(subscription_id)

    # -- registry -----------------------------------------------------------------------------
    async def _save(
        self,
        subscription_id: str,
        resource: str,
        client_state: str,
        expiration: str,
        now: datetime,
        *,
        renewed: bool = False,
    ) -> None:
        """Write one record; what is not given ("") is kept from the stored one."""
        key = self.registry_key
        raw = await self.redis.hget(key, subscription_id)
        previous = decode_subscription(subscription_id, raw) if raw else None
        record = SubscriptionRecord(
            createdAt=graph_time(now) if previous is None else previous["createdAt"],
            id=subscription_id,
            resource=resource or ("" if previous is None else previous["resource"]),
            clientState=client_state or ("" if previous is None else previous["clientState"]),
            expiration=expiration,
            notificationUrl=self.notification_url,
        )
        if renewed:
            record["renewedAt"] = graph_time(now)
        elif previous is not None and "renewedAt" in previous:
            record["renewedAt"] = previous["renewedAt"]
        await self.redis.hset(key, subscription_id, encode_subscription(record))

    async def _drop(self, subscription_id: str) -> None:
        await self.redis.hdel(self.registry_key, subscription_id)

    async def _forget_missing(self, registry: dict[str, SubscriptionRecord], listed: set[str]) -> None:
        for subscription_id in registry.keys() - listed:
            await self._drop(subscription_id)

    async def _pending(self, path: str) -> PendingCreate | None:
        raw = await self.redis.hget(self.registry_key, PENDING_PREFIX + path)
        return None if raw is None else decode_pending(raw)

    async def _listed(self) -> AsyncIterator[JsonObject]:
        async for page in self.client.pages(self.tenant, "/v1.0/subscriptions"):
            for subscription in page:
                yield subscription


def _resource(subscription: JsonObject) -> str:
    return "/" + str(subscription.get("resource", "")).strip("/").lower()


def _change_types(subscription: JsonObject) -> set[str]:
    return {part.strip() for part in str(subscription.get("changeType", "")).split(",") if part.strip()}


def _explain(exc: GraphError) -> str:
    """A create failure in words an operator can act on (docs/graph.md 2.9)."""
    if exc.status == 403:
        return f"subscription refused (403): a quota was reached or a permission is missing: {exc}"
    if exc.status == 400 and "alidation" in str(exc):
        return (
            "Graph could not validate MONITOR_PUBLIC_URL: the webhook must be reachable from the internet over "
            f"HTTPS and answer the validation request: {exc}"
        )
    return str(exc)


def iso_now(now: datetime) -> str:
    return iso_ms(now)
