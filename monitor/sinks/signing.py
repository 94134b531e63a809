"""Signed webhook POSTs: the one sender behind alert webhooks and the change-record webhook sink.

What a receiver gets (README, "Alerts"):

- `POST <url>` with a JSON body and `Content-Type: application/json`;
- `X-Monitor-Timestamp: <unix seconds>` and
  `X-Monitor-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<body>" keyed with MONITOR_WEBHOOK_SECRET>`.
  Signing the timestamp with the body lets a receiver refuse replays of old deliveries; each attempt
  is signed afresh, so a delivery that waited out a long `Retry-After` is not refused as stale.

Failures, classified once here:

- 429, 5xx and transport errors (refused connection, timeout) are retried through the project's
  `RetryPolicy`, honouring `Retry-After`; when the retries run out, `WebhookUnavailable`.
- Any other non-2xx answer is `WebhookRejected` at once: the receiver said no (a bad signature, a
  wrong path), and the same request would be refused again. Redirects are not followed either: the
  signed body goes to the configured URL or nowhere.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
from pydantic import SecretStr

from monitor import __version__
from monitor.errors import ConfigError, MonitorError
from monitor.retry import RetryPolicy, RetryStats, parse_retry_after
from monitor.settings import Settings
from monitor.tls import client_context

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]

SIGNATURE_HEADER = "X-Monitor-Signature"
TIMESTAMP_HEADER = "X-Monitor-Timestamp"
# How much of a refusal's body goes into the error message.
_EXCERPT = 300


class DeliveryError(MonitorError):
    """Something could not be delivered; the cursor stays, so it is delivered again later."""

    def __init__(self, message: str, *, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


class WebhookRejected(DeliveryError):
    """The receiver answered a 4xx other than 429 (or a redirect): not retried."""


class WebhookUnavailable(DeliveryError):
    """429, 5xx or no answer, still after every retry the policy allows."""


def signature(secret: bytes, timestamp: str, body: bytes) -> str:
    """The `X-Monitor-Signature` value for `body` sent at `timestamp`."""
    digest = hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def redact(url: str) -> str:
    """Scheme, host and port only: webhook URLs often carry their credential in the path or query."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"


@dataclass(slots=True)
class WebhookStats(RetryStats):
    delivered: int = 0
    rejected: int = 0
    unavailable: int = 0


@dataclass(frozen=True, slots=True)
class _Answer:
    status: int
    retry_after: str | None
    excerpt: str


class WebhookClient:
    """Sends signed JSON POSTs. One per process (or per sink); `close()` at the end."""

    def __init__(
        self,
        secret: SecretStr | None,
        *,
        timeout: float = 10.0,
        ca_bundle: Path | None = None,
        policy: RetryPolicy | None = None,
        sleep: Sleep = asyncio.sleep,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._secret = secret
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._ca_bundle = ca_bundle
        self.policy = policy or RetryPolicy()
        self._sleep = sleep
        self._clock = clock
        self._session: aiohttp.ClientSession | None = None
        self.stats = WebhookStats()

    @classmethod
    def from_settings(
        cls, settings: Settings, *, policy: RetryPolicy | None = None, sleep: Sleep = asyncio.sleep
    ) -> WebhookClient:
        return cls(
            settings.webhook_secret,
            timeout=settings.webhook_timeout,
            ca_bundle=settings.ca_bundle,
            policy=policy
            or RetryPolicy(max_retries=settings.webhook_max_retries, max_delay=settings.webhook_max_backoff),
            sleep=sleep,
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def post(self, url: str, body: bytes) -> None:
        """POST `body` (JSON) to `url`, signed; returns once the receiver answered 2xx.

        Raises `WebhookRejected` (not retried) or `WebhookUnavailable` (retries exhausted).
        """
        if self._secret is None or not self._secret.get_secret_value():
            raise ConfigError("MONITOR_WEBHOOK_SECRET is required to sign webhook deliveries")
        secret = self._secret.get_secret_value().encode()
        retries = 0
        while True:
            outcome = await self._attempt(url, body, secret)
            if isinstance(outcome, _Answer) and 200 <= outcome.status < 300:
                self.stats.delivered += 1
                return
            if isinstance(outcome, _Answer) and not self.policy.retryable_status(outcome.status):
                self.stats.rejected += 1
                raise WebhookRejected(
                    f"webhook {redact(url)} refused the delivery: {outcome.status} {outcome.excerpt}".rstrip(),
                    status=outcome.status,
                )
            if not self.policy.should_retry(retries + 1):
                self.stats.unavailable += 1
                raise _unavailable(url, outcome, retries)
            retries += 1
            await self._wait(url, outcome, retries)

    async def _attempt(self, url: str, body: bytes, secret: bytes) -> _Answer | BaseException:
        timestamp = str(int(self._clock()))
        headers = {
            "Content-Type": "application/json",
            "User-Agent": f"monitor/{__version__}",
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: signature(secret, timestamp, body),
        }
        self.stats.requests += 1
        try:
            session = self._session_for_loop()
            async with session.post(url, data=body, headers=headers, allow_redirects=False) as response:
                excerpt = (await response.content.read(_EXCERPT)).decode(errors="replace")
                return _Answer(response.status, response.headers.get("Retry-After"), excerpt)
        except (aiohttp.ClientError, TimeoutError) as exc:
            return exc

    def _session_for_loop(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(ssl=client_context(self._ca_bundle))
            self._session = aiohttp.ClientSession(connector=connector, timeout=self._timeout)
        return self._session

    async def _wait(self, url: str, outcome: _Answer | BaseException, attempt: int) -> None:
        retry_after = None
        reason = type(outcome).__name__
        if isinstance(outcome, _Answer):
            reason = str(outcome.status)
            retry_after = parse_retry_after(outcome.retry_after)
        delay = self.policy.plan(self.stats, attempt, reason=reason, retry_after=retry_after)
        log.info("webhook %s: %s, retry %d in %.2fs", redact(url), reason, attempt, delay)
        await self._sleep(delay)


def _unavailable(url: str, outcome: _Answer | BaseException, retries: int) -> WebhookUnavailable:
    if isinstance(outcome, _Answer):
        return WebhookUnavailable(
            f"webhook {redact(url)} answered {outcome.status} after {retries} retries", status=outcome.status
        )
    detail = str(outcome).splitlines()[0] if str(outcome) else type(outcome).__name__
    return WebhookUnavailable(f"webhook {redact(url)}: no answer after {retries} retries: {detail}")
