"""The one Microsoft Graph HTTP client: tokens, timeouts, retries, paging, telemetry.

Every Graph call of the project goes through `GraphClient.request`, which sends through the
project's one HTTP client (`monitor.http`: sessions, TLS trust, the retry loop) and says how Graph's
answers are classified: 429, 500, 502, 503, 504 and connection failures are retried with bounded
exponential backoff and jitter, honouring `Retry-After` as seconds or as an HTTP date (docs/graph.md
10.1); a 401 refreshes the token once. Resource modules get a client; they never build one.

Links that Graph returns (`@odata.nextLink`, `@odata.deltaLink`, a 410's `Location`) are followed
verbatim, but only on the configured Graph host: the bearer token never leaves for another origin.

An answer whose body is not what the call returns (a success that is not a JSON object, a list page
without `value`, an inner `$batch` body of the wrong kind) is a `GraphError` with code
`invalidResponse`, never an empty result: a sweep that took it for "nothing there" would delete what
it had stored.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import orjson

from monitor import __version__
from monitor.errors import MonitorError
from monitor.graph.auth import TokenProvider
from monitor.graph.pacing import IntunePacer
from monitor.http import Answer, HttpClient, Outcome, Request, first_line, retry_later
from monitor.model.types import JsonObject
from monitor.retry import Again, Retry, RetryPolicy, RetryStats, Sleep, Verdict, parse_retry_after
from monitor.settings import Settings

log = logging.getLogger(__name__)

# Told of each 429 Graph answers, with the tenant and how many (the runtime counts them in Redis for
# /metrics, where sustained throttling raises an alert).
ThrottleListener = Callable[[str, int], Awaitable[None]]

# docs/graph.md 10.4: at most 20 requests in one JSON batch.
BATCH_LIMIT = 20
# The code of a GraphError for an answer whose body is not what the call returns.
INVALID_RESPONSE = "invalidResponse"


class GraphError(MonitorError):
    """Graph answered with an error (after any retries), or could not be reached."""

    def __init__(
        self,
        message: str,
        *,
        status: int = 0,
        code: str = "",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.headers: Mapping[str, str] = headers or {}

    @property
    def forbidden(self) -> bool:
        return self.status in (401, 403)


@dataclass(frozen=True, slots=True)
class GraphResponse:
    status: int
    headers: Mapping[str, str]
    body: JsonObject
    valid: bool = True  # False: the body was not a JSON object (`body` then holds an error for it)


@dataclass(slots=True)
class GraphStats(RetryStats):
    """Requests, retries and resource units (docs/graph.md 10.2: `x-ms-resource-unit`)."""

    resource_units: int = 0
    by_path: dict[str, int] = field(default_factory=dict)
    # Requests sent inside `$batch` envelopes (each counts against Graph's limits, docs/graph.md 10.4),
    # and seconds spent waiting for the Intune pacer (monitor.graph.pacing).
    inner_requests: int = 0
    paced: float = 0.0

    def snapshot(self) -> dict[str, float]:
        return {
            **RetryStats.snapshot(self),
            "resource_units": self.resource_units,
            "inner_requests": self.inner_requests,
            "paced": self.paced,
        }


@dataclass(frozen=True, slots=True)
class BatchRequest:
    """One request of a `$batch`: `url` is relative to the version root (`/deviceManagement/...`)."""

    method: str
    url: str
    body: Any = None


@dataclass(frozen=True, slots=True)
class BatchResponse:
    """The final answer to one `BatchRequest` (after any retries of an inner 429 or 5xx). `content` is
    the inner body as the envelope carried it: a JSON value, or a string for a body that is not JSON."""

    request: BatchRequest
    status: int
    headers: Mapping[str, str]
    content: Any

    @property
    def body(self) -> JsonObject:
        """The body as a JSON object; `GraphError` (invalidResponse) when it is anything else."""
        if not isinstance(self.content, dict):
            raise self.invalid(f"a {type(self.content).__name__} where a JSON object belongs")
        return self.content

    def invalid(self, what: str) -> GraphError:
        return GraphError(
            f"Graph {self.request.method} {self.request.url} (in $batch) answered {self.status} with {what}",
            status=self.status,
            code=INVALID_RESPONSE,
        )

    def error(self) -> GraphError | None:
        """The inner failure as a `GraphError` (a 4xx is the caller's to judge), None on success."""
        if self.status < 400:
            return None
        body = self.content if isinstance(self.content, dict) else {}
        return _as_error(GraphResponse(self.status, self.headers, body), self.request.method, self.request.url)

    def stream_json(self) -> JsonObject:
        """The JSON object in the body of an action that returns a stream (`Edm.Stream`, sent as
        `application/octet-stream`), such as Intune's report actions.

        Graph's documentation does not say in which form `$batch` carries such a body, so every reading
        is accepted, and anything else is refused: a base64 string (the OData JSON batch format encodes a
        body that is not JSON as base64url, https://docs.oasis-open.org/odata/odata-json-format/v4.01/
        odata-json-format-v4.01.html "Batch Requests and Responses"; answers in the standard alphabet
        are seen too, https://learn.microsoft.com/en-us/answers/questions/1352007), the JSON text as a
        string, or the JSON object itself. Raises `GraphError` (invalidResponse).
        """
        content = self.content
        if isinstance(content, str):
            content = _decode_stream_text(content)
        if not isinstance(content, dict):
            raise self.invalid("a stream that is not a base64-encoded JSON object")
        return content


class GraphClient:
    """Calls Graph for any tenant the token provider can serve."""

    def __init__(
        self,
        settings: Settings,
        tokens: TokenProvider,
        *,
        policy: RetryPolicy | None = None,
        sleep: Sleep = asyncio.sleep,
        pacer: IntunePacer | None = None,
    ) -> None:
        self.base_url = settings.graph_url
        self._origin = _origin(settings.graph_url)
        self._tokens = tokens
        # Intune calls are paced under Intune's per-app limits before Graph has to throttle them.
        self.pacer = pacer if pacer is not None else IntunePacer()
        self.stats = GraphStats()
        self.on_throttled: ThrottleListener | None = None
        self._http = HttpClient(
            timeout=settings.graph_timeout,
            ca_bundle=settings.ca_bundle,
            policy=policy or RetryPolicy(max_retries=settings.graph_max_retries, max_delay=settings.graph_max_backoff),
            stats=self.stats,
            sleep=sleep,
            logger=log,
            connections=32,
        )

    @property
    def policy(self) -> RetryPolicy:
        return self._http.policy

    @property
    def token_provider(self) -> TokenProvider:
        """The tokens this client sends (onboarding reads the consented roles from a fresh one)."""
        return self._tokens

    async def __aenter__(self) -> GraphClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.close()
        self._tokens.close()

    def url(self, path_or_url: str) -> str:
        """An absolute URL on the Graph origin; anything pointing elsewhere is refused."""
        if path_or_url.startswith("/"):
            return f"{self.base_url}{path_or_url}"
        if _origin(path_or_url) != self._origin:
            raise GraphError(f"refusing to follow a link off the Graph host: {_origin(path_or_url)}")
        return path_or_url

    async def get(
        self,
        tenant: str,
        path_or_url: str,
        *,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> GraphResponse:
        return await self.request(tenant, "GET", path_or_url, params=params, headers=headers)

    async def request(
        self,
        tenant: str,
        method: str,
        path_or_url: str,
        *,
        params: Mapping[str, str] | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> GraphResponse:
        """One Graph call with the retry policy applied. Raises `GraphError` when it gives up."""
        url = self.url(path_or_url)
        path = urlsplit(url).path
        body = None if json is None else orjson.dumps(json)
        refreshed = False

        async def prepare() -> Request:
            self.stats.paced += await self.pacer.acquire_path(tenant, path)
            sent = await self._headers(tenant, headers, json=body is not None)
            self.stats.by_path[path] = self.stats.by_path.get(path, 0) + 1
            return Request(method, url, sent, body, params)

        async def observe(answer: Answer) -> None:
            self.stats.resource_units += _int(answer.headers.get("x-ms-resource-unit"))
            if answer.status == 429:
                await self._throttled(tenant, 1)

        def classify(outcome: Outcome) -> Verdict[GraphResponse]:
            nonlocal refreshed
            if isinstance(outcome, Answer) and outcome.status == 401 and not refreshed:
                # A token can be revoked or expire early; fetch a new one once (docs/graph.md 11.1).
                self._tokens.invalidate(tenant)
                refreshed = True
                return Again()
            return _classify(outcome, method, url)

        return await self._http.send(prepare, classify, label=f"graph {method} {path}", observe=observe)

    async def pages(
        self, tenant: str, path: str, *, params: Mapping[str, str] | None = None
    ) -> AsyncIterator[list[JsonObject]]:
        """The `value` of each page of a list, following `@odata.nextLink` to the end. A page without a
        `value` list is a `GraphError` (invalidResponse), not an empty page.

        The next page is requested while the caller works on this one (at most one ahead), so Graph's
        time and the caller's overlap."""
        response = await self.get(tenant, path, params=params)
        while True:
            value = response.body.get("value")
            if not isinstance(value, list):
                raise GraphError(f"Graph GET {path}: a list page without a value", code=INVALID_RESPONSE)
            next_link = response.body.get("@odata.nextLink")
            following = asyncio.ensure_future(self.get(tenant, next_link)) if next_link else None
            try:
                yield value
            except BaseException:  # the caller stopped early or failed: nobody will read the next page
                if following is not None:
                    following.cancel()
                raise
            if following is None:
                return
            response = await following

    def relative_url(self, link: str, version: str = "v1.0") -> str:
        """A link Graph returned (`@odata.nextLink`) in the form a `$batch` request takes: the path
        below `/<version>` plus the query. Links off the Graph host or in another version are refused."""
        parts = urlsplit(self.url(link))
        prefix = f"/{version}/"
        if not parts.path.startswith(prefix):
            raise GraphError(f"cannot batch a link outside /{version}: {parts.path}")
        return parts.path[len(prefix) - 1 :] + (f"?{parts.query}" if parts.query else "")

    async def batch(
        self, tenant: str, requests: Sequence[BatchRequest], *, version: str = "v1.0"
    ) -> list[BatchResponse]:
        """Send `requests` as JSON batches of 20 (`POST /<version>/$batch`, docs/graph.md 10.4); answers in
        request order.

        The envelope goes through `request` (its own 429/5xx retried there). Inner answers come in any
        order; an inner 429 or 5xx is retried in a new batch with the other failed ones after the
        longest inner `Retry-After` (or the policy's backoff), under the same `RetryPolicy` and
        counted in `stats` like any retry. Inner 4xx answers are returned for the caller to judge
        (`BatchResponse.error()`); so is an inner 429/5xx once the retries are spent. Each inner
        request is paced in its Intune bucket: Graph counts them one by one.
        """
        results: list[BatchResponse | None] = [None] * len(requests)
        indexed = list(enumerate(requests))
        for start in range(0, len(indexed), BATCH_LIMIT):
            await self._batch_chunk(tenant, version, indexed[start : start + BATCH_LIMIT], results)
        return [r for r in results if r is not None]

    async def _batch_chunk(
        self,
        tenant: str,
        version: str,
        pending: list[tuple[int, BatchRequest]],
        results: list[BatchResponse | None],
    ) -> None:
        async def attempt() -> dict[str, JsonObject]:
            for _, item in pending:
                self.stats.paced += await self.pacer.acquire_path(tenant, f"/{version}{item.url}")
            body = {"requests": [_inner_request(index, item) for index, item in pending]}
            envelope = await self.request(tenant, "POST", f"/{version}/$batch", json=body)
            self.stats.inner_requests += len(pending)
            answers = {str(a.get("id")): a for a in envelope.body.get("responses", []) if isinstance(a, dict)}
            await self._throttled(tenant, sum(_int(str(a.get("status"))) == 429 for a in answers.values()))
            return answers

        def classify(answers: dict[str, JsonObject]) -> Verdict[None]:
            nonlocal pending
            retry = self._sort_answers(pending, answers, results)
            pending = [(index, answer.request) for index, answer in retry]
            return _retry_inner(retry, results) if retry else None

        label = f"graph POST /{version}/$batch"
        await self.policy.run(attempt, classify, stats=self.stats, sleep=self._http.sleep, label=label, logger=log)

    def _sort_answers(
        self,
        pending: list[tuple[int, BatchRequest]],
        answers: dict[str, JsonObject],
        results: list[BatchResponse | None],
    ) -> list[tuple[int, BatchResponse]]:
        """File final answers into `results`; the answers worth another try (429 and 5xx)."""
        retry: list[tuple[int, BatchResponse]] = []
        for index, item in pending:
            answer = _inner_response(item, answers.get(str(index)))
            if self.policy.retryable_status(answer.status):
                retry.append((index, answer))
            else:
                results[index] = answer
        return retry

    # -- internals -----------------------------------------------------------------------------
    async def _headers(self, tenant: str, headers: Mapping[str, str] | None, *, json: bool) -> dict[str, str]:
        token = await self._tokens.token(tenant)
        sent = {
            "Authorization": f"Bearer {token}",
            "Accept": "application/json",
            "User-Agent": f"monitor/{__version__}",
            "client-request-id": str(uuid.uuid4()),
            **(headers or {}),
        }
        if json:
            sent["Content-Type"] = "application/json"
        return sent

    async def _throttled(self, tenant: str, count: int) -> None:
        if count and self.on_throttled is not None:
            await self.on_throttled(tenant, count)


def _classify(outcome: Outcome, method: str, url: str) -> Verdict[GraphResponse]:
    """A success with a JSON object; 429, 5xx and transport failures retried; anything else raised."""
    if not isinstance(outcome, Answer):
        return retry_later(outcome, lambda _: _as_error(outcome, method, url))
    response = _response(outcome)
    if response.status < 400 and response.valid:
        return response
    if response.status < 400 or not RetryPolicy.retryable_status(response.status):
        raise _as_error(response, method, url)
    return retry_later(outcome, lambda _: _as_error(response, method, url))


def _response(answer: Answer) -> GraphResponse:
    parsed = _json(answer.body)
    if parsed is None:
        text = answer.body[:200].decode(errors="replace")
        invalid = {"error": {"code": INVALID_RESPONSE, "message": f"not a JSON object: {text}"}}
        return GraphResponse(answer.status, answer.headers, invalid, valid=False)
    return GraphResponse(answer.status, answer.headers, parsed)


def _retry_inner(retry: list[tuple[int, BatchResponse]], results: list[BatchResponse | None]) -> Retry[None]:
    """Send the inner requests of `retry` again, after their longest `Retry-After` (or the policy's
    backoff); once the budget is spent, their last answers are final."""

    def give_up(_: int) -> None:
        for index, answer in retry:
            results[index] = answer

    statuses = [answer.status for _, answer in retry]
    waits = [parse_retry_after(_header(answer.headers, "Retry-After")) for _, answer in retry]
    asked = [wait for wait in waits if wait is not None]
    return Retry(
        give_up,
        tuple(f"batch {status}" for status in statuses),
        max(asked) if asked else None,
        throttled=statuses.count(429),
        detail=f"{len(retry)} inner requests to retry",
    )


def _as_error(outcome: GraphResponse | BaseException, method: str, url: str) -> GraphError:
    path = urlsplit(url).path
    if isinstance(outcome, BaseException):
        return GraphError(f"Graph {method} {path}: cannot reach Graph: {first_line(outcome)}")
    error = outcome.body.get("error")
    code, message = "", ""
    if isinstance(error, dict):
        code, message = str(error.get("code", "")), str(error.get("message", ""))
    text = (
        f"Graph {method} {path} answered {outcome.status}"
        + (f" {code}" if code else "")
        + (f": {message}" if message else "")
    )
    return GraphError(text, status=outcome.status, code=code, headers=outcome.headers)


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def _json(raw: bytes) -> JsonObject | None:
    """The body as a JSON object ({} when empty, as a 204 has it); None when it is anything else."""
    if not raw:
        return {}
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def _decode_stream_text(text: str) -> Any:
    """JSON text, or base64 / base64url (padding optional) of JSON text; None when it is neither."""
    stripped = text.strip()
    if stripped.startswith("{"):
        raw = stripped.encode()
    else:
        try:
            raw = base64.b64decode(
                stripped.replace("-", "+").replace("_", "/") + "=" * (-len(stripped) % 4), validate=True
            )
        except (binascii.Error, ValueError):
            return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None


def _int(value: str | None) -> int:
    try:
        return int(value) if value else 0
    except ValueError:
        return 0


def _inner_request(index: int, item: BatchRequest) -> JsonObject:
    request: JsonObject = {"id": str(index), "method": item.method.upper(), "url": item.url}
    if item.body is not None:
        # docs/graph.md 10.4: a request with a body must say its Content-Type.
        request["body"] = item.body
        request["headers"] = {"Content-Type": "application/json"}
    return request


def _inner_response(item: BatchRequest, answer: JsonObject | None) -> BatchResponse:
    """One inner answer; a missing one is treated as a 502 (retried like any transient failure)."""
    if answer is None:
        missing = {"error": {"code": "missingBatchResponse", "message": "the batch response has no answer for it"}}
        return BatchResponse(item, 502, {}, missing)
    headers = answer.get("headers")
    return BatchResponse(
        item,
        int(answer.get("status") or 0),
        {str(k): str(v) for k, v in headers.items()} if isinstance(headers, dict) else {},
        answer.get("body"),
    )


def _header(headers: Mapping[str, str], name: str) -> str | None:
    """Inner batch headers are a plain JSON object: look them up without regard to case."""
    lowered = name.lower()
    return next((value for key, value in headers.items() if key.lower() == lowered), None)
