"""Configuration: one model, read once at start-up, passed down.

Every setting is an environment variable with the prefix `MONITOR_` (docs/architecture.md, "Contracts").
Several tenants come from a TOML file (`MONITOR_TENANTS_FILE`). A misspelt `MONITOR_` variable, a
missing required one, or an invalid value is a `ConfigError` that names it; nothing falls back to a
silent default.
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from monitor.alert_rules import AlertRule
from monitor.durations import parse_duration
from monitor.errors import ConfigError

ENV_PREFIX = "MONITOR_"
_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
DEFAULT_POLLING_INTERVAL = 3600.0


def _normalise_tenant_id(value: str) -> str:
    if not _GUID.match(value):
        raise ValueError(f"tenant id must be a directory (tenant) GUID, got {value!r}")
    return value.lower()


def _polling_interval(value: object) -> float | None:
    """`DISABLED` (manual runs only), a duration such as `1h`, or seconds."""
    if value is None or isinstance(value, int | float):
        return None if value is None else float(value)
    if isinstance(value, str) and value.strip().upper() == "DISABLED":
        return None
    if isinstance(value, str):
        return parse_duration(value)
    raise ValueError("polling_interval must be DISABLED or a duration such as 1h")


class TenantConfig(BaseModel):
    """One watched tenant (an entry of the tenants file, or `MONITOR_TENANT_ID`)."""

    id: str
    account_name: str | None = None
    description: str | None = None
    # Intune/sign-in sweep interval in seconds; None means DISABLED (manual `monitor sync` only).
    polling_interval: float | None = DEFAULT_POLLING_INTERVAL
    tag_account_name: bool = False
    # The JupiterOne integration instance id the account key embeds (docs/jupiterone.md 1.1); the
    # tenant id stands in when there is none.
    integration_instance_id: str | None = None
    # Alert rules on group membership changes (`[[tenant.alert]]` tables, or MONITOR_ALERTS_FILE).
    alerts: tuple[AlertRule, ...] = Field(default=(), alias="alert")

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @field_validator("id")
    @classmethod
    def _check_id(cls, value: str) -> str:
        return _normalise_tenant_id(value)

    @field_validator("polling_interval", mode="before")
    @classmethod
    def _check_interval(cls, value: object) -> float | None:
        return _polling_interval(value)


class SinkSpec(BaseModel):
    model_config = ConfigDict(frozen=True)

    kind: Literal["jsonl", "jupiterone", "webhook"]
    target: str | None = None


def parse_sinks(text: str) -> tuple[SinkSpec, ...]:
    """`jsonl:PATH`, `jupiterone`, `webhook:URL`, several separated by commas."""
    specs = []
    for raw in (part.strip() for part in text.split(",")):
        if not raw:
            continue
        kind, _, target = raw.partition(":")
        if kind == "jupiterone" and not target:
            specs.append(SinkSpec(kind="jupiterone"))
        elif kind == "jsonl" and target:
            specs.append(SinkSpec(kind="jsonl", target=target))
        elif kind == "webhook" and target.startswith(("//", "https://", "http://")):
            url = target if not target.startswith("//") else f"https:{target}"
            specs.append(SinkSpec(kind="webhook", target=url))
        else:
            raise ValueError(f"unknown sink {raw!r}: use jsonl:PATH, jupiterone or webhook:URL")
    return tuple(specs)


class Settings(BaseSettings):
    """Everything `monitor` can be told. Build it with `load_settings()` (or directly in tests)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", frozen=True)

    redis_url: str
    graph_url: str = "https://graph.microsoft.com"
    authority_url: str = "https://login.microsoftonline.com"
    ca_bundle: Path | None = None
    client_id: str | None = None
    client_secret: SecretStr | None = None
    client_certificate: Path | None = None
    tenant_id: str | None = None
    tenants_file: Path | None = None
    sink: str = ""
    public_url: str | None = None
    # Alert rules for the MONITOR_TENANT_ID tenant: a TOML file of [[alert]] tables.
    alerts_file: Path | None = None
    # Signs every outgoing webhook (alerts and the webhook sink): header X-Monitor-Signature.
    webhook_secret: SecretStr | None = None
    # Outgoing webhooks (alerts, MONITOR_SINK=webhook:URL): per-attempt timeout, retries of 429/5xx and
    # transport errors, and the longest wait between tries (a Retry-After above it is capped).
    webhook_timeout: float = Field(default=10.0, gt=0)
    webhook_max_retries: int = Field(default=5, ge=0, le=20)
    webhook_max_backoff: float = Field(default=60.0, gt=0)
    # Guards the operator endpoints of `web` (`/onboard`, `/status`): sent as `Authorization: Bearer
    # <token>`, or once as `?token=` by a browser starting the admin-consent onboarding. Unset, they
    # answer 404.
    operator_token: SecretStr | None = None
    # Guards `GET /metrics` (its labels name the tenants, its gauges tell when subscriptions expire):
    # Prometheus sends it as `Authorization: Bearer <token>`; the operator token is accepted too. With
    # neither set, /metrics answers 404, as /status does.
    metrics_token: SecretStr | None = None
    # How long an admin-consent `state` handed out by `/onboard` stays valid (single use anyway).
    onboard_state_ttl: float = Field(default=600.0, gt=0, le=3600)
    # Serve `web` over TLS directly (otherwise a proxy or ingress terminates TLS).
    tls_cert: Path | None = None
    tls_key: Path | None = None
    # Largest notification body accepted; Graph batches notifications, each well under 1 KB.
    webhook_max_body: int = Field(default=2 * 1024 * 1024, ge=1024)
    # What one client may hold of `web` (monitor.http_server): the time a request body may take to
    # arrive, how long a connection may stay idle or take to send a request's headers, and how many
    # connections may be open at once (over it, the one held longest is closed).
    http_read_timeout: float = Field(default=10.0, gt=0)
    http_idle_timeout: float = Field(default=75.0, gt=0)
    http_max_connections: int = Field(default=1000, ge=16)
    # Safety-net delta round per tenant: Graph never tells directory subscribers about dropped
    # notifications (docs/graph.md 5.4); delta tokens last 7 days, so this is far inside that.
    delta_interval: float = Field(default=900.0, gt=0)
    # Who made a membership change (monitor.actors): an alert waits this long for its directory audit
    # entry, which Graph shows minutes after the change (docs/graph.md 13.4), and then says the actor
    # is unknown. The scheduler asks for the tenant's audit log this often while alerts wait.
    actor_wait: float = Field(default=900.0, gt=0)
    actor_poll_interval: float = Field(default=60.0, gt=0)
    # The incremental Intune pass (monitor.sources.intune_live) runs this often per tenant whose Intune
    # sweep is scheduled; 0 turns it off.
    intune_incremental_interval: float = Field(default=300.0, ge=0)
    # How often subscriptions are reconciled, and how long before expiry they are renewed
    # (directory subscriptions last at most 41,760 minutes, docs/graph.md 2.3).
    subscription_check_interval: float = Field(default=3600.0, gt=0)
    subscription_renew_before: float = Field(default=3 * 86400.0, gt=0)
    host: str = "0.0.0.0"
    port: int = Field(default=8000, ge=1, le=65535)
    # `worker` and `scheduler` answer GET /healthz and /readyz here (Kubernetes probes); unset: no port.
    probe_port: int | None = Field(default=None, ge=1, le=65535)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["text", "json"] = "text"
    # Per-request timeout and retry budget for Graph (docs/graph.md 10.1: honour Retry-After, back off).
    graph_timeout: float = Field(default=30.0, gt=0)
    graph_max_retries: int = Field(default=6, ge=0, le=20)
    graph_max_backoff: float = Field(default=60.0, gt=0)
    # JupiterOne publisher (`MONITOR_SINK=jupiterone`; docs/jupiterone.md 9-12). The account id and API key
    # are required when that sink is configured.
    j1_api_url: str = "https://api.us.jupiterone.io"
    j1_account: str | None = None
    j1_api_key: SecretStr | None = None
    # Every upload scope is named `<prefix>/<tenant id>/<family>:<bucket>` at JupiterOne.
    j1_scope_prefix: str = "monitor"
    # Seconds the dirty scopes must stay unchanged before the worker publishes (a burst of changes to
    # a scope costs one upload); waiting is capped at `j1_max_debounce` so a busy tenant still publishes.
    j1_debounce: float = Field(default=2.0, ge=0)
    j1_max_debounce: float = Field(default=20.0, ge=0)
    # docs/jupiterone.md 10.1: the backend refuses bodies over about 6 MB; keep each under 5 MB.
    j1_max_request_bytes: int = Field(default=5_000_000, ge=10_000, le=6_000_000)
    j1_timeout: float = Field(default=60.0, gt=0)
    j1_max_retries: int = Field(default=8, ge=0, le=30)
    j1_max_backoff: float = Field(default=60.0, gt=0)
    # Finalize is asynchronous (docs/jupiterone.md 9.2): poll the job, backing off up to this interval, and
    # give up (the scope stays dirty) after `j1_finalize_timeout`.
    j1_poll_interval: float = Field(default=2.0, gt=0)
    j1_finalize_timeout: float = Field(default=900.0, gt=0)
    # Scopes of one tenant uploaded at once by one publisher process.
    j1_concurrency: int = Field(default=4, ge=1, le=64)
    # Lease on a scope while it is uploaded; renewed by its holder, so only a crash lets it run out,
    # and then within seconds (monitor.leases).
    j1_lease_ttl: float = Field(default=5.0, gt=0)
    # Interval of the periodic reconciliation (JupiterOne read back and compared, what differs
    # re-published) that the scheduler runs.
    j1_reconcile_interval: float = Field(default=86400.0, gt=0)
    # A scope JupiterOne did not take (a 4xx for its request, a job with error counters) is tried
    # again after this long, doubling per failure up to `j1_scope_max_backoff`, or at once when it changes.
    j1_scope_backoff: float = Field(default=30.0, gt=0)
    j1_scope_max_backoff: float = Field(default=3600.0, gt=0)

    _tenants: tuple[TenantConfig, ...] = PrivateAttr(default=())
    _sinks: tuple[SinkSpec, ...] = PrivateAttr(default=())

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The environment is read in exactly one place (`load_settings`), which also rejects
        # misspelt variables; the model itself only validates what it is given.
        return (init_settings,)

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str) -> str:
        if not value.startswith(
            ("redis://", "rediss://", "redis+cluster://", "rediss+cluster://", "unix://", "memory://")
        ):
            raise ValueError(
                "must start with redis://, rediss://, redis+cluster:// or rediss+cluster:// (Redis Cluster),"
                " unix:// or memory:// (the embedded engine)"
            )
        return value

    @field_validator("graph_url", "authority_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("https://", "http://")):
            raise ValueError("must be an http(s) URL")
        return value.rstrip("/")

    @field_validator("public_url")
    @classmethod
    def _https_public_url(cls, value: str | None) -> str | None:
        # docs/graph.md 2.1: notificationUrl must be HTTPS.
        if value is not None and not value.startswith("https://"):
            raise ValueError("must be an https:// URL (Graph only calls HTTPS endpoints)")
        return None if value is None else value.rstrip("/")

    @field_validator("j1_api_url")
    @classmethod
    def _j1_url(cls, value: str) -> str:
        if not value.startswith(("https://", "http://")):
            raise ValueError("must be an http(s) URL")
        return value.rstrip("/")

    @field_validator("j1_scope_prefix")
    @classmethod
    def _j1_prefix(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9._-]+", value):
            raise ValueError("must be letters, digits, '.', '_' or '-' (it starts every JupiterOne scope name)")
        return value

    @field_validator("operator_token", "metrics_token")
    @classmethod
    def _long_token(cls, value: SecretStr | None) -> SecretStr | None:
        # They open onboarding and what every tenant is doing: not something to guess.
        if value is not None and len(value.get_secret_value()) < 16:
            raise ValueError("must be at least 16 characters (e.g. `openssl rand -hex 32`)")
        return value

    @field_validator("tenant_id")
    @classmethod
    def _tenant_guid(cls, value: str | None) -> str | None:
        return None if value is None else _normalise_tenant_id(value)

    @field_validator("ca_bundle", "client_certificate", "tenants_file", "alerts_file", "tls_cert", "tls_key")
    @classmethod
    def _file_exists(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"no such file: {value}")
        return value

    def model_post_init(self, context: Any, /) -> None:
        if self.client_secret is not None and self.client_certificate is not None:
            raise ConfigError("set only one of MONITOR_CLIENT_SECRET and MONITOR_CLIENT_CERTIFICATE")
        if self.tenant_id is not None and self.tenants_file is not None:
            raise ConfigError("set only one of MONITOR_TENANT_ID and MONITOR_TENANTS_FILE")
        try:
            self._sinks = parse_sinks(self.sink)
        except ValueError as exc:
            raise ConfigError(f"MONITOR_SINK: {exc}") from None
        self._check_jupiterone()
        if self.alerts_file is not None and self.tenant_id is None:
            raise ConfigError("MONITOR_ALERTS_FILE is for MONITOR_TENANT_ID; in a tenants file use [[tenant.alert]]")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("set both MONITOR_TLS_CERT and MONITOR_TLS_KEY, or neither")
        if self.tenant_id is not None:
            alerts = load_alerts_file(self.alerts_file) if self.alerts_file is not None else ()
            self._tenants = (TenantConfig.model_validate({"id": self.tenant_id, "alert": alerts}),)
        elif self.tenants_file is not None:
            self._tenants = load_tenants_file(self.tenants_file)
        if self.webhook_secret is None and self._uses_webhooks():
            raise ConfigError("MONITOR_WEBHOOK_SECRET is required to sign webhook deliveries")

    def _uses_webhooks(self) -> bool:
        return any(s.kind == "webhook" for s in self._sinks) or any(
            rule.webhooks for tenant in self._tenants for rule in tenant.alerts
        )

    @property
    def tenants(self) -> tuple[TenantConfig, ...]:
        return self._tenants

    @property
    def sinks(self) -> tuple[SinkSpec, ...]:
        return self._sinks

    def require_tenants(self) -> tuple[TenantConfig, ...]:
        if not self._tenants:
            raise ConfigError("no tenant configured: set MONITOR_TENANT_ID or MONITOR_TENANTS_FILE")
        return self._tenants

    @property
    def jupiterone_enabled(self) -> bool:
        """Whether `MONITOR_SINK` names the JupiterOne publisher."""
        return any(spec.kind == "jupiterone" for spec in self._sinks)

    def _check_jupiterone(self) -> None:
        if not self.jupiterone_enabled:
            return
        if not self.j1_account:
            raise ConfigError("MONITOR_J1_ACCOUNT is required for the jupiterone sink (MONITOR_SINK)")
        if self.j1_api_key is None or not self.j1_api_key.get_secret_value():
            raise ConfigError("MONITOR_J1_API_KEY is required for the jupiterone sink (MONITOR_SINK)")

    def require_credentials(self) -> None:
        """Graph needs an app registration: a client id and a secret or a certificate."""
        if not self.client_id:
            raise ConfigError("MONITOR_CLIENT_ID is required to call Microsoft Graph")
        if self.client_secret is None and self.client_certificate is None:
            raise ConfigError("set MONITOR_CLIENT_SECRET or MONITOR_CLIENT_CERTIFICATE (PEM with its private key)")


def load_tenants_file(path: Path) -> tuple[TenantConfig, ...]:
    """`[[tenant]]` tables; each needs `id` and may set the other `TenantConfig` fields."""
    try:
        document = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"MONITOR_TENANTS_FILE {path}: {exc}") from None
    unknown = set(document) - {"tenant"}
    if unknown:
        raise ConfigError(f"MONITOR_TENANTS_FILE {path}: unknown table(s) {sorted(unknown)}; expected [[tenant]]")
    tenants = []
    for index, entry in enumerate(document.get("tenant", [])):
        try:
            tenants.append(TenantConfig.model_validate(entry))
        except ValidationError as exc:
            raise ConfigError(f"MONITOR_TENANTS_FILE {path}, tenant #{index + 1}: {_describe(exc, '')}") from None
    ids = [t.id for t in tenants]
    if len(set(ids)) != len(ids):
        raise ConfigError(f"MONITOR_TENANTS_FILE {path}: a tenant id appears twice")
    if not tenants:
        raise ConfigError(f"MONITOR_TENANTS_FILE {path}: no [[tenant]] entries")
    return tuple(tenants)


def load_alerts_file(path: Path) -> tuple[AlertRule, ...]:
    """`[[alert]]` tables, each an `AlertRule`."""
    try:
        document = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"MONITOR_ALERTS_FILE {path}: {exc}") from None
    unknown = set(document) - {"alert"}
    if unknown:
        raise ConfigError(f"MONITOR_ALERTS_FILE {path}: unknown table(s) {sorted(unknown)}; expected [[alert]]")
    rules = []
    for index, entry in enumerate(document.get("alert", [])):
        try:
            rules.append(AlertRule.model_validate(entry))
        except ValidationError as exc:
            raise ConfigError(f"MONITOR_ALERTS_FILE {path}, alert #{index + 1}: {_describe(exc, '')}") from None
    return tuple(rules)


def load_settings(environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Settings from `environ` (default: the process environment) plus explicit overrides."""
    env = os.environ if environ is None else environ
    fields = set(Settings.model_fields)
    values: dict[str, Any] = {}
    unknown = []
    for name, value in env.items():
        if not name.upper().startswith(ENV_PREFIX):
            continue
        field = name[len(ENV_PREFIX) :].lower()
        if field in fields:
            values[field] = value
        else:
            unknown.append(name)
    if unknown:
        raise ConfigError("; ".join(_unknown_variable(name, fields) for name in sorted(unknown)))
    if "port" not in values and env.get("PORT"):
        values["port"] = env["PORT"]  # Procfile hosts (Heroku and friends) say where to listen
    values.update(overrides)
    try:
        return Settings(**values)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, ENV_PREFIX)) from None


def _unknown_variable(name: str, fields: set[str]) -> str:
    guess = difflib.get_close_matches(name[len(ENV_PREFIX) :].lower(), sorted(fields), n=1)
    hint = f" (did you mean {ENV_PREFIX}{guess[0].upper()}?)" if guess else ""
    return f"unknown setting {name}{hint}"


def _describe(exc: ValidationError, prefix: str) -> str:
    parts = []
    for error in exc.errors():
        name = ".".join(str(p) for p in error["loc"]) or "value"
        label = f"{prefix}{name.upper()}" if prefix else name
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "missing":
            message = "is required"
        parts.append(f"{label}: {message}")
    return "; ".join(parts)
