"""App-only access tokens, one MSAL confidential client per tenant.

The client-credentials flow (docs/graph.md 11.1) issues tokens that live a random 60-90 minutes and no
refresh token. MSAL Python (>= 1.23) serves `acquire_token_for_client` from its own cache and only
calls the authority on a miss (docs/graph.md 11.2); on top of that we keep the last token per tenant
in memory and reuse it until five minutes before it expires, so the common path costs no thread
hop. MSAL is synchronous (it uses `requests`), so every call to it runs in a worker thread and the
event loop never blocks.

An authority that answers 429 or 5xx, or cannot be reached, is retried like Graph (the same
`RetryPolicy` settings, honouring `Retry-After`, through the project's one retry loop,
`RetryPolicy.run`), then becomes one `AuthError`. The answer is caught in the HTTP session MSAL
uses, before MSAL sees it: for a 5xx token response MSAL would raise a bare
`MsalServiceError("HTTP Error: 503")`, and it remembers a 429/5xx answer and returns it again,
without asking, until its `Retry-After` (5 s without one) has passed
(msal/throttled_http_client.py). The body of such an answer is not read: Entra documents no error
body for it, so none is assumed.

These requests do not go through the project's HTTP client (`monitor.http`), only through its retry
loop: MSAL is synchronous and sends with the `requests`-style session it is given (`http_client`,
which "defaults to a requests session instance",
https://learn.microsoft.com/en-us/python/api/msal/msal.application.confidentialclientapplication),
so an aiohttp session on the event loop cannot serve it. `_AuthoritySession` is that session: the
same TLS trust (`MONITOR_CA_BUNDLE`, as one CA file) and a timeout.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msal
import requests
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from monitor.errors import ConfigError, MonitorError
from monitor.retry import Retry, RetryPolicy, RetryStats, Sleep, Verdict, parse_retry_after, raising
from monitor.settings import Settings
from monitor.tls import combined_bundle

log = logging.getLogger(__name__)

# Reuse a token until this many seconds before it expires.
REFRESH_MARGIN = 300.0


class _AuthoritySession(requests.Session):
    """The HTTP session MSAL uses: our CA choice and timeout, whatever the environment says.

    `requests` lets `REQUESTS_CA_BUNDLE` / `CURL_CA_BUNDLE` override a session's `verify`, which
    would silently drop `MONITOR_CA_BUNDLE`; proxies from the environment still apply.
    """

    def __init__(self, verify: str | bool, timeout: float) -> None:
        super().__init__()
        self.verify = verify
        self._timeout = timeout

    def merge_environment_settings(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        merged: dict[str, Any] = super().merge_environment_settings(*args, **kwargs)
        merged["verify"] = self.verify
        return merged

    def request(self, *args: Any, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", self._timeout)
        response = super().request(*args, **kwargs)
        if not RetryPolicy.retryable_status(response.status_code):
            return response
        status, retry_after = response.status_code, parse_retry_after(response.headers.get("Retry-After"))
        # Not kept alive by the error's traceback: its socket would stay open until garbage collection.
        response.close()
        del response
        raise _AuthorityUnavailable(f"answered {status}", str(status), retry_after)


class AuthError(MonitorError):
    """No token could be obtained; the message says why without revealing any secret."""


class _AuthorityUnavailable(Exception):
    """The authority answered 429 or 5xx, or could not be reached: worth another try."""

    def __init__(self, reason: str, code: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class _Token:
    value: str
    expires_at: float  # time.monotonic()


def load_certificate_credential(path: Path) -> dict[str, str]:
    """MSAL's certificate credential from a PEM holding the certificate and its private key.

    Passing `public_certificate` lets MSAL sign the assertion with PS256 and an `x5t#S256`
    thumbprint, which the current Entra guidance asks for (docs/graph.md 11.1).
    """
    data = path.read_bytes()
    try:
        certificate = x509.load_pem_x509_certificate(data)
    except ValueError:
        raise ConfigError(f"MONITOR_CLIENT_CERTIFICATE {path}: no PEM certificate in the file") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise ConfigError(
            f"MONITOR_CLIENT_CERTIFICATE {path}: no unencrypted PEM private key in the file "
            "(the file must hold both the certificate and its key)"
        ) from None
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    cert_pem = certificate.public_bytes(serialization.Encoding.PEM)
    return {"private_key": key_pem.decode(), "public_certificate": cert_pem.decode()}


class TokenProvider:
    """Tokens for Graph, per tenant, for the app configured in `Settings`."""

    def __init__(self, settings: Settings, *, policy: RetryPolicy | None = None, sleep: Sleep = asyncio.sleep) -> None:
        settings.require_credentials()
        assert settings.client_id is not None
        self._client_id = settings.client_id
        self._authority_url = settings.authority_url
        self._scope = f"{settings.graph_url}/.default"
        verify: str | bool = combined_bundle(settings.ca_bundle) if settings.ca_bundle else True
        self._http = _AuthoritySession(verify, timeout=30.0)
        self._credential: str | dict[str, str]
        if settings.client_certificate is not None:
            self._credential = load_certificate_credential(settings.client_certificate)
        else:
            assert settings.client_secret is not None
            self._credential = settings.client_secret.get_secret_value()
        self._apps: dict[str, Any] = {}
        self._tokens: dict[str, _Token] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self.acquired = 0  # tokens fetched from MSAL (cache hits included), for tests and status
        self.policy = policy or RetryPolicy(
            max_retries=settings.graph_max_retries, max_delay=settings.graph_max_backoff
        )
        self.stats = RetryStats()
        self._sleep = sleep

    async def token(self, tenant: str) -> str:
        cached = self._tokens.get(tenant)
        if cached is not None and cached.expires_at - time.monotonic() > REFRESH_MARGIN:
            return cached.value
        lock = self._locks.setdefault(tenant, asyncio.Lock())
        async with lock:
            cached = self._tokens.get(tenant)
            if cached is not None and cached.expires_at - time.monotonic() > REFRESH_MARGIN:
                return cached.value
            token = await self._acquire_retrying(tenant)
            self._tokens[tenant] = token
            return token.value

    async def _acquire_retrying(self, tenant: str) -> _Token:
        async def attempt() -> _Token | _AuthorityUnavailable:
            try:
                return await asyncio.to_thread(self._acquire, tenant)
            except _AuthorityUnavailable as unavailable:
                return unavailable

        where = f"tenant {tenant}: the authority {self._authority_url}"

        def classify(outcome: _Token | _AuthorityUnavailable) -> Verdict[_Token]:
            if isinstance(outcome, _Token):
                return outcome
            return Retry(
                raising(lambda retries: AuthError(f"{where} {outcome.reason} (gave up after {retries} retries)")),
                (outcome.code,),
                outcome.retry_after,
                throttled=int(outcome.code == "429"),
                detail=outcome.reason,
            )

        logger = logging.LoggerAdapter(log, {"tenant": tenant})
        return await self.policy.run(
            attempt, classify, stats=self.stats, sleep=self._sleep, label=where, logger=logger, level=logging.WARNING
        )

    def close(self) -> None:
        self._http.close()

    def invalidate(self, tenant: str) -> None:
        """Forget the cached token (Graph said 401): the next call asks MSAL again."""
        self._tokens.pop(tenant, None)

    def reset(self, tenant: str) -> None:
        """Forget the tenant's token and MSAL app (whose cache would serve the same token again): after
        an administrator consents anew, only a fresh token carries the new permissions."""
        self._tokens.pop(tenant, None)
        self._apps.pop(tenant, None)

    def token_age(self, tenant: str) -> float | None:
        """Seconds until the cached token expires, or None."""
        cached = self._tokens.get(tenant)
        return None if cached is None else cached.expires_at - time.monotonic()

    def _acquire(self, tenant: str) -> _Token:
        app = self._app(tenant)
        try:
            result = app.acquire_token_for_client(scopes=[self._scope])
        except requests.RequestException as exc:
            raise _AuthorityUnavailable(f"cannot be reached: {_short(exc)}", type(exc).__name__) from None
        if "access_token" not in result:
            raise AuthError(f"tenant {tenant}: {describe_auth_failure(result)}")
        self.acquired += 1
        expires_in = float(result.get("expires_in", 3599))
        return _Token(result["access_token"], time.monotonic() + expires_in)

    def _app(self, tenant: str) -> Any:
        app = self._apps.get(tenant)
        if app is not None:
            return app
        try:
            # Building the app runs tenant discovery against the authority (a network call).
            # instance_discovery=False: the authority is a setting (national clouds, the
            # simulator), so MSAL must not ask login.microsoftonline.com whether it knows it.
            app = msal.ConfidentialClientApplication(
                self._client_id,
                authority=f"{self._authority_url}/{tenant}",
                client_credential=self._credential,
                instance_discovery=False,
                http_client=self._http,
            )
        except ValueError as exc:
            raise AuthError(f"tenant {tenant}: the authority does not know this tenant ({_short(exc)})") from None
        except requests.RequestException as exc:
            raise _AuthorityUnavailable(f"cannot be reached: {_short(exc)}", type(exc).__name__) from None
        self._apps[tenant] = app
        return app


# AADSTS codes an operator meets when connecting a tenant, with what to do about them.
_KNOWN_FAILURES = {
    "AADSTS700016": "the app is not registered or not consented in this tenant; a global administrator must "
    "grant admin consent",
    "AADSTS7000215": "the client secret is wrong (check MONITOR_CLIENT_SECRET)",
    "AADSTS7000222": "the client secret has expired; create a new one",
    "AADSTS700027": "the certificate assertion was refused (is the certificate uploaded to the app registration?)",
    "AADSTS90002": "the tenant does not exist",
}


def describe_auth_failure(result: dict[str, Any]) -> str:
    description = str(result.get("error_description", ""))
    code = description.split(":", 1)[0].strip()
    reason = _KNOWN_FAILURES.get(code)
    first_line = description.splitlines()[0] if description else ""
    if reason:
        return f"{reason} ({code})"
    return f"token request refused: {result.get('error', 'unknown error')}: {first_line[:200]}"


def _short(exc: BaseException) -> str:
    return str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
