"""The webhook Graph calls: the validation handshake and notification intake (docs/graph.md 3 and 4).

Order of work for a POST (docs/practices.md 7):

1. `validationToken` in the query string: answer it at once, before looking at the body — 200,
   `text/plain`, the URL-decoded token (docs/graph.md 3.1; the validation POST has no JSON body).
2. Content type and size: JSON only, no larger than `MONITOR_WEBHOOK_MAX_BODY`, and all of it
   within `MONITOR_HTTP_READ_TIMEOUT` (`monitor.http_server` has the other bounds on clients).
3. Schema: a `changeNotificationCollection` (docs/graph.md 4.1), validated by pydantic.
4. Each item: a tenant we watch, a subscription we made for it, and its `clientState` compared in
   constant time with the one we gave that subscription. Items failing any check are dropped and
   counted by reason, never enqueued. One POST may mix tenants, subscriptions and lifecycle events.
5. Valid items become hints on the Redis stream (one per job, however many items ask for it),
   and the answer is 202 — or 503 if Redis cannot take them, so Graph retries (docs/graph.md 4.2).

No Graph call and no diffing here: Graph marks an endpoint slow past 3 seconds and drops
notifications for good when too many responses pass 10 (docs/graph.md 4.3).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections import Counter
from collections.abc import Callable, Collection
from dataclasses import dataclass
from functools import cache
from typing import Annotated, Any

from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from monitor.hints import LIFECYCLE_EVENTS, Hint, HintQueue
from monitor.keys import GLOBAL_METRICS, TenantKeys
from monitor.logs import RateLimited
from monitor.metrics import increment_commands, metric, now_ms
from monitor.records import decode_subscription
from monitor.redis_conn import REDIS_UNAVAILABLE, Pipelined, Redis
from monitor.source_registry import BY_RESOURCE

log = logging.getLogger(__name__)

GUID = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
Guid = Annotated[str, StringConstraints(pattern=GUID)]
# How long a subscription found in Redis is trusted without asking again (`Intake`).
CACHE_SECONDS = 10.0
# Graph batches notifications, but never thousands in one POST; more is not Graph.
MAX_ITEMS = 1000


class ChangeNotification(BaseModel):
    """One item of `value` (docs/graph.md 4.1). Unknown fields are ignored, known ones checked."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    subscription_id: Guid = Field(alias="subscriptionId")
    tenant_id: Guid = Field(alias="tenantId")
    client_state: Annotated[str, StringConstraints(max_length=255)] | None = Field(default=None, alias="clientState")
    change_type: Annotated[str, StringConstraints(max_length=64)] | None = Field(default=None, alias="changeType")
    resource: Annotated[str, StringConstraints(max_length=512)] | None = None
    lifecycle_event: Annotated[str, StringConstraints(max_length=64)] | None = Field(
        default=None, alias="lifecycleEvent"
    )


class ChangeNotificationCollection(BaseModel):
    model_config = ConfigDict(extra="ignore")

    value: Annotated[list[ChangeNotification], Field(min_length=1, max_length=MAX_ITEMS)]


@dataclass(frozen=True, slots=True)
class _Subscription:
    client_state: str
    job: str
    cached_at: float


class Intake:
    """Checks notification items against our subscriptions and turns the valid ones into hints.

    A subscription found in the tenant's registry (`TenantKeys.subscriptions`, written by
    `monitor.graph.subscriptions`) is kept in process memory for `CACHE_SECONDS`, so a stream of
    notifications costs no lookup round trip. What that means for each change to the registry:

    - renewed (PATCH `expirationDateTime`): same id, same clientState: accepted throughout;
    - created or recreated (a new id, a new clientState): not in the cache, so looked up: accepted
      from the moment it is saved. A subscription not found is never cached;
    - deleted (dropped or replaced): accepted for at most `CACHE_SECONDS` more, then refused as
      `unknown_subscription`. Meanwhile its clientState is still checked, and a hint only asks for
      a delta round, which is always safe. (A removed tenant's are refused at once: its id leaves
      `tenants`.)
    """

    def __init__(
        self, redis: Redis, tenants: Callable[[], Collection[str]], clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.redis = redis
        self.writer = HintWriter(redis)
        # The ids of the tenants we watch (they can change at run time): `Runtime.watched_ids`.
        self.tenants = tenants
        self.clock = clock
        self._cache: dict[tuple[str, str], _Subscription] = {}

    async def close(self) -> None:
        """Close the writer's connection (`HintWriter.close`)."""
        await self.writer.close()

    async def accept(self, items: list[ChangeNotification]) -> tuple[list[Hint], Counter[str]]:
        """The hints to enqueue (one per job) and a count of every item's outcome."""
        outcomes: Counter[str] = Counter()
        watched = self.tenants()
        candidates = []
        for item in items:
            if item.tenant_id.lower() in watched:
                candidates.append(item)
            else:
                outcomes["unknown_tenant"] += 1
        subscriptions = await self._subscriptions(candidates)
        hints: dict[tuple[str, ...], Hint] = {}
        stamp = now_ms()
        for item, subscription in zip(candidates, subscriptions, strict=True):
            outcome, hint = _judge(item, subscription, stamp)
            outcomes[outcome] += 1
            if hint is not None:
                hints.setdefault(hint.job_key, hint)
        return list(hints.values()), outcomes

    async def _subscriptions(self, items: list[ChangeNotification]) -> list[_Subscription | None]:
        now = self.clock()
        found: dict[int, _Subscription | None] = {}
        missing = []
        for index, item in enumerate(items):
            cached = self._cache.get((item.tenant_id.lower(), item.subscription_id))
            if cached is not None and now - cached.cached_at < CACHE_SECONDS:
                found[index] = cached
            else:
                missing.append(index)
        if missing:
            pipeline: Any = self.redis.pipeline(transaction=False)
            for index in missing:
                item = items[index]
                pipeline.hget(TenantKeys(item.tenant_id.lower()).subscriptions, item.subscription_id)
            for index, raw in zip(missing, await pipeline.execute(), strict=True):
                found[index] = self._remember(items[index], raw, now)
        return [found[index] for index in range(len(items))]

    def _remember(self, item: ChangeNotification, raw: bytes | None, now: float) -> _Subscription | None:
        if raw is None:
            return None
        record = decode_subscription(item.subscription_id, raw)
        job = BY_RESOURCE.get(record["resource"].lower(), "")
        subscription = _Subscription(record["clientState"], job, now)
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[(item.tenant_id.lower(), item.subscription_id)] = subscription
        return subscription


def _judge(item: ChangeNotification, subscription: _Subscription | None, stamp: int) -> tuple[str, Hint | None]:
    if subscription is None:
        return "unknown_subscription", None
    # Constant time: the comparison must not tell an attacker how much of a guess was right.
    if not subscription.client_state or not hmac.compare_digest(
        (item.client_state or "").encode(), subscription.client_state.encode()
    ):
        return "bad_client_state", None
    tenant = item.tenant_id.lower()
    if item.lifecycle_event is not None:
        if item.lifecycle_event not in LIFECYCLE_EVENTS:
            return "unknown_lifecycle_event", None
        hint = Hint(tenant, "lifecycle", "lifecycle", item.subscription_id, item.lifecycle_event, stamp)
        return "lifecycle", hint
    if not subscription.job:
        return "unknown_subscription", None
    return "accepted", Hint(tenant, subscription.job, "notification", item.subscription_id, "", stamp)


# -- the HTTP side ------------------------------------------------------------------------------

INTAKE: web.AppKey[Intake] = web.AppKey("intake", Intake)
MAX_BODY: web.AppKey[int] = web.AppKey("max_body", int)
READ_TIMEOUT: web.AppKey[float] = web.AppKey("read_timeout", float)


async def notifications(request: web.Request) -> web.Response:
    """`POST /graph/notifications` (the subscription's notificationUrl)."""
    return await _receive(request, "notifications")


async def lifecycle(request: web.Request) -> web.Response:
    """`POST /graph/lifecycle` (the lifecycleNotificationUrl; same handshake, same intake)."""
    return await _receive(request, "lifecycle")


async def _receive(request: web.Request, endpoint: str) -> web.Response:
    token = request.query.get("validationToken")
    if token is not None:
        # aiohttp has already URL-decoded it; Graph wants it back exactly, as plain text.
        return web.Response(text=token, content_type="text/plain", headers={"X-Content-Type-Options": "nosniff"})
    intake = request.app[INTAKE]
    checked = await _check_envelope(request)
    if isinstance(checked, web.Response):
        await _count(intake.writer, endpoint, checked.status, Counter({_REASONS[checked.status]: 1}))
        return await _answer_and_close(request, checked) if checked.keep_alive is False else checked
    try:
        hints, outcomes = await intake.accept(checked.value)
        await _enqueue(intake.writer, hints, endpoint, outcomes)
    except REDIS_UNAVAILABLE as exc:
        # Not stored: a 5xx makes Graph deliver the notifications again (docs/graph.md 4.2).
        log.error("webhook: cannot store notifications: %s", exc)
        return web.Response(status=503, text="cannot store the notifications now; retry")
    return web.Response(status=202)


_REASONS = {400: "malformed", 408: "too_slow", 413: "too_large", 415: "wrong_content_type"}
_UNREADABLE = RateLimited(log)
_SLOW = RateLimited(log)


def _closing(response: web.Response) -> web.Response:
    """Mark `response` as the last on its connection: `_receive` sends it with `_answer_and_close`."""
    response.force_close()
    return response


async def _answer_and_close(request: web.Request, response: web.Response) -> web.Response:
    """Send `response`, then close the connection at once. aiohttp would otherwise go on reading
    what is left of the body after the answer (for up to its lingering time, at the client's pace),
    and read a body it cannot decode into an error logged with its traceback."""
    await response.prepare(request)
    await response.write_eof()
    request.protocol.force_close()
    return response


async def _check_envelope(request: web.Request) -> ChangeNotificationCollection | web.Response:
    if request.content_type != "application/json":
        return web.Response(status=415, text="notifications must be application/json")
    limit = request.app[MAX_BODY]
    if request.content_length is not None and request.content_length > limit:
        return web.Response(status=413, text=f"body over {limit} bytes")
    try:
        if request.content.is_eof():  # all of the body has arrived with the headers: no wait, no timer
            body = await request.read()
        else:
            # aiohttp puts no time limit on a body; a client trickling one must not hold its connection.
            async with asyncio.timeout(request.app[READ_TIMEOUT]):
                body = await request.read()
    except TimeoutError:
        _SLOW.warning("webhook: a body did not arrive within %gs; answered 408 and closed", request.app[READ_TIMEOUT])
        return _closing(web.Response(status=408, text="the body took too long to arrive"))
    except ConnectionError:  # gone before its body arrived (it left, or was closed to make room)
        return web.Response(status=408, text="the connection closed before the body arrived")
    except web.HTTPRequestEntityTooLarge:
        return web.Response(status=413, text=f"body over {limit} bytes")
    except RequestPayloadError as exc:  # e.g. a body that claims gzip and is not
        reason = " ".join(str(exc).split())[:200]
        _UNREADABLE.warning(
            "webhook: unreadable body (Content-Encoding %r): %s", request.headers.get("Content-Encoding"), reason
        )
        return _closing(web.Response(status=400, text=f"unreadable body: {reason}"))
    try:
        return ChangeNotificationCollection.model_validate_json(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        return web.Response(status=400, text=f"not a change notification collection: {where}: {first['msg']}"[:300])


class HintWriter:
    """Writes the hints and counters of requests, sharing round trips between requests that come
    together.

    A request answers only once its own hints are stored (or fails with its batch), so a 202 always
    means "stored". A batch stores one hint per job, however many of its requests ask for it (the
    worker answers equal hints with one run anyway: `Hint.job_key`), and its counters summed.

    On a Redis server (`monitor.redis_conn.Pipelined`, a connection of the writer's own) the first
    request of a turn of the event loop is written at once, alone: a request that comes by itself,
    as most do, waits for nothing but its round trip. The requests handled after it in the same
    turn (a burst) make one batch, written on the next turn. Every batch is sent as soon as it is
    made, without waiting for the replies to the ones before.

    On a Redis Cluster or the embedded engine the batches go through the client's pipeline, one at
    a time, each made of every request that arrived while the one before was being written.
    """

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._link = Pipelined(redis) if Pipelined.available(redis) else None
        self._pending: list[_Request] = []
        self._collecting = False  # a task will write `_pending`
        self._written_this_turn = False  # a request of this turn was written at once
        self._flushes: set[asyncio.Task[None]] = set()

    async def write(self, hints: list[Hint], counts: Counter[str]) -> None:
        if self._link is not None and not self._written_this_turn:
            self._written_this_turn = True
            asyncio.get_running_loop().call_soon(self._next_turn)
            await self._link.execute(_commands([(hints, counts)]))
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((hints, counts, future))
        if not self._collecting:  # the first request of a batch starts it
            self._collecting = True
            flush = asyncio.create_task(self._flush())  # runs on the next turn: this turn's requests join
            self._flushes.add(flush)
            flush.add_done_callback(self._flushes.discard)
        await future

    async def close(self) -> None:
        if self._link is not None:
            await self._link.aclose()

    def _next_turn(self) -> None:
        self._written_this_turn = False

    async def _flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            if self._link is not None:
                self._collecting = False  # pipelined: the next request starts the next batch at once
            try:
                commands = _commands([(hints, counts) for hints, counts, _ in batch])
                if self._link is not None:
                    await self._link.execute(commands)
                else:
                    pipeline: Any = self.redis.pipeline(transaction=False)
                    for command in commands:
                        pipeline.execute_command(*command)
                    await pipeline.execute()
            except Exception as exc:  # every request of the batch answers 503
                for _, _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
            else:
                for _, _, future in batch:
                    if not future.done():
                        future.set_result(None)
            if self._link is not None:
                return
        self._collecting = False


_Request = tuple[list[Hint], Counter[str], asyncio.Future[None]]


def _commands(requests: list[tuple[list[Hint], Counter[str]]]) -> list[tuple[Any, ...]]:
    """The XADDs and HINCRBYs that store `requests`: one hint per job, the counters summed."""
    if len(requests) == 1:
        [(hints, total)] = requests
    else:
        total = Counter()
        unique: dict[tuple[str, ...], Hint] = {}
        for request_hints, counts in requests:
            for hint in request_hints:
                unique.setdefault(hint.job_key, hint)
            total.update(counts)
        hints = list(unique.values())
    return [*HintQueue.commands(hints), *increment_commands(GLOBAL_METRICS, total)]


async def _enqueue(writer: HintWriter, hints: list[Hint], endpoint: str, outcomes: Counter[str]) -> None:
    """The hints and the counters, stored before the request is answered."""
    await writer.write(hints, _counts(endpoint, 202, outcomes))


async def _count(writer: HintWriter, endpoint: str, status: int, outcomes: Counter[str]) -> None:
    """Count a rejected request. Through the writer: rejections arriving together (a flood of bad or
    slow requests) share one Redis round trip and connection instead of taking one each."""
    counts = _counts(endpoint, status, outcomes)
    try:
        await writer.write([], counts)
    except REDIS_UNAVAILABLE:
        pass  # a rejected request is answered whether or not it could be counted


def _counts(endpoint: str, status: int, outcomes: Counter[str]) -> Counter[str]:
    counts: Counter[str] = Counter({_outcome_series(o): n for o, n in outcomes.items()})
    counts[_request_series(endpoint, status)] = 1
    return counts


# The series names, made once: a handful of outcomes, endpoints and statuses (`_REASONS`, 202).
@cache
def _outcome_series(outcome: str) -> str:
    return metric("monitor_notifications_total", outcome=outcome)


@cache
def _request_series(endpoint: str, status: int) -> str:
    return metric("monitor_webhook_requests_total", endpoint=endpoint, status=str(status))
