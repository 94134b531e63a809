"""Configuration, wiring, `monitor status` and `monitor reconcile` for the JupiterOne publisher."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest
import redis.asyncio as aioredis
from pydantic import SecretStr

from monitor.app import Runtime, build_sinks
from monitor.cli import build_parser
from monitor.commands import reconcile_command
from monitor.errors import ConfigError
from monitor.model.account import map_account
from monitor.model.types import Upsert
from monitor.model.users import map_user
from monitor.settings import Settings, TenantConfig, load_settings
from monitor.simulator.jupiterone import SimJupiterOne
from monitor.sinks.jupiterone import Publisher, build_publisher, publishing_status
from monitor.status import render_tenant, tenant_status
from monitor.store import TenantStore
from tests.conftest import RedisServer
from tests.data import graph_directory as gd
from tests.jupiterone.directory import (
    ACCOUNT_KEY,
    TENANT_ID,
    assert_j1_matches_mirror,
    commit,
    dirty_counters,
    generated_user,
    seed,
)

BASE_ENV = {"MONITOR_REDIS_URL": "redis://127.0.0.1:1/0", "MONITOR_TENANT_ID": TENANT_ID}


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"MONITOR_SINK": "jupiterone"}, "MONITOR_J1_ACCOUNT is required"),
        ({"MONITOR_SINK": "jupiterone", "MONITOR_J1_ACCOUNT": "acct"}, "MONITOR_J1_API_KEY is required"),
        ({"MONITOR_J1_SCOPE_PREFIX": "has space"}, "MONITOR_J1_SCOPE_PREFIX"),
        ({"MONITOR_J1_API_URL": "ftp://x"}, "MONITOR_J1_API_URL"),
        ({"MONITOR_J1_MAX_REQUEST_BYTES": "7000000"}, "MONITOR_J1_MAX_REQUEST_BYTES"),
        ({"MONITOR_J1_APIKEY": "k"}, "did you mean MONITOR_J1_API_KEY"),
    ],
)
def test_configuration_errors_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings({**BASE_ENV, **env})


def test_defaults_and_a_complete_configuration() -> None:
    env = {**BASE_ENV, "MONITOR_SINK": "jupiterone", "MONITOR_J1_ACCOUNT": "acct", "MONITOR_J1_API_KEY": "key"}
    settings = load_settings(env)
    assert settings.jupiterone_enabled and settings.j1_api_url == "https://api.us.jupiterone.io"
    assert settings.j1_scope_prefix == "monitor" and settings.j1_max_request_bytes == 5_000_000
    assert not load_settings(BASE_ENV).jupiterone_enabled
    assert build_sinks(settings) == []  # the publisher is not a change-log consumer


async def test_tagging_without_an_account_name_is_a_configuration_error(
    tmp_path: Path, redis: aioredis.Redis, redis_server: RedisServer
) -> None:
    path = tmp_path / "tenants.toml"
    path.write_text(f'[[tenant]]\nid = "{TENANT_ID}"\ntag_account_name = true\n')
    settings = Settings(
        redis_url=redis_server.url, tenants_file=path, sink="jupiterone", j1_account="acct", j1_api_key=SecretStr("key")
    )
    with pytest.raises(ConfigError, match="tag_account_name needs account_name"):
        build_publisher(settings, redis)


async def test_the_runtime_builds_the_publisher_only_when_configured(
    settings: Settings, redis_server: RedisServer
) -> None:
    runtime = await Runtime.open(settings, graph=False)
    try:
        assert isinstance(runtime.publisher, Publisher) and runtime.sinks == []
    finally:
        await runtime.close()
    plain = await Runtime.open(Settings(redis_url=redis_server.url, tenant_id=TENANT_ID), graph=False)
    try:
        assert plain.publisher is None
        with pytest.raises(ConfigError, match="jupiterone to MONITOR_SINK"):
            plain.require_publisher()
    finally:
        await plain.close()


async def test_status_shows_dirty_scopes_jobs_in_flight_and_last_success(
    j1: SimJupiterOne,
    publisher: Publisher,
    settings: Settings,
    store: TenantStore,
    tenant: TenantConfig,
    redis: aioredis.Redis,
) -> None:
    await commit(store, map_user(generated_user(1), account_key=ACCOUNT_KEY))
    before = await publishing_status(redis, TENANT_ID)
    # The user and its account HAS edge: two dirty mirror scopes, one upload scope.
    assert before["dirty_scopes"] == 1 and before["last_success_at"] is None and before["in_flight"] == []
    await commit(store, [map_account(gd.ORGANIZATION, key=ACCOUNT_KEY, display_name="Contoso")])  # the edge's end
    await publisher.publish_pending(tenant)
    await commit(store, map_user(generated_user(1, jobTitle="CTO"), account_key=ACCOUNT_KEY))

    blocker = j1.block("finalize")
    running = asyncio.create_task(publisher.publish_pending(tenant))
    await blocker.arrived.wait()
    during = await publishing_status(redis, TENANT_ID)
    blocker.release()
    await running

    [job] = during["in_flight"]
    assert job["mode"] == "DIFF" and job["job"] in j1.jobs and job["scope"].startswith("azure_user:")
    after = await publishing_status(redis, TENANT_ID)
    assert after["dirty_scopes"] == 0 and after["in_flight"] == [] and after["last_success_at"] is not None

    runtime = Runtime(settings, redis, publisher=publisher)
    status = await tenant_status(runtime, tenant)
    assert status["jupiterone"]["dirty_scopes"] == 0
    text = render_tenant(status)
    assert "jupiterone   0 dirty scopes, 0 jobs in flight, last success 20" in text
    assert (await tenant_status(Runtime(settings, redis), tenant))["jupiterone"] is None


async def test_status_renders_errors_with_key_and_rule(
    publisher: Publisher, settings: Settings, store: TenantStore, tenant: TenantConfig, redis: aioredis.Redis
) -> None:
    [user] = map_user(generated_user(2), account_key=ACCOUNT_KEY)[:1]
    await commit(store, [Upsert(user.placement, {**user.obj, "lastSeenOn": "yesterday"})])
    await publisher.publish_pending(tenant)

    text = render_tenant(await tenant_status(Runtime(settings, redis, publisher=publisher), tenant))

    assert "1 invalid objects left out (not at JupiterOne)" in text
    assert f"key {generated_user(2)['id']} [timestamp]" in text


def test_reconcile_is_a_command() -> None:
    args = build_parser().parse_args(["reconcile", "--tenant", TENANT_ID, "--check", "--json"])
    assert args.tenant == [TENANT_ID] and args.check and args.json and args.handler.__name__ == "_reconcile"
    assert not build_parser().parse_args(["reconcile"]).check


async def test_reconcile_command_publishes_what_jupiterone_lacks(
    j1: SimJupiterOne, settings: Settings, store: TenantStore, capsys: pytest.CaptureFixture[str]
) -> None:
    await seed(store)
    await store.redis.delete(store.keys.dirty)  # as if everything had been published long ago; it was not
    scopes = len({scope.upload for scope in await store.known_scopes()})

    code = await reconcile_command(settings, tenants=None)

    out = capsys.readouterr().out
    assert code == 0 and out.startswith(f"jupiterone {TENANT_ID}: reconcile: {scopes} scopes compared")
    assert "DRIFT in" in out and "azure_user: " in out and "missing" in out and f"{scopes} jobs" in out
    assert await dirty_counters(store) == {}
    await assert_j1_matches_mirror(j1, store)

    again = await reconcile_command(settings, tenants=None, check=True, as_json=True)
    [report] = orjson.loads(capsys.readouterr().out)
    assert again == 0 and report["drift"] == {} and report["check"] is True and report["repair"] is None


async def test_reconcile_check_reports_and_exits_1_without_changing_anything(
    j1: SimJupiterOne,
    publisher: Publisher,
    settings: Settings,
    store: TenantStore,
    tenant: TenantConfig,
    capsys: pytest.CaptureFixture[str],
) -> None:
    await seed(store)
    await publisher.publish_pending(tenant)
    (scope, key), _ = next(iter(j1.entities().items()))
    j1.remove_entity(scope, key)
    graph, jobs, requests = j1.graph_for_prefix(""), len(j1.jobs), len(j1.requests)

    code = await reconcile_command(settings, tenants=None, check=True)

    assert code == 1 and "DRIFT in" in capsys.readouterr().out
    assert len(j1.jobs) == jobs and j1.graph_for_prefix("") == graph  # nothing changed at JupiterOne
    assert {r.path for r in j1.requests[requests:]} == {"/graphql"} | {
        r.path for r in j1.requests[requests:] if r.path.startswith("/query-results/")
    }
    assert await dirty_counters(store) == {}  # nor in Redis


async def test_reconcile_command_without_the_publisher_is_a_configuration_error(redis_server: RedisServer) -> None:
    with pytest.raises(ConfigError, match="MONITOR_SINK"):
        await reconcile_command(Settings(redis_url=redis_server.url, tenant_id=TENANT_ID), tenants=None)
