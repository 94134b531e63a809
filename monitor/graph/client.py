"""The one Microsoft Graph HTTP client: tokens, timeouts, retries, paging, telemetry.

Every Graph call of the project goes through `GraphClient.request`, which owns the retry rules
(`monitor.retry`): 429, 500, 502, 503, 504 and connection failures are retried with bounded
exponential backoff and jitter, honouring `Retry-After` as seconds or as an HTTP date (GRAPH.md
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

import aiohttp
import orjson

from monitor import __version__
from monitor.errors import MonitorError
from monitor.graph.auth import TokenProvider
from monitor.graph.pacing import IntunePacer
from monitor.retry import RetryPolicy, RetryStats, parse_retry_after
from monitor.settings import Settings
from monitor.tls import client_context

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]
# Told of each 429 Graph answers, with the tenant and how many (the runtime counts them in Redis for
# /metrics, where sustained throttling raises an alert).
ThrottleListener = Callable[[str, int], Awaitable[None]]

# GRAPH.md 10.4: at most 20 requests in one JSON batch.
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
    body: dict[str, Any]
    valid: bool = True  # False: the body was not a JSON object (`body` then holds an error for it)


@dataclass(slots=True)
class GraphStats(RetryStats):
    """Requests, retries and resource units (GRAPH.md 10.2: `x-ms-resource-unit`)."""

    resource_units: int = 0
    by_path: dict[str, int] = field(default_factory=dict)
    # Requests sent inside `$batch` envelopes (each counts against Graph's limits, GRAPH.md 10.4),
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
    def body(self) -> dict[str, Any]:
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

    def stream_json(self) -> dict[str, Any]:
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
        self._timeout = aiohttp.ClientTimeout(total=settings.graph_timeout)
        self._ca_bundle = settings.ca_bundle
        self.policy = policy or RetryPolicy(
            max_retries=settings.graph_max_retries, max_delay=settings.graph_max_backoff
        )
        self._sleep = sleep
        # Intune calls are paced under Intune's per-app limits before Graph has to throttle them.
        self.pacer = pacer if pacer is not None else IntunePacer()
        self._session: aiohttp.ClientSession | None = None
        self.stats = GraphStats()
        self.on_throttled: ThrottleListener | None = None

    @property
    def token_provider(self) -> TokenProvider:
        """The tokens this client sends (onboarding reads the consented roles from a fresh one)."""
        return self._tokens

    async def __aenter__(self) -> GraphClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
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
        retries = 0
        refreshed = False
        path = urlsplit(url).path
        while True:
            self.stats.paced += await self.pacer.acquire_path(tenant, path)
            outcome = await self._attempt(tenant, method, url, params, json, headers)
            if isinstance(outcome, GraphResponse) and outcome.status < 400:
                if not outcome.valid:
                    raise _as_error(outcome, method, url)
                return outcome
            if isinstance(outcome, GraphResponse) and outcome.status == 429:
                await self._throttled(tenant, 1)
            if isinstance(outcome, GraphResponse) and outcome.status == 401 and not refreshed:
                # A token can be revoked or expire early; fetch a new one once (GRAPH.md 11.1).
                self._tokens.invalidate(tenant)
                refreshed = True
                continue
            if not self._retryable(outcome) or not self.policy.should_retry(retries + 1):
                raise _as_error(outcome, method, url)
            retries += 1
            await self._wait(outcome, retries, method, url)

    async def pages(
        self, tenant: str, path: str, *, params: Mapping[str, str] | None = None
    ) -> AsyncIterator[list[dict[str, Any]]]:
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
        """Send `requests` as JSON batches of 20 (`POST /<version>/$batch`, GRAPH.md 10.4); answers in
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
        attempt = 0
        while pending:
            for _, item in pending:
                self.stats.paced += await self.pacer.acquire_path(tenant, f"/{version}{item.url}")
            body = {"requests": [_inner_request(index, item) for index, item in pending]}
            envelope = await self.request(tenant, "POST", f"/{version}/$batch", json=body)
            self.stats.inner_requests += len(pending)
            answers = {str(a.get("id")): a for a in envelope.body.get("responses", []) if isinstance(a, dict)}
            await self._throttled(tenant, sum(_int(str(a.get("status"))) == 429 for a in answers.values()))
            retry, retry_after = self._sort_answers(pending, answers, attempt + 1, results)
            if retry:
                attempt += 1
                delay = self.policy.delay(attempt, retry_after)
                self.stats.retries += len(retry)
                self.stats.waited += delay
                log.info("graph $batch: %d inner requests to retry (retry %d) in %.2fs", len(retry), attempt, delay)
                await self._sleep(delay)
            pending = retry

    def _sort_answers(
        self,
        pending: list[tuple[int, BatchRequest]],
        answers: dict[str, dict[str, Any]],
        attempt: int,
        results: list[BatchResponse | None],
    ) -> tuple[list[tuple[int, BatchRequest]], float | None]:
        """File final answers into `results`; the requests to retry and the longest inner Retry-After."""
        retry: list[tuple[int, BatchRequest]] = []
        longest: float | None = None
        for index, item in pending:
            answer = _inner_response(item, answers.get(str(index)))
            if not (self.policy.retryable_status(answer.status) and self.policy.should_retry(attempt)):
                results[index] = answer
                continue
            retry.append((index, item))
            wait = parse_retry_after(_header(answer.headers, "Retry-After"))
            if wait is not None and (longest is None or wait > longest):
                longest = wait
            self.stats.throttled += answer.status == 429
            self.stats.by_reason[f"batch {answer.status}"] += 1
        return retry, longest

    # -- internals -----------------------------------------------------------------------------
    async def _attempt(
        self,
        tenant: str,
        method: str,
        url: str,
        params: Mapping[str, str] | None,
        json: Any,
        headers: Mapping[str, str] | None,
    ) -> GraphResponse | BaseException:
        token = await self._tokens.token(tenant)
        request_headers = {
            "Authorization": f"Bearer {token}",
            "Accept": "application/json",
            "User-Agent": f"monitor/{__version__}",
            "client-request-id": str(uuid.uuid4()),
            **(headers or {}),
        }
        body = None if json is None else orjson.dumps(json)
        if body is not None:
            request_headers["Content-Type"] = "application/json"
        self.stats.requests += 1
        path = urlsplit(url).path
        self.stats.by_path[path] = self.stats.by_path.get(path, 0) + 1
        try:
            session = self._session_for_loop()
            async with session.request(
                method, url, params=params, data=body, headers=request_headers, allow_redirects=False
            ) as response:
                raw = await response.read()
                self.stats.resource_units += _int(response.headers.get("x-ms-resource-unit"))
                parsed = _json(raw)
                if parsed is None:
                    text = raw[:200].decode(errors="replace")
                    invalid = {"error": {"code": INVALID_RESPONSE, "message": f"not a JSON object: {text}"}}
                    return GraphResponse(response.status, response.headers, invalid, valid=False)
                return GraphResponse(response.status, response.headers, parsed)
        except (aiohttp.ClientError, TimeoutError) as exc:
            return exc

    def _session_for_loop(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(ssl=client_context(self._ca_bundle), limit=32)
            self._session = aiohttp.ClientSession(connector=connector, timeout=self._timeout)
        return self._session

    async def _throttled(self, tenant: str, count: int) -> None:
        if count and self.on_throttled is not None:
            await self.on_throttled(tenant, count)

    def _retryable(self, outcome: GraphResponse | BaseException) -> bool:
        if isinstance(outcome, BaseException):
            return True
        return self.policy.retryable_status(outcome.status)

    async def _wait(self, outcome: GraphResponse | BaseException, attempt: int, method: str, url: str) -> None:
        retry_after = None
        reason = type(outcome).__name__
        if isinstance(outcome, GraphResponse):
            retry_after = parse_retry_after(outcome.headers.get("Retry-After"))
            reason = str(outcome.status)
        delay = self.policy.plan(self.stats, attempt, reason=reason, retry_after=retry_after)
        log.info(
            "graph %s %s: %s, retry %d in %.2fs%s",
            method,
            urlsplit(url).path,
            reason,
            attempt,
            delay,
            f" (Retry-After {retry_after:g}s)" if retry_after is not None else "",
        )
        await self._sleep(delay)


def _as_error(outcome: GraphResponse | BaseException, method: str, url: str) -> GraphError:
    path = urlsplit(url).path
    if isinstance(outcome, BaseException):
        detail = str(outcome).splitlines()[0] if str(outcome) else type(outcome).__name__
        return GraphError(f"Graph {method} {path}: cannot reach Graph: {detail}")
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


def _json(raw: bytes) -> dict[str, Any] | None:
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


def _inner_request(index: int, item: BatchRequest) -> dict[str, Any]:
    request: dict[str, Any] = {"id": str(index), "method": item.method.upper(), "url": item.url}
    if item.body is not None:
        # GRAPH.md 10.4: a request with a body must say its Content-Type.
        request["body"] = item.body
        request["headers"] = {"Content-Type": "application/json"}
    return request


def _inner_response(item: BatchRequest, answer: dict[str, Any] | None) -> BatchResponse:
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
