"""The one Microsoft Graph HTTP client: tokens, timeouts, retries, paging, telemetry.

Every Graph call of the project goes through `GraphClient.request`, which owns the retry rules
(`monitor.retry`): 429, 500, 502, 503, 504 and connection failures are retried with bounded
exponential backoff and jitter, honouring `Retry-After` as seconds or as an HTTP date (GRAPH.md
10.1); a 401 refreshes the token once. Resource modules get a client; they never build one.

Links that Graph returns (`@odata.nextLink`, `@odata.deltaLink`, a 410's `Location`) are followed
verbatim, but only on the configured Graph host: the bearer token never leaves for another origin.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson

from monitor import __version__
from monitor.errors import MonitorError
from monitor.graph.auth import TokenProvider
from monitor.retry import RetryPolicy, RetryStats, parse_retry_after
from monitor.settings import Settings
from monitor.tls import client_context

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]


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


@dataclass(slots=True)
class GraphStats(RetryStats):
    """Requests, retries and resource units (GRAPH.md 10.2: `x-ms-resource-unit`)."""

    resource_units: int = 0
    by_path: dict[str, int] = field(default_factory=dict)

    def snapshot(self) -> dict[str, float]:
        return {**RetryStats.snapshot(self), "resource_units": self.resource_units}


class GraphClient:
    """Calls Graph for any tenant the token provider can serve."""

    def __init__(
        self,
        settings: Settings,
        tokens: TokenProvider,
        *,
        policy: RetryPolicy | None = None,
        sleep: Sleep = asyncio.sleep,
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
        self._session: aiohttp.ClientSession | None = None
        self.stats = GraphStats()

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
        while True:
            outcome = await self._attempt(tenant, method, url, params, json, headers)
            if isinstance(outcome, GraphResponse) and outcome.status < 400:
                return outcome
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
        """The `value` of each page of a list, following `@odata.nextLink` to the end."""
        response = await self.get(tenant, path, params=params)
        while True:
            yield list(response.body.get("value", []))
            next_link = response.body.get("@odata.nextLink")
            if not next_link:
                return
            response = await self.get(tenant, next_link)

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
                return GraphResponse(response.status, response.headers, _json(raw))
        except (aiohttp.ClientError, TimeoutError) as exc:
            return exc

    def _session_for_loop(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(ssl=client_context(self._ca_bundle), limit=32)
            self._session = aiohttp.ClientSession(connector=connector, timeout=self._timeout)
        return self._session

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
            if outcome.status == 429:
                self.stats.throttled += 1
        delay = self.policy.delay(attempt, retry_after)
        self.stats.retries += 1
        self.stats.by_reason[reason] += 1
        self.stats.waited += delay
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


def _json(raw: bytes) -> dict[str, Any]:
    if not raw:
        return {}
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return {"error": {"code": "invalidResponse", "message": raw[:200].decode(errors="replace")}}
    return value if isinstance(value, dict) else {"value": value}


def _int(value: str | None) -> int:
    try:
        return int(value) if value else 0
    except ValueError:
        return 0
