"""Secrets and keys never appear in logs, status output, metrics, pages or error messages.

The flows run with sentinel values for every secret a deployment holds (client secret, operator
token, webhook secret, JupiterOne API key, a certificate's private key) and everything they print,
log or answer is searched for them, along with the access tokens the simulated authority issued.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio as aioredis
from aiohttp import web

from monitor.app import Runtime
from monitor.certs import create_certificate
from monitor.commands import status_command
from monitor.errors import ConfigError, MonitorError
from monitor.graph.auth import TokenProvider
from monitor.logs import JsonFormatter, RequestContext
from monitor.settings import Settings, load_settings
from monitor.simulator import RunningSimulator, SimTenant, Simulator, seed
from monitor.simulator.redis_process import free_port
from monitor.sync import sync_tenant
from monitor.web import create_app
from monitor.worker import Worker
from tests.conftest import CLIENT_ID, TENANT_ID, RedisServer, simulator_settings
from tests.tenants.conftest import SECOND_TENANT

CLIENT_SECRET = "SENTINEL-client-secret-4b1d7c0e9a"
OPERATOR_TOKEN = "SENTINEL-operator-token-8e2f5a1c"
WEBHOOK_SECRET = "SENTINEL-webhook-secret-3c9d0b7e"
J1_API_KEY = "SENTINEL-j1-api-key-6a5f2e8d"
SENTINELS = (CLIENT_SECRET, OPERATOR_TOKEN, WEBHOOK_SECRET, J1_API_KEY)


class Capture(logging.Handler):
    """Every record of every logger, formatted both ways (JSON lines and plain text with tracebacks)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.json = JsonFormatter()
        self.text = logging.Formatter("%(levelname)s %(name)s %(message)s")
        self.addFilter(RequestContext())

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.json.format(record))
        self.lines.append(self.text.format(record))
        self.lines.append(repr(record.args))


@pytest.fixture
def captured() -> Iterator[Capture]:
    handler = Capture()
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


@pytest.fixture
def secret_settings(graph: RunningSimulator, redis_server: RedisServer, tmp_path: Path, sim: Simulator) -> Settings:
    sim.register_app(CLIENT_ID, secret=CLIENT_SECRET)
    public_url = f"https://127.0.0.1:{free_port()}"
    return simulator_settings(
        graph,
        redis_server,
        tenant_id=None,
        public_url=public_url,
        operator_token=OPERATOR_TOKEN,
        webhook_secret=WEBHOOK_SECRET,
        # JupiterOne is unreachable: its failures are logged and kept in the status.
        sink=f"jsonl:{tmp_path / 'changes.jsonl'},jupiterone",
        j1_account="j1-account",
        j1_api_key=J1_API_KEY,
        j1_api_url=f"https://127.0.0.1:{free_port()}",
        j1_max_retries=0,
        j1_timeout=2.0,
    )


@pytest.fixture
async def served(
    secret_settings: Settings, sim: Simulator, graph: RunningSimulator, redis: aioredis.Redis
) -> AsyncIterator[tuple[Runtime, str, ssl.SSLContext]]:
    sim.subscriptions.configure(retry_initial_delay=0.01, retry_max_delay=0.1, batch_window=0.02)
    runtime = await Runtime.open(secret_settings)
    assert secret_settings.public_url is not None
    port = int(secret_settings.public_url.rsplit(":", 1)[1])
    runner = web.AppRunner(create_app(secret_settings, runtime=runtime), access_log=None)
    await runner.setup()
    await web.TCPSite(
        runner, "127.0.0.1", port, ssl_context=sim.ca.issue_server_context(["127.0.0.1", "localhost"])
    ).start()
    try:
        yield runtime, secret_settings.public_url, ssl.create_default_context(cafile=str(graph.ca_bundle_path))
    finally:
        await runner.cleanup()
        await runtime.close()


async def test_no_secret_leaks_from_onboarding_sync_status_metrics_or_errors(
    served: tuple[Runtime, str, ssl.SSLContext],
    secret_settings: Settings,
    sim: Simulator,
    fabrikam: SimTenant,
    captured: Capture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    runtime, public_url, client_ssl = served
    seen: list[str] = []
    sim.consent.sign_in_as(SECOND_TENANT)
    async with aiohttp.ClientSession(
        cookie_jar=aiohttp.CookieJar(unsafe=True), connector=aiohttp.TCPConnector(ssl=client_ssl)
    ) as browser:
        start = await browser.get(f"{public_url}/onboard", params={"token": OPERATOR_TOKEN}, allow_redirects=False)
        seen += [str(start.headers), start.headers["Location"]]
        consent = await browser.get(start.headers["Location"], allow_redirects=False)
        done = await browser.get(consent.headers["Location"], allow_redirects=False)
        seen += [await done.text(), str(done.headers)]
        assert done.status == 200
        replay = await browser.get(consent.headers["Location"], allow_redirects=False)
        seen.append(await replay.text())
        denied = await browser.get(
            f"{public_url}/onboard/callback", params={"error": "access_denied", "state": "x" * 43}
        )
        seen.append(await denied.text())
        wrong = await browser.get(f"{public_url}/status", headers={"Authorization": "Bearer not-the-token-at-all"})
        seen += [await wrong.text(), str(wrong.headers)]

        stats = await Worker(runtime, burst=True, claim_idle=0.1).run()  # syncs, subscribes, J1 fails
        assert stats.jobs["users:done"] == 1

        status = await browser.get(f"{public_url}/status", headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"})
        body = await status.text()
        assert status.status == 200 and SECOND_TENANT in body and "cannot reach JupiterOne" in body
        metrics = await browser.get(f"{public_url}/metrics", headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"})
        assert metrics.status == 200
        seen += [body, await metrics.text()]

    assert await status_command(secret_settings, as_json=False) == 0
    assert await status_command(secret_settings, as_json=True) == 0
    printed = capsys.readouterr()
    seen += [printed.out, printed.err]

    # Errors that involve the secrets themselves.
    wrong_secret = secret_settings.model_copy(update={"client_secret": secret_settings.client_secret})
    sim.apps[CLIENT_ID].secrets.clear()
    sim.apps[CLIENT_ID].secrets.add("another-secret")
    provider = TokenProvider(wrong_secret)
    try:
        with pytest.raises(MonitorError) as refused:
            await provider.token(TENANT_ID)
    finally:
        provider.close()
    seen.append(str(refused.value))
    assert "client secret is wrong" in str(refused.value)
    with pytest.raises(ConfigError) as too_short:
        load_settings({"MONITOR_REDIS_URL": "redis://x", "MONITOR_OPERATOR_TOKEN": "SENTINEL-short"})
    seen += [str(too_short.value), repr(secret_settings), str(secret_settings)]

    assert len(captured.lines) > 20
    everything = "\n".join(seen + captured.lines)
    for sentinel in SENTINELS:
        assert sentinel not in everything
    assert "SENTINEL-short" not in everything
    for token in sim.tokens:
        assert token not in everything


async def test_a_certificate_key_never_leaks(
    sim: Simulator,
    tenant: SimTenant,
    graph: RunningSimulator,
    redis_server: RedisServer,
    redis: aioredis.Redis,
    tmp_path: Path,
    captured: Capture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    created = create_certificate(tmp_path, common_name="monitor-secrets-test")
    sim.register_app(CLIENT_ID, certificate_pem=created.certificate.read_bytes())
    seed(tenant, users=5, groups=1, memberships=3)
    settings = load_settings(
        {},
        redis_url=redis_server.url,
        graph_url=graph.url,
        authority_url=graph.url,
        ca_bundle=str(graph.ca_bundle_path),
        client_id=CLIENT_ID,
        client_certificate=str(created.key_and_certificate),
        tenant_id=TENANT_ID,
        sink=f"jsonl:{tmp_path / 'changes.jsonl'}",
    )
    runtime = await Runtime.open(settings)
    try:
        results, failures = await sync_tenant(runtime, settings.tenants[0], ("account", "users", "groups"))
        assert not failures and results[1].change_count > 0
        sim.apps[CLIENT_ID].certificates.clear()  # the certificate is withdrawn: the token is refused
        runtime.graph.token_provider.reset(TENANT_ID)
        _, failures = await sync_tenant(runtime, settings.tenants[0], ("users",))
        assert failures
    finally:
        await runtime.close()
    assert await status_command(settings, as_json=True) == 0
    printed = capsys.readouterr()
    pem = created.key_and_certificate.read_text()
    key_lines = [
        line for line in pem.split("-----END PRIVATE KEY-----")[0].splitlines() if line and not line.startswith("-----")
    ]
    everything = "\n".join([printed.out, printed.err, *captured.lines, *(str(f) for f in failures), repr(settings)])
    assert "certificate assertion was refused" in everything or "AADSTS" in everything
    for line in key_lines:
        assert line not in everything
