"""The one outgoing HTTP client: sessions, timeouts, TLS trust, sending, reading, and retries.

Graph (`monitor.graph.client`), JupiterOne (`monitor.sinks.j1_client`) and the signed webhooks
(`monitor.sinks.signing`) each hold one `HttpClient`, which owns what they used to write each for
itself:

- the aiohttp sessions, one per event loop: a session belongs to the loop it was made on
  (https://docs.aiohttp.org/en/stable/client_reference.html#client-session), so one is made on a
  loop's first request and `close()` closes the one of the running loop;
- the timeout of each request, and TLS trust: the system's CAs plus `MONITOR_CA_BUNDLE`
  (`monitor.tls`);
- sending and reading: a body above 1 MiB goes as a stream (aiohttp warns that a larger `bytes` body
  blocks the loop), redirects are followed only by a client made to follow them, and a refused
  connection, a reset or a timeout is an outcome handed to the caller, never raised;
- the retry loop (`RetryPolicy.run`): what the caller's classifier calls `Retry` is sent again after
  the `Retry-After` the server asked for (`retry_later`) or the policy's backoff, counted in the
  client's stats.

A caller supplies only what is its own: how to build each attempt's request (a fresh token, a fresh
signature), what to count of each answer, and how to classify an outcome: a result, an error to
raise, `Retry`, or `Again`.

MSAL's token requests do not come through here: MSAL is synchronous and sends them with `requests`
through the session it is given (`monitor.graph.auth`); they share the retry loop, not the session.
"""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import aiohttp

from monitor.retry import Retry, RetryPolicy, RetryStats, Sleep, Verdict, parse_retry_after, raising
from monitor.tls import client_context

T = TypeVar("T")

# aiohttp's threshold (`TOO_LARGE_BYTES_BODY`, 1 MiB) above which a body goes as a stream.
STREAM_ABOVE = 1 << 20
# What a transport failure is: no answer at all (refused, reset, TLS, timeout).
TRANSPORT_ERRORS = (aiohttp.ClientError, TimeoutError)


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    url: str
    headers: Mapping[str, str]
    body: bytes | None = None
    params: Mapping[str, str] | None = None


@dataclass(frozen=True, slots=True)
class Answer:
    """What the server answered; `headers` are looked up without regard to case."""

    status: int
    headers: Mapping[str, str]
    body: bytes


Outcome = Answer | aiohttp.ClientError | TimeoutError


class HttpClient:
    """Sends requests to one remote API with one session per event loop; `close()` at the end."""

    def __init__(
        self,
        *,
        timeout: float,
        ca_bundle: Path | None,
        policy: RetryPolicy,
        stats: RetryStats,
        sleep: Sleep = asyncio.sleep,
        connections: int = 100,
        decompress: bool = True,
        follow_redirects: bool = False,
        read_limit: int | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        """`connections` caps the open connections per session; `decompress=False` leaves a gzip answer
        as it travelled; `read_limit` reads at most that many bytes of an answer's body; `logger` (the
        caller's) logs each retry."""
        self.policy = policy
        self.stats = stats
        self.sleep = sleep
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._ca_bundle = ca_bundle
        self._connections = connections
        self._decompress = decompress
        self._follow_redirects = follow_redirects
        self._read_limit = read_limit
        self._log = logger or logging.getLogger(__name__)
        self._sessions: dict[asyncio.AbstractEventLoop, aiohttp.ClientSession] = {}

    async def send(
        self,
        prepare: Callable[[], Awaitable[Request]],
        classify: Callable[[Outcome], Verdict[T]],
        *,
        label: str,
        observe: Callable[[Answer], Awaitable[None]] | None = None,
    ) -> T:
        """One call with the retry policy applied: `prepare` builds each attempt's request, `observe`
        counts what each answer says, `classify` decides. `label` names the call in the log."""

        async def attempt() -> Outcome:
            outcome = await self.exchange(await prepare())
            if observe is not None and isinstance(outcome, Answer):
                await observe(outcome)
            return outcome

        return await self.policy.run(
            attempt, classify, stats=self.stats, sleep=self.sleep, label=label, logger=self._log
        )

    async def exchange(self, request: Request) -> Outcome:
        """One attempt, no retry: the answer, or the transport failure that stood in its way."""
        self.stats.requests += 1
        body = request.body
        # aiohttp streams a file-like body; a large `bytes` body would block the loop (and warns).
        data = io.BytesIO(body) if body is not None and len(body) > STREAM_ABOVE else body
        try:
            async with self._session().request(
                request.method,
                request.url,
                params=request.params,
                data=data,
                headers=request.headers,
                allow_redirects=self._follow_redirects,
            ) as response:
                limit = self._read_limit
                raw = await (response.read() if limit is None else response.content.read(limit))
                return Answer(response.status, response.headers, raw)
        except TRANSPORT_ERRORS as exc:
            return exc

    async def close(self) -> None:
        """Close the running loop's session (a session closes only on its own loop)."""
        session = self._sessions.pop(asyncio.get_running_loop(), None)
        if session is not None:
            await session.close()

    def _session(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        session = self._sessions.get(loop)
        if session is None or session.closed:
            connector = aiohttp.TCPConnector(ssl=client_context(self._ca_bundle), limit=self._connections)
            session = aiohttp.ClientSession(
                connector=connector, timeout=self._timeout, auto_decompress=self._decompress
            )
            self._sessions[loop] = session
        return session


def retry_later(outcome: Outcome, error: Callable[[int], Exception], *, retry_after: float | None = None) -> Retry[T]:
    """`Retry` for a retryable outcome: after `retry_after`, else the answer's `Retry-After` (seconds
    or an HTTP date), else the policy's backoff; raising `error(retries)` once the budget is spent."""
    if not isinstance(outcome, Answer):
        return Retry(raising(error), (type(outcome).__name__,), detail=first_line(outcome))
    if retry_after is None:
        retry_after = parse_retry_after(outcome.headers.get("Retry-After"))
    return Retry(raising(error), (str(outcome.status),), retry_after, throttled=int(outcome.status == 429))


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message, or its type's name when it has none."""
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
