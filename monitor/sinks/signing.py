"""Signed webhook POSTs: the one sender behind alert webhooks and the change-record webhook sink.

What a receiver gets (README, "Alerts"):

- `POST <url>` with a JSON body and `Content-Type: application/json`;
- `X-Monitor-Timestamp: <unix seconds>` and
  `X-Monitor-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<body>" keyed with MONITOR_WEBHOOK_SECRET>`.
  Signing the timestamp with the body lets a receiver refuse replays of old deliveries; each attempt
  is signed afresh, so a delivery that waited out a long `Retry-After` is not refused as stale.

Failures, classified once here:

- 429, 5xx and transport errors (refused connection, timeout) are retried by the project's one
  HTTP client (`monitor.http`), honouring `Retry-After`; when the retries run out,
  `WebhookUnavailable`.
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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import SecretStr

from monitor import __version__
from monitor.errors import ConfigError, MonitorError
from monitor.http import Answer, HttpClient, Outcome, Request, first_line, retry_later
from monitor.retry import RetryPolicy, RetryStats, Sleep, Verdict
from monitor.settings import Settings

log = logging.getLogger(__name__)

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
        self._clock = clock
        self.stats = WebhookStats()
        # Only the start of an answer is read: it goes into the error message of a refusal.
        self._http = HttpClient(
            timeout=timeout,
            ca_bundle=ca_bundle,
            policy=policy or RetryPolicy(),
            stats=self.stats,
            sleep=sleep,
            logger=log,
            read_limit=_EXCERPT,
        )

    @property
    def policy(self) -> RetryPolicy:
        return self._http.policy

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
        await self._http.close()

    async def post(self, url: str, body: bytes) -> None:
        """POST `body` (JSON) to `url`, signed; returns once the receiver answered 2xx.

        Raises `WebhookRejected` (not retried) or `WebhookUnavailable` (retries exhausted).
        """
        if self._secret is None or not self._secret.get_secret_value():
            raise ConfigError("MONITOR_WEBHOOK_SECRET is required to sign webhook deliveries")
        secret = self._secret.get_secret_value().encode()

        async def signed() -> Request:  # each attempt is signed afresh, with its own timestamp
            timestamp = str(int(self._clock()))
            headers = {
                "Content-Type": "application/json",
                "User-Agent": f"monitor/{__version__}",
                TIMESTAMP_HEADER: timestamp,
                SIGNATURE_HEADER: signature(secret, timestamp, body),
            }
            return Request("POST", url, headers, body)

        await self._http.send(signed, lambda outcome: self._classify(url, outcome), label=f"webhook {redact(url)}")

    def _classify(self, url: str, outcome: Outcome) -> Verdict[None]:
        if isinstance(outcome, Answer) and not RetryPolicy.retryable_status(outcome.status):
            if 200 <= outcome.status < 300:
                self.stats.delivered += 1
                return None
            self.stats.rejected += 1
            excerpt = outcome.body.decode(errors="replace")
            raise WebhookRejected(
                f"webhook {redact(url)} refused the delivery: {outcome.status} {excerpt}".rstrip(),
                status=outcome.status,
            )
        return retry_later(outcome, lambda retries: self._unavailable(url, outcome, retries))

    def _unavailable(self, url: str, outcome: Outcome, retries: int) -> WebhookUnavailable:
        self.stats.unavailable += 1
        if isinstance(outcome, Answer):
            return WebhookUnavailable(
                f"webhook {redact(url)} answered {outcome.status} after {retries} retries", status=outcome.status
            )
        return WebhookUnavailable(f"webhook {redact(url)}: no answer after {retries} retries: {first_line(outcome)}")
