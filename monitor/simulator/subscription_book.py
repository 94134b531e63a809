"""Subscriptions as Graph keeps them, and the rules for creating and renewing them (docs/graph.md 2).

No HTTP here: `parse_create` and `parse_renewal` turn a request body into checked values or the
`GraphError` Graph would answer with; `SubscriptionBook` holds the live subscriptions, forgets
expired ones by the simulator clock (docs/graph.md 2.5: renewing an expired subscription is a 404),
and refuses duplicates (409) and subscriptions over quota (403, docs/graph.md 2.4).

Error codes: the subscription service wraps its refusals as `ExtensionError` in the wild
("Subscription expiration can only be 4230 minutes in the future.", "Subscription Id <> already
exists for the requested combination"), so the simulator uses that code for the lifetime, quota
and duplicate refusals, and `InvalidRequest` for a malformed body. Clients branch on the status.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from yarl import URL

from monitor.simulator.errors import GraphError
from monitor.simulator.tenant import MEMBER_ADDED, MEMBER_REMOVED, Change

USERS_PERMISSION = "User.Read.All"  # docs/graph.md 1 / 2.1: what creating a /users subscription needs
GROUPS_PERMISSION = "Group.Read.All"  # ... and a /groups one
SUBSCRIBE_PERMISSIONS = frozenset({USERS_PERMISSION, GROUPS_PERMISSION})
CHANGE_TYPES = frozenset({"updated", "deleted"})  # docs/graph.md 0.2: users and groups take only these
MAX_CLIENT_STATE = 128  # docs/graph.md 2.1: the subscription page's limit, not changeNotification's 255
WEB_PUSH_FIELDS = ("vapidPublicKey", "webPushEncryptionP256dhPublicKey", "webPushEncryptionSecret")
TLS_VERSIONS = ("v1_0", "v1_1", "v1_2", "v1_3")
RENEWABLE_FIELDS = frozenset({"expirationDateTime", "notificationUrl"})  # docs/graph.md 2.5

_RESOURCE = re.compile(
    r"^/?(?P<collection>users|groups)(?:/(?P<id>[^/?#$]+)(?:/(?P<navigation>members|owners))?)?/?$",
    re.IGNORECASE,
)


@dataclass
class SubscriptionOptions:
    """Limits and delivery knobs; every field can be changed from tests and the control API.

    Limits (docs/graph.md 0.3-0.4, 2.3-2.4): `max_lifetime_minutes` 41,760 for directory resources,
    `min_lifetime_minutes` 45 (shorter requests are raised to it), quotas per app + tenant (100),
    per tenant (1,000) and per app (50,000), counted over user and group subscriptions together.
    `list_page_size` pages `GET /subscriptions` (docs/graph.md 2.8; Graph's own size is not documented).
    `validation_timeout`: the handshake's 10 seconds (docs/graph.md 3.1).

    Delivery (docs/graph.md 4): `batch_window` seconds (wall clock) during which notifications for one
    URL are collected into one POST, at most `max_batch_size` items each; `duplicate_rate` share of
    items sent a second time in a later POST, `shuffle` the items of each POST (4.4);
    `drop_rate` share of change notifications silently lost (the "drop" state of 4.3, which
    directory subscribers are never told about, 0.6); `members_delta` adds `members@delta` to
    group membership notifications (2.2, issue #4559); `notification_ids` adds the optional `id`
    (4.1). A first POST must succeed within `delivery_timeout` (3 s), retries get
    `retry_timeout` (10 s), and wait `retry_initial_delay` seconds growing by `retry_multiplier`
    up to `retry_max_delay`, until `give_up_after` seconds have passed (Graph: 4 hours, 4.2; the
    schedule itself is not documented). `seed` makes duplicates, shuffles and drops repeatable.
    """

    max_lifetime_minutes: float = 41_760
    min_lifetime_minutes: float = 45
    quota_per_app_tenant: int = 100
    quota_per_tenant: int = 1_000
    quota_per_app: int = 50_000
    list_page_size: int = 100
    validation_timeout: float = 10.0
    batch_window: float = 0.05
    max_batch_size: int = 100
    duplicate_rate: float = 0.0
    shuffle: bool = False
    drop_rate: float = 0.0
    members_delta: bool = False
    notification_ids: bool = False
    delivery_timeout: float = 3.0
    retry_timeout: float = 10.0
    retry_initial_delay: float = 30.0
    retry_multiplier: float = 2.0
    retry_max_delay: float = 1_800.0
    give_up_after: float = 4 * 3_600.0
    seed: int = 1

    def __post_init__(self) -> None:
        for name in ("duplicate_rate", "drop_rate"):
            if not 0.0 <= float(getattr(self, name)) <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1")
        for name in ("validation_timeout", "delivery_timeout", "retry_timeout", "max_lifetime_minutes"):
            if float(getattr(self, name)) <= 0:
                raise ValueError(f"{name} must be positive")
        for name in ("batch_window", "retry_initial_delay", "retry_max_delay", "give_up_after"):
            if float(getattr(self, name)) < 0:
                raise ValueError(f"{name} must not be negative")
        if self.max_batch_size < 1 or self.list_page_size < 1 or self.retry_multiplier < 1:
            raise ValueError("max_batch_size and list_page_size must be at least 1, retry_multiplier at least 1")


@dataclass(frozen=True)
class Target:
    """What a `resource` path watches: a collection, maybe one object, maybe its members."""

    collection: str  # "users" or "groups", as in the tenant journal
    object_id: str | None = None
    navigation: str | None = None  # "members" or "owners" (groups only)

    @property
    def permission(self) -> str:
        return USERS_PERMISSION if self.collection == "users" else GROUPS_PERMISSION

    def matches(self, change: Change) -> bool:
        """Whether a journal entry concerns this resource (docs/graph.md 2.2).

        `/groups` includes membership changes (microsoft-graph-docs#7841: there is no way to
        leave them out); `/groups/{id}/members` gets only membership changes; owners are not
        modelled by the simulator, so an `/owners` subscription never fires.
        """
        if change.resource != self.collection:
            return False
        if self.object_id is not None and change.object_id.lower() != self.object_id:
            return False
        if self.navigation == "members":
            return change.kind in (MEMBER_ADDED, MEMBER_REMOVED)
        return self.navigation is None


@dataclass(frozen=True)
class NewSubscription:
    """A checked `POST /subscriptions` body."""

    resource: str
    target: Target
    change_type: str
    notification_url: str
    lifecycle_url: str | None
    client_state: str | None
    expires_at: datetime
    latest_tls: str


@dataclass(frozen=True)
class Renewal:
    """A checked `PATCH /subscriptions/{id}` body."""

    expires_at: datetime | None
    notification_url: str | None


@dataclass
class Subscription:
    """One live subscription, with what tests want to see besides Graph's fields."""

    id: str
    tenant_id: str
    app_id: str
    resource: str
    target: Target
    change_type: str
    notification_url: str
    lifecycle_url: str | None
    client_state: str | None
    expires_at: datetime
    latest_tls: str = "v1_2"
    reauthorization_required: bool = False  # a reauthorizationRequired was sent and not answered
    paused: bool = False  # notifications are held until the app reauthorizes (docs/graph.md 4.2)
    held: list[dict[str, Any]] = field(default_factory=list)
    renewed_at: float | None = None  # simulator clock, last PATCH with expirationDateTime
    reauthorized_at: float | None = None  # last POST /reauthorize
    overlapping_reauthorizations: int = 0  # renew and reauthorize within 10 minutes (docs/graph.md 2.5)

    @property
    def change_types(self) -> frozenset[str]:
        return frozenset(part.strip() for part in self.change_type.split(","))

    @property
    def creator_id(self) -> str:
        """For app-only access, the service principal's id (docs/graph.md 2.1); stable per app + tenant."""
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"sp:{self.tenant_id}:{self.app_id}"))

    def graph_view(self, *, client_state: bool) -> dict[str, Any]:
        """The subscription object; GET and list never return `clientState` (docs/graph.md 2.8)."""
        return {
            "id": self.id,
            "resource": self.resource,
            "applicationId": self.app_id,
            "changeType": self.change_type,
            "clientState": self.client_state if client_state else None,
            "notificationUrl": self.notification_url,
            "notificationQueryOptions": None,
            "lifecycleNotificationUrl": self.lifecycle_url,
            "expirationDateTime": subscription_datetime(self.expires_at),
            "creatorId": self.creator_id,
            "includeResourceData": None,
            "latestSupportedTlsVersion": self.latest_tls,
            "encryptionCertificate": None,
            "encryptionCertificateId": None,
            "notificationUrlAppId": None,
        }

    def control_view(self) -> dict[str, Any]:
        """Everything, `clientState` included, for tests and the control API."""
        return {
            **self.graph_view(client_state=True),
            "tenantId": self.tenant_id,
            "reauthorizationRequired": self.reauthorization_required,
            "paused": self.paused,
            "held": len(self.held),
            "overlappingReauthorizations": self.overlapping_reauthorizations,
        }


def subscription_datetime(moment: datetime) -> str:
    """Graph's form: whole seconds as `...:00Z`, otherwise seven fraction digits (`.1234560Z`)."""
    moment = moment.astimezone(UTC)
    if moment.microsecond:
        return moment.strftime("%Y-%m-%dT%H:%M:%S.%f") + "0Z"
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def invalid(message: str) -> GraphError:
    return GraphError(400, "InvalidRequest", message)


def not_found(subscription_id: str) -> GraphError:
    """docs/graph.md 2.5: an expired or deleted subscription is simply gone."""
    return GraphError(404, "ResourceNotFound", f"Subscription '{subscription_id}' was not found.")


# -- request bodies -------------------------------------------------------------------------------


def parse_create(body: Mapping[str, Any], now: datetime, options: SubscriptionOptions) -> NewSubscription:
    """Check a `POST /subscriptions` body (docs/graph.md 2.1); raises the GraphError Graph would send."""
    _reject_unsupported(body)
    resource = _required(body, "resource")
    target = parse_target(resource)
    change_type = _change_type(_required(body, "changeType"))
    notification_url = https_url(_required(body, "notificationUrl"), "notificationUrl")
    lifecycle = body.get("lifecycleNotificationUrl")
    lifecycle_url = None if lifecycle is None else https_url(lifecycle, "lifecycleNotificationUrl")
    client_state = body.get("clientState")
    if client_state is not None and (not isinstance(client_state, str) or len(client_state) > MAX_CLIENT_STATE):
        raise invalid(f"clientState must be a string of at most {MAX_CLIENT_STATE} characters.")
    tls = body.get("latestSupportedTlsVersion") or "v1_2"
    if tls not in TLS_VERSIONS:
        raise invalid(f"Invalid latestSupportedTlsVersion '{tls}'.")
    expires_at = expiration(_required(body, "expirationDateTime"), now, options)
    return NewSubscription(
        resource, target, change_type, notification_url, lifecycle_url, client_state, expires_at, tls
    )


def parse_renewal(body: Mapping[str, Any], now: datetime, options: SubscriptionOptions) -> Renewal:
    """Check a `PATCH /subscriptions/{id}` body (docs/graph.md 2.5).

    Only `expirationDateTime` and `notificationUrl` may change; docs/graph.md 2.1 says a
    `lifecycleNotificationUrl` cannot be added by PATCH, and `resource`/`changeType` never change.
    """
    fixed = sorted(name for name in body if name not in RENEWABLE_FIELDS and not name.startswith("@odata."))
    if fixed:
        raise invalid(f"Property '{fixed[0]}' cannot be updated; delete and recreate the subscription.")
    if not RENEWABLE_FIELDS & set(body):
        raise invalid("The request must contain expirationDateTime or notificationUrl.")
    raw_expiry, raw_url = body.get("expirationDateTime"), body.get("notificationUrl")
    return Renewal(
        None if raw_expiry is None else expiration(raw_expiry, now, options),
        None if raw_url is None else https_url(raw_url, "notificationUrl"),
    )


def parse_target(resource: str) -> Target:
    """`/users`, `/users/{id}`, `/groups`, `/groups/{id}`, `/groups/{id}/members|owners` (docs/graph.md 2.2)."""
    match = _RESOURCE.match(resource)
    if match is None or (match["navigation"] and match["collection"].lower() != "groups"):
        raise invalid(f"Resource '{resource}' is not supported for change notifications.")
    navigation = match["navigation"].lower() if match["navigation"] else None
    object_id = match["id"].lower() if match["id"] else None  # directory ids are GUIDs: case does not matter
    return Target(match["collection"].lower(), object_id, navigation)


def expiration(value: Any, now: datetime, options: SubscriptionOptions) -> datetime:
    """The expiry Graph keeps: under 45 minutes is raised to 45, past the maximum is a 400 (docs/graph.md 0.3)."""
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError:
        raise invalid(f"Invalid expirationDateTime '{value}'.") from None
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    if moment - now > timedelta(minutes=options.max_lifetime_minutes):
        minutes = f"{options.max_lifetime_minutes:g}"
        raise GraphError(400, "ExtensionError", f"Subscription expiration can only be {minutes} minutes in the future.")
    return max(moment, now + timedelta(minutes=options.min_lifetime_minutes))


def https_url(value: Any, name: str) -> str:
    """docs/graph.md 2.1: notification and lifecycle URLs must be HTTPS."""
    if not isinstance(value, str):
        raise invalid(f"{name} must be a string.")
    try:
        url = URL(value)
    except ValueError:
        raise invalid(f"Invalid {name} '{value}'.") from None
    if url.scheme.lower() != "https" or not url.host:
        raise invalid(f"The {name} must be an absolute HTTPS URL; got '{value}'.")
    return value


def _required(body: Mapping[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value.strip():
        raise invalid(f"The '{name}' property is required.")
    return value


def _change_type(value: str) -> str:
    parts = [part.strip() for part in value.split(",")]
    unsupported = [part for part in parts if part not in CHANGE_TYPES]
    if unsupported:
        raise invalid(
            f"ChangeType '{unsupported[0]}' is not supported for users and groups; use 'updated' and/or 'deleted'."
        )
    return value


def _reject_unsupported(body: Mapping[str, Any]) -> None:
    """Web Push fields on a webhook subscription are a 400 (docs/graph.md 2.1); rich ones too (section 6)."""
    pushed = [name for name in WEB_PUSH_FIELDS if body.get(name) is not None]
    if pushed:
        raise invalid(f"Property '{pushed[0]}' is only valid for Web Push subscriptions.")
    if body.get("includeResourceData"):
        raise invalid("includeResourceData is not supported for users and groups.")


# -- the book -------------------------------------------------------------------------------------


class SubscriptionBook:
    """The live subscriptions of every tenant; expired ones disappear when next looked at."""

    def __init__(self) -> None:
        self._subscriptions: dict[str, Subscription] = {}

    def purge_expired(self, now: datetime) -> None:
        """docs/graph.md 2.5: an expired subscription no longer exists, so it neither notifies nor renews."""
        for subscription_id in [key for key, sub in self._subscriptions.items() if sub.expires_at <= now]:
            del self._subscriptions[subscription_id]

    def live(self, now: datetime) -> list[Subscription]:
        self.purge_expired(now)
        return list(self._subscriptions.values())

    def for_tenant(self, tenant_id: str, now: datetime) -> list[Subscription]:
        return [sub for sub in self.live(now) if sub.tenant_id == tenant_id]

    def owned(self, tenant_id: str, app_id: str, now: datetime) -> list[Subscription]:
        """docs/graph.md 2.8: an app-only caller sees the subscriptions its app created (in its tenant)."""
        return [sub for sub in self.for_tenant(tenant_id, now) if sub.app_id == app_id]

    def get(self, subscription_id: str, now: datetime) -> Subscription | None:
        self.purge_expired(now)
        return self._subscriptions.get(subscription_id)

    def add(self, subscription: Subscription) -> None:
        self._subscriptions[subscription.id] = subscription

    def remove(self, subscription_id: str) -> Subscription | None:
        return self._subscriptions.pop(subscription_id, None)

    def admit(
        self, request: NewSubscription, tenant_id: str, app_id: str, now: datetime, options: SubscriptionOptions
    ) -> None:
        """409 for a duplicate of this app's (docs/graph.md 0.4), then 403 for each quota in turn (2.4)."""
        live = self.live(now)
        mine = [sub for sub in live if sub.tenant_id == tenant_id and sub.app_id == app_id]
        wanted = frozenset(part.strip() for part in request.change_type.split(","))
        for sub in mine:
            if sub.change_types == wanted and sub.target == request.target:
                raise GraphError(
                    409, "ExtensionError", f"Subscription Id {sub.id} already exists for the requested combination."
                )
        quotas = (
            (len(mine), options.quota_per_app_tenant, "per app and tenant"),
            (sum(1 for sub in live if sub.tenant_id == tenant_id), options.quota_per_tenant, "per tenant (all apps)"),
            (sum(1 for sub in live if sub.app_id == app_id), options.quota_per_app, "per app (all tenants)"),
        )
        for count, limit, scope in quotas:
            if count >= limit:
                raise GraphError(
                    403,
                    "ExtensionError",
                    f"Subscription quota exceeded: at most {limit} user and group subscriptions {scope}.",
                )
