"""Outbound HTTPS from the simulated Graph: the validation handshake and notification delivery.

Handshake (docs/graph.md 3): a POST to `{url}?validationToken=...` with `text/plain`, no body; the
endpoint has `validation_timeout` seconds to answer 200, `text/plain`, with the URL-decoded token.
The token is worded like Graph's and holds spaces and colons, so a client that echoes the raw
query string back fails, as it would against Graph.

Delivery (docs/graph.md 4.2-4.4): items for one URL are collected for `batch_window` seconds and POSTed
together as `{"value": [...]}`, whatever subscription or tenant they come from. A 2xx within
`delivery_timeout` (3 s) is delivered; anything else is retried with exponential backoff, each
retry with `retry_timeout` (10 s), until `give_up_after`. Responses slower than 3 s are counted per
URL (`slow_responses`), the figure docs/graph.md 4.3's throttling works from; the simulator counts
them but does not throttle. Every attempt lands in the delivery log.

Batches are sent by tasks this dispatcher owns (started and stopped with the served app), so none
outlive it; `drain()` waits until nothing is queued or in flight.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field, replace
from typing import Any, Literal, NamedTuple
from urllib.parse import quote

import aiohttp
import orjson
from yarl import URL

from monitor.simulator.clock import SimClock
from monitor.simulator.errors import GraphError
from monitor.simulator.subscription_book import SubscriptionOptions

logger = logging.getLogger(__name__)

Kind = Literal["validation", "notification", "lifecycle"]
Outcome = Literal["delivered", "failed", "timeout", "error", "dropped", "abandoned"]
_JSON = {"Content-Type": "application/json; charset=utf-8"}
_TEXT = {"Content-Type": "text/plain; charset=utf-8"}
VALIDATION_FAILED = (
    "Subscription validation request failed. Notification endpoint must respond with 200 OK to validation request."
)
VALIDATION_MISMATCH = (
    "Subscription validation request failed. Response must exactly match validationToken query parameter."
)
VALIDATION_NOT_TEXT = "Subscription validation request failed. Response must have Content-Type 'text/plain'."
VALIDATION_TIMED_OUT = "Subscription validation request timed out."


@dataclass(frozen=True)
class DeliveryRecord:
    """One POST attempt (or a drop / give-up) as the tests see it; `time` is the simulator clock."""

    kind: Kind
    url: str
    attempt: int
    status: int | None  # None: no HTTP answer
    outcome: Outcome
    latency: float  # seconds, wall clock
    items: int
    time: float
    subscription_ids: tuple[str, ...] = ()
    slow: bool = False  # took longer than the 3-second delivery limit (docs/graph.md 4.3)
    payload: dict[str, Any] | None = None
    detail: str = ""

    def as_json(self, *, payload: bool = False) -> dict[str, Any]:
        body = {
            "kind": self.kind,
            "url": self.url,
            "attempt": self.attempt,
            "status": self.status,
            "outcome": self.outcome,
            "latency": self.latency,
            "items": self.items,
            "time": self.time,
            "subscription_ids": list(self.subscription_ids),
            "slow": self.slow,
            "detail": self.detail,
        }
        if payload:
            body["payload"] = self.payload
        return body


class DeliveryLog:
    """The most recent delivery records (bounded, for long benchmark runs)."""

    def __init__(self, max_records: int = 20_000) -> None:
        self._records: deque[DeliveryRecord] = deque(maxlen=max_records)

    def append(self, record: DeliveryRecord) -> None:
        self._records.append(record)

    def clear(self) -> None:
        self._records.clear()

    def __len__(self) -> int:
        return len(self._records)

    def __iter__(self) -> Iterator[DeliveryRecord]:
        return iter(self._records)

    def matching(
        self, *, kind: str | None = None, url: str | None = None, outcome: str | None = None
    ) -> list[DeliveryRecord]:
        return [
            record
            for record in self._records
            if (kind is None or record.kind == kind)
            and (url is None or record.url == url)
            and (outcome is None or record.outcome == outcome)
        ]


class _Entry(NamedTuple):
    item: dict[str, Any]
    subscription_id: str
    repeat: bool  # already a duplicate: never duplicated (or dropped) again


@dataclass
class _Batch:
    url: str
    kind: Kind
    entries: list[_Entry] = field(default_factory=list)
    scheduled: bool = False


@dataclass(frozen=True)
class _Answer:
    status: int | None
    outcome: Outcome
    latency: float
    body: bytes = b""
    content_type: str = ""
    detail: str = ""


class Dispatcher:
    """Batches, sends and retries notifications; runs validation handshakes.

    :param clock: the simulator clock, for the time stamps of delivery records.
    :param ca_pem: returns the simulator CA (PEM); deliveries trust it and `extra_ca_pem`.
    """

    def __init__(self, clock: SimClock, ca_pem: Callable[[], bytes]) -> None:
        self.clock = clock
        self.options = SubscriptionOptions()
        self.rng = random.Random(self.options.seed)
        self.log = DeliveryLog()
        self.slow_responses: Counter[str] = Counter()
        self.extra_ca_pem: bytes | None = None
        self._ca_pem = ca_pem
        self._ssl: ssl.SSLContext | None = None
        self._session: aiohttp.ClientSession | None = None
        self._open: dict[tuple[str, Kind], _Batch] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    # -- configuration ------------------------------------------------------------------------

    def configure(self, **changes: Any) -> SubscriptionOptions:
        """Change knobs (unknown names are a TypeError, bad values a ValueError); a new seed resets the RNG."""
        self.options = replace(self.options, **changes)
        if "seed" in changes:
            self.rng = random.Random(self.options.seed)
        return self.options

    def trust(self, pem: bytes | str | None) -> None:
        """Also trust this CA (PEM) when connecting to webhooks, besides the simulator's own."""
        self.extra_ca_pem = pem.encode() if isinstance(pem, str) else pem
        self._ssl = None

    def _context(self) -> ssl.SSLContext:
        if self._ssl is None:
            context = ssl.create_default_context(cadata=self._ca_pem().decode())
            if self.extra_ca_pem:
                context.load_verify_locations(cadata=self.extra_ca_pem.decode())
            self._ssl = context
        return self._ssl

    # -- lifetime -----------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._session is not None

    async def start(self) -> None:
        """Open the HTTP session and send whatever was queued while stopped."""
        if self._session is None:
            self._session = aiohttp.ClientSession()
        for batch in self._open.values():
            self._schedule(batch)

    async def stop(self) -> None:
        """Cancel sends in flight and drop what is queued (lost, as in a Graph outage); close."""
        self._open.clear()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def drain(self) -> None:
        """Wait until every queued item has been delivered, dropped or given up on."""
        while not self.idle:
            if not self.running:
                raise RuntimeError("delivery is not running: serve the simulator's app first")
            for batch in list(self._open.values()):
                self._schedule(batch)
            await asyncio.wait(list(self._tasks))

    @property
    def idle(self) -> bool:
        return not self._tasks and not self._open

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._finished)

    def _schedule(self, batch: _Batch) -> None:
        """Start the batch's send task, unless it has one or there is no event loop here.

        Tenant mutations call this synchronously (through `enqueue`); outside the event loop a
        batch waits for `start()` or `drain()` instead of failing the mutation.
        """
        if batch.scheduled:
            return
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return
        batch.scheduled = True
        self._spawn(self._send_after_window(batch))

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("notification delivery failed unexpectedly", exc_info=task.exception())

    # -- queueing -----------------------------------------------------------------------------

    def enqueue(
        self, url: str, kind: Kind, item: dict[str, Any], subscription_id: str, *, repeat: bool = False
    ) -> None:
        """Queue one item for `url`; change notifications may be dropped (`drop_rate`)."""
        fresh = kind == "notification" and not repeat
        if fresh and self.options.drop_rate and self.rng.random() < self.options.drop_rate:
            self._record(kind, url, 0, _Answer(None, "dropped", 0.0), [item], [subscription_id])
            return
        if fresh and self.options.notification_ids:
            item = {**item, "id": str(uuid.uuid4())}
        key = (url, kind)
        batch = self._open.get(key)
        if batch is None:
            batch = self._open[key] = _Batch(url, kind)
            if self.running:
                self._schedule(batch)
        batch.entries.append(_Entry(item, subscription_id, repeat))
        if len(batch.entries) >= self.options.max_batch_size and batch.scheduled:
            del self._open[key]  # full: its task sends it when the window ends; new items start a batch

    async def _send_after_window(self, batch: _Batch) -> None:
        await asyncio.sleep(self.options.batch_window)
        key = (batch.url, batch.kind)
        if self._open.get(key) is batch:
            del self._open[key]
        entries = list(batch.entries)
        if self.options.shuffle:
            self.rng.shuffle(entries)
        # docs/graph.md 4.4: at-least-once, and repeated notifications are reported; a duplicate comes
        # in a later POST, after the original was delivered.
        rate = self.options.duplicate_rate
        twice = [entry for entry in entries if rate and not entry.repeat and self.rng.random() < rate]
        items, ids = [entry.item for entry in entries], [entry.subscription_id for entry in entries]
        if await self._deliver(batch.url, batch.kind, items, ids):
            for entry in twice:
                self.enqueue(batch.url, batch.kind, entry.item, entry.subscription_id, repeat=True)

    # -- delivery -----------------------------------------------------------------------------

    async def _deliver(self, url: str, kind: Kind, items: list[dict[str, Any]], ids: list[str]) -> bool:
        """POST until a 2xx comes back in time or `give_up_after` has passed (docs/graph.md 4.2)."""
        body = orjson.dumps({"value": items})
        started = time.monotonic()
        delay = self.options.retry_initial_delay
        attempt = 1
        while True:
            timeout = self.options.delivery_timeout if attempt == 1 else self.options.retry_timeout
            answer = await self._post(URL(url), body, _JSON, timeout)
            self._record(kind, url, attempt, answer, items, ids)
            if answer.outcome == "delivered":
                return True
            if time.monotonic() - started + delay > self.options.give_up_after:
                self._record(kind, url, attempt, _Answer(None, "abandoned", 0.0), items, ids)
                return False
            await asyncio.sleep(delay)
            delay = min(delay * self.options.retry_multiplier, self.options.retry_max_delay)
            attempt += 1

    async def _post(self, url: URL, body: bytes, headers: dict[str, str], within: float) -> _Answer:
        if self._session is None:
            raise RuntimeError("delivery is not running: serve the simulator's app first")
        started = time.monotonic()
        try:
            async with self._session.post(
                url,
                data=body,
                headers=headers,
                ssl=self._context(),
                timeout=aiohttp.ClientTimeout(total=within),
                allow_redirects=False,
            ) as response:
                content = await response.read()
                status, content_type = response.status, response.content_type
        except TimeoutError:
            return _Answer(None, "timeout", time.monotonic() - started, detail=f"no answer within {within:g} s")
        except (aiohttp.ClientError, OSError) as error:
            return _Answer(None, "error", time.monotonic() - started, detail=f"{type(error).__name__}: {error}")
        outcome: Outcome = "delivered" if 200 <= status < 300 else "failed"
        return _Answer(status, outcome, time.monotonic() - started, content, content_type)

    def _record(
        self, kind: Kind, url: str, attempt: int, answer: _Answer, items: list[dict[str, Any]], ids: list[str]
    ) -> None:
        slow = answer.outcome == "timeout" or answer.latency > self.options.delivery_timeout
        if slow and kind != "validation":
            self.slow_responses[url] += 1
        self.log.append(
            DeliveryRecord(
                kind,
                url,
                attempt,
                answer.status,
                answer.outcome,
                answer.latency,
                len(items),
                self.clock.timestamp(),
                tuple(dict.fromkeys(ids)),
                slow,
                {"value": items} if items else None,
                answer.detail,
            )
        )

    # -- the validation handshake -----------------------------------------------------------------

    async def validate(self, url: str) -> None:
        """Run the handshake against `url` (docs/graph.md 3); raise the 400 Graph would answer with."""
        token = f"Validation: Testing client application reachability for subscription Request-Id: {uuid.uuid4()}"
        base = str(URL(url))
        target = URL(f"{base}{'&' if '?' in base else '?'}validationToken={quote(token, safe='')}", encoded=True)
        answer = await self._post(target, b"", _TEXT, self.options.validation_timeout)
        self._record("validation", url, 1, answer, [], [])
        if answer.outcome == "timeout":
            raise GraphError(400, "InvalidRequest", VALIDATION_TIMED_OUT)
        if answer.status != 200:
            raise GraphError(400, "ValidationError", VALIDATION_FAILED)
        if answer.body.decode("utf-8", errors="replace") != token:
            raise GraphError(400, "ValidationError", VALIDATION_MISMATCH)
        if answer.content_type != "text/plain":
            raise GraphError(400, "ValidationError", VALIDATION_NOT_TEXT)
